"""qemu-img check on raw: the format has no checker (exit 63), whatever the options."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


@formats("raw")
def test_check_unsupported(iot):
    img = iot.create("1M")
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "leaks"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)
    iot.img(["check", "-f", iot.fmt, "-q"], img)
    iot.img(["check", "-U", "-f", iot.fmt], img)
    iot.img(["check"], img)
    iot.log("=== bad arguments ===")
    iot.img(["check", "-f", iot.fmt, "-r", "bogus"], img)
    iot.img(["check", "-f", iot.fmt, "--output=bogus"], img)
    iot.img(["check", "-f", iot.fmt])
