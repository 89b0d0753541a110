"""Damaged and hostile VHDs: QEMU 7.2's messages, bounded time and memory."""

import sys
from pathlib import Path

from harness import formats

sys.path.insert(0, str(Path(__file__).parent))
from vhd_edit import edit_footer, edit_header, set_bat_entry  # noqa: E402


def _dynamic(iot, size="4M"):
    img = iot.create(size)
    iot.io(img, ["write -P 0x5c 0 64k"])
    return img


@formats("vpc")
def test_bad_footer_cookie(iot):
    img = _dynamic(iot)
    edit_footer(iot, img.path, cookie=b"notavhd!")
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info"], img)


@formats("vpc")
def test_bad_footer_checksum(iot):
    img = _dynamic(iot)
    edit_footer(iot, img.path, fix_checksum=False, checksum=0x12345678)
    iot.img(["info", "-f", iot.fmt], img)
    iot.io(img, ["read -P 0x5c 0 64k"])
    fixed = iot.create("1M", name="f.vpc", opts="subformat=fixed")
    edit_footer(iot, fixed.path, fix_checksum=False, checksum=0)
    iot.img(["info", "-f", iot.fmt], fixed)


@formats("vpc")
def test_bad_header_cookie(iot):
    img = _dynamic(iot)
    edit_header(iot, img.path, cookie=b"cxsparsX")
    iot.img(["info", "-f", iot.fmt], img)


@formats("vpc")
def test_absurd_block_size(iot):
    img = _dynamic(iot)
    for block_size in [0, 1000, 0x80000000, 0x200]:
        edit_header(iot, img.path, block_size=block_size)
        iot.img(["info", "-f", iot.fmt], img)


@formats("vpc")
def test_absurd_table_size(iot):
    img = _dynamic(iot)
    for entries in [0, 1, 0x7FFFFFFF, 0xFFFFFFFF]:
        edit_header(iot, img.path, max_table_entries=entries)
        iot.img(["info", "-f", iot.fmt], img)
        iot.io(img, ["read 0 512"])


@formats("vpc")
def test_table_offset_past_eof(iot):
    img = _dynamic(iot)
    edit_header(iot, img.path, table_offset=1 << 40)
    iot.img(["info", "-f", iot.fmt], img)
    edit_header(iot, img.path, table_offset=0xFFFFFFFFFFFFFE00)
    iot.img(["info", "-f", iot.fmt], img)


@formats("vpc")
def test_bat_entry_past_eof(iot):
    img = _dynamic(iot)
    set_bat_entry(iot, img.path, 1, 0x00100000)
    iot.img(["info", "-f", iot.fmt], img)
    iot.io(img, ["read -P 0x5c 0 64k", "read 2M 4k"])
    set_bat_entry(iot, img.path, 0, 0xFFFFFFF0)
    iot.io(img, ["read 0 4k"])


@formats("vpc")
def test_truncated_files(iot):
    img = _dynamic(iot)
    for size in [2048, 1024, 511, 0]:
        with open(img.path, "r+b") as f:
            f.truncate(size)
        iot.log(f"--- truncated to {size} bytes")
        iot.img(["info", "-f", iot.fmt], img)
