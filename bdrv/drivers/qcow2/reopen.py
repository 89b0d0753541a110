"""qcow2 reopen: every runtime option may change, as in 7.2's qcow2_reopen_prepare()
(qcow2_update_options_prepare/commit).

Prepare takes the qcow2 options out of the reopen's pending options, checks them as
an open does (options.parse_runtime_options) and stages the result; it also marks the
image clean when lazy refcounts are switched off or the node becomes read-only.
Commit applies the staged options; abort drops them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bdrv.graph import O_RDWR, O_UNMAP

from .options import RUNTIME_OPTIONS, RuntimeOptions, parse_runtime_options
from .refcount import DISCARD_OTHER, DISCARD_REQUEST

if TYPE_CHECKING:
    from bdrv.reopen import ReopenState

    from .driver import Qcow2Driver

def reopen_prepare(drv: Qcow2Driver, state: ReopenState) -> None:
    pending = state.unhandled
    opts = {key: pending.pop(key) for key in list(pending) if key in RUNTIME_OPTIONS}
    parsed = parse_runtime_options(dict(opts), drv.hdr, state.flags)
    node = drv.node
    if node.open_flags & O_RDWR:
        if drv.lazy_refcounts and not parsed.lazy_refcounts:
            drv.mark_clean()
        if not state.flags & O_RDWR:
            drv.mark_clean()
    state.driver_data = parsed


def reopen_commit(drv: Qcow2Driver, state: ReopenState) -> None:
    parsed: RuntimeOptions = state.driver_data
    state.driver_data = None
    drv.lazy_refcounts = parsed.lazy_refcounts
    drv.overlap_mask = parsed.overlap_mask
    request = parsed.pass_discard_request
    drv.rc.discard_passthrough.update({
        DISCARD_REQUEST: request if request is not None else bool(state.flags & O_UNMAP),
        DISCARD_OTHER: parsed.pass_discard_other,
    })


def reopen_abort(drv: Qcow2Driver, state: ReopenState) -> None:
    state.driver_data = None


def child_replaced(drv: Qcow2Driver, name: str | None) -> None:
    file = drv.node.file
    if name != "file" or file is None:
        return
    for holder in (drv.map, drv.map.cache, drv.rc):
        holder.file = file.node


_OVERLAP_KEYS = tuple(k for k in RUNTIME_OPTIONS if k.startswith("overlap-check"))


def join_options(options: dict[str, Any], old: dict[str, Any]) -> None:
    """qcow2_join_options(): old values fill in what `options` leaves out, except that a
    new overlap template drops every old overlap option and a new cache-size the old
    l2/refcount cache sizes (and an old cache-size gives way to new l2 and refcount
    sizes)."""
    old = dict(old)
    if "overlap-check" in options or "overlap-check.template" in options:
        for key in _OVERLAP_KEYS:
            old.pop(key, None)
    new_total = "cache-size" in options
    if new_total:
        old.pop("l2-cache-size", None)
        old.pop("refcount-cache-size", None)
    for key, value in old.items():
        options.setdefault(key, value)
    if not new_total and "cache-size" in options and "l2-cache-size" in options and \
            "refcount-cache-size" in options:
        del options["cache-size"]


class Qcow2Reopen:
    """The reopen hooks of Qcow2Driver (a mixin placed before Driver)."""

    # qcow2's mutable_opts: a reopen may leave any runtime option out (reset it).
    mutable_options = RUNTIME_OPTIONS

    def reopen_prepare(self, state: ReopenState) -> None:
        reopen_prepare(self, state)  # type: ignore[arg-type]

    def reopen_commit(self, state: ReopenState) -> None:
        reopen_commit(self, state)  # type: ignore[arg-type]

    def reopen_abort(self, state: ReopenState) -> None:
        reopen_abort(self, state)  # type: ignore[arg-type]

    def join_options(self, options: dict[str, Any], old: dict[str, Any]) -> None:
        join_options(options, old)

    def child_replaced(self, name: str | None) -> None:
        """A reopen gave the node another file child: metadata goes there now."""
        child_replaced(self, name)  # type: ignore[arg-type]
