"""Reads and writes on dynamic and fixed VHDs: patterns, block boundaries, allocation."""

import pytest

from harness import formats

pytestmark = [pytest.mark.rw, pytest.mark.io]

MiB = 1 << 20


@formats("vpc")
def test_dynamic_write_read(iot):
    img = iot.create("8M")
    iot.io(img, ["write -P 0x11 0 64k", "write -P 0x22 2044k 8k", "write -P 0x33 6M 1M"])
    iot.io(img, ["read -P 0x11 0 64k", "read -P 0 64k 1980k", "read -P 0x22 2044k 8k",
                 "read -P 0x33 6M 1M", "read -P 0 7M 1M"])
    iot.img(["map", "-f", iot.fmt], img)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["info", "-f", iot.fmt], img)
    iot.log(f"file size: {img.path.stat().st_size}")


@formats("vpc")
def test_fixed_write_read(iot):
    img = iot.create("4M", opts="subformat=fixed")
    iot.io(img, ["write -P 0xaa 1M 512k", "write -P 0xbb 4095k 1k"])
    iot.io(img, ["read -P 0 0 1M", "read -P 0xaa 1M 512k", "read -P 0xbb 4095k 1k"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.log(f"file size: {img.path.stat().st_size}")


@formats("vpc")
def test_unaligned_io(iot):
    img = iot.create("4M")
    iot.io(img, ["write -P 0x5a 100 1000", "write -P 0x6b 2097000 300"])
    iot.io(img, ["read -P 0 0 100", "read -P 0x5a 100 1000", "read -P 0 1100 1000",
                 "read -P 0x6b 2097000 300", "read -v 2097150 4"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)


@formats("vpc")
def test_zero_writes_and_discard(iot):
    img = iot.create("8M")
    iot.io(img, ["write -P 0x44 0 4M", "write -z 1M 1M", "discard 2M 1M",
                 "write -z 6M 1M"])
    iot.io(img, ["read -P 0x44 0 1M", "read -P 0 1M 1M", "read -P 0x44 2M 2M",
                 "read -P 0 4M 4M"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)


@formats("vpc")
def test_beyond_end(iot):
    img = iot.create("1M")
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.io(img, ["read 1079296 512", "write 1079296 512", "read 1078784 1024",
                 "write -P 1 1078784 512", "read -P 1 1078784 512"])


@formats("vpc")
def test_alloc_and_map_commands(iot):
    img = iot.create("8M")
    iot.io(img, ["write 0 512", "write 3M 4k", "alloc 0 1M", "alloc 2M 2M", "map"])
    iot.io(img, ["alloc 0 8M"], opts="-r")
