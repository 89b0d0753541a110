"""The `vpc` format driver: fixed, dynamic and differencing VHD images.

Fixed and dynamic images behave exactly as in QEMU 7.2 (open checks and messages,
virtual size, allocation with all-ones sector bitmaps, block status). Differencing
images, which 7.2 reads as if they were dynamic, get their parent as backing file;
their reads and writes follow the per-sector bitmaps.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bdrv.driver import Driver, register
from bdrv.drivers.vpc import create as vpc_create
from bdrv.drivers.vpc.dynamic import (
    BAT_UNUSED,
    HEADER_SIZE,
    PLAT_NONE,
    BatmapHeader,
    DynamicHeader,
    pack_bat_entry,
    parse_bat,
)
from bdrv.drivers.vpc.footer import (
    COOKIE,
    FOOTER_SIZE,
    MAX_SECTORS,
    SECTOR,
    TYPE_DIFFERENCING,
    TYPE_FIXED,
    Footer,
    virtual_sectors,
)
from bdrv.drivers.vpc.parent import (
    check_no_loop,
    check_parent_identity,
    locator_candidates,
    no_parent_error,
    read_vhd_footer,
)
from bdrv.errors import BlockError
from bdrv.graph import O_CHECK, O_NO_BACKING
from bdrv.options import OptionDesc, parse_bool
from bdrv.request import (
    BLOCK_DATA,
    BLOCK_OFFSET_VALID,
    BLOCK_RECURSE,
    BLOCK_ZERO,
    BlockStatus,
)

if TYPE_CHECKING:
    from bdrv.check import CheckResult
    from bdrv.graph import Node

INT_MAX = 2**31 - 1
# QEMU's BDRV_MAX_LENGTH: INT64_MAX aligned down to BDRV_MAX_ALIGNMENT (1 GiB).
BDRV_MAX_LENGTH = (2**63 - 1) // 2**30 * 2**30
# Sector bitmaps kept in memory (each one covers one block).
BITMAP_CACHE_SIZE = 256


def _as_int32(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


@register
class VpcDriver(Driver):
    format_name = "vpc"
    supports_backing = True
    runtime_options = ("force_size_calc", "check_parent")
    strong_options = ("force_size_calc",)
    create_options = vpc_create.CREATE_OPTIONS
    # -b/-F make a differencing image; 7.2's `-o help` does not list these.
    create_backing_options: ClassVar[tuple[OptionDesc, ...]] = vpc_create.BACKING_OPTIONS
    create_supports_backing = True

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.footer: Footer | None = None
        self.header: DynamicHeader | None = None
        self.disk_type = TYPE_FIXED
        self.total_sectors = 0
        self.block_size = 0
        self.bitmap_size = 0
        self.bat = np.zeros(0, dtype=np.uint32)
        self.bat_entries = 0
        self.bat_offset = 0
        self.free_data_block_offset = 0
        self.last_bitmap_offset = -1
        self.batmap: BatmapHeader | None = None
        self._bitmaps: OrderedDict[int, np.ndarray] = OrderedDict()
        self.backing_file: str | None = None
        self.full_backing_file: str | None = None
        self.backing_format: str | None = None
        self.check_parent = True

    # -- class hooks -----------------------------------------------------------------
    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return 100 if header[:8] == COOKIE else 0

    @classmethod
    def create(cls, filename: str, options: dict[str, Any], log: Callable[[str], None]) -> None:
        vpc_create.create(filename, options, log)

    # -- open ------------------------------------------------------------------------
    def _file(self) -> Node:
        child = self.node.file
        assert child is not None
        return child.node

    def open(self, options: dict[str, Any], flags: int) -> None:
        force_chs = force_size = False
        mode = options.pop("force_size_calc", None)
        if mode is not None:
            if mode == "current_size":
                force_size = True
            elif mode == "chs":
                force_chs = True
            else:
                raise BlockError(f"Invalid size calculation mode: '{mode}'")
        self.check_parent = parse_bool("check_parent", options.pop("check_parent", True))
        file = self._file()
        try:
            raw = file.pread(0, FOOTER_SIZE)
        except BlockError as exc:
            raise BlockError("Unable to read VHD header", exc.errno) from exc
        footer = Footer.parse(raw)
        dynamic = True
        if not footer.has_cookie:
            length = file.getlength()
            if length < FOOTER_SIZE:
                raise BlockError("File too small for a VHD header")
            footer = Footer.parse(file.pread(length - FOOTER_SIZE, FOOTER_SIZE))
            if not footer.has_cookie:
                raise BlockError("invalid VPC image")
            dynamic = False
        if not footer.checksum_ok:
            good_tail = self._good_tail_footer(file, dynamic, flags)
            if good_tail is None:
                raise BlockError("Incorrect header checksum")
            footer = good_tail
        self.footer = footer
        self.total_sectors = virtual_sectors(footer, force_chs, force_size)
        if self.total_sectors > MAX_SECTORS:
            raise BlockError(f"Could not open '{file.filename}': File too large", errno.EFBIG)
        if not dynamic:
            self.disk_type = TYPE_FIXED
            return
        # 7.2 takes the dynamic path whenever the footer copy is at offset 0.
        self.disk_type = footer.disk_type if footer.disk_type == TYPE_DIFFERENCING else 3
        self._open_dynamic(footer, file)
        if self.disk_type == TYPE_DIFFERENCING:
            # Bitmaps are per sector: partial sectors must be merged with the parent.
            self.node.request_alignment = max(self.node.request_alignment, SECTOR)
            self._find_parent(file, flags)

    @staticmethod
    def _good_tail_footer(file: Node, dynamic: bool, flags: int) -> Footer | None:
        """For `check` only: the last footer, if the bad copy at 0 can be rebuilt from it."""
        if not flags & O_CHECK or not dynamic:
            return None
        length = file.getlength()
        if length < 2 * FOOTER_SIZE:
            return None
        tail = Footer.parse(bytes(file.pread(length - FOOTER_SIZE, FOOTER_SIZE)))
        return tail if tail.has_cookie and tail.checksum_ok else None

    def _open_dynamic(self, footer: Footer, file: Node) -> None:
        try:
            raw = file.pread(footer.data_offset, HEADER_SIZE)
        except BlockError as exc:
            raise BlockError("Error reading dynamic VHD header", exc.errno) from exc
        header = DynamicHeader.parse(raw)
        if not header.has_cookie:
            raise BlockError("Invalid header magic")
        self.header = header
        bs = header.block_size
        if bs & (bs - 1) or bs < SECTOR:
            raise BlockError(f"Invalid block size {bs}")
        self.block_size = bs
        self.bitmap_size = header.bitmap_size
        entries = header.max_table_entries
        if self.total_sectors * SECTOR // bs > 0xFFFFFFFF:
            raise BlockError("Too many blocks")
        # 7.2 holds the count in an int and multiplies it as a uint64_t: wrap the same.
        computed = (_as_int32(entries) % 2**64) * bs % 2**64
        if computed < self.total_sectors * SECTOR:
            raise BlockError("Page table too small")
        if entries >= 2**31 or entries > INT_MAX // 4:
            raise BlockError(f"Max Table Entries too large ({_as_int32(entries)})")
        self.bat_offset = header.table_offset
        file_size = file.getlength()
        table_bytes = entries * 4
        if self.bat_offset > BDRV_MAX_LENGTH or table_bytes > BDRV_MAX_LENGTH - self.bat_offset:
            # 7.2's read of the table fails in bdrv_check_request (EIO) before any
            # other check of where it lies.
            raise BlockError("Error reading pagetable", errno.EIO)
        # Only the part of the table inside the file is read; the rest reads as zeros.
        inside = max(0, min(table_bytes, file_size - self.bat_offset))
        try:
            raw_bat = file.pread(self.bat_offset, inside) if inside else b""
        except BlockError as exc:
            raise BlockError("Error reading pagetable", exc.errno) from exc
        self.bat = parse_bat(raw_bat, entries)
        self.bat_entries = entries
        table_end = -(-(self.bat_offset + table_bytes) // SECTOR) * SECTOR
        free = table_end
        used = self.bat[self.bat != BAT_UNUSED]
        if used.size:
            free = max(free, int(used.max()) * SECTOR + self.bitmap_size + bs)
        if self.bat.size < entries:
            # Entries past EOF read as 0: a block at offset 0, as far as 7.2 is concerned.
            free = max(free, self.bitmap_size + bs)
        if free > file_size:
            raise BlockError("block-vpc: free_data_block_offset points after the end of file. "
                             "The image has been truncated.")
        self.batmap = self._read_batmap(file, table_end, file_size)
        if self.batmap is not None:
            # Never allocate blocks over XenServer's batmap (7.2 would).
            free = max(free, min(self.batmap.end, file_size - FOOTER_SIZE))
        if self.disk_type == TYPE_DIFFERENCING:
            free = max(free, self._locator_end(header, file_size))
        self.free_data_block_offset = free
        self.last_bitmap_offset = -1
        # 7.2 ignores this checksum. Checked last, so that every image 7.2 refuses is
        # refused with 7.2's words; `check` opens it anyway to report and repair it.
        if not header.checksum_ok and not self.node.open_flags & O_CHECK:
            raise BlockError("Incorrect dynamic disk header checksum")

    @staticmethod
    def _read_batmap(file: Node, offset: int, file_size: int) -> BatmapHeader | None:
        if offset + SECTOR > file_size:
            return None
        batmap = BatmapHeader.parse(offset, bytes(file.pread(offset, 28)))
        if batmap is None or batmap.batmap_offset < offset or batmap.end > file_size:
            return None
        return batmap

    @staticmethod
    def _locator_end(header: DynamicHeader, file_size: int) -> int:
        """The end of the parent locators' data areas, which new blocks must not cover.

        The data space is in sectors by the spec but in bytes as Windows writes it;
        the larger reading is used, clipped to the footer's place.
        """
        end = 0
        for loc in header.locators:
            if loc.platform == PLAT_NONE or loc.data_offset >= file_size:
                continue
            data_end = loc.data_offset + loc.data_length
            space_end = loc.data_offset + max(loc.data_space * SECTOR, loc.data_space)
            wanted = min(max(data_end, space_end), file_size - FOOTER_SIZE)
            end = max(end, -(-max(wanted, data_end) // SECTOR) * SECTOR)
        return end

    def _find_parent(self, file: Node, flags: int) -> None:
        assert self.header is not None
        header = self.header
        fd_read = file.pread
        child = file.filename
        search = locator_candidates(header, lambda off, n: bytes(fd_read(off, n)),
                                    file.getlength(), os.path.dirname(child))
        chosen = search.chosen()
        if chosen is None:
            if flags & O_NO_BACKING:
                return
            raise no_parent_error(child, search)
        self.backing_file = chosen.display
        self.full_backing_file = chosen.path
        parent_footer = read_vhd_footer(chosen.path)
        self.backing_format = "vpc" if parent_footer is not None else None
        # The tools read these from the node, as qcow2's open sets them.
        self.node.backing_file = self.backing_file  # type: ignore[attr-defined]
        self.node.full_backing_file = self.full_backing_file  # type: ignore[attr-defined]
        self.node.backing_format = self.backing_format  # type: ignore[attr-defined]
        if flags & O_NO_BACKING or not os.path.exists(chosen.path):
            return
        check_no_loop(child, chosen.path)
        if self.check_parent and parent_footer is not None:
            check_parent_identity(child, header.parent_uuid, header.parent_timestamp,
                                  chosen.path, parent_footer)

    def validate_backing(self, backing: Node) -> None:
        """Check an attached parent node against the header (UUID, time stamp)."""
        if self.disk_type != TYPE_DIFFERENCING or not self.check_parent:
            return
        drv = backing.driver
        if not isinstance(drv, VpcDriver) or drv.footer is None:
            return
        assert self.header is not None
        check_parent_identity(self._file().filename, self.header.parent_uuid,
                              self.header.parent_timestamp, backing.filename, drv.footer)

    # -- information -----------------------------------------------------------------
    def getlength(self) -> int:
        return self.total_sectors * SECTOR

    def get_info(self) -> dict[str, int]:
        cluster = 0 if self.disk_type == TYPE_FIXED else self.block_size
        return {"cluster_size": cluster, "vm_state_offset": 0}

    def has_zero_init(self) -> bool:
        if self.disk_type == TYPE_FIXED:
            drv = self._file().driver
            return bool(getattr(drv, "is_regular", False))
        # A differencing image reads as its parent, not as zeros.
        return self.disk_type != TYPE_DIFFERENCING

    def check(self, fix: int) -> CheckResult:
        from bdrv.drivers.vpc.check import check_image

        return check_image(self, fix)

    # -- block mapping ---------------------------------------------------------------
    def _bat_entry(self, index: int) -> int:
        return int(self.bat[index]) if index < self.bat.size else 0

    def _block_data(self, index: int) -> int:
        """File offset of block `index`'s data, or -1 when the block is not allocated."""
        if index >= self.bat.size:
            return -1 if index >= self.bat_entries else self.bitmap_size
        entry = int(self.bat[index])
        if entry == BAT_UNUSED:
            return -1
        return entry * SECTOR + self.bitmap_size

    def _sector_bits(self, index: int) -> np.ndarray:
        """Block `index`'s sector bitmap as one bool per sector (MSB first on disk)."""
        bits = self._bitmaps.get(index)
        if bits is not None:
            self._bitmaps.move_to_end(index)
            return bits
        per_block = self.block_size // SECTOR
        raw = self._file().pread(self._bat_entry(index) * SECTOR, self.bitmap_size)
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:per_block].astype(bool)
        self._bitmaps[index] = bits
        if len(self._bitmaps) > BITMAP_CACHE_SIZE:
            self._bitmaps.popitem(last=False)
        return bits

    # -- reads -----------------------------------------------------------------------
    def pread(self, offset: int, length: int) -> bytes | bytearray:
        file = self._file()
        if self.disk_type == TYPE_FIXED:
            return file.pread(offset, length)
        if self.disk_type != TYPE_DIFFERENCING:
            return self._read_dynamic(offset, length)
        out = bytearray(length)
        pos, end = offset, offset + length
        while pos < end:
            index, in_block = divmod(pos, self.block_size)
            n = min(end - pos, self.block_size - in_block)
            data = self._block_data(index)
            dst = pos - offset
            if data >= 0:
                self._read_diff_block(index, data, pos, n, out, dst)
            else:
                out[dst:dst + n] = self._read_parent(pos, n)
            pos += n
        return out

    def _read_dynamic(self, offset: int, length: int) -> bytes:
        """Allocated blocks from the file, the others as zeros; copied once at most."""
        file = self._file()
        parts: list[bytes] = []
        pos, end = offset, offset + length
        while pos < end:
            index, in_block = divmod(pos, self.block_size)
            n = min(end - pos, self.block_size - in_block)
            data = self._block_data(index)
            parts.append(file.pread(data + in_block, n) if data >= 0 else bytes(n))
            pos += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_parent(self, offset: int, length: int) -> bytes:
        backing = self.node.backing
        if backing is None:
            return bytes(length)
        return backing.node.pread(offset, length)

    def _read_diff_block(self, index: int, data: int, pos: int, n: int, out: bytearray,
                         dst: int) -> None:
        """Fill out[dst:dst+n] from one allocated block: set bits here, clear ones below."""
        first = (pos % self.block_size) // SECTOR
        count = n // SECTOR
        bits = self._sector_bits(index)[first:first + count]
        for start, stop, present in _runs(bits):
            off = pos + start * SECTOR
            size = (stop - start) * SECTOR
            at = dst + start * SECTOR
            if present:
                out[at:at + size] = self._file().pread(data + (first + start) * SECTOR, size)
            else:
                out[at:at + size] = self._read_parent(off, size)

    # -- writes ----------------------------------------------------------------------
    def pwrite(self, offset: int, data: bytes | bytearray | memoryview, flags: int) -> None:
        file = self._file()
        if self.disk_type == TYPE_FIXED:
            file.pwrite(offset, data, 0)
            return
        view = memoryview(data)
        pos, done = offset, 0
        while done < len(view):
            index, in_block = divmod(pos, self.block_size)
            n = min(len(view) - done, self.block_size - in_block)
            block = self._block_data(index)
            if block < 0:
                block = self._alloc_block(index, pos)
            elif self.disk_type != TYPE_DIFFERENCING:
                self._mark_block_full(block - self.bitmap_size)
            file.pwrite(block + in_block, view[done:done + n], 0)
            if self.disk_type == TYPE_DIFFERENCING:
                # After the data: a crash in between leaves the parent's data visible.
                self._set_bits(index, in_block // SECTOR, -(-(in_block + n) // SECTOR))
            pos += n
            done += n

    def _mark_block_full(self, bitmap_offset: int) -> None:
        """7.2 rewrites an all-ones bitmap whenever writes move to another block."""
        if self.last_bitmap_offset != bitmap_offset:
            self.last_bitmap_offset = bitmap_offset
            self._file().pwrite(bitmap_offset, b"\xff" * self.bitmap_size, 0)

    def _alloc_block(self, index: int, offset: int) -> int:
        """Put block `index` at the end of the file: bitmap, footer after it, BAT entry."""
        assert self.footer is not None
        if offset < 0 or offset > self.total_sectors * SECTOR:
            raise BlockError("Invalid argument", errno.EINVAL)
        file = self._file()
        start = self.free_data_block_offset
        fill = b"\0" if self.disk_type == TYPE_DIFFERENCING else b"\xff"
        file.pwrite(start, fill * self.bitmap_size, 0)
        file.flush()
        self.free_data_block_offset = start + self.bitmap_size + self.block_size
        try:
            file.pwrite(self.free_data_block_offset, self.footer.raw, 0)
            file.flush()
            file.pwrite(self.bat_offset + 4 * index, pack_bat_entry(start // SECTOR), 0)
            file.flush()
        except BlockError:
            self.free_data_block_offset = start
            raise
        self.bat[index] = start // SECTOR
        self._bitmaps.pop(index, None)
        return start + self.bitmap_size

    def _set_bits(self, index: int, first: int, stop: int) -> None:
        bits = self._sector_bits(index)
        if bits[first:stop].all():
            return
        bits[first:stop] = True
        lo, hi = first // 8, -(-stop // 8)
        packed = np.packbits(bits[lo * 8:hi * 8])
        self._file().pwrite(self._bat_entry(index) * SECTOR + lo, packed.tobytes(), 0)

    # -- block status ----------------------------------------------------------------
    def block_status(self, want_zero: bool, offset: int, length: int) -> BlockStatus:
        file = self._file()
        if self.disk_type == TYPE_FIXED:
            return BlockStatus(BLOCK_DATA | BLOCK_OFFSET_VALID | BLOCK_RECURSE, length, offset,
                               file)
        bs = self.block_size
        index, in_block = divmod(offset, bs)
        data = self._block_data(index)
        if data >= 0:
            n = min(length, bs - in_block)
            if self.disk_type == TYPE_DIFFERENCING:
                return self._diff_status(index, data, offset, n)
            return BlockStatus(BLOCK_DATA | BLOCK_OFFSET_VALID, n, data + in_block, file)
        # Unallocated blocks in a row, as one answer.
        last = (offset + length - 1) // bs
        stop = index + 1
        table = self.bat[index:min(last + 1, self.bat.size)]
        used = np.flatnonzero(table != BAT_UNUSED)
        stop = index + int(used[0]) if used.size else last + 1
        pnum = min(length, stop * bs - offset)
        flags = 0 if self.disk_type == TYPE_DIFFERENCING else BLOCK_ZERO
        return BlockStatus(flags, pnum)

    def _diff_status(self, index: int, data: int, offset: int, n: int) -> BlockStatus:
        first = (offset % self.block_size) // SECTOR
        bits = self._sector_bits(index)[first:first + -(-n // SECTOR)]
        stop = _runs_first_stop(bits)
        pnum = min(n, stop * SECTOR)
        if bits[0]:
            return BlockStatus(BLOCK_DATA | BLOCK_OFFSET_VALID, pnum,
                               data + first * SECTOR + offset % SECTOR, self._file())
        return BlockStatus(0, pnum)


def _runs(bits: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, stop, value) for each run of equal values in `bits`."""
    if bits.size == 0:
        return []
    edges = np.flatnonzero(bits[1:] != bits[:-1]) + 1
    starts = np.concatenate(([0], edges))
    stops = np.concatenate((edges, [bits.size]))
    return [(int(a), int(b), bool(bits[a])) for a, b in zip(starts, stops, strict=True)]


def _runs_first_stop(bits: np.ndarray) -> int:
    edges = np.flatnonzero(bits[1:] != bits[:-1])
    return int(edges[0]) + 1 if edges.size else int(bits.size)
