"""Counting the clusters of persistent dirty bitmaps in `check`, as 7.2 does.

bdrv has no bitmap support of its own, but while the bitmaps extension is marked
consistent its directory, bitmap tables and bitmap data clusters are in use: a check
that did not count them would call them leaks, and `-r` would free them under the
bitmaps. 7.2 gives no message for a broken directory or table here, only a corruption.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from bdrv.check import CheckResult
from bdrv.errors import BlockError

if TYPE_CHECKING:
    from .check import Imrt
    from .driver import Qcow2Driver

_DIR_ENTRY = struct.Struct(">QIIBBHI")
ENTRY_RESERVED_MASK = 0xFF000000000001FE
ENTRY_OFFSET_MASK = 0x00FFFFFFFFFFFE00
ENTRY_ALL_ONES = 1
MAX_TABLE_SIZE = 0x8000000
MAX_NAME_SIZE = 1023
RESERVED_FLAGS = 0xFFFFFFFC
DIRTY_TRACKING_BITMAP = 1
MIN_GRANULARITY_BITS = 9
MAX_GRANULARITY_BITS = 31


class BrokenBitmaps(Exception):
    """The directory or a table could not be used (7.2: corruptions++, -EINVAL)."""


def count_bitmap_refs(drv: Qcow2Driver, res: CheckResult, imrt: Imrt) -> None:
    """qcow2_check_bitmaps_refcounts(): raises BrokenBitmaps if the directory is bad."""
    bitmaps = drv.hdr.bitmaps
    if bitmaps is None:
        return
    nb, dir_offset, dir_size = bitmaps
    imrt.inc(dir_offset, dir_size)
    tables = _directory(drv, nb, dir_offset, dir_size)
    cs = drv.cluster_size
    for table_offset, table_size in tables:
        imrt.inc(table_offset, table_size * 8)
        try:
            raw = bytes(drv.file.pread(table_offset, table_size * 8))
        except BlockError:
            res.corruptions += 1
            return
        entries = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
        offsets = entries & np.uint64(ENTRY_OFFSET_MASK)
        bad = ((entries & np.uint64(ENTRY_RESERVED_MASK)) != 0) | (
            (offsets != 0) & (((entries & np.uint64(ENTRY_ALL_ONES)) != 0)
                              | ((offsets & np.uint64(cs - 1)) != 0)))
        res.corruptions += int(np.count_nonzero(bad))
        for offset in offsets[~bad & (offsets != 0)]:
            imrt.inc(int(offset), cs)


def _directory(drv: Qcow2Driver, nb: int, offset: int, size: int) -> list[tuple[int, int]]:
    """bitmap_list_load(): each bitmap's (table offset, table size in entries)."""
    if not size:
        raise BrokenBitmaps()
    try:
        raw = bytes(drv.file.pread(offset, size))
    except BlockError:
        raise BrokenBitmaps() from None
    tables = []
    pos = 0
    while pos < size:
        if pos + _DIR_ENTRY.size > size:
            raise BrokenBitmaps()
        (table_offset, table_size, flags, kind, granularity, name_size,
         extra_size) = _DIR_ENTRY.unpack_from(raw, pos)
        entry_size = -(-(_DIR_ENTRY.size + extra_size + name_size) // 8) * 8
        if pos + entry_size > size or not table_size or table_size > MAX_TABLE_SIZE \
                or not table_offset or table_offset & (drv.cluster_size - 1) \
                or flags & RESERVED_FLAGS or kind != DIRTY_TRACKING_BITMAP \
                or not MIN_GRANULARITY_BITS <= granularity <= MAX_GRANULARITY_BITS \
                or name_size > MAX_NAME_SIZE or not name_size:
            raise BrokenBitmaps()
        tables.append((table_offset, table_size))
        pos += entry_size
    if len(tables) != nb:
        raise BrokenBitmaps()
    return tables
