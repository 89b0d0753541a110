"""qemu-img check on VHDs: 7.2 has no VHD check ("This image format does not support
checks"), so the references come from bdrv, in qemu-img check's words for qcow2: the
checker's lines first, the summary, --output=json, -r leaks|all, exit codes 0/2/3.
"""

import sys
from pathlib import Path

import pytest

from harness import formats, qemu_lacks

sys.path.insert(0, str(Path(__file__).parent))
from vhd_edit import (  # noqa: E402
    FOOTER_SIZE,
    Expected,
    edit_footer,
    edit_header,
    libvhdi_check,
    need_witnesses,
    set_bat_entry,
)

pytestmark = [pytest.mark.img, qemu_lacks("VHD check")]
MiB = 1 << 20
DISK = 8390656


def _image(iot, **kw):
    img = iot.create("8M", **kw)
    iot.io(img, ["write -P 0x5a 0 64k", "write -P 0x6b 4M 1M"])
    return img, Expected(DISK, 0).write(0, 65536, 0x5a).write(4 * MiB, MiB, 0x6b)


@formats("vpc")
def test_check_clean(iot):
    """Clean dynamic and fixed images pass, in every output form.

    Verified by: libvhdi reads the checked images' data.
    """
    need_witnesses(iot, "libvhdi")
    img, expected = _image(iot)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt, "-q"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)
    fixed, _ = _image(iot, name="f.vpc", opts="subformat=fixed")
    iot.img(["check", "-f", iot.fmt], fixed)
    iot.img(["check", "-f", iot.fmt, "--output=json"], fixed)
    libvhdi_check(iot, img.path, [], expected)
    libvhdi_check(iot, fixed.path, [], expected)


@formats("vpc")
def test_check_repair_footer(iot):
    """A damaged footer at the end is an error; -r leaks leaves it, -r all rewrites it.

    Verified by: libvhdi reads the repaired image's data.
    """
    need_witnesses(iot, "libvhdi")
    img, expected = _image(iot)
    with open(img.path, "r+b") as f:
        f.seek(-FOOTER_SIZE + 64, 2)
        f.write(b"\0\0\0\0")
    iot.log("--- checksum of the footer at the end zeroed")
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "leaks"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)
    iot.img(["check", "-f", iot.fmt], img)
    iot.io(img, ["read -P 0x5a 0 64k", "read -P 0x6b 4M 1M"])
    libvhdi_check(iot, img.path, [], expected)


@formats("vpc")
def test_check_repair_leaked_tail(iot):
    """Unused whole blocks before the footer are leaks (exit 3), cut off by -r leaks.

    Verified by: libvhdi reads the repaired image's data.
    """
    need_witnesses(iot, "libvhdi")
    img, expected = _image(iot)
    data = img.path.read_bytes()
    footer = data[-FOOTER_SIZE:]
    img.path.write_bytes(data[:-FOOTER_SIZE] + bytes(2 * (2 * MiB + 512)) + footer)
    iot.log("--- two unused blocks' worth of space inserted before the footer")
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "leaks", "--output=json"], img)
    iot.img(["check", "-f", iot.fmt], img)
    iot.log(f"file size: {img.path.stat().st_size}")
    libvhdi_check(iot, img.path, [], expected)


@formats("vpc")
def test_check_header_checksum(iot):
    """A wrong dynamic header checksum is reported and repaired by -r all.

    Verified by: libvhdi reads the repaired image's data.
    """
    need_witnesses(iot, "libvhdi")
    img, expected = _image(iot)
    edit_header(iot, img.path, fix_checksum=False, checksum=0x01020304)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)
    iot.img(["check", "-f", iot.fmt], img)
    libvhdi_check(iot, img.path, [], expected)


@formats("vpc")
def test_check_overlapping_blocks(iot):
    """Blocks that overlap each other or the metadata cannot be repaired safely.

    Verified by: libvhdi reads the first block's data, which the check leaves alone.
    """
    need_witnesses(iot, "libvhdi")
    img, expected = _image(iot)
    from vhd_edit import bat_entry

    set_bat_entry(iot, img.path, 3, bat_entry(img.path, 0))
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all", "--output=json"], img)
    set_bat_entry(iot, img.path, 3, 2)
    iot.img(["check", "-f", iot.fmt], img)
    libvhdi_check(iot, img.path, [], expected, 0, 2 * MiB)


@formats("vpc")
def test_check_differencing(iot):
    """check of a child checks its parent link too.

    Verified by: libvhdi reads the chain's data before the parent is replaced.
    """
    need_witnesses(iot, "libvhdi")
    base = iot.create("8M", name="base.vhd")
    edit_footer(iot, base.path, uuid=bytes([0x11]) * 16)
    iot.io(base, [f"write -P 0x70 0 {DISK}"])
    child = iot.create(None, name="child.vhd", args=["-b", "base.vhd", "-F", "vpc"])
    iot.io(child, ["write -P 0x11 1M 4k"])
    iot.img(["check", "-f", iot.fmt], child)
    iot.img(["check", "-f", iot.fmt, "--output=json"], child)
    libvhdi_check(iot, child.path, [base.path], Expected(DISK, 0x70).write(MiB, 4096, 0x11))
    other = iot.create("8M", name="base.vhd")
    edit_footer(iot, other.path, uuid=bytes([0x22]) * 16)
    iot.img(["check", "-f", iot.fmt], child)
    iot.img(["check", "--image-opts",
             f"driver=vpc,check_parent=off,file.filename={child.path}"])
