"""Real VHDs made by other tools (../shared/fixtures/third-party/vhd), read in place.

Virtual sizes are 7.2's (CHS or current_size by creator app); the Windows 8 chain
opens with its parent and reads as libvhdi reads it.
"""

from __future__ import annotations

import bz2
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from vpc_helpers import (  # noqa: E402
    FIXTURES,
    needs_fixtures,
    needs_pyvhdi,
    open_chain,
    vhdi_read,
)

from bdrv.graph import O_RDWR  # noqa: E402

# Virtual sizes as qemu-img 7.2 reports them.
SIZES = {
    "qemu.vhd": 41953280,
    "xapi.vhd": 41943040,
    "win8.vhd": 41943040,
    "win8-child.vhd": 41943040,
    "win8.1-1GB.vhd": 1073741824,
    "hyperv2012r2-dynamic.vhd.bz2": 136365211648,
    "virtualpc-dynamic.vhd.bz2": 136363130880,
}


def fixture_copy(name: str, dest: Path) -> Path:
    src = FIXTURES / name
    if name.endswith(".bz2"):
        out = dest / name[:-4]
        out.write_bytes(bz2.decompress(src.read_bytes()))
        return out
    out = dest / name
    shutil.copy(src, out)
    out.chmod(0o644)
    return out


@needs_fixtures
@pytest.mark.parametrize("name", sorted(SIZES))
def test_virtual_size_is_qemus(tmp_path: Path, name: str) -> None:
    path = fixture_copy(name, tmp_path)
    if name == "win8-child.vhd":
        fixture_copy("win8.vhd", tmp_path)
    blk = open_chain(path)
    try:
        assert blk.getlength() == SIZES[name]
    finally:
        blk.close()


@needs_fixtures
def test_windows_chain_opens_with_its_parent(tmp_path: Path) -> None:
    child = FIXTURES / "win8-child.vhd"  # read in place: the parent is beside it
    blk = open_chain(child)
    try:
        drv = blk.node.driver
        assert drv.backing_file == "win8.vhd"  # type: ignore[attr-defined]
        assert blk.node.backing is not None
        assert blk.node.backing.node.filename.endswith("win8.vhd")
        data = blk.pread(0, blk.getlength())
    finally:
        blk.close()
    assert data == bytes(len(data))


@needs_fixtures
@needs_pyvhdi
def test_windows_chain_written_by_bdrv_read_by_libvhdi(tmp_path: Path) -> None:
    child = fixture_copy("win8-child.vhd", tmp_path)
    parent = fixture_copy("win8.vhd", tmp_path)
    blk = open_chain(child, O_RDWR)
    try:
        blk.pwrite(4096, b"\x5a" * 8192)
        ours = blk.pread(0, blk.getlength())
    finally:
        blk.close()
    assert vhdi_read(child, [parent], 0, len(ours)) == ours
    # Data starts 4 KiB-aligned in the new block, after the W2ru area, as Windows does.
    raw = child.read_bytes()
    assert raw[0x14000 + 4096:0x14000 + 4096 + 8192] == b"\x5a" * 8192


@needs_fixtures
def test_info_backing_chain_shows_both_layers(tmp_path: Path) -> None:
    import contextlib
    import io

    from bdrv.tools.img import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["qemu-img", "info", "--backing-chain", str(FIXTURES / "win8-child.vhd")])
    text = out.getvalue()
    assert status == 0
    assert "backing file: win8.vhd" in text
    assert text.count("\nfile format: vpc\n") == 2 and text.count("image: ") == 2


@needs_fixtures
def test_xapi_batmap_is_not_overwritten(tmp_path: Path) -> None:
    path = fixture_copy("xapi.vhd", tmp_path)
    before = path.read_bytes()
    batmap = before.find(b"tdbatmap")
    assert batmap > 0
    blk = open_chain(path, O_RDWR)
    try:
        blk.pwrite(0, b"\x01" * 4096)
        assert blk.pread(0, 4096) == b"\x01" * 4096
    finally:
        blk.close()
    after = path.read_bytes()
    assert after[batmap:batmap + 1024] == before[batmap:batmap + 1024]


@needs_fixtures
def test_third_party_images_check_clean(tmp_path: Path) -> None:
    for name in ("qemu.vhd", "xapi.vhd", "win8.vhd", "win8.1-1GB.vhd",
                 "hyperv2012r2-dynamic.vhd.bz2", "virtualpc-dynamic.vhd.bz2"):
        path = fixture_copy(name, tmp_path)
        blk = open_chain(path)
        try:
            res = blk.node.driver.check(0)
        finally:
            blk.close()
        assert (res.corruptions, res.leaks, res.check_errors) == (0, 0, 0), (name, res)
