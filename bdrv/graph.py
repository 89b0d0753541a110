"""The node graph: nodes, the edges (children) between them, and permissions.

A `Node` is QEMU's BlockDriverState: one driver instance plus its children. A `Child`
is a BdrvChild, the edge from a parent (another node or a `Root` such as a tool's
BlockBackend) to a node, carrying the permissions the parent needs (`perm`) and the
ones it lets others have (`shared`).

Permission changes are transactions over the affected subgraph: every node checks
its new cumulative permissions (the file driver tests its image locks here), then
either all of them commit or all of them roll back.
"""

from __future__ import annotations

import errno
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bdrv.errors import BlockError, PermissionConflict
from bdrv.request import RequestLayer

if TYPE_CHECKING:
    from bdrv.driver import Driver

# Permissions (block-common.h). GRAPH_MOD no longer exists in 7.2.
PERM_CONSISTENT_READ = 0x01
PERM_WRITE = 0x02
PERM_WRITE_UNCHANGED = 0x04
PERM_RESIZE = 0x08
PERM_ALL = 0x0F
DEFAULT_PERM_PASSTHROUGH = PERM_CONSISTENT_READ | PERM_WRITE | PERM_WRITE_UNCHANGED | PERM_RESIZE
DEFAULT_PERM_UNCHANGED = PERM_ALL & ~DEFAULT_PERM_PASSTHROUGH

PERM_NAMES = {
    PERM_CONSISTENT_READ: "consistent read",
    PERM_WRITE: "write",
    PERM_WRITE_UNCHANGED: "write unchanged",
    PERM_RESIZE: "resize",
}

# Child roles (block-common.h BdrvChildRoleBits).
CHILD_DATA = 1 << 0
CHILD_METADATA = 1 << 1
CHILD_FILTERED = 1 << 2
CHILD_COW = 1 << 3
CHILD_PRIMARY = 1 << 4
CHILD_IMAGE = CHILD_DATA | CHILD_METADATA | CHILD_PRIMARY

# Open flags (BDRV_O_*), kept numerically identical to QEMU's.
O_NO_SHARE = 0x0001
O_RDWR = 0x0002
O_RESIZE = 0x0004
O_SNAPSHOT = 0x0008
O_TEMPORARY = 0x0010
O_NOCACHE = 0x0020
O_NATIVE_AIO = 0x0080
O_NO_BACKING = 0x0100
O_NO_FLUSH = 0x0200
O_COPY_ON_READ = 0x0400
O_INACTIVE = 0x0800
O_CHECK = 0x1000
O_ALLOW_RDWR = 0x2000
O_UNMAP = 0x4000
O_PROTOCOL = 0x8000
O_NO_IO = 0x10000
O_AUTO_RDONLY = 0x20000
O_CACHE_MASK = O_NOCACHE | O_NO_FLUSH


def perm_names(perm: int) -> str:
    """'write, resize' style list, in bit order, as bdrv_perm_names() builds it."""
    return ", ".join(name for bit, name in PERM_NAMES.items() if perm & bit)


_node_counter = itertools.count(1)
_NODE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,31}$")


def generate_node_name() -> str:
    """Unique automatic name; QEMU uses '#block' plus a counter."""
    return f"#block{next(_node_counter):03d}"


def check_node_name(name: str) -> None:
    if not _NODE_NAME_RE.match(name):
        raise BlockError(f"Invalid node-name: '{name}'")


class Parent:
    """Anything that can hold a Child edge: a Node or a Root."""

    def parent_description(self, child: Child) -> str:
        raise NotImplementedError


@dataclass(eq=False)
class Child:
    """An edge from `parent` to `node` with the parent's permission needs."""

    name: str
    role: int
    parent: Parent
    node: Node
    perm: int = 0
    shared: int = PERM_ALL

    def describe_parent(self) -> str:
        return self.parent.parent_description(self)


class Root(Parent):
    """A parent that is not a node: a tool's or device's BlockBackend."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def parent_description(self, child: Child) -> str:
        if self.name:
            return f"block device '{self.name}'"
        return "a block device"


@dataclass(eq=False)
class Node(Parent, RequestLayer):
    """A BlockDriverState: a driver, its options, children and parents."""

    driver: Driver
    node_name: str
    filename: str = ""
    open_flags: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    explicit_options: dict[str, Any] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    parents: list[Child] = field(default_factory=list)
    # Cumulative permissions currently granted (after a committed update).
    perm: int = 0
    shared: int = PERM_ALL
    request_alignment: int = 1
    # Set when the raw driver was chosen by probing: writes to block 0 restricted.
    probed_raw: bool = False
    auto_node_name: bool = False
    closed: bool = False
    # The blkdebug driver of a blkdebug node (bdrv_debug_event() on it reaches it),
    # else None: format drivers test their file node's before building an event, so
    # without blkdebug an event costs one attribute lookup.
    debug: Any = None

    # -- graph -----------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        return not self.open_flags & O_RDWR

    @property
    def file(self) -> Child | None:
        return self.child_by_name("file")

    @property
    def backing(self) -> Child | None:
        return self.child_by_name("backing")

    def child_by_name(self, name: str) -> Child | None:
        for child in self.children:
            if child.name == name:
                return child
        return None

    def parent_description(self, child: Child) -> str:
        return (f"node '{self.node_name}' (uses node '{child.node.node_name}' "
                f"as '{child.name}' child)")

    def attach_child(self, child_node: Node, name: str, role: int) -> Child:
        """Add an edge to `child_node` with the permissions our driver asks for."""
        perm, shared = _child_perm(self, child_node, name, role, self.perm, self.shared)
        child = Child(name, role, self, child_node, perm, shared)
        attach_child(child)
        self.children.append(child)
        return child

    def detach_child(self, child: Child) -> None:
        self.children.remove(child)
        detach_child(child)

    def walk(self) -> Iterator[Node]:
        """This node and every node below it (each once)."""
        seen: set[int] = set()
        stack = [self]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            yield node
            stack.extend(c.node for c in reversed(node.children))

    def close(self) -> None:
        """Close this node and the children only it used (refcount drops to 0).

        Iterative, so that a chain thousands of backing files deep closes without
        recursion; a child about to be closed too gets no permission update.
        """
        error: BaseException | None = None
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            if node.closed:
                continue
            node.closed = True
            try:
                node.driver.close()
            except BaseException as exc:  # finish closing the rest, then report
                error = error or exc
            for child in list(node.children):
                node.children.remove(child)
                child.node.parents.remove(child)
                if not child.node.parents:
                    stack.append(child.node)
                elif not child.node.closed:
                    try:
                        refresh_perms(child.node)
                    except BlockError:
                        pass  # giving up permissions cannot conflict
        if error is not None:
            raise error


# -- permission transactions -------------------------------------------------


def _cumulative(node: Node, edges: list[Child]) -> tuple[int, int]:
    perm, shared = 0, PERM_ALL
    for edge in edges:
        perm |= edge.perm
        shared &= edge.shared
    return perm, shared


def _check_edges(node: Node, edges: list[Child]) -> None:
    """Refuse if one parent needs what another parent does not share.

    Pairs are tried as bdrv_parent_perms_conflict() tries them: the newest parent
    first (7.2 puts new parents at the head of its list), as the one not sharing."""
    newest_first = list(reversed(edges))
    for other in newest_first:
        for user in newest_first:
            if other is user:
                continue
            clash = user.perm & ~other.shared
            if clash:
                raise PermissionConflict(
                    f"Permission conflict on node '{node.node_name}': permissions "
                    f"'{perm_names(clash)}' are both required by {user.describe_parent()} "
                    f"and unshared by {other.describe_parent()}."
                )


def _child_perm(parent: Node, child: Node, name: str, role: int, perm: int,
                shared: int) -> tuple[int, int]:
    """The driver's wish for a child edge; a force-share child shares everything."""
    cperm, cshared = parent.driver.child_perm(name, role, perm, shared)
    if getattr(child, "force_share", False):
        # bdrv_child_perm(): -U on the image makes its file node share all, so
        # another process's write lock does not stop a reader.
        cshared = PERM_ALL
    return cperm, cshared


def _new_child_perms(node: Node, perm: int, shared: int) -> list[tuple[Child, int, int]]:
    return [(c, *_child_perm(node, c.node, c.name, c.role, perm, shared))
            for c in node.children]


def _update_subtree(node: Node, edges: list[Child], checked: list[Node]) -> None:
    """Check `node` and everything below it with the parent edges they have.

    Walks the graph with an explicit stack (deep backing chains); each node's child
    edges get their new permissions before the children are checked.
    """
    assert edges is node.parents
    stack = [node]
    while stack:
        current = stack.pop()
        edges = current.parents
        _check_edges(current, edges)
        perm, shared = _cumulative(current, edges)
        if perm & (PERM_WRITE | PERM_WRITE_UNCHANGED) and current.read_only:
            raise _read_only_error(current)
        current.driver.check_perm(perm, shared)
        checked.append(current)
        current._pending_perm = (perm, shared)  # type: ignore[attr-defined]
        updates = _new_child_perms(current, perm, shared)
        for child, cperm, cshared in updates:
            child._pending = (child.perm, child.shared)  # type: ignore[attr-defined]
            child.perm, child.shared = cperm, cshared
        stack.extend(child.node for child, _, _ in reversed(updates))


def _read_only_error(node: Node) -> BlockError:
    """Write permissions on a read-only node (bdrv_node_refresh_perm's two texts).

    While a reopen is checking permissions (bdrv/reopen.py), `open_flags` already
    holds the new flags and `reopen_old_flags` the current ones.
    """
    old_flags = getattr(node, "reopen_old_flags", node.open_flags)
    if not old_flags & O_RDWR:
        return BlockError("Block node is read-only", errno.EPERM)
    return BlockError(f"Read-only block node '{node.node_name}' cannot support read-write "
                      "users", errno.EPERM)


def refresh_perms(node: Node) -> None:
    """Recompute permissions from `node`'s parents down, as one transaction."""
    checked: list[Node] = []
    try:
        _update_subtree(node, node.parents, checked)
    except BlockError:
        for done in reversed(checked):
            done.driver.abort_perm()
            for child in done.children:
                old = getattr(child, "_pending", None)
                if old is not None:
                    child.perm, child.shared = old
        raise
    for done in checked:
        done.perm, done.shared = done._pending_perm  # type: ignore[attr-defined]
        done.driver.set_perm(done.perm, done.shared)


def attach_child(child: Child) -> None:
    """Link `child` into its node's parents and update permissions, or undo."""
    child.node.parents.append(child)
    try:
        refresh_perms(child.node)
    except BlockError:
        child.node.parents.remove(child)
        raise


def detach_child(child: Child) -> None:
    child.node.parents.remove(child)
    if not child.node.closed:
        try:
            refresh_perms(child.node)
        except BlockError:
            pass  # giving up permissions cannot conflict; locks are best effort


def set_child_perm(child: Child, perm: int, shared: int) -> None:
    """Change one edge's permissions transactionally (e.g. on reopen)."""
    old = (child.perm, child.shared)
    child.perm, child.shared = perm, shared
    try:
        refresh_perms(child.node)
    except BlockError:
        child.perm, child.shared = old
        refresh_perms(child.node)
        raise
