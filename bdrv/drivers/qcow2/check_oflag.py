"""The OFLAG_COPIED phase of qcow2 check, as 7.2 does it: every L1 and L2 entry of
the active tables must carry the flag exactly when its cluster's refcount is 1;
`-r all` rewrites the entries that do not. Split from check.py, which runs it last.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from bdrv.check import FIX_ERRORS, FIX_LEAKS, CheckResult
from bdrv.errors import BlockError

from .check import CheckAbort, L2Reader
from .mapping import L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED

if TYPE_CHECKING:
    from .driver import Qcow2Driver


def check_oflag_copied(drv: Qcow2Driver, res: CheckResult, fix: int) -> None:
    if fix & FIX_ERRORS:
        repair = True
    elif fix & FIX_LEAKS:
        repair = not res.check_errors and not res.corruptions and not res.leaks
    else:
        repair = False
    word = "Repairing" if repair else "ERROR"
    m = drv.map
    w = m.width
    bits = drv.cluster_bits
    nb = -(-drv.file.getlength() // drv.cluster_size)
    used = np.flatnonzero(m.l1)
    l2offs = m.l1[used] & np.uint64(L1E_OFFSET_MASK)
    used = used[l2offs != 0]
    l2offs = l2offs[l2offs != 0]
    l1_counts = _refcounts_of(drv, (l2offs >> np.uint64(bits)).astype(np.int64), nb)
    l1_copied = (m.l1[used] & np.uint64(OFLAG_COPIED)) != 0
    l1_bad = (l1_counts >= 0) & ((l1_counts == 1) != l1_copied)
    reader = L2Reader(drv, l2offs)
    batch = 256
    for first in range(0, len(used), batch):
        last = min(len(used), first + batch)
        if not l1_bad[first:last].any():
            try:
                raws = [reader.table(n) for n in range(first, last)
                        if l1_counts[n] >= 0]
            except BlockError:
                raws = None
            if raws is not None:
                tables = np.frombuffer(b"".join(raws), dtype=">u8").astype(np.uint64)
                entries = tables[::w]
                host = entries & np.uint64(L2E_OFFSET_MASK)
                allocated = ((entries & np.uint64(OFLAG_COMPRESSED)) == 0) & (host != 0)
                clusters = (host[allocated] >> np.uint64(bits)).astype(np.int64)
                counts = _refcounts_of(drv, clusters, nb)
                copied = (entries[allocated] & np.uint64(OFLAG_COPIED)) != 0
                if not ((counts >= 0) & ((counts == 1) != copied)).any():
                    continue
        for n in range(first, last):
            _oflag_one(drv, res, int(used[n]), repair, word, nb)


def _oflag_one(drv: Qcow2Driver, res: CheckResult, l1_index: int, repair: bool, word: str,
               nb: int) -> None:
    m = drv.map
    cs = drv.cluster_size
    w = m.width
    l1_entry = int(m.l1[l1_index])
    l2_offset = l1_entry & L1E_OFFSET_MASK
    if not l2_offset:
        return
    refcount = _refcount(drv, l2_offset >> drv.cluster_bits)
    if refcount is None:
        return
    if (refcount == 1) != bool(l1_entry & OFLAG_COPIED):
        res.corruptions += 1
        res.messages.append(f"{word} OFLAG_COPIED L2 cluster: l1_index={l1_index} "
                            f"l1_entry={l1_entry:x} refcount={refcount}")
        if repair:
            from .alloc import write_l1_entry

            m.l1[l1_index] = np.uint64(l1_entry | OFLAG_COPIED if refcount == 1
                                       else l1_entry & ~OFLAG_COPIED)
            try:
                write_l1_entry(drv, int(l1_index))
            except BlockError as exc:
                res.check_errors += 1
                raise CheckAbort(exc.errno) from None
            res.corruptions -= 1
            res.corruptions_fixed += 1
    try:
        raw = drv.file.pread(l2_offset, m.l2_size * 8 * w)
    except BlockError as exc:
        res.messages.append(f"ERROR: Could not read L2 table: {os.strerror(exc.errno)}")
        res.check_errors += 1
        raise CheckAbort(exc.errno) from None
    table = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
    entries = table[::w]
    host = entries & np.uint64(L2E_OFFSET_MASK)
    allocated = ((entries & np.uint64(OFLAG_COMPRESSED)) == 0) & (host != 0)
    idx = np.flatnonzero(allocated)
    if not len(idx):
        return
    clusters = (host[idx] >> np.uint64(drv.cluster_bits)).astype(np.int64)
    counts = _refcounts_of(drv, clusters, nb)
    copied = (entries[idx] & np.uint64(OFLAG_COPIED)) != 0
    bad = np.flatnonzero((counts >= 0) & ((counts == 1) != copied))
    dirty = 0
    for b in bad:
        j = int(idx[b])
        entry = int(entries[j])
        refcount = int(counts[b])
        res.corruptions += 1
        res.messages.append(f"{word} OFLAG_COPIED data cluster: l2_entry={entry:x} "
                            f"refcount={refcount}")
        if repair:
            table[j * w] = np.uint64(entry | OFLAG_COPIED if refcount == 1
                                     else entry & ~OFLAG_COPIED)
            dirty += 1
    if dirty:
        from .alloc import OL_ACTIVE_L2

        try:
            drv.check_overlap(OL_ACTIVE_L2, l2_offset, cs)
        except BlockError as exc:
            res.messages.append("ERROR: Could not write L2 table; metadata overlap check "
                                f"failed: {os.strerror(exc.errno)}")
            res.check_errors += 1
            raise CheckAbort(exc.errno) from None
        drv.file.pwrite(l2_offset, table.astype(">u8").tobytes()[:cs])
        drv.map.cache.drop(l2_offset)
        res.corruptions -= dirty
        res.corruptions_fixed += dirty


def _refcount(drv: Qcow2Driver, cluster: int) -> int | None:
    try:
        return drv.rc.get(cluster)
    except BlockError:
        return None


def _refcounts_of(drv: Qcow2Driver, clusters: np.ndarray, nb: int) -> np.ndarray:
    """Stored refcounts of the given clusters (-1 where unreadable)."""
    if not len(clusters):
        return np.zeros(0, dtype=np.int64)
    lo = int(clusters.min())
    hi = int(clusters.max()) + 1
    if hi - lo <= max(4 * len(clusters), 1 << 16):
        stored = np.full(hi - lo, -1, dtype=np.int64)
        per = drv.rc.block_size
        for ti in range(lo // per, -(-hi // per)):
            a, b = max(lo, ti * per), min(hi, (ti + 1) * per)
            try:
                stored[a - lo : b - lo] = drv.rc.get_range(a, b - a).astype(np.int64)
            except BlockError:
                pass
        out_sel: np.ndarray = stored[clusters - lo]
        return out_sel
    out = np.empty(len(clusters), dtype=np.int64)
    for n, c in enumerate(clusters):
        r = _refcount(drv, int(c))
        out[n] = -1 if r is None else r
    return out
