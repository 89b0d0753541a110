"""Errors raised by the block layer.

Every error carries an errno (so callers can map it to exit codes or to QMP error
classes) and a message worded the way QEMU 7.2 words it, because the tools print
these messages verbatim.
"""

from __future__ import annotations

import copy
import errno as errno_mod
import os
from collections.abc import Sequence


class BlockError(Exception):
    """A block layer failure: an errno and QEMU's message text.

    Some QEMU errors span several lines: `extra` lines get the program prefix as a
    second error_report() would; `hint` (error_append_hint) is printed verbatim after
    them and normally ends in a newline. Tools print errors with `render()`.
    """

    def __init__(
        self,
        message: str,
        errno: int = errno_mod.EINVAL,
        *,
        extra: Sequence[str] = (),
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.extra = tuple(extra)
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def prefixed(self, prefix: str) -> BlockError:
        """The same error with `prefix` in front of the first line (error_prepend)."""
        clone = copy.copy(self)
        clone.message = prefix + self.message
        clone.args = (clone.message,)
        return clone

    def render(self, prog: str) -> str:
        """The exact stderr text QEMU writes for this error, e.g. prog="qemu-img"."""
        lines = [f"{prog}: {self.message}\n"]
        lines += [f"{prog}: {line}\n" for line in self.extra]
        return "".join(lines) + self.hint


class PermissionConflict(BlockError):
    """A permission request conflicts with another user of the node."""

    def __init__(self, message: str, errno: int = errno_mod.EPERM) -> None:
        super().__init__(message, errno)


class LockError(BlockError):
    """An image lock held by another process prevents the requested access."""


def strerror(err: int) -> str:
    """The C library's text for `err`, as QEMU's error_setg_errno prints it."""
    return os.strerror(err)


def from_oserror(exc: OSError, message: str | None = None) -> BlockError:
    """Wrap an OSError as '<message>: <strerror>' (or just strerror)."""
    err = exc.errno if exc.errno is not None else errno_mod.EIO
    text = strerror(err)
    return BlockError(f"{message}: {text}" if message else text, err)
