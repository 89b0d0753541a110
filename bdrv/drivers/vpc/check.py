"""VHD check and repair (QEMU 7.2 has none; the report uses qemu-img check's terms).

Checked: both footer copies (cookie, checksum, agreement), the dynamic header
(checksum, version, block size), every BAT entry (inside the file, clear of the
metadata and of the other blocks), the tail (footer where the last block ends) and,
for differencing images, the parent link. Counted in blocks: a VHD block is the
"cluster" of the summary line.

Repaired with -r all, because the right bytes are known: a bad footer copy from the
good one, wrong checksums, a missing footer at the end of a truncated tail. With
-r leaks: whole unused blocks at the end of the file are cut off. BAT entries are
never changed: dropping one would lose data silently.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from bdrv.check import FIX_ERRORS, FIX_LEAKS, CheckResult
from bdrv.drivers.vpc.dynamic import BAT_UNUSED, HEADER_SIZE
from bdrv.drivers.vpc.footer import FOOTER_SIZE, SECTOR, TYPE_DIFFERENCING, TYPE_FIXED, Footer
from bdrv.drivers.vpc.parent import check_parent_identity, read_vhd_footer
from bdrv.errors import BlockError

if TYPE_CHECKING:
    from bdrv.drivers.vpc.driver import VpcDriver
    from bdrv.graph import Node


def check_image(drv: VpcDriver, fix: int) -> CheckResult:
    res = CheckResult()
    file = drv._file()
    try:
        _check_footers(drv, file, res, fix)
        if drv.disk_type != TYPE_FIXED:
            _check_header(drv, file, res, fix)
            _check_bat(drv, file, res)
            _check_tail(drv, file, res, fix)
            if drv.disk_type == TYPE_DIFFERENCING:
                _check_parent(drv, res)
        else:
            res.image_end_offset = file.getlength()
        if fix and (res.corruptions_fixed or res.leaks_fixed):
            file.flush()
    except BlockError as exc:
        res.check_errors += 1
        res.messages.append(f"ERROR while checking: {exc.message}")
    return res


def _fixed(res: CheckResult, message: str) -> None:
    res.corruptions_fixed += 1
    res.corruptions -= 1
    res.messages.append(f"Repairing {message}")


def _check_footers(drv: VpcDriver, file: Node, res: CheckResult, fix: int) -> None:
    length = file.getlength()
    tail = Footer.parse(bytes(file.pread(max(0, length - FOOTER_SIZE), FOOTER_SIZE)))
    if drv.disk_type == TYPE_FIXED:
        if not tail.checksum_ok:  # unreachable: open refuses it; kept for -r on reopen
            res.corruption("footer checksum is wrong")
        return
    head = Footer.parse(bytes(file.pread(0, FOOTER_SIZE)))
    head_ok = head.has_cookie and head.checksum_ok
    tail_ok = tail.has_cookie and tail.checksum_ok
    if not head_ok:
        res.corruption("footer copy at offset 0 is damaged (bad cookie or checksum)")
        if fix & FIX_ERRORS and tail_ok:
            file.pwrite(0, tail.raw)
            _fixed(res, "footer copy at offset 0 from the footer at the end")
    if head_ok and tail_ok and head.raw != tail.raw:
        res.corruption("the footer at the end differs from its copy at offset 0")
        if fix & FIX_ERRORS:
            # 7.2 trusts the copy at offset 0 and rewrites it at the end on allocation.
            file.pwrite(length - FOOTER_SIZE, head.raw)
            _fixed(res, "footer at the end from its copy at offset 0")
    # A missing footer at the end is the truncated-tail case, handled in _check_tail.


def _check_header(drv: VpcDriver, file: Node, res: CheckResult, fix: int) -> None:
    header = drv.header
    assert header is not None and drv.footer is not None
    if not header.checksum_ok:
        res.corruption(f"dynamic header checksum is 0x{header.checksum:08x}, should be "
                       f"0x{header.computed_checksum():08x}")
        if fix & FIX_ERRORS:
            fixed = header.with_checksum_fixed()
            file.pwrite(drv.footer.data_offset, fixed.raw)
            drv.header = fixed
            _fixed(res, "dynamic header checksum")
    if header.version != 0x00010000:
        res.corruption(f"dynamic header version is 0x{header.version:08x}, should be "
                       "0x00010000")
    if header.data_offset != 0xFFFFFFFFFFFFFFFF:
        res.messages.append("Warning: dynamic header data offset is not all ones")


def _metadata_ranges(drv: VpcDriver) -> list[tuple[int, int, str]]:
    assert drv.header is not None and drv.footer is not None
    ranges = [(0, FOOTER_SIZE, "the footer copy"),
              (drv.footer.data_offset, drv.footer.data_offset + HEADER_SIZE, "the header"),
              (drv.bat_offset, drv.bat_offset + drv.bat.size * 4, "the BAT")]
    if drv.disk_type == TYPE_DIFFERENCING:
        for loc in drv.header.locators:
            if loc.platform and loc.data_length:
                ranges.append((loc.data_offset, loc.data_offset + loc.data_length,
                               f"parent locator {loc.index}"))
    if drv.batmap is not None:
        ranges.append((drv.batmap.batmap_offset, drv.batmap.end, "the batmap"))
    return ranges


def _check_bat(drv: VpcDriver, file: Node, res: CheckResult) -> None:
    bat = drv.bat
    stride = drv.bitmap_size + drv.block_size
    needed = -(-drv.total_sectors * SECTOR // drv.block_size)
    res.bfi.total_clusters = needed
    used = np.flatnonzero(bat != BAT_UNUSED)
    res.bfi.allocated_clusters = int(used.size)
    if not used.size:
        return
    starts = bat[used].astype(np.int64) * SECTOR
    ends = starts + stride
    length = file.getlength()
    for index in used[ends > length]:
        res.corruption(f"block {int(index)} (BAT entry 0x{int(bat[index]):08x}) extends past "
                       f"the end of the file ({length} bytes)")
    # Overlaps between blocks: sort by position and compare neighbours.
    order = np.argsort(starts, kind="stable")
    s_sorted, e_sorted, i_sorted = starts[order], ends[order], used[order]
    clash = np.flatnonzero(s_sorted[1:] < e_sorted[:-1])
    for k in clash:
        res.corruption(f"blocks {int(i_sorted[k])} and {int(i_sorted[k + 1])} overlap in the "
                       "file")
    for lo, hi, what in _metadata_ranges(drv):
        hit = np.flatnonzero((starts < hi) & (ends > lo))
        for k in hit:
            res.corruption(f"block {int(used[k])} overlaps {what}")
    # Fragmented: a block not right after the previous allocated block in guest order.
    res.bfi.fragmented_clusters = int(np.count_nonzero(starts[1:] != ends[:-1]))


def _check_tail(drv: VpcDriver, file: Node, res: CheckResult, fix: int) -> None:
    assert drv.footer is not None
    end = drv.free_data_block_offset
    res.image_end_offset = end + FOOTER_SIZE
    length = file.getlength()
    tail = Footer.parse(bytes(file.pread(max(0, length - FOOTER_SIZE), FOOTER_SIZE)))
    if length < end + FOOTER_SIZE or not (tail.has_cookie and tail.checksum_ok):
        res.corruption(f"no valid footer at the end of the image (expected at offset {end})")
        if fix & FIX_ERRORS:
            file.pwrite(end, drv.footer.raw)
            file.truncate(end + FOOTER_SIZE, False, "off")
            _fixed(res, f"footer at offset {end}")
        return
    # Where the image really ends (Windows pads before the footer; that is no leak).
    res.image_end_offset = length
    stride = drv.bitmap_size + drv.block_size
    spare = length - FOOTER_SIZE - end
    leaked = spare // stride if spare > 0 else 0
    if leaked:
        res.leaks += leaked
        res.messages.append(f"Leaked {leaked} block(s) of unused space before the footer "
                            f"at offset {length - FOOTER_SIZE}")
        if fix & FIX_LEAKS:
            file.pwrite(end, drv.footer.raw)
            file.truncate(end + FOOTER_SIZE, False, "off")
            res.leaks -= leaked
            res.leaks_fixed += leaked
            res.image_end_offset = end + FOOTER_SIZE
            res.messages.append(f"Repairing the tail: footer moved to offset {end}")


def _check_parent(drv: VpcDriver, res: CheckResult) -> None:
    assert drv.header is not None
    path = drv.full_backing_file
    if path is None:
        res.corruption("no parent locator names a parent")
        return
    if not os.path.exists(path):
        res.corruption(f"the parent '{path}' does not exist")
        return
    parent = read_vhd_footer(path)
    if parent is None:
        return  # a parent in another format has no UUID to compare
    try:
        check_parent_identity(drv._file().filename, drv.header.parent_uuid,
                              drv.header.parent_timestamp, path, parent)
    except BlockError as exc:
        res.corruption(exc.message)
