"""The qcow2 header (v2 and v3) and its extensions: parse, validate, serialize.

Validation follows the order and words of QEMU 7.2's qcow2_do_open(), so that a bad
header gives the same message as qemu-img. Serialization reproduces the layout
qcow2_update_header() writes: the fixed header, then the backing format, feature name
table (v3 only), unknown extensions kept from the image, the end marker, and the
backing file name in the remaining space of the first cluster.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from bdrv.errors import BlockError

MAGIC = 0x514649FB
V2_HEADER_LEN = 72
V3_HEADER_LEN = 112  # what 7.2 writes: 104 + compression_type + padding
MIN_V3_HEADER_LEN = 104
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21

# Header extension magics.
EXT_END = 0
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_CRYPTO_HEADER = 0x0537BE77
EXT_BITMAPS = 0x23852875
EXT_DATA_FILE = 0x44415441

# Feature bits.
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_MASK = 0x1F
COMPAT_LAZY_REFCOUNTS = 1 << 0
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1
AUTOCLEAR_MASK = 0x3

COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1
COMPRESSION_NAMES = {COMPRESSION_ZLIB: "zlib", COMPRESSION_ZSTD: "zstd"}

# Table limits (qcow2.h).
MAX_REFTABLE_SIZE = 8 << 20
MAX_L1_SIZE = 32 << 20
MAX_SNAPSHOTS = 65536
SNAPSHOT_HEADER_SIZE = 40
INT64_MAX = (1 << 63) - 1

# The feature name table 7.2 writes: (type, bit, name).
FEATURE_TABLE = (
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
)

_V2 = struct.Struct(">IIQIIQIIQQIIQ")
_V3 = struct.Struct(">QQQII")

ReadFn = Callable[[int, int], bytes]


@dataclass
class Extension:
    magic: int
    data: bytes


@dataclass
class Qcow2Header:
    """The header fields (v2 images get v3 defaults for the v3 fields)."""

    version: int = 3
    backing_file_offset: int = 0
    backing_file_size: int = 0
    cluster_bits: int = 16
    size: int = 0
    crypt_method: int = 0
    l1_size: int = 0
    l1_table_offset: int = 0
    refcount_table_offset: int = 0
    refcount_table_clusters: int = 0
    nb_snapshots: int = 0
    snapshots_offset: int = 0
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = V3_HEADER_LEN
    compression_type: int = COMPRESSION_ZLIB
    # Bytes of header fields beyond what we know (kept on rewrite).
    unknown_fields: bytes = b""
    backing_file: str | None = None
    backing_format: str | None = None
    unknown_extensions: list[Extension] = field(default_factory=list)
    feature_table: bytes | None = None
    has_bitmaps_ext: bool = False
    # The bitmaps extension while it is consistent: (nb_bitmaps, directory offset,
    # directory size). bdrv has no bitmap support; check counts their clusters.
    bitmaps: tuple[int, int, int] | None = None

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits


def _check_table(cluster_size: int, offset: int, entries: int, entry_len: int,
                 max_bytes: int, name: str) -> None:
    """qcow2_validate_table(): size limit, then offset range and alignment."""
    if entries > max_bytes // entry_len:
        raise BlockError(f"{name} too large", errno.EFBIG)
    if INT64_MAX - entries * entry_len < offset or offset % cluster_size:
        raise BlockError(f"{name} offset invalid")


def unpack_fixed(raw: bytes) -> Qcow2Header:
    """The fixed fields of a 112-byte (zero padded) header buffer, unvalidated."""
    raw = raw.ljust(V3_HEADER_LEN, b"\0")
    (magic, version, bfo, bfs, cbits, size, crypt, l1_size, l1_off, rt_off, rt_clusters,
     nb_snap, snap_off) = _V2.unpack_from(raw, 0)
    hdr = Qcow2Header(version=version, backing_file_offset=bfo, backing_file_size=bfs,
                      cluster_bits=cbits, size=size, crypt_method=crypt, l1_size=l1_size,
                      l1_table_offset=l1_off, refcount_table_offset=rt_off,
                      refcount_table_clusters=rt_clusters, nb_snapshots=nb_snap,
                      snapshots_offset=snap_off)
    hdr.magic = magic  # type: ignore[attr-defined]
    if version != 2:
        inc, comp, auto, order, hlen = _V3.unpack_from(raw, V2_HEADER_LEN)
        hdr.incompatible_features, hdr.compatible_features = inc, comp
        hdr.autoclear_features, hdr.refcount_order, hdr.header_length = auto, order, hlen
        hdr.compression_type = raw[104]
    else:
        hdr.header_length = V2_HEADER_LEN
    return hdr


def read_header(read: ReadFn, flags_check: bool, rdwr: bool) -> Qcow2Header:
    """Read and validate the header as qcow2_do_open() does, up to the tables.

    `flags_check` is BDRV_O_CHECK (relaxes the table checks), `rdwr` a writable open.
    """
    raw = read(0, V3_HEADER_LEN)
    hdr = unpack_fixed(raw)
    if hdr.magic != MAGIC:  # type: ignore[attr-defined]
        raise BlockError("Image is not in qcow2 format")
    if hdr.version < 2 or hdr.version > 3:
        raise BlockError(f"Unsupported qcow2 version {hdr.version}", errno.ENOTSUP)
    if hdr.cluster_bits < MIN_CLUSTER_BITS or hdr.cluster_bits > MAX_CLUSTER_BITS:
        raise BlockError(f"Unsupported cluster size: 2^{hdr.cluster_bits}")
    cluster_size = hdr.cluster_size
    if hdr.version == 3 and hdr.header_length < MIN_V3_HEADER_LEN:
        raise BlockError("qcow2 header too short")
    if hdr.header_length > cluster_size:
        raise BlockError("qcow2 header exceeds cluster size")
    if hdr.header_length > V3_HEADER_LEN:
        hdr.unknown_fields = read(V3_HEADER_LEN, hdr.header_length - V3_HEADER_LEN)
    if hdr.backing_file_offset > cluster_size:
        raise BlockError("Invalid backing file offset")
    ext_end = hdr.backing_file_offset or cluster_size
    if hdr.header_length <= 104:
        hdr.compression_type = COMPRESSION_ZLIB
    _check_compression_type(hdr)
    unsupported = hdr.incompatible_features & ~INCOMPAT_MASK
    if unsupported:
        table: bytes | None = None
        try:
            read_extensions(read, hdr, ext_end, want_table=True)
            table = hdr.feature_table
        except BlockError:
            table = hdr.feature_table
        raise BlockError(_unsupported_features(table, unsupported), errno.ENOTSUP)
    if hdr.incompatible_features & INCOMPAT_CORRUPT and rdwr and not flags_check:
        raise BlockError("qcow2: Image is corrupt; cannot be opened read/write", errno.EACCES)
    if hdr.incompatible_features & INCOMPAT_EXTL2 and cluster_size // 32 < 512:
        raise BlockError(f"Unsupported subcluster size: {cluster_size // 32}")
    if hdr.refcount_order > 6:
        raise BlockError("Reference count entry width too large; may not exceed 64 bits")
    if hdr.crypt_method > 2:
        raise BlockError(f"Unsupported encryption method {hdr.crypt_method}")
    if hdr.refcount_table_clusters == 0 and not flags_check:
        raise BlockError("Image does not contain a reference count table")
    _check_table(cluster_size, hdr.refcount_table_offset, hdr.refcount_table_clusters,
                 cluster_size, MAX_REFTABLE_SIZE, "Reference count table")
    if not flags_check:
        _check_table(cluster_size, hdr.snapshots_offset, hdr.nb_snapshots,
                     SNAPSHOT_HEADER_SIZE, SNAPSHOT_HEADER_SIZE * MAX_SNAPSHOTS,
                     "Snapshot table")
    _check_table(cluster_size, hdr.l1_table_offset, hdr.l1_size, 8, MAX_L1_SIZE,
                 "Active L1 table")
    hdr.ext_end = ext_end  # type: ignore[attr-defined]
    return hdr


def _check_compression_type(hdr: Qcow2Header) -> None:
    """validate_compression_type()."""
    if hdr.compression_type not in COMPRESSION_NAMES:
        raise BlockError(f"qcow2: unknown compression type: {hdr.compression_type}",
                         errno.ENOTSUP)
    has_bit = bool(hdr.incompatible_features & INCOMPAT_COMPRESSION)
    if hdr.compression_type == COMPRESSION_ZLIB and has_bit:
        raise BlockError("qcow2: Compression type incompatible feature bit must not be set")
    if hdr.compression_type != COMPRESSION_ZLIB and not has_bit:
        raise BlockError("qcow2: Compression type incompatible feature bit must be set")


def _unsupported_features(table: bytes | None, mask: int) -> str:
    """report_unsupported_feature(): names from the image's table, then the rest."""
    names: list[str] = []
    if table is not None:
        # QEMU reads the table into a zeroed buffer two entries longer: it ends there.
        for pos in range(0, len(table) - 47, 48):
            ftype, bit, name = table[pos], table[pos + 1], table[pos + 2 : pos + 48]
            if name[:1] == b"\0":
                break
            if ftype == 0 and bit < 64 and mask & (1 << bit):
                names.append(name.split(b"\0", 1)[0].decode("latin-1"))
                mask &= ~(1 << bit)
    if mask:
        names.append(f"Unknown incompatible feature: {mask:x}")
    return "Unsupported qcow2 feature(s): " + ", ".join(names)


def read_extensions(read: ReadFn, hdr: Qcow2Header, end: int, *, want_table: bool = False,
                    warn: Callable[[str], None] | None = None) -> bool:
    """qcow2_read_extensions(): fill `hdr`; True if the header needs rewriting."""
    offset = hdr.header_length
    need_update = False
    unknown: list[Extension] = []
    while offset < end:
        magic, length = struct.unpack(">II", read(offset, 8))
        offset += 8
        if offset > end or length > end - offset:
            raise BlockError("Header extension too large")
        if magic == EXT_END:
            break
        data = read(offset, length) if magic != EXT_CRYPTO_HEADER or length == 16 else b""
        if magic == EXT_BACKING_FORMAT:
            if length >= 16:
                raise BlockError(
                    f"ERROR: ext_backing_format: len={length} too large (>=16)")
            hdr.backing_format = data.split(b"\0", 1)[0].decode("latin-1")
        elif magic == EXT_FEATURE_TABLE:
            if want_table:
                hdr.feature_table = data
        elif magic == EXT_CRYPTO_HEADER:
            if hdr.crypt_method != 2:
                raise BlockError("CRYPTO header extension only expected with LUKS "
                                 "encryption method")
            if length != 16:
                raise BlockError(f"CRYPTO header extension size {length}, but expected "
                                 "size 16")
        elif magic == EXT_BITMAPS:
            if length != 24:
                raise BlockError("bitmaps_ext: Invalid extension length")
            hdr.has_bitmaps_ext = True
            if not hdr.autoclear_features & AUTOCLEAR_BITMAPS:
                need_update = True
            else:
                # We have no bitmap support: keep the extension as opaque data.
                unknown.append(Extension(magic, data))
                hdr.bitmaps = _bitmaps_ext(data, hdr.cluster_size)
        elif magic == EXT_DATA_FILE:
            hdr.data_file = data.decode("latin-1")  # type: ignore[attr-defined]
        else:
            unknown.append(Extension(magic, data))
        offset += (length + 7) & ~7
    # QEMU inserts at the list head, so it writes them back in reverse order.
    hdr.unknown_extensions = list(reversed(unknown))
    return need_update


MAX_BITMAPS = 65535
MAX_BITMAP_DIRECTORY_SIZE = 1024 * MAX_BITMAPS


def _bitmaps_ext(data: bytes, cluster_size: int) -> tuple[int, int, int]:
    """A consistent bitmaps extension, validated as 7.2 does at open:
    (nb_bitmaps, directory offset, directory size)."""
    nb, reserved, dir_size, dir_offset = struct.unpack(">IIQQ", data)
    if reserved:
        raise BlockError("bitmaps_ext: Reserved field is not zero")
    if not nb:
        raise BlockError("found bitmaps extension with zero bitmaps")
    if nb > MAX_BITMAPS:
        raise BlockError(f"bitmaps_ext: Image has {nb} bitmaps, exceeding the QEMU "
                         f"supported maximum of {MAX_BITMAPS}")
    if dir_offset & (cluster_size - 1):
        raise BlockError("bitmaps_ext: invalid bitmap directory offset")
    if dir_size > MAX_BITMAP_DIRECTORY_SIZE:
        raise BlockError(f"bitmaps_ext: bitmap directory size ({dir_size}) exceeds the "
                         f"maximum supported size ({MAX_BITMAP_DIRECTORY_SIZE})")
    return nb, dir_offset, dir_size


def read_backing_name(read: ReadFn, hdr: Qcow2Header) -> None:
    if hdr.backing_file_offset == 0:
        return
    length = hdr.backing_file_size
    if length > min(1023, hdr.cluster_size - hdr.backing_file_offset) or length >= 1024:
        raise BlockError("Backing file name too long")
    hdr.backing_file = read(hdr.backing_file_offset, length).decode("utf-8", "surrogateescape")


def _ext(magic: int, data: bytes) -> bytes:
    return struct.pack(">II", magic, len(data)) + data + bytes(-len(data) % 8)


def feature_table_bytes() -> bytes:
    return b"".join(struct.pack(">BB", t, b) + name.encode().ljust(46, b"\0")
                    for t, b, name in FEATURE_TABLE)


def serialize(hdr: Qcow2Header) -> bytes:
    """The whole first cluster as qcow2_update_header() writes it (ENOSPC if too big)."""
    cluster_size = hdr.cluster_size
    buf = bytearray()
    if hdr.version >= 3:
        length = V3_HEADER_LEN + len(hdr.unknown_fields)
    else:
        length = V2_HEADER_LEN
    buf += _V2.pack(MAGIC, hdr.version, 0, 0, hdr.cluster_bits, hdr.size, hdr.crypt_method,
                    hdr.l1_size, hdr.l1_table_offset, hdr.refcount_table_offset,
                    hdr.refcount_table_clusters, hdr.nb_snapshots, hdr.snapshots_offset)
    if hdr.version >= 3:
        buf += _V3.pack(hdr.incompatible_features, hdr.compatible_features,
                        hdr.autoclear_features, hdr.refcount_order, length)
        buf += bytes([hdr.compression_type]) + bytes(7)
    # Kept after a v2 header too (a downgrade), where v2 readers take them for
    # header extensions: 7.2 writes them so.
    buf += hdr.unknown_fields
    exts = bytearray()
    if hdr.backing_format:
        exts += _ext(EXT_BACKING_FORMAT, hdr.backing_format.encode())
    if hdr.version >= 3 and cluster_size > 4096:
        # 7.2 leaves the optional table out where it would crowd the backing name.
        exts += _ext(EXT_FEATURE_TABLE, feature_table_bytes())
    for ext in hdr.unknown_extensions:
        exts += _ext(ext.magic, ext.data)
    exts += _ext(EXT_END, b"")
    if len(buf) + len(exts) > cluster_size:
        raise BlockError("No space left on device", errno.ENOSPC)
    buf += exts
    if hdr.backing_file:
        name = hdr.backing_file.encode("utf-8", "surrogateescape")
        if len(name) > cluster_size - len(buf):
            raise BlockError("No space left on device", errno.ENOSPC)
        struct.pack_into(">QI", buf, 8, len(buf), len(name))
        buf += name
    return bytes(buf.ljust(cluster_size, b"\0"))
