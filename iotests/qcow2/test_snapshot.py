"""qcow2 internal snapshots: qemu-img snapshot -c/-l/-a/-d, info's snapshot list,
convert -l, and qemu-io's vm-state area (read -b / write -b).

A snapshot's date comes from the clock: the log shows it as yyyy-mm-dd hh:mm:ss, and
JSON's date-sec/date-nsec as DATE_SEC/DATE_NSEC (as iotests' _filter_date does).
Images are logged as SHA-256 sums with those 8 bytes of each snapshot table entry
zeroed, so both implementations must write the very same bytes everywhere else.
Interop steps are pinned with by=: a snapshot made by one implementation is applied or
deleted by the other, and `qemu-img check` (always QEMU's) runs after each change.
"""

import hashlib
import re
import struct

import pytest

from harness import formats

pytestmark = pytest.mark.img

_DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_JSON_DATE = re.compile(r'"date-(n?)sec": \d+')


def _filter_dates(iot):
    def apply(text):
        text = _DATE.sub("yyyy-mm-dd hh:mm:ss", text)
        return _JSON_DATE.sub(lambda m: f'"date-{m.group(1)}sec": DATE_{m.group(1).upper()}SEC',
                              text)

    iot.add_filter(apply)


def _sum(iot, img):
    """SHA-256 of the image with each snapshot entry's date_sec/date_nsec zeroed."""
    data = bytearray(img.path.read_bytes())
    nb, pos = struct.unpack(">IQ", data[60:72])
    for _ in range(nb):
        pos = -(-pos // 8) * 8
        id_len, name_len = struct.unpack(">HH", data[pos + 12 : pos + 16])
        extra = struct.unpack(">I", data[pos + 36 : pos + 40])[0]
        data[pos + 16 : pos + 24] = bytes(8)
        pos += 40 + extra + id_len + name_len
    iot.log(f"sha256 (dates masked) {img.path.name}: {hashlib.sha256(data).hexdigest()} "
            f"({len(data)} bytes)")


def _check(iot, img):
    iot.img(["check", "-f", iot.fmt], img, by="qemu")


def _setup(iot, size="4M", opts=None, by=None):
    _filter_dates(iot)
    img = iot.create(size, opts=opts, by=by)
    second = "768k" if size == "1M" else "1M"
    iot.io(img, ["write -P 0x11 0 128k", f"write -P 0x12 {second} 64k"], by=by)
    return img


@formats("qcow2")
def test_snapshot_create_and_list(iot):
    img = _setup(iot)
    iot.img(["snapshot", "-c", "first"], img)
    iot.io(img, ["write -P 0x21 64k 128k"])
    iot.img(["snapshot", "-c", "second"], img)
    iot.img(["snapshot", "-l"], img)
    iot.img(["snapshot", "-l", "-U"], img)
    iot.img(["info", "-f", iot.fmt], img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    _sum(iot, img)
    _check(iot, img)


@formats("qcow2")
def test_snapshot_apply_restores_data(iot):
    img = _setup(iot)
    iot.img(["snapshot", "-c", "before"], img)
    iot.io(img, ["write -P 0x31 0 256k", "write -z 1M 64k", "write -P 0x32 3M 4k"])
    iot.img(["snapshot", "-a", "before"], img)
    _sum(iot, img)
    _check(iot, img)
    iot.io(img, ["read -P 0x11 0 128k", "read -P 0 128k 128k", "read -P 0x12 1M 64k",
                 "read -P 0 3M 4k"])
    iot.io(img, ["read -P 0x11 0 128k", "read -P 0x12 1M 64k"], by="qemu")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)


@formats("qcow2")
def test_snapshot_delete_frees_clusters(iot):
    img = _setup(iot)
    iot.img(["snapshot", "-c", "s1"], img)
    iot.io(img, ["write -P 0x41 0 128k", "write -P 0x42 1M 64k"])
    _check(iot, img)
    iot.img(["snapshot", "-d", "s1"], img)
    _sum(iot, img)
    _check(iot, img)
    iot.img(["snapshot", "-l"], img)
    iot.io(img, ["read -P 0x41 0 128k", "read -P 0x42 1M 64k"], by="qemu")


@formats("qcow2")
def test_snapshot_writes_after_snapshot_copy_clusters(iot):
    """Clusters shared with a snapshot have refcount 2 and lose OFLAG_COPIED: a write
    goes to new clusters (the map shows new offsets) and the snapshot keeps the old."""
    img = _setup(iot)
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    iot.img(["snapshot", "-c", "s1"], img)
    iot.io(img, ["write -P 0x51 4k 4k", "write -P 0x52 1M 512"])
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    _sum(iot, img)
    _check(iot, img)
    iot.io(img, ["read -P 0x11 0 4k", "read -P 0x51 4k 4k", "read -P 0x11 8k 120k",
                 "read -P 0x52 1M 512", "read -P 0x12 1049088 65024"])
    iot.img(["convert", "-l", "s1", "-O", "raw"], img, iot.path("old.raw"))
    iot.io(iot.path("old.raw"), ["read -P 0x11 0 128k", "read -P 0x12 1M 64k"], fmt="raw",
           by="qemu")


@formats("qcow2")
def test_snapshot_made_by_qemu_applied_and_deleted(iot):
    img = _setup(iot, by="qemu")
    iot.img(["snapshot", "-c", "q1"], img, by="qemu")
    iot.io(img, ["write -P 0x61 0 64k"], by="qemu")
    iot.img(["snapshot", "-c", "q2"], img, by="qemu")
    iot.io(img, ["write -P 0x62 0 64k"], by="qemu")
    iot.img(["snapshot", "-a", "q1"], img)
    _check(iot, img)
    iot.io(img, ["read -P 0x11 0 128k"], by="qemu")
    iot.img(["snapshot", "-d", "q2"], img)
    _check(iot, img)
    iot.img(["snapshot", "-l"], img, by="qemu")
    _sum(iot, img)


@formats("qcow2")
def test_snapshot_made_by_bdrv_applied_and_deleted(iot):
    img = _setup(iot, by="bdrv")
    iot.img(["snapshot", "-c", "b1"], img, by="bdrv")
    iot.io(img, ["write -P 0x71 0 64k"], by="bdrv")
    iot.img(["snapshot", "-c", "b2"], img, by="bdrv")
    _check(iot, img)
    iot.img(["snapshot", "-l"], img)
    iot.img(["snapshot", "-a", "b1"], img)
    iot.io(img, ["read -P 0x11 0 128k"], by="bdrv")
    iot.img(["snapshot", "-d", "b1"], img)
    iot.img(["snapshot", "-d", "b2"], img, by="bdrv")
    _check(iot, img)
    _sum(iot, img)


@formats("qcow2")
def test_snapshot_name_clash(iot):
    """7.2 gives every snapshot a new id and lets names repeat; -d by name takes the
    first, -a looks at ids first and names second."""
    img = _setup(iot)
    iot.img(["snapshot", "-c", "same"], img)
    iot.io(img, ["write -P 0x81 0 64k"])
    iot.img(["snapshot", "-c", "same"], img)
    iot.img(["snapshot", "-c", "1"], img)
    iot.img(["snapshot", "-l"], img)
    iot.img(["snapshot", "-a", "1"], img)
    iot.io(img, ["read -P 0x11 0 128k"])
    iot.img(["snapshot", "-a", "same"], img)
    iot.io(img, ["read -P 0x11 0 128k"])
    iot.img(["snapshot", "-d", "same"], img)
    iot.img(["snapshot", "-l"], img)
    iot.img(["snapshot", "-d", "1"], img)
    iot.img(["snapshot", "-l"], img)
    _check(iot, img)
    _sum(iot, img)


@formats("qcow2")
def test_snapshot_ids_after_delete(iot):
    img = _setup(iot, size="1M")
    for name in ("a", "b", "c"):
        iot.img(["snapshot", "-c", name], img)
    iot.img(["snapshot", "-d", "b"], img)
    iot.img(["snapshot", "-c", "d"], img)
    iot.img(["snapshot", "-d", "d"], img)
    iot.img(["snapshot", "-d", "c"], img)
    iot.img(["snapshot", "-c", "e"], img)
    iot.img(["snapshot", "-l"], img)
    _sum(iot, img)


@formats("qcow2")
def test_snapshot_apply_missing(iot):
    img = _setup(iot, size="1M")
    iot.img(["snapshot", "-a", "nothere"], img)
    iot.img(["snapshot", "-c", "s"], img)
    iot.img(["snapshot", "-a", "2"], img)
    iot.img(["snapshot", "-a", ""], img)
    iot.img(["snapshot", "-a", "s"], img)
    _check(iot, img)


@formats("qcow2")
def test_snapshot_delete_missing(iot):
    img = _setup(iot, size="1M")
    iot.img(["snapshot", "-d", "nothere"], img)
    iot.img(["snapshot", "-c", "s"], img)
    iot.img(["snapshot", "-d", "1"], img)
    iot.img(["snapshot", "-d", "s"], img)
    iot.img(["snapshot", "-d", "s"], img)
    _check(iot, img)


@formats("qcow2")
def test_snapshot_option_errors(iot):
    img = _setup(iot, size="1M")
    iot.img(["snapshot", "-l", "-c", "x"], img)
    iot.img(["snapshot", "-a", "x", "-d", "y"], img)
    iot.img(["snapshot", "-c"])
    iot.img(["snapshot", "-l"])
    iot.img(["snapshot", "-l"], img, img)
    iot.img(["snapshot", "-z"], img)
    iot.img(["snapshot", "-U", "-c", "x"], img)
    iot.img(["snapshot"], img)
    iot.img(["snapshot", "-l", "-f", "raw"], img)
    iot.img(["snapshot", "-l"], iot.path("missing.qcow2"))


@formats("qcow2")
def test_snapshot_convert_l(iot):
    img = _setup(iot, size="2M")
    iot.img(["snapshot", "-c", "old"], img)
    iot.io(img, ["write -P 0x91 0 2M"])
    for spec in ("old", "1", "snapshot.name=old", "snapshot.id=1",
                 "snapshot.id=1,snapshot.name=old"):
        out = iot.path("out.raw")
        iot.img(["convert", "-l", spec, "-O", "raw"], img, out)
        iot.io(out, ["read -P 0x11 0 128k", "read -P 0 128k 896k", "read -P 0x12 1M 64k"],
               fmt="raw", by="qemu")
    for spec in ("nope", "snapshot.id=2", "snapshot.id=1,snapshot.name=x", "snapshot.foo=1"):
        iot.img(["convert", "-l", spec, "-O", "raw"], img, iot.path("bad.raw"))
    iot.img(["convert", "-l", "old", "-O", "qcow2"], img, img, iot.path("two.qcow2"))


@formats("qcow2")
def test_snapshot_v2_image(iot):
    img = _setup(iot, opts="compat=0.10")
    iot.img(["snapshot", "-c", "v2snap"], img)
    iot.io(img, ["write -P 0xa1 0 64k"])
    iot.img(["resize", "-f", iot.fmt], img, "8M")
    iot.img(["snapshot", "-a", "v2snap"], img)
    iot.io(img, ["read -P 0x11 0 128k"])
    iot.img(["info", "-f", iot.fmt], img)
    _sum(iot, img)
    iot.img(["snapshot", "-d", "v2snap"], img)
    _check(iot, img)
    _sum(iot, img)


@formats("qcow2")
def test_snapshot_compressed_zero_and_extended_l2(iot):
    _filter_dates(iot)
    # One compressed cluster per request: 7.2 compresses the clusters of a longer
    # request in parallel, and their order on disk is not deterministic.
    for opts, cs in (("cluster_size=4k", "4k"), ("extended_l2=on", "64k"),
                     ("refcount_bits=2", "64k")):
        iot.log(f"--- {opts}")
        img = iot.create("4M", name="e.qcow2", opts=opts)
        iot.io(img, [f"write -c -P 0x22 0 {cs}", "write -P 0x23 64k 64k", "write -z 1M 64k"])
        iot.img(["snapshot", "-c", "s"], img)
        iot.io(img, ["write -P 0x24 0 8k", "write -P 0x25 1M 4k", "discard 64k 64k"])
        iot.img(["snapshot", "-c", "t"], img)
        iot.img(["snapshot", "-a", "s"], img)
        iot.io(img, [f"read -P 0x22 0 {cs}", "read -P 0x23 64k 64k", "read -P 0 1M 64k"])
        iot.img(["snapshot", "-d", "s"], img)
        iot.img(["snapshot", "-d", "t"], img)
        _check(iot, img)
        _sum(iot, img)


@formats("qcow2")
def test_snapshot_refcount_overflow(iot):
    """With 1-bit refcounts a cluster cannot be shared: 7.2 refuses the snapshot."""
    img = _setup(iot, opts="refcount_bits=1")
    iot.img(["snapshot", "-c", "s"], img)
    iot.img(["snapshot", "-l"], img)
    _sum(iot, img)


@formats("qcow2")
def test_snapshot_raw_unsupported(iot):
    img = iot.create("1M", fmt="raw")
    iot.img(["snapshot", "-f", "raw", "-c", "s"], img)
    iot.img(["snapshot", "-c", "s"], img)
    iot.img(["snapshot", "-a", "s"], img)
    iot.img(["snapshot", "-d", "s"], img)
    iot.img(["snapshot", "-l"], img)
    iot.img(["convert", "-f", "raw", "-l", "s", "-O", "raw"], img, iot.path("o.raw"))


@formats("qcow2")
def test_vmstate_read_write(iot):
    img = _setup(iot, size="1M")
    iot.io(img, ["write -b -P 0x33 0 64k", "read -b -P 0x33 0 64k", "write -b -P 0x34 64k 512",
                 "read -b -P 0x34 64k 512", "read -b -P 0 65k 3k", "write -b 1000 512",
                 "read -P 0x11 0 128k"])
    iot.io(img, ["read -b -P 0x33 0 64k", "read -b -P 0x34 64k 512"], by="qemu")
    iot.io(img, ["read -b -P 0x33 0 64k"], by="bdrv")
    iot.img(["map", "-f", iot.fmt, "--output=json"], img)
    _sum(iot, img)
    _check(iot, img)
    iot.img(["snapshot", "-c", "vm"], img)
    iot.io(img, ["write -b -P 0x35 0 4k", "read -b -P 0x35 0 4k"])
    iot.img(["snapshot", "-a", "vm"], img)
    iot.io(img, ["read -b -P 0x33 0 64k"])
    _check(iot, img)


def _patch_entry(iot, img, offset, fmt, value, what):
    """Overwrite a field of the first snapshot table entry (logged)."""
    data = bytearray(img.path.read_bytes())
    table = struct.unpack(">Q", data[64:72])[0]
    struct.pack_into(fmt, data, table + offset, value)
    img.path.write_bytes(bytes(data))
    iot.log(f"# snapshot entry 0: {what} = {value:#x}")


@formats("qcow2")
def test_snapshot_bad_table_entries(iot):
    """Entries 7.2 refuses when it opens the image (too much extra data) or when a
    snapshot's L1 table is used (unaligned, too large, past what refcounts reach)."""
    cases = ((36, ">I", 2000, "extra_data_size"), (0, ">Q", 0x12345, "l1_table_offset"),
             (8, ">I", 1 << 30, "l1_size"), (0, ">Q", 1 << 62, "l1_table_offset"))
    for offset, fmt, value, what in cases:
        img = _setup(iot, size="1M")
        iot.img(["snapshot", "-c", "s"], img)
        _patch_entry(iot, img, offset, fmt, value, what)
        iot.img(["snapshot", "-l"], img)
        iot.img(["snapshot", "-a", "s"], img)
        iot.img(["convert", "-l", "s", "-O", "raw"], img, iot.path("o.raw"))
        iot.img(["snapshot", "-d", "s"], img)
        iot.img(["snapshot", "-l"], img)


@formats("qcow2")
def test_snapshot_apply_after_resize(iot):
    img = _setup(iot, size="1M")
    iot.img(["snapshot", "-c", "small"], img)
    iot.img(["resize", "-f", iot.fmt], img, "2M")
    iot.img(["snapshot", "-a", "small"], img)
    iot.img(["info", "-f", iot.fmt, "--output=json"], img)
    iot.img(["convert", "-l", "small", "-O", "raw"], img, iot.path("o.raw"))
    iot.img(["info", "-f", "raw"], iot.path("o.raw"))
    iot.img(["resize", "-f", iot.fmt], img, "1M")
    iot.img(["resize", "-f", iot.fmt, "--shrink"], img, "1M")
    iot.img(["snapshot", "-a", "small"], img)
    iot.io(img, ["read -P 0x11 0 128k"])
    _check(iot, img)


@formats("qcow2")
def test_snapshot_with_backing_file(iot):
    """Snapshots of an overlay: unallocated clusters still read from the backing file
    after an apply, and the backing file is left alone."""
    _filter_dates(iot)
    base = iot.create("2M", name="base.qcow2")
    iot.io(base, ["write -P 0xb1 0 2M"])
    top = iot.create(None, name="top.qcow2", args="-b base.qcow2 -F qcow2")
    iot.io(top, ["write -P 0xc1 64k 64k"])
    iot.img(["snapshot", "-c", "one"], top)
    iot.io(top, ["write -P 0xc2 0 128k", "discard 64k 64k"])
    iot.img(["snapshot", "-a", "one"], top)
    iot.io(top, ["read -P 0xb1 0 64k", "read -P 0xc1 64k 64k", "read -P 0xb1 128k 1920k"])
    iot.io(top, ["read -P 0xc1 64k 64k"], by="qemu")
    iot.img(["info", "-f", iot.fmt], top)
    iot.img(["snapshot", "-l"], base)
    _check(iot, top)
    _check(iot, base)
    _sum(iot, top)


@formats("qcow2")
def test_snapshot_qemu_io_options(iot):
    """qemu-io 7.2 has no option that opens an internal snapshot: -l is unknown and
    qcow2 takes no snapshot.* open options."""
    img = _setup(iot, size="1M")
    iot.img(["snapshot", "-c", "s"], img)
    iot.io(img, ["read 0 1"], opts=["-l", "s"])
    iot.run(["qemu-io", "--image-opts", "-c", "read -P 0x11 0 1",
             f"driver=qcow2,file.filename={img.path},snapshot.name=s"])
    iot.io(img, ["read -P 0x11 0 128k"], opts=["-r"])
