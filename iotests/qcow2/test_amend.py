"""qemu-img amend on qcow2: option help and parsing errors, compat upgrade and downgrade
(zero clusters expanded, 7.2's refusals), lazy refcounts, refcount widths, the backing
file (only an unchanged one is accepted), size, dirty images and snapshots.

Each amend by the backend under test is repeated by QEMU on a twin image in q/ made the
same way, and the two are cmp'd; QEMU then checks and reads the amended image.
"""

import struct

import pytest

from harness import formats

pytestmark = pytest.mark.img

_MIXED = ["write -P 0x11 0 192k", "write -z -u 0 64k", "write -z 128k 64k",
          "write -c -P 0x22 1M 64k", "write -P 0x33 3M 1000"]


def _pair(iot, name, size="4M", opts=None, cmds=(), by=None, args=()):
    """Our image (written by `by`) and its twin q/NAME written by QEMU."""
    iot.path("q").mkdir(exist_ok=True)
    ours = iot.create(size, name=name, opts=opts, args=args, by=by)
    theirs = iot.create(size, name=f"q/{name}", opts=opts, args=args, by="qemu")
    if cmds:
        iot.io(ours, list(cmds), by=by)
        iot.io(theirs, list(cmds), by="qemu")
    return ours, theirs


def _rel(iot, img):
    return str(img.path.relative_to(iot.test_dir))


def _amend(iot, args, ours, theirs):
    """amend by the backend and by QEMU on the twin, then compare the files."""
    iot.img(["amend", *args], ours)
    iot.img(["amend", *args], theirs, by="qemu")
    iot.run(["cmp", _rel(iot, ours), _rel(iot, theirs)])


def _check(iot, img):
    iot.img(["check", "-f", "qcow2"], img, by="qemu")


def _info(iot, img):
    iot.img(["info", "-f", "qcow2"], img, by="qemu")


def _zero_snapshot_dates(iot, img):
    """Snapshot dates come from the clock: zero them so that twins compare equal."""
    data = img.path.read_bytes()
    nb, pos = struct.unpack(">IQ", data[60:72])
    edit = iot.corrupt(img)
    for _ in range(nb):
        pos = -(-pos // 8) * 8
        id_len, name_len = struct.unpack(">HH", data[pos + 12 : pos + 16])
        extra = struct.unpack(">I", data[pos + 36 : pos + 40])[0]
        edit.poke(pos + 16, bytes(8))
        pos += 40 + extra + id_len + name_len


@formats("qcow2")
def test_amend_help_and_usage(iot):
    img = iot.create("1M", by="qemu")
    raw = iot.create("1M", fmt="raw", name="r.raw", by="qemu")
    iot.img(["amend", "-o", "help"], img)
    iot.img(["amend", "-f", "qcow2", "-o", "?"])
    iot.img(["amend", "-p", "-f", "qcow2", "-o", "size=1M,help", "nosuch.qcow2"])
    iot.img(["amend", "-f", "raw", "-o", "help"])
    iot.img(["amend", "-f", "foo", "-o", "help"])
    iot.img(["amend", "-f", "raw", "-o", "size=2M"], raw)
    iot.img(["amend", "-f", "qcow2"], img)
    iot.img(["amend", "-o", "size=2M"])
    iot.img(["amend", "-o", "size=2M"], img, raw)
    iot.img(["amend", "-o", ",size=2M"], img)
    iot.img(["amend", "-p", "-t", "bogus", "-o", "size=2M"], img)
    iot.img(["amend", "-o", "size=2M", "nosuch.qcow2"])
    iot.img(["amend", "-f", "qcow2", "-o", "size=2M"], raw)
    _info(iot, img)


@formats("qcow2")
def test_amend_refused_options(iot):
    """Options only create knows, unknown ones, bad values, what no image here has."""
    img = iot.create("1M", by="qemu")
    sha = iot.checksum(img)
    for opt in ("cluster_size=4k", "preallocation=full", "compression_type=zstd",
                "extended_l2=on", "encryption=on", "encrypt.format=luks",
                "cluster_size=4k,foo=1", "foo=bar", "lazy_refcounts=maybe", "size=big",
                "refcount_bits=x", "compat=2.0", "refcount_bits=3", "refcount_bits=128",
                "encrypt.new-secret=s", "data_file=d.raw", "data_file_raw=on"):
        iot.img(["amend", "-o", opt], img)
    assert iot.checksum(img) == sha
    _check(iot, img)


@formats("qcow2")
def test_amend_downgrade(iot):
    """compat=0.10: plain zero clusters become unallocated, preallocated ones zeroed
    data clusters; compressed clusters stay."""
    ours, theirs = _pair(iot, "t.qcow2", cmds=_MIXED, by="qemu")
    iot.img(["map", "-f", "qcow2", "--output=json"], ours, by="qemu")
    _amend(iot, ["-p", "-o", "compat=0.10"], ours, theirs)
    _info(iot, ours)
    _check(iot, ours)
    iot.img(["map", "-f", "qcow2", "--output=json"], ours, by="qemu")
    iot.io(ours, ["read -P 0 0 64k", "read -P 0x11 64k 64k", "read -P 0 128k 64k",
                  "read -P 0x22 1M 64k", "read -P 0x33 3M 1000"], by="qemu")
    # and back up again
    _amend(iot, ["-p", "-o", "compat=1.1"], ours, theirs)
    _info(iot, ours)
    _check(iot, ours)


@formats("qcow2")
def test_amend_downgrade_overlay_zero_clusters(iot):
    """Over a backing file a zero cluster must stay zero: v2 gets a zeroed cluster."""
    iot.path("q").mkdir(exist_ok=True)
    for prefix in ("", "q/"):
        base = iot.create("4M", name=f"{prefix}base.qcow2", by="qemu")
        iot.io(base, "write -P 0x55 0 4M", by="qemu")
    ours, theirs = _pair(iot, "top.qcow2", size=None, args=["-b", "base.qcow2", "-F", "qcow2"],
                         cmds=["write -z 0 64k", "write -P 0x66 1M 64k", "write -z 1M 64k",
                               "write -z 2M 192k"])
    _amend(iot, ["-p", "-o", "compat=0.10"], ours, theirs)
    _check(iot, ours)
    iot.img(["map", "-f", "qcow2", "--output=json"], ours, by="qemu")
    iot.io(ours, ["read -P 0 0 64k", "read -P 0x55 64k 960k", "read -P 0 1M 64k",
                  "read -P 0 2M 192k", "read -P 0x55 3M 1M"], by="qemu")


@formats("qcow2")
def test_amend_downgrade_refused(iot):
    """What v2 cannot hold: other refcount widths, extended L2 entries, zstd-compressed
    clusters, lazy refcounts asked for at the same time, snapshots of another size."""
    r64, q64 = _pair(iot, "r64.qcow2", opts="refcount_bits=64", cmds=["write 0 64k"])
    _amend(iot, ["-o", "compat=0.10"], r64, q64)
    _amend(iot, ["-o", "compat=0.10,refcount_bits=8"], r64, q64)
    _amend(iot, ["-p", "-o", "compat=0.10,refcount_bits=16"], r64, q64)
    _info(iot, r64)
    l2, ql2 = _pair(iot, "l2.qcow2", opts="extended_l2=on", cmds=["write 0 64k"])
    _amend(iot, ["-o", "compat=0.10"], l2, ql2)
    zc, qzc = _pair(iot, "zc.qcow2", opts="compression_type=zstd", cmds=["write -c 0 64k"])
    _amend(iot, ["-o", "compat=0.10"], zc, qzc)
    zs, qzs = _pair(iot, "zs.qcow2", opts="compression_type=zstd", cmds=["write -z 0 64k"])
    _amend(iot, ["-o", "compat=0.10"], zs, qzs)
    _info(iot, zs)
    lazy, qlazy = _pair(iot, "lazy.qcow2", cmds=["write 0 64k"])
    _amend(iot, ["-o", "lazy_refcounts=on,compat=0.10"], lazy, qlazy)
    _info(iot, lazy)
    sn, qsn = _pair(iot, "sn.qcow2", cmds=["write 0 64k"])
    for img in (sn, qsn):
        iot.img(["snapshot", "-c", "one"], img, by="qemu")
        _zero_snapshot_dates(iot, img)
    _amend(iot, ["-o", "size=8M"], sn, qsn)
    _amend(iot, ["-o", "compat=0.10"], sn, qsn)
    for img in (r64, l2, zc, zs, lazy, sn):
        _check(iot, img)


@formats("qcow2")
def test_amend_upgrade_with_snapshot(iot):
    ours, theirs = _pair(iot, "v2.qcow2", opts="compat=0.10", cmds=["write -P 0x44 0 1M"])
    for img in (ours, theirs):
        iot.img(["snapshot", "-c", "old"], img, by="qemu")
        _zero_snapshot_dates(iot, img)
        iot.io(img, "write -P 0x45 512k 64k", by="qemu")
    _amend(iot, ["-p", "-o", "compat=1.1"], ours, theirs)
    _check(iot, ours)
    iot.img(["snapshot", "-a", "old"], ours, by="qemu")
    iot.io(ours, "read -P 0x44 0 1M", by="qemu")


@formats("qcow2")
def test_amend_lazy_refcounts(iot):
    ours, theirs = _pair(iot, "t.qcow2", cmds=["write -P 0x11 0 64k"])
    _amend(iot, ["-o", "lazy_refcounts=on"], ours, theirs)
    _info(iot, ours)
    iot.io(ours, "write -P 0x12 1M 64k", by="qemu")
    iot.io(theirs, "write -P 0x12 1M 64k", by="qemu")
    _amend(iot, ["-o", "lazy_refcounts=off"], ours, theirs)
    _info(iot, ours)
    _check(iot, ours)
    v2, qv2 = _pair(iot, "v2.qcow2", opts="compat=0.10")
    _amend(iot, ["-o", "lazy_refcounts=on"], v2, qv2)
    _amend(iot, ["-o", "lazy_refcounts=on,compat=1.1"], v2, qv2)
    _info(iot, v2)
    iot.io(v2, "read -P 0 0 64k", by="qemu")


@formats("qcow2")
def test_amend_lazy_refcounts_dirty_image(iot):
    """A dirty image is repaired when amend opens it; lazy_refcounts=off and a
    downgrade then find it clean."""
    ours, theirs = _pair(iot, "t.qcow2", opts="lazy_refcounts=on", cmds=["write 0 128k"])
    for img in (ours, theirs):
        iot.corrupt(img).incompatible(set_bits=1)
    _amend(iot, ["-o", "compat=0.10"], ours, theirs)
    _info(iot, ours)
    _check(iot, ours)


@formats("qcow2")
def test_amend_refcount_bits(iot):
    ours, theirs = _pair(iot, "t.qcow2", cmds=_MIXED)
    for bits in ("1", "64", "2", "16"):
        _amend(iot, ["-p", "-o", f"refcount_bits={bits}"], ours, theirs)
        _check(iot, ours)
    _info(iot, ours)
    iot.io(ours, ["read -P 0x11 64k 64k", "read -P 0x22 1M 64k"], by="qemu")
    # a refcount of 2 does not fit in one bit
    for img in (ours, theirs):
        iot.img(["snapshot", "-c", "one"], img, by="qemu")
        _zero_snapshot_dates(iot, img)
    _amend(iot, ["-o", "refcount_bits=1"], ours, theirs)
    _amend(iot, ["-o", "refcount_bits=2"], ours, theirs)
    _check(iot, ours)


@formats("qcow2")
def test_amend_refcount_bits_many_refblocks(iot):
    """512-byte clusters: old and new refblocks cover different ranges, several walks."""
    ours, theirs = _pair(iot, "c.qcow2", size="16M", opts="cluster_size=512",
                         cmds=["write -P 0x11 0 3M", "write -P 0x22 8M 1M",
                               "write -z 1M 4k"])
    for bits in ("1", "64", "4"):
        _amend(iot, ["-p", "-o", f"refcount_bits={bits}"], ours, theirs)
        _check(iot, ours)
    iot.io(ours, ["read -P 0x11 0 1M", "read -P 0 1M 4k", "read -P 0x22 8M 1M"], by="qemu")


@formats("qcow2")
def test_amend_backing_file(iot):
    """7.2 no longer changes the backing file with amend: only the same name and
    format are accepted, and the steps before the check are done already."""
    iot.path("q").mkdir(exist_ok=True)
    for prefix in ("", "q/"):
        base = iot.create("4M", name=f"{prefix}base.qcow2", by="qemu")
        iot.io(base, "write -P 0x55 0 4M", by="qemu")
    ours, theirs = _pair(iot, "top.qcow2", size=None, args=["-b", "base.qcow2", "-F", "qcow2"],
                         cmds=["write -P 0x66 0 64k"])
    _amend(iot, ["-o", "backing_file=base.qcow2,backing_fmt=qcow2"], ours, theirs)
    _amend(iot, ["-o", "backing_file=base.qcow2"], ours, theirs)
    _amend(iot, ["-o", "backing_fmt=qcow2"], ours, theirs)
    _amend(iot, ["-o", "backing_file=other.qcow2,backing_fmt=qcow2"], ours, theirs)
    _amend(iot, ["-o", "refcount_bits=8,lazy_refcounts=on,backing_file="], ours, theirs)
    _info(iot, ours)
    _check(iot, ours)
    iot.io(ours, ["read -P 0x66 0 64k", "read -P 0x55 64k 64k"], by="qemu")


@formats("qcow2")
def test_amend_size(iot):
    ours, theirs = _pair(iot, "t.qcow2", cmds=["write -P 0x11 0 4M"])
    _amend(iot, ["-o", "size=8M"], ours, theirs)
    _amend(iot, ["-o", "size=1M"], ours, theirs)
    _amend(iot, ["-o", "size=1000"], ours, theirs)
    _amend(iot, ["-o", "size=12E"], ours, theirs)
    _amend(iot, ["-o", "size=9223372036854775807"], ours, theirs)
    _amend(iot, ["-o", "size=0"], ours, theirs)
    _amend(iot, ["-q", "-o", "size=2M", "-o", "compat=0.10"], ours, theirs)
    _info(iot, ours)
    _check(iot, ours)
    iot.io(ours, ["read -P 0x11 0 1M", "read -P 0 1M 1M"], by="qemu")


@formats("qcow2")
def test_amend_size_over_longer_backing(iot):
    """Growing past the old end must not uncover the backing file's data."""
    iot.path("q").mkdir(exist_ok=True)
    for prefix in ("", "q/"):
        base = iot.create("8M", name=f"{prefix}base.qcow2", by="qemu")
        iot.io(base, "write -P 0x55 0 8M", by="qemu")
    ours, theirs = _pair(iot, "top.qcow2", size="2M",
                         args=["-b", "base.qcow2", "-F", "qcow2"])
    _amend(iot, ["-o", "size=6M"], ours, theirs)
    _check(iot, ours)
    iot.io(ours, ["read -P 0x55 0 2M", "read -P 0 2M 4M"], by="qemu")


@formats("qcow2")
def test_amend_snapshots_downgrade(iot):
    """Zero clusters in L2 tables shared with a snapshot are expanded once, with the
    table's refcount; 7.2's check then finds what 7.2 left."""
    ours, theirs = _pair(iot, "s.qcow2", cmds=["write -P 0x11 0 256k", "write -z 64k 64k",
                                               "write -z 2M 64k"])
    for img in (ours, theirs):
        iot.img(["snapshot", "-c", "one"], img, by="qemu")
        _zero_snapshot_dates(iot, img)
        iot.io(img, "write -z 192k 64k", by="qemu")
    _amend(iot, ["-p", "-o", "compat=0.10"], ours, theirs)
    _check(iot, ours)
    iot.io(ours, ["read -P 0x11 0 64k", "read -P 0 64k 64k", "read -P 0x11 128k 64k",
                  "read -P 0 192k 64k"], by="qemu")


@formats("qcow2")
def test_amend_interop(iot):
    """An image amended by QEMU is written by the backend, and the other way round."""
    ours = iot.create("4M", name="a.qcow2")
    iot.io(ours, ["write -P 0x11 0 128k", "write -z 64k 64k"])
    iot.img(["amend", "-o", "compat=0.10,lazy_refcounts=off"], ours, by="qemu")
    iot.io(ours, ["write -P 0x12 1M 64k", "read -P 0 64k 64k", "read -P 0x11 0 64k"])
    iot.img(["amend", "-o", "compat=1.1,refcount_bits=4"], ours)
    iot.io(ours, ["write -P 0x13 2M 64k", "read -P 0x12 1M 64k"], by="qemu")
    _check(iot, ours)
    iot.img(["amend", "-o", "refcount_bits=16,lazy_refcounts=on"], ours, by="qemu")
    iot.io(ours, ["write -P 0x14 3M 64k", "read -P 0x13 2M 64k"])
    iot.img(["check", "-f", "qcow2"], ours)
    _info(iot, ours)


@formats("qcow2")
def test_amend_progress_then_error(iot):
    """With -p the meter runs up to 100% before the error, and its line ends after."""
    ours, theirs = _pair(iot, "t.qcow2", cmds=["write -P 0x11 0 128k"])
    for img in (ours, theirs):
        iot.img(["snapshot", "-c", "one"], img, by="qemu")
        _zero_snapshot_dates(iot, img)
    _amend(iot, ["-p", "-o", "refcount_bits=1"], ours, theirs)
    _amend(iot, ["-p", "-o", "refcount_bits=64,compat=0.10"], ours, theirs)
    _amend(iot, ["-p", "-o", "compat=0.10,backing_fmt=raw"], ours, theirs)
    _check(iot, ours)
