"""The `file` protocol driver: POSIX files and block devices.

Behaves like QEMU 7.2's file-posix: the same open errors, holes found with
SEEK_DATA/SEEK_HOLE, zero writes and discards with fallocate(), the first block
allocated on creation, and the same OFD image locks (see bdrv/locking.py).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from bdrv.driver import Driver, register
from bdrv.errors import BlockError, from_oserror
from bdrv.graph import (
    O_AUTO_RDONLY,
    O_NO_FLUSH,
    O_NOCACHE,
    O_RDWR,
    PERM_ALL,
    PERM_RESIZE,
    PERM_WRITE,
    PERM_WRITE_UNCHANGED,
)
from bdrv.locking import ImageLocks, ofd_locks_supported, unshared_bits
from bdrv.options import OptionDesc, parse_bool, parse_enum
from bdrv.request import BLOCK_DATA, BLOCK_OFFSET_VALID, BLOCK_ZERO, REQ_MAY_UNMAP, BlockStatus

if TYPE_CHECKING:
    from bdrv.reopen import ReopenState

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
# Size of the zeroed first block written on creation (file-posix allocate_first_block).
MAX_BLOCKSIZE = 4096
SECTOR = 512
# PreallocMode as QAPI knows it; files support all but 'metadata'.
PREALLOC_MODES = ("off", "metadata", "falloc", "full")

# The interpreter's own symbols include libc's (find_library would run ldconfig).
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def allocate_first_block(fd: int, size: int) -> None:
    """Write zeros at the start so that later alignment probing finds data there."""
    write_size = SECTOR if size < MAX_BLOCKSIZE else MAX_BLOCKSIZE
    try:
        os.pwrite(fd, bytes(write_size), 0)
    except OSError:
        pass  # only an optimisation in QEMU too


def truncate_fd(fd: int, size: int, prealloc: str, filename: str = "") -> None:
    """Resize a regular file with QEMU's preallocation modes and first-block rule.

    Checks and messages in file-posix's order: preallocation never shrinks, then the
    mode decides; 'metadata' (or anything else) is not a mode files support.
    """
    current = os.fstat(fd).st_size
    if prealloc != "off" and current > size:
        raise BlockError("Cannot use preallocation for shrinking files", errno.ENOTSUP)
    if prealloc == "falloc":
        if size != current:
            try:
                os.posix_fallocate(fd, current, size - current)
            except OSError as exc:
                raise from_oserror(exc, "Could not preallocate new data") from exc
            if current == 0:
                allocate_first_block(fd, size)
    elif prealloc == "full":
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise from_oserror(exc, "Could not resize file") from exc
        try:
            _write_zeroes_by_writing(fd, current, size - current)
        except OSError as exc:
            raise from_oserror(exc, "Could not write zeros for preallocation") from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            raise from_oserror(exc, "Could not flush file to disk") from exc
    elif prealloc == "off":
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise from_oserror(exc, "Could not resize file") from exc
        if current == 0 and size > 0:
            allocate_first_block(fd, size)
    else:
        raise BlockError(f"Unsupported preallocation mode: {prealloc}", errno.ENOTSUP)


def open_mode(flags: int, perm: int) -> int:
    """The os.open() mode for block-layer flags (raw_parse_flags).

    With auto-read-only the file is opened read-write only while someone writes.
    """
    if flags & O_AUTO_RDONLY:
        read_write = bool(perm & (PERM_WRITE | PERM_WRITE_UNCHANGED | PERM_RESIZE))
    else:
        read_write = bool(flags & O_RDWR)
    mode = os.O_RDWR if read_write else os.O_RDONLY
    if flags & O_NOCACHE:
        mode |= os.O_DIRECT
    return mode


def _write_zeroes_by_writing(fd: int, offset: int, length: int) -> None:
    chunk = bytes(min(length, 1 << 20))
    pos = offset
    while pos < offset + length:
        n = min(len(chunk), offset + length - pos)
        os.pwrite(fd, memoryview(chunk)[:n], pos)
        pos += n


@register
class FileDriver(Driver):
    format_name = "file"
    protocol_name = "file"
    has_variable_length = True
    reads_zeros_past_end = True
    runtime_options = ("filename", "aio", "aio-max-batch", "locking", "pr-manager",
                       "drop-cache", "x-check-cache-dropped")
    # The options a reopen may leave out (file-posix's mutable_opts); drop-cache may
    # change but, once given, must be given again.
    mutable_options = ("x-check-cache-dropped",)
    create_options: ClassVar[tuple[OptionDesc, ...]] = (
        OptionDesc("size", "size", "Virtual disk size"),
        OptionDesc("nocow", "bool", "Turn off copy-on-write (valid only on btrfs)"),
        OptionDesc("preallocation", "string",
                   "Preallocation mode (allowed values: off, falloc, full)"),
        OptionDesc("extent_size_hint", "size",
                   "Extent size hint for the image file, 0 to disable"),
    )

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.fd = -1
        self.filename = ""
        self.locks: ImageLocks | None = None
        self.use_locks = False
        self.direct = False
        self.is_regular = True
        self._saved: tuple[int, int] = (0, 0)
        # os.open() mode of self.fd (access mode and O_DIRECT).
        self.mode = os.O_RDONLY
        # While a reopen is under way: its state, and the new descriptor (with its mode
        # and locks) that the permission check opened for the new flags.
        self.reopen_state: ReopenState | None = None
        self._new_fd: tuple[int, int, ImageLocks | None] | None = None

    @classmethod
    def create(cls, filename: str, options: dict[str, Any], log: Callable[[str], None]) -> None:
        # raw_co_create_opts: the size is rounded up to whole sectors, the mode checked.
        size = -(-int(options.get("size", 0)) // SECTOR) * SECTOR
        prealloc = parse_enum(str(options.get("preallocation", "off")), PREALLOC_MODES)
        if int(options.get("extent_size_hint", 1 << 20)) > 0xFFFFFFFF:
            raise BlockError("Extent size hint is too large")
        path = strip_file_prefix(filename)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise from_oserror(exc, f"Could not create '{path}'") from exc
        try:
            locks = ImageLocks(fd, path)
            # QEMU takes write+resize and unshares resize while creating.
            from bdrv.graph import PERM_RESIZE, PERM_WRITE

            perm = PERM_WRITE | PERM_RESIZE
            shared = PERM_ALL & ~PERM_RESIZE
            if ofd_locks_supported(fd):
                locks.apply(perm, unshared_bits(shared), release=False)
                locks.check(perm, shared)
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                # Discard existing contents first, as QEMU's create does.
                truncate_fd(fd, 0, "off")
                if size >= 1 << 63:
                    # Rounded past INT64_MAX the size is negative to ftruncate: EINVAL.
                    raise BlockError("Could not resize file: Invalid argument", errno.EINVAL)
                truncate_fd(fd, size, prealloc)
        finally:
            os.close(fd)

    # -- open/close ---------------------------------------------------------------
    def open(self, options: dict[str, Any], flags: int) -> None:
        filename = options.pop("filename", None)
        if filename is None or filename == "":
            raise BlockError("The 'file' block driver requires a file name")
        self.filename = strip_file_prefix(str(filename))
        locking = str(options.pop("locking", "auto"))
        if locking not in ("auto", "on", "off"):
            raise BlockError(f"Parameter 'locking' does not accept value '{locking}'")
        aio = options.pop("aio", None)
        if aio is not None and aio not in ("threads", "native", "io_uring"):
            raise BlockError(f"Parameter 'aio' does not accept value '{aio}'")
        if aio == "native" and not flags & O_NOCACHE:
            raise BlockError("aio=native was specified, but it requires cache.direct=on, "
                             "which was not specified.")
        for key in ("aio-max-batch", "pr-manager", "drop-cache", "x-check-cache-dropped"):
            options.pop(key, None)
        self.direct = bool(flags & O_NOCACHE)
        mode = os.O_RDWR if flags & O_RDWR else os.O_RDONLY
        if self.direct:
            mode |= os.O_DIRECT
        self.mode = mode
        try:
            self.fd = os.open(self.filename, mode | os.O_CLOEXEC)
        except OSError as exc:
            raise from_oserror(exc, f"Could not open '{self.filename}'") from exc
        try:
            st = os.fstat(self.fd)
            self._check_file_type(st.st_mode)
            self.is_regular = stat.S_ISREG(st.st_mode)
            self.use_locks = locking == "on" or (locking == "auto" and ofd_locks_supported(self.fd))
            if locking == "on" and not ofd_locks_supported(self.fd):
                self.use_locks = False
            if self.use_locks:
                self.locks = ImageLocks(self.fd, self.filename)
            self.node.request_alignment = 4096 if self.direct else 1
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    def _check_file_type(self, mode: int) -> None:
        # Devices belong to the host_device driver, as in QEMU.
        if not stat.S_ISREG(mode):
            raise BlockError(
                f"'file' driver requires '{self.filename}' to be a regular file", errno.EINVAL
            )

    def close(self) -> None:
        self._drop_new_fd()
        if self.fd >= 0:
            os.close(self.fd)  # closing the description drops its OFD locks
            self.fd = -1

    # -- reopen: the descriptor follows the new flags (file-posix's way) ---------------
    # Prepare only validates and remembers the state; the permission check that
    # follows (with the new flags in effect) opens a descriptor in the new mode and
    # copies the locks to it, set_perm switches to it, abort_perm closes it.
    def reopen_prepare(self, state: ReopenState) -> None:
        for key in ("drop-cache", "x-check-cache-dropped"):
            if key in state.unhandled:
                parse_bool(key, state.unhandled.pop(key))
        # file-posix puts the options it cannot change back as option strings, so a
        # number (aio-max-batch from QMP) never equals its old value.
        for key in self.runtime_options:
            value = state.unhandled.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                state.unhandled[key] = str(value)
        self.reopen_state = state

    def reopen_commit(self, state: ReopenState) -> None:
        self.reopen_state = None

    def reopen_abort(self, state: ReopenState) -> None:
        self._drop_new_fd()
        self.reopen_state = None

    def _drop_new_fd(self) -> None:
        if self._new_fd is not None:
            os.close(self._new_fd[0])  # its locks go with it
            self._new_fd = None

    def _open_new_fd(self, mode: int, perm: int, shared: int) -> None:
        try:
            fd = os.open(self.filename, mode | os.O_CLOEXEC)
        except OSError as exc:
            raise from_oserror(exc, f"Could not open '{self.filename}'") from exc
        locks = None
        if self.use_locks:
            locks = ImageLocks(fd, self.filename)
            try:
                locks.apply(perm, unshared_bits(shared), release=False)
            except BlockError:
                os.close(fd)
                raise
        self._new_fd = (fd, mode, locks)

    # -- permissions: the image locks -----------------------------------------------
    def check_perm(self, perm: int, shared: int) -> None:
        self._drop_new_fd()
        mode = self.mode
        if self.reopen_state is not None:
            # The node's flags are the reopen's new ones while this runs.
            mode = open_mode(self.node.open_flags, perm)
        if self.locks is not None:
            self._saved = (self.locks.locked_perm, self.locks.locked_unshared)
            # Tentatively hold the union of the old and new locks, then test the rest.
            self.locks.apply(self.locks.locked_perm | perm,
                             self.locks.locked_unshared | unshared_bits(shared), release=False)
            try:
                self.locks.check(perm, shared)
            except BlockError:
                self.abort_perm()
                raise
        if mode != self.mode:
            try:
                self._open_new_fd(mode, perm, shared)
            except BlockError:
                self.abort_perm()
                raise

    def set_perm(self, perm: int, shared: int) -> None:
        if self._new_fd is not None:
            fd, mode, locks = self._new_fd
            self._new_fd = None
            os.close(self.fd)
            self.fd, self.mode, self.locks = fd, mode, locks
            self.direct = bool(mode & os.O_DIRECT)
            self.node.request_alignment = 4096 if self.direct else 1
        if self.locks is not None:
            self.locks.apply(perm, unshared_bits(shared), release=True)

    def abort_perm(self) -> None:
        self._drop_new_fd()
        if self.locks is not None:
            perm, unshared = self._saved
            self.locks.apply(perm, unshared, release=True)

    # -- I/O -------------------------------------------------------------------------
    def getlength(self) -> int:
        if self.is_regular:
            return os.fstat(self.fd).st_size
        return os.lseek(self.fd, 0, os.SEEK_END)

    def get_allocated_file_size(self) -> int:
        return os.fstat(self.fd).st_blocks * 512

    def pread(self, offset: int, length: int) -> bytes | bytearray:
        try:
            if self.direct:
                return self._direct_read(offset, length)
            data = os.pread(self.fd, length, offset)
            while len(data) < length:
                more = os.pread(self.fd, length - len(data), offset + len(data))
                if not more:
                    # Past the end of the file reads as zeros (file-posix does the same).
                    return data + bytes(length - len(data))
                data += more
            return data
        except OSError as exc:
            raise from_oserror(exc) from exc

    def _direct_read(self, offset: int, length: int) -> bytes:
        buf = mmap.mmap(-1, length)
        try:
            got = os.preadv(self.fd, [buf], offset)
            return bytes(buf[:got]) + bytes(length - got)
        finally:
            buf.close()

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview, flags: int) -> None:
        try:
            if self.direct:
                buf = mmap.mmap(-1, len(data))
                try:
                    buf[:] = data
                    os.pwritev(self.fd, [buf], offset)
                finally:
                    buf.close()
                return
            view = memoryview(data)
            while len(view):
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:
            raise from_oserror(exc) from exc

    def pwrite_zeroes(self, offset: int, length: int, flags: int) -> None:
        if not self.is_regular:
            raise BlockError("Operation not supported", errno.ENOTSUP)
        try:
            if flags & REQ_MAY_UNMAP:
                try:
                    fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
                    if offset + length > os.fstat(self.fd).st_size:
                        os.ftruncate(self.fd, offset + length)
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
            try:
                fallocate(self.fd, FALLOC_FL_ZERO_RANGE, offset, length)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
            raise BlockError("Operation not supported", errno.ENOTSUP)
        except OSError as exc:
            raise from_oserror(exc) from exc

    def pdiscard(self, offset: int, length: int) -> None:
        if not self.is_regular:
            raise BlockError("Operation not supported", errno.ENOTSUP)
        try:
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise BlockError("Operation not supported", errno.ENOTSUP) from exc
            raise from_oserror(exc) from exc

    def flush(self) -> None:
        if self.node.open_flags & O_NO_FLUSH:
            return
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise from_oserror(exc) from exc

    def truncate(self, size: int, exact: bool, prealloc: str) -> None:
        if self.is_regular:
            truncate_fd(self.fd, size, prealloc)
            return
        if prealloc != "off":
            raise BlockError("Preallocation mode 'full' unsupported for this non-regular file",
                             errno.ENOTSUP)
        current = self.getlength()
        if size > current or (exact and size != current):
            raise BlockError(
                "Cannot grow device files" if size > current else "Cannot shrink device files",
                errno.EINVAL,
            )

    def block_status(self, want_zero: bool, offset: int, length: int) -> BlockStatus:
        if not want_zero:
            return BlockStatus(BLOCK_DATA | BLOCK_OFFSET_VALID, length, offset, self.node)
        try:
            data = os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                # Trailing hole: nothing but zeros up to the end.
                return BlockStatus(BLOCK_ZERO | BLOCK_OFFSET_VALID, length, offset, self.node)
            return BlockStatus(BLOCK_DATA | BLOCK_OFFSET_VALID, length, offset, self.node)
        if data == offset:
            hole = os.lseek(self.fd, offset, os.SEEK_HOLE)
            pnum = hole - offset
            align = self.node.request_alignment
            # A partial block at EOF is rounded up to the request alignment only (1 B
            # for buffered I/O), as file-posix does: a 3-byte file maps as 3 data bytes.
            pnum = -(-pnum // align) * align
            return BlockStatus(BLOCK_DATA | BLOCK_OFFSET_VALID, min(pnum, length), offset,
                               self.node)
        return BlockStatus(BLOCK_ZERO | BLOCK_OFFSET_VALID, min(data - offset, length), offset,
                           self.node)

    def get_info(self) -> dict[str, int]:
        # file-posix answers with an all-zero BlockDriverInfo (qemu-io's `info` shows it).
        return {"cluster_size": 0, "vm_state_offset": 0}


@register
class HostDeviceDriver(FileDriver):
    """Block and character devices (QEMU's host_device), chosen by probing the path."""

    format_name = "host_device"
    protocol_name = "host_device"
    create_options = ()

    @classmethod
    def probe_device(cls, filename: str) -> int:
        try:
            mode = os.stat(strip_file_prefix(filename)).st_mode
        except OSError:
            return 0
        return 100 if stat.S_ISBLK(mode) or stat.S_ISCHR(mode) else 0

    def _check_file_type(self, mode: int) -> None:
        if not (stat.S_ISBLK(mode) or stat.S_ISCHR(mode)):
            raise BlockError(
                f"'host_device' driver requires '{self.filename}' to be either a character "
                "or block device",
                errno.EINVAL,
            )


def strip_file_prefix(filename: str) -> str:
    """'file:foo' names the local file 'foo'."""
    return filename[5:] if filename.startswith("file:") else filename
