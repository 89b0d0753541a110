"""Exact answers of Mapping.lookup() from per-table run ends, for many small lookups.

convert asks for block status one extent at a time and must get exactly the extents
the per-extent path gives (its chunking, and so its output, depends on them). In a
fragmented image that is a lookup per cluster or two, each costing Python and numpy
overhead. Here each L2 table is classified once (numpy): the (sub)cluster type of every
entry and where the run it belongs to ends, as lookup() counts runs (same type, host
offsets contiguous for the types that have one, compressed clusters alone, never past
the table). A lookup is then a few list indexings.

Only plain L2 entries (no extended L2); a table lookup() would refuse anywhere (see
l2_runs._refused) or fail to read is not indexed: `lookup()` returns None there and
the caller takes the per-extent path, which reports the problem as it always does.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from bdrv.errors import BlockError

from .l2_runs import _refused
from .mapping import (
    L1E_OFFSET_MASK,
    L2E_OFFSET_MASK,
    OFLAG_COMPRESSED,
    OFLAG_ZERO,
    SC_COMPRESSED,
    SC_NORMAL,
    SC_UNALLOC_PLAIN,
    SC_ZERO_ALLOC,
    SC_ZERO_PLAIN,
)

if TYPE_CHECKING:
    from .mapping import Mapping

# Indexed tables kept (Python lists of l2_size entries each): sequential readers need 1.
MAX_TABLES = 8
_U64 = np.uint64


class RunIndex:
    """lookup() for one qcow2 layer with plain L2 entries."""

    def __init__(self, m: Mapping, status_flags: list[int]) -> None:
        assert not m.extended
        self.m = m
        self.status_flags = status_flags  # block_status() flags per type
        self.tables: OrderedDict[int, tuple[list[int], list[int]] | None] = OrderedDict()

    def lookup(self, offset: int, length: int) -> tuple[int, int] | None:
        """(type, bytes) as Mapping.lookup(offset, length) gives them, or None."""
        m = self.m
        cb = m.cluster_bits
        in_cluster = offset & (m.cluster_size - 1)
        l2_index = (offset >> cb) & (m.l2_size - 1)
        needed = min(length + in_cluster, (m.l2_size - l2_index) << cb)
        l1_index = offset >> (cb + m.l2_bits)
        indexed = self._table(l1_index)
        if indexed is None:
            return None
        types, run_end = indexed
        if not types:  # no L2 table: the whole range unallocated
            return SC_UNALLOC_PLAIN, needed - in_cluster
        count = run_end[l2_index] - l2_index
        return types[l2_index], min(count << cb, needed) - in_cluster

    def _table(self, l1_index: int) -> tuple[list[int], list[int]] | None:
        if l1_index in self.tables:
            self.tables.move_to_end(l1_index)
            return self.tables[l1_index]
        indexed = self._index(l1_index)
        self.tables[l1_index] = indexed
        if len(self.tables) > MAX_TABLES:
            self.tables.popitem(last=False)
        return indexed

    def _index(self, l1_index: int) -> tuple[list[int], list[int]] | None:
        m = self.m
        # Not l2_offset_for(): an unaligned offset is for the per-extent path to report.
        l2_offset = int(m.l1[l1_index]) & L1E_OFFSET_MASK if l1_index < m.l1_size else 0
        if not l2_offset:
            return [], []
        if l2_offset & (m.cluster_size - 1):
            return None
        try:
            entries = m.cache.get(l2_offset)
        except BlockError:
            return None
        if len(entries) != m.l2_size or np.any(_refused(m, entries)):
            return None
        offs = entries & _U64(L2E_OFFSET_MASK)
        compressed = (entries & _U64(OFLAG_COMPRESSED)) != 0
        zero = (entries & _U64(OFLAG_ZERO)) != 0
        types = np.where(offs != 0, SC_NORMAL, SC_UNALLOC_PLAIN)
        types[zero] = np.where(offs[zero] != 0, SC_ZERO_ALLOC, SC_ZERO_PLAIN)
        types[compressed] = SC_COMPRESSED
        # A run starts where the type changes, at every compressed cluster, and where a
        # type with a host offset stops being contiguous.
        starts = np.ones(len(types), dtype=bool)
        has_host = (types == SC_NORMAL) | (types == SC_ZERO_ALLOC)
        contiguous = offs[1:] == offs[:-1] + _U64(m.cluster_size)
        starts[1:] = (types[1:] != types[:-1]) | (types[1:] == SC_COMPRESSED) | (
            has_host[1:] & ~contiguous)
        bounds = np.append(np.flatnonzero(starts), len(types))
        run_end = bounds[np.searchsorted(bounds, np.arange(len(types)), side="right")]
        return types.tolist(), run_end.tolist()
