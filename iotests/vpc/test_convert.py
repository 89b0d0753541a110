"""qemu-img convert to and from vpc (dynamic, fixed, force_size) and compare."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


def _raw_with_data(iot):
    raw = iot.create("6M", fmt="raw", name="src.raw")
    iot.io(raw, ["write -P 0x12 0 1M", "write -P 0x34 3M 64k", "write -P 0x56 5M 1M"])
    return raw


@formats("vpc")
def test_convert_raw_to_dynamic(iot):
    raw = _raw_with_data(iot)
    out = iot.image()
    iot.img(["convert", "-f", "raw", "-O", iot.fmt], raw, out)
    iot.img(["info", "-f", iot.fmt], out)
    iot.img(["map", "-f", iot.fmt, "--output=json"], out)
    iot.img(["compare", "-f", "raw", "-F", iot.fmt], raw, out)
    iot.log(f"file size: {out.path.stat().st_size}")


@formats("vpc")
def test_convert_raw_to_fixed(iot):
    raw = _raw_with_data(iot)
    out = iot.image()
    iot.img(["convert", "-f", "raw", "-O", iot.fmt, "-o", "subformat=fixed"], raw, out)
    iot.img(["info", "-f", iot.fmt], out)
    iot.img(["compare", "-f", "raw", "-F", iot.fmt], raw, out)
    iot.log(f"file size: {out.path.stat().st_size}")


@formats("vpc")
def test_convert_force_size(iot):
    raw = iot.create("10000k", fmt="raw", name="src.raw")
    iot.io(raw, ["write -P 0x77 9M 512k"])
    out = iot.image()
    iot.img(["convert", "-f", "raw", "-O", iot.fmt], raw, out)
    iot.img(["info", "-f", iot.fmt], out)
    out.path.unlink()
    iot.img(["convert", "-f", "raw", "-O", iot.fmt, "-o", "force_size=on"], raw, out)
    iot.img(["info", "-f", iot.fmt], out)
    iot.img(["compare", "-f", "raw", "-F", iot.fmt], raw, out)


@formats("vpc")
def test_convert_vpc_to_raw(iot):
    img = iot.create("6M")
    iot.io(img, ["write -P 0x21 512 1k", "write -P 0x43 4M 2M"])
    raw = iot.image("out.raw", fmt="raw")
    iot.img(["convert", "-f", iot.fmt, "-O", "raw"], img, raw)
    iot.img(["info", "-f", "raw"], raw)
    iot.img(["map", "-f", "raw", "--output=json"], raw)
    iot.img(["compare", "-f", iot.fmt, "-F", "raw"], img, raw)
    iot.io(raw, ["read -P 0x21 512 1k", "read -P 0x43 4M 2M"])


@formats("vpc")
def test_compare_differences(iot):
    a = iot.create("4M", name="a.vpc")
    b = iot.create("4M", name="b.vpc", opts="subformat=fixed")
    iot.img(["compare"], a, b)
    iot.io(b, ["write -P 1 3M 512"])
    iot.img(["compare"], a, b)
    iot.img(["compare", "-s"], a, b)
    iot.io(a, ["write -P 1 3M 512"])
    iot.img(["compare"], a, b)
    c = iot.create("8M", name="c.vpc")
    iot.img(["compare"], a, c)
    iot.img(["compare", "-s"], a, c)
