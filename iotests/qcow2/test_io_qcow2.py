"""qemu-io on qcow2 images and chains: write -c, write -z [-u], discard, map, alloc,
open -o, -s (snapshot=on). Images the backend writes are cmp'd with images QEMU writes
for the same commands where 7.2 is deterministic."""

import pytest

from harness import formats

pytestmark = pytest.mark.rw


def _same_cmds(iot, cmds, name="t.qcow2", size="4M", opts=None, args=()):
    """Run `cmds` on a fresh image with the backend and on a twin with QEMU; cmp."""
    ours = iot.create(size, name=name, opts=opts, args=args)
    twin = iot.create(size, name="qemu-" + name, opts=opts, args=args, by="qemu")
    iot.io(ours, cmds)
    iot.io(twin, cmds, by="qemu")
    iot.run(["cmp", ours.path.name, twin.path.name])
    return ours


@formats("qcow2")
def test_io_write_read_patterns(iot):
    img = _same_cmds(iot, ["write -P 0x11 0 64k", "write -P 0x22 100k 3k", "write 1M 1",
                           "writev -P 0x33 2M 512 1k 4k", "write -P 0x44 4190208 4k"])
    iot.io(img, ["read -P 0x11 0 64k", "read -P 0 64k 36k", "read -P 0x22 100k 3k",
                 "readv -P 0x33 2M 5632", "read -P 0x44 4190208 4k", "read -v 1048575 2"],
           by="qemu")
    iot.io(img, ["read -P 0x11 0 64k", "read -P 0x22 100k 3k", "read -P 0x44 4190208 4k",
                 "read 4M 1", "write 4190208 8k"])


@formats("qcow2")
def test_io_write_compressed(iot):
    img = _same_cmds(iot, ["write -c -P 0x11 0 64k", "write -c 0 0", "write -c 64k 1k",
                           "write -c 1k 64k", "write -c 4M 64k", "write -c -P 0 128k 64k",
                           "write -c 0 64k", "write -c -P 0x22 192k 64k"])
    iot.io(img, ["read -P 0x11 0 64k", "read -P 0 64k 128k", "read -P 0x22 192k 64k"],
           by="qemu")
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.img(["check", "-f", iot.fmt], img)
    iot.log("=== the last, short cluster of an odd-sized image ===")
    _same_cmds(iot, ["write -c -P 0x33 960k 40k", "write -c -P 0x34 896k 64k"],
               name="odd.qcow2", size="1000k")
    iot.log("=== zstd, 4k clusters, extended L2 ===")
    _same_cmds(iot, ["write -c -P 0x55 0 4k", "write -c -P 0x56 8k 4k", "write -c 0 0"],
               name="z.qcow2", opts="compression_type=zstd,cluster_size=4k")
    _same_cmds(iot, ["write -c -P 0x57 0 64k", "write -P 0x58 64k 2k"], name="e.qcow2",
               opts="extended_l2=on")
    iot.log("=== overwriting a compressed cluster ===")
    iot.io(img, ["write -P 0x66 0 4k", "read -P 0x66 0 4k", "read -P 0x11 4k 60k"])
    iot.img(["check", "-f", iot.fmt], img, by="qemu")


@formats("qcow2")
def test_io_write_compressed_multi_cluster(iot):
    """Several clusters in one write -c; 7.2 compresses them in parallel, so the order
    of the compressed data in the file may vary: compare contents and check."""
    img = iot.create("4M")
    iot.io(img, ["write -c -P 0x11 0 256k", "write -c -P 0x22 192k 128k"])
    iot.io(img, ["read -P 0x11 0 256k", "read -P 0x22 256k 64k"], by="qemu")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt], img, by="qemu")


@formats("qcow2")
def test_io_zero_writes(iot):
    img = _same_cmds(iot, ["write -P 0x11 0 1M", "write -z 0 64k", "write -z -u 64k 64k",
                           "write -z 130k 10k", "write -z -u 200k 1k", "write -z 2M 64k",
                           "write -z -u 3M 128k"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.io(img, ["read -P 0 0 128k", "read -P 0x11 128k 2k", "read -P 0 130k 10k",
                 "read -P 0x11 140k 60k", "read -P 0 200k 1k", "read -P 0x11 201k 823k"],
           by="qemu")
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.log("=== compat=0.10 has no zero clusters ===")
    v2 = _same_cmds(iot, ["write -P 0x11 0 256k", "write -z 0 64k", "write -z -u 64k 64k"],
                    name="v2.qcow2", opts="compat=0.10")
    iot.img(["map", "-f", iot.fmt, "--output=json"], v2)


@formats("qcow2")
def test_io_discard(iot):
    img = _same_cmds(iot, ["write -P 0x11 0 1M", "discard 0 64k", "discard 100k 4k",
                           "discard 256k 256k", "write -P 0x22 1M 64k", "discard 1M 1M"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x11 64k 192k", "read -P 0 256k 256k"],
           by="qemu")
    iot.log("=== discard=ignore ===")
    iot.io(img, "discard 512k 64k", opts="-d ignore")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)


@formats("qcow2")
def test_io_map_and_alloc_chain(iot):
    base = iot.create("4M", name="base.qcow2")
    iot.io(base, ["write -P 0x11 0 1M", "write -P 0x12 3M 64k"])
    top = iot.create(None, name="top.qcow2", args="-b base.qcow2 -F qcow2")
    iot.io(top, ["write -P 0x21 512k 1M", "write -z 3M 32k", "discard 0 64k"])
    iot.io(top, ["map", "alloc 0 4M", "alloc 0 64k", "alloc 512k 1M", "alloc 1536k 1536k",
                 "alloc 3M 64k", "alloc 4M 1"])
    iot.io(top, ["read -P 0x11 64k 448k", "read -P 0x21 512k 1M", "read -P 0 3M 32k",
                 "read -P 0x12 3104k 32k", "read -P 0 0 64k"])
    iot.io(base, ["map", "alloc 0 4M"])


@formats("qcow2")
def test_io_cow_partial_clusters(iot):
    """Partial writes into a chain copy the rest of the cluster from the backing file."""
    base = iot.create("1M", name="base.qcow2")
    iot.io(base, "write -P 0x11 0 1M")
    for name, by in (("top.qcow2", None), ("qemu-top.qcow2", "qemu")):
        img = iot.create(None, name=name, args="-b base.qcow2 -F qcow2", by=by)
        iot.io(img, ["write -P 0x22 1k 1k", "write -P 0x23 70k 512", "write -P 0x24 1000k 24k"],
               by=by)
    iot.run(["cmp", "top.qcow2", "qemu-top.qcow2"])
    top = iot.image("top.qcow2")
    iot.io(top, ["read -P 0x11 0 1k", "read -P 0x22 1k 1k", "read -P 0x11 2k 68k",
                 "read -P 0x23 70k 512", "read -P 0x24 1000k 24k"], by="qemu")
    iot.img(["map", "-f", iot.fmt, "--output=json"], top)
    iot.img(["check", "-f", iot.fmt], top, by="qemu")
    iot.log("=== extended L2: only the subclusters written ===")
    for name, by in (("sub.qcow2", None), ("qemu-sub.qcow2", "qemu")):
        img = iot.create(None, name=name, opts="extended_l2=on",
                         args="-b base.qcow2 -F qcow2", by=by)
        iot.io(img, ["write -P 0x31 1k 1k", "write -P 0x32 8k 4k"], by=by)
    iot.run(["cmp", "sub.qcow2", "qemu-sub.qcow2"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], iot.image("sub.qcow2"))


@formats("qcow2")
def test_io_open_options(iot):
    base = iot.create("4M", name="base.qcow2")
    iot.io(base, "write -P 0x11 0 4M")
    top = iot.create(None, name="top.qcow2", args="-b base.qcow2 -F qcow2")
    iot.io(top, "write -P 0x22 0 64k")
    iot.io(None, ["open -o driver=qcow2 " + str(top.path), "read -P 0x22 0 64k",
                  "read -P 0x11 64k 64k"])
    iot.io(None, ["open -o driver=qcow2,backing=null " + str(top.path),
                  "read -P 0x22 0 64k", "read -P 0 64k 64k"])
    iot.io(None, ["open -o driver=qcow2,l2-cache-size=64k,cache-clean-interval=0 "
                  + str(top.path), "read -P 0x11 1M 64k"])
    iot.io(None, ["open -r -o driver=qcow2,backing.driver=raw " + str(top.path),
                  "read -P 0x22 0 64k"])
    iot.io(None, ["open -o driver=qcow2,lazy-refcounts=on " + str(top.path),
                  "write -P 0x33 1M 4k", "read -P 0x33 1M 4k"])
    iot.io(None, ["open -o driver=qcow2,nosuch=on " + str(top.path)])
    iot.img(["check", "-f", iot.fmt], top, by="qemu")


@formats("qcow2")
def test_io_snapshot_on(iot):
    """-s: writes go to a temporary overlay; the image itself is left alone."""
    img = iot.create("1M")
    iot.io(img, "write -P 0x22 64k 64k")
    before = img.path.read_bytes()
    iot.io(img, ["write -P 0x11 0 64k", "read -P 0x11 0 64k", "read -P 0x22 64k 64k",
                 "info", "map", "alloc 0 1M", "length", "discard 0 1M", "map",
                 "read -P 0 0 1M", "truncate 2M", "length", "write -c 1M 64k"], opts="-s")
    iot.log(f"image unchanged: {img.path.read_bytes() == before}")
    iot.io(img, ["read -P 0 0 64k", "read -P 0x22 64k 64k", "map"])
    iot.log("=== -s with -r, -U, and the open command ===")
    iot.io(img, ["write 0 1k", "read -P 0 0 1k"], opts="-s -r")
    iot.io(img, "read -P 0x22 64k 1k", opts="-U -s")
    iot.io(None, ["open -s " + str(img.path), "write -P 0x33 0 1k", "read -P 0x33 0 1k",
                  "close", "open -s -r " + str(img.path), "read -P 0 0 1k"])
    iot.io(None, ["open -s -o read-only=on " + str(img.path)])
    iot.log(f"image unchanged: {img.path.read_bytes() == before}")
    iot.log("=== a raw image under a temporary overlay ===")
    raw = iot.create("1000k", fmt="raw", name="r.raw")
    iot.io(raw, ["write -P 0x11 0 1k", "info", "map", "length", "write -P 1 990k 10k",
                 "read -P 1 990k 10k"], opts="-s")
    iot.io(raw, "read -P 0 0 1000k", by="qemu")


@formats("qcow2")
def test_io_lazy_refcounts_dirty(iot):
    img = _same_cmds(iot, ["write -P 0x11 0 128k", "write -z 64k 64k", "discard 0 64k"],
                     opts="lazy_refcounts=on")
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
