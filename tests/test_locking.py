"""Image locks: the same bytes as QEMU 7.2's file-posix, seen from both sides."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bdrv.backend import Backend
from bdrv.errors import BlockError
from bdrv.graph import O_NO_SHARE, O_RDWR

QEMU_IO = shutil.which("qemu-io")
QEMU_IMG = shutil.which("qemu-img")
needs_qemu = pytest.mark.skipif(not (QEMU_IO and QEMU_IMG), reason="QEMU 7.2 tools absent")


def held_bytes(path: Path) -> set[int]:
    """Bytes of `path` under OFD locks, from /proc/locks."""
    inode = str(os.stat(path).st_ino)
    held: set[int] = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "OFDLCK" in fields and fields[-3].split(":")[-1] == inode:
            held.update(range(int(fields[-2]), int(fields[-1]) + 1))
    return held


@contextmanager
def qemu_io_holding(path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A qemu-io process keeping `path` open until the block ends."""
    assert QEMU_IO
    proc = subprocess.Popen([QEMU_IO, *args, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 10
        while not held_bytes(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield proc
    finally:
        assert proc.stdin
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait(10)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "t.img"
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    return path


@needs_qemu
@pytest.mark.parametrize("qemu_args,flags", [(("-f", "raw"), O_RDWR), (("-r", "-f", "raw"), 0)])
def test_same_lock_bytes_as_qemu_io(image: Path, qemu_args: tuple[str, ...], flags: int) -> None:
    with qemu_io_holding(image, *qemu_args):
        qemu_bytes = held_bytes(image)
    backend = Backend.open(str(image), {"driver": "raw"}, flags)
    try:
        assert held_bytes(image) == qemu_bytes
    finally:
        backend.close()
    assert held_bytes(image) == set()


@needs_qemu
def test_qemu_writer_of_qcow2_blocks_bdrv_writer(tmp_path: Path) -> None:
    path = tmp_path / "t.qcow2"
    assert QEMU_IMG
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    with qemu_io_holding(path, "-f", "qcow2"):
        with pytest.raises(BlockError) as info:
            Backend.open(str(path), {"driver": "file"}, O_RDWR)
        assert info.value.render("qemu-img") == (
            'qemu-img: Failed to get "write" lock\n'
            f"Is another process using the image [{path}]?\n"
        )
        with pytest.raises(BlockError, match='Failed to get shared "write" lock'):
            Backend.open(str(path), {"driver": "file"}, O_NO_SHARE)
        # force-share reads what a writer holds, as qemu-img -U does.
        Backend.open(str(path), {"driver": "file", "force-share": "on"}, 0).close()


@needs_qemu
def test_bdrv_unsharing_writer_blocks_qemu(image: Path) -> None:
    assert QEMU_IO and QEMU_IMG
    backend = Backend.open(str(image), {"driver": "raw"}, O_RDWR | O_NO_SHARE)
    try:
        proc = subprocess.run([QEMU_IO, "-f", "raw", "-c", "quit", str(image)],
                              capture_output=True, text=True)
        assert proc.returncode == 1
        assert proc.stderr == (
            f'qemu-io: can\'t open device {image}: Failed to get "write" lock\n'
            f"Is another process using the image [{image}]?\n"
        )
        proc = subprocess.run([QEMU_IMG, "info", "-U", "-f", "raw", str(image)],
                              capture_output=True, text=True)
        assert proc.returncode == 0
    finally:
        backend.close()
    proc = subprocess.run([QEMU_IO, "-f", "raw", "-c", "quit", str(image)],
                          capture_output=True, text=True)
    assert proc.returncode == 0
