"""qemu-img create -f qcow2 with each of 7.2's options; the files' bytes are logged as
checksums, so the bdrv run must write the very image QEMU writes."""

import hashlib

import pytest

from harness import formats

pytestmark = pytest.mark.img


def _sum(iot, img):
    digest = hashlib.sha256(img.path.read_bytes()).hexdigest()
    iot.log(f"sha256 {img.path.name}: {digest} ({img.path.stat().st_size} bytes)")


def _create_and_show(iot, name, size, opts=None, args=()):
    img = iot.create(size, name=name, opts=opts, args=args)
    _sum(iot, img)
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt], img, by="qemu")
    return img


@formats("qcow2")
def test_create_compat_levels(iot):
    _create_and_show(iot, "v2.qcow2", "64M", opts="compat=0.10")
    _create_and_show(iot, "v3.qcow2", "64M", opts="compat=1.1")
    _create_and_show(iot, "v3b.qcow2", "64M", opts="compat=v3")
    iot.create("64M", name="bad.qcow2", opts="compat=2.0")
    iot.create("64M", name="lazy2.qcow2", opts="compat=0.10,lazy_refcounts=on")


@formats("qcow2")
def test_create_cluster_sizes(iot):
    for cs in ("512", "4k", "64k", "1M", "2M"):
        _create_and_show(iot, f"c{cs}.qcow2", "100M", opts=f"cluster_size={cs}")
    iot.create("1M", name="bad1.qcow2", opts="cluster_size=256")
    iot.create("1M", name="bad2.qcow2", opts="cluster_size=4M")
    iot.create("1M", name="bad3.qcow2", opts="cluster_size=3k")


@formats("qcow2")
def test_create_refcount_bits(iot):
    for bits in (1, 2, 4, 8, 16, 32, 64):
        img = iot.create("32M", name=f"r{bits}.qcow2", opts=f"refcount_bits={bits}")
        _sum(iot, img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], iot.image("r1.qcow2"))
    iot.create("32M", name="bad.qcow2", opts="refcount_bits=3")
    iot.create("32M", name="bad2.qcow2", opts="refcount_bits=128")
    iot.create("32M", name="bad3.qcow2", opts="compat=0.10,refcount_bits=8")


@formats("qcow2")
def test_create_lazy_refcounts(iot):
    img = _create_and_show(iot, "t.qcow2", "16M", opts="lazy_refcounts=on")
    iot.io(img, ["write -P 0x5a 0 128k", "write -P 0x5b 1M 4k"])
    iot.img(["check", "-f", iot.fmt], img)
    iot.io(img, ["read -P 0x5a 0 128k", "read -P 0x5b 1M 4k"], by="qemu")
    iot.img(["check", "-f", iot.fmt], img, by="qemu")


@formats("qcow2")
def test_create_zstd(iot):
    img = _create_and_show(iot, "t.qcow2", "8M", opts="compression_type=zstd")
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.create("8M", name="v2.qcow2", opts="compat=0.10,compression_type=zstd")
    iot.create("8M", name="bad.qcow2", opts="compression_type=lzo")


@formats("qcow2")
def test_create_extended_l2(iot):
    _create_and_show(iot, "t.qcow2", "64M", opts="extended_l2=on")
    _create_and_show(iot, "s.qcow2", "64M", opts="extended_l2=on,cluster_size=16k")
    iot.create("64M", name="bad.qcow2", opts="extended_l2=on,cluster_size=8k")
    iot.create("64M", name="v2.qcow2", opts="extended_l2=on,compat=0.10")


@formats("qcow2")
def test_create_preallocation(iot):
    for mode in ("off", "metadata", "falloc", "full"):
        img = _create_and_show(iot, f"p-{mode}.qcow2", "5M", opts=f"preallocation={mode}")
        iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.create("5M", name="bad.qcow2", opts="preallocation=sparse")
    iot.create("5M", name="ext.qcow2", opts="preallocation=metadata,extended_l2=on")
    iot.img(["map", "-f", iot.fmt, "--output=json"], iot.image("ext.qcow2"))


@formats("qcow2")
def test_create_with_backing(iot):
    base = iot.create("32M", name="base.qcow2")
    iot.log("=== -b/-F: the size comes from the backing file ===")
    top = iot.create(None, name="top.qcow2", args=["-b", "base.qcow2", "-F", "qcow2"])
    _sum(iot, top)
    iot.img(["info", "-f", iot.fmt], top)
    iot.log("=== an explicit size ===")
    big = iot.create("64M", name="big.qcow2", args=["-b", "base.qcow2", "-F", "qcow2"])
    _sum(iot, big)
    iot.log("=== -o backing_file/backing_fmt ===")
    iot.create(None, name="o.qcow2", opts=f"backing_file={base.path},backing_fmt=qcow2")
    iot.img(["info", "-f", iot.fmt], iot.image("o.qcow2"))
    iot.log("=== raw base ===")
    raw = iot.create("3M", fmt="raw", name="base.raw")
    iot.create(None, name="onraw.qcow2", args=["-b", str(raw.path), "-F", "raw"])
    iot.img(["info", "-f", iot.fmt, "--backing-chain"], iot.image("onraw.qcow2"))
    iot.log("=== errors ===")
    iot.create(None, name="nofmt.qcow2", args=["-b", "base.qcow2"])
    iot.create(None, name="missing.qcow2", args=["-b", "nosuch.qcow2", "-F", "qcow2"])
    iot.create("1M", name="prealloc.qcow2", opts="preallocation=metadata",
               args=["-b", "base.qcow2", "-F", "qcow2"])


@formats("qcow2")
def test_create_unsafe_backing(iot):
    img = iot.create("16M", name="t.qcow2", args=["-u", "-b", "nosuch.qcow2", "-F", "qcow2"])
    _sum(iot, img)
    iot.img(["info", "-f", iot.fmt], img)
    iot.io(img, "read 0 512")
    iot.create(None, name="nosize.qcow2", args=["-u", "-b", "nosuch.qcow2", "-F", "qcow2"])
    iot.create("16M", name="wrongfmt.qcow2", args=["-u", "-b", "nosuch.qcow2", "-F", "raw"])
    iot.img(["info", "-f", iot.fmt], iot.image("wrongfmt.qcow2"))


@formats("qcow2")
def test_create_help_and_formatting(iot):
    iot.img(["create", "-f", iot.fmt, "-o", "help"])
    iot.img(["create", "-f", iot.fmt, "-o", "?"], iot.path("x.qcow2"))
    iot.img(["convert", "-O", iot.fmt, "-o", "help"])
    iot.create("1G", name="all.qcow2",
               opts="compat=1.1,cluster_size=128k,lazy_refcounts=on,refcount_bits=32,"
                    "compression_type=zstd,extended_l2=on")
    iot.create("1G", name="q.qcow2", args="-q")
    iot.create("1G", name="bad.qcow2", opts="foo=bar")
    iot.create("1G", name="sz.qcow2", opts="size=2G")
    iot.img(["info", "-f", iot.fmt], iot.image("sz.qcow2"))
