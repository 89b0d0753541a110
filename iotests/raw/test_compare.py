"""qemu-img compare: equal, different, different sizes, and strict mode (-s)."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


@formats("raw")
def test_compare(iot):
    a = iot.create("1M", name="a.img")
    b = iot.create("1M", name="b.img")
    f = ["-f", iot.fmt, "-F", iot.fmt]
    iot.log("=== equal: both empty ===")
    iot.img(["compare", *f], a, b)
    iot.img(["compare", "-q", *f], a, b)
    iot.io(a, "write -P 0x11 64k 4k")
    iot.io(b, "write -P 0x11 64k 4k")
    iot.img(["compare", *f], a, b)
    iot.log("=== different content ===")
    iot.io(b, "write -P 0x12 66k 1")
    iot.img(["compare", *f], a, b)
    iot.img(["compare", "-q", *f], a, b)
    iot.log("=== written zeroes equal a hole ===")
    iot.io(b, "write -P 0x11 66k 1")
    iot.io(a, "write -P 0 512k 64k")
    iot.img(["compare", *f], a, b)
    iot.img(["compare", "-s", *f], a, b)


@formats("raw")
def test_compare_sizes(iot):
    small = iot.create("1M", name="small.img")
    big = iot.create("2M", name="big.img")
    f = ["-f", iot.fmt, "-F", iot.fmt]
    iot.log("=== extra zeroes in the larger image ===")
    iot.img(["compare", *f], small, big)
    iot.img(["compare", *f], big, small)
    iot.img(["compare", "-s", *f], small, big)
    iot.img(["compare", "-s", *f], big, small)
    iot.log("=== data in the larger image beyond the smaller one's end ===")
    iot.io(big, "write -P 0x33 1536k 4k")
    iot.img(["compare", *f], small, big)
    iot.img(["compare", *f], big, small)
    iot.img(["compare", "-q", *f], big, small)
    iot.log("=== the same file twice, strict ===")
    iot.img(["compare", "-s", *f], big, big)


@formats("raw")
def test_compare_errors(iot):
    a = iot.create("1M", name="a.img")
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], a, iot.path("missing.img"))
    iot.img(["compare", "-f", iot.fmt], a)
    iot.img(["compare", "-f", iot.fmt], a, a, a)
    iot.img(["compare", "--bogus", "-f", iot.fmt], a, a)
    iot.log("=== probing the format ===")
    iot.img(["compare"], a, a)
