"""Hostile and damaged VHDs: 7.2's messages where 7.2 refuses, clear errors beyond it,
always in bounded time and memory; and the VHD check with its repairs."""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from vpc_helpers import needs_qemu, open_chain, qemu_img  # noqa: E402

from bdrv.backend import Backend  # noqa: E402
from bdrv.check import FIX_ERRORS, FIX_LEAKS  # noqa: E402
from bdrv.drivers.vpc.create import create  # noqa: E402
from bdrv.drivers.vpc.footer import checksum  # noqa: E402
from bdrv.errors import BlockError  # noqa: E402
from bdrv.graph import O_CHECK, O_RDWR  # noqa: E402

Edit = Callable[[bytearray], None]


def refoot(b: bytearray) -> None:
    struct.pack_into(">I", b, 64, checksum(b[:512], 64))


def rehead(b: bytearray) -> None:
    struct.pack_into(">I", b, 512 + 36, checksum(b[512:1536], 36))


def field(fmt: str, offset: int, value: int, foot: bool = False, head: bool = False) -> Edit:
    def edit(b: bytearray) -> None:
        struct.pack_into(fmt, b, offset, value)
        if foot:
            refoot(b)
        if head:
            rehead(b)
    return edit


def footer_size(app: bytes, size: int) -> Edit:
    def edit(b: bytearray) -> None:
        b[28:32] = app
        struct.pack_into(">Q", b, 48, size)
        refoot(b)
    return edit


def flip(offset: int) -> Edit:
    def edit(b: bytearray) -> None:
        b[offset] ^= 0x01
    return edit


# (name, edit, 7.2's message after "Could not open 'x.vhd': ")
CASES: list[tuple[str, Edit, str]] = [
    ("footer-checksum", flip(64), "Incorrect header checksum"),
    ("huge-size", footer_size(b"win ", (0xFF000001) * 512),
     "Could not open 'x.vhd': File too large"),
    ("geometry-vs-table", field(">I", 56, (65535 << 16) | (16 << 8) | 254, foot=True),
     "Page table too small"),
    ("header-magic", flip(512), "Invalid header magic"),
    ("block-size", field(">I", 512 + 32, 1000, head=True), "Invalid block size 1000"),
    ("block-size-zero", field(">I", 512 + 32, 0, head=True), "Invalid block size 0"),
    ("table-entries", field(">I", 512 + 28, 0x80000000, head=True),
     "Max Table Entries too large (-2147483648)"),
    ("table-small", field(">I", 512 + 28, 1, head=True), "Page table too small"),
    ("bat-past-eof", field(">I", 1536, 0x100000),
     "block-vpc: free_data_block_offset points after the end of file. "
     "The image has been truncated."),
    ("table-past-eof", field(">Q", 512 + 16, 1 << 40, head=True),
     "block-vpc: free_data_block_offset points after the end of file. "
     "The image has been truncated."),
    ("data-offset-ones", field(">Q", 16, 0xFFFFFFFFFFFFFFFF, foot=True),
     "Error reading dynamic VHD header"),
    ("data-offset-far", field(">Q", 16, 1 << 62, foot=True), "Invalid header magic"),
]


def build(tmp_path: Path, edit: Edit) -> Path:
    path = tmp_path / "x.vhd"
    create(str(path), {"size": 10 << 20}, print)
    data = bytearray(path.read_bytes())
    edit(data)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("name,edit,message", CASES, ids=[c[0] for c in CASES])
def test_refused_with_qemus_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    name: str, edit: Edit, message: str) -> None:
    build(tmp_path, edit)
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(BlockError) as info:
        Backend.open("x.vhd", {"driver": "vpc"}, 0)
    assert time.monotonic() - start < 5
    assert info.value.message == message


@needs_qemu
@pytest.mark.parametrize("name,edit,message", CASES, ids=[c[0] for c in CASES])
def test_qemu_agrees(tmp_path: Path, name: str, edit: Edit, message: str) -> None:
    build(tmp_path, edit)
    r = qemu_img("info", "-f", "vpc", "x.vhd", cwd=tmp_path)
    assert r.stderr == f"qemu-img: Could not open 'x.vhd': {message}\n"


@pytest.mark.parametrize("content,message", [
    (b"", "File too small for a VHD header"),
    (b"x" * 100, "invalid VPC image"),
    (b"x" * 4096, "invalid VPC image"),
])
def test_not_a_vhd(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.vhd"
    path.write_bytes(content)
    with pytest.raises(BlockError) as info:
        Backend.open(str(path), {"driver": "vpc"}, 0)
    assert info.value.message == message


def test_bad_dynamic_header_checksum_is_refused_but_checkable(tmp_path: Path) -> None:
    """7.2 ignores it; bdrv refuses the image, and check -r all repairs it."""
    path = build(tmp_path, flip(512 + 100))
    with pytest.raises(BlockError, match="Incorrect dynamic disk header checksum"):
        Backend.open(str(path), {"driver": "vpc"}, 0)
    blk = Backend.open(str(path), {"driver": "vpc"}, O_CHECK | O_RDWR)
    try:
        res = blk.node.driver.check(FIX_ERRORS | FIX_LEAKS)
    finally:
        blk.close()
    assert res.corruptions_fixed == 1 and res.corruptions == 0
    Backend.open(str(path), {"driver": "vpc"}, 0).close()


def test_huge_table_is_bounded(tmp_path: Path) -> None:
    """A table of 2^29 entries mostly past EOF: no 2 GiB allocation, a quick error."""
    path = build(tmp_path, field(">I", 512 + 28, (1 << 29) - 1, head=True))
    start = time.monotonic()
    with pytest.raises(BlockError, match="truncated"):
        Backend.open(str(path), {"driver": "vpc"}, 0)
    assert time.monotonic() - start < 5


# -- differencing: bad locators ----------------------------------------------------------


def diff_pair(tmp_path: Path) -> Path:
    create(str(tmp_path / "base.vhd"), {"size": 4 << 20}, print)
    create(str(tmp_path / "child.vhd"), {"size": 0, "backing_file": "base.vhd",
                                         "backing_fmt": "vpc"}, print)
    return tmp_path / "child.vhd"


def edit_locator(path: Path, index: int, **values: int) -> None:
    data = bytearray(path.read_bytes())
    base = 512 + 576 + 24 * index
    names = {"platform": (0, ">I"), "length": (8, ">I"), "offset": (16, ">Q")}
    for key, value in values.items():
        off, fmt = names[key]
        struct.pack_into(fmt, data, base + off, value)
    rehead(data)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("index,values,fragment", [
    (1, {"length": 1 << 30}, "bad data length"),
    (1, {"offset": 1 << 40}, "outside the file"),
    (1, {"length": 3}, "odd length"),
    (1, {"platform": 0x4D616320}, "unsupported platform Mac "),
])
def test_bad_relative_locator_falls_back_to_absolute(tmp_path: Path, index: int,
                                                     values: dict[str, int],
                                                     fragment: str) -> None:
    child = diff_pair(tmp_path)
    edit_locator(child, index, **values)
    blk = open_chain(child)
    try:
        assert blk.node.backing is not None  # found through W2ku
    finally:
        blk.close()
    # With both locators broken the error names every problem.
    edit_locator(child, 0, length=1 << 30)
    with pytest.raises(BlockError) as info:
        open_chain(child)
    assert "Could not find the parent of differencing image" in info.value.message
    assert fragment in info.value.message


def test_invalid_utf16_locator(tmp_path: Path) -> None:
    child = diff_pair(tmp_path)
    data = bytearray(child.read_bytes())
    # Lone surrogates in both locators' data.
    for off in (0x1000, 0x1000 + 0x1000 + 0x1000):
        data[off:off + 2] = b"\x00\xd8"
    child.write_bytes(bytes(data))
    with pytest.raises(BlockError, match="invalid UTF-16LE"):
        open_chain(child)


# -- check -------------------------------------------------------------------------------


def checked(path: Path, fix: int = 0) -> object:
    blk = Backend.open(str(path), {"driver": "vpc"}, O_CHECK | (O_RDWR if fix else 0))
    try:
        return blk.node.driver.check(fix)
    finally:
        blk.close()


def written_image(tmp_path: Path) -> Path:
    path = tmp_path / "x.vhd"
    create(str(path), {"size": 16 << 20}, print)
    blk = Backend.open(str(path), {"driver": "vpc"}, O_RDWR)
    blk.pwrite(0, b"\x01" * (3 << 20))
    blk.close()
    return path


def test_check_clean_and_repairs(tmp_path: Path) -> None:
    path = written_image(tmp_path)
    good = path.read_bytes()
    res = checked(path)
    assert (res.corruptions, res.leaks) == (0, 0)  # type: ignore[attr-defined]
    assert res.bfi.allocated_clusters == 2 and res.bfi.total_clusters == 9  # type: ignore
    # Footer copy at 0 damaged: repaired from the footer at the end.
    path.write_bytes(good[:100] + b"X" + good[101:])
    assert checked(path).corruptions == 1  # type: ignore[attr-defined]
    assert checked(path, FIX_ERRORS).corruptions_fixed == 1  # type: ignore[attr-defined]
    assert path.read_bytes() == good
    # Truncated tail (footer lost): rewritten.
    path.write_bytes(good[:-512])
    assert checked(path, FIX_ERRORS).corruptions_fixed == 1  # type: ignore[attr-defined]
    assert path.read_bytes() == good
    # A leaked block before the footer: cut off with -r leaks.
    path.write_bytes(good[:-512] + bytes(2 * 1024 * 1024 + 512) + good[-512:])
    assert checked(path).leaks == 1  # type: ignore[attr-defined]
    assert checked(path, FIX_LEAKS).leaks_fixed == 1  # type: ignore[attr-defined]
    assert path.read_bytes() == good


def test_check_overlapping_blocks(tmp_path: Path) -> None:
    path = written_image(tmp_path)
    data = bytearray(path.read_bytes())
    first = struct.unpack_from(">I", data, 1536)[0]
    struct.pack_into(">I", data, 1540, first + 1)  # block 1 overlaps block 0
    path.write_bytes(bytes(data))
    res = checked(path)
    assert res.corruptions >= 1  # type: ignore[attr-defined]
    assert any("overlap" in m for m in res.messages)  # type: ignore[attr-defined]
