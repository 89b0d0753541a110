"""Driver base class and the registry of format and protocol drivers.

One Driver instance serves one open Node. Class attributes describe the driver
(name, protocol prefix, capabilities); instance methods do the work. All I/O
methods receive requests already aligned by the request layer (request.py).
"""

from __future__ import annotations

import errno
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from bdrv.errors import BlockError
from bdrv.graph import (
    CHILD_COW,
    CHILD_DATA,
    CHILD_FILTERED,
    CHILD_METADATA,
    DEFAULT_PERM_UNCHANGED,
    O_INACTIVE,
    O_RDWR,
    PERM_ALL,
    PERM_CONSISTENT_READ,
    PERM_RESIZE,
    PERM_WRITE,
    PERM_WRITE_UNCHANGED,
)

if TYPE_CHECKING:
    from bdrv.graph import Node
    from bdrv.options import OptionDesc
    from bdrv.reopen import ReopenState
    from bdrv.request import BlockStatus


def enotsup(what: str = "Operation not supported") -> BlockError:
    return BlockError(what, errno.ENOTSUP)


class Driver:
    """A block driver. Subclasses set the class attributes and override methods."""

    format_name: ClassVar[str] = ""
    # Protocol drivers have a prefix ("file") and sit at the bottom of the graph.
    protocol_name: ClassVar[str | None] = None
    is_filter: ClassVar[bool] = False
    supports_backing: ClassVar[bool] = False
    has_variable_length: ClassVar[bool] = False
    # pread() past the end of the data returns zeros by itself, so the request layer
    # need not look up the length before each read (the file protocol's case).
    reads_zeros_past_end: ClassVar[bool] = False
    # Options this driver accepts at open time (besides the generic block options).
    runtime_options: ClassVar[tuple[str, ...]] = ()
    # Options for image creation, in the order `-o help` lists them.
    create_options: ClassVar[tuple[OptionDesc, ...]] = ()
    # Whether `qemu-img create` of this format can take a backing file.
    create_supports_backing: ClassVar[bool] = False
    # Whether nodes of this driver can be reopened at all (QEMU: a bdrv_reopen_prepare).
    supports_reopen: ClassVar[bool] = True
    # Driver options that a reopen may leave out to reset them to their default
    # (QEMU's mutable_opts); any other explicit option must be given again.
    mutable_options: ClassVar[tuple[str, ...]] = ()
    # Options `qemu-img amend` can change (amend_opts); empty: no amend support.
    amend_options: ClassVar[tuple[OptionDesc, ...]] = ()

    def __init__(self, node: Node) -> None:
        self.node = node

    # -- class-level hooks -------------------------------------------------------
    @property
    def is_protocol(self) -> bool:
        return self.protocol_name is not None

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        """Score 0..100 for how likely `header` is an image of this format."""
        return 0

    @classmethod
    def create(cls, filename: str, options: dict[str, Any], log: Callable[[str], None]) -> None:
        """Create an image. `options` holds parsed create options by name."""
        raise BlockError(f"Driver '{cls.format_name}' does not support image creation",
                         errno.ENOTSUP)

    # -- lifecycle ---------------------------------------------------------------
    def open(self, options: dict[str, Any], flags: int) -> None:
        """Open the node. Consume (pop) the options this driver understands."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- reopen (see bdrv/reopen.py) -------------------------------------------------
    def reopen_prepare(self, state: ReopenState) -> None:
        """Check and stage the new options in `state` (a bdrv.reopen.ReopenState).

        Pop (consume) the options this driver can change and validate them; raise a
        BlockError to refuse. Options left in `state.options` must equal the node's
        current ones, else the reopen fails with "Cannot change the option '...'".
        The default changes nothing of its own, which makes every driver-specific
        option unchangeable. Nothing may be modified here that reopen_abort cannot undo.
        """

    def reopen_commit(self, state: ReopenState) -> None:
        """Make the staged changes current; must not fail."""

    def reopen_abort(self, state: ReopenState) -> None:
        """Drop what reopen_prepare staged (called only after it succeeded)."""

    # -- permissions ----------------------------------------------------------------
    def child_perm(self, name: str, role: int, perm: int, shared: int) -> tuple[int, int]:
        """Permissions to take on a child given our own cumulative ones."""
        if self.is_filter or role & CHILD_FILTERED:
            return perm, shared
        if role & CHILD_COW:
            # Backing files are only read. They may change under us (be written
            # and resized) only if our own users can cope with changing data.
            cperm = perm & PERM_CONSISTENT_READ
            cshared = PERM_WRITE | PERM_RESIZE if shared & PERM_WRITE else 0
            cshared |= PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED
            if self.node.open_flags & O_INACTIVE:
                cshared |= PERM_WRITE | PERM_RESIZE
            return cperm, cshared
        return self._storage_perm(role, perm, shared)

    def _storage_perm(self, role: int, perm: int, shared: int) -> tuple[int, int]:
        """Perms for a child holding our data/metadata (bdrv_default_perms_for_storage)."""
        # Start from what a filter would pass through (everything, in 7.2).
        cperm, cshared = perm & ~DEFAULT_PERM_UNCHANGED, shared | DEFAULT_PERM_UNCHANGED
        if role & CHILD_METADATA:
            cperm |= PERM_CONSISTENT_READ
            # What our parents need passes on; a writable node also takes write
            # and resize for its metadata.
            if self.node.open_flags & O_RDWR:
                cperm |= PERM_WRITE | PERM_RESIZE
            cshared &= ~(PERM_WRITE | PERM_RESIZE)
            cshared |= PERM_WRITE_UNCHANGED
        if role & CHILD_DATA:
            # The format may rely on the data file's size. (7.2 does not yet take
            # RESIZE along with WRITE here: a qemu-io on raw,size=... holds no resize.)
            cshared &= ~PERM_RESIZE
            if cperm & PERM_WRITE_UNCHANGED:
                cperm |= PERM_WRITE
        if self.node.open_flags & O_INACTIVE:
            cshared |= PERM_WRITE | PERM_RESIZE
        return cperm, cshared & PERM_ALL

    def check_perm(self, perm: int, shared: int) -> None:
        """Check the new cumulative permissions; may take tentative locks."""

    def set_perm(self, perm: int, shared: int) -> None:
        """Commit the permissions checked by check_perm."""

    def abort_perm(self) -> None:
        """Undo check_perm."""

    # -- I/O (aligned) -------------------------------------------------------------
    def getlength(self) -> int:
        raise NotImplementedError

    def get_allocated_file_size(self) -> int:
        """Bytes the image occupies on the host; -ENOTSUP maps to 'unavailable'."""
        file = self.node.file
        if file is not None:
            return file.node.driver.get_allocated_file_size()
        raise enotsup()

    def pread(self, offset: int, length: int) -> bytes | bytearray:
        raise NotImplementedError

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview, flags: int) -> None:
        raise enotsup()

    def pwrite_zeroes(self, offset: int, length: int, flags: int) -> None:
        raise enotsup()

    def pdiscard(self, offset: int, length: int) -> None:
        raise enotsup()

    def flush(self) -> None:
        pass

    def truncate(self, size: int, exact: bool, prealloc: str) -> None:
        raise BlockError("Image format driver does not support resize", errno.ENOTSUP)

    def block_status(self, want_zero: bool, offset: int, length: int) -> BlockStatus | None:
        """None means: not implemented, use the generic answer."""
        return None

    # -- information ---------------------------------------------------------------
    def change_backing_file(self, backing_file: str | None, backing_fmt: str | None) -> None:
        """The driver's bdrv_change_backing_file: record a new backing name in the image."""
        raise BlockError("Operation not supported", errno.ENOTSUP)

    def amend(self, options: dict[str, Any], status: Callable[[int, int], None],
              force: bool) -> None:
        """bdrv_amend_options(): change the image to the parsed `options` (names as
        in `amend_options`, only those given); `status(done, total)` reports progress."""
        raise BlockError(f"Block driver '{self.format_name}' does not support option "
                         "amendment", errno.ENOTSUP)

    def make_empty(self) -> None:
        """bdrv_make_empty(): drop all data of this (overlay) node."""
        raise BlockError(f"{self.format_name or self.protocol_name} does not support "
                         "emptying nodes", errno.ENOTSUP)

    def get_info(self) -> dict[str, int]:
        """cluster_size / vm_state_offset, as bdrv_get_info()."""
        raise enotsup()

    def get_specific_info(self) -> dict[str, Any] | None:
        return None

    def check(self, fix: int) -> Any:
        raise BlockError("This image format does not support checks", errno.ENOTSUP)


_REGISTRY: dict[str, type[Driver]] = {}


def register(cls: type[Driver]) -> type[Driver]:
    """Class decorator adding a driver to the registry under its format name."""
    _REGISTRY[cls.format_name] = cls
    return cls


# Where the built-in drivers live. A command imports only the modules it needs: for
# `bdrv-img map -f qcow2 x` the vpc and blkdebug drivers are a fifth of its start-up.
_BUILTIN_MODULES = {
    "blkdebug": "bdrv.drivers.blkdebug",
    "file": "bdrv.drivers.file",
    "host_device": "bdrv.drivers.file",
    "qcow2": "bdrv.drivers.qcow2",
    "raw": "bdrv.drivers.raw",
    "vpc": "bdrv.drivers.vpc.driver",
}
_PROTOCOL_MODULES = ("bdrv.drivers.file", "bdrv.drivers.blkdebug")


def _load_builtin() -> None:
    # Importing the modules registers the drivers.
    for module in sorted(set(_BUILTIN_MODULES.values())):
        importlib.import_module(module)


def _sorted_drivers() -> list[type[Driver]]:
    # By name, so that probing (first of equal scores wins) does not depend on which
    # modules happened to be imported first.
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def find_driver(name: str) -> type[Driver] | None:
    module = _BUILTIN_MODULES.get(name)
    if module is not None:
        importlib.import_module(module)
    return _REGISTRY.get(name)


def all_drivers() -> list[type[Driver]]:
    _load_builtin()
    return _sorted_drivers()


def protocol_drivers() -> list[type[Driver]]:
    for module in _PROTOCOL_MODULES:
        importlib.import_module(module)
    return [drv for drv in _sorted_drivers() if drv.protocol_name is not None]


def find_protocol(prefix: str) -> type[Driver] | None:
    for cls in protocol_drivers():
        if cls.protocol_name == prefix:
            return cls
    return None


def format_names() -> list[str]:
    """Supported format names in the order qemu-img --help lists them (sorted)."""
    _load_builtin()
    return sorted(_REGISTRY)
