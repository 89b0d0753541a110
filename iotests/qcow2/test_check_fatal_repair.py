"""qcow2 check -r all on images whose repair ends in a fatal corruption (a metadata
write the overlap check refuses): 7.2 marks the image corrupt and drops the refcount
fixes it held in its refblock cache, so the next check still sees the old counts.

References come from qemu-img/qemu-io 7.2 (--backend qemu --regen).
"""

import pytest

from harness import formats
from harness.corrupt import digest

pytestmark = pytest.mark.img

COPIED = 1 << 63


def _image(iot, size="64M", opts=None, writes=("write -P 0x61 0 128k",)):
    img = iot.create(size, opts=opts)
    for w in writes:
        iot.io(img, w)
    return img


def _check_only(iot, img):
    """Checks that must leave the image as it was."""
    before = digest(img)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.log("image unchanged" if digest(img) == before else "IMAGE CHANGED")


def _repair(iot, img, mode="all"):
    iot.img(["check", "-f", iot.fmt, "-r", mode], img)
    iot.img(["check", "-f", iot.fmt], img)


@formats("qcow2")
def test_check_l1_entry_points_at_l1_table(iot):
    img = _image(iot)
    c = iot.corrupt(img)
    c.l1(0, COPIED | c.fields()["l1_table_offset"])
    _check_only(iot, img)
    _repair(iot, img)
    iot.img(["check", "-f", iot.fmt], img, by="qemu")


@formats("qcow2")
def test_check_l1_entry_points_at_header(iot):
    img = _image(iot)
    c = iot.corrupt(img)
    c.l1(0, COPIED | 0x200)
    _check_only(iot, img)
    _repair(iot, img)


@formats("qcow2")
def test_check_l1_table_larger_than_file(iot):
    """32 MiB of L1 table in a file of 448 KiB: past the real table it reads the L2
    table, data clusters of zeros, then the zeros past the end of the file."""
    img = _image(iot, writes=("write -P 0 0 128k",))
    iot.corrupt(img).header(l1_size=0x400000)
    _check_only(iot, img)
    _repair(iot, img)
