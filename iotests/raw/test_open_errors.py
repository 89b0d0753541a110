"""Opening what is not there or not an image: missing files, directories, bad formats."""

from harness import formats


@formats("raw")
def test_missing_file(iot):
    img = iot.image("missing.img")
    for args in (["info"], ["info", "-f", iot.fmt], ["info", "--output=json"],
                 ["map", "-f", iot.fmt], ["check", "-f", iot.fmt],
                 ["resize", "-f", iot.fmt, str(img.path), "2M"]):
        iot.img(args, *([] if "resize" in args else [img]))
    iot.img(["compare", "-f", iot.fmt, "-F", iot.fmt], img, img)
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt], img, iot.path("out.img"))
    iot.log(f"out.img exists: {iot.path('out.img').exists()}")
    iot.io(img, "read 0 512")
    iot.io(img, "read 0 512", opts="-r")
    iot.io(iot.path("nodir/x.img"), "read 0 512")
    iot.log(f"missing.img exists: {img.path.exists()}")


@formats("raw")
def test_directory_instead_of_file(iot):
    d = iot.path("dir")
    d.mkdir()
    iot.img(["info"], d)
    iot.img(["info", "-f", iot.fmt], d)
    iot.img(["map", "-f", iot.fmt], d)
    iot.img(["check", "-f", iot.fmt], d)
    iot.io(d, "read 0 512")
    iot.io(d, "read 0 512", opts="-r")
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt], d, iot.path("out.img"))
    img = iot.create("1M")
    iot.img(["convert", "-f", iot.fmt, "-O", iot.fmt], img, d)
    iot.log(f"dir is still a directory: {d.is_dir()}")


@formats("raw")
def test_unknown_format(iot):
    img = iot.create("1M")
    iot.img(["info", "-f", "foo"], img)
    iot.img(["map", "-f", "foo"], img)
    iot.img(["check", "-f", "foo"], img)
    iot.img(["compare", "-f", "foo"], img, img)
    iot.img(["compare", "-F", "foo"], img, img)
    iot.img(["convert", "-f", iot.fmt, "-O", "foo"], img, iot.path("out.img"))
    iot.img(["convert", "-f", "foo", "-O", iot.fmt], img, iot.path("out.img"))
    iot.log(f"out.img exists: {iot.path('out.img').exists()}")
    iot.img(["resize", "-f", "foo"], img, "2M")
    iot.io(img, "read 0 512", fmt="foo")
    iot.io(img, "read 0 512", fmt="qcow2")
    iot.img(["info", "-f", "qcow2"], img)
    iot.log("=== the image is untouched ===")
    iot.img(["info", "-f", iot.fmt], img)


@formats("raw")
def test_bad_tool_options(iot):
    img = iot.create("1M")
    iot.img(["info", "--bogus"], img)
    iot.img(["info", "--output=xml"], img)
    iot.img(["map", "--output=yaml", "-f", iot.fmt], img)
    iot.img(["nosuchcommand"], img)
    iot.img([])
    iot.io(img, "read 0 512", opts="--bogus")
    iot.io(img, "read 0 512", opts="-t bogus")
    iot.io(img, [], opts="-c")
    iot.io(None, "read 0 512")
