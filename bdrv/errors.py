"""Errors raised by the block layer.

Every error carries an errno (so callers can map it to exit codes or to QMP error
classes) and a message worded the way QEMU 7.2 words it, because the tools print
these messages verbatim.
"""

from __future__ import annotations

import errno as errno_mod
import os


class BlockError(Exception):
    """A block layer failure: an errno and QEMU's message text."""

    def __init__(self, message: str, errno: int = errno_mod.EINVAL) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno

    def __str__(self) -> str:
        return self.message

    def prefixed(self, prefix: str) -> BlockError:
        """Return the same error with `prefix` in front, like error_prepend()."""
        return type(self)(prefix + self.message, self.errno)


class PermissionConflict(BlockError):
    """A permission request conflicts with another user of the node."""

    def __init__(self, message: str, errno: int = errno_mod.EPERM) -> None:
        super().__init__(message, errno)


class LockError(BlockError):
    """An image lock held by another process prevents the requested access."""

    def __init__(self, message: str, errno: int = errno_mod.EAGAIN) -> None:
        super().__init__(message, errno)


def strerror(err: int) -> str:
    """The C library's text for `err`, as QEMU's error_setg_errno prints it."""
    return os.strerror(err)


def from_oserror(exc: OSError, message: str | None = None) -> BlockError:
    """Wrap an OSError as '<message>: <strerror>' (or just strerror)."""
    err = exc.errno if exc.errno is not None else errno_mod.EIO
    text = strerror(err)
    return BlockError(f"{message}: {text}" if message else text, err)
