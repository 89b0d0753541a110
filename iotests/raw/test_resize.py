"""Growing and shrinking: qemu-img resize and qemu-io truncate."""

import pytest

from harness import formats

pytestmark = pytest.mark.rw


def _size(iot, img):
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.log(f"file size: {img.path.stat().st_size}")


@formats("raw")
def test_resize(iot):
    img = iot.create("1M")
    iot.io(img, "write -P 0x11 0 1M")
    iot.img(["resize", "-f", iot.fmt], img, "2M")
    _size(iot, img)
    iot.img(["resize", "-f", iot.fmt], img, "+1M")
    _size(iot, img)
    iot.io(img, ["read -P 0x11 0 1M", "read -P 0 1M 2M"], by="qemu")
    iot.log("=== shrinking needs --shrink ===")
    iot.img(["resize", "-f", iot.fmt], img, "1M")
    iot.img(["resize", "-f", iot.fmt, "--shrink"], img, "1536k")
    _size(iot, img)
    iot.img(["resize", "-f", iot.fmt], img, "--", "-512k")
    iot.img(["resize", "-f", iot.fmt, "--shrink"], img, "--", "-512k")
    _size(iot, img)
    iot.io(img, ["read -P 0x11 0 1M", "length"], by="qemu")
    iot.log("=== odd sizes are rounded up to whole sectors ===")
    iot.img(["resize", "-f", iot.fmt], img, "1049000")
    _size(iot, img)
    iot.log("=== bad sizes and arguments ===")
    iot.img(["resize", "-f", iot.fmt], img, "12foo")
    iot.img(["resize", "-f", iot.fmt, "--shrink"], img, "--", "-2M")
    iot.img(["resize", "-f", iot.fmt], img)
    iot.img(["resize", "-f", iot.fmt], img, "0x1p")
    iot.img(["resize", "-f", iot.fmt, "--preallocation=bogus"], img, "4M")
    _size(iot, img)
    iot.log("=== probed format ===")
    iot.img(["resize"], img, "2M")
    _size(iot, img)


@formats("raw")
def test_resize_preallocation(iot):
    img = iot.create("1M")
    iot.img(["resize", "-f", iot.fmt, "--preallocation=full"], img, "2M")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["resize", "-f", iot.fmt, "--preallocation=off"], img, "3M")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["info", "-f", iot.fmt], img)


@formats("raw")
def test_truncate(iot):
    img = iot.create("1M")
    iot.io(img, "write -P 0x22 0 1M")
    iot.io(img, ["truncate 2M", "length", "read -P 0x22 0 1M", "read -P 0 1M 1M"])
    _size(iot, img)
    iot.io(img, ["truncate 100k", "length", "read -P 0x22 0 100k", "read 100k 512"])
    _size(iot, img)
    iot.log("=== a size that is not a multiple of 512 ===")
    iot.io(img, ["truncate 1000", "length", "read -P 0x22 0 1000", "read -v 992 32"])
    _size(iot, img)
    iot.img(["info", "-f", iot.fmt], img, by="qemu")
    iot.log("=== preallocation modes ===")
    iot.io(img, ["truncate -m full 64k", "length", "truncate -m off 128k", "length"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.io(img, ["truncate -m bogus 1M", "truncate foo", "truncate", "truncate -- -1"])
    iot.io(img, "truncate 1M", opts="-r")
    _size(iot, img)
