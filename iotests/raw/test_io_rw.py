"""qemu-io reads and writes: patterns, hex dumps, vectors, source files, edges."""

import pytest

from harness import formats

pytestmark = [pytest.mark.rw, pytest.mark.quick]


@formats("raw")
def test_pattern_write_read(iot):
    img = iot.create("4M")
    iot.io(img, ["write -P 0x11 0 256k", "write -P 0x22 1M 64k", "write -P 0xff 4190208 4k"])
    iot.io(img, ["read -P 0x11 0 256k", "read -P 0x22 1M 64k", "read -P 0 256k 768k",
                 "read -P 0xff 4190208 4k"])
    iot.log("=== read back by QEMU ===")
    iot.io(img, ["read -P 0x11 0 256k", "read -P 0x22 1M 64k"], by="qemu")
    iot.log("=== verification failures ===")
    iot.io(img, "read -P 0x33 0 4k")
    iot.io(img, "read -P 0x11 255k 2k")
    iot.io(img, "read -P 0x22 -s 512 -l 1k 1M 4k")
    iot.log("=== quiet ===")
    iot.io(img, ["write -q -P 0x44 8k 4k", "read -q -P 0x44 8k 4k"])
    iot.io(img, "read -q -P 0x45 8k 4k")


@formats("raw")
def test_hexdump(iot):
    img = iot.create("1M")
    iot.io(img, ["write -P 0x41 0 16", "write -P 0x7e 16 8", "write -P 0x0a 24 8",
                 "write -P 0xc3 512 3"])
    iot.io(img, ["read -v 0 64", "read -v 500 20", "read -v 1048560 16", "read -v 3 5"])
    iot.io(img, "read -v 0 64", by="qemu")


@formats("raw")
def test_unaligned_io(iot):
    img = iot.create("64k")
    iot.io(img, ["write -P 0xaa 1 1", "write -P 0xbb 511 2", "write -P 0xcc 4095 4098",
                 "write -P 0xdd 65535 1"])
    iot.io(img, ["read -P 0 0 1", "read -P 0xaa 1 1", "read -P 0 2 509",
                 "read -P 0xbb 511 2", "read -P 0xcc 4095 4098", "read -P 0xdd 65535 1"],
           by="qemu")
    iot.io(img, ["read -v 508 8", "read -v 4094 2"])


@formats("raw")
def test_readv_writev(iot):
    img = iot.create("1M")
    iot.io(img, ["writev -P 0x22 0 512 1k 2k", "writev -P 0x33 64k 4k 4k", "writev 128k 1"])
    iot.io(img, ["readv -P 0x22 0 512 1k 2k", "readv -P 0x33 64k 8k", "readv -v 0 16 16",
                 "readv -P 0x33 64k 1k 3k 4k"])
    iot.io(img, ["read -P 0x22 0 3584", "read -P 0x33 64k 8k", "read -P 0xcd 128k 1"],
           by="qemu")
    iot.io(img, ["readv -P 0x22 0", "writev 0", "readv 1M 512", "writev 1M 1 1"])


@formats("raw")
def test_write_from_file(iot):
    img = iot.create("1M")
    src = iot.path("src.bin")
    src.write_bytes(b"hello world, from a source file\n" * 24)
    iot.io(img, ["write -s " + str(src) + " 4k 768", "read -v 4k 64"])
    iot.io(img, "read -v 4800 64", by="qemu")
    iot.io(img, "write -s " + str(iot.path("nosuch.bin")) + " 0 512")
    iot.io(img, "write -s " + str(src) + " -P 0x11 0 512")


@formats("raw")
def test_read_write_beyond_end(iot):
    img = iot.create("1M")
    iot.io(img, ["read 1M 512", "read 1048064 1k", "read 2M 1", "read 1M 0"])
    iot.io(img, ["write 1M 512", "write -P 0x11 1048064 1k", "write -z 1M 512",
                 "discard 1M 512"])
    iot.io(img, ["read -P 0 1048064 512", "length"])
    iot.io(img, ["read -- -512 512", "read 0 -1", "read 0 8E", "read abc 1", "read 0",
                 "write -P 0x100 0 1", "write -P xyz 0 1"])
    iot.img(["info", "-f", iot.fmt], img)


@formats("raw")
def test_write_read_only(iot):
    img = iot.create("1M")
    iot.io(img, ["write -P 0x11 0 4k", "write -z 0 4k", "discard 0 4k", "truncate 2M"],
           opts="-r")
    iot.io(img, "read -P 0 0 4k", opts="-r")
