"""The copy loop of bdrv-img convert, with qemu-img's chunking and sparse detection.

The source is walked in runs of equal block status (data, zero, or "leave to the
backing file"), at most 2 MiB of data at a time. Zero runs are skipped when the
target starts out zeroed, else written as zeroes (may unmap). Data runs are read and
scanned per 512-byte sector with numpy: runs of at least `min_sparse` zero sectors
become holes, exactly where qemu-img's is_allocated_sectors_min() puts them, so the
target's allocation matches qemu-img's. The same walk (done twice, as qemu-img does)
drives the progress meter.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import numpy as np

from bdrv.backend import Backend
from bdrv.errors import BlockError
from bdrv.graph import Node
from bdrv.ratelimit import RateLimit
from bdrv.request import (
    BLOCK_DATA,
    BLOCK_ZERO,
    REQ_MAY_UNMAP,
    REQ_WRITE_COMPRESSED,
    block_status_above,
)
from bdrv.status_index import ChainStatus
from bdrv.tools.img_common import Img
from bdrv.tools.progress import Progress

SECTOR = 512
IO_BUF_SECTORS = (2 << 20) // SECTOR
# BDRV_REQUEST_MAX_SECTORS: block status is asked for at most this much at a time.
REQUEST_MAX_SECTORS = ((1 << 31) - 1) // SECTOR

DATA, ZERO, BACKING = "data", "zero", "backing"


class CopyError(Exception):
    """The copy failed; the message was printed already."""


@dataclass
class Source:
    blk: Backend
    sectors: int
    alignment: int  # in sectors: request alignment or cluster size, whichever is larger


@dataclass
class Converter:
    """ImgConvertState: the sources, the target and how to write it."""

    img: Img
    sources: list[Source]
    target: Backend
    min_sparse: int = 8
    has_zero_init: bool = False
    target_is_new: bool = True
    target_has_backing: bool = False
    target_backing_sectors: int = -1
    copy_range: bool = False
    compressed: bool = False
    cluster_sectors: int = 0  # the target's cluster size (compressed writes are whole)
    salvage: bool = False
    quiet: bool = False
    alignment: int = 1
    buf_sectors: int = IO_BUF_SECTORS
    total_sectors: int = 0
    status: str = DATA
    sector_next_status: int = 0
    allocated_sectors: int = 0
    allocated_done: int = 0
    rate_limit: RateLimit = field(default_factory=lambda: RateLimit(0))  # convert -r
    _zero: bytes = field(default=b"", repr=False)
    # Per source (by id): block status from run indexes (status_index), None where not possible.
    _chains: dict[int, ChainStatus | None] = field(default_factory=dict, repr=False)

    # -- walking the source ----------------------------------------------------------
    def _select(self, sector: int) -> tuple[int, int]:
        """(index of the source holding `sector`, that source's first sector)."""
        first = 0
        for index, src in enumerate(self.sources):
            if sector - first < src.sectors:
                return index, first
            first += src.sectors
        raise AssertionError("sector beyond the sources")

    def iteration_sectors(self, sector: int) -> int:
        """convert_iteration_sectors(): how many sectors from `sector` share a status."""
        index, first = self._select(sector)
        n = min(self.total_sectors - sector, REQUEST_MAX_SECTORS)
        post_backing_zero = False
        if self.target_backing_sectors >= 0:
            if sector >= self.target_backing_sectors:
                post_backing_zero = True
            elif sector + n > self.target_backing_sectors:
                n = self.target_backing_sectors - sector
        if self.sector_next_status <= sector:
            src = self.sources[index]
            flags, count = self._status(src, (sector - first) * SECTOR, n * SECTOR)
            n = -(-count // SECTOR)
            tail = (sector - first + n) % src.alignment
            if n > tail:
                n -= tail
            if flags & BLOCK_ZERO:
                self.status = BACKING if post_backing_zero else ZERO
            elif flags & BLOCK_DATA:
                self.status = DATA
            else:
                self.status = BACKING if self.target_has_backing else DATA
            self.sector_next_status = sector + n
        n = min(n, self.sector_next_status - sector)
        if self.status == DATA:
            n = min(n, self.buf_sectors)
        if self.compressed:
            # Compressed writes are whole clusters: a shorter run is taken as data.
            if n < self.cluster_sectors:
                n = min(self.cluster_sectors, self.total_sectors - sector)
                self.status = DATA
            else:
                n -= n % self.cluster_sectors
        return n

    def _status(self, src: Source, offset: int, count: int) -> tuple[int, int]:
        node = src.blk.node
        base = None
        if self.target_has_backing:
            backing = node.backing
            base = backing.node if backing is not None else None
        key = id(src)
        if key not in self._chains:
            self._chains[key] = ChainStatus.build(node, base)
        chain = self._chains[key]
        if chain is not None:
            found = chain.above(offset, count)
            if found is not None:
                return found
        while True:
            try:
                st, _ = block_status_above(node, base, offset, count)
                return st.flags, st.pnum
            except BlockError as exc:
                if not self.salvage:
                    self.img.error(f"error while reading block status at offset {offset}: "
                                   f"{os.strerror(exc.errno)}")
                    raise CopyError from None
                if count <= SECTOR:
                    if not self.quiet:
                        self.img.warn(f"error while reading block status at offset {offset}: "
                                      f"{os.strerror(exc.errno)}")
                    return BLOCK_DATA, SECTOR
                count = -(-(count // SECTOR) // 4) * SECTOR

    # -- the copy -------------------------------------------------------------------
    def run(self, meter: Progress) -> None:
        """convert_do_copy(): size the work for the progress meter, then copy."""
        target_node = self.target.node
        if not self.has_zero_init and self.min_sparse and not self.target_has_backing:
            self.has_zero_init = self.target_is_new and has_zero_init(target_node)
        if self.compressed:
            if self.cluster_sectors <= 0 or self.cluster_sectors > self.buf_sectors:
                self.img.error("invalid cluster size")
                raise CopyError
            self.buf_sectors = self.cluster_sectors
        sector = 0
        while sector < self.total_sectors:
            n = self.iteration_sectors(sector)
            if self.status == DATA or (not self.min_sparse and self.status == ZERO):
                self.allocated_sectors += n
            sector += n
        self.sector_next_status = 0
        sector = 0
        while sector < self.total_sectors:
            n = self.iteration_sectors(sector)
            status = self.status
            if not self.min_sparse and status == ZERO:
                n = min(n, self.buf_sectors)
            if status == DATA or (not self.min_sparse and status == ZERO):
                self.allocated_done += n
                meter.print(100.0 * self.allocated_done / self.allocated_sectors, 0)
                self.rate_limit.account(n * SECTOR)
            self._copy_chunk(sector, n, status)
            sector += n
        if self.compressed:
            # An empty compressed write tells the driver the copy is over (qcow2
            # aligns the end of its file).
            try:
                self.target.pwrite(0, b"", REQ_WRITE_COMPRESSED)
            except BlockError:
                raise CopyError from None  # qemu-img fails here without a message

    def _copy_chunk(self, sector: int, n: int, status: str) -> None:
        buf = b""
        if status == DATA:
            buf = self._read(sector, n)
        elif not self.min_sparse and status == ZERO:
            status, buf = DATA, self._zeros(n * SECTOR)
        try:
            self._write(sector, n, buf, status)
        except BlockError as exc:
            self.img.error(f"error while writing at byte {sector * SECTOR}: "
                           f"{os.strerror(exc.errno)}")
            raise CopyError from None

    def _zeros(self, length: int) -> bytes:
        if len(self._zero) < length:
            self._zero = bytes(length)
        return self._zero[:length]

    def _read(self, sector: int, n: int) -> bytes:
        index, first = self._select(sector)
        src = self.sources[index]
        offset = (sector - first) * SECTOR
        try:
            return src.blk.pread(offset, n * SECTOR)
        except BlockError as exc:
            if not self.salvage:
                self.img.error(f"error while reading at byte {sector * SECTOR}: "
                               f"{os.strerror(exc.errno)}")
                raise CopyError from None
        # Salvage: retry sector by sector, unreadable sectors read as zeros.
        parts = []
        for i in range(n):
            try:
                parts.append(src.blk.pread(offset + i * SECTOR, SECTOR))
            except BlockError as exc:
                if not self.quiet:
                    self.img.warn(f"error while reading offset {offset + i * SECTOR}: "
                                  f"{os.strerror(exc.errno)}")
                parts.append(bytes(SECTOR))
        return b"".join(parts)

    def _write(self, sector: int, n: int, buf: bytes, status: str) -> None:
        """convert_co_write(): data where the buffer has data, holes or zeroes elsewhere."""
        if status == BACKING:
            return
        if status == ZERO:
            self._write_zeroes(sector, n)
            return
        if self.compressed:
            # A compressed cluster is written whole unless it is all zeros.
            if not self.min_sparse or bytes(buf) != self._zeros(len(buf)):
                self.target.pwrite(sector * SECTOR, buf, REQ_WRITE_COMPRESSED)
            else:
                self._write_zeroes(sector, n)
            return
        if not self.min_sparse or self.copy_range:
            self.target.pwrite(sector * SECTOR, buf)
            return
        for start, count, is_data in sparse_runs(buf, sector, self.min_sparse, self.alignment):
            if is_data:
                view = memoryview(buf)[start * SECTOR : (start + count) * SECTOR]
                self.target.pwrite((sector + start) * SECTOR, view)
            else:
                self._write_zeroes(sector + start, count)

    def _write_zeroes(self, sector: int, n: int) -> None:
        if self.has_zero_init:
            return
        self.target.pwrite_zeroes(sector * SECTOR, n * SECTOR, REQ_MAY_UNMAP)


def has_zero_init(node: Node) -> bool:
    """bdrv_has_zero_init(): does a freshly created image of this node read as zeros?

    Format drivers answer through a `has_zero_init()` method (qcow2: unless
    preallocated; vpc: dynamic images); without one, raw asks its file and others
    say no, as QEMU's safe default does.
    """
    if node.backing is not None:
        return False  # a copy-on-write image shows its backing file, not zeros
    hook = getattr(node.driver, "has_zero_init", None)
    if callable(hook):
        return bool(hook())
    if node.driver.protocol_name == "file":
        return bool(getattr(node.driver, "is_regular", False))
    file = node.file
    if node.driver.format_name == "raw" and file is not None:
        return has_zero_init(file.node)
    return False


def _sector_flags(buf: bytes | memoryview) -> np.ndarray:
    """One bool per 512-byte sector: does it hold a non-zero byte?"""
    words = np.frombuffer(buf, dtype=np.uint64)
    # A sector whose first word is not zero holds data (qemu's buffer_is_zero stops at
    # the first non-zero byte too); only the others are scanned whole.
    flags: np.ndarray = words[:: SECTOR // 8] != 0
    rest = np.flatnonzero(~flags)
    if len(rest) == len(flags):
        # memcmp against zeros is the fastest whole-buffer test (memoryview's == is not)
        if (buf == _zero_buffer(len(buf))) if isinstance(buf, bytes) else not words.any():
            return flags
    if len(rest):
        flags[rest] = words.reshape(-1, SECTOR // 8)[rest].any(axis=1)
    return flags


@functools.lru_cache(maxsize=4)
def _zero_buffer(length: int) -> bytes:
    return bytes(length)


class _Runs:
    """Runs of equal sector flags, answering is_allocated_sectors() from any start."""

    def __init__(self, flags: np.ndarray) -> None:
        self.flags = flags
        self.n = len(flags)
        self.bounds = np.flatnonzero(flags[1:] != flags[:-1]) + 1

    def allocated(self, start: int, sector_num: int, alignment: int) -> tuple[bool, int]:
        """is_allocated_sectors() on sectors [start, n): (has data, pnum)."""
        is_data = bool(self.flags[start])
        pos = int(np.searchsorted(self.bounds, start, side="right"))
        end = int(self.bounds[pos]) if pos < len(self.bounds) else self.n
        i = end - start
        if end == self.n:
            return is_data, i
        tail = (sector_num + i) & (alignment - 1)
        if tail:
            if not is_data and i <= tail:
                is_data = True
            if is_data:
                i = min(i + alignment - tail, self.n - start)
            else:
                i -= tail
        return is_data, i


def sparse_runs(buf: bytes | memoryview, sector_num: int, min_sparse: int,
                alignment: int) -> list[tuple[int, int, bool]]:
    """(first sector, count, is data) runs as qemu-img's is_allocated_sectors_min() splits."""
    flags = _sector_flags(buf)
    if len(flags) and (flags.all() or not flags.any()):  # one run, however aligned
        return [(0, len(flags), bool(flags[0]))]
    runs = _Runs(flags)
    n = runs.n
    out: list[tuple[int, int, bool]] = []
    start = 0
    while start < n:
        left = n - start
        minimum = min(min_sparse, left)
        is_data, pnum = runs.allocated(start, sector_num + start, alignment)
        if is_data:
            used = checked = pnum
            pos = start + pnum
            while pos < n:
                more, count = runs.allocated(pos, sector_num + pos, alignment)
                pos += count
                checked += count
                if more:
                    used = checked
                elif count >= minimum:
                    break
            pnum = used
        out.append((start, pnum, is_data))
        start += pnum
    return out


def target_alignment(min_sparse: int, request_alignment: int) -> int:
    """The sector alignment convert writes aim for (pow2floor(min_sparse) or the target's)."""
    floor = 1 << (min_sparse.bit_length() - 1) if min_sparse else 0
    return max(floor, -(-request_alignment // SECTOR))
