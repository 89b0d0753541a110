"""Run bdrv-img and real qemu-img 7.2 on identical scratch images and compare them.

`check_same(tmp_path, args, setup)` builds the same files in two directories (with
`setup`, usually real qemu-img/qemu-io commands so both start from identical bytes and
allocation), runs qemu-img in one and bdrv-img in-process (argv[0] "qemu-img", so
messages carry the same prefix) in the other, and asserts that stdout, stderr, the
exit status and the files left behind (size, bytes, data extents, and allocated blocks
up to a few file system metadata blocks) agree.

tests/ is not a package: test modules put this directory on sys.path to import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bdrv.tools.img import main

QEMU_IMG = shutil.which(os.environ.get("QEMU_IMG_PROG", "qemu-img"))
QEMU_IO = shutil.which(os.environ.get("QEMU_IO_PROG", "qemu-io"))
needs_qemu = pytest.mark.skipif(QEMU_IMG is None or QEMU_IO is None,
                                reason="qemu-img/qemu-io not installed")

Setup = Callable[[Path], None]


@dataclass(frozen=True)
class Run:
    stdout: str
    stderr: str
    status: int


def qemu_img(cwd: Path, *args: str) -> Run:
    assert QEMU_IMG is not None
    proc = subprocess.run(["qemu-img", *args], executable=QEMU_IMG, cwd=cwd,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    return Run(proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
               proc.returncode)


def bdrv_img(cwd: Path, *args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["qemu-img", *args])
    finally:
        os.chdir(old)
    return Run(out.getvalue(), err.getvalue(), status)


def sh(cwd: Path, *argv: str) -> None:
    """Run a setup command (qemu-img, qemu-io, truncate...) that must succeed."""
    subprocess.run(list(argv), cwd=cwd, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=120)


def file_state(path: Path) -> tuple[object, ...]:
    """What a file looks like: size, content hash and data extents (SEEK_DATA/SEEK_HOLE)."""
    if not path.exists():
        return ("missing",)
    if path.is_dir():
        return ("dir",)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return (path.stat().st_size, digest, tuple(data_ranges(path)))


def allocated_blocks(path: Path) -> int:
    """st_blocks after writeback (ext4 counts delayed allocations differently before)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_blocks
    finally:
        os.close(fd)


# Extent-tree blocks depend on how fragmented the free space was: 8 KiB of slack.
BLOCKS_SLACK = 16


def data_ranges(path: Path) -> list[tuple[int, int]]:
    """Where the file holds data (SEEK_DATA/SEEK_HOLE), to compare sparseness."""
    extents = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            extents.append((data, hole))
            pos = hole
    finally:
        os.close(fd)
    return extents


def dir_state(root: Path) -> dict[str, tuple[object, ...]]:
    return {p.name: file_state(p) for p in sorted(root.iterdir())}


def check_same(
    tmp_path: Path,
    args: Sequence[str],
    setup: Setup | None = None,
    *,
    files: bool = True,
) -> Run:
    """Run `args` on both tools in identical directories; assert identical results."""
    qdir, bdir = tmp_path / "qemu", tmp_path / "bdrv"
    for d in (qdir, bdir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        if setup is not None:
            setup(d)
    expected = qemu_img(qdir, *args)
    got = bdrv_img(bdir, *args)
    assert got == expected, f"qemu-img {' '.join(args)}"
    if files:
        assert dir_state(bdir) == dir_state(qdir), f"files after qemu-img {' '.join(args)}"
        for path in sorted(qdir.iterdir()):
            if path.is_file():
                qblocks, bblocks = allocated_blocks(path), allocated_blocks(bdir / path.name)
                assert abs(qblocks - bblocks) <= BLOCKS_SLACK, (
                    f"{path.name}: {bblocks} blocks allocated, qemu-img: {qblocks}")
    return got


def images(*specs: tuple[str, str, Sequence[str]]) -> Setup:
    """A setup: for each (name, size, qemu-io commands) a raw image made by real QEMU."""

    def make(d: Path) -> None:
        for name, size, cmds in specs:
            sh(d, "qemu-img", "create", "-q", "-f", "raw", name, size)
            if cmds:
                argv = ["qemu-io", "-f", "raw"]
                for cmd in cmds:
                    argv += ["-c", cmd]
                sh(d, *argv, name)

    return make


def script(*commands: Sequence[str]) -> Setup:
    """A setup running each command (argv) in turn; see qcow2_create and qcow2_io."""

    def make(d: Path) -> None:
        for argv in commands:
            sh(d, *argv)

    return make


def qcow2_io(name: str, *cmds: str) -> list[str]:
    """argv: qemu-io -f qcow2 -c CMD... NAME."""
    argv = ["qemu-io", "-f", "qcow2"]
    for cmd in cmds:
        argv += ["-c", cmd]
    return [*argv, name]


def qcow2_create(name: str, size: str | None = None, *args: str) -> list[str]:
    """argv: qemu-img create -q -f qcow2 ARGS NAME [SIZE]."""
    return ["qemu-img", "create", "-q", "-f", "qcow2", *args, name,
            *([size] if size else [])]
