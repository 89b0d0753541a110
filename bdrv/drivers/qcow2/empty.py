"""Emptying a qcow2 image (qcow2_make_empty), as qemu-img commit does to the top image.

A v3 image without snapshots, bitmaps or encryption whose L1 table and three more
clusters fit one refcount block is rewritten from scratch (make_completely_empty):
header, a one-cluster refcount table at cluster 1, its first refcount block at cluster
2, a zeroed L1 table from cluster 3, and the file cut after it. Any other image has
every cluster discarded (entries cleared, QCOW2_DISCARD_SNAPSHOT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import alloc
from .mapping import Mapping
from .refcount import DISCARD_SNAPSHOT, Refcounts, encode_entries

if TYPE_CHECKING:
    from .driver import Qcow2Driver


def make_empty(drv: Qcow2Driver) -> None:
    cs = drv.cluster_size
    l1_size = drv.map.l1_size
    l1_clusters = -(-l1_size // (cs // 8))
    hdr = drv.hdr
    if drv.version >= 3 and not hdr.nb_snapshots and not hdr.has_bitmaps_ext \
            and not hdr.crypt_method and 3 + l1_clusters <= drv.rc.block_size:
        _make_completely_empty(drv, l1_size, l1_clusters)
        return
    end = -(-drv.size // cs) * cs
    step = (0x7FFFFFFF // cs) * cs
    offset = 0
    while offset < end:
        alloc.discard_clusters(drv, offset, min(step, end - offset), DISCARD_SNAPSHOT, True)
        offset += step
    drv.rc.process_discards()


def _make_completely_empty(drv: Qcow2Driver, l1_size: int, l1_clusters: int) -> None:
    cs = drv.cluster_size
    file = drv.file
    drv.mark_dirty()
    nb = 3 + l1_clusters
    file.pwrite_zeroes(cs, (2 + l1_clusters) * cs, 0)
    reftable = bytearray(cs)
    reftable[0:8] = (2 * cs).to_bytes(8, "big")
    file.pwrite(cs, bytes(reftable), 0)
    old_rc = drv.rc
    refblock = np.zeros(old_rc.block_size, dtype=np.uint64)
    refblock[: nb] = 1
    file.pwrite(2 * cs, encode_entries(refblock, old_rc.order), 0)
    drv.map = Mapping(file, drv.cluster_bits, drv.extended, drv.version, 3 * cs, l1_size,
                      drv.corruption)
    rc = Refcounts(file, drv.cluster_bits, old_rc.order, cs, 1, drv.corruption)
    rc.overlap_check = old_rc.overlap_check
    rc.discard_passthrough = old_rc.discard_passthrough
    rc.on_free = drv.map.cache.drop
    drv.rc = rc
    drv.mark_clean()
    file.truncate(nb * cs, True, "off")
