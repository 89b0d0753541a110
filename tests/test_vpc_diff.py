"""Differencing VHDs (QEMU 7.2 cannot be the oracle): witnesses are fattools and libvhdi.

libvhdi (20260901) reads the clear bits that follow a set bit inside the same bitmap
byte as zeros instead of the parent's data, so comparisons with it use 4 KiB-aligned
writes (whole bitmap bytes); fattools, which reads sector-exactly, checks the rest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from vpc_helpers import (  # noqa: E402
    needs_fattools,
    needs_pyvhdi,
    open_chain,
    pyvhdi,
    vhdi_read,
    vhdutils,
)

from bdrv.drivers.vpc.create import create  # noqa: E402
from bdrv.drivers.vpc.dynamic import (  # noqa: E402
    PLAT_W2KU,
    PLAT_W2RU,
    DynamicHeader,
    decode_locator,
)
from bdrv.drivers.vpc.footer import Footer  # noqa: E402
from bdrv.errors import BlockError  # noqa: E402
from bdrv.graph import O_NO_BACKING, O_RDWR  # noqa: E402

MiB = 1 << 20
SIZE = 8 * MiB


def make_base(path: Path, fill: int = 0x70) -> None:
    create(str(path), {"size": SIZE}, print)
    blk = open_chain(path, O_RDWR)
    try:
        blk.pwrite(0, bytes([fill]) * blk.getlength())
    finally:
        blk.close()


def make_child(path: Path, parent: str) -> None:
    create(str(path), {"size": 0, "backing_file": parent, "backing_fmt": "vpc"}, print)


def read_all(path: Path) -> bytes:
    blk = open_chain(path)
    try:
        return blk.pread(0, blk.getlength())
    finally:
        blk.close()


def test_created_child_has_windows_locators(tmp_path: Path) -> None:
    make_base(tmp_path / "base.vhd")
    make_child(tmp_path / "child.vhd", "base.vhd")
    raw = (tmp_path / "child.vhd").read_bytes()
    footer = Footer.parse(raw[:512])
    assert footer.disk_type == 4 and footer.checksum_ok and raw[-512:] == raw[:512]
    header = DynamicHeader.parse(raw[512:1536])
    assert header.checksum_ok
    base_footer = Footer.parse((tmp_path / "base.vhd").read_bytes()[:512])
    assert header.parent_uuid == base_footer.uuid
    assert header.parent_timestamp == base_footer.timestamp
    assert header.parent_name == str(tmp_path / "base.vhd")
    by_platform = {loc.platform: loc for loc in header.locators if loc.platform}
    ku, ru = by_platform[PLAT_W2KU], by_platform[PLAT_W2RU]
    ku_text = raw[ku.data_offset:ku.data_offset + ku.data_length].decode("utf-16-le")
    ru_text = raw[ru.data_offset:ru.data_offset + ru.data_length].decode("utf-16-le")
    assert ru_text == ".\\base.vhd"
    assert ku_text == str(tmp_path / "base.vhd")
    assert decode_locator(ku, ku_text.encode("utf-16-le")) == str(tmp_path / "base.vhd")
    # The first block's data will be 4 KiB-aligned, as Windows places it.
    assert len(raw) % 4096 == 0


def test_reads_follow_bitmaps_and_first_write_works(tmp_path: Path) -> None:
    make_base(tmp_path / "base.vhd")
    make_child(tmp_path / "child.vhd", "base.vhd")
    blk = open_chain(tmp_path / "child.vhd", O_RDWR)
    try:
        assert blk.node.backing is not None
        assert blk.pread(0, 4096) == b"\x70" * 4096
        # First write to an unallocated block (the seed patch failed here).
        blk.pwrite(1536, b"\x11" * 1024)
        blk.pwrite(2 * MiB + 100, b"\x22" * 10)  # unaligned: merged with the parent
        blk.pwrite(MiB - 512, b"\x33" * 1024)
        expect = bytearray(b"\x70" * blk.getlength())
        expect[1536:2560] = b"\x11" * 1024
        expect[2 * MiB + 100:2 * MiB + 110] = b"\x22" * 10
        expect[MiB - 512:MiB + 512] = b"\x33" * 1024
        assert blk.pread(0, blk.getlength()) == bytes(expect)
        st = blk.node.block_status(0, 4096)
        assert st.flags == 0 and st.pnum == 1536  # clear bits: the parent's
        st = blk.node.block_status(1536, 4096)
        assert st.pnum == 1024 and st.file is not None
    finally:
        blk.close()
    raw = (tmp_path / "child.vhd").read_bytes()
    header = DynamicHeader.parse(raw[512:1536])
    bat = np.frombuffer(raw, ">u4", count=4, offset=header.table_offset)
    bitmap = raw[int(bat[0]) * 512:int(bat[0]) * 512 + 512]
    # Only the written sectors' bits are set: 3, 4, 2047 and 2048 in block 0.
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8))
    assert list(np.flatnonzero(bits)) == [3, 4, 2047, 2048]
    assert read_all(tmp_path / "child.vhd") == bytes(expect)


@needs_pyvhdi
def test_libvhdi_reads_what_bdrv_wrote(tmp_path: Path) -> None:
    make_base(tmp_path / "base.vhd")
    make_child(tmp_path / "child.vhd", "base.vhd")
    blk = open_chain(tmp_path / "child.vhd", O_RDWR)
    try:
        for off, n, pat in [(4096, 8192, 1), (2 * MiB - 4096, 12288, 2), (5 * MiB, MiB, 3)]:
            blk.pwrite(off, bytes([pat]) * n)
        ours = blk.pread(0, blk.getlength())
    finally:
        blk.close()
    theirs = vhdi_read(tmp_path / "child.vhd", [tmp_path / "base.vhd"], 0, len(ours))
    assert theirs == ours
    f = pyvhdi.file()
    f.open(str(tmp_path / "child.vhd"))
    try:
        assert f.get_parent_filename() == str(tmp_path / "base.vhd")
        base = Footer.parse((tmp_path / "base.vhd").read_bytes()[:512])
        assert f.get_parent_identifier() == base.uuid_str
    finally:
        f.close()


@needs_fattools
def test_fattools_child_read_by_bdrv(tmp_path: Path) -> None:
    base, child = tmp_path / "fb.vhd", tmp_path / "fc.vhd"
    subprocess.run(["fattools", "mkvdisk", "-s", "8M", str(base)], check=True,
                   capture_output=True)
    im = vhdutils.Image(str(base), "r+b")
    im.seek(0)
    im.write(b"\x70" * SIZE)
    im.close()
    subprocess.run(["fattools", "mkvdisk", "-b", str(base), str(child)], check=True,
                   capture_output=True)
    im = vhdutils.Image(str(child), "r+b")
    for off, data in [(1536, b"\x11" * 1024), (2 * MiB + 100, b"\x22" * 10),
                      (6 * MiB, b"\x33" * 70000)]:
        im.seek(off)
        im.write(data)
    im.close()
    ours = read_all(child)
    im = vhdutils.Image(str(child), "rb")
    im.seek(0)
    theirs = im.read(len(ours))
    im.close()
    assert ours == theirs


@needs_fattools
def test_bdrv_child_read_by_fattools(tmp_path: Path) -> None:
    make_base(tmp_path / "base.vhd")
    make_child(tmp_path / "child.vhd", "base.vhd")
    blk = open_chain(tmp_path / "child.vhd", O_RDWR)
    try:
        blk.pwrite(1536, b"\x11" * 1024)
        blk.pwrite(3 * MiB + 7, b"\x22" * 5000)
        ours = blk.pread(0, blk.getlength())
    finally:
        blk.close()
    im = vhdutils.Image(str(tmp_path / "child.vhd"), "rb")
    im.seek(0)
    theirs = im.read(len(ours))
    im.close()
    assert theirs == ours


def test_three_layer_chain(tmp_path: Path) -> None:
    make_base(tmp_path / "l0.vhd", 0x10)
    make_child(tmp_path / "l1.vhd", "l0.vhd")
    make_child(tmp_path / "l2.vhd", "l1.vhd")
    blk = open_chain(tmp_path / "l1.vhd", O_RDWR)
    blk.pwrite(MiB, b"\x20" * MiB)
    blk.close()
    blk = open_chain(tmp_path / "l2.vhd", O_RDWR)
    try:
        blk.pwrite(MiB + 512, b"\x30" * 512)
        data = blk.pread(0, 3 * MiB)
        from bdrv.request import block_status_above

        st, depth = block_status_above(blk.node, None, MiB, 512)
        assert depth == 1
        st, depth = block_status_above(blk.node, None, 0, 512)
        assert depth == 2
    finally:
        blk.close()
    expect = bytearray(b"\x10" * 3 * MiB)
    expect[MiB:2 * MiB] = b"\x20" * MiB
    expect[MiB + 512:MiB + 1024] = b"\x30" * 512
    assert data == bytes(expect)


def test_uuid_mismatch_is_refused_unless_overridden(tmp_path: Path) -> None:
    make_base(tmp_path / "base.vhd")
    make_child(tmp_path / "child.vhd", "base.vhd")
    make_base(tmp_path / "base.vhd", 0x55)  # a different disk under the same name
    with pytest.raises(BlockError, match="has UUID .* but the image expects"):
        open_chain(tmp_path / "child.vhd")
    blk = open_chain(tmp_path / "child.vhd", options={"check_parent": "off"})
    try:
        assert blk.pread(0, 512) == b"\x55" * 512
    finally:
        blk.close()


def test_missing_parent(tmp_path: Path) -> None:
    make_base(tmp_path / "base.vhd")
    make_child(tmp_path / "child.vhd", "base.vhd")
    (tmp_path / "base.vhd").unlink()
    blk = open_chain(tmp_path / "child.vhd", O_NO_BACKING)  # info still works
    try:
        assert blk.node.driver.backing_file == "base.vhd"  # type: ignore[attr-defined]
    finally:
        blk.close()
    with pytest.raises(BlockError, match="No such file or directory"):
        open_chain(tmp_path / "child.vhd")


def test_parent_loop(tmp_path: Path) -> None:
    make_base(tmp_path / "a.vhd")
    make_child(tmp_path / "b.vhd", "a.vhd")
    make_child(tmp_path / "c.vhd", "b.vhd")
    # Turn a.vhd into a child of c.vhd: a -> c -> b -> a.
    (tmp_path / "a.vhd").unlink()
    make_child(tmp_path / "a.vhd", "c.vhd")
    with pytest.raises(BlockError, match="creates an infinite loop"):
        open_chain(tmp_path / "c.vhd", options={"check_parent": "off"})
