"""Image locking between a running qemu-io and other tools, across implementations.

Each test holds the image in an interactive session on one implementation and runs the
contender on the other one, then swaps roles; on the bdrv backend that checks bdrv
against QEMU in both directions (on the qemu backend both sides are QEMU).

For raw images a read-write qemu-io shares every permission, so another writer may open
the image; what it refuses is a tool that needs nobody else writing (the source of
`qemu-img convert`), and a raw node with a fixed `size` refuses resizes.
"""

import pytest

from harness import formats

pytestmark = pytest.mark.locking


def _contend_convert(iot, img, by=None):
    out = iot.path("copy.img")
    iot.img(["convert", "-f", iot.fmt, "-O", "raw"], img, out, by=by)
    iot.log(f"copy exists: {out.exists()}")
    iot.img(["convert", "-U", "-f", iot.fmt, "-O", "raw"], img, out, by=by)
    iot.img(["compare", "-U", "-f", iot.fmt, "-F", "raw"], img, out, by=by)
    out.unlink(missing_ok=True)


@formats("raw")
def test_lock_convert_source(iot):
    img = iot.create("1M")
    iot.log("=== qemu-io (QEMU) holds the image; the backend under test converts it ===")
    s = iot.interactive(img, by="qemu")
    s.cmd("write -P 0x5a 0 64k")
    _contend_convert(iot, img)
    s.close()
    iot.log("=== qemu-io (backend under test) holds it; QEMU converts it ===")
    s = iot.interactive(img)
    s.cmd("write -P 0xa5 0 64k")
    _contend_convert(iot, img, by="qemu")
    s.close()
    iot.log("=== released: convert works again ===")
    iot.img(["convert", "-f", iot.fmt, "-O", "raw"], img, iot.path("copy.img"))
    iot.io(iot.path("copy.img"), "read -P 0xa5 0 64k", fmt="raw", by="qemu")


def _readers_and_writers(iot, img, by=None):
    iot.io(img, "read -P 0x11 0 4k", opts="-r -U", by=by)
    iot.io(img, "read -P 0x11 0 4k", opts="-U", by=by)
    iot.io(img, "read -P 0x11 0 4k", opts="-r", by=by)
    iot.io(img, "write -P 0x22 4k 4k", by=by)


@formats("raw")
def test_lock_shared_access(iot):
    img = iot.create("1M")
    iot.io(img, "write -P 0x11 0 4k")
    iot.log("=== held by QEMU ===")
    s = iot.interactive(img, by="qemu")
    _readers_and_writers(iot, img)
    s.cmd("read -P 0x22 4k 4k")
    s.close()
    iot.log("=== held by the backend under test ===")
    s = iot.interactive(img)
    _readers_and_writers(iot, img, by="qemu")
    s.cmd("read -P 0x22 4k 4k")
    s.close()


@formats("raw")
def test_lock_fixed_size_refuses_resize(iot):
    img = iot.create("1M")
    opts = ["--image-opts"]
    spec = f"driver={iot.fmt},size=1048576,file.filename={img.path}"
    iot.log("=== QEMU holds the image through a node with a fixed size ===")
    s = iot.interactive(spec, opts=opts, fmt="", by="qemu")
    iot.img(["resize", "-f", iot.fmt], img, "2M")
    iot.img(["resize", "-U", "-f", iot.fmt], img, "2M")
    s.close()
    iot.log("=== the backend under test holds it ===")
    s = iot.interactive(spec, opts=opts, fmt="")
    iot.img(["resize", "-f", iot.fmt], img, "2M", by="qemu")
    s.close()
    iot.img(["resize", "-f", iot.fmt], img, "2M")
    iot.img(["info", "-f", iot.fmt], img)
