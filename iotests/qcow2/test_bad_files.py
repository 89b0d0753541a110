"""Truncated qcow2 files and metadata tables that point outside the file or off alignment.

The defaults of a 64 MiB image with 64 KiB clusters: header at 0, refcount table at
0x10000, refcount block at 0x20000, L1 table at 0x30000, L2 table at 0x40000, data
from 0x50000. Reads are read-only (`-r`) and check does not repair, so the file is left
as it was: both SHA-256 lines are the same.
"""

from harness import formats


def _image(iot):
    img = iot.create("64M")
    iot.io(img, "write -P 0x11 0 128k")
    return img


def _probe(iot, img, read="read -P 0x11 0 128k", map_=True):
    before = iot.checksum(img)
    iot.img(["info", "-f", iot.fmt], img)
    iot.io(img, read, opts="-r")
    iot.img(["check", "-f", iot.fmt], img)
    if map_:
        iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    if iot.checksum(img) != before:
        iot.log("!!! the image changed")


@formats("qcow2")
def test_bad_truncated_header(iot):
    for size in (0, 4, 50, 71, 104):
        img = _image(iot)
        iot.corrupt(img).truncate(size)
        before = iot.checksum(img)
        iot.img(["info", "-f", iot.fmt], img)
        iot.img(["info"], img)
        iot.io(img, "read 0 512", opts="-r")
        iot.io(img, "read 0 512")
        if iot.checksum(img) != before:
            iot.log("!!! the image changed")


@formats("qcow2")
def test_bad_truncated_tables(iot):
    for size in (0x10000, 0x20000, 0x30000, 0x30004, 0x40000, 0x40008, 0x50000, 0x58000):
        img = _image(iot)
        iot.corrupt(img).truncate(size)
        _probe(iot, img)


@formats("qcow2")
def test_bad_l1_entries(iot):
    img = _image(iot)
    l2 = iot.corrupt(img).l1_entry(0)
    iot.log("--- unaligned; past the end of the file; the largest offset; the L1 table itself")
    for entry in (l2 | 0x201, (1 << 63) | (1 << 40), (1 << 63) | 0x00FF_FFFF_FFFF_0000,
                  (1 << 63) | 0x30000):
        iot.corrupt(img).l1(0, entry)
        _probe(iot, img, map_=False)


@formats("qcow2")
def test_bad_l2_entries(iot):
    img = _image(iot)
    data = iot.corrupt(img).l2_entry(0)
    for entry in (data | 0x200, (1 << 63) | (1 << 40), (1 << 63) | 0x00FF_FFFF_FFFF_0000,
                  (1 << 63) | 0x30000, 1 << 62 | 0x3FFF_FFFF_FFFF_FFFF, 0x1):
        iot.corrupt(img).l2(0, entry)
        _probe(iot, img, read="read -P 0x11 0 64k", map_=False)


@formats("qcow2")
def test_bad_refcount_table_entries(iot):
    img = _image(iot)
    block = iot.corrupt(img).reftable_entry(0)
    for entry in (block | 0x200, 1 << 40, 0xFFFF_FFFF_FFFF_0000, 0):
        iot.corrupt(img).reftable(0, entry)
        _probe(iot, img, map_=False)
    iot.corrupt(img).reftable(0, block)
    iot.log("--- a refcount block that counts nothing: every cluster leaks")
    iot.corrupt(img).refcount(0, 0).refcount(5, 0)
    _probe(iot, img)
