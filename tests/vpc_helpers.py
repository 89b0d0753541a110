"""Shared helpers for the vpc tests: opening chains, comparing images, witnesses.

tests/ is not a package: test modules put this directory on sys.path to import it.

Comparing with qemu-img: 7.2 writes the creation time and a random UUID into each
footer (so the footer checksum differs too). `masked()` zeroes those 24 bytes
(time stamp at 24..27, checksum and UUID at 64..83) in every footer copy, at offset
0 and in the last 512 bytes, and compares everything else exactly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bdrv.backend import Backend
from bdrv.graph import CHILD_COW, O_NO_BACKING, O_RDWR, Node
from bdrv.open import open_node

QEMU_IMG = shutil.which(os.environ.get("QEMU_IMG_PROG", "qemu-img"))
QEMU_IO = shutil.which(os.environ.get("QEMU_IO_PROG", "qemu-io"))
needs_qemu = pytest.mark.skipif(QEMU_IMG is None or QEMU_IO is None,
                                reason="qemu-img/qemu-io 7.2 not installed")

try:
    import pyvhdi
except ImportError:  # pragma: no cover - depends on the test environment
    pyvhdi = None
try:
    from FATtools import vhdutils
except ImportError:  # pragma: no cover
    vhdutils = None
needs_pyvhdi = pytest.mark.skipif(pyvhdi is None,
                                  reason="libvhdi-python (pyvhdi) not installed")
needs_fattools = pytest.mark.skipif(vhdutils is None, reason="fattools not installed")

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "third-party" / "vhd"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(),
                                    reason=f"third-party VHD fixtures not found at {FIXTURES}")


def qemu_img(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert QEMU_IMG is not None
    return subprocess.run([QEMU_IMG, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300, stdin=subprocess.DEVNULL)


def qemu_io(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert QEMU_IO is not None
    return subprocess.run([QEMU_IO, *map(str, args)], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def masked(path: Path) -> bytes:
    """The file's bytes with each footer's time stamp, checksum and UUID zeroed."""
    data = bytearray(path.read_bytes())
    for pos in {0, max(0, len(data) - 512)}:
        if data[pos:pos + 8] == b"conectix":
            data[pos + 24:pos + 28] = bytes(4)
            data[pos + 64:pos + 84] = bytes(20)
    return bytes(data)


def open_chain(path: Path | str, flags: int = 0, options: dict[str, Any] | None = None
               ) -> Backend:
    """Open a VHD with its parents attached as backing nodes.

    Until open.py opens backing files itself, the parents named by each driver's
    `full_backing_file` are opened read-only here and attached with the COW role.
    """
    opts = {"driver": "vpc", **(options or {})}
    blk = Backend.open(str(path), opts, flags)
    node: Node | None = None if flags & O_NO_BACKING else blk.node
    while node is not None and node.backing is None:
        full = getattr(node.driver, "full_backing_file", None)
        if not full:
            break
        fmt = getattr(node.driver, "backing_format", None)
        parent = open_node(full, {"driver": fmt} if fmt else {}, flags & ~O_RDWR)
        node.attach_child(parent, "backing", CHILD_COW)
        validate = getattr(node.driver, "validate_backing", None)
        if callable(validate):
            validate(parent)
        node = parent
    return blk


def vhdi_read(path: Path, parents: list[Path], offset: int, length: int) -> bytes:
    """Read through libvhdi, with the parent chain set explicitly (nearest first)."""
    assert pyvhdi is not None
    files = []
    for p in [path, *parents]:
        f = pyvhdi.file()
        f.open(str(p))
        files.append(f)
    for child, parent in zip(files, files[1:], strict=False):
        child.set_parent(parent)
    try:
        return bytes(files[0].read_buffer_at_offset(length, offset))
    finally:
        for f in files:
            f.close()
