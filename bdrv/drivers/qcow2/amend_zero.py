"""Zero clusters for a downgrade to v2 (7.2's qcow2_expand_zero_clusters).

v2 has no zero flag. A zero cluster without a backing file becomes unallocated (it
reads as zeros anyway); with a backing file it gets a cluster of zeros, and a
preallocated zero cluster keeps its cluster, zeroed. The active L1 table comes
first, then each snapshot's, in table order; L2 tables shared between them are
expanded once. Progress counts L1 entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bdrv.errors import BlockError

from .alloc import OL_ACTIVE_L2, write_l2
from .header import MAX_L1_SIZE, _check_table
from .mapping import (
    C_ZERO_ALLOC,
    C_ZERO_PLAIN,
    L1E_OFFSET_MASK,
    L2E_OFFSET_MASK,
    OFLAG_COPIED,
    c_hex,
)
from .refcount import DISCARD_ALWAYS, DISCARD_OTHER

if TYPE_CHECKING:
    from .driver import Qcow2Driver

Status = Callable[[int, int], None]
OL_INACTIVE_L2 = 1 << 7


class _Expansion:
    def __init__(self, drv: Qcow2Driver, status: Status, total: int) -> None:
        self.drv = drv
        self.status = status
        self.total = total
        self.visited = 0

    def l1_table(self, l1: np.ndarray, active: bool) -> None:
        drv = self.drv
        for i, entry in enumerate(l1.tolist()):
            l2_offset = int(entry) & L1E_OFFSET_MASK
            if l2_offset:
                if l2_offset & (drv.cluster_size - 1):
                    raise drv.corruption(f"L2 table offset {l2_offset:#x} unaligned "
                                         f"(L1 index: {c_hex(i)})")
                refcount = drv.rc.get(l2_offset >> drv.cluster_bits)
                if active:
                    table = drv.map.cache.get(l2_offset)
                else:
                    raw = drv.file.pread(l2_offset, drv.cluster_size)
                    table = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
                if self._l2_table(l2_offset, table, refcount):
                    self._write(l2_offset, table, active)
            self.visited += 1
            self.status(self.visited, self.total)

    def _l2_table(self, l2_offset: int, table: np.ndarray, l2_refcount: int) -> bool:
        """Expand the zero entries of one table in place; True if any changed."""
        drv = self.drv
        cs = drv.cluster_size
        dirty = False
        for j in np.flatnonzero(table & np.uint64(1)).tolist():
            entry = int(table[j])
            ctype = drv.map.cluster_type(entry)
            if ctype not in (C_ZERO_PLAIN, C_ZERO_ALLOC):
                continue
            offset = entry & L2E_OFFSET_MASK
            plain = ctype == C_ZERO_PLAIN
            if plain:
                if not drv.has_backing():
                    table[j] = 0
                    dirty = True
                    continue
                offset = drv.rc.alloc_clusters(cs)
                if l2_refcount > 1:
                    # A shared table: each of its users holds a reference.
                    try:
                        drv.rc.update(offset, cs, l2_refcount - 1, False, DISCARD_OTHER)
                    except BlockError:
                        drv.rc.free(offset, cs, DISCARD_OTHER)
                        raise
            try:
                if offset & (cs - 1):
                    raise drv.corruption(f"Cluster allocation offset {offset:#x} unaligned "
                                         f"(L2 offset: {l2_offset:#x}, L2 index: {c_hex(j)})")
                drv.check_overlap(0, offset, cs)
                drv.file.pwrite_zeroes(offset, cs, 0)
            except BlockError:
                if plain:
                    drv.rc.free(offset, cs, DISCARD_ALWAYS)
                raise
            table[j] = offset | OFLAG_COPIED if l2_refcount == 1 else offset
            dirty = True
        return dirty

    def _write(self, l2_offset: int, table: np.ndarray, active: bool) -> None:
        drv = self.drv
        if active:
            write_l2(drv, l2_offset, table, 0, drv.map.l2_size)
            return
        drv.check_overlap(OL_ACTIVE_L2 | OL_INACTIVE_L2, l2_offset, drv.cluster_size)
        drv.file.pwrite(l2_offset, table.astype(">u8").tobytes())


def expand_zero_clusters(drv: Qcow2Driver, status: Status) -> None:
    snapshots = drv.snapshots.snapshots
    total = drv.map.l1_size + sum(sn.l1_size for sn in snapshots)
    work = _Expansion(drv, status, total)
    work.l1_table(drv.map.l1, True)
    # Snapshot L1 tables may point at tables just changed: write back what a
    # write-back cache (blkdebug) holds, then read them from the file.
    drv.map.flush_cache()
    drv.map.cache.tables.clear()
    for sn in snapshots:
        _check_table(drv.cluster_size, sn.l1_table_offset, sn.l1_size, 8, MAX_L1_SIZE,
                     "Snapshot L1 table")
        raw = drv.file.pread(sn.l1_table_offset, sn.l1_size * 8) if sn.l1_size else b""
        work.l1_table(np.frombuffer(raw, dtype=">u8").astype(np.uint64), False)
