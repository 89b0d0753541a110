"""Refcount table and refcount blocks: any width from 1 to 64 bits, numpy-backed.

The allocation decisions (where the next free cluster is, when and where refcount
blocks and a grown refcount table go) mirror QEMU 7.2's qcow2-refcount.c, because the
image files must come out byte-identical. Refcount blocks are cached decoded (one
uint64 per entry) and written through: only the bytes of the entries that changed.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from bdrv.errors import BlockError

from .mapping import c_hex

if TYPE_CHECKING:
    from bdrv.graph import Node

REFT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00
MAX_CLUSTER_OFFSET = (1 << 56) - 1
MAX_REFTABLE_SIZE = 8 << 20

# Discard types (enum qcow2_discard_type).
DISCARD_NEVER, DISCARD_ALWAYS, DISCARD_REQUEST, DISCARD_SNAPSHOT, DISCARD_OTHER = range(5)

# Overlap-check bit for refcount blocks (qcow2.h QCOW2_OL_REFCOUNT_BLOCK).
OL_REFCOUNT_BLOCK = 1 << 4


class Again(Exception):
    """-EAGAIN: metadata was allocated where the caller meant to; search again."""


def decode_block(raw: bytes, order: int) -> np.ndarray:
    """Refcount block bytes -> one uint64 per entry."""
    if order >= 3:
        return np.frombuffer(raw, dtype=f">u{1 << (order - 3)}").astype(np.uint64)
    bits = 1 << order
    data = np.frombuffer(raw, dtype=np.uint8)
    per_byte = 8 // bits
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)
    vals = (data[:, None] >> shifts[None, :]) & ((1 << bits) - 1)
    return vals.reshape(-1).astype(np.uint64)


def encode_entries(values: np.ndarray, order: int) -> bytes:
    """Entries -> bytes (sub-byte widths: whole bytes, low bits first as QEMU)."""
    if order >= 3:
        return values.astype(f">u{1 << (order - 3)}").tobytes()
    bits = 1 << order
    per_byte = 8 // bits
    vals = values.astype(np.uint8).reshape(-1, per_byte)
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)
    packed = np.bitwise_or.reduce(vals << shifts[None, :], axis=1).astype(np.uint8)
    return bytes(packed.tobytes())


def metadata_size(clusters: int, cluster_size: int, order: int,
                  generous: bool) -> tuple[int, int]:
    """(bytes, refblock count) of refcount metadata covering `clusters` and itself."""
    per_table_cluster = cluster_size // 8
    per_block = cluster_size * 8 // (1 << order)
    table = blocks = n = 0
    while True:
        last = n
        blocks = -(-(clusters + table + blocks) // per_block)
        table = -(-blocks // per_table_cluster)
        n = clusters + blocks + table
        if n == last and generous:
            clusters += -(-table // 2)
            n = 0
            generous = False
            continue
        if n == last:
            break
    return (blocks + table) * cluster_size, blocks


class Refcounts:
    """The refcount structures of one open image."""

    def __init__(self, file: Node, cluster_bits: int, order: int, table_offset: int,
                 table_clusters: int, corruption: Callable[[str], BlockError]) -> None:
        self.file = file
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.blocks: dict[int, np.ndarray] = {}
        self.set_order(order)
        self.table_offset = table_offset
        size = table_clusters << (cluster_bits - 3)
        # The blkdebug driver below, if any (events, and QEMU's write-back refcount
        # block cache emulated: see `write_cache`); None keeps writing through.
        self.dbg = file.debug
        if self.dbg is not None:
            self.dbg.event("reftable_load")
        raw = file.pread(table_offset, size * 8) if size else b""
        self.table = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
        self.free_cluster_index = 0
        self.free_byte_offset = 0
        self.corruption = corruption
        # Hooks the driver sets: overlap check before writes, discard of freed clusters,
        # and "this cluster is free now" (drop cached tables).
        self.overlap_check: Callable[[int, int, int], None] = lambda ign, off, size: None
        self.discard_passthrough: dict[int, bool] = {DISCARD_ALWAYS: True,
                                                     DISCARD_SNAPSHOT: True}
        self.on_free: Callable[[int], None] = lambda offset: None
        self.pending_discards: list[tuple[int, int]] = []
        # Set while a discard or zeroing operation collects the discards of the
        # clusters it frees, to send them merged at its end (s->cache_discards).
        self.cache_discards = False
        # With blkdebug: dirty cached blocks, and whether the L2 cache must be written
        # first (qcow2_cache_set_dependency); `flush_l2` is set by the driver.
        self.dirty: dict[int, None] = {}
        # Also write-back without blkdebug: check's repairs, which 7.2 makes in its
        # refblock cache and loses if a fatal corruption stops the check.
        self.write_back = False
        self.depends_on_l2 = False
        self.flush_l2: Callable[[], None] = lambda: None
        self.l2: Any = None  # the Mapping, for its dependency on us

    def set_order(self, order: int) -> None:
        """The entry width (2^order bits) and what follows from it; drops cached blocks."""
        self.order = order
        self.block_bits = self.cluster_bits - (order - 3)
        self.block_size = 1 << self.block_bits
        self.max = (1 << (1 << order)) - 1
        self.blocks.clear()

    # -- reading ------------------------------------------------------------------
    @property
    def table_size(self) -> int:
        return len(self.table)

    @property
    def max_table_index(self) -> int:
        nz = np.flatnonzero(self.table)
        return int(nz[-1]) if len(nz) else 0

    def _block_offset(self, table_index: int) -> int:
        if table_index >= self.table_size:
            return 0
        offset = int(self.table[table_index]) & REFT_OFFSET_MASK
        if offset and offset & (self.cluster_size - 1):
            raise self.corruption(f"Refblock offset {offset:#x} unaligned "
                                  f"(reftable index: {c_hex(table_index)})")
        return offset

    def load_block(self, offset: int) -> np.ndarray:
        block = self.blocks.get(offset)
        if block is None:
            raw = self.file.pread(offset, self.cluster_size)
            block = decode_block(raw, self.order).copy()
            if len(self.blocks) > 256:
                self.blocks.pop(next(iter(self.blocks)))
            self.blocks[offset] = block
        return block

    def get(self, cluster_index: int) -> int:
        offset = self._block_offset(cluster_index >> self.block_bits)
        if not offset:
            return 0
        return int(self.load_block(offset)[cluster_index & (self.block_size - 1)])

    def get_range(self, start: int, count: int) -> np.ndarray:
        """Refcounts of clusters [start, start+count) as an array."""
        out = np.zeros(count, dtype=np.uint64)
        pos = start
        while pos < start + count:
            ti = pos >> self.block_bits
            first = pos & (self.block_size - 1)
            n = min(self.block_size - first, start + count - pos)
            offset = self._block_offset(ti)
            if offset:
                out[pos - start : pos - start + n] = self.load_block(offset)[first : first + n]
            pos += n
        return out

    # -- writing ------------------------------------------------------------------
    def _write_block_range(self, offset: int, block: np.ndarray, lo: int, hi: int) -> None:
        """Write entries [lo, hi) of a cached block (whole bytes for narrow entries)."""
        if self.order < 3:
            per_byte = 8 >> self.order
            lo, hi = lo // per_byte * per_byte, -(-hi // per_byte) * per_byte
        width_bits = 1 << self.order
        if self.dbg is not None or self.write_back:
            self.dirty[offset] = None
            return
        start = offset + lo * width_bits // 8
        data = encode_entries(block[lo:hi], self.order)
        self.overlap_check(OL_REFCOUNT_BLOCK, start, len(data))
        self.file.pwrite(start, data)

    def _write_table_entry(self, index: int) -> None:
        self.file.pwrite(self.table_offset + index * 8,
                         int(self.table[index]).to_bytes(8, "big"))

    # -- the write-back cache QEMU has (only emulated with blkdebug below) ----------------
    def write_cache(self) -> None:
        """qcow2_cache_write(): every dirty block, whole, L2 tables first if needed;
        the first error is raised after all were tried (ENOSPC preferred)."""
        error: BlockError | None = None
        for offset in list(self.dirty):
            try:
                if self.depends_on_l2:
                    self.flush_l2()
                    self.depends_on_l2 = False
                block = self.blocks.get(offset)
                if block is None or offset not in self.dirty:
                    continue
                self.overlap_check(OL_REFCOUNT_BLOCK, offset, self.cluster_size)
                if self.dbg is not None:
                    self.dbg.event("refblock_update_part")
                self.file.pwrite(offset, encode_entries(block, self.order))
                self.dirty.pop(offset, None)
            except BlockError as exc:
                if error is None or error.errno != errno.ENOSPC:
                    error = exc
        if error is not None:
            raise error

    def flush_cache(self) -> None:
        """qcow2_cache_flush(): write the dirty blocks, then flush the file."""
        if self.dbg is None and not self.write_back:
            return
        self.write_cache()
        self.file.flush()

    def drop_cache(self) -> None:
        """What a node made unusable by a fatal corruption does with its cache: the
        dirty blocks are never written, and nothing cached is trusted again."""
        self.dirty.clear()
        self.blocks.clear()

    def _depend_on_l2(self) -> None:
        """qcow2_cache_set_dependency(refcount cache, L2 cache): if the L2 tables wait
        for us, we are written first; if that fails, no dependency is recorded."""
        l2 = self.l2
        if l2 is not None and l2.depends_on_refcounts:
            try:
                self.flush_cache()
            except BlockError:
                return
            l2.depends_on_refcounts = False
            l2.depends_on_flush = False
        self.depends_on_l2 = True

    def _sync_write(self, offset: int, data: bytes) -> None:
        """bdrv_pwrite_sync() with blkdebug below, a plain write otherwise."""
        self.file.pwrite(offset, data)
        if self.dbg is not None:
            self.file.flush()

    def update(self, offset: int, length: int, addend: int, decrease: bool,
               discard_type: int) -> None:
        """update_refcount(): add/subtract `addend` for every cluster in the range."""
        if length <= 0:
            return
        if decrease and self.dbg is not None:
            self._depend_on_l2()
        cs = self.cluster_size
        start = offset // cs
        last = (offset + length - 1) // cs
        idx = start
        done_to = start
        try:
            while idx <= last:
                try:
                    block_off = self._alloc_block(idx)
                except Again:
                    if self.free_cluster_index > start:
                        self.free_cluster_index = start
                    raise
                block = self.load_block(block_off)
                first = idx & (self.block_size - 1)
                n = min(self.block_size - first, last + 1 - idx)
                cur = block[first : first + n]
                if decrease:
                    if np.any(cur < addend):
                        raise BlockError("Invalid argument", errno.EINVAL)
                    new = cur - np.uint64(addend)
                else:
                    if np.any(cur > np.uint64(self.max - addend)):
                        raise BlockError("Invalid argument", errno.EINVAL)
                    new = cur + np.uint64(addend)
                block[first : first + n] = new
                self._write_block_range(block_off, block, first, first + n)
                done_to = idx + n
                zeros = np.flatnonzero(new == 0)
                if len(zeros):
                    first_zero = idx + int(zeros[0])
                    if first_zero < self.free_cluster_index:
                        self.free_cluster_index = first_zero
                    for z in zeros:
                        self._freed((idx + int(z)) * cs, discard_type)
                idx += n
        except (BlockError, Again):
            if not self.cache_discards:
                self.pending_discards = []  # a failed update discards nothing
            # Undo what was done, as QEMU tries to.
            if done_to > start:
                try:
                    self.update(start * cs, (done_to - start) * cs, addend, not decrease,
                                DISCARD_NEVER)
                except BlockError:
                    pass
            raise
        if not self.cache_discards:
            self.process_discards()

    def _freed(self, cluster_offset: int, discard_type: int) -> None:
        if cluster_offset in self.blocks:
            del self.blocks[cluster_offset]
        self.dirty.pop(cluster_offset, None)
        self.on_free(cluster_offset)
        if self.discard_passthrough.get(discard_type, False):
            if self.pending_discards and self.pending_discards[-1][1] == cluster_offset:
                self.pending_discards[-1] = (self.pending_discards[-1][0],
                                             cluster_offset + self.cluster_size)
            else:
                self.pending_discards.append((cluster_offset,
                                              cluster_offset + self.cluster_size))

    def process_discards(self) -> None:
        pending, self.pending_discards = self.pending_discards, []
        for start, end in pending:
            try:
                self.file.pdiscard(start, end - start)
            except BlockError:
                pass  # discards are advisory

    # -- refcount block allocation -----------------------------------------------------
    def _alloc_block(self, cluster_index: int) -> int:
        """alloc_refcount_block(): the block covering `cluster_index`, created if needed.

        Raises Again when new metadata may sit where the caller planned its clusters.
        """
        dbg = self.dbg
        if dbg is not None:
            dbg.event("refblock_alloc")
        ti = cluster_index >> self.block_bits
        existing = self._block_offset(ti)
        if existing:
            if dbg is not None:
                dbg.event("refblock_load")
            return existing
        if dbg is not None:
            return self._alloc_block_cached(cluster_index, ti)
        new_block, block = self._new_block(ti)
        self.overlap_check(OL_REFCOUNT_BLOCK, new_block, self.cluster_size)
        self.file.pwrite(new_block, encode_entries(block, self.order))
        if ti < self.table_size:
            self.table[ti] = new_block
            self._write_table_entry(ti)
            raise Again()
        self._grow_table(cluster_index, ti, new_block)
        raise Again()

    def _new_block(self, ti: int, flush_after_update: bool = False) -> tuple[int, np.ndarray]:
        """A zeroed refcount block for table index `ti`, allocated and counted: in
        itself if it falls in the range it describes, else by an update of the block
        that covers it (flushed from the cache when `flush_after_update`)."""
        cs = self.cluster_size
        new_block = self.alloc_noref(cs, 1 << 63)
        if new_block == 0:
            raise self.corruption("Preventing invalid allocation of refcount block at "
                                  "offset 0")
        block = np.zeros(self.block_size, dtype=np.uint64)
        if (new_block >> self.cluster_bits) >> self.block_bits == ti:
            block[(new_block >> self.cluster_bits) & (self.block_size - 1)] = 1
        else:
            self.update(new_block, cs, 1, False, DISCARD_NEVER)
            if flush_after_update:
                self.flush_cache()
        self.blocks[new_block] = block
        return new_block, block

    def _grow_table(self, cluster_index: int, ti: int, new_block: int) -> None:
        """The table is full: grow it with self-describing structures past the end."""
        blocks_used = -(-max(cluster_index + 1, (new_block >> self.cluster_bits) + 1)
                        // self.block_size)
        meta_offset = blocks_used * self.block_size * self.cluster_size
        self.refcount_area(meta_offset, 0, False, ti, new_block)

    def _alloc_block_cached(self, cluster_index: int, ti: int) -> int:
        """alloc_refcount_block() with the write-back cache: QEMU's order of writes,
        flushes and events, which decides what an injected error leaves behind."""
        dbg = self.dbg
        assert dbg is not None
        self.flush_l2()  # the table is about to change; L2 tables may depend on it
        new_block, _ = self._new_block(ti, flush_after_update=True)
        dbg.event("refblock_alloc_write")
        self.dirty[new_block] = None
        self.flush_cache()
        if ti < self.table_size:
            dbg.event("refblock_alloc_hookup")
            self._sync_write(self.table_offset + ti * 8, new_block.to_bytes(8, "big"))
            self.table[ti] = new_block
            raise Again()
        dbg.event("reftable_grow")
        self._grow_table(cluster_index, ti, new_block)
        dbg.event("refblock_load")
        raise Again()

    def refcount_area(self, start_offset: int, additional_clusters: int, exact_size: bool,
                      new_block_index: int = 0, new_block_offset: int = 0) -> int:
        """qcow2_refcount_area(): new table and blocks at `start_offset`; returns end."""
        cs = self.cluster_size
        _, total_blocks = metadata_size(start_offset // cs + additional_clusters, cs,
                                        self.order, not exact_size)
        if total_blocks > MAX_REFTABLE_SIZE:
            raise BlockError("File too large", errno.EFBIG)
        area_index = (start_offset // cs) // self.block_size
        table_size = total_blocks if exact_size else total_blocks + -(-total_blocks // 2)
        per_cluster = cs // 8
        table_size = -(-table_size // per_cluster) * per_cluster
        table_clusters = table_size * 8 // cs
        if table_size > MAX_REFTABLE_SIZE:
            raise BlockError("File too large", errno.EFBIG)
        new_table = np.zeros(table_size, dtype=np.uint64)
        keep = min(table_size, self.max_table_index + 1, self.table_size)
        new_table[:keep] = self.table[:keep]
        if new_block_offset:
            new_table[new_block_index] = new_block_offset
        additional = int(np.count_nonzero(new_table[area_index:total_blocks] == 0))
        table_offset = start_offset + additional * cs
        end_offset = table_offset + table_clusters * cs
        block_offset = start_offset
        for i in range(area_index, total_blocks):
            if new_table[i]:
                off = int(new_table[i])
                block = self.load_block(off)
            else:
                off = block_offset
                block = np.zeros(self.block_size, dtype=np.uint64)
                self.blocks[off] = block
                new_table[i] = off
                block_offset += cs
            first_covered = i * self.block_size * cs
            if first_covered < end_offset:
                j = (start_offset - first_covered) // cs if first_covered < start_offset else 0
                end_index = min((end_offset - first_covered) // cs, self.block_size)
                block[j:end_index] = 1
            if self.dbg is not None:
                self.dirty[off] = None
            else:
                self.file.pwrite(off, encode_entries(block, self.order))
        if self.dbg is not None:
            self.dbg.event("refblock_alloc_write_blocks")
            self.flush_cache()
            self.dbg.event("refblock_alloc_write_table")
        table_bytes = new_table.astype(">u8").tobytes()
        self._sync_write(table_offset, table_bytes)
        if self.dbg is not None:
            self.dbg.event("refblock_alloc_switch_table")
        self._sync_write(48, table_offset.to_bytes(8, "big") + table_clusters.to_bytes(4, "big"))
        old_offset, old_size = self.table_offset, self.table_size
        self.table = new_table
        self.table_offset = table_offset
        self.free(old_offset, old_size * 8, DISCARD_OTHER)
        return end_offset

    # -- cluster allocation -------------------------------------------------------------
    def alloc_noref(self, size: int, max_offset: int) -> int:
        """alloc_clusters_noref(): first run of free clusters from free_cluster_index."""
        n = -(-size // self.cluster_size)
        idx = self.free_cluster_index
        while True:
            window = max(n, 4096)
            busy = np.flatnonzero(self.get_range(idx, window))
            starts = np.concatenate(([0], busy + 1))
            lengths = np.concatenate((busy, [window])) - starts
            fits = np.flatnonzero(lengths >= n)
            if len(fits):
                self.free_cluster_index = idx + int(starts[fits[0]]) + n
                break
            idx += int(starts[-1])
        if self.free_cluster_index - 1 > (max_offset >> self.cluster_bits):
            raise BlockError("File too large", errno.EFBIG)
        return (self.free_cluster_index - n) << self.cluster_bits

    def alloc_clusters(self, size: int) -> int:
        """qcow2_alloc_clusters()."""
        if self.dbg is not None:
            self.dbg.event("cluster_alloc")
        while True:
            offset = self.alloc_noref(size, MAX_CLUSTER_OFFSET)
            try:
                self.update(offset, size, 1, False, DISCARD_NEVER)
                return offset
            except Again:
                continue

    def alloc_clusters_at(self, offset: int, nb_clusters: int) -> int:
        """qcow2_alloc_clusters_at(): how many of the clusters at `offset` were free."""
        if nb_clusters == 0:
            return 0
        while True:
            counts = self.get_range(offset >> self.cluster_bits, nb_clusters)
            busy = np.flatnonzero(counts)
            free = int(busy[0]) if len(busy) else nb_clusters
            try:
                self.update(offset, free << self.cluster_bits, 1, False, DISCARD_NEVER)
                return free
            except Again:
                continue

    def alloc_bytes(self, size: int, cluster_offset_mask: int) -> int:
        """qcow2_alloc_bytes(): space for a compressed cluster, packed after the last."""
        cs = self.cluster_size
        if self.dbg is not None:
            self.dbg.event("cluster_alloc_bytes")
        offset = self.free_byte_offset
        if offset and self.get(offset >> self.cluster_bits) == self.max:
            offset = 0
        free_in_cluster = cs - (offset & (cs - 1))
        while True:
            if not offset or free_in_cluster < size:
                new_cluster = self.alloc_noref(cs, min(cluster_offset_mask, MAX_CLUSTER_OFFSET))
                if new_cluster == 0:
                    raise self.corruption("Preventing invalid allocation of compressed "
                                          "cluster at offset 0")
                if not offset or -(-offset // cs) * cs != new_cluster:
                    offset = new_cluster
                    free_in_cluster = cs
                else:
                    free_in_cluster += cs
            try:
                self.update(offset, size, 1, False, DISCARD_NEVER)
                break
            except Again:
                continue
            except BlockError:
                offset = 0
                raise
        self.free_byte_offset = offset + size
        if not self.free_byte_offset & (cs - 1):
            self.free_byte_offset = 0
        return offset

    def free(self, offset: int, size: int, discard_type: int) -> None:
        """qcow2_free_clusters(); errors are only reported, as QEMU does."""
        if self.dbg is not None:
            self.dbg.event("cluster_free")
        try:
            self.update(offset, size, 1, True, discard_type)
        except BlockError as exc:
            sys.stderr.write(f"qcow2_free_clusters failed: {os.strerror(exc.errno)}\n")
            sys.stderr.flush()
