"""qemu-img create with bad sizes, bad options and unknown formats.

After each failure the test records whether a file was left behind: QEMU creates the
file before it finds out that the size is too large for it, and leaves it empty.
"""

from harness import formats


def _leftover(iot, img):
    if img.path.exists():
        iot.log(f"left behind: {img.path.name}, {img.path.stat().st_size} bytes")
        img.path.unlink()
    else:
        iot.log("nothing created")


@formats("raw")
def test_create_bad_sizes(iot):
    img = iot.image()
    for size in ["12foo", "-1", "1.5", "0.1", "1k5", "1kk", "1 k", "1e3", "0x1.8k", "",
                 "18446744073709551615", "9223372036854775808", "1.5P", "1E",
                 "9223372036854775807"]:
        iot.img(["create", "-f", iot.fmt], img, size)
        _leftover(iot, img)
    iot.log("=== sizes through -o ===")
    for opt in ["size=12foo", "size=-1", "size="]:
        iot.img(["create", "-f", iot.fmt, "-o", opt], img)
        _leftover(iot, img)
    iot.log("=== no size at all ===")
    iot.img(["create", "-f", iot.fmt], img)
    _leftover(iot, img)


@formats("raw")
def test_create_bad_options(iot):
    img = iot.image()
    for opt in ["foo=bar", "preallocation=bogus", "size=1M,foo", "cluster_size=64k"]:
        iot.img(["create", "-f", iot.fmt, "-o", opt], img, "1M")
        _leftover(iot, img)
    iot.log("=== option help ===")
    iot.img(["create", "-f", iot.fmt, "-o", "help"])
    iot.img(["create", "-f", iot.fmt, "-o", "?"])
    iot.log("=== unknown format, missing file name, unknown flag ===")
    iot.img("create -f foo", img, "1M")
    _leftover(iot, img)
    iot.img(["create", "-f", iot.fmt])
    iot.img(["create", "-f", iot.fmt, "--bogus"], img, "1M")
    _leftover(iot, img)
    iot.img(["create", "-f", iot.fmt], img, "1M", "extra")
    _leftover(iot, img)
    iot.log("=== creating over a directory ===")
    iot.path("d").mkdir()
    iot.img(["create", "-f", iot.fmt], iot.path("d"), "1M")
