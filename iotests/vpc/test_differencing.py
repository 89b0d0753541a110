"""Differencing VHDs: QEMU 7.2 reads them as plain dynamic images, so the references
here come from bdrv (reviewed line by line) and every test checks the data with a
witness that is not bdrv: libvhdi (pyvhdi), fattools, or images Windows wrote.

libvhdi reads clear bits that follow a set bit in the same bitmap byte as zeros, so its
checks use 4 KiB-aligned writes; fattools reads sector-exactly and checks the rest.
"""

import shutil
import sys
from pathlib import Path

import pytest

from harness import formats, qemu_lacks

sys.path.insert(0, str(Path(__file__).parent))
from vhd_edit import (  # noqa: E402
    FIXTURES,
    Expected,
    edit_footer,
    fattools_check,
    fattools_write,
    libvhdi_check,
    libvhdi_parent,
    need_witnesses,
)

pytestmark = [pytest.mark.rw, qemu_lacks("VHD differencing images")]
MiB = 1 << 20
SIZE = 8 * MiB
# 8M is stored as CHS 241/4/17 (8390656 bytes): the whole disk, as both tools see it.
DISK = 8390656


def base_and_child(iot, fill=0x70):
    base = iot.create("8M", name="base.vhd")
    # A fixed UUID, so that messages naming it are the same in every run.
    edit_footer(iot, base.path, uuid=bytes([0x11]) * 16)
    iot.io(base, [f"write -P 0x{fill:02x} 0 {DISK}"])
    child = iot.create(None, name="child.vhd", args=["-b", "base.vhd", "-F", "vpc"])
    return base, child


@formats("vpc")
def test_diff_create(iot):
    """create -b/-F writes a child whose parent link other readers follow.

    Verified by: libvhdi reads the parent name and identifier and the child's data.
    """
    need_witnesses(iot, "libvhdi")
    base, child = base_and_child(iot)
    iot.img(["info", "-f", iot.fmt], child)
    iot.img(["info", "-f", iot.fmt, "--output=json"], child)
    iot.log(f"file size: {child.path.stat().st_size}")
    libvhdi_parent(iot, child.path)
    libvhdi_check(iot, child.path, [base.path], Expected(DISK, 0x70))


@formats("vpc")
def test_diff_create_errors(iot):
    """What create -b refuses, and that a refused create leaves the parent alone.

    Verified by: libvhdi reads the parent's data unchanged afterwards.
    """
    need_witnesses(iot, "libvhdi")
    base = iot.create("1M", name="base.vhd")
    iot.io(base, ["write -P 0x42 0 1M"])
    iot.create(None, name="c1.vhd", args=["-b", "base.vhd"])
    iot.create(None, name="c2.vhd", args=["-b", "missing.vhd", "-F", "vpc"])
    iot.create(None, name="c3.vhd", opts="subformat=fixed", args=["-b", "base.vhd", "-F", "vpc"])
    iot.img(["create", "-f", iot.fmt, "-b", "base.vhd", "-F", "vpc", "base.vhd"])
    iot.img(["convert", "-O", "vpc", "-B", "base.vhd", "-F", "vpc", str(base.path),
             str(iot.path("c4.vhd"))])
    libvhdi_check(iot, base.path, [], Expected(1 << 20, 0x42))


@formats("vpc")
def test_diff_reads_fall_back_to_parent(iot):
    """An empty child reads as its parent, block by block.

    Verified by: libvhdi and fattools read the same bytes through the chain.
    """
    need_witnesses(iot, "libvhdi", "fattools")
    base, child = base_and_child(iot, 0x70)
    iot.io(child, ["read -P 0x70 0 8M", "read -P 0x70 4095k 2k"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], child)
    expected = Expected(DISK, 0x70)
    libvhdi_check(iot, child.path, [base.path], expected)
    fattools_check(iot, child.path, expected)


@formats("vpc")
def test_diff_aligned_writes(iot):
    """Writes land in the child; clear bitmap bits still read the parent.

    Verified by: libvhdi and fattools read the same bytes through the chain.
    """
    need_witnesses(iot, "libvhdi", "fattools")
    base, child = base_and_child(iot, 0x70)
    iot.io(child, ["write -P 0x11 4k 8k", "write -P 0x22 2044k 8k", "write -P 0x33 5M 1M"])
    iot.io(child, ["read -P 0x70 0 4k", "read -P 0x11 4k 8k", "read -P 0x70 12k 2032k",
                   "read -P 0x22 2044k 8k", "read -P 0x70 2052k 3068k",
                   "read -P 0x33 5M 1M", "read -P 0x70 6M 2M"])
    iot.io(base, ["read -P 0x70 0 8M"])
    iot.img(["map", "-f", iot.fmt], child)
    expected = Expected(DISK, 0x70).write(4096, 8192, 0x11).write(2044 * 1024, 8192, 0x22)
    expected.write(5 * MiB, MiB, 0x33)
    libvhdi_check(iot, child.path, [base.path], expected)
    fattools_check(iot, child.path, expected)


@formats("vpc")
def test_diff_sector_writes(iot):
    """Unaligned writes merge with the parent's sectors (no copy of whole blocks).

    Verified by: fattools reads the same bytes sector-exactly through the chain.
    """
    need_witnesses(iot, "fattools")
    base, child = base_and_child(iot, 0x70)
    iot.io(child, ["write -P 0x11 1536 1024", "write -P 0x22 2097252 10",
                   "write -P 0x33 1048064 1024"])
    iot.io(child, ["read -P 0x70 0 1536", "read -P 0x11 1536 1024", "read -P 0x70 2560 512",
                   "read -P 0x22 2097252 10", "read -P 0x70 2097262 100",
                   "read -P 0x33 1048064 1024"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], child)
    expected = Expected(DISK, 0x70).write(1536, 1024, 0x11).write(2097252, 10, 0x22)
    expected.write(1048064, 1024, 0x33)
    fattools_check(iot, child.path, expected)


@formats("vpc")
def test_diff_backing_chain_info(iot):
    """info --backing-chain and map depth on a three-layer chain.

    Verified by: fattools reads the top of the chain (libvhdi is unreliable on three
    levels, see the fixtures' README).
    """
    need_witnesses(iot, "fattools")
    base, mid = base_and_child(iot, 0x10)
    top = iot.create(None, name="top.vhd", args=["-b", "child.vhd", "-F", "vpc"])
    iot.io(mid, ["write -P 0x20 2M 2M"])
    iot.io(top, ["write -P 0x30 3M 4k"])
    iot.img(["info", "-f", iot.fmt, "--backing-chain"], top)
    iot.img(["map", "-f", iot.fmt], top)
    iot.img(["map", "-f", iot.fmt, "--output=json"], top)
    iot.io(top, ["read -P 0x10 0 2M", "read -P 0x20 2M 1M", "read -P 0x30 3M 4k",
                 "read -P 0x20 3076k 1020k", "read -P 0x10 4M 4M"])
    expected = Expected(DISK, 0x10).write(2 * MiB, 2 * MiB, 0x20).write(3 * MiB, 4096, 0x30)
    fattools_check(iot, top.path, expected)


@formats("vpc")
def test_diff_convert_chain(iot):
    """convert of a chain to raw and to a standalone dynamic VHD.

    Verified by: libvhdi reads the chain and the converted VHD; fattools the chain.
    """
    need_witnesses(iot, "libvhdi", "fattools")
    base, child = base_and_child(iot, 0x70)
    iot.io(child, ["write -P 0x44 1M 1M", "write -z 6M 4k"])
    raw = iot.image("out.raw", fmt="raw")
    iot.img(["convert", "-f", iot.fmt, "-O", "raw"], child, raw)
    iot.io(raw, ["read -P 0x70 0 1M", "read -P 0x44 1M 1M", "read -P 0 6M 4k"], fmt="raw")
    flat = iot.image("flat.vhd")
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt], child, flat)
    iot.img(["info", "-f", iot.fmt], flat)
    iot.img(["compare", "-f", iot.fmt, "-F", "raw"], child, raw)
    expected = Expected(DISK, 0x70).write(MiB, MiB, 0x44).write(6 * MiB, 4096, 0)
    libvhdi_check(iot, child.path, [base.path], expected)
    fattools_check(iot, child.path, expected)
    libvhdi_check(iot, flat.path, [], expected)


@formats("vpc")
def test_diff_fattools_child(iot):
    """A child written by fattools reads the same through bdrv.

    Verified by: fattools wrote the chain and reads it back.
    """
    need_witnesses(iot, "fattools")
    base = iot.create("8M", name="base.vhd")
    iot.io(base, [f"write -P 0x70 0 {DISK}"])
    iot.run(["fattools", "mkvdisk", "-b", "base.vhd", "child.vhd"])
    child = iot.image("child.vhd")
    fattools_write(iot, child.path, [(1536, 1024, 0x11), (2 * MiB + 100, 10, 0x22),
                                     (6 * MiB, 70000, 0x33)])
    iot.img(["info", "-f", iot.fmt], child)
    iot.io(child, ["read -P 0x70 0 1536", "read -P 0x11 1536 1024",
                   "read -P 0x22 2097252 10", "read -P 0x33 6M 70000",
                   "read -P 0x70 6361456 2029200"])
    expected = Expected(DISK, 0x70).write(1536, 1024, 0x11).write(2 * MiB + 100, 10, 0x22)
    expected.write(6 * MiB, 70000, 0x33)
    fattools_check(iot, child.path, expected)


@formats("vpc")
def test_diff_windows_chain(iot):
    """The Windows 8 chain (win8-child.vhd over win8.vhd) opens with its parent.

    Verified by: Windows wrote both images; libvhdi reads the chain as all zeros too.
    """
    if not FIXTURES.is_dir():
        iot.notrun(f"third-party VHD fixtures not found at {FIXTURES}")
    need_witnesses(iot, "libvhdi")
    for name in ["win8.vhd", "win8-child.vhd"]:
        shutil.copyfile(FIXTURES / name, iot.path(name))
    child = iot.image("win8-child.vhd")
    iot.img(["info", "-f", iot.fmt, "--backing-chain"], child)
    iot.img(["map", "-f", iot.fmt, "--output=json"], child)
    iot.io(child, ["read -P 0 0 40M"], opts="-r")
    libvhdi_parent(iot, child.path, iot.path("win8.vhd"))
    libvhdi_check(iot, child.path, [iot.path("win8.vhd")], Expected(41943040, 0))


@formats("vpc")
def test_diff_write_to_windows_child(iot):
    """bdrv writes into the Windows child; the parent stays untouched.

    Verified by: libvhdi reads the written chain; the parent's bytes are compared.
    """
    if not FIXTURES.is_dir():
        iot.notrun(f"third-party VHD fixtures not found at {FIXTURES}")
    need_witnesses(iot, "libvhdi")
    for name in ["win8.vhd", "win8-child.vhd"]:
        shutil.copyfile(FIXTURES / name, iot.path(name))
        iot.path(name).chmod(0o644)
    child = iot.image("win8-child.vhd")
    iot.io(child, ["write -P 0x5a 1M 64k", "write -P 0x6b 20M 4k"])
    iot.io(child, ["read -P 0 0 1M", "read -P 0x5a 1M 64k", "read -P 0x6b 20M 4k"])
    same = iot.path("win8.vhd").read_bytes() == (FIXTURES / "win8.vhd").read_bytes()
    iot.log(f"parent win8.vhd unchanged: {same}")
    expected = Expected(41943040, 0).write(MiB, 65536, 0x5a).write(20 * MiB, 4096, 0x6b)
    libvhdi_check(iot, child.path, [iot.path("win8.vhd")], expected)


@formats("vpc")
def test_diff_missing_or_wrong_parent(iot):
    """A missing parent, and a parent replaced by another disk, are clear errors.

    Verified by: libvhdi reports the same parent name and identifier that bdrv checks.
    """
    need_witnesses(iot, "libvhdi")
    base, child = base_and_child(iot, 0x70)
    libvhdi_parent(iot, child.path)
    base.path.rename(iot.path("moved.vhd"))
    iot.io(child, ["read 0 512"])
    iot.img(["info", "-f", iot.fmt], child)
    iot.img(["info", "-f", iot.fmt, "-U", "--backing-chain"], child)
    other = iot.create("8M", name="base.vhd")
    edit_footer(iot, other.path, uuid=bytes([0x22]) * 16)
    iot.io(child, ["read 0 512"])
    iot.io(None, ["open -o driver=vpc,check_parent=off child.vhd", "read -P 0 0 512"])
