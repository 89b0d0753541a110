"""detect-zeroes: all-zero writes become zero writes (on) that may unmap (unmap), so
the image's allocation matches QEMU's; bad values are refused at open."""

from harness import formats


def _io(iot, img, cmds, opts):
    argv = ["qemu-io", "--image-opts"]
    for c in cmds:
        argv += ["-c", c]
    iot.run(argv + [f"driver={iot.fmt},file.filename={img.path},{opts}"])


@formats("raw", "qcow2")
def test_detect_zeroes_on_and_unmap(iot):
    cmds = ["write -P 0x11 0 1M", "write -P 0 0 64k", "write -P 0 65000 1000",
            "write -P 0 128k 4k", "write -z 256k 64k", "write -P 0 512k 128k"]
    for mode in ("on", "unmap"):
        img = iot.create("1M", name=f"{mode}.img")
        _io(iot, img, cmds, f"detect-zeroes={mode}")
        iot.img(["map", "-f", iot.fmt, "--output=json"], img)
        iot.io(img, ["read -P 0 0 64k", "read -P 0 65000 1000", "read -P 0x11 66000 65072",
                     "read -P 0 512k 128k", "read -P 0x11 640k 384k"], by="qemu")


@formats("raw", "qcow2")
def test_detect_zeroes_bad_values(iot):
    img = iot.create("1M")
    _io(iot, img, ["write -P 0 0 64k"], "detect-zeroes=foo")
    _io(iot, img, ["write -P 0 0 64k"], "detect-zeroes=unmap,discard=ignore")
    _io(iot, img, ["write -P 0 0 64k"], "detect-zeroes=off")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
