"""Counting the clusters of persistent dirty bitmaps in `check`, as 7.2 does.

bdrv has no bitmap support of its own, but while the bitmaps extension is marked
consistent its directory, bitmap tables and bitmap data clusters are in use: a check
that did not count them would call them leaks, and `-r` would free them under the
bitmaps. 7.2 gives no message for a broken directory or table here, only a corruption.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bdrv.check import CheckResult
from bdrv.errors import BlockError

from .bitmap_directory import read_bitmap_directory

if TYPE_CHECKING:
    from .check import Imrt
    from .driver import Qcow2Driver

ENTRY_RESERVED_MASK = 0xFF000000000001FE
ENTRY_OFFSET_MASK = 0x00FFFFFFFFFFFE00
ENTRY_ALL_ONES = 1
TABLE_READ_BYTES = 4 << 20


class BrokenBitmaps(Exception):
    """The directory or a table could not be used (7.2: corruptions++, -EINVAL)."""


def count_bitmap_refs(drv: Qcow2Driver, res: CheckResult, imrt: Imrt) -> None:
    """qcow2_check_bitmaps_refcounts(): raises BrokenBitmaps if the directory is bad."""
    bitmaps = drv.hdr.bitmaps
    if bitmaps is None:
        return
    _nb, dir_offset, dir_size = bitmaps
    imrt.inc(dir_offset, dir_size)
    try:
        tables = read_bitmap_directory(drv)
    except BlockError:
        raise BrokenBitmaps() from None
    cs = drv.cluster_size
    file_len = drv.file.getlength()
    for table_offset, table_size in tables:
        imrt.inc(table_offset, table_size * 8)
        # Past the end of the file a table reads as zeros, which reference nothing:
        # only the part inside the file is read, a few MiB at a time.
        end = min(table_offset + table_size * 8, max(file_len, table_offset))
        for pos in range(table_offset, end, TABLE_READ_BYTES):
            try:
                raw = bytes(drv.file.pread(pos, min(TABLE_READ_BYTES, end - pos)))
            except BlockError:
                res.corruptions += 1
                return
            _count_entries(np.frombuffer(raw, dtype=">u8").astype(np.uint64), cs, res, imrt)


def _count_entries(entries: np.ndarray, cs: int, res: CheckResult, imrt: Imrt) -> None:
    """A run of bitmap table entries: bad ones are corruptions, the rest reference
    their data cluster."""
    offsets = entries & np.uint64(ENTRY_OFFSET_MASK)
    bad = ((entries & np.uint64(ENTRY_RESERVED_MASK)) != 0) | (
        (offsets != 0) & (((entries & np.uint64(ENTRY_ALL_ONES)) != 0)
                          | ((offsets & np.uint64(cs - 1)) != 0)))
    res.corruptions += int(np.count_nonzero(bad))
    for offset in offsets[~bad & (offsets != 0)]:
        imrt.inc(int(offset), cs)
