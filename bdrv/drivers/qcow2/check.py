"""Consistency check and repair of a qcow2 image, as 7.2's qcow2_check_refcounts.

References are counted from the metadata into an in-memory refcount table (the
"imrt": header, L1 and L2 tables, data and compressed clusters, snapshot table,
refcount table and blocks), then compared with the stored refcounts; the OFLAG_COPIED
flags are verified last. Every problem is one line in `messages`, in 7.2's words and
order. With `fix`, leaks and refcounts that are too low are repaired in place;
refcounts of 0 for referenced clusters and broken refcount tables make the whole
refcount structure be rebuilt (repair.rebuild_refcounts), as 7.2 does.

Scanning is vectorised: each L2 table is examined with numpy and only tables with a
suspicious entry are walked entry by entry (for the messages and their order);
references are gathered as cluster-index arrays and counted with np.bincount.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from bdrv.check import FIX_ERRORS, FIX_LEAKS, CheckResult, ErrorReport
from bdrv.errors import BlockError

from .compress import parse_entry
from .mapping import (
    L1E_OFFSET_MASK,
    L2_BITMAP_ALL_ALLOC,
    L2E_OFFSET_MASK,
    OFLAG_COMPRESSED,
    OFLAG_COPIED,
    OFLAG_ZERO,
    c_hex,
)
from .refcount import REFT_OFFSET_MASK

if TYPE_CHECKING:
    from .driver import Qcow2Driver

L1E_RESERVED_MASK = 0x7F000000000001FF
L2E_STD_RESERVED_MASK = 0x3F000000000001FE
REFT_RESERVED_MASK = 0x1FF
INT_MAX = 0x7FFFFFFF


class CheckAbort(Exception):
    """qcow2_check_refcounts returned -errno: the check stops with this errno."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.errno = err


class Imrt:
    """The in-memory refcount table (qcow2_inc_refcounts_imrt and its array)."""

    def __init__(self, drv: Qcow2Driver, res: CheckResult, nb_clusters: int) -> None:
        self.drv = drv
        self.res = res
        self.cs = drv.cluster_size
        self.bits = drv.cluster_bits
        self.max = drv.rc.max
        self.file_len = drv.file.getlength()
        self.nb = nb_clusters
        self.refs = np.zeros(nb_clusters, dtype=np.int64)
        self._pending: list[np.ndarray] = []

    def grow(self, nb: int) -> None:
        if nb > self.nb:
            self.flush()
            self.refs = np.concatenate((self.refs, np.zeros(nb - self.nb, dtype=np.int64)))
            self.nb = nb

    def _exceeds(self, offset: int, size: int) -> bool:
        if offset + size - self.file_len >= self.cs:
            self.res.messages.append(
                "ERROR: counting reference for region exceeding the end of the file by one "
                f"cluster or more: offset 0x{offset:x} size 0x{size:x}")
            self.res.corruptions += 1
            return True
        return False

    def inc(self, offset: int, size: int) -> None:
        if size <= 0 or self._exceeds(offset, size):
            return
        first = offset >> self.bits
        last = (offset + size - 1) >> self.bits
        self.grow(last + 1)
        self._pending.append(np.arange(first, last + 1, dtype=np.int64))

    def inc_clusters(self, indexes: np.ndarray) -> None:
        """Whole, aligned clusters known to lie inside the file."""
        if len(indexes):
            self._pending.append(indexes.astype(np.int64))

    def flush(self) -> None:
        if not self._pending:
            return
        idx = np.concatenate(self._pending)
        self._pending = []
        add = np.bincount(idx, minlength=self.nb)
        new = self.refs + add[: self.nb]
        over = new > self.max
        if np.any(over):
            for k in np.flatnonzero(over):
                for _ in range(int(new[k]) - self.max):
                    self._overflow(int(k))
            new = np.minimum(new, self.max)
        self.refs = new

    def inc_one(self, k: int) -> int:
        """One more reference to cluster k (inside the table); its count now."""
        self.flush()
        if self.refs[k] == self.max:
            self._overflow(k)
        else:
            self.refs[k] += 1
        return int(self.refs[k])

    def _overflow(self, k: int) -> None:
        self.res.messages.append(f"ERROR: overflow cluster offset=0x{k << self.bits:x}")
        self.res.messages.append(
            "Use qemu-img amend to increase the refcount entry width or qemu-img convert to "
            "create a clean copy if the image cannot be opened for writing")
        self.res.corruptions += 1

    def get(self, k: int) -> int:
        self.flush()
        return int(self.refs[k]) if k < self.nb else 0


def check_image(drv: Qcow2Driver, fix: int) -> CheckResult:
    """qcow2_co_check_locked: raises BlockError (with .check_result) on -errno."""
    from .check_snapshots import (
        SnapshotCheckAbort,
        check_fix_snapshot_table,
        check_read_snapshot_table,
    )

    res = CheckResult()
    # The snapshot table's findings are counted apart and added at the end, as 7.2
    # does; their messages go to the same list, in the order they happen.
    snap = CheckResult()
    snap.messages = res.messages
    # Repairs change refcounts in a write-back cache, as 7.2's refblock cache: written
    # when the check ends, lost if a fatal corruption made the image unusable first.
    write_back = bool(fix) and not drv.rc.write_back
    drv.rc.write_back = drv.rc.write_back or bool(fix)
    try:
        # Lines the driver prints meanwhile (qcow2_signal_corruption) keep their place.
        with contextlib.redirect_stderr(_MessageSink(res)):
            try:
                check_read_snapshot_table(drv, snap, fix)
                check_refcounts(drv, res, fix)
                check_fix_snapshot_table(drv, snap, fix)
            finally:
                _add_counts(res, snap)
                if write_back:
                    _end_write_back(drv)
    except (CheckAbort, SnapshotCheckAbort) as exc:
        err = BlockError(os.strerror(exc.errno), exc.errno)
        err.check_result = res  # type: ignore[attr-defined]
        raise err from None
    if fix and not res.check_errors and not res.corruptions:
        drv.mark_clean()
        from .header import INCOMPAT_CORRUPT

        if drv.hdr.incompatible_features & INCOMPAT_CORRUPT:
            drv.hdr.incompatible_features &= ~INCOMPAT_CORRUPT
            drv.update_header()
    return res


def _end_write_back(drv: Qcow2Driver) -> None:
    """The check is over: write the repaired refcounts (7.2 does at close), unless a
    fatal corruption made the node unusable; with blkdebug its cache keeps them."""
    try:
        if getattr(drv, "dead", False):
            drv.rc.drop_cache()
        elif drv.rc.dbg is None:
            drv.rc.write_cache()
    except BlockError as exc:
        from bdrv.errors import strerror

        drv.rc.dirty.clear()
        owner = getattr(getattr(drv.node, "warn", None), "__self__", None)
        prog = getattr(owner, "prog", None) or "qemu"
        sys.stderr.write(f"{prog}: Failed to flush the refcount block cache: "
                         f"{strerror(exc.errno)}\n")
    finally:
        drv.rc.write_back = False


def _add_counts(res: CheckResult, other: CheckResult) -> None:
    """qcow2_add_check_result() without the allocation info."""
    res.corruptions += other.corruptions
    res.leaks += other.leaks
    res.check_errors += other.check_errors
    res.corruptions_fixed += other.corruptions_fixed
    res.leaks_fixed += other.leaks_fixed


class _MessageSink:
    """A stderr stand-in that turns written lines into check messages."""

    def __init__(self, res: CheckResult) -> None:
        self.res = res
        self.partial = ""

    def write(self, text: str) -> int:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        self.res.messages.extend(lines)
        return len(text)

    def flush(self) -> None:
        pass


def check_refcounts(drv: Qcow2Driver, res: CheckResult, fix: int) -> None:
    from .repair import rebuild_refcounts

    cs = drv.cluster_size
    size = drv.file.getlength()
    nb_clusters = -(-size // cs)
    if nb_clusters > INT_MAX:
        res.check_errors += 1
        raise CheckAbort(errno.EFBIG)
    res.bfi.total_clusters = -(-drv.size // cs)
    imrt = Imrt(drv, res, nb_clusters)
    rebuild = calculate_refcounts(drv, res, fix, imrt)
    pre = _copy(res)
    highest, rebuild2 = compare_refcounts(drv, res, 0, imrt)
    rebuild = rebuild or rebuild2
    if rebuild and fix & FIX_ERRORS:
        old = _copy(res)
        fresh_leaks = 0
        res.messages.append("Rebuilding refcount structure")
        try:
            rebuild_refcounts(drv, imrt)
        except BlockError as exc:
            res.messages.append(ErrorReport(exc.message))
            raise CheckAbort(exc.errno) from None
        res.corruptions = 0
        res.leaks = 0
        imrt = Imrt(drv, res, imrt.nb)
        calculate_refcounts(drv, res, 0, imrt)
        if fix & FIX_LEAKS:
            saved = _copy(res)
            tmp = CheckResult()
            tmp.messages = res.messages
            highest, again = compare_refcounts(drv, tmp, FIX_LEAKS, imrt)
            if again:
                res.messages.append("ERROR rebuilt refcount structure is still broken")
            fresh_leaks = tmp.leaks
            _restore(res, saved)
        if res.corruptions < old.corruptions:
            res.corruptions_fixed += old.corruptions - res.corruptions
        if res.leaks < old.leaks:
            res.leaks_fixed += old.leaks - res.leaks
        res.leaks += fresh_leaks
    elif fix:
        if rebuild:
            res.messages.append("ERROR need to rebuild refcount structures")
            res.check_errors += 1
            raise CheckAbort(errno.EIO)
        if res.leaks or res.corruptions:
            _restore(res, pre)
            highest, _ = compare_refcounts(drv, res, fix, imrt)
    from .check_oflag import check_oflag_copied  # it uses this module's L2Reader

    check_oflag_copied(drv, res, fix)
    res.image_end_offset = (highest + 1) * cs


def _copy(res: CheckResult) -> CheckResult:
    out = CheckResult(res.corruptions, res.leaks, res.check_errors, res.corruptions_fixed,
                      res.leaks_fixed, res.image_end_offset)
    out.bfi = type(res.bfi)(**vars(res.bfi))
    return out


def _restore(res: CheckResult, saved: CheckResult) -> None:
    res.corruptions, res.leaks, res.check_errors = (saved.corruptions, saved.leaks,
                                                    saved.check_errors)
    res.corruptions_fixed, res.leaks_fixed = saved.corruptions_fixed, saved.leaks_fixed
    res.image_end_offset = saved.image_end_offset
    res.bfi = type(saved.bfi)(**vars(saved.bfi))


# -- counting references ------------------------------------------------------------

def calculate_refcounts(drv: Qcow2Driver, res: CheckResult, fix: int, imrt: Imrt) -> bool:
    imrt.inc(0, drv.cluster_size)
    check_l1(drv, res, imrt, drv.map.l1_offset, drv.map.l1_size, True, fix)
    table = _snapshot_table(drv)
    for sn in table.snapshots if table is not None else ():
        l1_offset = int(getattr(sn, "l1_table_offset", 0))
        l1_size = int(getattr(sn, "l1_size", 0))
        if l1_offset & (drv.cluster_size - 1):
            res.messages.append(
                f"ERROR snapshot {_text(sn.id_str)} ({_text(sn.name)}) "
                f"l1_offset={c_hex(l1_offset)}: L1 table is not cluster aligned; snapshot "
                "table entry corrupted")
            res.corruptions += 1
            continue
        if l1_size > (32 << 20) // 8:
            res.messages.append(
                f"ERROR snapshot {_text(sn.id_str)} ({_text(sn.name)}) "
                f"l1_size={c_hex(l1_size)}: L1 table is too large; snapshot table entry "
                "corrupted")
            res.corruptions += 1
            continue
        check_l1(drv, res, imrt, l1_offset, l1_size, False, fix)
    if table is not None:
        imrt.inc(table.offset, table.size)
    imrt.inc(drv.rc.table_offset, drv.rc.table_size * 8)
    for offset, length in _extension_areas(drv):
        imrt.inc(offset, length)
    from .check_bitmaps import BrokenBitmaps, count_bitmap_refs

    try:
        count_bitmap_refs(drv, res, imrt)
    except BrokenBitmaps:
        res.corruptions += 1
        raise CheckAbort(errno.EINVAL) from None
    return check_refblocks(drv, res, fix, imrt)


def _snapshot_table(drv: Qcow2Driver) -> Any:
    """The snapshot table as check_read_snapshot_table() read it."""
    return getattr(drv, "snapshots", None)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _extension_areas(drv: Qcow2Driver) -> list[tuple[int, int]]:
    """Clusters referenced from header extensions (the crypto header)."""
    areas: list[tuple[int, int]] = []
    for name in ("crypto_header",):
        area = getattr(drv.hdr, name, None)
        if area:
            areas.append((int(area[0]), int(area[1])))
    return areas


def check_l1(drv: Qcow2Driver, res: CheckResult, imrt: Imrt, l1_offset: int, l1_size: int,
             active: bool, fix: int) -> None:
    if not l1_size:
        return
    imrt.inc(l1_offset, l1_size * 8)
    try:
        raw = drv.file.pread(l1_offset, l1_size * 8)
    except BlockError:
        res.messages.append("ERROR: I/O error in check_refcounts_l1")
        res.check_errors += 1
        raise CheckAbort(errno.EIO) from None
    l1 = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
    cs = drv.cluster_size
    used = np.flatnonzero(l1)
    l2_offsets = l1[used] & np.uint64(L1E_OFFSET_MASK)
    reader = L2Reader(drv, l2_offsets)
    # Entries whose table may go through the batched path: nothing to report about
    # the L1 entry itself (no reserved bits, an aligned table that starts in the file).
    plain = (((l1[used] & np.uint64(L1E_RESERVED_MASK)) == 0)
             & ((l2_offsets & np.uint64(cs - 1)) == 0)
             & (l2_offsets < np.uint64(imrt.file_len)))
    n = 0
    while n < len(used):
        end = n
        while end < len(used) and plain[end] and end - n < L2_BATCH:
            end += 1
        if end > n and _check_l2_batch(drv, res, imrt, reader, n, end, active):
            n = end
            continue
        for k in range(n, max(end, n + 1)):
            _check_l1_entry(drv, res, imrt, reader, k, int(l1[used[k]]), active, fix)
        n = max(end, n + 1)


# Tables checked together on the fast path (bounded: 256 tables of at most 2 MiB).
L2_BATCH = 256


def _check_l2_batch(drv: Qcow2Driver, res: CheckResult, imrt: Imrt, reader: L2Reader,
                    first: int, end: int, active: bool) -> bool:
    """check_l2's fast path for tables first..end-1 at once. False (and nothing counted)
    if any of them has something to report or cannot be read: the caller then takes
    them one by one, so messages keep 7.2's order."""
    try:
        raws = [reader.table(k) for k in range(first, end)]
    except BlockError:
        return False
    m = drv.map
    cs = drv.cluster_size
    w = m.width
    tables = np.frombuffer(b"".join(raws), dtype=">u8").astype(np.uint64).reshape(
        end - first, -1)
    entries = tables[:, ::w]
    bitmaps = tables[:, 1::w] if w == 2 else np.zeros_like(entries)
    offsets = entries & np.uint64(L2E_OFFSET_MASK)
    if _suspicious(entries, bitmaps, offsets, cs, imrt.file_len, m.extended).any():
        return False
    normal = offsets != 0
    rows = np.nonzero(normal)[0]
    host = offsets[normal].astype(np.int64)
    if len(host) and active:
        res.bfi.allocated_clusters += len(host)
        # Fragmentation is counted within each table, as 7.2 restarts it per table.
        res.bfi.fragmented_clusters += int(np.count_nonzero(
            (rows[1:] == rows[:-1]) & (host[1:] != host[:-1] + cs)))
    l2_clusters = np.array(reader.offsets[first:end], dtype=np.int64) >> drv.cluster_bits
    imrt.inc_clusters(l2_clusters)
    imrt.inc_clusters(host >> drv.cluster_bits)
    return True


def _suspicious(entries: np.ndarray, bitmaps: np.ndarray, offsets: np.ndarray, cs: int,
                file_len: int, extended: bool) -> np.ndarray:
    """L2 entries the slow path must look at (anything it might report or count
    differently from a plain allocated cluster)."""
    compressed = (entries & np.uint64(OFLAG_COMPRESSED)) != 0
    suspicious = (compressed
                  | ((entries & np.uint64(L2E_STD_RESERVED_MASK)) != 0)
                  | ((offsets & np.uint64(cs - 1)) != 0)
                  | (offsets >= np.uint64(file_len))
                  | ((bitmaps >> np.uint64(32)) & bitmaps != 0))
    used: np.ndarray = (entries != 0) | (bitmaps != 0) if extended else entries != 0
    result: np.ndarray = suspicious & used
    return result


def _check_l1_entry(drv: Qcow2Driver, res: CheckResult, imrt: Imrt, reader: L2Reader, n: int,
                    entry: int, active: bool, fix: int) -> None:
    cs = drv.cluster_size
    if entry & L1E_RESERVED_MASK:
        res.messages.append(f"ERROR found L1 entry with reserved bits set: {entry:x}")
        res.corruptions += 1
    l2_offset = entry & L1E_OFFSET_MASK
    imrt.inc(l2_offset, cs)
    if l2_offset & (cs - 1):
        res.messages.append(f"ERROR l2_offset={l2_offset:x}: Table is not cluster "
                            "aligned; L1 entry corrupted")
        res.corruptions += 1
    try:
        raw = reader.table(n)
    except BlockError:
        res.messages.append("ERROR: I/O error in check_refcounts_l2")
        res.check_errors += 1
        raise CheckAbort(errno.EIO) from None
    check_l2(drv, res, imrt, l2_offset, raw, active, fix)


class L2Reader:
    """Reads the L2 tables of one L1 table, contiguous ones in one request (up to 4 MiB)."""

    RUN_BYTES = 4 << 20

    def __init__(self, drv: Qcow2Driver, offsets: np.ndarray) -> None:
        self.drv = drv
        self.offsets = [int(o) for o in offsets]
        self.size = drv.map.l2_size * 8 * drv.map.width
        self.start = -1
        self.buf = b""

    def table(self, n: int) -> bytes:
        off = self.offsets[n]
        cs = self.drv.cluster_size
        if self.start >= 0 and not off & (cs - 1) and self.start <= off and \
                off + self.size <= self.start + len(self.buf):
            pos = off - self.start
            return self.buf[pos : pos + self.size]
        if off & (cs - 1):
            return self.drv.file.pread(off, self.size)
        count = 1
        limit = max(1, self.RUN_BYTES // cs)
        while n + count < len(self.offsets) and count < limit and \
                self.offsets[n + count] == off + count * cs:
            count += 1
        if count == 1:
            return self.drv.file.pread(off, self.size)
        self.buf = bytes(self.drv.file.pread(off, (count - 1) * cs + self.size))
        self.start = off
        return self.buf[: self.size]


def check_l2(drv: Qcow2Driver, res: CheckResult, imrt: Imrt, l2_offset: int, raw: bytes,
             active: bool, fix: int) -> None:
    m = drv.map
    cs = drv.cluster_size
    w = m.width
    table = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
    entries = table[::w]
    bitmaps = table[1::w] if w == 2 else np.zeros(len(entries), dtype=np.uint64)
    offsets = entries & np.uint64(L2E_OFFSET_MASK)
    if not _suspicious(entries, bitmaps, offsets, cs, imrt.file_len, m.extended).any():
        normal = offsets != 0
        host = offsets[normal].astype(np.int64)
        if len(host) and active:
            res.bfi.allocated_clusters += len(host)
            res.bfi.fragmented_clusters += int(np.count_nonzero(host[1:] != host[:-1] + cs))
        imrt.inc_clusters(host >> drv.cluster_bits)
        return
    _check_l2_slow(drv, res, imrt, l2_offset, table, active, fix)


def _check_l2_slow(drv: Qcow2Driver, res: CheckResult, imrt: Imrt, l2_offset: int,
                   table: np.ndarray, active: bool, fix: int) -> None:
    m = drv.map
    cs = drv.cluster_size
    w = m.width
    next_contiguous = 0
    for i in range(m.l2_size):
        entry = int(table[i * w])
        bitmap = int(table[i * w + 1]) if w == 2 else 0
        if not entry and not bitmap:
            continue
        compressed = bool(entry & OFLAG_COMPRESSED)
        if not compressed and entry & L2E_STD_RESERVED_MASK:
            res.messages.append(f"ERROR found l2 entry with reserved bits set: {entry:x}")
            res.corruptions += 1
        if compressed:
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
            imrt.inc(coffset, csize)
            if active:
                res.bfi.allocated_clusters += 1
                res.bfi.compressed_clusters += 1
                res.bfi.fragmented_clusters += 1
            continue
        offset = entry & L2E_OFFSET_MASK
        if not offset:
            if not m.extended and entry & OFLAG_ZERO:
                continue
            if m.extended and not entry & OFLAG_ZERO and bitmap & L2_BITMAP_ALL_ALLOC:
                res.corruptions += 1
                res.messages.append("ERROR: Unallocated cluster has non-zero subcluster "
                                    "allocation map")
            continue
        if (bitmap >> 32) & bitmap:
            res.corruptions += 1
            res.messages.append(f"ERROR offset={offset:x}: Allocated cluster has corrupted "
                                "subcluster allocation bitmap")
        if offset & (cs - 1):
            res.corruptions += 1
            data = bitmap & L2_BITMAP_ALL_ALLOC if m.extended else not entry & OFLAG_ZERO
            if not data:
                repair = bool(fix & FIX_ERRORS)
                res.messages.append(f"{'Repairing' if repair else 'ERROR'} offset={offset:x}: "
                                    "Preallocated cluster is not properly aligned; L2 entry "
                                    "corrupted.")
                if repair and _fix_l2_entry_by_zero(drv, res, l2_offset, table, i, active):
                    continue
            else:
                res.messages.append(f"ERROR offset={offset:x}: Data cluster is not properly "
                                    "aligned; L2 entry corrupted.")
        if active:
            res.bfi.allocated_clusters += 1
            if next_contiguous and offset != next_contiguous:
                res.bfi.fragmented_clusters += 1
            next_contiguous = offset + cs
        imrt.inc(offset, cs)


def _fix_l2_entry_by_zero(drv: Qcow2Driver, res: CheckResult, l2_offset: int,
                          table: np.ndarray, i: int, active: bool) -> bool:
    """Turn an unaligned preallocated zero cluster into a plain zero cluster."""
    w = drv.map.width
    from .alloc import OL_ACTIVE_L2

    if w == 1:
        table[i] = np.uint64(OFLAG_ZERO)
    else:
        table[2 * i] = np.uint64(0)
        table[2 * i + 1] = np.uint64(0xFFFFFFFF00000000)
    entry_off = l2_offset + i * 8 * w
    data = table[i * w : i * w + w].astype(">u8").tobytes()
    try:
        drv.check_overlap(OL_ACTIVE_L2 if active else 1 << 7, entry_off, len(data))
    except BlockError:
        res.messages.append("ERROR: Overlap check failed")
        res.check_errors += 1
        raise CheckAbort(errno.EIO) from None
    try:
        drv.file.pwrite(entry_off, data)
        drv.file.flush()
    except BlockError as exc:
        res.messages.append(f"ERROR: Failed to overwrite L2 table entry: "
                            f"{os.strerror(exc.errno)}")
        res.check_errors += 1
        return False
    drv.map.cache.drop(l2_offset)
    res.corruptions -= 1
    res.corruptions_fixed += 1
    return True


def check_refblocks(drv: Qcow2Driver, res: CheckResult, fix: int, imrt: Imrt) -> bool:
    cs = drv.cluster_size
    rebuild = False
    table = drv.rc.table
    for i in np.flatnonzero(table):
        value = int(table[i])
        offset = value & REFT_OFFSET_MASK
        cluster = offset >> drv.cluster_bits
        if value & REFT_RESERVED_MASK:
            res.messages.append(f"ERROR refcount table entry {i} has reserved bits set")
            res.corruptions += 1
            rebuild = True
            continue
        if offset & (cs - 1):
            res.messages.append(f"ERROR refcount block {i} is not cluster aligned; refcount "
                                "table entry corrupted")
            res.corruptions += 1
            rebuild = True
            continue
        if cluster >= imrt.nb:
            res.corruptions += 1
            repair = bool(fix & FIX_ERRORS)
            res.messages.append(f"{'Repairing' if repair else 'ERROR'} refcount block {i} "
                                "is outside image")
            if repair:
                try:
                    drv.file.truncate(offset + cs, False, "off")
                    new_nb = -(-drv.file.getlength() // cs)
                    imrt.file_len = drv.file.getlength()
                    imrt.grow(new_nb)
                    if cluster >= imrt.nb:
                        raise BlockError("Invalid argument", errno.EINVAL)
                except BlockError as exc:
                    rebuild = True
                    res.messages.append(f"ERROR could not resize image: "
                                        f"{os.strerror(exc.errno)}")
                    continue
                res.corruptions -= 1
                res.corruptions_fixed += 1
                imrt.inc(offset, cs)
            continue
        count = imrt.inc_one(cluster)
        if count != 1:
            res.messages.append(f"ERROR refcount block {i} refcount={count}")
            res.corruptions += 1
            rebuild = True
    imrt.flush()
    return rebuild


# -- comparing ----------------------------------------------------------------------

def _stored_refcounts(drv: Qcow2Driver, res: CheckResult, nb: int) -> np.ndarray:
    """Stored refcounts of clusters [0, nb); -1 where they cannot be read."""
    rc = drv.rc
    out = np.zeros(nb, dtype=np.int64)
    per_block = rc.block_size
    for ti in range(-(-nb // per_block)):
        lo = ti * per_block
        hi = min(nb, lo + per_block)
        if ti >= rc.table_size:
            break
        offset = int(rc.table[ti]) & REFT_OFFSET_MASK
        if not offset:
            continue
        try:
            out[lo:hi] = rc.get_range(lo, hi - lo).astype(np.int64)
        except BlockError:
            out[lo:hi] = -1
    return out


def compare_refcounts(drv: Qcow2Driver, res: CheckResult, fix: int,
                      imrt: Imrt) -> tuple[int, bool]:
    imrt.flush()
    nb = imrt.nb
    stored = _stored_refcounts(drv, res, nb)
    refs = imrt.refs
    rebuild = False
    used = np.flatnonzero(((stored > 0) | (refs > 0)) & (stored >= 0))
    highest = int(used[-1]) if len(used) else 0
    for i in np.flatnonzero(stored != refs):
        r1, r2 = int(stored[i]), int(refs[i])
        if r1 < 0:
            res.messages.append(f"Can't get refcount for cluster {i}: Input/output error")
            res.check_errors += 1
            continue
        fixed = None
        if r1 == 0:
            rebuild = True
        elif r1 > r2 and fix & FIX_LEAKS:
            fixed = "leaks_fixed"
        elif r1 < r2 and fix & FIX_ERRORS:
            fixed = "corruptions_fixed"
        word = "Repairing" if fixed else ("ERROR" if r1 < r2 else "Leaked")
        res.messages.append(f"{word} cluster {i} refcount={r1} reference={r2}")
        if fixed:
            try:
                from .refcount import DISCARD_ALWAYS

                drv.rc.update(int(i) << drv.cluster_bits, 1, abs(r2 - r1), r1 > r2,
                              DISCARD_ALWAYS)
                setattr(res, fixed, getattr(res, fixed) + 1)
                continue
            except BlockError:
                pass
        if r1 < r2:
            res.corruptions += 1
        else:
            res.leaks += 1
    return highest, rebuild
