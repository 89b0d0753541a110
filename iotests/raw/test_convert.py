"""qemu-img convert raw to raw: holes stay holes, -S 0 allocates, -n reuses the target."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


def _fill(iot, img):
    iot.io(img, ["write -P 0x11 0 64k", "write -P 0x22 1M 64k", "write -P 0x33 3M 4k",
                 "write -z 2M 64k"])


@formats("raw")
def test_convert_keeps_holes(iot):
    src = iot.create("4M", name="src.img")
    _fill(iot, src)
    dst = iot.image("dst.img")
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt], src, dst)
    iot.img(["map", "-f", iot.fmt, "--output=json"], src)
    iot.img(["map", "-f", iot.fmt, "--output=json"], dst)
    iot.img(["info", "-f", iot.fmt], dst)
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], src, dst)
    iot.io(dst, ["read -P 0x11 0 64k", "read -P 0x22 1M 64k", "read -P 0x33 3M 4k",
                 "read -P 0 2M 64k"], by="qemu")


@formats("raw")
def test_convert_options(iot):
    src = iot.create("4M", name="src.img")
    _fill(iot, src)
    iot.log("=== -S 0: every byte written ===")
    full = iot.image("full.img")
    iot.img(["convert", "-S", "0", "-f", iot.fmt, "-O", iot.fmt], src, full)
    iot.img(["map", "-f", iot.fmt, "--output=json"], full)
    iot.log("=== -n: into an existing, larger image ===")
    big = iot.create("8M", name="big.img")
    iot.io(big, "write -P 0x77 0 8M")
    iot.img(["convert", "-n", "-f", iot.fmt, "-O", iot.fmt], src, big)
    iot.img(["info", "-f", iot.fmt], big)
    iot.io(big, ["read -P 0x11 0 64k", "read -P 0 64k 64k", "read -P 0x77 4M 4M"], by="qemu")
    iot.log("=== overwriting an existing target without -n ===")
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt], src, big)
    iot.img(["info", "-f", iot.fmt], big)
    iot.log("=== -q, and bad arguments ===")
    iot.img(["convert", "-q", "-f", iot.fmt, "-O", iot.fmt], src, iot.path("q.img"))
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt], src)
    iot.img(["convert", "-S", "12foo", "-f", iot.fmt, "-O", iot.fmt], src, iot.path("x.img"))
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt, "-o", "foo=bar"], src, iot.path("x.img"))
    iot.log(f"x.img exists: {iot.path('x.img').exists()}")
