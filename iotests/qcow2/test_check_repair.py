"""qcow2 check and repair: a corruption (harness.corrupt, logged), the check before,
the repair (-r leaks and/or -r all), the check after (human and JSON), and the guest
data read back by real QEMU (by="qemu"), so a bdrv repair is judged by qemu-io.

References come from qemu-img/qemu-io 7.2 (--backend qemu --regen).
"""

import pytest

from harness import formats

pytestmark = pytest.mark.img

COPIED = 1 << 63
ZERO = 1


def _image(iot, size="64M", opts=None, writes=("write -P 0x11 0 256k",)):
    img = iot.create(size, opts=opts)
    for w in writes:
        iot.io(img, w)
    return img


def _check_repair(iot, img, modes=("all",)):
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    for mode in modes:
        iot.img(["check", "-f", iot.fmt, "-r", mode], img)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)


@formats("qcow2")
def test_check_clean(iot):
    img = _image(iot, writes=("write -P 0x11 0 64k", "write -c -P 0x22 1M 64k",
                              "write -P 0x33 4M 64k", "write -z 8M 64k"))
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt, "-q"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)
    iot.img(["check", "-U", "-f", iot.fmt], img)


@formats("qcow2")
def test_check_leak_repaired_by_r_leaks(iot):
    img = _image(iot)
    iot.corrupt(img).refcount(cluster=9, value=1)
    _check_repair(iot, img, ("leaks",))
    iot.io(img, "read -P 0x11 0 256k", by="qemu")


@formats("qcow2")
def test_check_many_leaks_json(iot):
    img = _image(iot, writes=("write -P 0x12 0 1M",))
    c = iot.corrupt(img)
    for cluster in range(30, 36):
        c.refcount(cluster=cluster, value=2)
    iot.img(["check", "-f", iot.fmt, "--output=json", "-r", "leaks"], img)
    iot.img(["check", "-f", iot.fmt], img)
    iot.io(img, "read -P 0x12 0 1M", by="qemu")


@formats("qcow2")
def test_check_raised_refcount_is_a_leak(iot):
    img = _image(iot)
    iot.corrupt(img).refcount(cluster=4, value=3)
    _check_repair(iot, img, ("leaks",))
    iot.io(img, "read -P 0x11 0 256k", by="qemu")


@formats("qcow2")
def test_check_refcount_zero_rebuilds(iot):
    img = _image(iot)
    iot.corrupt(img).refcount(cluster=5, value=0)
    iot.img(["check", "-f", iot.fmt, "-r", "leaks"], img)
    _check_repair(iot, img)
    iot.io(img, "read -P 0x11 0 256k", by="qemu")


@formats("qcow2")
def test_check_refcount_below_references(iot):
    img = _image(iot, writes=("write -P 0x21 0 128k",))
    iot.img(["snapshot", "-c", "snap"], img)
    iot.corrupt(img).refcount(cluster=5, value=1)
    _check_repair(iot, img)
    iot.io(img, "read -P 0x21 0 128k", by="qemu")


@formats("qcow2")
def test_check_oflag_copied_l2(iot):
    img = _image(iot, writes=("write -P 0x31 0 64k",))
    c = iot.corrupt(img)
    c.l2(0, c.l2_entry(0) & ~COPIED)
    _check_repair(iot, img, ("leaks", "all"))
    iot.io(img, "read -P 0x31 0 64k", by="qemu")


@formats("qcow2")
def test_check_oflag_copied_l1(iot):
    img = _image(iot, writes=("write -P 0x32 0 64k",))
    c = iot.corrupt(img)
    c.l1(0, c.l1_entry(0) & ~COPIED)
    _check_repair(iot, img)
    iot.io(img, "read -P 0x32 0 64k", by="qemu")


@formats("qcow2")
def test_check_oflag_copied_on_shared_cluster(iot):
    img = _image(iot, writes=("write -P 0x33 0 64k",))
    iot.img(["snapshot", "-c", "snap"], img)
    c = iot.corrupt(img)
    c.l2(0, c.l2_entry(0) | COPIED)
    _check_repair(iot, img)
    iot.io(img, "read -P 0x33 0 64k", by="qemu")


@formats("qcow2")
def test_check_unaligned_data_cluster(iot):
    img = _image(iot, writes=("write -P 0x41 0 64k", "write -P 0x42 64k 64k"))
    c = iot.corrupt(img)
    c.l2(65536, c.l2_entry(65536) + 0x200)
    _check_repair(iot, img)
    iot.io(img, "read -P 0x41 0 64k", by="qemu")


@formats("qcow2")
def test_check_unaligned_preallocated_zero_cluster(iot):
    img = _image(iot, writes=("write -P 0x43 0 64k", "write -z 64k 64k"))
    c = iot.corrupt(img)
    c.l2(65536, (c.l2_entry(0) + 0x200) | ZERO)
    _check_repair(iot, img)
    iot.io(img, "read -P 0x43 0 64k", by="qemu")
    iot.io(img, "read -P 0 64k 64k", by="qemu")


@formats("qcow2")
def test_check_l1_entry_unaligned_and_reserved(iot):
    img = _image(iot, writes=("write -P 0x51 0 64k",))
    c = iot.corrupt(img)
    c.l1(0, c.l1_entry(0) | 1)
    iot.img(["check", "-f", iot.fmt], img)
    c.l1(0, (c.l1_entry(0) & ~1) + 0x200)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)


@formats("qcow2")
def test_check_entries_beyond_end_of_file(iot):
    img = _image(iot, size="8G", writes=("write -P 0x52 0 64k",))
    c = iot.corrupt(img)
    c.l1(1, COPIED | (1000 << 16))
    c.l2(131072, COPIED | (100 << 16))
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)


@formats("qcow2")
def test_check_reftable_entry_outside_image(iot):
    img = _image(iot, writes=("write -P 0x53 0 64k",))
    iot.corrupt(img).reftable(1, 50 << 16)
    _check_repair(iot, img)
    iot.io(img, "read -P 0x53 0 64k", by="qemu")


@formats("qcow2")
def test_check_reftable_entry_unaligned(iot):
    img = _image(iot, writes=("write -P 0x54 0 64k",))
    c = iot.corrupt(img)
    c.reftable(0, c.reftable_entry(0) + 0x200)
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)


@formats("qcow2")
def test_check_metadata_overlap(iot):
    img = _image(iot, writes=("write -P 0x55 0 64k", "write -P 0x56 64k 64k"))
    c = iot.corrupt(img)
    c.l2(65536, COPIED | (c.reftable_entry(0) & ~0x1FF))
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.img(["check", "-f", iot.fmt, "-r", "all"], img)


@formats("qcow2")
def test_check_compressed_descriptor_out_of_range(iot):
    img = _image(iot, writes=("write -c -P 0x57 0 64k",))
    c = iot.corrupt(img)
    c.l2(0, c.l2_entry(0) | COPIED)
    c.l2(65536, (1 << 62) | (200 << 16))
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)


@formats("qcow2")
def test_check_truncated_image(iot):
    img = _image(iot)
    c = iot.corrupt(img)
    c.truncate(c.size() - 3 * 65536)
    _check_repair(iot, img)


@formats("qcow2")
def test_check_small_clusters_leak(iot):
    img = _image(iot, size="4M", opts="cluster_size=512", writes=("write -P 0x58 0 64k",))
    iot.corrupt(img).refcount(cluster=200, value=1)
    _check_repair(iot, img, ("leaks",))
    iot.io(img, "read -P 0x58 0 64k", by="qemu")


@formats("qcow2")
def test_check_dirty_image_repaired_on_open(iot):
    img = _image(iot, opts="lazy_refcounts=on", writes=("write -P 0x59 0 128k",))
    c = iot.corrupt(img)
    c.header(incompatible_features=1)
    c.refcount(cluster=4, value=0)
    iot.log("--- read-only open: no repair ---")
    iot.io(img, "read -P 0x59 0 128k", opts="-r")
    iot.img(["check", "-f", iot.fmt], img)
    iot.log("--- read-write open: repaired first ---")
    iot.io(img, "read -P 0x59 0 128k")
    iot.img(["check", "-f", iot.fmt, "--output=json"], img)
    iot.io(img, "read -P 0x59 0 128k", by="qemu")
