"""Rebuilding the refcount structure from the in-memory refcount table (7.2's
rebuild_refcount_structure and rebuild_refcounts_write_refblocks).

Refblocks are allocated in the first free clusters of the in-memory table and written
as slices of it; then a reftable is allocated (first fit from cluster 0), the refblocks
covering it are written again, and this repeats while the reftable had to grow. The
new reftable goes into the header; the old structures become leaks that the caller
repairs.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from bdrv.errors import BlockError

from .refcount import encode_entries

if TYPE_CHECKING:
    from .check import Imrt
    from .driver import Qcow2Driver


def _alloc_clusters(imrt: Imrt, count: int, first_free: list[int]) -> int:
    """alloc_clusters_imrt: first fit of `count` free clusters from first_free[0]."""
    imrt.flush()
    refs = imrt.refs
    start = first_free[0]
    free = np.flatnonzero(refs[start:] == 0) + start if start < imrt.nb else np.zeros(0, int)
    if len(free):
        first_free[0] = int(free[0])
    cluster = None
    if count == 1 and len(free):
        cluster = int(free[0])
    elif len(free):
        # runs of consecutive free clusters
        breaks = np.flatnonzero(np.diff(free) != 1)
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks + 1, [len(free)]))
        for a, b in zip(starts, ends, strict=True):
            if b - a >= count:
                cluster = int(free[a])
                break
    if cluster is None:
        # free clusters at the end of the table count towards the run
        tail = 0
        if len(free) and int(free[-1]) == imrt.nb - 1:
            breaks = np.flatnonzero(np.diff(free) != 1)
            tail = len(free) - (int(breaks[-1]) + 1 if len(breaks) else 0)
        end = max(imrt.nb, start)
        cluster = end - tail
        imrt.grow(cluster + count)
    imrt.refs[cluster : cluster + count] = 1
    return cluster << imrt.bits


def _write_refblocks(drv: Qcow2Driver, imrt: Imrt, first: int, end: int,
                     reftable: list[int]) -> bool:
    """rebuild_refcounts_write_refblocks: returns whether the reftable grew."""
    rc = drv.rc
    per = rc.block_size
    cs = drv.cluster_size
    first_free = [0]
    grown = False
    cluster = first
    while cluster < end:
        imrt.flush()
        if cluster >= imrt.nb:
            break
        nz = np.flatnonzero(imrt.refs[cluster:end])
        if not len(nz):
            break
        cluster += int(nz[0])
        index = cluster // per
        start = index * per
        if index < len(reftable) and reftable[index]:
            offset = reftable[index]
        else:
            first_free[0] = max(first_free[0], start)
            offset = _alloc_clusters(imrt, 1, first_free)
            if offset // cs >= end:
                end = offset // cs + 1
            if len(reftable) <= index:
                entries = -(-((index + 1) * 8) // cs) * cs // 8
                reftable.extend([0] * (entries - len(reftable)))
                grown = True
            reftable[index] = offset
        drv.check_overlap(0, offset, cs)
        block = np.zeros(per, dtype=np.uint64)
        part = imrt.refs[start : min(start + per, imrt.nb)]
        block[: len(part)] = part.astype(np.uint64)
        drv.file.pwrite(offset, encode_entries(block, rc.order))
        cluster = start + per
    return grown


def rebuild_refcounts(drv: Qcow2Driver, imrt: Imrt) -> None:
    cs = drv.cluster_size
    rc = drv.rc
    rc.blocks.clear()
    reftable: list[int] = []
    try:
        _write_refblocks(drv, imrt, 0, imrt.nb, reftable)
        while True:
            clusters = -(-len(reftable) * 8 // cs)
            table_offset = _alloc_clusters(imrt, clusters, [0])
            start = table_offset // cs
            if not _write_refblocks(drv, imrt, start, start + clusters, reftable):
                break
        data = np.array(reftable, dtype=">u8").tobytes()
        drv.check_overlap(0, table_offset, len(data))
        drv.file.pwrite(table_offset, data)
        drv.file.pwrite(48, struct.pack(">QI", table_offset, clusters))
        drv.file.flush()
    except BlockError as exc:
        raise BlockError(f"ERROR writing refblock: {exc.message}", exc.errno) from None
    drv.hdr.refcount_table_offset = table_offset
    drv.hdr.refcount_table_clusters = clusters
    rc.table_offset = table_offset
    rc.table = np.array(reftable, dtype=np.uint64)
    rc.blocks.clear()
    rc.free_cluster_index = 0
