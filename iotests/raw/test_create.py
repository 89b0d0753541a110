"""qemu-img create, info and map on sparse and fully allocated raw images."""

from harness import formats


@formats("raw")
def test_create_sparse(iot):
    img = iot.create("64M")
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.img(["map", "-f", iot.fmt], img)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)


@formats("raw")
def test_create_full(iot):
    img = iot.create("1M", opts="preallocation=full")
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.img(["map", "-f", iot.fmt], img)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.io(img, ["read -P 0 0 1M", "alloc 0 1M", "map"])


@formats("raw")
def test_create_sizes(iot):
    # Suffixes, fractions (rounded up to whole bytes, the file to whole sectors), hex,
    # and sizes whose human form needs rounding ("100.5k" is shown as 100 KiB).
    for size in ["0", "512", "513", "1000", "512b", "1K", "1.5k", "1.1k", "100.5k",
                 "0.5M", "+1M", "0x1000", "1.5G", "2T"]:
        img = iot.create(size)
        iot.img(["info", "-f", iot.fmt], img)
        iot.log(f"file size: {img.path.stat().st_size}")
        img.path.unlink()
    iot.log("=== size given as an option ===")
    img = iot.create(None, opts="size=64k")
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
