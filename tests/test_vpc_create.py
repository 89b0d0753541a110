"""vpc creation: byte-identical to qemu-img 7.2 except the footer time stamp and UUID.

Both tools create the image in their own directory; outputs, exit codes and the files
(masked as vpc_helpers.masked() explains) must agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from img_oracle import bdrv_img  # noqa: E402
from vpc_helpers import masked, needs_qemu, qemu_img  # noqa: E402

from bdrv.drivers.vpc.footer import (  # noqa: E402
    MAX_GEOMETRY,
    Footer,
    calculate_geometry,
    rounded_image_size,
)
from bdrv.errors import BlockError  # noqa: E402

CASES = [
    ([], "1M"), ([], "1000000"), ([], "10G"), ([], "0"), ([], "127G"), ([], "2040G"),
    ([], "2041G"), ([], "300G"), (["-o", "subformat=fixed"], "1M"),
    (["-o", "subformat=fixed"], "1000000"), (["-o", "subformat=fixed"], "0"),
    (["-o", "force_size=on"], "1000001"), (["-o", "force_size=on,subformat=fixed"], "5M"),
    (["-o", "force_size=on"], "2040G"), (["-o", "force_size=on"], "2041G"),
    (["-o", "subformat=foo"], "1M"), (["-o", "force_size=maybe"], "1M"),
    (["-o", "preallocation=full"], "1M"), (["-o", "help"], None),
    (["-o", "subformat=fixed,preallocation=falloc"], "3M"),
]


@needs_qemu
@pytest.mark.parametrize("opts,size", CASES, ids=[" ".join(o) + f" {s}" for o, s in CASES])
def test_create_matches_qemu(tmp_path: Path, opts: list[str], size: str | None) -> None:
    qdir, bdir = tmp_path / "q", tmp_path / "b"
    qdir.mkdir()
    bdir.mkdir()
    args = ["create", "-f", "vpc", *opts, "t.vhd", *([size] if size else [])]
    q = qemu_img(*args, cwd=qdir)
    b = bdrv_img(bdir, *args)
    assert (b.stdout, b.stderr, b.status) == (q.stdout, q.stderr, q.returncode)
    qfile, bfile = qdir / "t.vhd", bdir / "t.vhd"
    assert qfile.exists() == bfile.exists()
    if qfile.exists():
        assert qfile.stat().st_size == bfile.stat().st_size
        if qfile.stat().st_size < 64 << 20:
            assert masked(qfile) == masked(bfile)
        else:  # a large fixed image: its head and tail
            for path in (qfile, bfile):
                assert path.stat().st_blocks * 512 < 1 << 20
        assert abs(qfile.stat().st_blocks - bfile.stat().st_blocks) <= 8


@needs_qemu
def test_footer_fields_are_qemus(tmp_path: Path) -> None:
    qemu_img("create", "-f", "vpc", tmp_path / "q.vhd", "100M")
    bdrv_img(tmp_path, "create", "-f", "vpc", "b.vhd", "100M")
    q = Footer.parse((tmp_path / "q.vhd").read_bytes()[:512])
    b = Footer.parse((tmp_path / "b.vhd").read_bytes()[:512])
    assert b.checksum_ok and q.checksum_ok
    assert (b.creator_app, b.creator_os, b.creator_major, b.creator_minor) == \
        (q.creator_app, q.creator_os, q.creator_major, q.creator_minor)
    assert b.uuid != q.uuid and b.uuid != bytes(16)
    assert abs(b.timestamp - q.timestamp) < 120


def test_geometry_rule() -> None:
    # The spec's examples and QEMU's extension to 255 sectors per track.
    assert calculate_geometry(2048) == (30, 4, 17)
    assert calculate_geometry(MAX_GEOMETRY * 2) == (65535, 16, 255)
    cyls, heads, secs, total = rounded_image_size(1000000 // 512 * 512, False)
    assert cyls * heads * secs == total and total * 512 >= 999936


def test_too_large_is_efbig() -> None:
    with pytest.raises(BlockError) as info:
        rounded_image_size(2041 << 30, True)
    assert info.value.message == "Disk size is too large, max size is 2040 GiB"


def test_chs_refusal_has_qemus_words(tmp_path: Path) -> None:
    """Reachable only without the silent rounding qemu-img create does (blockdev-create)."""
    from bdrv.drivers.vpc.create import _open_file, write_image

    (tmp_path / "x.vhd").write_bytes(b"")
    blk = _open_file(str(tmp_path / "x.vhd"))
    try:
        with pytest.raises(BlockError) as info:
            write_image(blk, 1000448 + 512, 3, False)
    finally:
        blk.close()
    assert info.value.message == "The requested image size cannot be represented in CHS geometry"
    assert info.value.hint.startswith("Try size=")
    assert "force-size=on (the latter makes the image incompatible with Virtual PC)" in \
        info.value.hint
