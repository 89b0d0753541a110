"""BlockBackend: how a user (a tool, a device) holds the root of a node graph.

It owns the root edge and its permissions, checks request bounds against the
device length (out-of-range requests are EIO, as blk_check_byte_request does), and
offers the convenience calls the tools need.
"""

from __future__ import annotations

import errno
from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import (
    CHILD_IMAGE,
    O_NO_SHARE,
    O_RDWR,
    O_RESIZE,
    PERM_ALL,
    PERM_CONSISTENT_READ,
    PERM_RESIZE,
    PERM_WRITE,
    PERM_WRITE_UNCHANGED,
    Child,
    Node,
    Root,
    attach_child,
)
from bdrv.open import Warn, _default_warn, forget_node_name, open_node


class Backend:
    """A root user of one node, like QEMU's BlockBackend."""

    def __init__(self, node: Node, perm: int, shared: int, name: str = "") -> None:
        self.root = Root(name)
        self.node = node
        self.child = Child("root", CHILD_IMAGE, self.root, node, perm, shared)
        attach_child(self.child)

    @classmethod
    def open(
        cls,
        filename: str | None,
        options: dict[str, Any] | None = None,
        flags: int = 0,
        *,
        warn: Warn = _default_warn,
    ) -> Backend:
        """Open an image and take the permissions `flags` imply (blk_new_open)."""
        perm = PERM_CONSISTENT_READ
        if flags & O_RDWR:
            perm |= PERM_WRITE
        if flags & O_RESIZE:
            perm |= PERM_RESIZE
        shared = PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED if flags & O_NO_SHARE else PERM_ALL
        node = open_node(filename, options, flags, warn=warn)
        try:
            return cls(node, perm, shared)
        except BaseException:
            close_graph(node)
            raise

    # -- requests with device bounds ---------------------------------------------
    def getlength(self) -> int:
        return self.node.getlength()

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise BlockError("Input/output error", errno.EIO)
        total = self.getlength()
        if offset > total or total - offset < length:
            raise BlockError("Input/output error", errno.EIO)

    def pread(self, offset: int, length: int, flags: int = 0) -> bytes:
        self._check(offset, length)
        return self.node.pread(offset, length, flags)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        self._check(offset, len(data))
        self._need(PERM_WRITE)
        self.node.pwrite(offset, data, flags)

    def pwrite_zeroes(self, offset: int, length: int, flags: int = 0) -> None:
        self._check(offset, length)
        self._need(PERM_WRITE)
        self.node.pwrite_zeroes(offset, length, flags)

    def pdiscard(self, offset: int, length: int) -> None:
        self._check(offset, length)
        self._need(PERM_WRITE)
        self.node.pdiscard(offset, length)

    def flush(self) -> None:
        self.node.flush()

    def truncate(self, size: int, exact: bool = False, prealloc: str = "off") -> None:
        self._need(PERM_RESIZE)
        self.node.truncate(size, exact, prealloc)

    def _need(self, perm: int) -> None:
        if not self.child.perm & perm:
            # QEMU asserts here; a clear error is kinder.
            raise BlockError("Permission denied", errno.EPERM)

    def set_perm(self, perm: int, shared: int) -> None:
        from bdrv.graph import set_child_perm

        set_child_perm(self.child, perm, shared)

    def close(self) -> None:
        """Drop the root edge and close every node nobody else uses."""
        node = self.node
        if self.child in node.parents:
            node.parents.remove(self.child)
        if not node.parents:
            close_graph(node)


def close_graph(node: Node) -> None:
    for each in list(node.walk()):
        forget_node_name(each)
    node.close()
