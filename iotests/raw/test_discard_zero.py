"""Zero writes and discards on raw files, and how map/alloc report them afterwards."""

import pytest

from harness import formats

pytestmark = pytest.mark.rw


def _maps(iot, img):
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.io(img, ["map", "alloc 0 1M"])


@formats("raw")
def test_write_zeroes(iot):
    img = iot.create("1M")
    iot.io(img, "write -P 0xff 0 1M")
    iot.io(img, ["write -z 64k 64k", "write -z 200000 1000", "write -z -u 512k 128k"])
    iot.io(img, ["read -P 0xff 0 64k", "read -P 0 64k 64k", "read -P 0xff 128k 68928",
                 "read -P 0 200000 1000", "read -P 0 512k 128k", "read -P 0xff 640k 384k"],
           by="qemu")
    _maps(iot, img)
    iot.log("=== option errors ===")
    iot.io(img, ["write -z -P 0x11 0 4k", "write -u 0 4k", "write -z -c 0 64k"])


@formats("raw")
def test_discard(iot):
    img = iot.create("1M", opts="preallocation=full")
    iot.io(img, "write -P 0x5a 0 1M")
    iot.io(img, ["discard 0 64k", "discard 256k 256k", "discard -q 768k 4k", "discard 1000 100"])
    iot.io(img, ["read -P 0 0 64k", "read -P 0x5a 64k 192k", "read -P 0 256k 256k",
                 "read -P 0x5a 512k 256k", "read -P 0 768k 4k"], by="qemu")
    _maps(iot, img)
    iot.log("=== discard is ignored with -d ignore ===")
    iot.io(img, "discard 64k 64k", opts="-d ignore")
    iot.io(img, "read -P 0x5a 64k 64k", by="qemu")
    iot.io(img, ["discard 0", "discard abc 1", "discard 0 2M"])
