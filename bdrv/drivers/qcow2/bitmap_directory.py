"""The persistent bitmap directory, read and validated as 7.2's bitmap_list_load().

bdrv does not use bitmaps, but 7.2 refuses to open an image whose consistent bitmap
directory is broken, and `check` needs each bitmap's table to count its clusters.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from bdrv.errors import BlockError

if TYPE_CHECKING:
    from .driver import Qcow2Driver

# Directory entry: table offset, table size, flags, type, granularity bits, name
# size, extra data size; then extra data and name, padded to 8 bytes.
_DIR_ENTRY = struct.Struct(">QIIBBHI")
MAX_TABLE_SIZE = 0x8000000
MAX_PHYS_SIZE = 0x20000000
MAX_NAME_SIZE = 1023
RESERVED_FLAGS = 0xFFFFFFFC
FLAG_IN_USE = 1
DIRTY_TRACKING_BITMAP = 1
MIN_GRANULARITY_BITS = 9
MAX_GRANULARITY_BITS = 31
MAX_DIRECTORY_SIZE = 1024 * 65535


def read_bitmap_directory(drv: Qcow2Driver) -> list[tuple[int, int]]:
    """Each bitmap's (table offset, table size in entries); BlockError with 7.2's
    words if the directory cannot be used."""
    if drv.hdr.bitmaps is None:
        return []
    nb, offset, size = drv.hdr.bitmaps
    if not size:
        raise BlockError("Requested bitmap directory size is zero")
    if size > MAX_DIRECTORY_SIZE:
        raise BlockError("Requested bitmap directory size is too big")
    try:
        raw = bytes(drv.file.pread(offset, size))
    except BlockError as exc:
        raise BlockError(f"Failed to read bitmap directory: {exc.message}",
                         exc.errno) from None
    tables: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        if pos + _DIR_ENTRY.size > size:
            raise BlockError("Broken bitmap directory")
        if len(tables) == nb:
            raise BlockError("More bitmaps found than specified in header extension")
        (table_offset, table_size, flags, kind, granularity, name_size,
         extra_size) = _DIR_ENTRY.unpack_from(raw, pos)
        entry_size = -(-(_DIR_ENTRY.size + extra_size + name_size) // 8) * 8
        if pos + entry_size > size:
            raise BlockError("Broken bitmap directory")
        if extra_size:
            raise BlockError("Bitmap extra data is not supported")
        if not _entry_ok(drv, table_offset, table_size, flags, kind, granularity,
                         name_size):
            start = pos + _DIR_ENTRY.size + extra_size
            name = raw[start : start + name_size].decode("utf-8", "replace")
            raise BlockError(f"Bitmap '{name}' doesn't satisfy the constraints")
        tables.append((table_offset, table_size))
        pos += entry_size
    if len(tables) != nb:
        raise BlockError("Less bitmaps found than specified in header extension")
    return tables


def _entry_ok(drv: Qcow2Driver, table_offset: int, table_size: int, flags: int, kind: int,
              granularity: int, name_size: int) -> bool:
    """check_dir_entry(): the entry's fields, and a table big enough for the disk."""
    cs = drv.cluster_size
    if not table_size or not table_offset or table_offset % cs \
            or table_size > MAX_TABLE_SIZE \
            or not MIN_GRANULARITY_BITS <= granularity <= MAX_GRANULARITY_BITS \
            or flags & RESERVED_FLAGS or name_size > MAX_NAME_SIZE \
            or kind != DIRTY_TRACKING_BITMAP:
        return False
    phys_bytes = table_size * cs
    if phys_bytes > MAX_PHYS_SIZE:
        return False
    return bool(flags & FLAG_IN_USE) or drv.size <= (phys_bytes * 8) << granularity
