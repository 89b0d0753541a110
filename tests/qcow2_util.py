"""Helpers for the qcow2 tests: create and modify images through bdrv's API and qemu.

tests/ is not a package: test modules put this directory on sys.path to import it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bdrv.backend import Backend
from bdrv.driver import find_driver
from bdrv.graph import O_RDWR, O_UNMAP
from bdrv.options import parse_opts
from bdrv.request import REQ_MAY_UNMAP, REQ_WRITE_COMPRESSED
from bdrv.tools.img_create import create_option_list, find_protocol_driver

QEMU_IMG = shutil.which(os.environ.get("QEMU_IMG_PROG", "qemu-img"))
QEMU_IO = shutil.which(os.environ.get("QEMU_IO_PROG", "qemu-io"))
needs_qemu = pytest.mark.skipif(QEMU_IMG is None or QEMU_IO is None,
                                reason="qemu-img/qemu-io not installed")

_UNITS = {"k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def num(text: str) -> int:
    if text[-1] in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1]]
    return int(text, 0)


def bdrv_create(path: Path, opts: str, size: str) -> None:
    """What `qemu-img create -f qcow2 -o OPTS PATH SIZE` does, through the driver."""
    drv = find_driver("qcow2")
    assert drv is not None
    optlist = create_option_list(drv, find_protocol_driver(str(path)))
    pairs = parse_opts(opts) if opts else []
    values = optlist.parse(pairs)
    values.setdefault("size", num(size))
    drv.create(str(path), values, lambda text: None)


def qemu_create(path: Path, opts: str, size: str, *extra: str) -> subprocess.CompletedProcess:
    assert QEMU_IMG is not None
    args = [QEMU_IMG, "create", "-q", "-f", "qcow2", *extra]
    if opts:
        args += ["-o", opts]
    return subprocess.run(args + [str(path), size], capture_output=True, text=True)


def qemu_io(path: Path | str, *commands: str, fmt: str | None = "qcow2") -> str:
    assert QEMU_IO is not None
    args = [QEMU_IO]
    if fmt:
        args += ["-f", fmt]
    for cmd in commands:
        args += ["-c", cmd]
    run = subprocess.run(args + [str(path)], capture_output=True, text=True)
    return run.stdout + run.stderr


def bdrv_io(path: Path | str, *commands: str, options: dict | None = None) -> None:
    """A qemu-io command subset (write [-P] [-c] [-z [-u]], discard) via Backend."""
    blk = Backend.open(str(path), dict(options or {}), O_RDWR | O_UNMAP)
    try:
        for cmd in commands:
            words = cmd.split()
            op, args = words[0], words[1:]
            if op == "write":
                pattern, flags, zero, unmap = 0xCD, 0, False, False
                while args[0].startswith("-"):
                    opt = args.pop(0)
                    if opt == "-P":
                        pattern = int(args.pop(0), 0)
                    elif opt == "-c":
                        flags |= REQ_WRITE_COMPRESSED
                    elif opt == "-z":
                        zero = True
                    elif opt == "-u":
                        unmap = True
                off, length = num(args[0]), num(args[1])
                if zero:
                    blk.pwrite_zeroes(off, length, REQ_MAY_UNMAP if unmap else 0)
                else:
                    blk.pwrite(off, bytes([pattern]) * length, flags)
            elif op == "discard":
                blk.pdiscard(num(args[0]), num(args[1]))
            else:
                raise ValueError(op)
    finally:
        blk.close()


def bdrv_read(path: Path | str, offset: int, length: int) -> bytes:
    blk = Backend.open(str(path), {}, 0)
    try:
        return blk.pread(offset, length)
    finally:
        blk.close()


def qemu_check(path: Path) -> subprocess.CompletedProcess:
    assert QEMU_IMG is not None
    return subprocess.run([QEMU_IMG, "check", str(path)], capture_output=True, text=True)


def qemu_map(path: Path) -> str:
    assert QEMU_IMG is not None
    return subprocess.run([QEMU_IMG, "map", "--output=json", str(path)],
                          capture_output=True, text=True).stdout
