"""The `raw` format driver: the image is the guest disk, optionally a window of it.

With `offset`/`size` the node exposes only that window of its file. A raw driver
chosen by probing (no `-f raw`) refuses writes that would make sector 0 look like
another format, as QEMU does, and is limited to sector-aligned I/O for that.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bdrv.driver import Driver, find_driver, register
from bdrv.errors import BlockError
from bdrv.graph import CHILD_DATA, CHILD_FILTERED, CHILD_PRIMARY, O_RDWR
from bdrv.options import OptionDesc
from bdrv.request import BLOCK_OFFSET_VALID, BLOCK_RAW, BlockStatus

if TYPE_CHECKING:
    from bdrv.graph import Node
    from bdrv.reopen import ReopenState

SECTOR = 512
PROBED_RAW_WARNING = (
    "WARNING: Image format was not specified for '{}' and probing guessed raw.\n"
    "         Automatically detecting the format is dangerous for raw images, "
    "write operations on block 0 will be restricted.\n"
    "         Specify the 'raw' format explicitly to remove the restrictions."
)
_U64_ERROR = "Parameter '{}' expects a non-negative number below 2^64"


def _parse_u64(name: str, value: Any) -> int:
    from bdrv.sizes import parse_option_size

    if isinstance(value, bool):
        raise BlockError(f"Invalid parameter type for '{name}', expected: integer")
    if isinstance(value, int):
        if value < 0:
            raise BlockError(_U64_ERROR.format(name))
        return value
    return parse_option_size(name, str(value))


@register
class RawDriver(Driver):
    format_name = "raw"
    runtime_options = ("offset", "size")
    strong_options = ("offset", "size")
    # A reopen may change the window, and leaving an option out resets it.
    mutable_options = ("offset", "size")

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.offset = 0
        self.size: int | None = None

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return 1  # anything can be raw; every real format outbids this

    # raw's own creation options; the protocol driver (file) adds its own after these.
    create_options = (OptionDesc("size", "size", "Virtual disk size"),)

    @classmethod
    def create_option_list(cls) -> tuple[Any, ...]:
        file_driver = find_driver("file")
        assert file_driver is not None
        return file_driver.create_options

    @classmethod
    def create(cls, filename: str, options: dict[str, Any], log: Callable[[str], None]) -> None:
        file_driver = find_driver("file")
        assert file_driver is not None
        file_driver.create(filename, options, log)

    @staticmethod
    def _read_window(options: dict[str, Any]) -> tuple[int, int | None]:
        """Consume offset/size (raw_read_options); absent means 0 / the rest of the file."""
        offset = _parse_u64("offset", options.pop("offset")) if "offset" in options else 0
        size = _parse_u64("size", options.pop("size")) if "size" in options else None
        return offset, size

    def _check_window(self, offset: int, size: int | None) -> None:
        """raw_apply_options()'s checks against the file's current length."""
        file_length = self._file().getlength()
        if offset > file_length:
            raise BlockError(
                f"Offset ({offset}) cannot be greater than size of the containing "
                f"file ({file_length})"
            )
        if size is not None:
            if size % SECTOR:
                raise BlockError(f"Specified size is not multiple of {SECTOR}")
            if offset + size > file_length:
                raise BlockError(
                    f"The sum of offset ({offset}) and size ({size}) has to be "
                    f"smaller or equal to the  actual size of the containing file "
                    f"({file_length})"
                )

    def open(self, options: dict[str, Any], flags: int) -> None:
        self.offset, self.size = self._read_window(options)
        file = self.node.file
        assert file is not None
        if self.node.probed_raw and flags & O_RDWR:
            # QEMU warns here: after reading the options, before checking them.
            warn = getattr(self.node, "warn", None)
            if warn is not None:
                warn(PROBED_RAW_WARNING.format(file.node.filename))
        self._check_window(self.offset, self.size)
        if self.node.probed_raw:
            # Protecting sector 0 is simpler with whole-sector requests only.
            self.node.request_alignment = max(self.node.request_alignment, SECTOR)

    # -- reopen: the window may move (the file child keeps its role, as in 7.2) -------
    def reopen_prepare(self, state: ReopenState) -> None:
        offset, size = self._read_window(state.unhandled)
        self._check_window(offset, size)
        state.driver_data = (offset, size)

    def reopen_commit(self, state: ReopenState) -> None:
        self.offset, self.size = state.driver_data

    @property
    def has_window(self) -> bool:
        return self.offset != 0 or self.size is not None

    def file_role(self, options: dict[str, Any]) -> int:
        """The role of our file child: a pure filter unless we expose a window.

        A window (offset or size) makes the file plain data, whose size others must
        then not change; decided from the options, before the child is attached.
        """
        offset = options.get("offset", 0)
        if "size" in options or offset not in (0, "0"):
            return CHILD_DATA | CHILD_PRIMARY
        return CHILD_FILTERED | CHILD_PRIMARY

    # -- I/O --------------------------------------------------------------------------
    def _file(self) -> Node:
        child = self.node.file
        assert child is not None
        return child.node

    def getlength(self) -> int:
        if self.size is not None:
            return self.size
        return max(0, self._file().getlength() - self.offset)

    def pread(self, offset: int, length: int) -> bytes:
        return self._file().pread(self.offset + offset, length)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview, flags: int) -> None:
        if self.node.probed_raw and offset < SECTOR and len(data):
            self._refuse_format_change(offset, data)
        self._file().pwrite(self.offset + offset, data, flags)

    def _refuse_format_change(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        from bdrv.drivers.foreign import foreign_format
        from bdrv.open import probe_format

        assert offset == 0 and len(data) >= SECTOR
        head = bytes(data[:SECTOR])
        # Formats QEMU knows and bdrv does not count too: QEMU refuses these writes.
        if foreign_format(head, "") is not None or probe_format(head, "") is not RawDriver:
            raise BlockError("Operation not permitted", errno.EPERM)

    def pwrite_zeroes(self, offset: int, length: int, flags: int) -> None:
        if self.node.probed_raw and offset < SECTOR:
            self._refuse_format_change(0, bytes(SECTOR))
        self._file().pwrite_zeroes(self.offset + offset, length, flags)

    def pdiscard(self, offset: int, length: int) -> None:
        self._file().pdiscard(self.offset + offset, length)

    def truncate(self, size: int, exact: bool, prealloc: str) -> None:
        if self.size is not None:
            raise BlockError("Cannot resize fixed-size raw disks", errno.ENOTSUP)
        self._file().truncate(self.offset + size, exact, prealloc)

    def block_status(self, want_zero: bool, offset: int, length: int) -> BlockStatus:
        return BlockStatus(BLOCK_RAW | BLOCK_OFFSET_VALID, length, self.offset + offset,
                           self._file())

    def get_allocated_file_size(self) -> int:
        return self._file().driver.get_allocated_file_size()

    def get_info(self) -> dict[str, int]:
        return {"cluster_size": 0, "vm_state_offset": 0}
