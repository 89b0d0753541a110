"""Image locking, byte-compatible with QEMU 7.2's file-posix.

QEMU takes open-file-description (OFD) locks on single bytes of the image file:
byte 100 + i while holding permission bit i, and byte 200 + i while refusing to
share permission bit i. All locks are shared (read) locks; conflicts are found by
testing for an exclusive lock. Using the same bytes means bdrv and QEMU see each
other's locks.
"""

from __future__ import annotations

import errno
import fcntl
import struct

from bdrv.errors import BlockError, LockError
from bdrv.graph import PERM_ALL, PERM_NAMES

PERM_LOCK_BASE = 100
SHARED_LOCK_BASE = 200

# Linux values; the fcntl module has them from Python 3.9 but spell them out for mypy.
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)

# struct flock on Linux x86-64/aarch64: short type, short whence, off_t start, off_t len,
# pid_t pid (plus padding).
_FLOCK = struct.Struct("@hhqqi4x")


def _flock(lock_type: int, start: int) -> bytes:
    return _FLOCK.pack(lock_type, 0, start, 1, 0)


def lock_byte(fd: int, start: int) -> None:
    fcntl.fcntl(fd, F_OFD_SETLK, _flock(fcntl.F_RDLCK, start))


def unlock_byte(fd: int, start: int) -> None:
    fcntl.fcntl(fd, F_OFD_SETLK, _flock(fcntl.F_UNLCK, start))


def byte_is_locked_by_other(fd: int, start: int) -> bool:
    """True if another open file description holds a lock on `start`."""
    result = fcntl.fcntl(fd, F_OFD_GETLK, _flock(fcntl.F_WRLCK, start))
    lock_type = _FLOCK.unpack(result)[0]
    return bool(lock_type != fcntl.F_UNLCK)


def ofd_locks_supported(fd: int) -> bool:
    try:
        byte_is_locked_by_other(fd, PERM_LOCK_BASE)
    except OSError:
        return False
    return True


class ImageLocks:
    """The lock bytes one open file description holds on an image."""

    def __init__(self, fd: int, filename: str) -> None:
        self.fd = fd
        self.filename = filename
        self.locked_perm = 0
        self.locked_unshared = 0

    def apply(self, perm: int, unshared: int, release: bool) -> None:
        """Hold locks for `perm` and `unshared`; drop others only if `release`."""
        for bit in PERM_NAMES:
            index = bit.bit_length() - 1
            for want, held_attr, base in (
                (perm, "locked_perm", PERM_LOCK_BASE),
                (unshared, "locked_unshared", SHARED_LOCK_BASE),
            ):
                held = getattr(self, held_attr)
                if want & bit and not held & bit:
                    try:
                        lock_byte(self.fd, base + index)
                    except OSError as exc:
                        raise BlockError(f"Failed to lock byte {base + index}",
                                         exc.errno or errno.EIO) from exc
                    setattr(self, held_attr, held | bit)
                elif release and not want & bit and held & bit:
                    try:
                        unlock_byte(self.fd, base + index)
                    except OSError as exc:
                        raise BlockError(f"Failed to unlock byte {base + index}",
                                         exc.errno or errno.EIO) from exc
                    setattr(self, held_attr, held & ~bit)

    def check(self, perm: int, shared: int) -> None:
        """Refuse if another process unshares what we need or holds what we unshare."""
        for bit, name in PERM_NAMES.items():
            index = bit.bit_length() - 1
            if perm & bit and byte_is_locked_by_other(self.fd, SHARED_LOCK_BASE + index):
                raise self._conflict(f'Failed to get "{name}" lock')
        for bit, name in PERM_NAMES.items():
            index = bit.bit_length() - 1
            if not shared & bit and byte_is_locked_by_other(self.fd, PERM_LOCK_BASE + index):
                raise self._conflict(f'Failed to get shared "{name}" lock')

    def _conflict(self, message: str) -> LockError:
        hint = f"Is another process using the image [{self.filename}]?\n"
        return LockError(message, errno.EAGAIN, hint=hint)

    def release_all(self) -> None:
        self.apply(0, 0, release=True)


def unshared_bits(shared: int) -> int:
    return ~shared & PERM_ALL
