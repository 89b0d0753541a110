"""Changing the refcount entry width (7.2's qcow2_change_refcount_order).

The old refcounts are walked in reftable order and cut into new refblocks. Walks
that only allocate the new refblocks (with the old structures' allocator, so the new
clusters are counted by the old refcounts and thus show up in the new ones) repeat,
each followed by allocating a new reftable, until a walk allocates nothing; a last
walk writes the refblocks. Then the new reftable is written, the header switched,
and the old refblocks and reftable freed under the new width. Allocation order is
7.2's, so the clusters land where 7.2 puts them.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bdrv.errors import BlockError

from .amend import errno_error
from .mapping import c_hex
from .refcount import (
    DISCARD_NEVER,
    DISCARD_OTHER,
    MAX_REFTABLE_SIZE,
    REFT_OFFSET_MASK,
    encode_entries,
)

if TYPE_CHECKING:
    from .driver import Qcow2Driver

Status = Callable[[int, int], None]


class _Walk:
    """One pass over the old refcounts, cut into blocks of the new width."""

    def __init__(self, drv: Qcow2Driver, order: int, reftable: list[int],
                 write: bool) -> None:
        self.drv = drv
        self.order = order
        self.bits = 1 << order
        self.block_size = 1 << (drv.cluster_bits - (order - 3))
        self.reftable = reftable
        self.write = write
        self.allocated = False
        self.buf = np.zeros(self.block_size, dtype=np.uint64)

    def run(self, index: int, total: int, status: Status) -> None:
        """walk_over_reftable(); `index` of `total` walks, for the progress figures."""
        rc = self.drv.rc
        new_index = fill = 0
        empty = True
        j = 0
        while j < rc.table_size:
            size = rc.table_size
            status(index * size + j, total * size)
            try:
                block_offset = rc._block_offset(j)
            except BlockError:
                raise BlockError("Image is corrupt (unaligned refblock offset)",
                                 errno.EIO) from None
            pos = 0
            while pos < rc.block_size:
                if fill >= self.block_size:
                    self._finish(new_index, empty)
                    new_index, fill, empty = new_index + 1, 0, True
                n = min(self.block_size - fill, rc.block_size - pos)
                if block_offset:
                    try:
                        values = rc.load_block(block_offset)[pos : pos + n]
                    except BlockError as exc:
                        raise errno_error("Failed to retrieve refblock", exc) from None
                    self._check_width(values, (j << rc.block_bits) + pos)
                    if values.any():
                        empty = False
                    self.buf[fill : fill + n] = values
                else:
                    self.buf[fill : fill + n] = 0
                fill += n
                pos += n
            j += 1
        if fill:
            self.buf[fill:] = 0
            self._finish(new_index, empty)
        size = rc.table_size
        status((index + 1) * size, total * size)

    def _check_width(self, values: np.ndarray, first_cluster: int) -> None:
        if self.bits >= 64:
            return
        big = np.flatnonzero(values >> np.uint64(self.bits))
        if len(big):
            k = int(big[0])
            offset = (first_cluster + k) << self.drv.cluster_bits
            raise BlockError(f"Cannot decrease refcount entry width to {self.bits} bits: "
                             f"Cluster at offset {c_hex(offset)} has a refcount of "
                             f"{int(values[k])}")

    def _finish(self, index: int, empty: bool) -> None:
        if self.write:
            self._flush_refblock(index, empty)
        else:
            self._alloc_refblock(index, empty)

    def _alloc_refblock(self, index: int, empty: bool) -> None:
        """alloc_refblock(): a cluster for every new refblock that holds a refcount."""
        if empty:
            return
        drv, table = self.drv, self.reftable
        if index >= len(table):
            per_cluster = drv.cluster_size // 8
            new_size = -(-(index + 1) // per_cluster) * per_cluster
            if new_size > MAX_REFTABLE_SIZE // 8:
                raise BlockError("This operation would make the refcount table grow beyond "
                                 "the maximum size supported by QEMU, aborting",
                                 errno.ENOTSUP)
            table.extend([0] * (new_size - len(table)))
        if not table[index]:
            try:
                table[index] = drv.rc.alloc_clusters(drv.cluster_size)
            except BlockError as exc:
                raise errno_error("Failed to allocate refblock", exc) from None
            self.allocated = True

    def _flush_refblock(self, index: int, empty: bool) -> None:
        drv = self.drv
        if index < len(self.reftable) and self.reftable[index]:
            offset = self.reftable[index]
            try:
                drv.check_overlap(0, offset, drv.cluster_size)
            except BlockError as exc:
                raise errno_error("Overlap check failed", exc) from None
            try:
                drv.file.pwrite(offset, encode_entries(self.buf, self.order))
            except BlockError as exc:
                raise errno_error("Failed to write refblock", exc) from None


def change_refcount_order(drv: Qcow2Driver, order: int, status: Status) -> None:
    rc = drv.rc
    reftable: list[int] = []
    table_offset = allocated_size = 0
    try:
        walk_index = 0
        while True:
            total_walks = max(walk_index + 2, 3)
            walk = _Walk(drv, order, reftable, False)
            walk.run(walk_index, total_walks, status)
            walk_index += 1
            if not walk.allocated:
                break
            # The new reftable must be counted too, so the walks go on until it is.
            if table_offset:
                rc.free(table_offset, allocated_size * 8, DISCARD_NEVER)
            table_offset = 0
            try:
                table_offset = rc.alloc_clusters(len(reftable) * 8)
            except BlockError as exc:
                raise errno_error("Failed to allocate the new reftable", exc) from None
            allocated_size = len(reftable)
        _Walk(drv, order, reftable, True).run(walk_index, walk_index + 1, status)
        _install(drv, order, reftable, table_offset)
    except BlockError:
        _free_structures(drv, reftable, table_offset)
        raise


def _install(drv: Qcow2Driver, order: int, reftable: list[int], table_offset: int) -> None:
    """Write the new reftable, point the header at it, free the old structures."""
    rc = drv.rc
    data = np.array(reftable, dtype=">u8").tobytes()
    try:
        drv.check_overlap(0, table_offset, len(data))
    except BlockError as exc:
        raise errno_error("Overlap check failed", exc) from None
    try:
        drv.file.pwrite(table_offset, data)
    except BlockError as exc:
        raise errno_error("Failed to write the new reftable", exc) from None
    try:
        rc.write_cache()  # only a write-back cache (blkdebug) holds anything
        drv.file.flush()
    except BlockError as exc:
        raise errno_error("Failed to flush the refblock cache", exc) from None
    old_table, old_offset, old_order = rc.table, rc.table_offset, drv.hdr.refcount_order
    rc.table = np.array(reftable, dtype=np.uint64)
    rc.table_offset = table_offset
    drv.hdr.refcount_order = order
    try:
        drv.update_header()
    except BlockError as exc:
        rc.table, rc.table_offset, drv.hdr.refcount_order = old_table, old_offset, old_order
        raise errno_error("Failed to update the qcow2 header", exc) from None
    rc.set_order(order)
    # From here on the old structures are plain clusters counted by the new ones.
    reftable.clear()
    reftable.extend(int(x) for x in old_table)
    _free_structures(drv, reftable, old_offset)
    reftable.clear()


def _free_structures(drv: Qcow2Driver, reftable: list[int], table_offset: int) -> None:
    """Free the refblocks `reftable` names and the table itself (7.2's cleanup)."""
    rc = drv.rc
    if not reftable:
        return
    for entry in reftable:
        offset = entry & REFT_OFFSET_MASK
        if offset:
            rc.free(offset, drv.cluster_size, DISCARD_OTHER)
    if table_offset > 0:
        rc.free(table_offset, len(reftable) * 8, DISCARD_OTHER)

