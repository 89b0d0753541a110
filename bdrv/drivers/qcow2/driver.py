"""The qcow2 format driver: open, read, write, zero, discard, block status, resize.

Metadata lives in header.py (header), mapping.py (L1/L2), refcount.py (refcounts),
alloc.py (allocation and linking), compress.py and create.py; this module wires them
to the Driver interface and keeps the per-image state QEMU keeps in BDRVQcow2State.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from bdrv.driver import Driver, register
from bdrv.errors import BlockError
from bdrv.graph import O_CHECK, O_INACTIVE, O_NO_FLUSH, O_NO_IO, O_RDWR, O_UNMAP, Node
from bdrv.request import (
    BLOCK_COMPRESSED,
    BLOCK_DATA,
    BLOCK_OFFSET_VALID,
    BLOCK_RECURSE,
    BLOCK_ZERO,
    MAX_LENGTH,
    REQ_MAY_UNMAP,
    REQ_NO_FALLBACK,
    REQ_WRITE_COMPRESSED,
    BlockStatus,
)
from bdrv.status_runs import StatusRuns

from . import alloc
from .amend import AMEND_OPTIONS
from .compress import decompress, parse_entry
from .header import (
    AUTOCLEAR_BITMAPS,
    AUTOCLEAR_DATA_FILE_RAW,
    AUTOCLEAR_MASK,
    COMPAT_LAZY_REFCOUNTS,
    COMPRESSION_NAMES,
    INCOMPAT_CORRUPT,
    INCOMPAT_DATA_FILE,
    INCOMPAT_DIRTY,
    INCOMPAT_EXTL2,
    MAGIC,
    read_backing_name,
    read_extensions,
    read_header,
    serialize,
)
from .l2_runs import type_runs
from .mapping import (
    L1E_OFFSET_MASK,
    SC_COMPRESSED,
    SC_NORMAL,
    SC_UNALLOC_ALLOC,
    SC_UNALLOC_PLAIN,
    SC_ZERO_ALLOC,
    SC_ZERO_PLAIN,
    Mapping,
)
from .options import CREATE_OPTIONS, RUNTIME_OPTIONS, parse_runtime_options
from .refcount import DISCARD_OTHER, DISCARD_REQUEST, REFT_OFFSET_MASK, Refcounts
from .reopen import Qcow2Reopen
from .run_index import RunIndex

OL_NAMES = ("qcow2_header", "active L1 table", "active L2 table", "refcount table",
            "refcount block", "snapshot table", "inactive L1 table", "inactive L2 table",
            "bitmap directory")
ENOMEDIUM = 123
COMPRESSED_WORKERS = 8  # QCOW2_MAX_WORKERS: compressed cluster writes in flight
# Block status flags by subcluster type (SC_*; SC_INVALID never gets this far).
STATUS_FLAGS = np.zeros(7, dtype=np.int64)
STATUS_FLAGS[[SC_NORMAL, SC_COMPRESSED, SC_ZERO_PLAIN, SC_ZERO_ALLOC, SC_UNALLOC_ALLOC]] = (
    BLOCK_OFFSET_VALID | BLOCK_DATA, BLOCK_DATA | BLOCK_COMPRESSED, BLOCK_ZERO,
    BLOCK_OFFSET_VALID | BLOCK_ZERO, BLOCK_OFFSET_VALID)


def read_chain(top: Node, offset: int, length: int) -> bytes:
    """Read through a backing chain without recursion (chains can be very deep).

    qcow2 layers are resolved here; any other backing format is read as a whole.
    Beyond the end of a shorter backing file the data reads as zeros.
    """
    whole = _read_one_run(top, offset, length)
    if whole is not None:
        return whole
    out = bytearray(length)
    work: list[tuple[Node, int, int, int]] = [(top, offset, length, 0)]
    while work:
        node, off, n, pos = work.pop()
        drv = node.driver
        if not isinstance(drv, Qcow2Driver):
            out[pos : pos + n] = node.pread(off, n)
            continue
        if node is not top:
            drv._alive()
            n = min(n, drv.size - off)
            if n <= 0:
                continue
        drv._read_layer(node, off, n, out, pos, work)
    return bytes(out)


def _read_one_run(top: Node, offset: int, length: int) -> bytes | None:
    """The range, if one layer holds it all as one run of data clusters and the layers
    above leave it all unallocated (most reads): read as it is, without a buffer to
    gather pieces into. None where read_chain must gather."""
    node = top
    while True:
        drv = node.driver
        if not isinstance(drv, Qcow2Driver) or drv.dbg is not None:
            return None
        if node is not top:
            drv._alive()
            if offset + length > drv.size:
                return None
        sc_type, host, n = drv.map.lookup(offset, length)
        if n < length:
            return None
        if sc_type == SC_NORMAL:
            return drv.file.pread(host, length)
        backing = node.backing
        if sc_type not in (SC_UNALLOC_PLAIN, SC_UNALLOC_ALLOC) or backing is None:
            return None
        node = backing.node


@register
class Qcow2Driver(Qcow2Reopen, Driver):
    format_name = "qcow2"
    supports_backing = True
    create_supports_backing = True
    supports_compressed_writes = True
    runtime_options = RUNTIME_OPTIONS
    create_options = CREATE_OPTIONS
    amend_options = AMEND_OPTIONS

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.backing_file: str | None = None
        self.backing_format: str | None = None
        self.dead = False
        self.signaled = False
        self.pending_compressed: tuple[int, np.ndarray, int] | None = None
        self._last_compressed: tuple[int, bytes] | None = None
        self.prealloc_detected: bool | None = None
        self.dbg: Any = None  # the blkdebug driver below, once open
        self.write_gen = self.flushed_gen = 0

    # -- class hooks -------------------------------------------------------------------
    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        if len(header) >= 8 and int.from_bytes(header[:4], "big") == MAGIC \
                and int.from_bytes(header[4:8], "big") >= 2:
            return 100
        return 0

    @classmethod
    def create(cls, filename: str, options: dict[str, Any], log: Callable[[str], None]) -> None:
        from .create import create_image

        create_image(filename, options, log)

    # -- open / close ---------------------------------------------------------------
    @property
    def file(self) -> Node:
        child = self.node.file
        assert child is not None
        return child.node

    def _read(self, offset: int, length: int) -> bytes:
        try:
            return self.file.pread(offset, length)
        except BlockError as exc:
            raise exc.prefixed("Could not read qcow2 header: ") from None

    def open(self, options: dict[str, Any], flags: int) -> None:
        rdwr = bool(flags & O_RDWR)
        hdr = read_header(self._read, bool(flags & O_CHECK), rdwr)
        self.hdr = hdr
        self.version = hdr.version
        self.cluster_bits = hdr.cluster_bits
        self.cluster_size = hdr.cluster_size
        self.extended = bool(hdr.incompatible_features & INCOMPAT_EXTL2)
        self.ctype = hdr.compression_type
        l2_bits = self.cluster_bits - (4 if self.extended else 3)
        # size_to_l1() in uint64_t: a size within a cluster of 2^64 wraps to a small index.
        shift = self.cluster_bits + l2_bits
        l1_vm_state_index = ((hdr.size + (1 << shift) - 1) & (2**64 - 1)) >> shift
        if l1_vm_state_index > 0x7FFFFFFF:
            raise BlockError("Image is too big", errno.EFBIG)
        self.l1_vm_state_index = l1_vm_state_index
        if hdr.l1_size < l1_vm_state_index:
            raise BlockError("L1 table is too small")
        self.size = hdr.size // 512 * 512
        self.map = Mapping(self.file, self.cluster_bits, self.extended, self.version,
                           hdr.l1_table_offset, hdr.l1_size, self.corruption)
        opts = parse_runtime_options(options, hdr, flags)
        self.lazy_refcounts = opts.lazy_refcounts
        self.overlap_mask = opts.overlap_mask
        try:
            self.rc = Refcounts(self.file, self.cluster_bits, hdr.refcount_order,
                                hdr.refcount_table_offset, hdr.refcount_table_clusters,
                                self.corruption)
        except BlockError as exc:
            from bdrv.errors import strerror

            raise BlockError(f"Could not initialize refcount handling: "
                             f"{strerror(exc.errno)}", exc.errno) from None
        self.rc.overlap_check = self.check_overlap
        self.rc.on_free = self.map.cache.drop
        self.dbg = self.file.debug
        if self.dbg is not None:
            # blkdebug below: QEMU's write-back metadata caches are emulated, so that
            # events and injected errors meet the same writes in the same order.
            self.rc.flush_l2 = self.map.flush_cache
            self.rc.l2 = self.map
            self.map.flush_refcounts = self.rc.flush_cache
            self.map.overlap_check = self.check_overlap
        self.rc.discard_passthrough.update({
            DISCARD_REQUEST: opts.pass_discard_request if opts.pass_discard_request
            is not None else bool(flags & O_UNMAP),
            DISCARD_OTHER: opts.pass_discard_other,
        })
        update = read_extensions(self._read, hdr, hdr.ext_end)  # type: ignore[attr-defined]
        if hdr.has_bitmaps_ext and not hdr.autoclear_features & AUTOCLEAR_BITMAPS:
            self._warn_inconsistent_bitmaps()
        if not flags & O_INACTIVE:
            # 7.2 loads the bitmaps at open and refuses a broken directory.
            from .bitmap_directory import read_bitmap_directory

            read_bitmap_directory(self)
        if hdr.incompatible_features & INCOMPAT_DATA_FILE:
            raise BlockError("Unsupported qcow2 feature(s): external data file",
                             errno.ENOTSUP)
        if hdr.autoclear_features & AUTOCLEAR_DATA_FILE_RAW:
            raise BlockError("data-file-raw requires a data file")
        if hdr.crypt_method and not flags & O_NO_IO:
            raise BlockError("Encrypted qcow2 images are not supported", errno.ENOTSUP)
        read_backing_name(self._read, hdr)
        self.backing_file = hdr.backing_file
        # Internal snapshots; not read in check mode (the checker reads them itself).
        from .snapshot import SnapshotTable, read_table

        self.snapshots = SnapshotTable([])
        if not flags & O_CHECK:
            self.snapshots = read_table(self, hdr.nb_snapshots, hdr.snapshots_offset)
        self.backing_format = hdr.backing_format
        update = update or bool(hdr.autoclear_features & ~AUTOCLEAR_MASK)
        # bdrv has no bitmap support, so a read-write open marks persistent bitmaps
        # inconsistent before anything is written (qcow2.txt: autoclear bits a program
        # does not support are cleared); QEMU then drops them instead of trusting them.
        # A check repairs only metadata and counts their clusters, so it keeps them.
        keeps_bitmaps = bool(flags & (O_CHECK | O_INACTIVE))
        if rdwr and hdr.autoclear_features & AUTOCLEAR_BITMAPS and not keeps_bitmaps:
            update = True
        if update and rdwr:
            hdr.autoclear_features &= AUTOCLEAR_MASK
            if not keeps_bitmaps:
                hdr.autoclear_features &= ~AUTOCLEAR_BITMAPS
                hdr.bitmaps = None
            self.update_header()
        if hdr.incompatible_features & INCOMPAT_DIRTY and rdwr and \
                not flags & (O_CHECK | O_INACTIVE):
            self._repair_dirty()
        self.node.request_alignment = 512 if hdr.crypt_method else 1
        if self.size > MAX_LENGTH:
            # What bdrv_open_driver()'s bdrv_refresh_total_sectors() then refuses.
            raise BlockError("Could not refresh total sector count: File too large",
                             errno.EFBIG)

    def _repair_dirty(self) -> None:
        """7.2 repairs a dirty image opened read-write (qcow2_co_check_locked with
        BDRV_FIX_ERRORS | BDRV_FIX_LEAKS), its lines going to stderr."""
        import sys

        from .check import check_image

        try:
            result = check_image(self, 3)
        except BlockError as exc:
            for line in getattr(getattr(exc, "check_result", None), "messages", ()):
                sys.stderr.write(line + "\n")
            raise BlockError(f"Could not repair dirty image: {exc.message}",
                             exc.errno) from None
        for line in result.messages:
            sys.stderr.write(line + "\n")
        if result.check_errors:
            raise BlockError("Could not repair dirty image: Input/output error", errno.EIO)

    # -- QEMU's flush and close with the metadata caches (blkdebug below only) -------
    def write_caches(self) -> None:
        """qcow2_write_caches(): dirty L2 tables, then refcount blocks unless the
        image is dirty (lazy refcounts: they are written when it is marked clean)."""
        self.map.write_cache()
        if not self.hdr.incompatible_features & INCOMPAT_DIRTY:
            self.rc.write_cache()

    def debug_flush(self, fua: bool = False) -> None:
        """bdrv_co_flush() of this node with blkdebug below: flush_to_os (the caches
        written), flush_to_disk if this node was written since its last flush, then
        the file. `fua` is the flush that completes a write in writethrough mode,
        which runs before that write counts as one."""
        dbg = self.dbg
        assert dbg is not None
        if self.node.read_only:
            return
        current = self.write_gen - (1 if fua else 0)
        dbg.event("flush_to_os")
        self.write_caches()
        if not self.node.open_flags & O_NO_FLUSH and self.flushed_gen != current:
            dbg.event("flush_to_disk")
        self.file.flush()
        self.flushed_gen = current

    def _warn_inconsistent_bitmaps(self) -> None:
        """7.2's warning for bitmaps a program without bitmap support left behind (its
        second line has no newline: the next output continues on it)."""
        owner = getattr(getattr(self.node, "warn", None), "__self__", None)
        prog = getattr(owner, "prog", None) or "qemu"
        sys.stdout.flush()
        sys.stderr.write(f"{prog}: warning: a program lacking bitmap support modified this "
                         "file, so all bitmaps are now considered inconsistent\nSome clusters "
                         "may be leaked, run 'qemu-img check -r' on the image file to fix.")
        sys.stderr.flush()

    def _close_caches(self) -> None:
        """bdrv_close()'s flush (errors ignored) and qcow2_inactivate()'s cache
        flushes, each failure reported as 7.2 does."""
        from bdrv.errors import strerror

        try:
            self.debug_flush()
        except BlockError:
            pass
        failed = False
        for what, flush in (("L2 table", self.map.flush_cache),
                            ("refcount block", self.rc.flush_cache)):
            try:
                flush()
            except BlockError as exc:
                failed = True
                owner = getattr(getattr(self.node, "warn", None), "__self__", None)
                prog = getattr(owner, "prog", None) or "qemu"
                sys.stderr.write(f"{prog}: Failed to flush the {what} cache: "
                                 f"{strerror(exc.errno)}\n")
                sys.stderr.flush()
        if not failed:
            self.mark_clean_quietly()

    def mark_clean_quietly(self) -> None:
        if self.hdr.incompatible_features & INCOMPAT_DIRTY:
            try:
                self.mark_clean()
            except BlockError:
                pass

    def close(self) -> None:
        if getattr(self, "hdr", None) is None or self.dead:
            return
        if self.dbg is not None and self.node.open_flags & O_RDWR and \
                not self.node.open_flags & O_INACTIVE:
            self._close_caches()
            return
        if self.node.open_flags & O_RDWR and self.hdr.incompatible_features & INCOMPAT_DIRTY \
                and not self.node.open_flags & O_INACTIVE:
            try:
                self.mark_clean()
            except BlockError:
                pass

    # -- header ------------------------------------------------------------------------
    def update_header(self) -> None:
        hdr = self.hdr
        hdr.size = self.size
        hdr.l1_size = self.map.l1_size
        hdr.l1_table_offset = self.map.l1_offset
        hdr.refcount_table_offset = self.rc.table_offset
        hdr.refcount_table_clusters = self.rc.table_size >> (self.cluster_bits - 3)
        self.file.pwrite(0, serialize(hdr))

    def mark_dirty(self) -> None:
        if self.hdr.incompatible_features & INCOMPAT_DIRTY:
            return
        val = self.hdr.incompatible_features | INCOMPAT_DIRTY
        self.file.pwrite(72, val.to_bytes(8, "big"))
        self.file.flush()
        self.hdr.incompatible_features = val

    def mark_clean(self) -> None:
        if self.hdr.incompatible_features & INCOMPAT_DIRTY:
            self.hdr.incompatible_features &= ~INCOMPAT_DIRTY
            self.update_header()

    # -- corruption --------------------------------------------------------------------
    def signal_corruption(self, fatal: bool, message: str) -> None:
        """qcow2_signal_corruption(): report once, mark corrupt and stop if fatal."""
        fatal = fatal and bool(self.node.open_flags & O_RDWR)
        if self.signaled and (not fatal or self.hdr.incompatible_features & INCOMPAT_CORRUPT):
            return
        if fatal:
            sys.stderr.write(f"qcow2: Marking image as corrupt: {message}; further "
                             "corruption events will be suppressed\n")
        else:
            sys.stderr.write(f"qcow2: Image is corrupt: {message}; further non-fatal "
                             "corruption events will be suppressed\n")
        sys.stderr.flush()
        if fatal:
            self.hdr.incompatible_features |= INCOMPAT_CORRUPT
            try:
                self.update_header()
            except BlockError:
                pass
            self.dead = True
        self.signaled = True

    def corruption(self, message: str) -> BlockError:
        self.signal_corruption(True, message)
        return BlockError("Input/output error", errno.EIO)

    def check_overlap(self, ign: int, offset: int, size: int) -> None:
        """qcow2_pre_write_overlap_check() with the cached-metadata template."""
        chk = self.overlap_mask & ~ign
        if not chk or size <= 0:
            return
        hit = self._overlap(chk, offset, size)
        if hit:
            bit = (hit & -hit).bit_length() - 1
            raise self.corruption(f"Preventing invalid write on metadata (overlaps with "
                                  f"{OL_NAMES[bit]})")

    def _overlap(self, chk: int, offset: int, size: int) -> int:
        cs = self.cluster_size
        if chk & 1 and offset < cs:
            return 1
        size = -(-((offset & (cs - 1)) + size) // cs) * cs
        offset &= ~(cs - 1)

        def hits(start: int, length: int) -> bool:
            return start < offset + size and offset < start + length

        if chk & 2 and self.map.l1_size and hits(self.map.l1_offset, self.map.l1_size * 8):
            return 2
        if chk & 8 and self.rc.table_size and hits(self.rc.table_offset,
                                                   self.rc.table_size * 8):
            return 8
        snaps = getattr(self, "snapshots", None)
        if chk & 0x20 and snaps is not None and snaps.size and hits(snaps.offset, snaps.size):
            return 0x20
        lo, hi = np.uint64(offset), np.uint64(offset + size)
        if chk & 4 and self.map.l1_size:
            offs = self.map.l1 & np.uint64(L1E_OFFSET_MASK)
            if np.any((offs != 0) & (offs < hi) & (lo < offs + np.uint64(cs))):
                return 4
        if chk & 0x10 and self.rc.table_size:
            offs = self.rc.table & np.uint64(REFT_OFFSET_MASK)
            if np.any((offs != 0) & (offs < hi) & (lo < offs + np.uint64(cs))):
                return 0x10
        return 0

    def _alive(self) -> None:
        if self.dead:
            raise BlockError("No medium found", ENOMEDIUM)

    # -- helpers for alloc.py ---------------------------------------------------------
    def has_backing(self) -> bool:
        return self.node.backing is not None

    def read_guest(self, offset: int, length: int) -> bytes:
        return self.pread(offset, length)

    # -- I/O -------------------------------------------------------------------------
    def getlength(self) -> int:
        return self.size

    def pread(self, offset: int, length: int) -> bytes:
        self._alive()
        return read_chain(self.node, offset, length)

    def _read_layer(self, node: Node, offset: int, length: int, out: bytearray, pos: int,
                    work: list[tuple[Node, int, int, int]]) -> None:
        """Fill `out` from this layer; ranges it leaves to its backing file go on `work`."""
        while length > 0:
            sc_type, host, n = self.map.lookup(offset, min(length, 1 << 30))
            if sc_type in (SC_UNALLOC_PLAIN, SC_UNALLOC_ALLOC):
                backing = node.backing
                if backing is not None:
                    if self.dbg is not None:
                        self.dbg.event("read_backing_aio")
                    work.append((backing.node, offset, n, pos))
            elif sc_type == SC_COMPRESSED:
                n = min(n, self.cluster_size - (offset & (self.cluster_size - 1)))
                start = offset & (self.cluster_size - 1)
                out[pos : pos + n] = self._read_compressed(host)[start : start + n]
            elif sc_type == SC_NORMAL:
                if self.dbg is not None:
                    self.dbg.event("read_aio")
                out[pos : pos + n] = self.file.pread(host, n)
            offset += n
            pos += n
            length -= n

    def _read_compressed(self, entry: int) -> bytes:
        if self.dbg is not None:
            self.dbg.event("read_compressed")  # and no cache: QEMU reads every time
        elif self._last_compressed is not None and self._last_compressed[0] == entry:
            return self._last_compressed[1]
        coffset, csize = parse_entry(entry, self.cluster_bits)
        data = self.file.pread(coffset, csize)
        out = decompress(data, self.cluster_size, self.ctype)
        self._last_compressed = (entry, out)
        return out

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview, flags: int) -> None:
        self._alive()
        self.write_gen += 1
        if flags & REQ_WRITE_COMPRESSED:
            self._write_compressed(offset, data)
            return
        view = memoryview(data)
        pos = 0
        self._last_compressed = None
        while pos < len(view):
            chunk = min(len(view) - pos, 0x7FFFFFFF)
            metas: list[alloc.L2Meta] = []
            try:
                host, n, metas = alloc.alloc_host_offset(self, offset + pos, chunk, metas)
                self.check_overlap(0, host, n)
                if self.dbg is None:
                    self.file.pwrite(host, view[pos : pos + n])
                else:
                    alloc.alloc_space(self, metas)
                    if not alloc.merge_cow(offset + pos, view[pos : pos + n], metas):
                        self.dbg.event("write_aio")
                        self.file.pwrite(host, view[pos : pos + n])
                while metas:
                    alloc.link_l2(self, metas[-1])
                    metas.pop()
            except BlockError:
                alloc.abort_alloc(self, metas)  # what was allocated but not linked
                raise
            pos += n

    def _write_compressed(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        from .compress import compress

        cs = self.cluster_size
        length = len(data)
        if length == 0:
            # The end of a run of compressed writes: align the file's end to a sector
            # (the file node's length is already rounded up to one).
            self.file.truncate(self.file.getlength())
            return
        if offset & (cs - 1):
            raise BlockError("Invalid argument", errno.EINVAL)
        if length & (cs - 1) and offset + length != self.size:
            raise BlockError("Invalid argument", errno.EINVAL)
        view = memoryview(data)
        # 7.2 writes each cluster as a task, up to COMPRESSED_WORKERS at a time, and
        # stops adding tasks once one has failed: the clusters already in flight
        # after a failing one are still written. The first error is reported.
        first_error: BlockError | None = None
        stop_at = length
        pos = 0
        while pos < min(length, stop_at):
            n = min(cs, length - pos)
            try:
                self._write_compressed_cluster(offset + pos, view[pos : pos + n], compress)
            except BlockError as exc:
                if first_error is None:
                    first_error = exc
                    stop_at = pos + COMPRESSED_WORKERS * cs
            pos += n
        if first_error is not None:
            raise first_error

    def _write_compressed_cluster(self, offset: int, data: memoryview,
                                  compress: Callable[..., bytes | None]) -> None:
        cs = self.cluster_size
        out = compress(bytes(data).ljust(cs, b"\0"), cs - 1, self.ctype)
        if out is None:
            self.write_gen -= 1  # one request: counted once, by pwrite()
            self.pwrite(offset, data, 0)
            return
        self.pending_compressed = None
        host = alloc.alloc_compressed(self, offset, len(out))
        if self.dbg is not None:
            # QEMU's cache holds the new L2 entry before the data is written.
            assert self.pending_compressed is not None
            alloc.write_l2(self, *self.pending_compressed, 1)
            self.pending_compressed = None
            self.check_overlap(0, host, len(out))
            self.dbg.event("write_compressed")
            self.file.pwrite(host, out)
            return
        self.check_overlap(0, host, len(out))
        self.file.pwrite(host, out)
        assert self.pending_compressed is not None
        l2_offset, table, index = self.pending_compressed
        self.pending_compressed = None
        alloc.write_l2(self, l2_offset, table, index, 1)

    def pwrite_zeroes(self, offset: int, length: int, flags: int) -> None:
        """bdrv_co_do_pwrite_zeroes()'s split plus qcow2_co_pwrite_zeroes()."""
        self._alive()
        self.write_gen += 1
        self._last_compressed = None
        align = self.map.sc_size
        drv_flags = flags & (REQ_MAY_UNMAP | REQ_NO_FALLBACK) if self.version >= 3 else 0
        head = offset % align
        tail = (offset + length) % align
        while length > 0:
            num = length
            if head:
                num = min(length, align - head)
                head = (head + num) % align
            elif tail and num > align:
                num -= tail
            try:
                self._zero_piece(offset, num, drv_flags)
            except BlockError as exc:
                if exc.errno != errno.ENOTSUP or flags & REQ_NO_FALLBACK:
                    raise
                self.write_gen -= 1  # the fallback is part of this request
                self.pwrite(offset, bytes(num), 0)
            offset += num
            length -= num

    def _zero_piece(self, offset: int, length: int, flags: int) -> None:
        align = self.map.sc_size
        head = offset % align
        tail = -(offset + length) % align
        if offset + length == self.size:
            tail = 0
        if head or tail:
            from bdrv.request import block_status_above

            if not (self._is_zero(offset - head, head, block_status_above)
                    and self._is_zero(offset + length, tail, block_status_above)):
                raise BlockError("Operation not supported", errno.ENOTSUP)
            offset -= head
            length = align
            sc_type, _, _ = self.map.lookup(offset, align)
            if sc_type not in (SC_UNALLOC_PLAIN, SC_UNALLOC_ALLOC, SC_ZERO_PLAIN,
                               SC_ZERO_ALLOC):
                raise BlockError("Operation not supported", errno.ENOTSUP)
        alloc.zeroize(self, offset, length, bool(flags & REQ_MAY_UNMAP))

    def _is_zero(self, offset: int, length: int, status_above: Any) -> bool:
        if offset + length > self.size:
            length = self.size - offset
        if length <= 0:
            return True
        while length > 0:
            st, _ = status_above(self.node, None, offset, length, False)
            if not st.flags & BLOCK_ZERO or st.pnum == 0:
                return False
            offset += st.pnum
            length -= st.pnum
        return True

    def pdiscard(self, offset: int, length: int) -> None:
        """bdrv_co_pdiscard()'s cluster alignment plus qcow2_co_pdiscard()."""
        self._alive()
        self.write_gen += 1
        self._last_compressed = None
        cs = self.cluster_size
        end = offset + length
        start = -(-offset // cs) * cs
        stop = end // cs * cs
        if end == self.size and end % cs and end - stop < cs and stop >= start:
            stop = end  # the partial cluster at the end of the image counts
        if stop > start:
            alloc.discard_clusters(self, start, stop - start, DISCARD_REQUEST, False)

    def truncate(self, size: int, exact: bool, prealloc: str) -> None:
        from .resize import truncate

        self._alive()
        truncate(self, size, prealloc)

    def change_backing_file(self, backing_file: str | None, backing_fmt: str | None) -> None:
        """qcow2_change_backing_file(): new backing name and format, header rewritten."""
        self._alive()
        if backing_file and len(backing_file.encode("utf-8", "surrogateescape")) > 1023:
            raise BlockError("Invalid argument", errno.EINVAL)
        old = (self.hdr.backing_file, self.hdr.backing_format, self.hdr.backing_file_offset,
               self.hdr.backing_file_size)
        self.hdr.backing_file = backing_file or None
        self.hdr.backing_format = backing_fmt or None
        if not backing_file:
            self.hdr.backing_file_offset = self.hdr.backing_file_size = 0
        try:
            self.update_header()
        except BlockError:
            (self.hdr.backing_file, self.hdr.backing_format, self.hdr.backing_file_offset,
             self.hdr.backing_file_size) = old
            raise
        self.backing_file = self.hdr.backing_file
        self.backing_format = self.hdr.backing_format

    def amend(self, options: dict[str, Any], status: Callable[[int, int], None],
              force: bool) -> None:
        from .amend import amend

        self._alive()
        amend(self, options, status)

    def make_empty(self) -> None:
        from .empty import make_empty

        self._alive()
        make_empty(self)

    def block_status(self, want_zero: bool, offset: int, length: int) -> BlockStatus:
        self._alive()
        if self.prealloc_detected is None:
            self.prealloc_detected = self._detect_metadata_prealloc()
        sc_type, host, n = self.map.lookup(offset, min(length, 0x7FFFFFFF))
        flags = int(STATUS_FLAGS[sc_type])
        st = BlockStatus(0, n)
        if flags & BLOCK_OFFSET_VALID:
            if self.hdr.crypt_method:
                flags &= ~BLOCK_OFFSET_VALID
            else:
                st.map, st.file = host, self.file
        if self.prealloc_detected and flags & BLOCK_DATA and flags & BLOCK_OFFSET_VALID:
            flags |= BLOCK_RECURSE
        st.flags = flags
        return st

    def block_status_runs(self, offset: int, length: int) -> StatusRuns | None:
        """block_status() for the extents of [offset, offset + length) at once (as far
        as l2_runs.type_runs() goes); None where only the per-extent path is right: a
        dead image, blkdebug below (its events), encryption, metadata preallocation."""
        if self.dead or self.dbg is not None or self.file.debug is not None \
                or self.hdr.crypt_method:
            return None
        if self.prealloc_detected is None:
            self.prealloc_detected = self._detect_metadata_prealloc()
        if self.prealloc_detected:
            return None
        runs = type_runs(self.map, offset, length)
        return StatusRuns(runs.start, runs.end, STATUS_FLAGS[runs.sc_type], runs.host,
                          runs.resume)

    def run_index(self) -> RunIndex | None:
        """A RunIndex for status_index.ChainStatus, where block_status() depends on the
        L2 tables alone: none for a dead image, blkdebug, extended L2, encryption or
        metadata preallocation (whose answers look into the file)."""
        if self.dead or self.dbg is not None or self.file.debug is not None \
                or self.hdr.crypt_method or self.map.extended:
            return None
        if self.prealloc_detected is None:
            self.prealloc_detected = self._detect_metadata_prealloc()
        return None if self.prealloc_detected else RunIndex(self.map, STATUS_FLAGS.tolist())

    def _detect_metadata_prealloc(self) -> bool:
        """qcow2_detect_metadata_preallocation(): many more clusters than file blocks.

        An error (a bad refcount block) counts as "no", as in qcow2_co_block_status()."""
        try:
            real = self.file.driver.get_allocated_file_size()
            real_clusters = real // self.cluster_size
            threshold = max(real_clusters * 10 // 9, real_clusters + 2)
            end_cluster = -(-self.file.getlength() // self.cluster_size)
            counted = int(np.count_nonzero(self.rc.get_range(0, end_cluster)))
        except BlockError:
            return False
        return counted >= threshold

    def has_zero_init(self) -> bool:
        """qcow2_has_zero_init(): without preallocated L2 tables a new image reads zero."""
        preallocated = self.map.l1_size > 0 and int(self.map.l1[0]) != 0
        if not preallocated:
            return True
        if self.hdr.crypt_method:
            return False
        # Preallocated: the data clusters read as whatever the file holds there.
        hook = getattr(self.file.driver, "has_zero_init", None)
        if callable(hook):
            return bool(hook())
        return bool(getattr(self.file.driver, "is_regular", False))

    # -- information ----------------------------------------------------------------
    def get_info(self) -> dict[str, Any]:
        l2_bits = self.map.l2_bits
        return {"cluster_size": self.cluster_size,
                "vm_state_offset": self.l1_vm_state_index << (self.cluster_bits + l2_bits),
                "is_dirty": bool(self.hdr.incompatible_features & INCOMPAT_DIRTY)}

    def get_specific_info(self) -> dict[str, Any] | None:
        hdr = self.hdr
        data: dict[str, Any]
        if self.version == 2:
            data = {"compat": "0.10", "refcount-bits": 1 << hdr.refcount_order}
        else:
            data = {"compat": "1.1",
                    "extended-l2": self.extended,
                    "lazy-refcounts": bool(hdr.compatible_features & COMPAT_LAZY_REFCOUNTS),
                    "corrupt": bool(hdr.incompatible_features & INCOMPAT_CORRUPT),
                    "refcount-bits": 1 << hdr.refcount_order}
        data["compression-type"] = COMPRESSION_NAMES[self.ctype]
        return {"type": "qcow2", "data": data}

    # -- internal snapshots (snapshot.py) -------------------------------------------
    def snapshot_list(self) -> list[Any]:
        return list(self.snapshots.snapshots)

    def snapshot_infos(self) -> list[dict[str, Any]]:
        """SnapshotInfo dicts for bdrv-img info."""
        return [sn.info() for sn in self.snapshots.snapshots]

    def snapshot_create(self, name: bytes, date_sec: int, date_nsec: int) -> Any:
        from . import snapshot

        self._alive()
        return snapshot.create(self, name, date_sec, date_nsec)

    def snapshot_goto(self, id_or_name: bytes) -> None:
        from . import snapshot

        self._alive()
        self._last_compressed = None
        snapshot.goto(self, id_or_name)

    def snapshot_delete(self, sid: bytes | None, name: bytes | None) -> None:
        from . import snapshot

        self._alive()
        snapshot.delete(self, sid, name)

    def snapshot_load_tmp(self, sid: bytes | None, name: bytes | None) -> None:
        from . import snapshot

        self._alive()
        self._last_compressed = None
        snapshot.load_tmp(self, sid, name)

    def vm_state_offset(self) -> int:
        return self.l1_vm_state_index << (self.cluster_bits + self.map.l2_bits)

    def load_vmstate(self, pos: int, count: int) -> bytes:
        """qcow2_load_vmstate(): the VM state area lies past the end of the disk."""
        self._alive()
        if self.dbg is not None:
            self.dbg.event("vmstate_load")
        return self.pread(self.vm_state_offset() + pos, count)

    def save_vmstate(self, pos: int, data: bytes) -> None:
        self._alive()
        if self.dbg is not None:
            self.dbg.event("vmstate_save")
        self.pwrite(self.vm_state_offset() + pos, data, 0)
        self.write_gen -= 1  # a driver call in 7.2, not a write request of the node

    def check(self, fix: int) -> Any:
        from .check import check_image

        return check_image(self, fix)
