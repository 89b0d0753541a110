"""The VHD hard disk footer, its checksum, and CHS geometry.

Every VHD ends with a 512-byte footer (dynamic and differencing images also keep a
copy at offset 0). All fields are big-endian. The virtual size QEMU 7.2 exposes is
the CHS geometry's, or the footer's current size for the creator apps that size
disks that way (Hyper-V, disk2vhd, XenServer, qemu's force_size).
"""

from __future__ import annotations

import errno
import struct
import uuid as uuidlib
from dataclasses import dataclass, replace

import numpy as np

from bdrv.errors import BlockError

SECTOR = 512
FOOTER_SIZE = 512
COOKIE = b"conectix"

TYPE_FIXED = 2
TYPE_DYNAMIC = 3
TYPE_DIFFERENCING = 4
TYPE_NAMES = {TYPE_FIXED: "fixed", TYPE_DYNAMIC: "dynamic", TYPE_DIFFERENCING: "differencing"}

# Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC).
VHD_EPOCH = 946684800
NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF

CHS_MAX_C = 65535
CHS_MAX_H = 16
CHS_MAX_S = 255
MAX_GEOMETRY = CHS_MAX_C * CHS_MAX_H * CHS_MAX_S
# QEMU's limit: 2040 GiB.
MAX_SECTORS = 0xFF000000

# Creator apps whose images are sized by current_size rather than by CHS (7.2's table).
_CURRENT_SIZE_APPS = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")

# cookie, features, version, data_offset, timestamp, creator app, major, minor,
# creator os, original size, current size, cylinders, heads, sectors, type,
# checksum, uuid, saved state
_LAYOUT = struct.Struct(">8sIIQI4sHH4sQQHBBII16sB")
CHECKSUM_OFFSET = 64


def checksum(buf: bytes | bytearray, skip: int) -> int:
    """One's complement of the byte sum, the 4 bytes at `skip` counted as zero."""
    arr = np.frombuffer(bytes(buf), dtype=np.uint8)
    total = int(arr.sum(dtype=np.uint64)) - int(arr[skip:skip + 4].sum(dtype=np.uint64))
    return ~total & 0xFFFFFFFF


@dataclass(frozen=True)
class Footer:
    """A parsed footer. `raw` keeps the exact 512 bytes (reserved bytes included)."""

    raw: bytes
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_major: int
    creator_minor: int
    creator_os: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors_per_track: int
    disk_type: int
    checksum: int
    uuid: bytes
    saved_state: int

    @classmethod
    def parse(cls, raw: bytes) -> Footer:
        if len(raw) < FOOTER_SIZE:
            raw = raw + bytes(FOOTER_SIZE - len(raw))
        raw = bytes(raw[:FOOTER_SIZE])
        f = _LAYOUT.unpack_from(raw)
        return cls(raw, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11],
                   f[12], f[13], f[14], f[15], f[16], f[17])

    @property
    def has_cookie(self) -> bool:
        return self.raw[:8] == COOKIE

    def computed_checksum(self) -> int:
        return checksum(self.raw, CHECKSUM_OFFSET)

    @property
    def checksum_ok(self) -> bool:
        return self.computed_checksum() == self.checksum

    @property
    def geometry_sectors(self) -> int:
        return self.cylinders * self.heads * self.sectors_per_track

    @property
    def uuid_str(self) -> str:
        return str(uuidlib.UUID(bytes=self.uuid))

    def pack(self) -> bytes:
        """The footer with its fields re-encoded and a fresh checksum."""
        head = _LAYOUT.pack(COOKIE, self.features, self.version, self.data_offset,
                            self.timestamp, self.creator_app, self.creator_major,
                            self.creator_minor, self.creator_os, self.original_size,
                            self.current_size, self.cylinders, self.heads,
                            self.sectors_per_track, self.disk_type, 0, self.uuid,
                            self.saved_state)
        buf = bytearray(self.raw)
        buf[:len(head)] = head
        struct.pack_into(">I", buf, CHECKSUM_OFFSET, checksum(buf, CHECKSUM_OFFSET))
        return bytes(buf)

    def with_checksum_fixed(self) -> Footer:
        return Footer.parse(self.pack())

    def replaced(self, **changes: object) -> Footer:
        """A copy with fields changed and the raw bytes and checksum rebuilt."""
        draft = replace(self, **changes)  # type: ignore[arg-type]
        return Footer.parse(draft.pack())


def uses_current_size(footer: Footer, force_chs: bool = False, force_size: bool = False) -> bool:
    """Whether 7.2 sizes this image by current_size instead of CHS geometry."""
    by_chs = footer.creator_app not in _CURRENT_SIZE_APPS or force_chs
    return not by_chs or footer.geometry_sectors == MAX_GEOMETRY or force_size


def virtual_sectors(footer: Footer, force_chs: bool = False, force_size: bool = False) -> int:
    """The disk size in sectors as 7.2's vpc_open computes it."""
    if uses_current_size(footer, force_chs, force_size):
        return footer.current_size // SECTOR
    return footer.geometry_sectors


def calculate_geometry(total_sectors: int) -> tuple[int, int, int]:
    """CHS for a sector count, by the spec's algorithm with 7.2's 255-sector top range.

    The geometry may cover fewer sectors than asked for (it rounds down).
    """
    total_sectors = min(total_sectors, MAX_GEOMETRY)
    if total_sectors >= 65535 * 16 * 63:
        secs, heads = 255, 16
        cyls_times_heads = total_sectors // secs
    else:
        secs = 17
        cyls_times_heads = total_sectors // secs
        heads = max(4, -(-cyls_times_heads // 1024))
        if cyls_times_heads >= heads * 1024 or heads > 16:
            secs, heads = 31, 16
            cyls_times_heads = total_sectors // secs
        if cyls_times_heads >= heads * 1024:
            secs, heads = 63, 16
            cyls_times_heads = total_sectors // secs
    # QEMU stores these in uint8/uint16 fields: the truncation is part of the rule.
    cyls = (cyls_times_heads // heads) & 0xFFFF
    return cyls, heads & 0xFF, secs


def rounded_image_size(size: int, force_size: bool) -> tuple[int, int, int, int]:
    """(cylinders, heads, sectors, total_sectors) for a requested byte size.

    The geometry is grown until it covers the size, so conversions never truncate;
    sizes beyond CHS get the maximum geometry and keep their exact sector count.
    """
    if force_size:
        cyls, heads, secs = CHS_MAX_C, CHS_MAX_H, CHS_MAX_S
    else:
        total = min(MAX_GEOMETRY, size // SECTOR)
        cyls = heads = secs = 0
        extra = 0
        while total > cyls * heads * secs:
            cyls, heads, secs = calculate_geometry(total + extra)
            extra += 1
    if cyls * heads * secs == MAX_GEOMETRY:
        total_sectors = size // SECTOR
        if total_sectors > MAX_SECTORS:
            raise BlockError("Disk size is too large, max size is 2040 GiB", errno.EFBIG)
    else:
        total_sectors = cyls * heads * secs
    return cyls, heads, secs, total_sectors
