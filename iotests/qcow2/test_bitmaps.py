"""Persistent dirty bitmaps, which bdrv does not support: while they are consistent,
check counts their clusters (so -r does not free them under the bitmaps); once a
program without bitmap support has written the image, both implementations warn and
treat them as leaks; a bad bitmaps extension is refused at open with 7.2's words.

Bitmaps are made by qemu-img 7.2 (`bitmap --add`, by="qemu"). References come from
qemu-img/qemu-io 7.2 (--backend qemu --regen).
"""

import re
import struct

import pytest

from harness import formats

pytestmark = pytest.mark.img

BITMAPS_EXT = 0x23852875


def _with_bitmaps(iot):
    img = iot.create("64M")
    iot.io(img, "write -P 0x71 0 1M")
    iot.img(["bitmap", "--add", str(img.path), "bm0"], by="qemu")
    iot.img(["bitmap", "--add", "-g", "128k", str(img.path), "bm1"], by="qemu")
    iot.io(img, "write -P 0x72 0 128k", by="qemu")
    return img


@formats("qcow2")
def test_bitmaps_check_counts_their_clusters(iot):
    img = _with_bitmaps(iot)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    # One repair only: 7.2 marks the bitmaps in use on each read-write open and moves
    # their directory, so a second repair's image end offset depends on where its
    # allocator finds room; bdrv, without bitmap support, leaves them where they are.
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)
    iot.img(["info", "-f", iot.fmt], img, by="qemu")
    # Where 7.2 repaired, it also moved the bitmap directory on close (see above).
    iot.add_filter(lambda text: re.sub(r"Image end offset: \d+", "Image end offset: N", text))
    iot.img(["check", "-f", iot.fmt], img, by="qemu")


@formats("qcow2")
def test_bitmaps_marked_inconsistent(iot):
    """The autoclear bit cleared, as a program without bitmap support leaves it."""
    img = _with_bitmaps(iot)
    iot.corrupt(img).header(autoclear_features=0)
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt], img)
    iot.io(img, "read -P 0x72 0 128k", opts=["-r"])
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt], img, by="qemu")
    iot.io(img, "read -P 0x72 0 128k", by="qemu")


@formats("qcow2")
def test_bitmaps_extension_refused(iot):
    img = _with_bitmaps(iot)
    c = iot.corrupt(img)
    at = [off for off, magic, _ in c.extensions() if magic == BITMAPS_EXT][0] + 8
    good = c.read(at, 24)
    nb, _, size, offset = struct.unpack(">IIQQ", good)
    for fields in ((nb, 1, size, offset), (0, 0, size, offset), (65536, 0, size, offset),
                   (nb, 0, size, offset + 512), (nb, 0, 65535 * 1024 + 8, offset)):
        c.poke(at, struct.pack(">IIQQ", *fields))
        iot.img(["info", "-f", iot.fmt], img)
        iot.io(img, "read 0 512", opts=["-r"])
    c.poke(at, good)
    iot.img(["check", "-f", iot.fmt], img)


@formats("qcow2")
def test_bitmaps_directory_refused(iot):
    """A consistent but broken bitmap directory: 7.2 refuses the image at open."""
    img = _with_bitmaps(iot)
    c = iot.corrupt(img)
    at = [off for off, magic, _ in c.extensions() if magic == BITMAPS_EXT][0] + 8
    good_ext = c.read(at, 24)
    nb, _, size, offset = struct.unpack(">IIQQ", good_ext)
    good_dir = c.read(offset, size)
    edits = ((offset + 8, struct.pack(">I", 0x8000000)),   # table too large
             (offset + 16, b"\2"),                          # not a dirty-tracking bitmap
             (offset + 17, b"\7"),                          # granularity below 512
             (offset + 20, struct.pack(">I", 8)),           # extra data
             (at, struct.pack(">I", nb + 1)),               # fewer bitmaps than said
             (at, struct.pack(">I", nb - 1)))               # more bitmaps than said
    for where, data in edits:
        c.poke(where, data)
        iot.img(["info", "-f", iot.fmt], img)
        iot.img(["check", "-f", iot.fmt], img)
        c.poke(at, good_ext).poke(offset, good_dir)
    iot.img(["check", "-f", iot.fmt], img)
