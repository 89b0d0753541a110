"""qcow2 internal snapshots: the snapshot table, create, apply (goto), delete, load_tmp.

The table layout, the id assignment and the refcount/OFLAG_COPIED bookkeeping follow
QEMU 7.2's qcow2-snapshot.c and qcow2_update_snapshot_refcount(), in the same order,
so the same sequence of operations leaves the same bytes in the image (apart from the
date fields, which come from the clock).

On disk each entry is a 40-byte header, extra data (7.2 writes 24 bytes: the 64-bit VM
state size, the virtual disk size and the icount; older writers wrote 0 or 16 bytes,
and bytes beyond what 7.2 knows are kept), the id string and the name, the next entry
starting 8-byte aligned.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bdrv.errors import BlockError

from .alloc import discard_clusters, grow_l1, write_l2
from .compress import parse_entry
from .header import MAX_L1_SIZE, _check_table
from .mapping import (
    C_COMPRESSED,
    C_NORMAL,
    C_ZERO_ALLOC,
    L1E_OFFSET_MASK,
    L2E_OFFSET_MASK,
    OFLAG_COPIED,
    c_hex,
)
from .refcount import DISCARD_ALWAYS, DISCARD_NEVER, DISCARD_SNAPSHOT, Again

if TYPE_CHECKING:
    from .driver import Qcow2Driver

MAX_SNAPSHOTS = 65536
MAX_EXTRA_DATA = 1024  # QCOW_MAX_SNAPSHOT_EXTRA_DATA
MAX_SNAPSHOTS_SIZE = 1024 * MAX_SNAPSHOTS
EXTRA_DATA_SIZE = 24  # sizeof(QCowSnapshotExtraData) in 7.2
NO_ICOUNT = (1 << 64) - 1
OL_ACTIVE_L1 = 1 << 1
_HEADER = struct.Struct(">QIHHIIQII")
_EXTRA = struct.Struct(">QQQ")


class SnapshotError(BlockError):
    """A failure some of whose lines QEMU reports (error_report) before the error itself.

    `reported` are those earlier lines, without the program prefix.
    """

    def __init__(self, message: str, errno: int = errno.EINVAL,
                 reported: tuple[str, ...] = ()) -> None:
        super().__init__(message, errno)
        self.reported = reported


@dataclass
class Snapshot:
    """One snapshot table entry (QCowSnapshot)."""

    id_str: bytes
    name: bytes
    l1_table_offset: int = 0
    l1_size: int = 0
    date_sec: int = 0
    date_nsec: int = 0
    vm_clock_nsec: int = 0
    vm_state_size: int = 0
    disk_size: int = 0
    icount: int = NO_ICOUNT
    extra_data_size: int = EXTRA_DATA_SIZE
    unknown_extra_data: bytes = b""

    def info(self) -> dict[str, Any]:
        """SnapshotInfo as QAPI orders it (icount only when known)."""
        out: dict[str, Any] = {
            "id": _text(self.id_str), "name": _text(self.name),
            "vm-state-size": self.vm_state_size, "date-sec": self.date_sec,
            "date-nsec": self.date_nsec,
            "vm-clock-sec": self.vm_clock_nsec // 1_000_000_000,
            "vm-clock-nsec": self.vm_clock_nsec % 1_000_000_000,
        }
        if self.icount != NO_ICOUNT:
            out["icount"] = self.icount if self.icount < 1 << 63 else self.icount - (1 << 64)
        return out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstr(raw: bytes) -> bytes:
    """What a C string read into a buffer holds (up to the first NUL)."""
    return raw.split(b"\0", 1)[0]


def encode_name(name: str) -> bytes:
    return os.fsencode(name)


# -- the table ------------------------------------------------------------------------


@dataclass
class SnapshotTable:
    """The image's snapshots and where their table is."""

    snapshots: list[Snapshot]
    offset: int = 0
    size: int = 0


@dataclass
class TableRepairs:
    """What reading the table in `check -r all` mode dropped (qcow2_do_read_snapshots
    with repair): its messages, entries whose extra data was cut, snapshots discarded."""

    messages: list[str]
    extra_data_dropped: int = 0
    nb_reduced: int = 0


def read_table(drv: Qcow2Driver, nb: int, offset: int,
               repairs: TableRepairs | None = None) -> SnapshotTable:
    """qcow2_read_snapshots(): the entries, or 7.2's error. With `repairs`, too much
    extra data is cut to 1 KiB and a table that grows too big loses its tail."""
    table = SnapshotTable([], offset, 0)
    if not nb:
        return table
    file = drv.file
    pos = offset
    length = 0
    disk_size = drv.size
    for i in range(nb):
        entry_start = pos
        pos = -(-pos // 8) * 8
        length = -(-length // 8) * 8
        raw = _read(file, pos, _HEADER.size)
        (l1_off, l1_size, id_len, name_len, date_sec, date_nsec, clock, vm32,
         extra_size) = _HEADER.unpack(raw)
        pos += _HEADER.size
        cut_extra = False
        if extra_size > MAX_EXTRA_DATA:
            if repairs is None:
                raise BlockError(f"Too much extra metadata in snapshot table entry {i}",
                                 errno.EFBIG,
                                 hint="You can force-remove this extra metadata with "
                                      "qemu-img check -r all\n")
            repairs.messages.append(f"Discarding too much extra metadata in snapshot table "
                                    f"entry {i} ({extra_size} > {MAX_EXTRA_DATA})")
            repairs.extra_data_dropped += 1
            cut_extra = True
        known = min(EXTRA_DATA_SIZE, extra_size)
        extra = _read(file, pos, known).ljust(EXTRA_DATA_SIZE, b"\0")
        pos += known
        vm_large, ext_disk, ext_icount = _EXTRA.unpack(extra)
        sn = Snapshot(b"", b"", l1_off, l1_size, date_sec, date_nsec, clock, vm32,
                      disk_size, NO_ICOUNT, extra_size)
        if extra_size >= 8:
            sn.vm_state_size = vm_large
        if extra_size >= 16:
            sn.disk_size = ext_disk
        if extra_size >= 24:
            sn.icount = ext_icount
        if extra_size > EXTRA_DATA_SIZE:
            # The whole extra data is skipped; a cut entry keeps only its first KiB.
            extra_end = pos + extra_size - EXTRA_DATA_SIZE
            if cut_extra:
                sn.extra_data_size = MAX_EXTRA_DATA
            sn.unknown_extra_data = _read(file, pos, sn.extra_data_size - EXTRA_DATA_SIZE)
            pos = extra_end
        sn.id_str = _cstr(_read(file, pos, id_len))
        pos += id_len
        sn.name = _cstr(_read(file, pos, name_len))
        pos += name_len
        length += _HEADER.size + sn.extra_data_size + id_len + name_len
        if length > MAX_SNAPSHOTS_SIZE or pos - offset > 0x7FFFFFFF:
            if repairs is None:
                raise BlockError("Snapshot table is too big", errno.EFBIG,
                                 hint=f"You can force-remove all {nb - i} overhanging "
                                      "snapshots with qemu-img check -r all\n")
            repairs.messages.append(f"Discarding {nb - i} overhanging snapshots (snapshot "
                                    "table is too big)")
            repairs.nb_reduced += nb - i
            pos = entry_start
            break
        table.snapshots.append(sn)
    table.size = pos - offset
    return table


def _read(file: Any, offset: int, length: int) -> bytes:
    if length <= 0:
        return b""
    try:
        data = bytes(file.pread(offset, length))
    except BlockError as exc:
        raise exc.prefixed("Failed to read snapshot table: ") from None
    return data.ljust(length, b"\0")


def serialize_table(snapshots: list[Snapshot]) -> bytes:
    """The table as qcow2_write_snapshots() lays it out."""
    out = bytearray()
    for sn in snapshots:
        out += bytes(-len(out) % 8)
        vm32 = sn.vm_state_size if sn.vm_state_size <= 0xFFFFFFFF else 0
        extra_size = max(EXTRA_DATA_SIZE, sn.extra_data_size)
        out += _HEADER.pack(sn.l1_table_offset, sn.l1_size, len(sn.id_str), len(sn.name),
                            sn.date_sec, sn.date_nsec, sn.vm_clock_nsec, vm32, extra_size)
        out += _EXTRA.pack(sn.vm_state_size, sn.disk_size, sn.icount)
        if sn.extra_data_size > EXTRA_DATA_SIZE:
            out += sn.unknown_extra_data
        out += sn.id_str + sn.name
    return bytes(out)


def table_size(snapshots: list[Snapshot]) -> int:
    size = 0
    for sn in snapshots:
        size = -(-size // 8) * 8
        size += _HEADER.size + max(EXTRA_DATA_SIZE, sn.extra_data_size)
        size += len(sn.id_str) + len(sn.name)
        if size > MAX_SNAPSHOTS_SIZE:
            raise BlockError("File too large", errno.EFBIG)
    return size


def write_table(drv: Qcow2Driver, snapshots: list[Snapshot]) -> None:
    """qcow2_write_snapshots(): a new table in new clusters, the header, free the old."""
    size = table_size(snapshots)
    offset = drv.rc.alloc_clusters(size)
    try:
        drv.check_overlap(0, offset, size)
        if size:
            drv.file.pwrite(offset, serialize_table(snapshots))
        drv.file.flush()
        drv.file.pwrite(60, struct.pack(">IQ", len(snapshots), offset))
        drv.file.flush()
    except BlockError:
        if offset > 0:
            drv.rc.free(offset, size, DISCARD_ALWAYS)
        raise
    old = drv.snapshots
    drv.rc.free(old.offset, old.size, DISCARD_SNAPSHOT)
    drv.snapshots = SnapshotTable(list(snapshots), offset, size)
    drv.hdr.nb_snapshots = len(snapshots)
    drv.hdr.snapshots_offset = offset


# -- lookups --------------------------------------------------------------------------


def find_new_id(snapshots: list[Snapshot]) -> bytes:
    """find_new_snapshot_id(): one more than the largest strtoul() of an id."""
    top = 0
    for sn in snapshots:
        top = max(top, _strtoul(sn.id_str))
    return str((top + 1) % (1 << 64)).encode()


def _strtoul(raw: bytes) -> int:
    text = raw.decode("latin-1").lstrip(" \t\n\v\f\r")
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    digits = ""
    for ch in text:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    if not digits:
        return 0
    value = int(digits)
    if value >= 1 << 64:
        return (1 << 64) - 1
    return (value * sign) % (1 << 64)


def find_by_id_and_name(snapshots: list[Snapshot], sid: bytes | None,
                        name: bytes | None) -> int:
    for i, sn in enumerate(snapshots):
        if sid is not None and name is not None:
            if sn.id_str == sid and sn.name == name:
                return i
        elif sid is not None:
            if sn.id_str == sid:
                return i
        elif name is not None and sn.name == name:
            return i
    return -1


def find_by_id_or_name(snapshots: list[Snapshot], id_or_name: bytes) -> int:
    index = find_by_id_and_name(snapshots, id_or_name, None)
    if index >= 0:
        return index
    return find_by_id_and_name(snapshots, None, id_or_name)


# -- refcounts ------------------------------------------------------------------------


def _update(drv: Qcow2Driver, offset: int, length: int, addend: int) -> None:
    while True:
        try:
            drv.rc.update(offset, length, abs(addend), addend < 0, DISCARD_SNAPSHOT)
            return
        except Again:
            continue


def update_snapshot_refcount(drv: Qcow2Driver, l1_offset: int, l1_size: int,
                             addend: int) -> None:
    """qcow2_update_snapshot_refcount(): add `addend` (-1, 0, 1) to every cluster an L1
    table references and set OFLAG_COPIED on exactly the entries whose refcount is 1.

    The active L1 table is taken from memory (qcow2_snapshot_goto relies on that).
    """
    m = drv.map
    cs = drv.cluster_size
    active = l1_offset == m.l1_offset
    if active:
        l1 = m.l1
    elif l1_size:
        l1 = np.frombuffer(drv.file.pread(l1_offset, l1_size * 8), dtype=">u8").astype(
            np.uint64)
    else:
        l1 = np.zeros(0, dtype=np.uint64)
    l1_modified = False
    w = m.width
    for i in range(l1_size):
        old_l1e = int(l1[i])
        if not old_l1e:
            continue
        l2_offset = old_l1e & L1E_OFFSET_MASK
        if l2_offset & (cs - 1):
            raise drv.corruption(f"L2 table offset {l2_offset:#x} unaligned "
                                 f"(L1 index: {c_hex(i)})")
        table = m.cache.get(l2_offset)
        entries = table[::w] if w > 1 else table
        modified = False
        for j in np.flatnonzero(entries).tolist():
            old = int(entries[j])
            entry = old & ~OFLAG_COPIED
            ctype = m.cluster_type(entry)
            if ctype == C_COMPRESSED:
                if addend:
                    coffset, csize = parse_entry(entry, drv.cluster_bits)
                    _update(drv, coffset, csize, addend)
                refcount = 2
            elif ctype in (C_NORMAL, C_ZERO_ALLOC):
                offset = entry & L2E_OFFSET_MASK
                if offset & (cs - 1):
                    raise drv.corruption(f"Cluster allocation offset {offset:#x} unaligned "
                                         f"(L2 offset: {l2_offset:#x}, L2 index: {c_hex(j)})")
                if addend:
                    _update(drv, offset, cs, addend)
                refcount = drv.rc.get(offset >> drv.cluster_bits)
            else:
                refcount = 0
            if refcount == 1:
                entry |= OFLAG_COPIED
            if entry != old:
                table[j * w] = entry
                modified = True
        if addend:
            _update(drv, l2_offset, cs, addend)
        refcount = drv.rc.get(l2_offset >> drv.cluster_bits)
        if modified and refcount:
            # The cache writes a table back unless the table was freed meanwhile.
            m.cache.put(l2_offset, table)
            write_l2(drv, l2_offset, table, 0, m.l2_size)
        new_l1e = l2_offset | OFLAG_COPIED if refcount == 1 else l2_offset
        if new_l1e != old_l1e:
            l1[i] = new_l1e
            l1_modified = True
    drv.file.flush()
    if addend >= 0 and l1_modified and l1_size:
        drv.file.pwrite(l1_offset, l1[:l1_size].astype(">u8").tobytes())
        drv.file.flush()


# -- operations -----------------------------------------------------------------------


def _snapshots(drv: Qcow2Driver) -> list[Snapshot]:
    return drv.snapshots.snapshots


def create(drv: Qcow2Driver, name: bytes, date_sec: int, date_nsec: int,
           vm_clock_nsec: int = 0, vm_state_size: int = 0, icount: int = 0) -> Snapshot:
    """qcow2_snapshot_create(); raises BlockError with the errno 7.2 returns."""
    snaps = _snapshots(drv)
    if len(snaps) >= MAX_SNAPSHOTS:
        raise BlockError("File too large", errno.EFBIG)
    m = drv.map
    sn = Snapshot(find_new_id(snaps), name, 0, m.l1_size, date_sec, date_nsec,
                  vm_clock_nsec, vm_state_size, drv.size, icount, EXTRA_DATA_SIZE)
    sn.l1_table_offset = drv.rc.alloc_clusters(m.l1_size * 8)
    drv.check_overlap(0, sn.l1_table_offset, m.l1_size * 8)
    if m.l1_size:
        drv.file.pwrite(sn.l1_table_offset, m.l1.astype(">u8").tobytes())
    update_snapshot_refcount(drv, m.l1_offset, m.l1_size, 1)
    write_table(drv, [*snaps, sn])
    if vm_state_size:
        vm_offset = drv.l1_vm_state_index << (drv.cluster_bits + m.l2_bits)
        length = -(-vm_state_size // drv.cluster_size) * drv.cluster_size
        discard_clusters(drv, vm_offset, length, DISCARD_NEVER, False)
    return sn


def _validate_l1(drv: Qcow2Driver, sn: Snapshot) -> None:
    _check_table(drv.cluster_size, sn.l1_table_offset, sn.l1_size, 8, MAX_L1_SIZE,
                 "Snapshot L1 table")


def goto(drv: Qcow2Driver, id_or_name: bytes) -> None:
    """qcow2_snapshot_goto(): errors as bdrv_snapshot_goto() words them."""
    snaps = _snapshots(drv)
    index = find_by_id_or_name(snaps, id_or_name)
    if index < 0:
        raise _load_failed(errno.ENOENT)
    sn = snaps[index]
    try:
        _validate_l1(drv, sn)
    except BlockError as exc:
        raise _load_failed(exc.errno, (exc.message,)) from None
    if sn.disk_size != drv.size:
        # 7.2 resizes the image to the snapshot's size first (blk_truncate, exact).
        try:
            drv.node.truncate(sn.disk_size, True, "off")
        except BlockError as exc:
            raise _load_failed(exc.errno, (exc.message,)) from None
    try:
        _goto(drv, sn)
    except BlockError as exc:
        raise _load_failed(exc.errno) from None


def _load_failed(err: int, reported: tuple[str, ...] = ()) -> SnapshotError:
    return SnapshotError(f"Failed to load snapshot: {os.strerror(err)}", err, reported)


def _goto(drv: Qcow2Driver, sn: Snapshot) -> None:
    m = drv.map
    grow_l1(drv, sn.l1_size, True)
    cur = m.l1_size
    sn_l1 = np.zeros(cur, dtype=np.uint64)
    if sn.l1_size:
        raw = drv.file.pread(sn.l1_table_offset, sn.l1_size * 8)
        sn_l1[: sn.l1_size] = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
    update_snapshot_refcount(drv, sn.l1_table_offset, sn.l1_size, 1)
    drv.check_overlap(OL_ACTIVE_L1, m.l1_offset, cur * 8)
    if cur:
        drv.file.pwrite(m.l1_offset, sn_l1.astype(">u8").tobytes())
        drv.file.flush()
    try:
        update_snapshot_refcount(drv, m.l1_offset, cur, -1)
    finally:
        m.l1 = sn_l1
    update_snapshot_refcount(drv, m.l1_offset, cur, 0)


def delete(drv: Qcow2Driver, sid: bytes | None, name: bytes | None) -> None:
    """qcow2_snapshot_delete(): errors as its errp words them."""
    snaps = _snapshots(drv)
    index = find_by_id_and_name(snaps, sid, name)
    if index < 0:
        raise BlockError("Can't find the snapshot", errno.ENOENT)
    sn = snaps[index]
    _validate_l1(drv, sn)
    try:
        write_table(drv, snaps[:index] + snaps[index + 1 :])
    except BlockError as exc:
        raise BlockError(f"Failed to remove snapshot from snapshot list: "
                         f"{os.strerror(exc.errno)}", exc.errno) from None
    try:
        update_snapshot_refcount(drv, sn.l1_table_offset, sn.l1_size, -1)
    except BlockError as exc:
        raise BlockError(f"Failed to free the cluster and L1 table: "
                         f"{os.strerror(exc.errno)}", exc.errno) from None
    drv.rc.free(sn.l1_table_offset, sn.l1_size * 8, DISCARD_SNAPSHOT)
    try:
        update_snapshot_refcount(drv, drv.map.l1_offset, drv.map.l1_size, 0)
    except BlockError as exc:
        raise BlockError(f"Failed to update snapshot status in disk: "
                         f"{os.strerror(exc.errno)}", exc.errno) from None


def load_tmp(drv: Qcow2Driver, sid: bytes | None, name: bytes | None) -> None:
    """qcow2_snapshot_load_tmp(): read the image as the snapshot saw it (read-only)."""
    snaps = _snapshots(drv)
    index = find_by_id_and_name(snaps, sid, name)
    if index < 0:
        raise BlockError("Can't find snapshot", errno.ENOENT)
    sn = snaps[index]
    _validate_l1(drv, sn)
    try:
        raw = drv.file.pread(sn.l1_table_offset, sn.l1_size * 8) if sn.l1_size else b""
    except BlockError as exc:
        raise BlockError("Failed to read l1 table for snapshot", exc.errno) from None
    m = drv.map
    m.l1 = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
    m.l1_offset = sn.l1_table_offset
