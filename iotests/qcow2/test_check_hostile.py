"""qcow2 check on hostile tables (pointing at themselves or at other metadata, sizes at
their limits, refcounts that overflow) and on damaged internal snapshots: 7.2's verdict
and repair, in bounded time and memory, with the image's digest before and after the
read-only checks and the data read back by real QEMU (by="qemu"). Among them, repairs
that end in a fatal corruption (a metadata write the overlap check refuses): 7.2 marks
the image corrupt and drops the refcount fixes it held in its refblock cache, so the
next check still sees the old counts.

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
    """Checks that must leave the image as it was (the digest itself is not logged:
    snapshot entries carry the time they were taken)."""
    before = digest(img)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.log("image unchanged" if digest(img) == before else "IMAGE CHANGED")


def _repair(iot, img, mode="all"):
    iot.img(["check", "-f", iot.fmt, "-r", mode], img)
    iot.img(["check", "-f", iot.fmt], img)


@formats("qcow2")
def test_check_reftable_points_at_itself(iot):
    img = _image(iot)
    c = iot.corrupt(img)
    c.reftable(0, c.fields()["refcount_table_offset"])
    _check_only(iot, img)
    _repair(iot, img)
    iot.io(img, "read -P 0x61 0 128k", by="qemu")


@formats("qcow2")
def test_check_l1_size_at_the_limit(iot):
    img = _image(iot)
    iot.corrupt(img).header(l1_size=0x2000000)
    _check_only(iot, img)
    iot.corrupt(img).header(l1_size=0x3FFFFFF)
    _check_only(iot, img)


@formats("qcow2")
def test_check_refcount_table_clusters_huge(iot):
    img = _image(iot)
    iot.corrupt(img).header(refcount_table_clusters=0x100000)
    _check_only(iot, img)
    iot.corrupt(img).header(refcount_table_clusters=0xFFFFFFFF)
    _check_only(iot, img)


@formats("qcow2")
def test_check_refcount_overflow(iot):
    """Eight L2 entries share one cluster in an image with 1-bit refcounts."""
    img = _image(iot, opts="refcount_bits=1", writes=("write -P 0x62 0 64k",))
    c = iot.corrupt(img)
    entry = c.l2_entry(0)
    for i in range(1, 8):
        c.l2(i * 65536, entry)
    _check_only(iot, img)
    _repair(iot, img)
    iot.io(img, "read -P 0x62 0 64k", by="qemu")


@formats("qcow2")
def test_check_snapshot_l1_table_unaligned(iot):
    img = _image(iot)
    iot.img(["snapshot", "-c", "snap"], img)
    c = iot.corrupt(img)
    c.snapshot(0, l1_table_offset=c.snapshot_entry(0)["l1_table_offset"] + 0x200)
    _check_only(iot, img)
    _repair(iot, img)


@formats("qcow2")
def test_check_snapshot_l1_size_too_large(iot):
    img = _image(iot)
    iot.img(["snapshot", "-c", "snap"], img)
    iot.corrupt(img).snapshot(0, l1_size=0x4000000)
    _check_only(iot, img)
    iot.corrupt(img).snapshot(0, l1_size=0x2000)
    _check_only(iot, img)


@formats("qcow2")
def test_check_snapshot_l2_entries_damaged(iot):
    """The snapshot's L1 table: one entry unaligned, one past the end of the file."""
    img = _image(iot, writes=("write -P 0x63 0 64k", "write -P 0x64 1G 64k"), size="2G")
    iot.img(["snapshot", "-c", "snap"], img)
    c = iot.corrupt(img)
    l2 = c.l1_entry(0) & ~COPIED
    c.snapshot_l1(0, 0, l2 + 0x200)
    c.snapshot_l1(0, 2, 0x40000000000)
    _check_only(iot, img)
    _repair(iot, img)
    iot.io(img, "read -P 0x63 0 64k", by="qemu")
    iot.io(img, "read -P 0x64 1G 64k", by="qemu")


@formats("qcow2")
def test_check_snapshot_shared_cluster_refcount_low(iot):
    """A cluster the snapshot shares with the active layer has refcount 1 (needs 2)."""
    img = _image(iot)
    iot.img(["snapshot", "-c", "snap"], img)
    c = iot.corrupt(img)
    cluster = (c.l2_entry(0) & 0x00FFFFFFFFFFFE00) >> 16
    c.refcount(cluster=cluster, value=1)
    _check_only(iot, img)
    _repair(iot, img)
    iot.io(img, "write -P 0x65 0 64k", by="qemu")
    iot.img(["snapshot", "-a", "snap"], img, by="qemu")
    iot.io(img, "read -P 0x61 0 128k", by="qemu")
    iot.img(["check", "-f", iot.fmt], img, by="qemu")


@formats("qcow2")
def test_check_snapshot_table_entry_count_wrong(iot):
    """nb_snapshots says two, the table holds one."""
    img = _image(iot)
    iot.img(["snapshot", "-c", "snap"], img)
    iot.corrupt(img).header(nb_snapshots=2)
    _check_only(iot, img)


@formats("qcow2")
def test_check_snapshot_too_much_extra_data(iot):
    """2000 bytes of extra data: the image does not open; check -r all cuts it to 1 KiB
    (which shifts what the next entry is read from) and rewrites the table."""
    img = _image(iot)
    iot.img(["snapshot", "-c", "s1"], img)
    iot.img(["snapshot", "-c", "s2"], img)
    iot.corrupt(img).snapshot(0, extra_data_size=2000)
    iot.io(img, "read -P 0x61 0 128k")
    _check_only(iot, img)
    iot.img(["check", "-f", iot.fmt, "-r", "leaks"], img)
    _repair(iot, img)
    iot.img(["snapshot", "-a", "s1"], img, by="qemu")
    iot.io(img, "read -P 0x61 0 128k", by="qemu")


@formats("qcow2")
def test_check_snapshot_entry_without_extra_data(iot):
    """A v3 entry needs 16 bytes of extra data; one with 8 is incomplete."""
    img = _image(iot)
    iot.img(["snapshot", "-c", "s1"], img)
    iot.img(["snapshot", "-c", "s2"], img)
    iot.corrupt(img).snapshot(1, extra_data_size=8)
    _check_only(iot, img)
    _repair(iot, img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img, by="qemu")


@formats("qcow2")
def test_check_snapshot_table_pointer_invalid(iot):
    img = _image(iot)
    iot.img(["snapshot", "-c", "s1"], img)
    c = iot.corrupt(img)
    table = c.fields()["snapshots_offset"]
    c.header(snapshots_offset=table + 0x200)
    _check_only(iot, img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)
    c.header(snapshots_offset=table, nb_snapshots=70000)
    _check_only(iot, img)


# -- repairs ending in a fatal corruption ---------------------------------------------
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
