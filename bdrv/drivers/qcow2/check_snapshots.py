"""The snapshot table's part of `check`, as 7.2 does it around the refcount check.

Before: the table is read again from the header's pointer (a check-mode open skips
it), with `-r all` cutting extra data past 1 KiB and discarding snapshots that make
the table too big; v3 entries with less than 16 bytes of extra data are corrupt.
After: if any of that was found and errors are being fixed, the table is rewritten.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING

from bdrv.check import FIX_ERRORS, CheckResult, ErrorReport
from bdrv.errors import BlockError

from .snapshot import MAX_SNAPSHOTS, SnapshotTable, TableRepairs, read_table, write_table

if TYPE_CHECKING:
    from .driver import Qcow2Driver

# The fixed part of a snapshot table entry (QCowSnapshotHeader).
ENTRY_HEADER_SIZE = 40
# A v3 entry's extra data must hold vm_state_size_large and disk_size.
V3_MIN_EXTRA_DATA = 16
INT64_MAX = (1 << 63) - 1


class SnapshotCheckAbort(Exception):
    """The check stops with this errno (the caller adds the result and reports it)."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.errno = err


def check_read_snapshot_table(drv: Qcow2Driver, res: CheckResult, fix: int) -> None:
    """qcow2_check_read_snapshot_table(): sets drv.snapshots to the table read."""
    try:
        nb, offset = struct.unpack(">IQ", bytes(drv.file.pread(60, 12)))
    except BlockError as exc:
        res.check_errors += 1
        res.messages.append("ERROR failed to read the snapshot table pointer from the image "
                            f"header: {os.strerror(exc.errno)}")
        raise SnapshotCheckAbort(exc.errno) from None
    reduced = 0
    if nb > MAX_SNAPSHOTS and fix & FIX_ERRORS:
        res.messages.append(f"Discarding {nb - MAX_SNAPSHOTS} overhanging snapshots")
        reduced = nb - MAX_SNAPSHOTS
        nb = MAX_SNAPSHOTS
    problem = _validate_table(drv, nb, offset)
    if problem is not None:
        res.check_errors += 1
        res.messages.append(ErrorReport(f"ERROR {problem.message}"))
        if nb > MAX_SNAPSHOTS:
            res.messages.append(f"You can force-remove all {nb - MAX_SNAPSHOTS} overhanging "
                                "snapshots with qemu-img check -r all")
        _forget_table(drv)
        raise SnapshotCheckAbort(problem.errno)
    repairs = TableRepairs(res.messages) if fix & FIX_ERRORS else None
    try:
        table = read_table(drv, nb, offset, repairs)
    except BlockError as exc:
        res.check_errors += 1
        res.messages.append(ErrorReport(f"ERROR failed to read the snapshot table: "
                                        f"{exc.message}"))
        res.messages.extend(exc.hint.splitlines())
        _forget_table(drv)
        raise SnapshotCheckAbort(exc.errno) from None
    if repairs is not None:
        reduced += repairs.nb_reduced
        res.corruptions += reduced + repairs.extra_data_dropped
    drv.snapshots = table
    drv.hdr.nb_snapshots = len(table.snapshots)
    drv.hdr.snapshots_offset = offset
    if reduced:
        # The header first: the refcount check counts what it says, and what this
        # leaves behind are leaks that check repairs.
        try:
            drv.file.pwrite(60, struct.pack(">I", len(table.snapshots)))
            drv.file.flush()
        except BlockError as exc:
            res.check_errors += 1
            res.messages.append("ERROR failed to update the snapshot count in the image "
                                f"header: {os.strerror(exc.errno)}")
            raise SnapshotCheckAbort(exc.errno) from None
        res.corruptions_fixed += reduced
        res.corruptions -= reduced
    if drv.hdr.version >= 3:
        word = "Repairing" if fix & FIX_ERRORS else "ERROR"
        for i, sn in enumerate(table.snapshots):
            if sn.extra_data_size < V3_MIN_EXTRA_DATA:
                res.corruptions += 1
                res.messages.append(f"{word} snapshot table entry {i} is incomplete")


def check_fix_snapshot_table(drv: Qcow2Driver, res: CheckResult, fix: int) -> None:
    """qcow2_check_fix_snapshot_table(): rewrite the table if it had problems."""
    if not res.corruptions or not fix & FIX_ERRORS:
        return
    try:
        write_table(drv, list(drv.snapshots.snapshots))
    except BlockError as exc:
        res.check_errors += 1
        res.messages.append(f"ERROR failed to update snapshot table: {os.strerror(exc.errno)}")
        raise SnapshotCheckAbort(exc.errno) from None
    res.corruptions_fixed += res.corruptions
    res.corruptions = 0


def _validate_table(drv: Qcow2Driver, nb: int, offset: int) -> BlockError | None:
    """qcow2_validate_table() for the snapshot table (its entries' fixed parts)."""
    if nb > MAX_SNAPSHOTS:
        return BlockError("snapshot table too large", errno.EFBIG)
    if INT64_MAX - nb * ENTRY_HEADER_SIZE < offset or offset & (drv.cluster_size - 1):
        return BlockError("snapshot table offset invalid", errno.EINVAL)
    return None


def _forget_table(drv: Qcow2Driver) -> None:
    """The table was not read, so nothing of it stays (as 7.2 invalidates it)."""
    drv.snapshots = SnapshotTable([])
    drv.hdr.nb_snapshots = 0
    drv.hdr.snapshots_offset = 0
