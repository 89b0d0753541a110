"""Read-only consistency check of a qcow2 image (qcow2_check_refcounts without repair).

References are counted from the metadata (header, L1, L2 tables, data and compressed
clusters, refcount table and blocks), then compared with the stored refcounts, and the
OFLAG_COPIED flags are verified, with qemu-img's messages. Repair is a separate job:
`fix` is accepted but nothing is written here (the seam for the repair code).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from bdrv.check import CheckResult
from bdrv.errors import BlockError

from .compress import parse_entry
from .mapping import (
    C_COMPRESSED,
    C_NORMAL,
    C_UNALLOCATED,
    C_ZERO_ALLOC,
    L1E_OFFSET_MASK,
    L2_BITMAP_ALL_ALLOC,
    L2E_OFFSET_MASK,
    OFLAG_COPIED,
)
from .refcount import REFT_OFFSET_MASK

if TYPE_CHECKING:
    from .driver import Qcow2Driver


class _Counter:
    """The in-memory refcount table the checker builds (qcow2_inc_refcounts_imrt)."""

    def __init__(self, drv: Qcow2Driver, res: CheckResult) -> None:
        self.drv = drv
        self.res = res
        self.file_len = drv.file.getlength()
        self.refs = np.zeros(-(-self.file_len // drv.cluster_size), dtype=np.uint64)

    def inc(self, offset: int, size: int) -> None:
        if size <= 0:
            return
        cs = self.drv.cluster_size
        if offset + size - self.file_len > cs:
            self.res.messages.append(
                "ERROR: counting reference for region exceeding the end of the file by one "
                f"cluster or more: offset {offset:#x} size {size:#x}")
            self.res.corruptions += 1
            return
        first = offset // cs
        last = (offset + size - 1) // cs
        if last >= len(self.refs):
            self.refs = np.concatenate((self.refs, np.zeros(last + 1 - len(self.refs),
                                                            dtype=np.uint64)))
        self.refs[first : last + 1] += np.uint64(1)


def check_image(drv: Qcow2Driver, fix: int) -> CheckResult:
    res = CheckResult()
    cs = drv.cluster_size
    res.bfi.total_clusters = -(-drv.size // cs)
    counter = _Counter(drv, res)
    counter.inc(0, cs)
    _check_l1(drv, res, counter)
    if drv.hdr.nb_snapshots:
        counter.inc(drv.hdr.snapshots_offset, drv.hdr.nb_snapshots * 40)
    counter.inc(drv.rc.table_offset, drv.rc.table_size * 8)
    _check_refblocks(drv, res, counter)
    highest = _compare(drv, res, counter.refs)
    _check_copied(drv, res)
    res.image_end_offset = (highest + 1) * cs
    return res


def _check_l1(drv: Qcow2Driver, res: CheckResult, counter: _Counter) -> None:
    m = drv.map
    cs = drv.cluster_size
    counter.inc(m.l1_offset, m.l1_size * 8)
    for l1_entry in m.l1:
        l2_offset = int(l1_entry) & L1E_OFFSET_MASK
        if not l2_offset:
            continue
        counter.inc(l2_offset, cs)
        if l2_offset & (cs - 1):
            res.messages.append(f"ERROR l2_offset={l2_offset:x}: Table is not cluster "
                                "aligned; L1 entry corrupted")
            res.corruptions += 1
            continue
        try:
            raw = drv.file.pread(l2_offset, cs)
        except BlockError:
            res.messages.append("ERROR: I/O error in check_refcounts_l2")
            res.check_errors += 1
            continue
        table = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
        _check_l2(drv, res, counter, table)


def _check_l2(drv: Qcow2Driver, res: CheckResult, counter: _Counter,
              table: np.ndarray) -> None:
    m = drv.map
    cs = drv.cluster_size
    next_contiguous = 0
    w = m.width
    entries = table[::w]
    nonzero = np.flatnonzero(entries) if not m.extended else np.arange(m.l2_size)
    for i in nonzero:
        entry = int(entries[i])
        bitmap = int(table[i * w + 1]) if m.extended else 0
        ctype = m.cluster_type(entry)
        if ctype == C_COMPRESSED:
            if entry & OFLAG_COPIED:
                coffset = entry & ((1 << (62 - (drv.cluster_bits - 8))) - 1)
                res.messages.append(f"ERROR: coffset=0x{coffset:x}: copied flag must never "
                                    "be set for compressed clusters")
                entry &= ~OFLAG_COPIED
                res.corruptions += 1
            if bitmap:
                res.messages.append(f"ERROR compressed cluster {i} with non-zero subcluster "
                                    f"allocation bitmap, entry=0x{entry:x}")
                res.corruptions += 1
                continue
            coffset, csize = parse_entry(entry, drv.cluster_bits)
            counter.inc(coffset, csize)
            res.bfi.allocated_clusters += 1
            res.bfi.compressed_clusters += 1
            res.bfi.fragmented_clusters += 1
        elif ctype in (C_NORMAL, C_ZERO_ALLOC):
            offset = entry & L2E_OFFSET_MASK
            if (bitmap >> 32) & bitmap:
                res.corruptions += 1
                res.messages.append(f"ERROR offset={offset:x}: Allocated cluster has "
                                    "corrupted subcluster allocation bitmap")
            if offset & (cs - 1):
                res.corruptions += 1
                data = bitmap & L2_BITMAP_ALL_ALLOC if m.extended else not entry & 1
                kind = "Data" if data else "Preallocated"
                res.messages.append(f"ERROR offset={offset:x}: {kind} cluster is not "
                                    "properly aligned; L2 entry corrupted.")
            res.bfi.allocated_clusters += 1
            if next_contiguous and offset != next_contiguous:
                res.bfi.fragmented_clusters += 1
            next_contiguous = offset + cs
            counter.inc(offset, cs)
        elif ctype == C_UNALLOCATED and bitmap & L2_BITMAP_ALL_ALLOC:
            res.corruptions += 1
            res.messages.append("ERROR: Unallocated cluster has non-zero subcluster "
                                "allocation bitmap")


def _check_refblocks(drv: Qcow2Driver, res: CheckResult, counter: _Counter) -> None:
    cs = drv.cluster_size
    nb_clusters = len(counter.refs)
    for i, raw_entry in enumerate(drv.rc.table):
        value = int(raw_entry)
        offset = value & REFT_OFFSET_MASK
        if value & 0x1FF:
            res.messages.append(f"ERROR refcount table entry {i} has reserved bits set")
            res.corruptions += 1
            continue
        if offset & (cs - 1):
            res.messages.append(f"ERROR refcount block {i} is not cluster aligned; refcount "
                                "table entry corrupted")
            res.corruptions += 1
            continue
        if offset // cs >= nb_clusters:
            res.corruptions += 1
            res.messages.append(f"ERROR refcount block {i} is outside image")
            continue
        if offset:
            counter.inc(offset, cs)
            count = int(counter.refs[offset // cs])
            if count != 1:
                res.messages.append(f"ERROR refcount block {i} refcount={count}")
                res.corruptions += 1


def _compare(drv: Qcow2Driver, res: CheckResult, refs: np.ndarray) -> int:
    highest = 0
    try:
        stored = drv.rc.get_range(0, len(refs))
    except BlockError as exc:
        res.messages.append(f"Can't get refcount for cluster 0: {os.strerror(exc.errno)}")
        res.check_errors += 1
        return 0
    used = np.flatnonzero((stored > 0) | (refs > 0))
    if len(used):
        highest = int(used[-1])
    for i in np.flatnonzero(stored != refs):
        r1, r2 = int(stored[i]), int(refs[i])
        if r1 < r2:
            res.messages.append(f"ERROR cluster {i} refcount={r1} reference={r2}")
            res.corruptions += 1
        else:
            res.messages.append(f"Leaked cluster {i} refcount={r1} reference={r2}")
            res.leaks += 1
    return highest


def _check_copied(drv: Qcow2Driver, res: CheckResult) -> None:
    m = drv.map
    for l1_index, l1_entry in enumerate(m.l1):
        l1_entry = int(l1_entry)
        l2_offset = l1_entry & L1E_OFFSET_MASK
        if not l2_offset:
            continue
        refcount = drv.rc.get(l2_offset >> drv.cluster_bits)
        if (refcount == 1) != bool(l1_entry & OFLAG_COPIED):
            res.messages.append(f"ERROR OFLAG_COPIED L2 cluster: l1_index={l1_index} "
                                f"l1_entry={l1_entry:x} refcount={refcount}")
            res.corruptions += 1
        if l2_offset & (drv.cluster_size - 1):
            continue
        table = np.frombuffer(drv.file.pread(l2_offset, drv.cluster_size),
                              dtype=">u8").astype(np.uint64)
        for entry in table[:: m.width]:
            entry = int(entry)
            if m.cluster_type(entry) not in (C_NORMAL, C_ZERO_ALLOC):
                continue
            host = entry & L2E_OFFSET_MASK
            refcount = drv.rc.get(host >> drv.cluster_bits)
            if (refcount == 1) != bool(entry & OFLAG_COPIED):
                res.messages.append(f"ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} "
                                    f"refcount={refcount}")
                res.corruptions += 1
