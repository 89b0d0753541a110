"""Fixed and dynamic VHD I/O against qemu-io/qemu-img 7.2: same bytes on disk, same data."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from vpc_helpers import needs_qemu, qemu_img, qemu_io  # noqa: E402

from bdrv.backend import Backend  # noqa: E402
from bdrv.graph import O_RDWR  # noqa: E402

MiB = 1 << 20
# (offset, length, pattern) writes, byte-granular and across block boundaries.
WRITES = [(0, 65536, 0x11), (3 * MiB, MiB, 0x22), (MiB - 1, 3, 0x33),
          (2 * MiB - 1024, 2048, 0x44), (7 * MiB + 512, 5 * MiB, 0x55)]


def bdrv_writes(path: Path, writes: list[tuple[int, int, int]], fmt: str = "vpc") -> None:
    blk = Backend.open(str(path), {"driver": fmt}, O_RDWR)
    try:
        for off, length, pat in writes:
            blk.pwrite(off, bytes([pat]) * length)
    finally:
        blk.close()


def qemu_writes(path: Path, writes: list[tuple[int, int, int]]) -> None:
    cmds: list[str] = []
    for off, length, pat in writes:
        cmds += ["-c", f"write -P {pat} {off} {length}"]
    r = qemu_io("-f", "vpc", *cmds, path)
    assert r.returncode == 0, r.stderr


@needs_qemu
@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_same_writes_give_identical_files(tmp_path: Path, subformat: str) -> None:
    base = tmp_path / "base.vhd"
    qemu_img("create", "-f", "vpc", "-o", f"subformat={subformat}", base, "16M")
    q, b = tmp_path / "q.vhd", tmp_path / "b.vhd"
    shutil.copy(base, q)
    shutil.copy(base, b)
    qemu_writes(q, WRITES)
    bdrv_writes(b, WRITES)
    assert q.read_bytes() == b.read_bytes()


@needs_qemu
def test_bdrv_writes_read_by_qemu(tmp_path: Path) -> None:
    img = tmp_path / "t.vhd"
    qemu_img("create", "-f", "vpc", img, "16M")
    bdrv_writes(img, WRITES)
    cmds: list[str] = []
    for off, length, pat in WRITES:
        cmds += ["-c", f"read -P {pat} {off} {length}"]
    r = qemu_io("-f", "vpc", *cmds, img)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout
    assert qemu_img("check", "-f", "vpc", img).returncode == 63  # 7.2 has no vpc check


@needs_qemu
def test_qemu_writes_read_by_bdrv(tmp_path: Path) -> None:
    img = tmp_path / "t.vhd"
    raw = tmp_path / "t.raw"
    qemu_img("create", "-f", "vpc", img, "16M")
    qemu_writes(img, WRITES)
    assert qemu_img("convert", "-f", "vpc", "-O", "raw", img, raw).returncode == 0
    blk = Backend.open(str(img), {"driver": "vpc"}, 0)
    try:
        assert blk.pread(0, blk.getlength()) == raw.read_bytes()
    finally:
        blk.close()


@needs_qemu
@pytest.mark.parametrize("tool_args", [["map", "--output=json"], ["map"], ["info"],
                                       ["info", "--output=json"]])
def test_tool_output_matches(tmp_path: Path, tool_args: list[str]) -> None:
    import contextlib
    import io
    import os

    from bdrv.tools.img import main

    img = tmp_path / "t.vhd"
    qemu_img("create", "-f", "vpc", img, "16M")
    qemu_writes(img, WRITES)
    q = qemu_img(*tool_args, "t.vhd", cwd=tmp_path)
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["qemu-img", *tool_args, "t.vhd"])
    finally:
        os.chdir(old)
    assert (out.getvalue(), err.getvalue(), status) == (q.stdout, q.stderr, q.returncode)


@needs_qemu
def test_convert_to_vpc_is_identical_and_compares_equal(tmp_path: Path) -> None:
    from bdrv.tools.img import main

    src = tmp_path / "src.raw"
    src.write_bytes(b"\x01" * MiB + bytes(3 * MiB) + b"\x02" * 4096)
    qemu_img("convert", "-f", "raw", "-O", "vpc", src, tmp_path / "q.vhd")
    assert main(["qemu-img", "convert", "-f", "raw", "-O", "vpc", str(src),
                 str(tmp_path / "b.vhd")]) == 0
    from vpc_helpers import masked

    assert masked(tmp_path / "q.vhd") == masked(tmp_path / "b.vhd")
    assert qemu_img("compare", tmp_path / "q.vhd", tmp_path / "b.vhd").returncode == 0


@needs_qemu
@pytest.mark.parametrize("mode", ["chs", "current_size", None])
def test_force_size_calc(tmp_path: Path, mode: str | None) -> None:
    img = tmp_path / "t.vhd"
    qemu_img("create", "-f", "vpc", "-o", "force_size=on", img, "1000001")
    opts = f"driver=vpc,file.filename={img}" + (f",force_size_calc={mode}" if mode else "")
    r = qemu_img("info", "--output=json", "--image-opts", opts)
    import json

    want = json.loads(r.stdout)["virtual-size"]
    options = {"driver": "vpc"}
    if mode:
        options["force_size_calc"] = mode
    blk = Backend.open(str(img), options, 0)
    try:
        assert blk.getlength() == want
    finally:
        blk.close()


def test_bad_force_size_calc(tmp_path: Path) -> None:
    from bdrv.drivers.vpc.create import create
    from bdrv.errors import BlockError

    img = tmp_path / "t.vhd"
    create(str(img), {"size": 1 << 20}, print)
    with pytest.raises(BlockError, match="Invalid size calculation mode: 'foo'"):
        Backend.open(str(img), {"driver": "vpc", "force_size_calc": "foo"}, 0)


def test_probe_finds_vpc(tmp_path: Path) -> None:
    from bdrv.drivers.vpc.create import create

    img = tmp_path / "t.vhd"
    create(str(img), {"size": 1 << 20}, print)
    blk = Backend.open(str(img), {}, 0)
    try:
        assert blk.node.driver.format_name == "vpc"
    finally:
        blk.close()
