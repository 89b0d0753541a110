"""qemu-io's informational commands: help, length, info, alloc, map, flush."""

import pytest

from harness import formats

pytestmark = pytest.mark.quick


@formats("raw")
def test_help(iot):
    iot.io(None, "help")
    for cmd in ["read", "write", "alloc", "map", "truncate", "nosuch"]:
        iot.io(None, f"help {cmd}")
    iot.io(None, "nosuch")


@formats("raw")
def test_info_length_flush(iot):
    img = iot.create("64M")
    iot.io(img, ["length", "info", "flush"])
    iot.io(img, ["length", "info"], opts="-r")
    iot.io(iot.create("1536", name="small.img"), ["length", "info"])


@formats("raw")
def test_alloc_map(iot):
    img = iot.create("4M")
    iot.io(img, ["map", "alloc 0", "alloc 0 4M", "alloc 4M", "alloc 1M 1k"])
    iot.io(img, ["write -P 0x11 64k 64k", "write -P 0x22 3M 512"])
    iot.io(img, ["map", "alloc 0 64k", "alloc 64k 64k", "alloc 60k 8k", "alloc 3M 4k",
                 "alloc 0 4M"])
    iot.io(img, ["alloc", "alloc abc", "alloc 0 5M", "alloc 5M 1"])
    iot.img(["map", "-f", iot.fmt], img)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["map", "-f", iot.fmt, "--start-offset=1M", "--max-length=2M"], img)
    iot.img(["map", "-f", iot.fmt, "--output=json", "--start-offset=64k",
             "--max-length=64k"], img)
