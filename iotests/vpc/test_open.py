"""Probing, force_size_calc, the CHS-or-current_size rule, resize, check on 7.2's terms."""

import sys
from pathlib import Path

from harness import formats

sys.path.insert(0, str(Path(__file__).parent))
from vhd_edit import FIXTURES, edit_footer  # noqa: E402


@formats("vpc")
def test_probe(iot):
    img = iot.create("4M")
    iot.img(["info"], img)
    iot.io(img, ["write -P 9 0 4k", "read -P 9 0 4k"], fmt="")
    fixed = iot.create("1M", name="f.vpc", opts="subformat=fixed")
    # A fixed VHD has no header at offset 0: it probes as raw.
    iot.img(["info"], fixed)


@formats("vpc")
def test_force_size_calc(iot):
    img = iot.create("10000k", opts="force_size=on")
    path = str(img.path)
    for mode in ["chs", "current_size", "bogus"]:
        iot.img(["info", "--image-opts",
                 f"driver=vpc,force_size_calc={mode},file.filename={path}"])
    iot.io(None, ["open -o driver=vpc,force_size_calc=chs " + path, "length"])


@formats("vpc")
def test_geometry_rule(iot):
    # The virtual size comes from CHS geometry or from current_size by creator app.
    # 10000k is stored as CHS 295/4/17 (10270720 bytes); current_size says 10240000.
    img = iot.create("10000k")
    edit_footer(iot, img.path, current_size=10240000)
    for creator in [b"qemu", b"qem2", b"win ", b"vpc ", b"vs  ", b"d2v ", b"tap\0",
                    b"xxxx"]:
        edit_footer(iot, img.path, creator_app=creator)
        iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.log("=== forced either way ===")
    for mode in ["chs", "current_size"]:
        iot.img(["info", "--output=json", "--image-opts",
                 f"driver=vpc,force_size_calc={mode},file.filename={img.path}"])


@formats("vpc")
def test_resize_unsupported(iot):
    img = iot.create("4M")
    iot.img(["resize", "-f", iot.fmt, str(img), "8M"])
    iot.img(["resize", "-f", iot.fmt, "--shrink", str(img), "2M"])
    fixed = iot.create("4M", name="f.vpc", opts="subformat=fixed")
    iot.img(["resize", "-f", iot.fmt, str(fixed), "+1M"])


@formats("vpc")
def test_third_party_images(iot):
    if not FIXTURES.is_dir():
        iot.notrun(f"third-party VHD fixtures not found at {FIXTURES}")
    import bz2
    import shutil

    # Dynamic images by Windows, Virtual PC, Hyper-V, XenServer, QEMU (7.2 reads these).
    for name in ["win8.vhd", "win8.1-1GB.vhd", "qemu.vhd", "xapi.vhd",
                 "virtualpc-dynamic.vhd.bz2", "hyperv2012r2-dynamic.vhd.bz2"]:
        src = FIXTURES / name
        dst = iot.path(name.removesuffix(".bz2"))
        if name.endswith(".bz2"):
            dst.write_bytes(bz2.decompress(src.read_bytes()))
        else:
            shutil.copyfile(src, dst)
        iot.img(["info", "-f", iot.fmt, "--output=json"], dst)
        iot.img(["map", "-f", iot.fmt, "--output=json"], dst)
        iot.io(dst, ["read -P 0 0 64k"])
