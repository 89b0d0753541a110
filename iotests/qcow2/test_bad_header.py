"""Hostile qcow2 headers: QEMU 7.2's message on both backends, the file left unchanged.

Each test corrupts one part of the header with harness.corrupt (logged), then opens the
image the ways a user would (info, a read-only read, a read-write read, check), and logs
the image's SHA-256 before and after: a bad image is refused, never repaired or marked.
"""

from harness import formats

FEATURE_TABLE = 0x6803F857
BITMAPS = 0x23852875
CRYPTO = 0x0537BE77
BACKING_FORMAT = 0xE2792ACA


def _image(iot, size="64M", opts=None):
    img = iot.create(size, opts=opts)
    iot.io(img, "write -P 0x11 0 128k")
    return img


def _probe(iot, img, rw=True, check=False):
    """Open IMG every usual way; its bytes must not change."""
    before = iot.checksum(img)
    iot.img(["info", "-f", iot.fmt], img)
    iot.io(img, "read -P 0x11 0 64k", opts="-r")
    if rw:
        iot.io(img, "read -P 0x11 0 64k")
    if check:
        iot.img(["check", "-f", iot.fmt], img)
    if iot.checksum(img) != before:
        iot.log("!!! the image changed")


@formats("qcow2")
def test_bad_magic_and_version(iot):
    img = _image(iot)
    for version in (0, 1, 4, 0xFFFFFFFF):
        iot.corrupt(img).header(version=version)
        _probe(iot, img)
    iot.corrupt(img).header(version=3, magic=0x514649FA)
    _probe(iot, img, rw=False)
    iot.log("--- probed: not qcow2, so raw")
    iot.img(["info"], img)


@formats("qcow2")
def test_bad_cluster_bits(iot):
    img = _image(iot)
    for bits in (0, 8, 22, 31, 64, 0xFFFFFFFF):
        iot.corrupt(img).header(cluster_bits=bits)
        _probe(iot, img)
    iot.log("--- valid but not this image's: 2^9 reads the tables at the wrong places")
    iot.corrupt(img).header(cluster_bits=9)
    _probe(iot, img, rw=False)


@formats("qcow2")
def test_bad_header_length(iot):
    img = _image(iot)
    for length in (0, 72, 103, 65537, 0xFFFFFFFF):
        iot.corrupt(img).header(header_length=length)
        _probe(iot, img)
    iot.log("--- longer than the header: extensions are read from there")
    iot.corrupt(img).header(header_length=120)
    _probe(iot, img, rw=False)
    iot.log("--- a cluster of 512 bytes holds no header of 513")
    small = _image(iot, opts="cluster_size=512")
    iot.corrupt(small).header(header_length=513)
    _probe(iot, small)


@formats("qcow2")
def test_bad_refcount_order(iot):
    img = _image(iot)
    for order in (7, 64, 0xFFFFFFFF):
        iot.corrupt(img).header(refcount_order=order)
        _probe(iot, img)


@formats("qcow2")
def test_bad_l1_size(iot):
    img = _image(iot)
    iot.log("--- too small for the virtual size")
    iot.corrupt(img).header(l1_size=0)
    _probe(iot, img)
    iot.log("--- above 32 MiB of entries")
    for size in (0x400001, 0x2000000, 0xFFFFFFFF):
        iot.corrupt(img).header(l1_size=size)
        _probe(iot, img)
    iot.log("--- allowed, but reaching past the end of the file")
    iot.corrupt(img).header(l1_size=0x100000)
    _probe(iot, img, rw=False)


@formats("qcow2")
def test_bad_l1_table_offset(iot):
    img = _image(iot)
    for offset in (0x30001, 0x30200, 0x7FFFFFFFFFFF0000, 0xFFFFFFFFFFFF0000):
        iot.corrupt(img).header(l1_table_offset=offset)
        _probe(iot, img)
    iot.log("--- aligned, past the end of the file")
    iot.corrupt(img).header(l1_table_offset=1 << 40)
    _probe(iot, img, rw=False, check=True)


@formats("qcow2")
def test_bad_refcount_table_header(iot):
    img = _image(iot)
    iot.corrupt(img).header(refcount_table_clusters=0)
    _probe(iot, img, check=True)
    for clusters in (0x81, 0x1000000, 0xFFFFFFFF):
        iot.corrupt(img).header(refcount_table_clusters=clusters)
        _probe(iot, img)
    iot.corrupt(img).header(refcount_table_clusters=1)
    for offset in (0x10001, 0x10200, 0xFFFFFFFFFFFF0000):
        iot.corrupt(img).header(refcount_table_offset=offset)
        _probe(iot, img)
    iot.log("--- aligned, past the end of the file")
    iot.corrupt(img).header(refcount_table_offset=1 << 40)
    _probe(iot, img, rw=False, check=True)


@formats("qcow2")
def test_bad_snapshot_table_header(iot):
    img = _image(iot)
    iot.corrupt(img).header(nb_snapshots=65537, snapshots_offset=0x50000)
    _probe(iot, img)
    iot.corrupt(img).header(nb_snapshots=1, snapshots_offset=0x50001)
    _probe(iot, img)
    iot.log("--- aligned, past the end of the file")
    iot.corrupt(img).header(nb_snapshots=1, snapshots_offset=1 << 40)
    _probe(iot, img, rw=False)


@formats("qcow2")
def test_bad_backing_file_name(iot):
    img = _image(iot)
    iot.log("--- offset past the first cluster")
    iot.corrupt(img).header(backing_file_offset=0x10001, backing_file_size=4)
    _probe(iot, img)
    iot.log("--- 1024 bytes and more")
    for size in (1024, 0xFFFFFFFF):
        iot.corrupt(img).backing_name(b"base.qcow2", offset=0x200, size=size)
        _probe(iot, img)
    iot.log("--- running past the end of the first cluster")
    iot.corrupt(img).backing_name(b"base.qcow2", offset=0xFFF0, size=32)
    _probe(iot, img)
    iot.log("--- a name that names nothing")
    iot.corrupt(img).backing_name(b"nonexistent.qcow2", offset=0x200)
    _probe(iot, img)
    iot.log("--- an empty name")
    iot.corrupt(img).header(backing_file_size=0)
    _probe(iot, img, rw=False)


@formats("qcow2")
def test_bad_header_extensions(iot):
    img = _image(iot)
    iot.log("--- the feature table's length reaches past the cluster")
    iot.corrupt(img).extension(FEATURE_TABLE, length=0x10000)
    _probe(iot, img)
    iot.corrupt(img).extension(FEATURE_TABLE, length=0xFFFFFFFF)
    _probe(iot, img)
    iot.corrupt(img).extension(FEATURE_TABLE, length=384)
    iot.log("--- a backing format of 16 bytes")
    iot.corrupt(img).extension(BACKING_FORMAT, b"qcow2".ljust(16, b"x"))
    _probe(iot, img)
    iot.corrupt(img).extension(BACKING_FORMAT, length=15)
    _probe(iot, img, rw=False)

    img2 = _image(iot, opts="cluster_size=4096")
    iot.log("--- a bitmaps extension of the wrong length")
    iot.corrupt(img2).extension(BITMAPS, bytes(16))
    _probe(iot, img2)


@formats("qcow2")
def test_bad_crypto_extension(iot):
    img = _image(iot, opts="cluster_size=4096")
    iot.corrupt(img).extension(CRYPTO, bytes(8))
    _probe(iot, img)
    for method in (1, 2, 3):
        iot.corrupt(img).header(crypt_method=method)
        _probe(iot, img)


@formats("qcow2")
def test_bad_incompatible_features(iot):
    img = _image(iot)
    iot.log("--- unknown bits, no names for them")
    for bits in (1 << 5, 1 << 63, 0xFFFFFFFFFFFFFFE0):
        iot.corrupt(img).header(incompatible_features=bits)
        _probe(iot, img)
    iot.log("--- an unknown bit named in the image's feature table")
    table = iot.corrupt(img).extensions()[0][0] + 8
    iot.corrupt(img).poke(table + 4 * 48, b"\x00\x05unknown feature five".ljust(48, b"\0"))
    iot.corrupt(img).header(incompatible_features=(1 << 5) | (1 << 9))
    _probe(iot, img)
    iot.log("--- compression type bit without a compression type, and the reverse")
    iot.corrupt(img).header(incompatible_features=1 << 3)
    _probe(iot, img)
    iot.corrupt(img).header(incompatible_features=0, compression_type=1)
    _probe(iot, img)
    iot.corrupt(img).header(incompatible_features=1 << 3, compression_type=2)
    _probe(iot, img)
    iot.log("--- extended L2 entries with 512-byte clusters (16-byte subclusters)")
    small = _image(iot, opts="cluster_size=512")
    iot.corrupt(small).incompatible(set_bits=1 << 4)
    _probe(iot, small)


@formats("qcow2")
def test_bad_corrupt_bit(iot):
    img = _image(iot)
    iot.corrupt(img).incompatible(set_bits=1 << 1)
    before = iot.checksum(img)
    iot.img(["info", "-f", iot.fmt], img)
    iot.io(img, "read -P 0x11 0 64k", opts="-r")
    iot.io(img, "read -P 0x11 0 64k")
    iot.io(img, "write -P 0x22 0 64k")
    iot.img(["check", "-f", iot.fmt], img)
    iot.img(["resize", "-f", iot.fmt], img, "128M")
    iot.img(["convert", "-f", iot.fmt, "-O", "raw"], img, iot.path("out.raw"))
    iot.io(iot.path("out.raw"), "read -P 0x11 0 128k", fmt="raw")
    if iot.checksum(img) != before:
        iot.log("!!! the image changed")


@formats("qcow2")
def test_bad_virtual_size(iot):
    img = _image(iot)
    for size in (1 << 40, 1 << 62, 0xFFFFFFFFFFFFFFFF):
        iot.corrupt(img).header(size=size)
        _probe(iot, img)
