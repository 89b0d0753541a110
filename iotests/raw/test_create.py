"""qemu-img create, info and map on sparse and fully allocated raw images."""

from harness import formats


@formats("raw")
def test_create_sparse(iot):
    img = iot.create("64M")
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.img(["map", "-f", iot.fmt], img)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
