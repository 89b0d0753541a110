"""Cluster allocation for writes: L1 growth, L2 allocation, COW and linking.

The sequence follows QEMU 7.2's qcow2-cluster.c (get_cluster_table, handle_copied,
handle_alloc, calculate_l2_meta, qcow2_alloc_cluster_link_l2) so that the same writes
put the same clusters at the same host offsets. Crash-safe order: refcounts are raised
when clusters are allocated, guest data (and COW) is written next, then the L2 entries,
and an L1 entry only after its new L2 table is on disk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bdrv.errors import BlockError

from .header import INCOMPAT_DIRTY
from .mapping import (
    C_COMPRESSED,
    C_NORMAL,
    C_UNALLOCATED,
    C_ZERO_ALLOC,
    C_ZERO_PLAIN,
    L1E_OFFSET_MASK,
    L2_BITMAP_ALL_ALLOC,
    L2_BITMAP_ALL_ZEROES,
    L2E_OFFSET_MASK,
    OFLAG_COPIED,
    OFLAG_ZERO,
    SC_COMPRESSED,
    SC_INVALID,
    SC_NORMAL,
    SC_UNALLOC_ALLOC,
    SC_UNALLOC_PLAIN,
    SC_ZERO_ALLOC,
    SC_ZERO_PLAIN,
    c_hex,
)
from .refcount import DISCARD_ALWAYS, DISCARD_NEVER, DISCARD_OTHER, DISCARD_REQUEST

if TYPE_CHECKING:
    from .driver import Qcow2Driver

OL_ACTIVE_L1 = 1 << 1
OL_ACTIVE_L2 = 1 << 2
MAX_L1_SIZE = 32 << 20
REQUEST_MAX_BYTES = (1 << 31) - (1 << 9)  # BDRV_REQUEST_MAX_BYTES


@dataclass
class L2Meta:
    """One allocation to link into an L2 table (QCowL2Meta)."""

    offset: int  # guest offset of the first cluster
    alloc_offset: int  # host offset of the first cluster
    nb_clusters: int
    keep_old: bool
    cow_start: tuple[int, int]  # (offset in the allocation, bytes)
    cow_end: tuple[int, int]
    prealloc: bool = False
    # With blkdebug below (QEMU's ways): the COW regions were zeroed instead of
    # copied (handle_alloc_space), or the guest data goes out with them (merge_cow).
    skip_cow: bool = False
    data: memoryview | None = None


# -- L1 / L2 tables ---------------------------------------------------------------


def write_l1_entry(drv: Qcow2Driver, index: int) -> None:
    m = drv.map
    file = drv.file
    # 7.2 writes the aligned block of entries around it when the file wants
    # bigger requests (entries past the table's end as zeros).
    nentries = max(8, min(file.request_alignment, drv.cluster_size)) // 8
    first = index // nentries * nentries
    entries = np.zeros(nentries, dtype=np.uint64)
    count = min(nentries, m.l1_size - first)
    entries[:count] = m.l1[first : first + count]
    offset = m.l1_offset + 8 * first
    drv.check_overlap(OL_ACTIVE_L1, offset, 8 * nentries)
    dbg = file.debug
    if dbg is not None:
        dbg.event("l1_update")
    file.pwrite(offset, entries.astype(">u8").tobytes())
    if dbg is not None:
        file.flush()


def write_l2(drv: Qcow2Driver, l2_offset: int, table: np.ndarray, first: int,
             count: int) -> None:
    """Write L2 entries [first, first+count) of a cached table."""
    if drv.file.debug is not None:
        drv.map.mark_dirty(l2_offset, table)  # QEMU's L2 cache writes it back later
        return
    w = drv.map.width
    data = table[first * w : (first + count) * w].astype(">u8").tobytes()
    start = l2_offset + first * w * 8
    drv.check_overlap(OL_ACTIVE_L2, start, len(data))
    drv.file.pwrite(start, data)


def grow_l1(drv: Qcow2Driver, min_size: int, exact: bool) -> None:
    """qcow2_grow_l1_table()."""
    m = drv.map
    if min_size <= m.l1_size:
        return
    if min_size > 0x7FFFFFFF // 8:
        raise BlockError("File too large", 27)
    if exact:
        new_size = min_size
    else:
        new_size = max(m.l1_size, 1)
        while min_size > new_size:
            new_size = -(-new_size * 3 // 2)
    if new_size > MAX_L1_SIZE // 8:
        raise BlockError("File too large", 27)
    table = np.zeros(new_size, dtype=np.uint64)
    table[: m.l1_size] = m.l1
    if drv.file.debug is not None:
        _grow_l1_cached(drv, table, new_size)
        return
    new_offset = drv.rc.alloc_clusters(new_size * 8)
    drv.check_overlap(0, new_offset, new_size * 8)
    drv.file.pwrite(new_offset, table.astype(">u8").tobytes())
    drv.file.pwrite(36, new_size.to_bytes(4, "big") + new_offset.to_bytes(8, "big"))
    old_offset, old_size = m.l1_offset, m.l1_size
    m.l1, m.l1_offset = table, new_offset
    drv.hdr.l1_size, drv.hdr.l1_table_offset = new_size, new_offset
    drv.rc.free(old_offset, old_size * 8, DISCARD_OTHER)


def _grow_l1_cached(drv: Qcow2Driver, table: np.ndarray, new_size: int) -> None:
    """qcow2_grow_l1_table() with blkdebug below: QEMU's events, flushes and undo."""
    dbg = drv.file.debug
    assert dbg is not None
    m = drv.map
    dbg.event("l1_grow_alloc_table")
    new_offset = drv.rc.alloc_clusters(new_size * 8)
    try:
        drv.rc.flush_cache()
        drv.check_overlap(0, new_offset, new_size * 8)
        dbg.event("l1_grow_write_table")
        drv.file.pwrite(new_offset, table.astype(">u8").tobytes())
        drv.file.flush()
        dbg.event("l1_grow_activate_table")
        drv.file.pwrite(36, new_size.to_bytes(4, "big") + new_offset.to_bytes(8, "big"))
        drv.file.flush()
    except BlockError:
        drv.rc.free(new_offset, new_size * 8, DISCARD_OTHER)
        raise
    old_offset, old_size = m.l1_offset, m.l1_size
    m.l1, m.l1_offset = table, new_offset
    drv.hdr.l1_size, drv.hdr.l1_table_offset = new_size, new_offset
    drv.rc.free(old_offset, old_size * 8, DISCARD_OTHER)


def _l2_allocate_cached(drv: Qcow2Driver, l1_index: int) -> None:
    """l2_allocate() with blkdebug below: refcounts flushed, the table written through
    the L2 cache, the L1 entry synced; on failure the L1 entry and the cluster are
    given back, as QEMU does."""
    dbg = drv.file.debug
    assert dbg is not None
    m = drv.map
    old_entry = int(m.l1[l1_index])
    old = old_entry & L1E_OFFSET_MASK
    l2_offset = drv.rc.alloc_clusters(drv.cluster_size)
    try:
        if l2_offset == 0:
            raise drv.corruption("Preventing invalid allocation of L2 table at offset 0")
        drv.rc.flush_cache()
        if old:
            dbg.event("l2_alloc_cow_read")
            table = m.cache.get(old).copy()
        else:
            table = np.zeros(m.l2_size * m.width, dtype=np.uint64)
        m.cache.put(l2_offset, table)
        dbg.event("l2_alloc_write")
        m.mark_dirty(l2_offset, table)
        m.flush_cache()
        m.l1[l1_index] = l2_offset | OFLAG_COPIED
        write_l1_entry(drv, l1_index)
    except BlockError:
        m.l1[l1_index] = old_entry
        if l2_offset > 0:
            drv.rc.free(l2_offset, drv.cluster_size, DISCARD_ALWAYS)
        raise


def set_l2_dependency(drv: Qcow2Driver) -> None:
    """qcow2_cache_set_dependency(L2 cache, refcount cache) (blkdebug only)."""
    rc, m = drv.rc, drv.map
    if rc.depends_on_l2:
        try:
            m.flush_cache()
        except BlockError:
            return
        rc.depends_on_l2 = False
    m.depends_on_refcounts = True


def l2_allocate(drv: Qcow2Driver, l1_index: int) -> None:
    """A new L2 table for `l1_index`: a copy of the shared old one, or zeros."""
    if drv.file.debug is not None:
        _l2_allocate_cached(drv, l1_index)
        return
    m = drv.map
    old = int(m.l1[l1_index]) & L1E_OFFSET_MASK
    l2_offset = drv.rc.alloc_clusters(drv.cluster_size)
    if l2_offset == 0:
        raise drv.corruption("Preventing invalid allocation of L2 table at offset 0")
    if old:
        table = m.cache.get(old).copy()
    else:
        table = np.zeros(m.l2_size * m.width, dtype=np.uint64)
    drv.check_overlap(OL_ACTIVE_L2, l2_offset, drv.cluster_size)
    drv.file.pwrite(l2_offset, table.astype(">u8").tobytes())
    m.cache.put(l2_offset, table)
    m.l1[l1_index] = l2_offset | OFLAG_COPIED
    write_l1_entry(drv, l1_index)


def get_cluster_table(drv: Qcow2Driver, offset: int) -> tuple[int, np.ndarray, int]:
    """(l2 offset, table, index) for guest `offset`, allocating the table if needed."""
    m = drv.map
    l1_index = offset >> (drv.cluster_bits + m.l2_bits)
    if l1_index >= m.l1_size:
        grow_l1(drv, l1_index + 1, False)
    l2_offset = m.l2_offset_for(l1_index)
    if not int(m.l1[l1_index]) & OFLAG_COPIED:
        l2_allocate(drv, l1_index)
        if l2_offset:
            drv.rc.free(l2_offset, drv.cluster_size, DISCARD_OTHER)
        l2_offset = int(m.l1[l1_index]) & L1E_OFFSET_MASK
    table = m.cache.get(l2_offset)
    return l2_offset, table, (offset >> drv.cluster_bits) & (m.l2_size - 1)


# -- allocation for writes ------------------------------------------------------------


def _needs_new_alloc(drv: Qcow2Driver, entry: int) -> bool:
    ctype = drv.map.cluster_type(entry)
    if ctype in (C_NORMAL, C_ZERO_ALLOC):
        return not entry & OFLAG_COPIED
    return True


def _count_single_write(drv: Qcow2Driver, table: np.ndarray, l2_index: int, nb: int,
                        new_alloc: bool) -> int:
    """count_single_write_clusters()."""
    m = drv.map
    expected = 0
    for i in range(nb):
        entry, _ = m.entry(table, l2_index + i)
        if _needs_new_alloc(drv, entry) != new_alloc:
            return i
        if not new_alloc:
            if i == 0:
                expected = entry & L2E_OFFSET_MASK
            elif expected != entry & L2E_OFFSET_MASK:
                return i
            expected += drv.cluster_size
    return nb


def _calculate_meta(drv: Qcow2Driver, host: int, guest: int, nbytes: int,
                    table: np.ndarray, keep_old: bool) -> L2Meta | None:
    """calculate_l2_meta(): the COW regions around a write into new/kept clusters."""
    m = drv.map
    cs = drv.cluster_size
    l2_index = (guest >> drv.cluster_bits) & (m.l2_size - 1)
    cow_start_to = guest & (cs - 1)
    cow_end_from = cow_start_to + nbytes
    nb = -(-cow_end_from // cs)
    skip_cow = keep_old
    for i in range(nb):
        entry, bitmap = m.entry(table, l2_index + i)
        if skip_cow:
            wfrom = max(cow_start_to, i * cs)
            wto = min(cow_end_from, (i + 1) * cs)
            first_sc = (wfrom & (cs - 1)) >> m.sc_bits
            last_sc = ((wto - 1) & (cs - 1)) >> m.sc_bits
            sc_type, cnt = m.range_type(entry, bitmap, first_sc)
            if sc_type != SC_NORMAL or first_sc + cnt <= last_sc:
                skip_cow = False
        else:
            sc_type = m.subcluster_type(entry, bitmap, 0)
        if sc_type == SC_INVALID:
            l2_off = int(m.l1[guest >> (drv.cluster_bits + m.l2_bits)]) & L1E_OFFSET_MASK
            raise drv.corruption(f"Invalid cluster entry found (L2 offset: {l2_off:#x}, "
                                 f"L2 index: {c_hex(l2_index + i)})")
    if skip_cow:
        return None
    entry, bitmap = m.entry(table, l2_index)
    sc_index = cow_start_to >> m.sc_bits
    sc_type = m.subcluster_type(entry, bitmap, sc_index)
    alloc_bitmap = bitmap & L2_BITMAP_ALL_ALLOC
    if not keep_old:
        if sc_type in (SC_NORMAL, SC_ZERO_ALLOC, SC_UNALLOC_ALLOC) and m.extended:
            tz = (alloc_bitmap & -alloc_bitmap).bit_length() - 1 if alloc_bitmap else 32
            cow_start_from = min(sc_index, tz) << m.sc_bits
        elif sc_type in (SC_ZERO_PLAIN, SC_UNALLOC_PLAIN):
            cow_start_from = sc_index << m.sc_bits
        else:
            cow_start_from = 0
    else:
        cow_start_from = cow_start_to if sc_type == SC_NORMAL else sc_index << m.sc_bits
    entry, bitmap = m.entry(table, l2_index + nb - 1)
    alloc_bitmap = bitmap & L2_BITMAP_ALL_ALLOC
    sc_index = ((guest + nbytes - 1) & (cs - 1)) >> m.sc_bits
    sc_type = m.subcluster_type(entry, bitmap, sc_index)
    if not keep_old:
        if sc_type == SC_COMPRESSED:
            cow_end_to = -(-cow_end_from // cs) * cs
        elif sc_type in (SC_NORMAL, SC_ZERO_ALLOC, SC_UNALLOC_ALLOC):
            cow_end_to = -(-cow_end_from // cs) * cs
            if m.extended:
                clz = 32 - alloc_bitmap.bit_length()
                cow_end_to -= min(m.sc_per_cluster - sc_index - 1, clz) << m.sc_bits
        else:
            cow_end_to = -(-cow_end_from // m.sc_size) * m.sc_size
    else:
        if sc_type == SC_NORMAL:
            cow_end_to = cow_end_from
        else:
            cow_end_to = -(-cow_end_from // m.sc_size) * m.sc_size
    return L2Meta(guest & ~(cs - 1), host, nb, keep_old,
                  (cow_start_from, cow_start_to - cow_start_from),
                  (cow_end_from, cow_end_to - cow_end_from))


def _handle_copied(drv: Qcow2Driver, guest: int, host: int | None, nbytes: int,
                   metas: list[L2Meta]) -> tuple[int, int | None]:
    """Existing clusters we own (COPIED): (bytes usable, host) or (0, None)."""
    m = drv.map
    cs = drv.cluster_size
    l2_index = (guest >> drv.cluster_bits) & (m.l2_size - 1)
    nb = min(-(-((guest & (cs - 1)) + nbytes) // cs), m.l2_size - l2_index)
    _, table, l2_index = get_cluster_table(drv, guest)
    entry, _ = m.entry(table, l2_index)
    cluster_offset = entry & L2E_OFFSET_MASK
    if _needs_new_alloc(drv, entry):
        return 0, None
    if cluster_offset & (cs - 1):
        what = "Preallocated zero" if entry & OFLAG_ZERO else "Data"
        raise drv.corruption(f"{what} cluster offset {cluster_offset:#x} unaligned "
                             f"(guest offset: {guest:#x})")
    if host is not None and cluster_offset != host:
        return -1, None
    keep = _count_single_write(drv, table, l2_index, nb, False)
    nbytes = min(nbytes, keep * cs - (guest & (cs - 1)))
    meta = _calculate_meta(drv, cluster_offset, guest, nbytes, table, True)
    if meta is not None:
        metas.append(meta)
    return nbytes, cluster_offset


def _handle_alloc(drv: Qcow2Driver, guest: int, host: int | None, nbytes: int,
                  metas: list[L2Meta]) -> tuple[int, int | None]:
    m = drv.map
    cs = drv.cluster_size
    l2_index = (guest >> drv.cluster_bits) & (m.l2_size - 1)
    nb = min(-(-((guest & (cs - 1)) + nbytes) // cs), m.l2_size - l2_index)
    nb = min(nb, REQUEST_MAX_BYTES >> drv.cluster_bits)
    _, table, l2_index = get_cluster_table(drv, guest)
    nb = _count_single_write(drv, table, l2_index, nb, True)
    if host is None:
        alloc = drv.rc.alloc_clusters(nb * cs)
    else:
        alloc = host & ~(cs - 1)
        nb = drv.rc.alloc_clusters_at(alloc, nb)
        if nb == 0:
            return 0, None
    requested = nbytes + (guest & (cs - 1))
    nb_bytes = min(requested, nb * cs)
    nbytes = min(nbytes, nb_bytes - (guest & (cs - 1)))
    meta = _calculate_meta(drv, alloc, guest, nbytes, table, False)
    if meta is not None:
        metas.append(meta)
    return nbytes, alloc


def alloc_host_offset(drv: Qcow2Driver, offset: int, nbytes: int,
                      metas: list[L2Meta] | None = None) -> tuple[int, int, list[L2Meta]]:
    """qcow2_alloc_host_offset(): (host offset, bytes, metas) for a write at `offset`.

    The host range is contiguous; it may cover less than `nbytes`.
    """
    cs = drv.cluster_size
    if metas is None:
        metas = []  # the caller's list keeps what was allocated before an error
    start = offset
    remaining = nbytes
    cluster_offset: int | None = None
    host_offset: int | None = None
    cur = 0
    while True:
        if host_offset is None and cluster_offset is not None:
            host_offset = cluster_offset
        start += cur
        remaining -= cur
        if cluster_offset is not None:
            cluster_offset += cur
        if remaining == 0:
            break
        want = None if cluster_offset is None else cluster_offset
        got, host = _handle_copied(drv, start, want, remaining, metas)
        if got > 0:
            assert host is not None
            cur = got
            cluster_offset = host + (start & (cs - 1)) if cluster_offset is None \
                else cluster_offset
            continue
        if got < 0:
            break
        got, host = _handle_alloc(drv, start, want, remaining, metas)
        if got == 0:
            break
        assert host is not None
        cur = got
        if cluster_offset is None:
            cluster_offset = host + (start & (cs - 1))
    assert host_offset is not None
    return host_offset, nbytes - remaining, metas


# -- linking ----------------------------------------------------------------------


def _perform_cow_cached(drv: Qcow2Driver, meta: L2Meta) -> None:
    """perform_cow() as 7.2 does it: both regions read in one go when the data
    between them is small, written with the guest data when that was merged."""
    dbg = drv.file.debug
    assert dbg is not None
    (s_off, s_len), (e_off, e_len) = meta.cow_start, meta.cow_end
    if not (s_len or e_len) or meta.skip_cow:
        return
    data_bytes = e_off - (s_off + s_len)
    if s_len and e_len and data_bytes <= 16384:
        dbg.event("cow_read")
        buf = drv.read_guest(meta.offset + s_off, e_off + e_len - s_off)
        start, end = buf[:s_len], buf[len(buf) - e_len:]
    else:
        start = end = b""
        if s_len:
            dbg.event("cow_read")
            start = drv.read_guest(meta.offset + s_off, s_len)
        if e_len:
            dbg.event("cow_read")
            end = drv.read_guest(meta.offset + e_off, e_len)
    if meta.data is not None:
        dbg.event("write_aio")
        whole = bytes(start) + bytes(meta.data) + bytes(end)
        drv.check_overlap(0, meta.alloc_offset + s_off, len(whole))
        dbg.event("cow_write")
        drv.file.pwrite(meta.alloc_offset + s_off, whole)
    else:
        for off, region in ((s_off, start), (e_off, end)):
            if region:
                drv.check_overlap(0, meta.alloc_offset + off, len(region))
                dbg.event("cow_write")
                drv.file.pwrite(meta.alloc_offset + off, region)
    drv.map.depends_on_flush = True


def perform_cow(drv: Qcow2Driver, meta: L2Meta) -> None:
    """Copy the unwritten parts of new clusters from what the guest saw before."""
    dbg = drv.file.debug
    if dbg is not None:
        _perform_cow_cached(drv, meta)
        return
    for region_off, region_len in (meta.cow_start, meta.cow_end):
        if region_len:
            data = drv.read_guest(meta.offset + region_off, region_len)
            drv.check_overlap(0, meta.alloc_offset + region_off, region_len)
            drv.file.pwrite(meta.alloc_offset + region_off, data)


def alloc_space(drv: Qcow2Driver, metas: list[L2Meta]) -> None:
    """handle_alloc_space() (blkdebug only): COW regions that would copy zeros are
    zeroed with the whole range in one write-zeroes request instead."""
    from bdrv.request import REQ_NO_FALLBACK, block_status_above

    dbg = drv.file.debug
    assert dbg is not None
    for meta in reversed(metas):
        (s_off, s_len), (e_off, e_len) = meta.cow_start, meta.cow_end
        if not (s_len or e_len):
            continue
        # Regions that read as zeros (unallocated, or zero clusters) need no copy.
        if not (drv._is_zero(meta.offset + s_off, s_len, block_status_above)
                and drv._is_zero(meta.offset + e_off, e_len, block_status_above)):
            continue
        start = meta.alloc_offset + s_off
        drv.check_overlap(0, start, e_off + e_len - s_off)
        dbg.event("cluster_alloc_space")
        try:
            drv.file.pwrite_zeroes(start, e_off + e_len - s_off, REQ_NO_FALLBACK)
        except BlockError as exc:
            if exc.errno not in (95, 11):
                raise
            continue
        meta.skip_cow = True


def merge_cow(guest: int, data: memoryview, metas: list[L2Meta]) -> bool:
    """merge_cow() (blkdebug only): the allocation whose COW regions enclose the
    write takes the guest data along."""
    for meta in reversed(metas):
        (s_off, s_len), (e_off, e_len) = meta.cow_start, meta.cow_end
        if not (s_len or e_len) or meta.skip_cow:
            continue
        if meta.offset + s_off + s_len != guest or meta.offset + e_off != guest + len(data):
            continue
        meta.data = data
        return True
    return False


def link_l2(drv: Qcow2Driver, meta: L2Meta) -> None:
    """qcow2_alloc_cluster_link_l2(): COW, then the L2 entries, then free old clusters."""
    m = drv.map
    cs = drv.cluster_size
    perform_cow(drv, meta)
    if drv.lazy_refcounts:
        try:
            drv.mark_dirty()
        except BlockError:
            pass  # 7.2 goes on without the dirty bit (and so with accurate refcounts)
    if drv.file.debug is not None and not drv.hdr.incompatible_features & INCOMPAT_DIRTY:
        set_l2_dependency(drv)
    l2_offset, table, l2_index = get_cluster_table(drv, meta.offset)
    old: list[int] = []
    w = m.width
    for i in range(meta.nb_clusters):
        host = meta.alloc_offset + i * cs
        cur = int(table[(l2_index + i) * w])
        if cur:
            old.append(cur)
        table[(l2_index + i) * w] = host | OFLAG_COPIED
        if m.extended and not meta.prealloc:
            bitmap = int(table[(l2_index + i) * w + 1])
            wfrom = max(meta.cow_start[0], i * cs)
            wto = min(meta.cow_end[0] + meta.cow_end[1], (i + 1) * cs)
            first_sc = (wfrom - i * cs) >> m.sc_bits
            last_sc = (wto - 1 - i * cs) >> m.sc_bits
            bits = ((1 << (last_sc + 1)) - 1) & ~((1 << first_sc) - 1)
            bitmap = (bitmap | bits) & ~(bits << 32)
            table[(l2_index + i) * w + 1] = bitmap
    write_l2(drv, l2_offset, table, l2_index, meta.nb_clusters)
    if not meta.keep_old:
        for entry in old:
            free_any_cluster(drv, entry, DISCARD_NEVER)


def abort_alloc(drv: Qcow2Driver, metas: list[L2Meta]) -> None:
    """qcow2_alloc_cluster_abort() for allocations that will not be linked."""
    for meta in reversed(metas):
        if not meta.keep_old:
            drv.rc.free(meta.alloc_offset, meta.nb_clusters * drv.cluster_size,
                        DISCARD_NEVER)
    metas.clear()


def free_any_cluster(drv: Qcow2Driver, entry: int, discard_type: int) -> None:
    ctype = drv.map.cluster_type(entry)
    if ctype == C_COMPRESSED:
        from .compress import parse_entry

        coffset, csize = parse_entry(entry, drv.cluster_bits)
        drv.rc.free(coffset, csize, discard_type)
    elif ctype in (C_NORMAL, C_ZERO_ALLOC):
        host = entry & L2E_OFFSET_MASK
        if host & (drv.cluster_size - 1):
            drv.signal_corruption(False, f"Cannot free unaligned cluster {host:#x}")
        else:
            drv.rc.free(host, drv.cluster_size, discard_type)


# -- zeroing and discarding --------------------------------------------------------------


def _is_allocated(ctype: int) -> bool:
    return ctype in (C_NORMAL, C_ZERO_ALLOC, C_COMPRESSED)


def _collecting_discards(func: Callable[..., None]) -> Callable[..., None]:
    """The discards of the clusters `func` frees go out merged when it ends, and not
    at all if it fails (s->cache_discards around qcow2_cluster_discard/zeroize)."""
    @functools.wraps(func)
    def wrapper(drv: Qcow2Driver, *args: Any) -> None:
        rc = drv.rc
        outer = rc.cache_discards
        rc.cache_discards = True
        try:
            func(drv, *args)
        except BaseException:
            if not outer:
                rc.cache_discards = False
                rc.pending_discards = []
            raise
        if not outer:
            rc.cache_discards = False
            rc.process_discards()
    return wrapper


@_collecting_discards
def discard_clusters(drv: Qcow2Driver, offset: int, nbytes: int, discard_type: int,
                     full_discard: bool) -> None:
    """qcow2_cluster_discard() over whole clusters."""
    m = drv.map
    cs = drv.cluster_size
    end = offset + nbytes
    while offset < end:
        l2_index = (offset >> drv.cluster_bits) & (m.l2_size - 1)
        nb = min((end - offset) // cs, m.l2_size - l2_index)
        if nb <= 0:
            break
        l2_offset, table, l2_index = get_cluster_table(drv, offset)
        w = m.width
        changed_lo, changed_hi = -1, -1
        freed: list[int] = []
        for i in range(nb):
            entry = int(table[(l2_index + i) * w])
            bitmap = int(table[(l2_index + i) * w + 1]) if m.extended else 0
            ctype = m.cluster_type(entry)
            new_entry, new_bitmap = entry, bitmap
            if full_discard:
                new_entry = new_bitmap = 0
            elif drv.has_backing() or _is_allocated(ctype):
                if m.extended:
                    new_entry, new_bitmap = 0, L2_BITMAP_ALL_ZEROES
                else:
                    new_entry = OFLAG_ZERO if drv.version >= 3 else 0
            if new_entry == entry and new_bitmap == bitmap:
                continue
            table[(l2_index + i) * w] = new_entry
            if m.extended:
                table[(l2_index + i) * w + 1] = new_bitmap
            changed_lo = i if changed_lo < 0 else changed_lo
            changed_hi = i + 1
            freed.append(entry)
        if changed_lo >= 0:
            write_l2(drv, l2_offset, table, l2_index + changed_lo, changed_hi - changed_lo)
        for entry in freed:
            free_any_cluster(drv, entry, discard_type)
        offset += nb * cs


def _zero_in_l2(drv: Qcow2Driver, offset: int, nb_clusters: int, may_unmap: bool) -> int:
    m = drv.map
    l2_index = (offset >> drv.cluster_bits) & (m.l2_size - 1)
    nb = min(nb_clusters, m.l2_size - l2_index)
    l2_offset, table, l2_index = get_cluster_table(drv, offset)
    w = m.width
    lo = hi = -1
    freed: list[int] = []
    for i in range(nb):
        entry = int(table[(l2_index + i) * w])
        bitmap = int(table[(l2_index + i) * w + 1]) if m.extended else 0
        ctype = m.cluster_type(entry)
        unmap = ctype == C_COMPRESSED or (may_unmap and _is_allocated(ctype))
        new_entry = 0 if unmap else entry
        new_bitmap = bitmap
        if m.extended:
            new_bitmap = L2_BITMAP_ALL_ZEROES
        else:
            new_entry |= OFLAG_ZERO
        if new_entry == entry and new_bitmap == bitmap:
            continue
        table[(l2_index + i) * w] = new_entry
        if m.extended:
            table[(l2_index + i) * w + 1] = new_bitmap
        lo = i if lo < 0 else lo
        hi = i + 1
        if unmap:
            freed.append(entry)
    if lo >= 0:
        write_l2(drv, l2_offset, table, l2_index + lo, hi - lo)
    for entry in freed:
        free_any_cluster(drv, entry, DISCARD_REQUEST)
    return nb


def _zero_subclusters(drv: Qcow2Driver, offset: int, nb_sc: int) -> None:
    """zero_l2_subclusters(): mark subclusters of one cluster as zero."""
    m = drv.map
    l2_offset, table, l2_index = get_cluster_table(drv, offset)
    entry, bitmap = m.entry(table, l2_index)
    ctype = m.cluster_type(entry)
    if ctype == C_COMPRESSED:
        # Turning part of a compressed cluster into zeros needs a normal write.
        raise BlockError("Operation not supported", 95)
    sc = (offset & (drv.cluster_size - 1)) >> m.sc_bits
    bits = ((1 << nb_sc) - 1) << sc
    new_bitmap = (bitmap | (bits << 32)) & ~bits
    if new_bitmap != bitmap:
        table[l2_index * 2 + 1] = new_bitmap
        write_l2(drv, l2_offset, table, l2_index, 1)


@_collecting_discards
def zeroize(drv: Qcow2Driver, offset: int, nbytes: int, may_unmap: bool) -> None:
    """qcow2_subcluster_zeroize(): zero flags for an aligned range."""
    m = drv.map
    cs = drv.cluster_size
    end = offset + nbytes
    if drv.version < 3:
        if not drv.has_backing():
            discard_clusters(drv, offset, -(-nbytes // cs) * cs if end >= drv.size
                             else nbytes, DISCARD_REQUEST, False)
            return
        raise BlockError("Operation not supported", 95)
    head = min(end, -(-offset // cs) * cs) - offset
    offset += head
    tail = 0 if end >= drv.size else end - max(offset, end & ~(cs - 1))
    end -= tail
    if head:
        _zero_subclusters(drv, offset - head, -(-head // m.sc_size))
    nb = -(-(end - offset) // cs) if end > offset else 0
    while nb > 0:
        done = _zero_in_l2(drv, offset, nb, may_unmap)
        nb -= done
        offset += done * cs
    if tail:
        _zero_subclusters(drv, end, -(-tail // m.sc_size))


# -- compressed clusters -------------------------------------------------------------


def alloc_compressed(drv: Qcow2Driver, offset: int, length: int) -> int:
    """qcow2_alloc_compressed_cluster_offset(): host offset for compressed data."""
    from .compress import make_entry

    l2_offset, table, l2_index = get_cluster_table(drv, offset)
    entry, _ = drv.map.entry(table, l2_index)
    if entry & L2E_OFFSET_MASK:
        raise BlockError("Input/output error", 5)
    mask = (1 << (62 - (drv.cluster_bits - 8))) - 1
    host = drv.rc.alloc_bytes(length, mask)
    if drv.file.debug is not None:
        set_l2_dependency(drv)  # qcow2_alloc_bytes(): refcounts before the L2 entry
        drv.file.debug.event("l2_update_compressed")
    w = drv.map.width
    table[l2_index * w] = make_entry(host, length, drv.cluster_bits)
    if drv.map.extended:
        table[l2_index * w + 1] = 0
    drv.pending_compressed = (l2_offset, table, l2_index)
    return host


def cluster_is_plain(ctype: int) -> bool:
    return ctype in (C_UNALLOCATED, C_ZERO_PLAIN)
