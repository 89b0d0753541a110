"""bdrv-img amend against real qemu-img 7.2.

Each case builds the same qcow2 images with real qemu-img/qemu-io in two directories,
runs qemu-img amend in one and bdrv-img amend in the other, and requires identical
output, exit status and files (bytes, size, data extents); after a successful amend
qemu-img check must say the same of both images (clean but for two 7.2 quirks).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import check_same, needs_qemu, qemu_img, script  # noqa: E402
from img_oracle import qcow2_create as _create  # noqa: E402
from img_oracle import qcow2_io as _io  # noqa: E402

pytestmark = needs_qemu


def _set_dirty(name: str) -> list[str]:
    """The dirty bit (incompatible feature bit 0, the header's byte 79)."""
    return ["sh", "-c", f"printf '\\001' | dd of={name} bs=1 seek=79 conv=notrunc status=none"]


_FIX_DATES = """
import struct, sys
with open(sys.argv[1], "r+b") as f:
    head = f.read(72)
    nb, pos = struct.unpack(">IQ", head[60:72])
    for _ in range(nb):
        pos = -(-pos // 8) * 8
        f.seek(pos)
        entry = f.read(40)
        id_len, name_len = struct.unpack(">HH", entry[12:16])
        extra = struct.unpack(">I", entry[36:40])[0]
        f.seek(pos + 16)
        f.write(bytes(8))
        pos += 40 + extra + id_len + name_len
"""


def _snapshot(name: str, tag: str) -> list[list[str]]:
    """A snapshot whose date fields are zeroed, so that both directories match."""
    return [["qemu-img", "snapshot", "-c", tag, name],
            [sys.executable, "-c", _FIX_DATES, name]]


# 8 bytes of header fields 7.2 does not know (header_length 120).
_UNKNOWN_FIELDS = """
import struct, sys
with open(sys.argv[1], "r+b") as f:
    head = bytearray(f.read(4096))
    exts = bytes(head[112:4088])
    head[100:104] = struct.pack(">I", 120)
    head[112:120] = b"ABCDEFGH"
    head[120:4096] = exts
    f.seek(0)
    f.write(head)
"""
# A snapshot entry as QEMU before 1.1 wrote it: no extra data.
_OLD_SNAPSHOT = """
import struct, sys
with open(sys.argv[1], "r+b") as f:
    data = bytearray(f.read())
    pos = struct.unpack(">Q", data[64:72])[0]
    entry = data[pos : pos + 40]
    id_len, name_len = struct.unpack(">HH", entry[12:16])
    extra = struct.unpack(">I", entry[36:40])[0]
    names = data[pos + 40 + extra : pos + 40 + extra + id_len + name_len]
    entry[36:40] = bytes(4)
    data[pos : pos + 40 + extra + id_len + name_len] = entry + names + bytes(extra)
    f.seek(0)
    f.write(data)
"""
OLD = [
    _create("h.qcow2", "4M"), _io("h.qcow2", "write 0 64k"),
    [sys.executable, "-c", _UNKNOWN_FIELDS, "h.qcow2"],
    _create("o.qcow2", "4M", "-o", "compat=0.10"), _io("o.qcow2", "write 0 64k"),
    *_snapshot("o.qcow2", "old"), [sys.executable, "-c", _OLD_SNAPSHOT, "o.qcow2"],
]


# Data, a plain zero cluster (-u on an allocated cluster), a preallocated zero cluster
# and a compressed one.
_MIXED = ("write -P 0x11 0 192k", "write -z -u 0 64k", "write -z 128k 64k",
          "write -c -P 0x22 1M 64k", "write -P 0x33 3M 1000")
IMAGES = [
    _create("a.qcow2", "4M"), _io("a.qcow2", *_MIXED),
    _create("v2.qcow2", "4M", "-o", "compat=0.10"), _io("v2.qcow2", "write -P 0x44 0 1M"),
    _create("base.qcow2", "8M"), _io("base.qcow2", "write -P 0x55 0 8M"),
    _create("top.qcow2", None, "-b", "base.qcow2", "-F", "qcow2"),
    _io("top.qcow2", "write -z 0 64k", "write -P 0x66 1M 64k", "write -z 1M 64k",
        "write -z 2M 256k"),
    _create("lazy.qcow2", "4M", "-o", "lazy_refcounts=on"), _io("lazy.qcow2", "write 0 64k"),
    _create("zstd.qcow2", "4M", "-o", "compression_type=zstd"),
    _io("zstd.qcow2", "write -z 0 64k"),
    _create("zstdc.qcow2", "4M", "-o", "compression_type=zstd"),
    _io("zstdc.qcow2", "write -c 0 64k"),
    _create("l2.qcow2", "4M", "-o", "extended_l2=on"), _io("l2.qcow2", "write 0 64k"),
    _create("r64.qcow2", "4M", "-o", "refcount_bits=64"), _io("r64.qcow2", "write 0 64k"),
    _create("r1.qcow2", "4M", "-o", "refcount_bits=1"), _io("r1.qcow2", "write 0 64k"),
    ["qemu-img", "create", "-q", "-f", "raw", "r.raw", "1M"],
]
# Snapshots: shared L2 tables (refcount 2) with zero clusters in them.
SNAP = [
    _create("s.qcow2", "4M"),
    _io("s.qcow2", "write -P 0x11 0 256k", "write -z 64k 64k", "write -z 2M 64k"),
    *_snapshot("s.qcow2", "one"),
    _io("s.qcow2", "write -z 192k 64k"),
    _create("sv2.qcow2", "4M", "-o", "compat=0.10"), _io("sv2.qcow2", "write 0 64k"),
    *_snapshot("sv2.qcow2", "old"),
    _create("base.qcow2", "8M"), _io("base.qcow2", "write -P 0x55 0 8M"),
    _create("sb.qcow2", None, "-b", "base.qcow2", "-F", "qcow2"),
    _io("sb.qcow2", "write -z 0 128k"),
    *_snapshot("sb.qcow2", "one"),
    _io("sb.qcow2", "write -z 1M 64k"),
]
# Small clusters: the refcount structures span many refblocks.
SMALL = [
    _create("c.qcow2", "16M", "-o", "cluster_size=512"),
    _io("c.qcow2", "write -P 0x11 0 3M", "write -P 0x22 8M 1M", "write -z 1M 4k"),
    *_snapshot("c.qcow2", "one"),
    _io("c.qcow2", "write -P 0x33 512k 64k"),
    _create("d.qcow2", "64M", "-o", "cluster_size=4k,refcount_bits=2"),
    _io("d.qcow2", "write -P 0x11 0 40M"),
]
DIRTY = [
    _create("dl.qcow2", "4M", "-o", "lazy_refcounts=on"), _io("dl.qcow2", "write 0 64k"),
    _set_dirty("dl.qcow2"),
]

CASES: list[tuple[list[list[str]], list[str]]] = [
    # option parsing
    (IMAGES, []),
    (IMAGES, ["a.qcow2"]),
    (IMAGES, ["-o", "help", "a.qcow2"]),
    (IMAGES, ["-o", "?", "-f", "qcow2"]),
    (IMAGES, ["-p", "-f", "qcow2", "-o", "help"]),
    (IMAGES, ["-f", "qcow2", "-o", "size=1M,help", "nosuch"]),
    (IMAGES, ["-f", "raw", "-o", "help"]),
    (IMAGES, ["-f", "foo", "-o", "help"]),
    (IMAGES, ["-o", "help", "r.raw"]),
    (IMAGES, ["-o", "size=2M", "r.raw"]),
    (IMAGES, ["-f", "raw", "-o", "size=2M", "r.raw"]),
    (IMAGES, ["-o", "size=2M"]),
    (IMAGES, ["-o", "size=2M", "a.qcow2", "v2.qcow2"]),
    (IMAGES, ["-o", "", "a.qcow2"]),
    (IMAGES, ["-o", ",size=1M", "a.qcow2"]),
    (IMAGES, ["-p", "-o", "foo=1", "a.qcow2"]),
    (IMAGES, ["-x", "a.qcow2"]),
    (IMAGES, ["-o"]),
    (IMAGES, ["-t", "bogus", "-o", "compat=1.1", "a.qcow2"]),
    (IMAGES, ["-p", "-t", "bogus", "-o", "compat=1.1", "a.qcow2"]),
    (IMAGES, ["-o", "compat=1.1", "nosuch.qcow2"]),
    (IMAGES, ["-f", "qcow2", "-o", "compat=1.1", "r.raw"]),
    (IMAGES, ["-o", "cluster_size=4k", "a.qcow2"]),
    (IMAGES, ["-o", "preallocation=full", "a.qcow2"]),
    (IMAGES, ["-o", "compression_type=zstd", "a.qcow2"]),
    (IMAGES, ["-o", "extended_l2=on", "a.qcow2"]),
    (IMAGES, ["-o", "encryption=on", "a.qcow2"]),
    (IMAGES, ["-o", "encrypt.format=luks", "a.qcow2"]),
    (IMAGES, ["-o", "cluster_size=4k,foo=1", "a.qcow2"]),
    (IMAGES, ["-o", "lazy_refcounts=x", "a.qcow2"]),
    (IMAGES, ["-o", "size=x", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=x", "a.qcow2"]),
    (IMAGES, ["-o", "encrypt.state=active", "a.qcow2"]),
    (IMAGES, ["-o", "data_file=x", "a.qcow2"]),
    (IMAGES, ["-o", "data_file_raw=on", "a.qcow2"]),
    (IMAGES, ["-o", "data_file_raw=off", "a.qcow2"]),
    (IMAGES, ["-o", "compat=foo", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=3,compat=foo", "a.qcow2"]),
    (IMAGES, ["-q", "-o", "size=8M", "-o", "compat=0.10", "a.qcow2"]),
    (IMAGES, ["--image-opts", "-o", "compat=0.10", "driver=qcow2,file.filename=a.qcow2"]),
    (IMAGES, ["--image-opts", "-f", "qcow2", "-o", "compat=0.10", "a.qcow2"]),
    (IMAGES, ["--force", "-t", "none", "-o", "lazy_refcounts=on", "a.qcow2"]),
    # compat
    (IMAGES, ["-p", "-o", "compat=0.10", "a.qcow2"]),
    (IMAGES, ["-o", "compat=v2", "a.qcow2"]),
    (IMAGES, ["-p", "-o", "compat=1.1", "v2.qcow2"]),
    (IMAGES, ["-o", "compat=v3", "a.qcow2"]),
    (IMAGES, ["-p", "-o", "compat=0.10", "top.qcow2"]),
    (IMAGES, ["-o", "compat=0.10", "lazy.qcow2"]),
    (IMAGES, ["-o", "compat=0.10", "zstd.qcow2"]),
    (IMAGES, ["-o", "compat=0.10", "zstdc.qcow2"]),
    (IMAGES, ["-o", "compat=0.10", "l2.qcow2"]),
    (IMAGES, ["-o", "compat=0.10", "r64.qcow2"]),
    (IMAGES, ["-p", "-o", "compat=0.10,refcount_bits=16", "r64.qcow2"]),
    (IMAGES, ["-o", "compat=0.10,refcount_bits=8", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=8", "v2.qcow2"]),
    (IMAGES, ["-p", "-o", "compat=1.1,refcount_bits=1", "v2.qcow2"]),
    # lazy refcounts
    (IMAGES, ["-o", "lazy_refcounts=on", "a.qcow2"]),
    (IMAGES, ["-o", "lazy_refcounts=off", "lazy.qcow2"]),
    (IMAGES, ["-o", "lazy_refcounts=on", "v2.qcow2"]),
    (IMAGES, ["-o", "lazy_refcounts=on,compat=0.10", "a.qcow2"]),
    (IMAGES, ["-o", "lazy_refcounts=on,compat=1.1", "v2.qcow2"]),
    (IMAGES, ["-o", "lazy_refcounts=off,compat=0.10", "lazy.qcow2"]),
    # refcount width
    (IMAGES, ["-p", "-o", "refcount_bits=1", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=2", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=64", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=16", "r64.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=16", "r1.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=32", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=0", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=128", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=4294967312", "a.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=16", "a.qcow2"]),
    # backing file
    (IMAGES, ["-o", "backing_file=base.qcow2,backing_fmt=qcow2", "top.qcow2"]),
    (IMAGES, ["-o", "backing_file=base.qcow2", "top.qcow2"]),
    (IMAGES, ["-o", "backing_fmt=qcow2", "top.qcow2"]),
    (IMAGES, ["-o", "backing_file=r.raw,backing_fmt=raw", "a.qcow2"]),
    (IMAGES, ["-o", "backing_file=", "a.qcow2"]),
    (IMAGES, ["-o", "compat=1.1,backing_file=foo", "v2.qcow2"]),
    (IMAGES, ["-o", "refcount_bits=8,lazy_refcounts=on,backing_fmt=raw", "a.qcow2"]),
    # size
    (IMAGES, ["-o", "size=8M", "a.qcow2"]),
    (IMAGES, ["-o", "size=1M", "a.qcow2"]),
    (IMAGES, ["-o", "size=1000", "a.qcow2"]),
    (IMAGES, ["-o", "size=0", "a.qcow2"]),
    (IMAGES, ["-o", "size=16M", "top.qcow2"]),
    (IMAGES, ["-o", "size=1M,compat=0.10", "a.qcow2"]),
    (IMAGES, ["-o", "size=16M,lazy_refcounts=on", "top.qcow2"]),
    (IMAGES, ["-o", "size=9E", "a.qcow2"]),
    # snapshots
    (SNAP, ["-p", "-o", "compat=0.10", "s.qcow2"]),
    (SNAP, ["-p", "-o", "compat=0.10", "sb.qcow2"]),
    (SNAP, ["-o", "compat=1.1", "sv2.qcow2"]),
    (SNAP, ["-o", "refcount_bits=1", "s.qcow2"]),
    (SNAP, ["-o", "refcount_bits=2", "s.qcow2"]),
    (SNAP, ["-o", "size=8M", "s.qcow2"]),
    (SNAP, ["-o", "size=8M,compat=0.10", "s.qcow2"]),
    (SNAP, ["-o", "size=8M", "sv2.qcow2"]),
    (SNAP, ["-o", "size=8M,compat=1.1", "sv2.qcow2"]),
    # many refblocks
    (SMALL, ["-p", "-o", "refcount_bits=1", "c.qcow2"]),
    (SMALL, ["-p", "-o", "refcount_bits=64", "c.qcow2"]),
    (SMALL, ["-o", "refcount_bits=4", "c.qcow2"]),
    (SMALL, ["-p", "-o", "compat=0.10", "c.qcow2"]),
    (SMALL, ["-p", "-o", "refcount_bits=64", "d.qcow2"]),
    (SMALL, ["-o", "refcount_bits=1", "d.qcow2"]),
    # what older or other writers left
    (OLD, ["-p", "-o", "compat=1.1", "o.qcow2"]),
    (OLD, ["-o", "compat=1.1,refcount_bits=8", "o.qcow2"]),
    (OLD, ["-o", "lazy_refcounts=on", "h.qcow2"]),
    (OLD, ["-o", "compat=0.10", "h.qcow2"]),
    # dirty images are repaired on open
    (DIRTY, ["-o", "compat=0.10", "dl.qcow2"]),
    (DIRTY, ["-o", "lazy_refcounts=off", "dl.qcow2"]),
]


def _id(args: Sequence[str]) -> str:
    return " ".join(args) or "(none)"


@pytest.mark.parametrize(("setup", "args"), CASES, ids=[_id(a) for _, a in CASES])
def test_amend(tmp_path: Path, setup: list[list[str]], args: list[str]) -> None:
    run = check_same(tmp_path, ["amend", *args], script(*setup))
    image = args[-1] if args else ""
    if run.status == 0 and image.endswith(".qcow2") and "=" not in image:
        # Clean, except where 7.2 leaves the same errors: a zero cluster expanded in an
        # unshared L2 table of a snapshotted image gets OFLAG_COPIED at refcount 2, and
        # unknown header fields written after a v2 header read as a bad extension.
        ours = qemu_img(tmp_path / "bdrv", "check", image)
        assert ours == qemu_img(tmp_path / "qemu", "check", image)
        assert ours.status == 0 or image == "s.qcow2" or args[-2:] == [
            "compat=0.10", "h.qcow2"], ours.stdout + ours.stderr
