"""qcow2 I/O: the same writes through bdrv and qemu-io give byte-identical images,
each reads what the other wrote, chains work across implementations, and qemu-img
check finds nothing wrong with what bdrv wrote."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qcow2_util import (  # noqa: E402
    bdrv_create,
    bdrv_io,
    bdrv_read,
    needs_qemu,
    qemu_check,
    qemu_create,
    qemu_io,
    qemu_map,
)

from bdrv.backend import Backend  # noqa: E402
from bdrv.errors import BlockError  # noqa: E402

SEQUENCES = {
    "basic": ["write -P 0x11 0 4k", "write -P 0x22 100k 200k", "write -P 0x33 2M 1M"],
    "zero-discard": ["write -P 0x11 0 1M", "write -z 64k 64k", "discard 128k 128k",
                     "write -z -u 512k 128k", "write -z 3M 64k", "write -P 1 900k 3k"],
    "compressed": ["write -c 0 64k", "write -c -P 0x44 1M 64k", "write -P 5 1M 4k",
                   "write -c -P 0 2M 64k", "write -P 6 10k 1k", "discard 1M 64k"],
    "unaligned": ["write -P 7 1 1", "write -P 8 65535 2", "write -P 9 130000 70000",
                  "write -z 5000 100", "write -z 200k 70k"],
    "large": ["write -P 0x55 0 12M", "write -P 0x66 5M 64k", "discard 0 4M"],
}
CREATE = ["", "compat=0.10", "cluster_size=512", "cluster_size=2M", "refcount_bits=1",
          "refcount_bits=64", "extended_l2=on", "lazy_refcounts=on",
          "compression_type=zstd", "preallocation=metadata", "cluster_size=4k,refcount_bits=2"]


@needs_qemu
@pytest.mark.parametrize("opts", CREATE)
@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_same_writes_same_bytes(tmp_path: Path, opts: str, name: str) -> None:
    if name == "compressed" and "cluster_size" in opts:
        pytest.skip("7.2 compresses the clusters of one request in parallel: "
                    "their order on disk is not deterministic")
    ours, theirs = tmp_path / "b.qcow2", tmp_path / "q.qcow2"
    assert qemu_create(theirs, opts, "16M").returncode == 0
    shutil.copy(theirs, ours)
    out = qemu_io(theirs, *SEQUENCES[name])
    failed = "failed" in out
    if failed:
        # Operations qemu refuses (e.g. zeroes on v2) must fail for us as well.
        with pytest.raises(BlockError):
            bdrv_io(ours, *SEQUENCES[name])
        return
    bdrv_io(ours, *SEQUENCES[name])
    assert ours.read_bytes() == theirs.read_bytes()
    check = qemu_check(ours)
    assert check.returncode == 0, check.stdout + check.stderr
    assert bdrv_read(ours, 0, 16 << 20) == bdrv_read(theirs, 0, 16 << 20)


@needs_qemu
def test_qemu_reads_what_bdrv_wrote(tmp_path: Path) -> None:
    img = tmp_path / "t.qcow2"
    bdrv_create(img, "", "8M")
    bdrv_io(img, "write -P 0xa5 1M 300k", "write -c -P 0x5a 4M 64k", "write -z 1100k 8k")
    out = qemu_io(img, "read -P 0xa5 1M 76k", "read -P 0 1100k 8k",
                  "read -P 0xa5 1108k 192k", "read -P 0x5a 4M 64k", "read -P 0 0 1M")
    assert "verification failed" not in out and "failed" not in out, out


@needs_qemu
def test_chain_written_alternately(tmp_path: Path) -> None:
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    bdrv_create(base, "", "4M")
    qemu_io(base, "write -P 1 0 4M")
    bdrv_io(base, "write -P 2 1M 1M")
    assert qemu_create(top, "", "4M", "-b", "base.qcow2", "-F", "qcow2").returncode == 0
    bdrv_io(top, "write -P 3 100k 50k")
    qemu_io(top, "write -P 4 3M 64k")
    bdrv_io(top, "write -z 2M 64k")
    expect = bytearray(b"\1" * (4 << 20))
    expect[1 << 20 : 2 << 20] = b"\2" * (1 << 20)
    expect[100 << 10 : 150 << 10] = b"\3" * (50 << 10)
    expect[3 << 20 : (3 << 20) + (64 << 10)] = b"\4" * (64 << 10)
    expect[2 << 20 : (2 << 20) + (64 << 10)] = bytes(64 << 10)
    assert bdrv_read(top, 0, 4 << 20) == bytes(expect)
    out = qemu_io(top, "read -P 3 100k 50k", "read -P 1 0 100k", "read -P 2 1M 1M",
                  "read -P 0 2M 64k", "read -P 4 3M 64k")
    assert "failed" not in out, out
    for img in (base, top):
        assert qemu_check(img).returncode == 0


@needs_qemu
def test_chain_cow_identical(tmp_path: Path) -> None:
    for d in ("b", "q"):
        (tmp_path / d).mkdir()
        bdrv_create(tmp_path / d / "base.qcow2", "", "2M")
        bdrv_io(tmp_path / d / "base.qcow2", "write -P 0x11 0 2M")
        assert qemu_create(tmp_path / d / "top.qcow2", "", "2M", "-b", "base.qcow2",
                           "-F", "qcow2").returncode == 0
    cmds = ["write -P 0x22 32k 64k", "write -z 300k 10k", "discard 1M 64k", "write -c 1536k 64k"]
    bdrv_io(tmp_path / "b" / "top.qcow2", *cmds)
    qemu_io(tmp_path / "q" / "top.qcow2", *cmds)
    assert (tmp_path / "b/top.qcow2").read_bytes() == (tmp_path / "q/top.qcow2").read_bytes()
    assert qemu_map(tmp_path / "b/top.qcow2") == qemu_map(tmp_path / "q/top.qcow2")


def _chain(tmp_path: Path, depth: int) -> Path:
    bdrv_create(tmp_path / "l0.qcow2", "", "1M")
    bdrv_io(tmp_path / "l0.qcow2", "write -P 0x42 0 4k")
    for i in range(1, depth):
        bdrv_create(tmp_path / f"l{i}.qcow2",
                    f"backing_file=l{i - 1}.qcow2,backing_fmt=qcow2", "1M")
    return tmp_path / f"l{depth - 1}.qcow2"


def test_deep_chain_opens_and_reads(tmp_path: Path) -> None:
    top = _chain(tmp_path, 1500)
    blk = Backend.open(str(top), {}, 0)
    try:
        assert blk.pread(0, 8192) == b"\x42" * 4096 + bytes(4096)
        depth = 0
        node = blk.node
        while node.backing is not None:
            node = node.backing.node
            depth += 1
        assert depth == 1499
    finally:
        blk.close()


def test_backing_loop_is_an_error(tmp_path: Path) -> None:
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    bdrv_create(a, "backing_file=b.qcow2,backing_fmt=qcow2", "1M")
    bdrv_create(b, "backing_file=a.qcow2,backing_fmt=qcow2", "1M")
    with pytest.raises(BlockError) as exc:
        Backend.open(str(a), {}, 0)
    assert exc.value.message.startswith("Could not open backing file: Could not open backing "
                                        "file: Backing file")


@needs_qemu
def test_missing_backing_message(tmp_path: Path) -> None:
    img = tmp_path / "c.qcow2"
    bdrv_create(img, "backing_file=nonexist.qcow2,backing_fmt=qcow2", "1M")
    out = qemu_io(img, "read 0 1k")
    with pytest.raises(BlockError) as exc:
        Backend.open(str(img), {}, 0)
    assert f"can't open device {img}: {exc.value.message}" in out
    # backing: null opens the overlay alone.
    blk = Backend.open(str(img), {"backing": None}, 0)
    blk.close()


HEADER_CASES = [
    (4, b"\0\0\0\4", "Unsupported qcow2 version 4"),
    (20, b"\0\0\0\x08", "Unsupported cluster size: 2^8"),
    (20, b"\0\0\0\x16", "Unsupported cluster size: 2^22"),
    (100, b"\0\0\0\x40", "qcow2 header too short"),
    (96, b"\0\0\0\x07", "Reference count entry width too large; may not exceed 64 bits"),
    (36, b"\x10\0\0\0", "Active L1 table too large"),
    (40, b"\0\0\0\0\0\0\x10\x01", "Active L1 table offset invalid"),
    (56, b"\x10\0\0\0", "Reference count table too large"),
    (56, b"\0\0\0\0", "Image does not contain a reference count table"),
    (36, b"\0\0\0\0", "L1 table is too small"),
    (72, b"\0\0\0\0\0\0\x01\0", "Unsupported qcow2 feature(s): Unknown incompatible "
     "feature: 100"),
    (32, b"\0\0\0\3", "Unsupported encryption method 3"),
    (8, b"\0\0\0\0\0\1\0\1", "Invalid backing file offset"),
]


@needs_qemu
@pytest.mark.parametrize("offset,data,message", HEADER_CASES)
def test_bad_header_messages(tmp_path: Path, offset: int, data: bytes, message: str) -> None:
    img = tmp_path / "bad.qcow2"
    bdrv_create(img, "", "1M")
    with open(img, "r+b") as f:
        f.seek(offset)
        f.write(data)
    out = qemu_io(img, "read 0 512")
    assert message in out
    with pytest.raises(BlockError) as exc:
        Backend.open(str(img), {}, 0)
    assert exc.value.message == message


def test_corrupt_bit_refuses_rw(tmp_path: Path) -> None:
    from bdrv.graph import O_RDWR

    img = tmp_path / "c.qcow2"
    bdrv_create(img, "", "1M")
    with open(img, "r+b") as f:
        f.seek(72)
        f.write((2).to_bytes(8, "big"))
    with pytest.raises(BlockError) as exc:
        Backend.open(str(img), {}, O_RDWR)
    assert exc.value.message == "qcow2: Image is corrupt; cannot be opened read/write"
    Backend.open(str(img), {}, 0).close()


@needs_qemu
def test_overlap_marks_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "o.qcow2"
    bdrv_create(img, "", "1M")
    bdrv_io(img, "write -P 1 0 64k")
    # Point the data cluster of guest cluster 0 at the refcount table.
    with open(img, "r+b") as f:
        f.seek(0x40000)
        f.write((0x10000 | 1 << 63).to_bytes(8, "big"))
    with pytest.raises(BlockError):
        bdrv_io(img, "write -P 2 0 4k")
    err = capsys.readouterr().err
    assert "qcow2: Marking image as corrupt: Preventing invalid write on metadata " \
           "(overlaps with refcount table)" in err
    assert int.from_bytes(img.read_bytes()[72:80], "big") & 2
