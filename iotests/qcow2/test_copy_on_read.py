"""qemu-io -C (copy-on-read): reads copy whole clusters from the backing chain into the
top image, zeros as zero writes; the files are cmp'd with the ones QEMU writes for the
same commands, then read and checked by QEMU."""

import re

import pytest

from harness import formats

pytestmark = pytest.mark.rw


def _base(iot, name="base.qcow2"):
    base = iot.create("4M", name=name)
    iot.io(base, ["write -P 0x11 0 128k", "write -P 0x22 1M 4k", "write -z 2M 64k"])
    return base


def _twins(iot, base, opts=None, size=None):
    """A top image for the backend and one for QEMU, on the same backing file."""
    args = ["-b", base.path.name, "-F", "qcow2"]
    ours = iot.create(size, name="top.qcow2", opts=opts, args=args)
    twin = iot.create(size, name="qemu-top.qcow2", opts=opts, args=args, by="qemu")
    return ours, twin


def _same(iot, ours, twin, cmds, opts="-C"):
    iot.io(ours, cmds, opts=opts)
    iot.io(twin, cmds, opts=opts, by="qemu")
    iot.run(["cmp", ours.path.name, twin.path.name])


@formats("qcow2")
def test_copy_on_read_chain(iot):
    """Partial-cluster reads copy the whole cluster; runs the top allocates are read as
    they are; unallocated zeros become zero clusters."""
    base = _base(iot)
    ours, twin = _twins(iot, base)
    for img in (ours, twin):
        iot.io(img, "write -P 0x33 64k 4k", by="qemu")
    _same(iot, ours, twin, ["read -P 0x11 4k 4k", "read -P 0x22 1M 4k", "read 0 2M",
                            "read -P 0 2M 64k", "map"])
    iot.img(["map", "--output=json", "-f", "qcow2"], ours, by="qemu")
    iot.img(["check", "-f", "qcow2"], ours, by="qemu")
    iot.io(ours, ["read -P 0x11 0 64k", "read -P 0x33 64k 4k", "read -P 0x11 68k 60k",
                  "read -P 0x22 1M 4k", "read -P 0 1052k 1020k"], by="qemu")


@formats("qcow2")
def test_copy_on_read_whole_image(iot):
    """One read of everything, then a second that finds it all allocated."""
    base = _base(iot)
    ours, twin = _twins(iot, base)
    _same(iot, ours, twin, ["read 0 4M", "read 0 4M", "alloc 0 4M"])
    iot.img(["compare", "-f", "qcow2", "-F", "qcow2"], ours, base, by="qemu")


@formats("qcow2")
def test_copy_on_read_v2_and_no_backing(iot):
    """v2 has no zero clusters: zeros read from a backing file are written as data;
    without a backing file the zero write is a discard, which allocates nothing."""
    base = _base(iot)
    ours, twin = _twins(iot, base, opts="compat=0.10")
    _same(iot, ours, twin, ["read 0 256k", "read 2M 64k", "read 3M 64k", "map"])
    alone = iot.create("1M", name="alone.qcow2")
    alone_twin = iot.create("1M", name="qemu-alone.qcow2", by="qemu")
    _same(iot, alone, alone_twin, ["read 0 64k", "map"])
    v2 = iot.create("1M", name="v2.qcow2", opts="compat=0.10")
    v2_twin = iot.create("1M", name="qemu-v2.qcow2", opts="compat=0.10", by="qemu")
    _same(iot, v2, v2_twin, ["read 0 64k", "map"])
    iot.img(["check", "-f", "qcow2"], ours, by="qemu")


@formats("qcow2")
def test_copy_on_read_odd_sizes(iot):
    """A top image longer than its backing file, a size that ends inside a cluster,
    and 512-byte clusters."""
    base = iot.create("1M", name="base.qcow2")
    iot.io(base, "write -P 0x44 0 1M")
    ours, twin = _twins(iot, base, size="1000001")
    _same(iot, ours, twin, ["read 1000k 2k", "read -P 0 1M 10k", "map"])
    small = iot.create("1M", name="small.qcow2", opts="cluster_size=512",
                       args=["-b", "base.qcow2", "-F", "qcow2"])
    small_twin = iot.create("1M", name="qemu-small.qcow2", opts="cluster_size=512",
                            args=["-b", "base.qcow2", "-F", "qcow2"], by="qemu")
    _same(iot, small, small_twin, ["read 100 1000", "read 64k 3k", "map"])


@formats("qcow2")
def test_copy_on_read_open_and_errors(iot):
    """`open -C`; -C with -r is refused, and so is reopening read-only or turning it
    off; -C under -s copies into the temporary overlay only."""
    base = _base(iot)
    ours, twin = _twins(iot, base)
    for img in (ours, twin):
        by = "qemu" if img is twin else None
        iot.io(None, [f"open -C {img.path}", "read 0 64k", "close",
                      f"open {img.path}", "read 64k 64k", "map"], by=by)
    iot.run(["cmp", ours.path.name, twin.path.name])
    iot.io(ours, "read 0 4k", opts="-C -r")
    # Generated node names count the nodes a process opened before: not comparable.
    iot.add_filter(lambda text: re.sub(r"'#block\d+'", "'NODE'", text))
    iot.io(ours, ["reopen -r", "read 1M 4k", "reopen -o copy-on-read=off", "map"], opts="-C")
    before = ours.path.read_bytes()
    iot.io(ours, ["read 1M 4k", "map"], opts="-C -s")
    iot.log(f"image unchanged: {ours.path.read_bytes() == before}")
