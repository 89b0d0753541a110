"""Guest-to-host mapping: the L1 table, L2 tables (normal and extended) and their cache.

`lookup()` answers what qcow2_get_host_offset() answers: the (sub)cluster type at a
guest offset, its host offset, and how many bytes from there share that type (and,
for allocated data, are contiguous on the host), never crossing an L2 table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bdrv.errors import BlockError

if TYPE_CHECKING:
    from bdrv.graph import Node

L1E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L2E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1
L2_BITMAP_ALL_ALLOC = 0xFFFFFFFF
L2_BITMAP_ALL_ZEROES = 0xFFFFFFFF << 32
SUBCLUSTERS = 32

# QCow2SubclusterType.
SC_NORMAL, SC_COMPRESSED, SC_ZERO_PLAIN, SC_ZERO_ALLOC = 0, 1, 2, 3
SC_UNALLOC_PLAIN, SC_UNALLOC_ALLOC, SC_INVALID = 4, 5, 6
# QCow2ClusterType.
C_UNALLOCATED, C_ZERO_PLAIN, C_ZERO_ALLOC, C_NORMAL, C_COMPRESSED = range(5)


def c_hex(value: int) -> str:
    """C's %#x: "0" for zero, else 0x-prefixed."""
    return f"{value:#x}" if value else "0"


def _cto32(v: int) -> int:
    """Count trailing ones of a 32-bit value."""
    n = 0
    while n < 32 and v >> n & 1:
        n += 1
    return n


def _ctz32(v: int) -> int:
    v &= 0xFFFFFFFF
    return (v & -v).bit_length() - 1 if v else 32


class L2Cache:
    """Decoded L2 tables by host offset (entries, or entry/bitmap pairs), LRU-bounded."""

    def __init__(self, file: Node, table_bytes: int, max_tables: int) -> None:
        self.file = file
        self.table_bytes = table_bytes
        self.max_tables = max(max_tables, 4)
        self.tables: OrderedDict[int, np.ndarray] = OrderedDict()
        # With blkdebug below, QEMU's write-back L2 cache is emulated: tables changed
        # but not yet written (see Mapping.write_cache).
        self.dbg = file.debug
        self.dirty: dict[int, np.ndarray] = {}

    def get(self, offset: int) -> np.ndarray:
        table = self.tables.get(offset)
        if table is None:
            if self.dbg is not None:
                self.dbg.event("l2_load")
            raw = self.file.pread(offset, self.table_bytes)
            table = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
            self.put(offset, table)
        else:
            self.tables.move_to_end(offset)
        return table

    def put(self, offset: int, table: np.ndarray) -> None:
        self.tables[offset] = table
        self.tables.move_to_end(offset)
        while len(self.tables) > self.max_tables:
            self.tables.popitem(last=False)

    def drop(self, offset: int) -> None:
        self.tables.pop(offset, None)
        self.dirty.pop(offset, None)


class Mapping:
    """L1 table plus L2 access for one image."""

    def __init__(self, file: Node, cluster_bits: int, extended: bool, version: int,
                 l1_offset: int, l1_size: int, corruption: Callable[[str], BlockError],
                 cache_tables: int = 256) -> None:
        self.file = file
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.extended = extended
        self.version = version
        self.width = 2 if extended else 1
        self.l2_bits = cluster_bits - (4 if extended else 3)
        self.l2_size = 1 << self.l2_bits
        self.sc_per_cluster = SUBCLUSTERS if extended else 1
        self.sc_size = self.cluster_size // self.sc_per_cluster
        self.sc_bits = self.sc_size.bit_length() - 1
        self.l1_offset = l1_offset
        try:
            raw = file.pread(l1_offset, l1_size * 8) if l1_size else b""
        except BlockError as exc:
            raise exc.prefixed("Could not read L1 table: ") from None
        self.l1 = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
        self.cache = L2Cache(file, self.cluster_size, cache_tables)
        self.corruption = corruption
        # The write-back cache's ordering rules (blkdebug only): the refcount blocks
        # must be written first (`flush_refcounts`, set by the driver), or the file
        # flushed first (after COW).
        self.depends_on_refcounts = False
        self.depends_on_flush = False
        self.flush_refcounts: Callable[[], None] = lambda: None
        self.overlap_check: Callable[[int, int, int], None] = lambda ign, off, size: None

    def mark_dirty(self, l2_offset: int, table: np.ndarray) -> None:
        self.cache.dirty[l2_offset] = table

    def write_cache(self) -> None:
        """qcow2_cache_write() for L2 tables: each dirty one whole, after what it
        depends on; the first error is raised after all were tried."""
        error: BlockError | None = None
        dbg = self.cache.dbg
        for offset in list(self.cache.dirty):
            try:
                if self.depends_on_refcounts:
                    self.flush_refcounts()
                    self.depends_on_refcounts = False
                    self.depends_on_flush = False
                elif self.depends_on_flush:
                    self.file.flush()
                    self.depends_on_flush = False
                table = self.cache.dirty.get(offset)
                if table is None:
                    continue
                self.overlap_check(1 << 2, offset, self.cluster_size)
                if dbg is not None:
                    dbg.event("l2_update")
                self.file.pwrite(offset, table.astype(">u8").tobytes())
                self.cache.dirty.pop(offset, None)
            except BlockError as exc:
                if error is None or error.errno != 28:
                    error = exc
        if error is not None:
            raise error

    def flush_cache(self) -> None:
        """qcow2_cache_flush() for L2 tables (blkdebug only)."""
        if self.cache.dbg is None:
            return
        self.write_cache()
        self.file.flush()

    @property
    def l1_size(self) -> int:
        return len(self.l1)

    # -- entry decoding --------------------------------------------------------------
    def cluster_type(self, entry: int) -> int:
        if entry & OFLAG_COMPRESSED:
            return C_COMPRESSED
        if entry & OFLAG_ZERO and not self.extended:
            return C_ZERO_ALLOC if entry & L2E_OFFSET_MASK else C_ZERO_PLAIN
        if not entry & L2E_OFFSET_MASK:
            return C_UNALLOCATED
        return C_NORMAL

    def subcluster_type(self, entry: int, bitmap: int, sc: int) -> int:
        ctype = self.cluster_type(entry)
        if not self.extended:
            return {C_COMPRESSED: SC_COMPRESSED, C_ZERO_PLAIN: SC_ZERO_PLAIN,
                    C_ZERO_ALLOC: SC_ZERO_ALLOC, C_NORMAL: SC_NORMAL,
                    C_UNALLOCATED: SC_UNALLOC_PLAIN}[ctype]
        if ctype == C_COMPRESSED:
            return SC_COMPRESSED
        if ctype == C_NORMAL:
            if (bitmap >> 32) & bitmap:
                return SC_INVALID
            if bitmap >> (32 + sc) & 1:
                return SC_ZERO_ALLOC
            if bitmap >> sc & 1:
                return SC_NORMAL
            return SC_UNALLOC_ALLOC
        if bitmap & L2_BITMAP_ALL_ALLOC:
            return SC_INVALID
        if bitmap >> (32 + sc) & 1:
            return SC_ZERO_PLAIN
        return SC_UNALLOC_PLAIN

    def range_type(self, entry: int, bitmap: int, sc_from: int) -> tuple[int, int]:
        """(type, count) of equal subclusters from `sc_from` within one cluster."""
        sc_type = self.subcluster_type(entry, bitmap, sc_from)
        if sc_type == SC_INVALID:
            return sc_type, -1
        if not self.extended or sc_type == SC_COMPRESSED:
            return sc_type, self.sc_per_cluster - sc_from
        below = (1 << sc_from) - 1
        if sc_type == SC_NORMAL:
            return sc_type, _cto32((bitmap | below) & 0xFFFFFFFF) - sc_from
        if sc_type in (SC_ZERO_PLAIN, SC_ZERO_ALLOC):
            return sc_type, _cto32(((bitmap >> 32) | below) & 0xFFFFFFFF) - sc_from
        val = ((bitmap >> 32) | bitmap) & ~below & 0xFFFFFFFF
        return sc_type, _ctz32(val) - sc_from

    # -- tables ----------------------------------------------------------------------
    def l2_offset_for(self, l1_index: int) -> int:
        """The L2 table offset of an L1 entry (0 if none), checked for alignment."""
        if l1_index >= self.l1_size:
            return 0
        l2_offset = int(self.l1[l1_index]) & L1E_OFFSET_MASK
        if l2_offset & (self.cluster_size - 1):
            raise self.corruption(f"L2 table offset {l2_offset:#x} unaligned "
                                  f"(L1 index: {c_hex(l1_index)})")
        return l2_offset

    def entry(self, table: np.ndarray, index: int) -> tuple[int, int]:
        if self.extended:
            return int(table[2 * index]), int(table[2 * index + 1])
        return int(table[index]), 0

    def lookup(self, offset: int, length: int) -> tuple[int, int, int]:
        """(type, host, bytes) for the run at guest `offset` (qcow2_get_host_offset).

        `host` is the host byte offset for allocated types, the raw L2 entry for
        compressed clusters and 0 otherwise.
        """
        cs = self.cluster_size
        in_cluster = offset & (cs - 1)
        needed = length + in_cluster
        l2_index = (offset >> self.cluster_bits) & (self.l2_size - 1)
        available = (self.l2_size - l2_index) << self.cluster_bits
        needed = min(needed, available)
        l1_index = offset >> (self.cluster_bits + self.l2_bits)
        l2_offset = self.l2_offset_for(l1_index)
        if not l2_offset:
            return SC_UNALLOC_PLAIN, 0, min(available, needed) - in_cluster
        table = self.cache.get(l2_offset)
        sc_index = in_cluster >> self.sc_bits
        entry, bitmap = self.entry(table, l2_index)
        sc_type = self.subcluster_type(entry, bitmap, sc_index)
        if self.version < 3 and sc_type in (SC_ZERO_PLAIN, SC_ZERO_ALLOC):
            raise self.corruption(f"Zero cluster entry found in pre-v3 image "
                                  f"(L2 offset: {l2_offset:#x}, L2 index: {c_hex(l2_index)})")
        host = 0
        if sc_type == SC_COMPRESSED:
            host = entry
        elif sc_type in (SC_NORMAL, SC_ZERO_ALLOC, SC_UNALLOC_ALLOC):
            cluster_host = entry & L2E_OFFSET_MASK
            if cluster_host & (cs - 1):
                raise self.corruption(
                    f"Cluster allocation offset {cluster_host:#x} unaligned (L2 offset: "
                    f"{l2_offset:#x}, L2 index: {c_hex(l2_index)})")
            host = cluster_host + in_cluster
        nb_clusters = -(-needed // cs)
        count = self._count_contiguous(table, l2_index, nb_clusters, sc_index, l2_offset)
        avail = (count + sc_index) << self.sc_bits
        return sc_type, host, min(avail, needed) - in_cluster

    def _count_contiguous(self, table: np.ndarray, l2_index: int, nb_clusters: int,
                          sc_index: int, l2_offset: int) -> int:
        """count_contiguous_subclusters(), vectorized for the common plain case."""
        if not self.extended and nb_clusters > 1:
            return self._count_plain(table, l2_index, nb_clusters, l2_offset)
        count = 0
        expected_type = SC_NORMAL
        expected = 0
        check_offset = False
        for i in range(nb_clusters):
            first_sc = sc_index if i == 0 else 0
            entry, bitmap = self.entry(table, l2_index + i)
            sc_type, n = self.range_type(entry, bitmap, first_sc)
            if sc_type == SC_INVALID:
                raise self.corruption(f"Invalid cluster entry found  (L2 offset: "
                                      f"{l2_offset:#x}, L2 index: {c_hex(l2_index + i)})")
            if i == 0:
                if sc_type == SC_COMPRESSED:
                    return n
                expected_type = sc_type
                expected = entry & L2E_OFFSET_MASK
                check_offset = sc_type in (SC_NORMAL, SC_ZERO_ALLOC, SC_UNALLOC_ALLOC)
            elif sc_type != expected_type:
                break
            elif check_offset:
                expected += self.cluster_size
                if expected != entry & L2E_OFFSET_MASK:
                    break
            count += n
            if first_sc + n < self.sc_per_cluster:
                break
        return count

    def _count_plain(self, table: np.ndarray, l2_index: int, nb_clusters: int,
                     l2_offset: int) -> int:
        """Contiguous clusters from `l2_index`, looking at a window that grows 8-fold
        while it is all one run: a fragmented table then costs O(run) per lookup, not
        O(rest of the table) (which made map and convert quadratic per L2 table)."""
        first, second = int(table[l2_index]), int(table[l2_index + 1])
        ctype = self.cluster_type(first)
        if ctype == C_COMPRESSED or self.cluster_type(second) != ctype or (
                ctype in (C_NORMAL, C_ZERO_ALLOC) and (second & L2E_OFFSET_MASK) !=
                (first & L2E_OFFSET_MASK) + self.cluster_size):
            return 1  # the common case of a fragmented table, without numpy
        window = 32
        while True:
            n = min(window, nb_clusters)
            count = self._count_plain_window(table, l2_index, n)
            if count < n or n == nb_clusters:
                return count
            window *= 8

    def _count_plain_window(self, table: np.ndarray, l2_index: int, nb_clusters: int) -> int:
        entries = table[l2_index : l2_index + nb_clusters]
        compressed = (entries & np.uint64(OFLAG_COMPRESSED)) != 0
        zero = (entries & np.uint64(OFLAG_ZERO)) != 0
        offs = entries & np.uint64(L2E_OFFSET_MASK)
        types = np.where(compressed, C_COMPRESSED,
                         np.where(zero, np.where(offs != 0, C_ZERO_ALLOC, C_ZERO_PLAIN),
                                  np.where(offs == 0, C_UNALLOCATED, C_NORMAL)))
        first = int(types[0])
        if first == C_COMPRESSED:
            return 1
        same = types == first
        if first in (C_NORMAL, C_ZERO_ALLOC):
            expect = offs[0] + np.arange(nb_clusters, dtype=np.uint64) * np.uint64(
                self.cluster_size)
            same &= offs == expect
        bad = np.flatnonzero(~same)
        return int(bad[0]) if len(bad) else nb_clusters
