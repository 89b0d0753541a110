"""The dynamic disk header, parent locators, the BAT and the tdbatmap.

Dynamic and differencing VHDs have a 1024-byte header ("cxsparse") that locates the
block allocation table (BAT: one big-endian sector number per block, 0xFFFFFFFF when
the block is absent). Differencing images also name their parent there: its UUID,
time stamp, UTF-16BE name and up to 8 platform-specific locators. XenServer's
blktap adds a "tdbatmap" (a bitmap of fully allocated blocks) after the BAT.
"""

from __future__ import annotations

import struct
import urllib.parse
from dataclasses import dataclass

import numpy as np

from bdrv.drivers.vpc.footer import SECTOR, checksum

HEADER_SIZE = 1024
HEADER_COOKIE = b"cxsparse"
HEADER_CHECKSUM_OFFSET = 36
BAT_UNUSED = 0xFFFFFFFF
LOCATOR_COUNT = 8
LOCATOR_TABLE_OFFSET = 576
# The longest locator we read: a 32767-character UTF-16 path plus terminator.
MAX_LOCATOR_BYTES = 65536

# Platform codes of parent locators.
PLAT_NONE = 0
PLAT_WI2R = 0x57693272  # "Wi2r": deprecated relative path
PLAT_WI2K = 0x5769326B  # "Wi2k": deprecated absolute path
PLAT_W2RU = 0x57327275  # "W2ru": relative path, UTF-16LE
PLAT_W2KU = 0x57326B75  # "W2ku": absolute path, UTF-16LE
PLAT_MAC = 0x4D616320  # "Mac ": a Mac OS alias blob (not a path)
PLAT_MACX = 0x4D616358  # "MacX": a file:// URL, UTF-8
RELATIVE_PLATFORMS = (PLAT_W2RU, PLAT_WI2R)

# cookie, data offset, table offset, version, max table entries, block size, checksum,
# parent uuid, parent time stamp, reserved
_LAYOUT = struct.Struct(">8sQQIIII16sII")
_LOCATOR = struct.Struct(">IIIIQ")

BATMAP_COOKIE = b"tdbatmap"
_BATMAP = struct.Struct(">8sQIII")


def platform_name(code: int) -> str:
    raw = code.to_bytes(4, "big")
    if all(0x20 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return f"0x{code:08x}"


@dataclass(frozen=True)
class ParentLocator:
    index: int
    platform: int
    data_space: int
    data_length: int
    data_offset: int

    @property
    def is_relative(self) -> bool:
        return self.platform in RELATIVE_PLATFORMS


@dataclass(frozen=True)
class DynamicHeader:
    raw: bytes
    data_offset: int
    table_offset: int
    version: int
    max_table_entries: int
    block_size: int
    checksum: int
    parent_uuid: bytes
    parent_timestamp: int
    parent_name_raw: bytes
    locators: tuple[ParentLocator, ...]

    @classmethod
    def parse(cls, raw: bytes) -> DynamicHeader:
        raw = bytes(raw[:HEADER_SIZE]).ljust(HEADER_SIZE, b"\0")
        f = _LAYOUT.unpack_from(raw)
        locators = []
        for i in range(LOCATOR_COUNT):
            code, space, length, _reserved, offset = _LOCATOR.unpack_from(
                raw, LOCATOR_TABLE_OFFSET + 24 * i)
            locators.append(ParentLocator(i, code, space, length, offset))
        return cls(raw, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], raw[64:576],
                   tuple(locators))

    @property
    def has_cookie(self) -> bool:
        return self.raw[:8] == HEADER_COOKIE

    def computed_checksum(self) -> int:
        return checksum(self.raw, HEADER_CHECKSUM_OFFSET)

    @property
    def checksum_ok(self) -> bool:
        return self.computed_checksum() == self.checksum

    @property
    def bitmap_size(self) -> int:
        """Bytes of sector bitmap in front of each block, padded to whole sectors."""
        return (self.block_size // (8 * SECTOR) + SECTOR - 1) // SECTOR * SECTOR

    @property
    def parent_name(self) -> str:
        """The parent's UTF-16BE name; undecodable bytes are replaced, never raised."""
        name = self.parent_name_raw.decode("utf-16-be", errors="replace")
        return name.split("\0", 1)[0]

    def with_checksum_fixed(self) -> DynamicHeader:
        buf = bytearray(self.raw)
        struct.pack_into(">I", buf, HEADER_CHECKSUM_OFFSET,
                         checksum(buf, HEADER_CHECKSUM_OFFSET))
        return DynamicHeader.parse(bytes(buf))


def pack_header(*, table_offset: int, max_table_entries: int, block_size: int,
                parent_uuid: bytes = bytes(16), parent_timestamp: int = 0,
                parent_name: str = "", locators: tuple[ParentLocator, ...] = ()) -> bytes:
    """A dynamic header as 7.2 writes it (data offset all ones), checksummed."""
    buf = bytearray(HEADER_SIZE)
    _LAYOUT.pack_into(buf, 0, HEADER_COOKIE, 0xFFFFFFFFFFFFFFFF, table_offset, 0x00010000,
                      max_table_entries, block_size, 0, parent_uuid, parent_timestamp, 0)
    name = parent_name.encode("utf-16-be")[:512]
    buf[64:64 + len(name)] = name
    for loc in locators:
        _LOCATOR.pack_into(buf, LOCATOR_TABLE_OFFSET + 24 * loc.index, loc.platform,
                           loc.data_space, loc.data_length, 0, loc.data_offset)
    struct.pack_into(">I", buf, HEADER_CHECKSUM_OFFSET, checksum(buf, HEADER_CHECKSUM_OFFSET))
    return bytes(buf)


class LocatorError(ValueError):
    """A parent locator that cannot be used, with the reason."""


def decode_locator(loc: ParentLocator, data: bytes) -> str:
    """The POSIX-style path a locator's data names; LocatorError if it is unusable.

    Windows paths keep their drive letter; `\\` becomes `/`. MacX locators are
    file:// URLs (percent-encoded UTF-8).
    """
    if loc.platform in (PLAT_W2RU, PLAT_W2KU):
        if len(data) % 2:
            raise LocatorError("odd length for UTF-16 data")
        try:
            text = data.decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise LocatorError(f"invalid UTF-16LE data ({exc.reason})") from None
    elif loc.platform in (PLAT_WI2R, PLAT_WI2K):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise LocatorError("non-ASCII data in a deprecated Wi2r/Wi2k locator") from None
    elif loc.platform == PLAT_MACX:
        try:
            url = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LocatorError(f"invalid UTF-8 data ({exc.reason})") from None
        url = url.split("\0", 1)[0]
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise LocatorError(f"not a local file:// URL: {url!r}")
        try:
            text = urllib.parse.unquote(parsed.path, errors="strict")
        except UnicodeDecodeError:
            raise LocatorError("invalid percent-encoded UTF-8 in the URL") from None
    else:
        raise LocatorError(f"unsupported platform {platform_name(loc.platform)}")
    text = text.split("\0", 1)[0]
    if not text:
        raise LocatorError("empty path")
    if loc.platform != PLAT_MACX:
        text = text.replace("\\", "/")
    return text


def encode_w2u(path: str) -> bytes:
    """A W2ku/W2ru locator's data: the path with `\\` separators, UTF-16LE, no NUL."""
    return path.replace("/", "\\").encode("utf-16-le")


# -- the block allocation table ------------------------------------------------


def parse_bat(raw: bytes, entries: int) -> np.ndarray:
    """The BAT entries stored in `raw`, as native uint32.

    Entries past the end of the file are not materialised (a hostile header may claim
    2^29 of them); callers treat them as 0, which is what 7.2 reads there.
    """
    have = min(entries, len(raw) // 4)
    return np.frombuffer(raw, dtype=">u4", count=have).astype(np.uint32)


def pack_bat_entry(value: int) -> bytes:
    return struct.pack(">I", value)


# -- the XenServer batmap -----------------------------------------------------


@dataclass(frozen=True)
class BatmapHeader:
    offset: int  # where the header itself is
    batmap_offset: int
    batmap_sectors: int
    version: int
    checksum: int

    @classmethod
    def parse(cls, offset: int, raw: bytes) -> BatmapHeader | None:
        if len(raw) < _BATMAP.size or raw[:8] != BATMAP_COOKIE:
            return None
        f = _BATMAP.unpack_from(raw)
        return cls(offset, f[1], f[2], f[3], f[4])

    @property
    def end(self) -> int:
        return self.batmap_offset + self.batmap_sectors * SECTOR

    def checksum_matches(self, data: bytes) -> bool:
        """blktap's batmap checksum; version 1.1 summed signed chars, later ones bytes."""
        arr = np.frombuffer(data, dtype=np.uint8)
        unsigned = ~int(arr.sum(dtype=np.uint64)) & 0xFFFFFFFF
        signed = ~int(arr.view(np.int8).sum(dtype=np.int64)) & 0xFFFFFFFF
        return self.checksum in (unsigned, signed)
