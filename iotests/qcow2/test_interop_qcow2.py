"""Interoperation: QEMU writes and the backend under test reads and checks, the backend
writes and QEMU reads and checks, and chains whose layers come from both."""

import pytest

from harness import formats

pytestmark = pytest.mark.rw


@formats("qcow2")
def test_interop_qemu_writes_backend_reads(iot):
    img = iot.create("8M", opts="cluster_size=4k,refcount_bits=8", by="qemu")
    iot.io(img, ["write -P 0x11 0 1M", "write -c -P 0x12 2M 4k", "write -z 512k 8k",
                 "discard 768k 64k", "write -P 0x13 7M 100k"], by="qemu")
    iot.io(img, ["read -P 0x11 0 512k", "read -P 0 512k 8k", "read -P 0x11 520k 248k",
                 "read -P 0 768k 64k", "read -P 0x12 2M 4k", "read -P 0x13 7M 100k"])
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.log("=== and writes on top of it ===")
    iot.io(img, ["write -P 0x21 1020k 8k", "write -c -P 0x22 3M 4k", "discard 0 4k"])
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.io(img, ["read -P 0 0 4k", "read -P 0x11 4k 508k", "read -P 0 512k 8k",
                 "read -P 0x11 520k 248k", "read -P 0 768k 64k", "read -P 0x11 832k 188k",
                 "read -P 0x21 1020k 8k", "read -P 0x22 3M 4k"], by="qemu")


@formats("qcow2")
def test_interop_backend_writes_qemu_reads(iot):
    img = iot.create("64M", opts="lazy_refcounts=on,extended_l2=on")
    iot.io(img, ["write -P 0x11 0 3M", "write -P 0x12 10M 1k", "write -z 1M 64k",
                 "write -c -P 0x13 20M 64k", "discard 2M 128k", "write -P 0x14 63M 1M"])
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.io(img, ["read -P 0x11 0 1M", "read -P 0 1M 64k", "read -P 0x11 1088k 960k",
                 "read -P 0 2M 128k", "read -P 0x12 10M 1k", "read -P 0x13 20M 64k",
                 "read -P 0x14 63M 1M"], by="qemu")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img, by="qemu")
    iot.img(["info", "-f", iot.fmt], img, by="qemu")


@formats("qcow2")
def test_interop_alternating_two_layer_chain(iot):
    """A 2-layer chain written alternately by the backend and QEMU reads back the same
    through both, and qemu-img check finds no errors in either layer."""
    base = iot.create("4M", name="base.qcow2", by="qemu")
    iot.io(base, "write -P 0x11 0 2M", by="qemu")
    iot.io(base, "write -P 0x12 2M 1M")
    top = iot.create(None, name="top.qcow2", args="-b base.qcow2 -F qcow2")
    iot.io(top, "write -P 0x21 512k 64k", by="qemu")
    iot.io(top, ["write -P 0x22 1000k 100k", "write -z 1500k 4k"])
    iot.io(top, ["write -c -P 0x23 3M 64k", "discard 0 64k"], by="qemu")
    iot.io(top, ["write -P 0x24 3M 1k", "write -P 0x25 3968k 64k"])
    reads = ["read -P 0 0 64k", "read -P 0x11 64k 448k", "read -P 0x21 512k 64k",
             "read -P 0x11 576k 424k", "read -P 0x22 1000k 100k", "read -P 0x11 1100k 400k",
             "read -P 0 1500k 4k", "read -P 0x11 1504k 544k", "read -P 0x12 2M 1M",
             "read -P 0x24 3M 1k", "read -P 0x23 3073k 63k", "read -P 0 3136k 832k",
             "read -P 0x25 3968k 64k"]
    iot.io(top, reads)
    iot.io(top, reads, by="qemu")
    for img in (base, top):
        iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.img(["map", "-f", iot.fmt, "--output=json"], top)
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], top, top, by="qemu")
    flat = iot.image("flat.raw", fmt="raw")
    iot.img(["convert", "-f", iot.fmt, "-O", "raw"], top, flat, by="qemu")
    iot.img(["compare", "-f", iot.fmt, "-F", "raw"], top, flat)


@formats("qcow2")
def test_interop_three_layers_mixed(iot):
    base = iot.create("2M", name="base.qcow2", opts="cluster_size=4k")
    iot.io(base, "write -P 0x11 0 2M")
    mid = iot.create(None, name="mid.qcow2", args="-b base.qcow2 -F qcow2", by="qemu")
    iot.io(mid, ["write -P 0x22 4k 4k", "write -z 1M 64k"], by="qemu")
    top = iot.create(None, name="top.qcow2", opts="extended_l2=on",
                     args="-b mid.qcow2 -F qcow2")
    iot.io(top, ["write -P 0x33 6k 1k", "discard 1M 64k"])
    for by in (None, "qemu"):
        iot.io(top, ["read -P 0x11 0 4k", "read -P 0x22 4k 2k", "read -P 0x33 6k 1k",
                     "read -P 0x22 7k 1k", "read -P 0 1M 64k", "read -P 0x11 1088k 960k"],
               by=by)
        iot.img(["map", "-f", iot.fmt, "--output=json"], top, by=by)
    for img in (base, mid, top):
        iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.img(["info", "-f", iot.fmt, "--backing-chain"], top, by="qemu")


@formats("qcow2")
def test_interop_v2_and_refcount_growth(iot):
    """Enough clusters to grow the refcount structures; each side extends the other."""
    img = iot.create("256M", opts="compat=0.10,cluster_size=512,refcount_bits=16")
    iot.io(img, "write -P 0x11 0 2M")
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.io(img, "write -P 0x22 100M 1M", by="qemu")
    iot.io(img, "write -P 0x33 200M 1M")
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    iot.img(["check", "-f", iot.fmt], img)
    for by in (None, "qemu"):
        iot.io(img, ["read -P 0x11 0 2M", "read -P 0x22 100M 1M", "read -P 0x33 200M 1M"],
               by=by)
