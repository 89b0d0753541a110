"""Persistent bitmaps in an implementation without bitmap support (bdrv): the protocol
qcow2.txt sets for autoclear bits, checked with real QEMU 7.2 as the reader.

- A read-write open by bdrv clears the bitmaps' autoclear bit before writing, so QEMU
  afterwards warns, ignores the stale bitmaps and lets `check -r` reclaim their
  clusters, instead of trusting bitmaps that missed bdrv's writes.
- A read-only open, and bdrv-img check -r (which repairs only metadata), keep them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from img_oracle import bdrv_img, needs_qemu, qemu_img, sh  # noqa: E402
from io_oracle import run_bdrv  # noqa: E402

from harness.corrupt import qcow2  # noqa: E402

pytestmark = needs_qemu
STALE = "a program lacking bitmap support modified this file"


def _image(d: Path) -> Path:
    sh(d, "qemu-img", "create", "-q", "-f", "qcow2", "t.qcow2", "64M")
    sh(d, "qemu-io", "-c", "write -P 0x11 0 1M", "t.qcow2")
    sh(d, "qemu-img", "bitmap", "--add", "t.qcow2", "b0")
    sh(d, "qemu-io", "-c", "write -P 0x22 0 64k", "t.qcow2")
    return d / "t.qcow2"


def test_write_by_bdrv_marks_bitmaps_inconsistent(tmp_path: Path) -> None:
    img = _image(tmp_path)
    ours = run_bdrv(["-f", "qcow2", "-c", "write -P 0x33 64k 64k", "t.qcow2"], tmp_path)
    assert ours.status == 0
    before = qemu_img(tmp_path, "check", "t.qcow2")
    assert STALE in before.stderr and before.status == 3
    assert "leaked clusters were found" in before.stdout
    assert qemu_img(tmp_path, "check", "-r", "all", "t.qcow2").status == 0
    after = qemu_img(tmp_path, "check", "t.qcow2")
    assert (after.status, after.stderr) == (0, "")
    assert "bitmaps:" not in qemu_img(tmp_path, "info", "t.qcow2").stdout
    sh(tmp_path, "qemu-io", "-c", "read -P 0x22 0 64k", "-c", "read -P 0x33 64k 64k",
       "-c", "read -P 0x11 128k 896k", str(img))


def test_read_only_open_and_check_repair_keep_bitmaps(tmp_path: Path) -> None:
    img = _image(tmp_path)
    original = img.read_bytes()
    assert run_bdrv(["-r", "-f", "qcow2", "-c", "read -P 0x22 0 64k", "t.qcow2"],
                    tmp_path).status == 0
    repaired = bdrv_img(tmp_path, "check", "-r", "all", "t.qcow2")
    assert (repaired.status, repaired.stderr) == (0, "")
    assert img.read_bytes() == original
    theirs = qemu_img(tmp_path, "check", "t.qcow2")
    assert (theirs.status, theirs.stderr) == (0, "")
    assert "name: b0" in qemu_img(tmp_path, "info", "t.qcow2").stdout


def test_leaked_cluster_next_to_bitmaps_is_repaired_like_qemu(tmp_path: Path) -> None:
    """A real leak is still found and freed; the bitmaps' clusters are not."""
    for name in ("q", "b"):
        d = tmp_path / name
        d.mkdir()
        c = qcow2(_image(d))
        free = [i for i in range(c.size() // 65536) if c.refcount_of(i) == 0]
        c.refcount(free[0], 1)
    theirs = qemu_img(tmp_path / "q", "check", "-r", "all", "t.qcow2")
    ours = bdrv_img(tmp_path / "b", "check", "-r", "all", "t.qcow2")
    assert "Leaked cluster" in theirs.stderr
    assert (ours.status, ours.stdout, ours.stderr) == \
        (theirs.status, theirs.stdout, theirs.stderr)
    for name in ("q", "b"):
        assert "name: b0" in qemu_img(tmp_path / name, "info", "t.qcow2").stdout
        assert qemu_img(tmp_path / name, "check", "t.qcow2").status == 0


def test_broken_bitmap_directory_is_refused_like_qemu(tmp_path: Path) -> None:
    """A directory entry claiming the largest bitmap table (1 GiB of entries): 7.2
    refuses the image at open (its constraints), and so does bdrv."""
    import struct

    for name in ("q", "b"):
        d = tmp_path / name
        d.mkdir()
        c = qcow2(_image(d))
        ext = [off for off, magic, _ in c.extensions() if magic == 0x23852875][0]
        _nb, _res, _size, dir_offset = struct.unpack(">IIQQ", c.read(ext + 8, 24))
        c.poke(dir_offset + 8, struct.pack(">I", 0x8000000))
    for args in (("check", "t.qcow2"), ("info", "t.qcow2")):
        theirs = qemu_img(tmp_path / "q", *args)
        ours = bdrv_img(tmp_path / "b", *args)
        assert "doesn't satisfy the constraints" in theirs.stderr
        assert (ours.status, ours.stdout, ours.stderr) == \
            (theirs.status, theirs.stdout, theirs.stderr)
