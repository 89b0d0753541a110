"""Backing chains that loop or run very deep.

QEMU 7.2 hangs opening a looping chain read-only (qemu-io -r, check, map), so only the
ways 7.2 finishes are run: info without the chain, info --backing-chain (which detects
the loop), and a read-write open (which fails on its own write lock). Deep chains are
built by copying one overlay and rewriting its backing file name (harness.corrupt).
"""

import shutil

from harness import corrupt, formats


@formats("qcow2")
def test_bad_backing_self_loop(iot):
    img = iot.create("1M", args="-u -b missing.qcow2 -F qcow2")
    iot.corrupt(img).backing_name(b"t.qcow2")
    before = iot.checksum(img)
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt, "--backing-chain"], img)
    iot.img(["info", "--backing-chain", "-U"], img)
    iot.io(img, "read 0 512")
    iot.io(img, "write 0 512")
    if iot.checksum(img) != before:
        iot.log("!!! the image changed")
    iot.log("--- the way out: rebase -u drops the backing file without opening it")
    iot.img(["rebase", "-u", "-f", iot.fmt, "-b", ""], img)
    iot.img(["info", "-f", iot.fmt, "--backing-chain"], img)


@formats("qcow2")
def test_bad_backing_loop(iot):
    a = iot.create("1M", name="a.qcow2", args="-u -b b.qcow2 -F qcow2")
    b = iot.create("1M", name="b.qcow2", args="-u -b c.qcow2 -F qcow2")
    c = iot.create("1M", name="c.qcow2", args="-u -b a.qcow2 -F qcow2")
    sums = [iot.checksum(x) for x in (a, b, c)]
    for img in (a, b, c):
        iot.img(["info", "-f", iot.fmt, "--backing-chain"], img)
    iot.img(["info", "-f", iot.fmt], a)
    iot.io(a, "read 0 512")
    iot.io(b, "write -P 0x22 0 512")
    iot.img(["commit", "-f", iot.fmt], a)
    if [iot.checksum(x) for x in (a, b, c)] != sums:
        iot.log("!!! an image changed")


@formats("qcow2")
def test_bad_backing_loop_through_format(iot):
    iot.log("--- the loop closes through a raw-format name: no loop, a raw backing file")
    a = iot.create("1M", name="a.qcow2", args="-u -b b.qcow2 -F qcow2")
    b = iot.create("1M", name="b.qcow2", args="-u -b a.qcow2 -F raw")
    sums = [iot.checksum(x) for x in (a, b)]
    iot.img(["info", "-f", iot.fmt, "--backing-chain"], a)
    iot.io(a, "read -P 0 0 512", opts="-r")
    iot.img(["map", "-f", iot.fmt, "--output=json"], a)
    if [iot.checksum(x) for x in (a, b)] != sums:
        iot.log("!!! an image changed")


DEPTH = 400


@formats("qcow2")
def test_bad_deep_chain(iot):
    """A chain of 400 images: a read goes through every layer to the base.

    QEMU 7.2 opens chains in time quadratic in the depth (1000 layers: ~28 s for one
    read), so 400 keeps the test quick on both backends; tests/test_qcow2_io.py opens
    1500 layers in bdrv.
    """
    base = iot.create("1M", name="l0000.qcow2")
    iot.io(base, "write -P 0x42 0 4k")
    first = iot.create("1M", name="l0001.qcow2", args="-u -b l0000.qcow2 -F qcow2")
    iot.io(first, "write -P 0x43 64k 4k")
    for i in range(2, DEPTH):
        path = iot.path(f"l{i:04d}.qcow2")
        shutil.copy(first.path, path)
        corrupt.qcow2(path).backing_name(f"l{i - 1:04d}.qcow2".encode())
    top = iot.image(f"l{DEPTH - 1:04d}.qcow2")
    iot.log(f"--- {DEPTH} layers; l0002 to l{DEPTH - 1:04d} are copies of l0001")
    before = iot.checksum(top)
    iot.img(["info", "-f", iot.fmt], top)
    iot.io(top, ["read -P 0x42 0 4k", "read -P 0 4k 60k", "read -P 0x43 64k 4k",
                 "read -P 0 68k 956k"], opts="-r")
    iot.img(["map", "-f", iot.fmt, "--output=json"], top)
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], top, first)
    if iot.checksum(top) != before:
        iot.log("!!! the image changed")
