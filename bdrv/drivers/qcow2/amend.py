"""qemu-img amend for qcow2, step by step as 7.2's qcow2_amend_options() does it.

The given options are checked in the order of the amend option list, then the image
is changed in 7.2's order: upgrade to v3 first (later steps may need it), refcount
width, header rewrite, backing file check, lazy refcounts, size, and a downgrade to
v2 last (after the steps that may remove what v2 cannot hold). A failing step leaves
the steps before it done, as in 7.2. The refcount width change lives in
amend_refcount.py, the zero cluster expansion a downgrade needs in amend_zero.py.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bdrv.errors import BlockError, strerror
from bdrv.options import OptionDesc

from .header import (
    COMPAT_LAZY_REFCOUNTS,
    COMPRESSION_ZLIB,
    INCOMPAT_COMPRESSION,
    INCOMPAT_DIRTY,
)
from .mapping import SC_COMPRESSED
from .options import CREATE_OPTIONS

if TYPE_CHECKING:
    from .driver import Qcow2Driver

Status = Callable[[int, int], None]

_ENC = "encrypt."
_COMMON = ("size", "compat", "backing_file", "backing_fmt", "data_file", "data_file_raw",
           "lazy_refcounts", "refcount_bits")
# qcow2_amend_opts: the LUKS keyslot options, then the options shared with create.
AMEND_OPTIONS: tuple[OptionDesc, ...] = (
    OptionDesc(_ENC + "state", "string",
               "Select new state of affected keyslots (active/inactive)"),
    OptionDesc(_ENC + "keyslot", "number", "Select a single keyslot to modify explicitly"),
    OptionDesc(_ENC + "old-secret", "string", "Select all keyslots that match this password"),
    OptionDesc(_ENC + "new-secret", "string",
               "New secret to set in the matching keyslots. Empty string to erase"),
    OptionDesc(_ENC + "iter-time", "number", "Time to spend in PBKDF in milliseconds"),
) + tuple(d for name in _COMMON for d in CREATE_OPTIONS if d.name == name)

# Qcow2AmendOperation: which step is reporting progress.
_NO_OPERATION, _UPGRADING, _CHANGING_REFCOUNT_ORDER, _DOWNGRADING = range(4)
_V3_HINT = "(use compat=1.1 or greater)"


class AmendProgress:
    """qcow2_amend_helper_cb: the steps' progress as one figure.

    Each step reports (done, total) in its own units; the work of finished steps is
    added up and the steps not begun yet are projected from those seen so far.
    """

    def __init__(self, status: Status, total_operations: int) -> None:
        self.status = status
        self.total_operations = total_operations
        self.current = _NO_OPERATION
        self.last = _NO_OPERATION
        self.offset_completed = 0
        self.operations_completed = 0
        self.last_work_size = 0

    def step(self, operation: int) -> Status:
        self.current = operation
        return self

    def __call__(self, offset: int, total: int) -> None:
        if self.current != self.last:
            if self.last != _NO_OPERATION:
                self.offset_completed += self.last_work_size
                self.operations_completed += 1
            self.last = self.current
        self.last_work_size = total
        current_work = self.offset_completed + total
        # C integer division of non-negative int64 values
        projected = current_work * (self.total_operations - self.operations_completed - 1) \
            // (self.operations_completed + 1)
        self.status(self.offset_completed + offset, current_work + projected)


def errno_error(message: str, exc: BlockError) -> BlockError:
    """error_setg_errno(): "<message>: <strerror>"."""
    return BlockError(f"{message}: {strerror(exc.errno)}", exc.errno)


def _int32(value: int) -> int:
    """The C int that a uint64 option value is stored into."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass
class _Target:
    """What the given options ask for (unchanged fields keep the image's values)."""

    version: int
    refcount_bits: int
    lazy: bool
    size: int = 0
    backing_given: bool = False
    backing_file: str | None = None
    backing_fmt: str | None = None


def _target(drv: Qcow2Driver, opts: dict[str, Any]) -> _Target:
    """The options in amend option list order, each refused with 7.2's words."""
    want = _Target(drv.version, 1 << drv.hdr.refcount_order, drv.lazy_refcounts)
    for desc in AMEND_OPTIONS:
        name = desc.name
        if name not in opts:
            continue
        value = opts[name]
        if name == "compat":
            if value in ("0.10", "v2"):
                want.version = 2
            elif value in ("1.1", "v3"):
                want.version = 3
            else:
                raise BlockError(f"Unknown compatibility level {value}")
        elif name == "size":
            want.size = int(value)
        elif name == "backing_file":
            want.backing_file, want.backing_given = str(value), True
        elif name == "backing_fmt":
            want.backing_fmt, want.backing_given = str(value), True
        elif name.startswith(_ENC):
            # bdrv opens no encrypted image, so there is never anything to amend.
            raise BlockError("Can't amend encryption options - encryption not present")
        elif name == "lazy_refcounts":
            want.lazy = bool(value)
        elif name == "refcount_bits":
            bits = want.refcount_bits = _int32(int(value))
            if bits <= 0 or bits > 64 or bits & (bits - 1):
                raise BlockError("Refcount width must be a power of two and may not "
                                 "exceed 64 bits")
        elif name == "data_file":
            # bdrv opens no image with an external data file.
            raise BlockError("data-file can only be set for images that use an external "
                             "data file")
        elif name == "data_file_raw" and value:
            raise BlockError("data-file-raw cannot be set on existing images")
    return want


def amend(drv: Qcow2Driver, opts: dict[str, Any], status: Status) -> None:
    hdr = drv.hdr
    want = _target(drv, opts)
    old_version = drv.version
    new_order = want.refcount_bits.bit_length() - 1
    progress = AmendProgress(status, (want.version != old_version)
                             + (new_order != hdr.refcount_order))
    if want.version > old_version:
        upgrade(drv, progress.step(_UPGRADING))
    if new_order != hdr.refcount_order:
        if want.version < 3 and want.refcount_bits != 16:
            raise BlockError("Refcount widths other than 16 bits require compatibility "
                             f"level 1.1 or above {_V3_HINT}")
        from .amend_refcount import change_refcount_order

        change_refcount_order(drv, new_order, progress.step(_CHANGING_REFCOUNT_ORDER))
    # data_file_raw=off: the bit is clear already (bdrv has no data file images).
    _update_header(drv)
    if want.backing_given and (want.backing_file != hdr.backing_file
                               or want.backing_fmt != hdr.backing_format):
        raise BlockError("Cannot amend the backing file",
                         hint="You can use 'qemu-img rebase' instead.\n")
    if want.lazy != drv.lazy_refcounts:
        _set_lazy_refcounts(drv, want.lazy, want.version)
    if want.size:
        # blk_truncate() takes an int64_t: sizes from 2^63 on are negative there.
        size = want.size - (1 << 64) if want.size >= 1 << 63 else want.size
        drv.node.truncate(size, True, "off")
    if want.version < old_version:
        downgrade(drv, progress.step(_DOWNGRADING))


def _update_header(drv: Qcow2Driver) -> None:
    try:
        drv.update_header()
    except BlockError as exc:
        raise errno_error("Failed to update the image header", exc) from None


def _set_lazy_refcounts(drv: Qcow2Driver, lazy: bool, new_version: int) -> None:
    hdr = drv.hdr
    if lazy:
        if new_version < 3:
            raise BlockError("Lazy refcounts only supported with compatibility level 1.1 "
                             f"and above {_V3_HINT}")
        hdr.compatible_features |= COMPAT_LAZY_REFCOUNTS
    else:
        # Refcounts must be right before nobody may count on them being repaired.
        _mark_clean(drv)
        hdr.compatible_features &= ~COMPAT_LAZY_REFCOUNTS
    try:
        drv.update_header()
    except BlockError as exc:
        hdr.compatible_features ^= COMPAT_LAZY_REFCOUNTS
        raise errno_error("Failed to update the image header", exc) from None
    drv.lazy_refcounts = lazy


def _mark_clean(drv: Qcow2Driver) -> None:
    try:
        drv.mark_clean()
    except BlockError as exc:
        raise errno_error("Failed to make the image clean", exc) from None


def _set_version(drv: Qcow2Driver, version: int) -> None:
    drv.version = drv.hdr.version = drv.map.version = version


def upgrade(drv: Qcow2Driver, status: Status) -> None:
    """qcow2_upgrade(): v2 -> v3; v2 snapshot entries get v3's extra data first."""
    from .snapshot import write_table

    status(0, 2)
    snapshots = drv.snapshots.snapshots
    # v3 requires the 64-bit VM state size and the disk size in every entry.
    if any(sn.extra_data_size < 16 for sn in snapshots):
        try:
            write_table(drv, snapshots)
        except BlockError as exc:
            raise errno_error("Failed to update the snapshot table", exc) from None
    status(1, 2)
    _write_version(drv, 3)
    status(2, 2)


def _write_version(drv: Qcow2Driver, version: int) -> None:
    """The header with `version`; the old version kept in memory if it cannot be written."""
    old = drv.version
    _set_version(drv, version)
    try:
        drv.update_header()
    except BlockError as exc:
        _set_version(drv, old)
        raise errno_error("Failed to update the image header", exc) from None


def downgrade(drv: Qcow2Driver, status: Status) -> None:
    """qcow2_downgrade(): v3 -> v2, refusing what v2 cannot express."""
    hdr = drv.hdr
    if hdr.refcount_order != 4:
        raise BlockError("compat=0.10 requires refcount_bits=16", errno.ENOTSUP)
    # A v2 snapshot entry may lack the disk size and the upper half of the VM state
    # size, so v2 readers could not know those fields matter.
    for sn in drv.snapshots.snapshots:
        if sn.vm_state_size > 0xFFFFFFFF or sn.disk_size != drv.size:
            raise BlockError("Internal snapshots prevent downgrade of image", errno.ENOTSUP)
    if hdr.incompatible_features & INCOMPAT_DIRTY:
        _mark_clean(drv)
    rest = hdr.incompatible_features & ~INCOMPAT_COMPRESSION
    if rest:
        raise BlockError(f"Cannot downgrade an image with incompatible features 0x{rest:x} "
                         "set", errno.ENOTSUP)
    # v2 readers ignore compatible and autoclear bits: they can simply go.
    hdr.compatible_features = 0
    hdr.autoclear_features = 0
    from .amend_zero import expand_zero_clusters

    try:
        expand_zero_clusters(drv, status)
    except BlockError as exc:
        raise errno_error("Failed to turn zero into data clusters", exc) from None
    if hdr.incompatible_features & INCOMPAT_COMPRESSION:
        if _has_compressed_clusters(drv):
            raise BlockError("Cannot downgrade an image with zstd compression type and "
                             "existing compressed clusters", errno.ENOTSUP)
        # v2 knows only zlib, which is fine while nothing is compressed.
        hdr.incompatible_features &= ~INCOMPAT_COMPRESSION
        hdr.compression_type = drv.ctype = COMPRESSION_ZLIB
    _write_version(drv, 2)


def _has_compressed_clusters(drv: Qcow2Driver) -> bool:
    """qcow2_has_compressed_clusters(): the active table only, not the snapshots'."""
    offset = 0
    remaining = drv.size
    try:
        while remaining:
            sc_type, _, n = drv.map.lookup(offset, min(0x7FFFFFFF, remaining))
            if sc_type == SC_COMPRESSED:
                return True
            offset += n
            remaining -= n
    except BlockError:
        raise BlockError("Failed to check block status") from None
    return False
