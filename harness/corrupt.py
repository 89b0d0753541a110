"""Structure-aware image corruption for bad-input and check tests.

Edits work on the bytes as the format's specification lays them out (QEMU's
docs/interop/qcow2.txt), never through bdrv, so a test corrupts an image the same way
whichever backend it runs on. Every edit is logged as one line (when a `log` callable
is given), so the reference shows what was done:

    iot.corrupt(img).header(cluster_bits=8)        # corrupt t.qcow2: header cluster_bits=8
    iot.corrupt(img).l1(0, 0x50201)                # corrupt t.qcow2: l1[0]=0x50201
    iot.corrupt(img).refcount(cluster=9, value=1)  # corrupt t.qcow2: refcount[9]=1

`Qcow2Corrupter` knows the qcow2 header, header extensions, L1/L2 tables, the refcount
table and refcount blocks (any refcount width). `RawCorrupter` offers the format-free
edits (poke, truncate) every corrupter has. `corrupter(path, fmt)` picks one by format;
add a class there for another format. `digest(path)` fingerprints a file so a test can
log that a bad image was left unchanged.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Self

LogFn = Callable[[str], None]


def digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex (to log that a file is unchanged)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex() if value else "''"
    if isinstance(value, int) and not isinstance(value, bool) and value > 9:
        return hex(value)
    return repr(value)


class RawCorrupter:
    """Format-free edits of one file: write bytes at an offset, truncate, extend."""

    def __init__(self, path: str | os.PathLike[str], log: LogFn | None = None) -> None:
        self.path = Path(path)
        self._log = log

    def note(self, what: str) -> None:
        if self._log is not None:
            self._log(f"corrupt {self.path.name}: {what}")

    # -- raw bytes -------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def _write(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def poke(self, offset: int, data: bytes) -> Self:
        """Write `data` at `offset` (the file grows if needed)."""
        self._write(offset, data)
        self.note(f"{len(data)} bytes at {_show(offset)} = {_show(data)}")
        return self

    def truncate(self, size: int) -> Self:
        """Cut the file to `size` bytes (or extend it with zeros)."""
        os.truncate(self.path, size)
        self.note(f"truncated to {size} bytes")
        return self

    def size(self) -> int:
        return self.path.stat().st_size


# qcow2 header fields: name -> (offset, struct format). Version 3 fields past 72 are
# read and written whatever the version says, so a v2 image can be given them too.
QCOW2_HEADER_FIELDS: dict[str, tuple[int, str]] = {
    "magic": (0, ">I"),
    "version": (4, ">I"),
    "backing_file_offset": (8, ">Q"),
    "backing_file_size": (16, ">I"),
    "cluster_bits": (20, ">I"),
    "size": (24, ">Q"),
    "crypt_method": (32, ">I"),
    "l1_size": (36, ">I"),
    "l1_table_offset": (40, ">Q"),
    "refcount_table_offset": (48, ">Q"),
    "refcount_table_clusters": (56, ">I"),
    "nb_snapshots": (60, ">I"),
    "snapshots_offset": (64, ">Q"),
    "incompatible_features": (72, ">Q"),
    "compatible_features": (80, ">Q"),
    "autoclear_features": (88, ">Q"),
    "refcount_order": (96, ">I"),
    "header_length": (100, ">I"),
    "compression_type": (104, "B"),
}

# Header extension magics (qcow2.txt).
QCOW2_EXT_END = 0
QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA
QCOW2_EXT_FEATURE_TABLE = 0x6803F857
QCOW2_EXT_BITMAPS = 0x23852875
QCOW2_EXT_CRYPTO = 0x0537BE77
QCOW2_EXT_DATA_FILE = 0x44415441

# Offsets in L1, L2 and refcount table entries (bits 9..55).
QCOW2_OFFSET_MASK = 0x00FFFFFFFFFFFE00
QCOW2_INCOMPAT_EXTL2 = 1 << 4
QCOW2_OFLAG_COPIED = 1 << 63


class Qcow2Corrupter(RawCorrupter):
    """Edits of a qcow2 image's metadata, located through its own header.

    Table locations are read from the header at each call, so edits compose: after
    `.header(l1_table_offset=...)`, `.l1(...)` writes into the new place.
    """

    # -- the header ------------------------------------------------------------------

    def fields(self) -> dict[str, int]:
        """The header fields as the file holds them now."""
        raw = self.read(0, 112).ljust(112, b"\0")
        return {name: struct.unpack_from(fmt, raw, off)[0]
                for name, (off, fmt) in QCOW2_HEADER_FIELDS.items()}

    def header(self, **fields: int) -> Self:
        """Set header fields by name (see QCOW2_HEADER_FIELDS), in the order given."""
        for name, value in fields.items():
            if name not in QCOW2_HEADER_FIELDS:
                raise KeyError(f"no qcow2 header field {name!r}")
            off, fmt = QCOW2_HEADER_FIELDS[name]
            self._write(off, struct.pack(fmt, value))
        self.note("header " + ", ".join(f"{k}={_show(v)}" for k, v in fields.items()))
        return self

    def incompatible(self, set_bits: int = 0, clear_bits: int = 0) -> Self:
        """Set and clear incompatible feature bits (1 << 1 is the corrupt bit)."""
        value = (self.fields()["incompatible_features"] | set_bits) & ~clear_bits
        return self.header(incompatible_features=value)

    @property
    def cluster_size(self) -> int:
        return 1 << self.fields()["cluster_bits"]

    # -- header extensions -------------------------------------------------------------

    def extensions(self) -> list[tuple[int, int, int]]:
        """(offset of the extension header, magic, length) for each extension up to the
        end marker (included), read from header_length on."""
        hdr = self.fields()
        end = hdr["backing_file_offset"] or (1 << hdr["cluster_bits"])
        offset = hdr["header_length"] if hdr["version"] >= 3 else 72
        found = []
        while offset + 8 <= end:
            magic, length = struct.unpack(">II", self.read(offset, 8).ljust(8, b"\0"))
            found.append((offset, magic, length))
            if magic == QCOW2_EXT_END:
                break
            offset += 8 + (length + 7) // 8 * 8
        return found

    def extension(self, magic: int, data: bytes | None = None,
                  length: int | None = None) -> Self:
        """Change or add a header extension.

        With `data`, the extension is added in place of the end marker (a new end
        marker follows it); without, the first existing extension with `magic` is
        changed. `length` overrides the length field written (default: len(data)).
        """
        exts = self.extensions()
        if data is None:
            match = [e for e in exts if e[1] == magic]
            if not match or length is None:
                raise ValueError(f"no extension {magic:#x} to change, or no length")
            self._write(match[0][0] + 4, struct.pack(">I", length))
            self.note(f"extension {magic:#x} length={length}")
            return self
        at = exts[-1][0] if exts and exts[-1][1] == QCOW2_EXT_END else None
        if at is None:
            raise ValueError("no end of header extensions to add an extension at")
        declared = len(data) if length is None else length
        body = data + bytes(-len(data) % 8)
        self._write(at, struct.pack(">II", magic, declared) + body + bytes(8))
        self.note(f"extension {magic:#x} added, length={declared}, data={_show(data)}")
        return self

    def backing_name(self, name: bytes, offset: int | None = None,
                     size: int | None = None) -> Self:
        """Write a backing file name and point the header at it. `offset` defaults to
        the current one (or just past the end marker), `size` to len(name)."""
        hdr = self.fields()
        if offset is None:
            offset = hdr["backing_file_offset"]
            if not offset:
                end = self.extensions()[-1]
                offset = end[0] + 8
        self._write(offset, name)
        declared = len(name) if size is None else size
        off_f, size_f = (QCOW2_HEADER_FIELDS[k] for k in ("backing_file_offset",
                                                           "backing_file_size"))
        self._write(off_f[0], struct.pack(off_f[1], offset))
        self._write(size_f[0], struct.pack(size_f[1], declared))
        self.note(f"backing name {_show(name)} at {_show(offset)}, size={declared}")
        return self

    # -- L1 and L2 tables -------------------------------------------------------------

    def l1_entry(self, index: int) -> int:
        off = self.fields()["l1_table_offset"] + 8 * index
        return int.from_bytes(self.read(off, 8), "big")

    def l1(self, index: int, value: int) -> Self:
        """Set entry `index` of the active L1 table to `value` (flags included)."""
        off = self.fields()["l1_table_offset"] + 8 * index
        self._write(off, value.to_bytes(8, "big"))
        self.note(f"l1[{index}]={_show(value)}")
        return self

    def _l2_entry_offset(self, guest_offset: int) -> int:
        hdr = self.fields()
        bits = hdr["cluster_bits"]
        entry_size = 16 if hdr["incompatible_features"] & QCOW2_INCOMPAT_EXTL2 else 8
        per_table = (1 << bits) // entry_size
        cluster = guest_offset >> bits
        l2_offset = self.l1_entry(cluster // per_table) & QCOW2_OFFSET_MASK
        if not l2_offset:
            raise ValueError(f"guest offset {guest_offset:#x} has no L2 table")
        return l2_offset + entry_size * (cluster % per_table)

    def l2_entry(self, guest_offset: int) -> int:
        return int.from_bytes(self.read(self._l2_entry_offset(guest_offset), 8), "big")

    def l2(self, guest_offset: int, value: int) -> Self:
        """Set the L2 entry that maps `guest_offset` (its L2 table must exist)."""
        self._write(self._l2_entry_offset(guest_offset), value.to_bytes(8, "big"))
        self.note(f"l2 entry of guest offset {_show(guest_offset)}={_show(value)}")
        return self

    # -- refcounts --------------------------------------------------------------------

    def reftable_entry(self, index: int) -> int:
        off = self.fields()["refcount_table_offset"] + 8 * index
        return int.from_bytes(self.read(off, 8), "big")

    def reftable(self, index: int, value: int) -> Self:
        """Set entry `index` of the refcount table (a refcount block's offset)."""
        off = self.fields()["refcount_table_offset"] + 8 * index
        self._write(off, value.to_bytes(8, "big"))
        self.note(f"reftable[{index}]={_show(value)}")
        return self

    def _refcount_slot(self, cluster: int) -> tuple[int, int, int]:
        """(byte offset, bit shift, width in bits) of host cluster `cluster`'s refcount."""
        hdr = self.fields()
        width = 1 << hdr["refcount_order"]
        per_block = (1 << hdr["cluster_bits"]) * 8 // width
        block = self.reftable_entry(cluster // per_block) & QCOW2_OFFSET_MASK
        if not block:
            raise ValueError(f"cluster {cluster} has no refcount block")
        bit = (cluster % per_block) * width
        if width >= 8:
            return block + bit // 8, 0, width
        # Sub-byte entries: entry 0 in the least significant bits (as QEMU's).
        return block + bit // 8, bit % 8, width

    def refcount_of(self, cluster: int) -> int:
        off, shift, width = self._refcount_slot(cluster)
        if width >= 8:
            return int.from_bytes(self.read(off, width // 8), "big")
        return (self.read(off, 1)[0] >> shift) & ((1 << width) - 1)

    def refcount(self, cluster: int, value: int) -> Self:
        """Set the refcount of host cluster number `cluster` (offset / cluster_size)."""
        off, shift, width = self._refcount_slot(cluster)
        if not 0 <= value < 1 << width:
            raise ValueError(f"refcount {value} does not fit {width} bits")
        if width >= 8:
            self._write(off, value.to_bytes(width // 8, "big"))
        else:
            mask = ((1 << width) - 1) << shift
            byte = (self.read(off, 1)[0] & ~mask) | (value << shift)
            self._write(off, bytes([byte]))
        self.note(f"refcount[{cluster}]={value}")
        return self


    # -- internal snapshots -----------------------------------------------------------

    def _snapshot_entry_offset(self, index: int) -> int:
        """Where snapshot table entry `index` starts (entries are variable-sized)."""
        hdr = self.fields()
        if not 0 <= index < hdr["nb_snapshots"]:
            raise ValueError(f"the image has no snapshot {index}")
        pos = hdr["snapshots_offset"]
        for _ in range(index):
            fixed = self.read(pos, QCOW2_SNAPSHOT_FIXED)
            id_size, name_size = struct.unpack_from(">HH", fixed, 12)
            extra = struct.unpack_from(">I", fixed, 36)[0]
            pos += QCOW2_SNAPSHOT_FIXED + extra + id_size + name_size
            pos = -(-pos // 8) * 8
        return pos

    def snapshot_entry(self, index: int) -> dict[str, int]:
        """The fixed fields of snapshot table entry `index`."""
        pos = self._snapshot_entry_offset(index)
        raw = self.read(pos, QCOW2_SNAPSHOT_FIXED)
        return {name: struct.unpack_from(f, raw, off)[0]
                for name, (off, f) in QCOW2_SNAPSHOT_FIELDS.items()}

    def snapshot(self, index: int, **fields: int) -> Self:
        """Set fixed fields of snapshot table entry `index` (l1_table_offset, l1_size,
        id_str_size, name_size, date_sec, date_nsec, vm_clock_nsec, vm_state_size,
        extra_data_size)."""
        pos = self._snapshot_entry_offset(index)
        for name, value in fields.items():
            off, f = QCOW2_SNAPSHOT_FIELDS[name]
            self._write(pos + off, struct.pack(f, value))
            self.note(f"snapshot[{index}].{name}={_show(value)}")
        return self

    def snapshot_l1(self, index: int, l1_index: int, value: int) -> Self:
        """Set entry `l1_index` of snapshot `index`'s L1 table."""
        off = self.snapshot_entry(index)["l1_table_offset"] + 8 * l1_index
        self._write(off, value.to_bytes(8, "big"))
        self.note(f"snapshot[{index}].l1[{l1_index}]={_show(value)}")
        return self


# Snapshot table entry: its fixed part, then extra data, the id and the name.
QCOW2_SNAPSHOT_FIXED = 40
QCOW2_SNAPSHOT_FIELDS: dict[str, tuple[int, str]] = {
    "l1_table_offset": (0, ">Q"),
    "l1_size": (8, ">I"),
    "id_str_size": (12, ">H"),
    "name_size": (14, ">H"),
    "date_sec": (16, ">I"),
    "date_nsec": (20, ">I"),
    "vm_clock_nsec": (24, ">Q"),
    "vm_state_size": (32, ">I"),
    "extra_data_size": (36, ">I"),
}


_CORRUPTERS: dict[str, type[RawCorrupter]] = {"qcow2": Qcow2Corrupter}


def corrupter(path: str | os.PathLike[str], fmt: str, log: LogFn | None = None) -> RawCorrupter:
    """The corrupter for an image of format `fmt` (RawCorrupter for formats without one)."""
    return _CORRUPTERS.get(fmt, RawCorrupter)(path, log)


def qcow2(path: str | os.PathLike[str], log: LogFn | None = None) -> Qcow2Corrupter:
    """A Qcow2Corrupter for `path` (typed, for callers that know the format)."""
    return Qcow2Corrupter(path, log)
