"""qemu-img create -f vpc: dynamic and fixed images, sizes, the CHS rule, force_size."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


@formats("vpc")
def test_create_dynamic(iot):
    img = iot.create("64M")
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.img(["map", "-f", iot.fmt], img)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.log(f"file size: {img.path.stat().st_size}")


@formats("vpc")
def test_create_fixed(iot):
    img = iot.create("16M", opts="subformat=fixed")
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.log(f"file size: {img.path.stat().st_size}")


@formats("vpc")
def test_create_sizes_chs(iot):
    # Sizes are rounded up to what the CHS geometry can express (and shown as such).
    for size in ["0", "512", "1M", "10M", "100M", "1000M", "4G", "127G", "130G"]:
        img = iot.create(size)
        iot.img(["info", "-f", iot.fmt, "--output=json"], img)
        iot.log(f"file size: {img.path.stat().st_size}")
        img.path.unlink()


@formats("vpc")
def test_create_force_size(iot):
    for opts in ["force_size=on", "force_size=off", "force_size=on,subformat=fixed"]:
        img = iot.create("10000k", opts=opts)
        iot.img(["info", "-f", iot.fmt], img)
        iot.log(f"file size: {img.path.stat().st_size}")
        img.path.unlink()


@formats("vpc")
def test_create_fixed_sizes(iot):
    # Fixed images are rounded to CHS sizes too (up to the 2040 GiB maximum).
    for size in ["1000001k", "3M", "2040G"]:
        iot.create(size, opts="subformat=fixed")
        iot.img(["info", "-f", iot.fmt], iot.image())
        iot.image().path.unlink(missing_ok=True)


@formats("vpc")
def test_create_too_large(iot):
    iot.create("2041G")
    iot.create("2041G", opts="force_size=on")
    iot.create("4T", opts="subformat=fixed,force_size=on")


@formats("vpc")
def test_create_bad_options(iot):
    iot.create("1M", opts="subformat=bogus")
    iot.create("1M", opts="force_size=maybe")
    iot.create("1M", opts="cluster_size=4k")
    iot.create("1M", opts="subformat=fixed,preallocation=full")
    iot.create(None)
    iot.create("1M", opts="backing_fmt=vpc")


@formats("vpc")
def test_create_help(iot):
    iot.img(["create", "-f", iot.fmt, "-o", "help"])
    iot.img(["create", "-f", iot.fmt, "-o", "help", str(iot.image().path)])
    iot.img(["create", "-f", iot.fmt, "-o", "?"])
