"""Reopen: change the options of open nodes as one transaction.

Follows QEMU 7.2's bdrv_reopen_queue_child() / bdrv_reopen_multiple():

- `ReopenQueue.add(node, options)` queues a node with its new options and, recursively,
  every child that inherits its options from it (children opened implicitly with the
  node, not nodes referenced by name). Options rank, highest first: the ones passed in,
  the node's old explicit options (with `keep_old_opts`), those inherited from the
  parent, the node's old effective options (with `keep_old_opts`).
- `ReopenQueue.run()` flushes every queued node, prepares every node (generic options,
  then the driver's `reopen_prepare`, "backing is missing", then `backing`/`file`
  naming another node: that child is swapped at once, without permissions, so the
  nodes prepared later see the new graph; then "Cannot change the option '...'" for
  whatever is left and differs from the current value), updates permissions (and with
  them the file driver's image locks and file descriptor) with the new flags on the new
  graph, and then commits every node and closes the children nobody uses any more, or,
  on any error, puts the old children back, aborts every node prepared so far and
  leaves the graph as it was.

Each node remembers QEMU's two option sets: `explicit_options` (what the user gave) and
`options` (everything in effect). Nodes fresh from open.py carry looser versions of
these; `current_options()` / `current_explicit_options()` derive QEMU's from them until a
reopen has stored the exact ones (`node.options_exact`).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import (
    CHILD_COW,
    CHILD_DATA,
    CHILD_METADATA,
    CHILD_PRIMARY,
    O_AUTO_RDONLY,
    O_CACHE_MASK,
    O_COPY_ON_READ,
    O_NO_BACKING,
    O_NO_FLUSH,
    O_NO_IO,
    O_NOCACHE,
    O_PROTOCOL,
    O_RDWR,
    O_SNAPSHOT,
    O_TEMPORARY,
    O_UNMAP,
    PERM_ALL,
    Child,
    Node,
    refresh_perms,
)
from bdrv.options import parse_bool, qdict_order

# bdrv_runtime_opts: handled by the block layer for every node.
_BOOL_OPTIONS = ("cache.direct", "cache.no-flush", "read-only", "auto-read-only", "force-share")
_GENERIC_OPTIONS = ("node-name", "driver", "discard", "detect-zeroes", *_BOOL_OPTIONS)
# Generic options that must be unchanged: put back for the final comparison.
_FIXED_GENERIC = ("node-name", "driver", "force-share")
# May be left out of a reopen without keep_old_opts (bdrv_reset_options_allowed).
_COMMON_RESETTABLE = ("node-name", "discard", "cache.direct", "cache.no-flush", "read-only",
                      "auto-read-only", "detect-zeroes")
# What a child takes over from its parent unless set itself (bdrv_inherited_options).
_INHERITED = ("cache.direct", "cache.no-flush", "force-share", "read-only", "auto-read-only",
              "discard")
_DETECT_ZEROES = ("off", "on", "unmap")
# The role of a `file` child given to a node that had none.
CHILD_FILE_DEFAULT = CHILD_DATA | CHILD_METADATA | CHILD_PRIMARY


@dataclass(eq=False)
class ReopenState:
    """One queued node (QEMU's BDRVReopenState)."""

    node: Node
    # The complete new option set (becomes node.options on commit).
    options: dict[str, Any]
    explicit_options: dict[str, Any]
    flags: int
    detect_zeroes: str = "off"
    backing_missing: bool = False
    # During prepare: the options nobody has handled yet. Drivers pop what they change.
    unhandled: dict[str, Any] = field(default_factory=dict)
    prepared: bool = False
    # Whatever a driver stages between prepare and commit/abort.
    driver_data: Any = None


class ReopenQueue:
    """Nodes to reopen together: all of them change, or none does."""

    def __init__(self, lookup: Callable[[str], Node | None] | None = None) -> None:
        self.entries: list[ReopenState] = []
        # Finds a node by name for `backing`/`file` references (bdrv_lookup_bs).
        self.lookup = lookup or _named_node
        # Children replaced so far, in order: (parent, old edge, its index in the
        # parent's children and in the old node's parents, new edge).
        self.swaps: list[tuple[Node, Child | None, int, int, Child | None]] = []

    def find(self, node: Node) -> ReopenState | None:
        for state in self.entries:
            if state.node is node:
                return state
        return None

    def new_flags(self, node: Node) -> int:
        """bdrv_reopen_get_flags(): the flags `node` will have after the reopen."""
        state = self.find(node)
        return state.flags if state is not None else node.open_flags

    # -- queueing -----------------------------------------------------------------
    def add(self, node: Node, options: dict[str, Any] | None = None,
            keep_old_opts: bool = True) -> None:
        """bdrv_reopen_queue(): queue `node` (and its inheriting children)."""
        self._add(node, dict(options or {}), None, keep_old_opts)

    def _add(self, node: Node, options: dict[str, Any],
             parent: tuple[Node, int, dict[str, Any], int] | None,
             keep_old_opts: bool) -> None:
        state = self.find(node)
        if state is not None or keep_old_opts:
            old = state.explicit_options if state is not None else \
                current_explicit_options(node)
            _join(node, options, old)
        explicit = dict(options)
        if parent is not None:
            parent_node, role, parent_options, parent_flags = parent
            flags = _inherit(role, parent_node, options, parent_options, parent_flags)
        else:
            flags = node.open_flags
        if keep_old_opts:
            _join(node, options, current_options(node))
        flags = _flags_from_options(flags, options) & ~O_PROTOCOL
        if state is None:
            state = ReopenState(node, options, explicit, flags)
            self.entries.append(state)
        else:
            state.options, state.explicit_options, state.flags = options, explicit, flags
        if not keep_old_opts:
            state.backing_missing = "backing" not in options and \
                "backing.driver" not in options
        for child in node.children:
            if not _inherits_from(child.node, node):
                continue
            child_keep_old = keep_old_opts
            child_options: dict[str, Any] = {}
            if child.name in options:
                if options[child.name] != child.node.node_name:
                    continue  # replaced or dropped: the old child keeps its options
                child_keep_old = True
            else:
                _extract(explicit, child.name)
                child_options = _extract(options, child.name)
            self._add(child.node, child_options, (node, child.role, options, flags),
                      child_keep_old)

    # -- the transaction ----------------------------------------------------------
    def run(self) -> None:
        """bdrv_reopen_multiple(): prepare all, update permissions, commit all or abort."""
        for state in self.entries:
            try:
                state.node.flush()
            except BlockError as exc:
                raise BlockError(f"Error flushing drive: {_strerror(exc)}", exc.errno) from exc
        try:
            for state in self.entries:
                _prepare(self, state)
                state.prepared = True
            self._refresh_perms()
        except BaseException:
            self._undo_swaps()
            for state in self.entries:
                if state.prepared:
                    state.node.driver.reopen_abort(state)
                    state.prepared = False
            raise
        for state in reversed(self.entries):
            _commit(state)
        self._finish_swaps()
        from bdrv.open import refresh_filename

        for state in self.entries:
            refresh_filename(state.node)

    # -- replacing children (bdrv_reopen_parse_file_or_backing) ------------------------
    def replace_child(self, node: Node, name: str, new: Node | None) -> None:
        """Swap `node`'s child `name` for `new` (None: drop it) without permissions;
        later nodes of the queue see the new graph, abort puts the old one back."""
        old = node.child_by_name(name)
        if new is not None:
            if name == "backing" and not node.driver.supports_backing:
                raise BlockError(f"Driver '{node.driver.format_name}' of node "
                                 f"'{node.node_name}' does not support backing files")
            if any(each is node for each in new.walk()):
                raise BlockError(f"Making '{new.node_name}' a {name} child of "
                                 f"'{node.node_name}' would create a cycle")
        index = parent_index = -1
        if old is not None:
            index = node.children.index(old)
            parent_index = old.node.parents.index(old)
            node.children.remove(old)
            old.node.parents.remove(old)
        edge: Child | None = None
        if new is not None:
            role = old.role if old is not None else (CHILD_COW if name == "backing"
                                                     else CHILD_FILE_DEFAULT)
            edge = Child(name, role, node, new, 0, PERM_ALL)
            node.children.append(edge)
            new.parents.append(edge)
        self.swaps.append((node, old, index, parent_index, edge))

    def _undo_swaps(self) -> None:
        for node, old, index, parent_index, edge in reversed(self.swaps):
            if edge is not None:
                node.children.remove(edge)
                edge.node.parents.remove(edge)
            if old is not None:
                node.children.insert(index, old)
                old.node.parents.insert(parent_index, old)
        self.swaps = []

    def _dropped(self) -> list[Node]:
        return [old.node for _node, old, _i, _p, _e in self.swaps if old is not None]

    def _finish_swaps(self) -> None:
        """After commit: drivers learn of their new children; nodes nobody uses any
        more are closed (the reference their old parent held was the last)."""
        from bdrv.open import forget_node_name

        for node, _old, _i, _p, edge in self.swaps:
            hook = getattr(node.driver, "child_replaced", None)
            if callable(hook):
                hook(edge.name if edge is not None else None)
        for dropped in self._dropped():
            if dropped.parents or dropped.closed:
                continue
            nodes = list(dropped.walk())
            dropped.close()
            for each in nodes:
                if each.closed:
                    forget_node_name(each)
        self.swaps = []

    def _tops(self) -> list[Node]:
        """Queued nodes with no queued node above them: permission updates start there."""
        below: set[int] = set()
        for state in self.entries:
            for node in state.node.walk():
                if node is not state.node:
                    below.add(id(node))
        tops = [s.node for s in self.entries if id(s.node) not in below]
        # A replaced child gives up what its old parent needed.
        tops += [n for n in self._dropped() if n.parents and id(n) not in below
                 and all(n is not t for t in tops)]
        return tops

    def _refresh_perms(self) -> None:
        """Recompute permissions as if the new flags were in effect (file locks, fds)."""
        for state in self.entries:
            node = state.node
            node.reopen_old_flags = node.open_flags  # type: ignore[attr-defined]
            node.open_flags = state.flags
        try:
            for top in self._tops():
                refresh_perms(top)
        except BaseException:
            for state in self.entries:
                state.node.open_flags = state.node.reopen_old_flags  # type: ignore[attr-defined]
            # Back to the old graph and flags, and the permissions they had.
            attached = [edge.node for *_rest, edge in self.swaps if edge is not None]
            self._undo_swaps()
            for top in [*self._tops(), *attached]:
                try:
                    refresh_perms(top)
                except BlockError:
                    pass
            raise
        finally:
            for state in self.entries:
                del state.node.reopen_old_flags  # type: ignore[attr-defined]


def reopen(node: Node, options: dict[str, Any] | None = None,
           keep_old_opts: bool = True) -> None:
    """bdrv_reopen(): reopen `node` and its inheriting children with `options`."""
    queue = ReopenQueue()
    queue.add(node, options, keep_old_opts)
    queue.run()


# -- the options a node has now ----------------------------------------------------


def _is_child_key(node: Node, key: str) -> bool:
    for name in {c.name for c in node.children} | {"file", "backing"}:
        if key == name or key.startswith(name + "."):
            return True
    return False


def _inheriting_parent(node: Node) -> tuple[Node, str] | None:
    for edge in node.parents:
        parent = edge.parent
        if isinstance(parent, Node) and _inherits_from(node, parent):
            return parent, edge.name
    return None


def _inherits_from(child: Node, parent: Node) -> bool:
    """bs->inherits_from: the child was opened along with (and by) this parent."""
    marked = getattr(child, "inherits_from", None)
    if marked is not None:
        return marked is parent
    # open.py opens every child implicitly; a child shared by several parents was not.
    return len(child.parents) == 1 and child.parents[0].parent is parent


def current_explicit_options(node: Node) -> dict[str, Any]:
    """bs->explicit_options: what was set for this node itself, not inherited."""
    if getattr(node, "options_exact", False):
        return dict(node.explicit_options)
    opts = {k: v for k, v in node.explicit_options.items() if not _is_child_key(node, k)}
    parent = _inheriting_parent(node)
    if parent is not None:
        parent_node, name = parent
        given = parent_node.explicit_options
        for key in _INHERITED:
            if key in opts and f"{name}.{key}" not in given:
                del opts[key]  # open.py merged the inherited value into the explicit ones
    return opts


def current_options(node: Node) -> dict[str, Any]:
    """bs->options: every option in effect, including the ones flags imply."""
    if getattr(node, "options_exact", False):
        return dict(node.options)
    opts = {k: v for k, v in node.options.items() if not _is_child_key(node, k)}
    drv = node.driver
    opts.setdefault("driver", drv.format_name)
    if drv.protocol_name is not None:
        opts.setdefault("filename", getattr(drv, "filename", "") or node.filename)
    flags = node.open_flags
    opts.setdefault("cache.direct", bool(flags & O_NOCACHE))
    opts.setdefault("cache.no-flush", bool(flags & O_NO_FLUSH))
    opts.setdefault("read-only", not flags & O_RDWR)
    opts.setdefault("auto-read-only", bool(flags & O_AUTO_RDONLY))
    if _inheriting_parent(node) is not None:
        opts.setdefault("discard", "unmap")
    return opts


# -- queue helpers -------------------------------------------------------------------


def _join(node: Node, options: dict[str, Any], old: dict[str, Any]) -> None:
    """bdrv_join_options(): old values fill in what `options` does not set (the
    driver's join_options decides, if it has one)."""
    join = getattr(node.driver, "join_options", None)
    if callable(join):
        join(options, old)
        return
    for key, value in old.items():
        options.setdefault(key, value)


def _extract(options: dict[str, Any], name: str) -> dict[str, Any]:
    prefix = name + "."
    child = {k[len(prefix):]: v for k, v in options.items() if k.startswith(prefix)}
    for key in [k for k in options if k.startswith(prefix)]:
        del options[key]
    return child


def _bool(options: dict[str, Any], key: str) -> bool:
    """A boolean option as the queue reads it: unparsable counts as unset (false)."""
    if key not in options:
        return False
    try:
        return parse_bool(key, options[key])
    except BlockError:
        return False


def _flags_from_options(flags: int, options: dict[str, Any]) -> int:
    """update_flags_from_options()."""
    flags &= ~(O_CACHE_MASK | O_RDWR | O_AUTO_RDONLY)
    if _bool(options, "cache.no-flush"):
        flags |= O_NO_FLUSH
    if _bool(options, "cache.direct"):
        flags |= O_NOCACHE
    if not _bool(options, "read-only"):
        flags |= O_RDWR
    if _bool(options, "auto-read-only"):
        flags |= O_AUTO_RDONLY
    return flags


def _inherit(role: int, parent: Node, options: dict[str, Any],
             parent_options: dict[str, Any], parent_flags: int) -> int:
    """bdrv_inherited_options(): defaults and flags a child takes from its parent."""
    flags = parent_flags
    for key in ("cache.direct", "cache.no-flush", "force-share"):
        if key not in options and key in parent_options:
            options[key] = parent_options[key]
    if role & CHILD_COW:
        options.setdefault("read-only", "on")
        options.setdefault("auto-read-only", "off")
    else:
        for key in ("read-only", "auto-read-only"):
            if key not in options and key in parent_options:
                options[key] = parent_options[key]
    options.setdefault("discard", "unmap")
    flags &= ~(O_SNAPSHOT | O_NO_BACKING | O_COPY_ON_READ)
    if role & CHILD_METADATA:
        flags &= ~O_NO_IO
    if role & CHILD_COW:
        flags &= ~O_TEMPORARY
    return flags


# -- prepare / commit ------------------------------------------------------------------


def _prepare(queue: ReopenQueue, state: ReopenState) -> None:
    """bdrv_reopen_prepare(): check everything, change nothing that abort can't undo."""
    node = state.node
    drv = node.driver
    pending = dict(state.options)
    generic: dict[str, Any] = {}
    for key in qdict_order(list(pending)):
        if key not in _GENERIC_OPTIONS:
            continue
        value = pending.pop(key)
        if key in _BOOL_OPTIONS:
            parse_bool(key, value)
        generic[key] = value
    discard = generic.get("discard")
    if discard is not None:
        if discard in ("off", "ignore"):
            state.flags &= ~O_UNMAP
        elif discard in ("on", "unmap"):
            state.flags |= O_UNMAP
        else:
            raise BlockError("Invalid discard option")
    state.detect_zeroes = parse_detect_zeroes(generic.get("detect-zeroes"), state.flags)
    for key in _FIXED_GENERIC:
        if key in generic:
            # Put back as QemuOpts strings: a QMP boolean never equals them.
            pending[key] = _opt_string(generic[key])
    read_only = not state.flags & O_RDWR
    if read_only and getattr(node, "copy_on_read", False):
        raise BlockError(f"Can't set node '{node.node_name}' to r/o with copy-on-read enabled")
    if not drv.supports_reopen:
        raise BlockError(f"Block format '{drv.format_name}' used by node '{node.node_name}' "
                         "does not support reopening files")
    _check_reset_allowed(node, pending)
    state.unhandled = pending
    drv.reopen_prepare(state)
    try:
        _check_backing_missing(state)
        for name in ("backing", "file"):
            _parse_child(queue, state, name)
        _check_unchanged(state)
    except BaseException:
        drv.reopen_abort(state)
        raise


def _opt_string(value: Any) -> Any:
    """A value as qemu_opts_to_qdict() gives it back: booleans as on/off, numbers as
    decimal strings."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return value


def parse_detect_zeroes(value: Any, flags: int) -> str:
    """bdrv_parse_detect_zeroes()."""
    if value is None:
        return "off"
    if value not in _DETECT_ZEROES:
        raise BlockError(f"invalid parameter value: {value}")
    if value == "unmap" and not flags & O_UNMAP:
        raise BlockError("setting detect-zeroes to unmap is not allowed without setting "
                         "discard operation to unmap")
    return str(value)


def _check_reset_allowed(node: Node, pending: dict[str, Any]) -> None:
    """bdrv_reset_options_allowed(): an explicit option left out must be resettable."""
    mutable = node.driver.mutable_options
    for key in current_explicit_options(node):
        if key not in pending and key not in _COMMON_RESETTABLE and key not in mutable:
            raise BlockError(f"Option '{key}' cannot be reset to its default value")


def _check_backing_missing(state: ReopenState) -> None:
    """`backing` left out of a reopen: only fine if there is nothing to detach."""
    node = state.node
    backing_file = str(getattr(node, "backing_file", None) or "")
    if node.driver.supports_backing and state.backing_missing and (
            node.backing is not None or backing_file):
        raise BlockError(f"backing is missing for '{node.node_name}'")


def _parse_child(queue: ReopenQueue, state: ReopenState, name: str) -> None:
    """bdrv_reopen_parse_file_or_backing(): `backing` (a node name or null) or `file`
    (a node name) may name another node, which replaces the current child."""
    pending = state.unhandled
    if name not in pending:
        return
    value = pending.pop(name)
    node = state.node
    new: Node | None = None
    if value is not None:
        new = queue.lookup(str(value))
        if new is None:
            raise BlockError(f"Cannot find device='' nor node-name='{value}'", errno.ENODEV)
    old = node.child_by_name(name)
    if (old.node if old is not None else None) is new:
        return
    queue.replace_child(node, name, new)


def _named_node(name: str) -> Node | None:
    from bdrv.open import _named_nodes

    return _named_nodes.get(name)


def _same(new: Any, old: Any) -> bool:
    """qobject_is_equal(): same type and value ("on" is not true)."""
    return old is not None and type(new) is type(old) and new == old


def _check_unchanged(state: ReopenState) -> None:
    old_options = current_options(state.node)
    for key in qdict_order(list(state.unhandled)):
        new = state.unhandled[key]
        child = state.node.child_by_name(key)
        if isinstance(new, str) and child is not None and child.node.node_name == new:
            continue
        if not _same(new, old_options.get(key)):
            raise BlockError(f"Cannot change the option '{key}'")


def _commit(state: ReopenState) -> None:
    """bdrv_reopen_commit(): the driver's staged changes, then the node's options."""
    node = state.node
    node.driver.reopen_commit(state)
    state.prepared = False
    options = {k: v for k, v in state.options.items()
               if k not in {c.name for c in node.children} and k != "backing"}
    explicit = {k: v for k, v in state.explicit_options.items()
                if k not in {c.name for c in node.children} and k != "backing"}
    node.options, node.explicit_options = options, explicit
    node.options_exact = True  # type: ignore[attr-defined]
    node.open_flags = state.flags
    node.detect_zeroes = state.detect_zeroes  # type: ignore[attr-defined]


def _strerror(exc: BlockError) -> str:
    import os

    return os.strerror(exc.errno or errno.EIO)
