"""Resizing a qcow2 image (qcow2_co_truncate): grow with every preallocation mode, shrink.

Growing enlarges the L1 table to the exact size; `metadata` maps every new cluster
(preallocate_co), `falloc`/`full` also reserve the data area in one piece after new
self-describing refcount structures, as 7.2 does.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import numpy as np

from bdrv.errors import BlockError

from . import alloc
from .mapping import L1E_OFFSET_MASK
from .refcount import DISCARD_ALWAYS, DISCARD_OTHER, REFT_OFFSET_MASK

if TYPE_CHECKING:
    from .driver import Qcow2Driver

PREALLOC_MODES = ("off", "metadata", "falloc", "full")


def size_to_l1(drv: Qcow2Driver, size: int) -> int:
    shift = drv.cluster_bits + drv.map.l2_bits
    return -(-size // (1 << shift))


def truncate(drv: Qcow2Driver, size: int, prealloc: str) -> None:
    if prealloc not in PREALLOC_MODES:
        raise BlockError(f"Unsupported preallocation mode '{prealloc}'", errno.ENOTSUP)
    if size % 512:
        raise BlockError("The new size must be a multiple of 512")
    if drv.hdr.nb_snapshots and drv.version < 3:
        raise BlockError("Can't resize a v2 image which has snapshots", errno.ENOTSUP)
    old = drv.size
    new_l1 = size_to_l1(drv, size)
    zero_write = False
    if size < old:
        if prealloc != "off":
            raise BlockError("Preallocation can't be used for shrinking an image")
        _shrink(drv, size, new_l1)
    else:
        try:
            alloc.grow_l1(drv, new_l1, True)
        except BlockError as exc:
            raise exc.prefixed("Failed to grow the L1 table: ") from None
        backing = drv.node.backing
        # New space must not show the backing file's data (bdrv_co_truncate).
        zero_write = backing is not None and size > old and backing.node.getlength() > old
    if prealloc == "metadata":
        preallocate(drv, old, size)
    elif prealloc in ("falloc", "full"):
        _prealloc_data(drv, old, size, prealloc)
    if zero_write:
        _zero_new_area(drv, old, size)
    drv.size = size
    drv.file.pwrite(24, size.to_bytes(8, "big"))
    drv.l1_vm_state_index = new_l1


def _zero_new_area(drv: Qcow2Driver, old: int, size: int) -> None:
    sc = drv.map.sc_size
    zero_start = -(-old // sc) * sc
    drv.size = size
    if size > zero_start:
        alloc.zeroize(drv, zero_start, size - zero_start, False)
    if zero_start > old:
        drv.pwrite(old, bytes(min(zero_start, size) - old), 0)


def preallocate(drv: Qcow2Driver, offset: int, new_length: int) -> None:
    """preallocate_co(): allocate and map clusters without writing data."""
    cs = drv.cluster_size
    nbytes = new_length - offset
    host = cur = 0
    while nbytes:
        cur = min(nbytes, (0x7FFFFFFF // cs) * cs)
        try:
            host, cur, metas = alloc.alloc_host_offset(drv, offset, cur)
        except BlockError as exc:
            raise exc.prefixed("Allocating clusters failed: ") from None
        for meta in reversed(metas):
            meta.prealloc = True
            alloc.link_l2(drv, meta)
        nbytes -= cur
        offset += cur
    file_length = drv.file.getlength()
    if host + cur > file_length:
        drv.file.truncate(host + cur, False, "off")


def last_cluster(drv: Qcow2Driver, file_size: int) -> int:
    """qcow2_get_last_cluster(): the last cluster with a nonzero refcount, or -1."""
    n = -(-file_size // drv.cluster_size)
    counts = drv.rc.get_range(0, n)
    nz = np.flatnonzero(counts)
    return int(nz[-1]) if len(nz) else -1


def _prealloc_data(drv: Qcow2Driver, old_length: int, size: int, mode: str) -> None:
    cs = drv.cluster_size
    file_size = drv.file.getlength()
    last = last_cluster(drv, file_size)
    old_file_size = (last + 1) * cs if last >= 0 else -(-file_size // cs) * cs
    nb_data = (-(-size // cs) * cs - old_length // cs * cs) // cs
    nb_l2 = -(-nb_data // (cs // (8 * drv.map.width))) + 1
    try:
        start = drv.rc.refcount_area(old_file_size, nb_data + nb_l2, True)
    except BlockError as exc:
        raise exc.prefixed("Failed to resize refcount structures: ") from None
    got = drv.rc.alloc_clusters_at(start, nb_data)
    assert got == nb_data
    try:
        drv.file.truncate(start + nb_data * cs, False, mode)
    except BlockError as exc:
        drv.rc.free(start, nb_data * cs, DISCARD_OTHER)
        raise exc.prefixed("Failed to resize underlying file: ") from None
    host = start
    guest = old_length
    m = drv.map
    while nb_data:
        l2_index = (guest >> drv.cluster_bits) & (m.l2_size - 1)
        nb = min(nb_data, m.l2_size - l2_index)
        cow_start = guest & (cs - 1)
        guest &= ~(cs - 1)
        meta = alloc.L2Meta(guest, host, nb, False, (0, cow_start), (nb * cs, 0), True)
        alloc.link_l2(drv, meta)
        guest += nb * cs
        host += nb * cs
        nb_data -= nb


def _shrink(drv: Qcow2Driver, size: int, new_l1: int) -> None:
    cs = drv.cluster_size
    start = -(-size // cs) * cs
    if drv.size > start:
        end = -(-drv.size // cs) * cs if drv.size % cs else drv.size
        alloc.discard_clusters(drv, start, end - start, DISCARD_ALWAYS, True)
    m = drv.map
    if new_l1 < m.l1_size:
        count = m.l1_size - new_l1
        drv.file.pwrite(m.l1_offset + new_l1 * 8, bytes(count * 8))
        for i in range(m.l1_size - 1, new_l1 - 1, -1):
            l2 = int(m.l1[i]) & L1E_OFFSET_MASK
            if l2:
                drv.rc.free(l2, cs, DISCARD_ALWAYS)
                m.l1[i] = 0
    _shrink_reftable(drv)
    file_size = drv.file.getlength()
    last = last_cluster(drv, file_size)
    if (last + 1) * cs < file_size:
        try:
            drv.file.truncate((last + 1) * cs, False, "off")
        except BlockError as exc:
            warn = getattr(drv.node, "warn", None)
            if warn is not None:
                warn(f"warning: Failed to truncate the tail of the image: {exc.message}")


def _shrink_reftable(drv: Qcow2Driver) -> None:
    """qcow2_shrink_reftable(): drop refcount blocks that only count themselves."""
    rc = drv.rc
    new = rc.table.copy()
    for i in range(rc.table_size):
        off = int(rc.table[i]) & REFT_OFFSET_MASK
        if not off:
            continue
        block = rc.load_block(off).copy()
        if (off >> drv.cluster_bits) >> rc.block_bits == i:
            block[(off >> drv.cluster_bits) & (rc.block_size - 1)] = 0
        if not block.any():
            new[i] = 0
    drv.file.pwrite(rc.table_offset, new.astype(">u8").tobytes())
    for idx in np.flatnonzero((rc.table != 0) & (new == 0)):
        i = int(idx)
        off = int(rc.table[i]) & REFT_OFFSET_MASK
        rc.table[i] = 0
        rc.blocks.pop(off, None)
        index = off >> drv.cluster_bits
        if index < rc.free_cluster_index:
            rc.free_cluster_index = index
        rc.pending_discards.append((off, off + drv.cluster_size))
    rc.process_discards()
