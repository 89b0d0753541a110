"""qemu-img info and map on qcow2 images and backing chains, human and JSON."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


def _chain(iot, by=None):
    base = iot.create("4M", name="base.qcow2", by=by)
    iot.io(base, ["write -P 0x11 0 1M", "write -P 0x12 3M 64k"], by=by)
    mid = iot.create(None, name="mid.qcow2", args="-b base.qcow2 -F qcow2", by=by)
    iot.io(mid, ["write -P 0x21 512k 1M", "write -z 3M 32k"], by=by)
    top = iot.create(None, name="top.qcow2", args="-b mid.qcow2 -F qcow2", by=by)
    iot.io(top, ["write -P 0x31 1M 64k", "discard 0 64k"], by=by)
    return base, mid, top


@formats("qcow2")
def test_info_qcow2_human_and_json(iot):
    img = iot.create("64M", opts="cluster_size=4k,lazy_refcounts=on")
    iot.io(img, ["write -P 0x11 0 64k", "write -c 1M 4k"])
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.img(["info"], img)
    iot.img(["info", "-U", "--output", "json"], img)


@formats("qcow2")
def test_info_backing_chain(iot):
    _base, _mid, top = _chain(iot)
    iot.img(["info", "-f", iot.fmt, "--backing-chain"], top)
    iot.img(["info", "-f", iot.fmt, "--backing-chain", "--output=json"], top)
    iot.img(["info", "--output=json"], top)


@formats("qcow2")
def test_map_chain_depth(iot):
    _base, mid, top = _chain(iot)
    iot.img(["map", "-f", iot.fmt], top)
    iot.img(["map", "-f", iot.fmt, "--output=json"], top)
    iot.img(["map", "-f", iot.fmt, "--output=json"], mid)
    iot.img(["map", "-f", iot.fmt, "--output=json", "--start-offset", "1M",
             "--max-length", "2M"], top)
    iot.log("=== the same chain written by QEMU ===")
    iot.img(["map", "-f", iot.fmt, "--output=json"], top, by="qemu")


@formats("qcow2")
def test_map_compressed_clusters(iot):
    img = iot.create("1M")
    iot.io(img, ["write -P 0x11 0 64k", "write -c -P 0x22 64k 64k", "write -P 0x33 192k 64k"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["map", "-f", iot.fmt], img)
    iot.img(["map", "-f", iot.fmt, "--start-offset", "128k"], img)


@formats("qcow2")
def test_map_zero_and_subclusters(iot):
    img = iot.create("2M", opts="extended_l2=on,cluster_size=64k")
    iot.io(img, ["write -P 0x11 0 2k", "write -P 0x12 6k 4k", "write -z 64k 8k",
                 "write -z -u 128k 64k", "write -P 0x13 1M 64k", "discard 1M 4k"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["map", "-f", iot.fmt], img)
    iot.io(img, ["map", "alloc 0 2M", "alloc 64k 8k"])
    iot.img(["check", "-f", iot.fmt], img, by="qemu")


@formats("qcow2")
def test_map_v2_zero_writes(iot):
    img = iot.create("1M", opts="compat=0.10")
    iot.io(img, ["write -P 0x11 0 128k", "write -z 0 64k", "write -z 512k 64k"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.io(img, ["read -P 0 0 64k", "read -P 0x11 64k 64k"], by="qemu")


@formats("qcow2")
def test_check_clean_images(iot):
    img = iot.create("16M", opts="cluster_size=512,refcount_bits=1")
    iot.io(img, ["write -P 0x11 0 1M", "write -c 2M 512", "discard 256k 128k"])
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    _base, _mid, top = _chain(iot)
    for name in ("base.qcow2", "mid.qcow2", "top.qcow2"):
        iot.img(["check", "-f", iot.fmt], iot.image(name))
    iot.img(["check", "-f", iot.fmt, "--output=json"], top)
    iot.img(["check", "-f", iot.fmt, "-q"], top)


@formats("qcow2")
def test_check_reports_problems(iot):
    """The driver's per-problem lines come before the summary, as qemu-img prints them."""
    img = iot.create("4M")
    iot.io(img, "write -P 0x11 0 128k")
    raw = img.path.read_bytes()
    refblock = int.from_bytes(raw[65536:65544], "big")
    data = bytearray(raw)
    # cluster 0 counted twice, cluster 4 (the data) not at all, cluster 7 leaked
    data[refblock : refblock + 2] = (2).to_bytes(2, "big")
    data[refblock + 8 : refblock + 10] = (0).to_bytes(2, "big")
    data[refblock + 14 : refblock + 16] = (1).to_bytes(2, "big")
    img.path.write_bytes(bytes(data))
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)


@formats("qcow2")
def test_compare_qcow2(iot):
    a = iot.create("4M", name="a.qcow2")
    iot.io(a, ["write -P 0x11 0 1M", "write -z 2M 64k"])
    b = iot.create("4M", name="b.qcow2", opts="cluster_size=4k")
    iot.io(b, ["write -P 0x11 0 1M"], by="qemu")
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], a, b)
    iot.io(b, "write -P 0x11 3M 512")
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], a, b)
    iot.img(["compare", "-s", "-f", iot.fmt, "-F", iot.fmt], a, b)
    raw = iot.image("a.raw", fmt="raw")
    iot.img(["convert", "-f", iot.fmt, "-O", "raw"], a, raw)
    iot.img(["compare", "-f", iot.fmt, "-F", "raw"], a, raw)
    big = iot.create("8M", name="big.qcow2")
    iot.io(big, "write -P 0x11 0 1M")
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], a, big)
    iot.io(big, "write -P 0x1 6M 512")
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], a, big)
    iot.img(["compare", "-s", "-f", iot.fmt, "-F", iot.fmt], a, big)


@formats("qcow2")
def test_compare_chains(iot):
    _base, _mid, top = _chain(iot)
    flat = iot.image("flat.qcow2")
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt], top, flat)
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], top, flat)
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], top, flat, by="qemu")
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], iot.image("mid.qcow2"), flat)


@formats("qcow2")
def test_resize_grow(iot):
    img = iot.create("1M")
    iot.io(img, "write -P 0x11 0 1M")
    iot.img(["resize", "-f", iot.fmt], img, "+15M")
    iot.img(["info", "-f", iot.fmt], img)
    iot.io(img, ["read -P 0x11 0 1M", "read -P 0 1M 15M", "write -P 0x22 15M 1M"])
    iot.img(["resize", "-f", iot.fmt], img, "1G")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.io(img, ["read -P 0x11 0 1M", "read -P 0x22 15M 1M"], by="qemu")
    iot.img(["resize", "-f", iot.fmt, "--preallocation=metadata"], img, "1100M")
    iot.img(["resize", "-f", iot.fmt, "--preallocation=falloc"], img, "1200M")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.log("=== compat=0.10 and a 4k-cluster image ===")
    v2 = iot.create("1M", name="v2.qcow2", opts="compat=0.10,cluster_size=4k")
    iot.img(["resize", "-f", iot.fmt], v2, "100M")
    iot.img(["info", "-f", iot.fmt], v2)
    iot.img(["check", "-f", iot.fmt], v2, by="qemu")
