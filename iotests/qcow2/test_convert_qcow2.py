"""qemu-img convert to and from qcow2: -O qcow2/raw, -c, -B, -n, -o, -S, -p. Targets
written by the backend under test are compared with targets QEMU writes (cmp)."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


def _source(iot, name="src.qcow2", size="4M"):
    src = iot.create(size, name=name, by="qemu")
    iot.io(src, ["write -P 0x11 0 100k", "write -P 0 200k 64k", "write -z 1M 64k",
                 "write -P 0x22 1500k 3k", "write -P 0x33 4092k 4k"], by="qemu")
    return src


def _convert_both(iot, args, src, name):
    """Convert with the backend under test and with QEMU; cmp the two targets."""
    ours = iot.image(name)
    ref = iot.image("qemu-" + name)
    iot.img(["convert", *args], src, ours)
    iot.img(["convert", *args], src, ref, by="qemu")
    iot.run(["cmp", ours.path.name, ref.path.name])
    return ours


@formats("qcow2")
def test_convert_to_qcow2(iot):
    src = _source(iot)
    dst = _convert_both(iot, ["-f", iot.fmt, "-O", iot.fmt], src, "dst.qcow2")
    iot.img(["map", "-f", iot.fmt, "--output=json"], dst)
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], src, dst)
    iot.img(["check", "-f", iot.fmt], dst, by="qemu")
    _convert_both(iot, ["-f", iot.fmt, "-O", iot.fmt, "-o", "cluster_size=4k,compat=0.10"],
                  src, "o.qcow2")
    iot.img(["info", "-f", iot.fmt], iot.image("o.qcow2"))


@formats("qcow2")
def test_convert_to_raw(iot):
    src = _source(iot)
    dst = _convert_both(iot, ["-f", iot.fmt, "-O", "raw"], src, "dst.raw")
    iot.img(["map", "-f", "raw", "--output=json"], dst)
    iot.img(["compare", "-f", iot.fmt, "-F", "raw"], src, dst, by="qemu")


@formats("qcow2")
def test_convert_from_raw(iot):
    raw = iot.create("3M", fmt="raw", name="src.raw")
    iot.io(raw, ["write -P 0x44 0 1M", "write -P 0 1M 512k", "write -P 0x45 2M 4k"])
    dst = _convert_both(iot, ["-f", "raw", "-O", iot.fmt], raw, "dst.qcow2")
    iot.img(["map", "-f", iot.fmt, "--output=json"], dst)
    _convert_both(iot, ["-f", "raw", "-O", iot.fmt, "-S", "0"], raw, "s0.qcow2")
    iot.img(["map", "-f", iot.fmt, "--output=json"], iot.image("s0.qcow2"))
    _convert_both(iot, ["-f", "raw", "-O", iot.fmt, "-S", "64k"], raw, "s64.qcow2")
    iot.img(["map", "-f", iot.fmt, "--output=json"], iot.image("s64.qcow2"))


@formats("qcow2")
def test_convert_compressed(iot):
    src = _source(iot)
    dst = _convert_both(iot, ["-c", "-f", iot.fmt, "-O", iot.fmt], src, "c.qcow2")
    iot.img(["map", "-f", iot.fmt, "--output=json"], dst)
    iot.img(["check", "-f", iot.fmt], dst)
    iot.img(["check", "-f", iot.fmt], dst, by="qemu")
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], src, dst, by="qemu")
    iot.log("=== zstd, 4k clusters ===")
    z = _convert_both(iot, ["-c", "-f", iot.fmt, "-O", iot.fmt, "-o",
                            "compression_type=zstd,cluster_size=4k"], src, "z.qcow2")
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], src, z, by="qemu")
    iot.log("=== an odd-sized raw source, -S 0 ===")
    raw = iot.create("1000k", fmt="raw", name="odd.raw")
    iot.io(raw, ["write -P 0x55 0 1000k", "write -P 0 500k 200k"])
    _convert_both(iot, ["-c", "-f", "raw", "-O", iot.fmt], raw, "odd.qcow2")
    _convert_both(iot, ["-c", "-S", "0", "-f", "raw", "-O", iot.fmt], raw, "odd0.qcow2")
    iot.img(["map", "-f", iot.fmt, "--output=json"], iot.image("odd0.qcow2"))
    iot.log("=== extended L2 and compat=0.10 targets ===")
    _convert_both(iot, ["-c", "-f", iot.fmt, "-O", iot.fmt, "-o", "extended_l2=on"], src,
                  "e.qcow2")
    _convert_both(iot, ["-c", "-f", iot.fmt, "-O", iot.fmt, "-o", "compat=0.10"], src,
                  "v2.qcow2")


@formats("qcow2")
def test_convert_compressed_errors(iot):
    src = _source(iot)
    iot.img(["convert", "-c", "-f", iot.fmt, "-O", "raw"], src, iot.path("x.raw"))
    iot.img(["convert", "-c", "-f", iot.fmt, "-O", iot.fmt, "-o", "preallocation=metadata"],
            src, iot.path("x.qcow2"))
    iot.img(["convert", "-c", "-f", iot.fmt, "-O", iot.fmt, "-o", "preallocation=off"],
            src, iot.path("y.qcow2"))
    iot.img(["convert", "-c", "-C", "-f", iot.fmt, "-O", iot.fmt], src, iot.path("z.qcow2"))
    iot.log(f"x.qcow2 exists: {iot.path('x.qcow2').exists()}")


@formats("qcow2")
def test_convert_with_backing(iot):
    base = iot.create("4M", name="base.qcow2")
    iot.io(base, "write -P 0x11 0 4M")
    top = iot.create(None, name="top.qcow2", args="-b base.qcow2 -F qcow2")
    iot.io(top, ["write -P 0x22 1M 64k", "write -z 2M 64k"])
    iot.log("=== -B: only what differs from the new backing file ===")
    dst = _convert_both(iot, ["-f", iot.fmt, "-O", iot.fmt, "-B", "base.qcow2", "-F", "qcow2"],
                        top, "b.qcow2")
    iot.img(["map", "-f", iot.fmt, "--output=json"], dst)
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], top, dst, by="qemu")
    iot.log("=== -c with -B ===")
    _convert_both(iot, ["-c", "-f", iot.fmt, "-O", iot.fmt, "-B", "base.qcow2", "-F", "qcow2"],
                  top, "cb.qcow2")
    iot.log("=== the whole chain flattened ===")
    _convert_both(iot, ["-f", iot.fmt, "-O", iot.fmt], top, "flat.qcow2")
    iot.img(["info", "-f", iot.fmt], iot.image("flat.qcow2"))
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt, "-B", "base.qcow2"], top,
            iot.path("nofmt.qcow2"))


@formats("qcow2")
def test_convert_existing_target(iot):
    src = _source(iot)
    dst = iot.create("8M", name="dst.qcow2")
    iot.io(dst, "write -P 0x77 0 8M")
    iot.img(["convert", "-n", "-f", iot.fmt, "-O", iot.fmt], src, dst)
    iot.img(["map", "-f", iot.fmt, "--output=json"], dst)
    iot.io(dst, ["read -P 0x11 0 100k", "read -P 0 100k 1M", "read -P 0x77 4M 4M"], by="qemu")
    small = iot.create("1M", name="small.qcow2")
    iot.img(["convert", "-n", "-f", iot.fmt, "-O", iot.fmt], src, small)
    iot.img(["convert", "-n", "-o", "cluster_size=4k", "-f", iot.fmt, "-O", iot.fmt], src, dst)
    iot.log("=== -n -c into a fresh image ===")
    fresh = iot.create("4M", name="fresh.qcow2")
    iot.img(["convert", "-n", "-c", "-f", iot.fmt, "-O", iot.fmt], src, fresh)
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], src, fresh, by="qemu")
    iot.img(["check", "-f", iot.fmt], fresh, by="qemu")


@formats("qcow2")
def test_convert_progress(iot):
    src = _source(iot)
    iot.img(["convert", "-p", "-f", iot.fmt, "-O", iot.fmt], src, iot.path("p.qcow2"))
    iot.img(["convert", "-p", "-c", "-f", iot.fmt, "-O", iot.fmt], src, iot.path("pc.qcow2"))
    iot.img(["convert", "-p", "-q", "-f", iot.fmt, "-O", "raw"], src, iot.path("pq.raw"))
