"""Permissions over the node graph: conflicts, transactions, roll-back."""

from __future__ import annotations

from typing import Any

import pytest

from bdrv.driver import Driver
from bdrv.errors import BlockError, PermissionConflict
from bdrv.graph import (
    CHILD_COW,
    CHILD_FILTERED,
    CHILD_IMAGE,
    O_RDWR,
    PERM_ALL,
    PERM_CONSISTENT_READ,
    PERM_RESIZE,
    PERM_WRITE,
    PERM_WRITE_UNCHANGED,
    Child,
    Node,
    Root,
    attach_child,
    perm_names,
    set_child_perm,
)


class RecordingDriver(Driver):
    format_name = "recording"

    def __init__(self, node: Any, refuse: int = 0) -> None:
        super().__init__(node)
        self.refuse = refuse
        self.calls: list[tuple[str, int, int]] = []

    def check_perm(self, perm: int, shared: int) -> None:
        self.calls.append(("check", perm, shared))
        if perm & self.refuse:
            raise BlockError("refused by driver")

    def set_perm(self, perm: int, shared: int) -> None:
        self.calls.append(("set", perm, shared))

    def abort_perm(self) -> None:
        self.calls.append(("abort", 0, 0))


def make(name: str, flags: int = O_RDWR, refuse: int = 0) -> Node:
    drv = RecordingDriver.__new__(RecordingDriver)
    node = Node(driver=drv, node_name=name, open_flags=flags)
    RecordingDriver.__init__(drv, node, refuse)
    return node


def root_edge(node: Node, perm: int, shared: int, name: str = "") -> Child:
    edge = Child("root", CHILD_IMAGE, Root(name), node, perm, shared)
    attach_child(edge)
    return edge


def test_perm_names_follow_bit_order() -> None:
    assert perm_names(PERM_WRITE | PERM_RESIZE) == "write, resize"
    assert perm_names(PERM_ALL) == "consistent read, write, write unchanged, resize"


def test_two_writers_that_share_coexist() -> None:
    node = make("n")
    root_edge(node, PERM_WRITE, PERM_ALL)
    root_edge(node, PERM_WRITE, PERM_ALL)
    assert node.perm == PERM_WRITE


def test_unshared_write_conflicts_with_qemu_text() -> None:
    node = make("bf")
    root_edge(node, PERM_CONSISTENT_READ, PERM_ALL & ~PERM_WRITE, "dev0")
    with pytest.raises(PermissionConflict) as info:
        root_edge(node, PERM_WRITE | PERM_CONSISTENT_READ, PERM_ALL, "dev1")
    assert info.value.message == (
        "Permission conflict on node 'bf': permissions 'write' are both required by "
        "block device 'dev1' and unshared by block device 'dev0'."
    )
    # The failed edge was rolled back.
    assert len(node.parents) == 1
    assert node.perm == PERM_CONSISTENT_READ


def test_write_to_read_only_node_is_refused() -> None:
    node = make("ro", flags=0)
    with pytest.raises(BlockError, match="Block node is read-only"):
        root_edge(node, PERM_WRITE, PERM_ALL)


def test_failure_below_rolls_back_every_checked_node() -> None:
    top = make("top")
    bottom = make("bottom", refuse=PERM_RESIZE)
    top.attach_child(bottom, "file", CHILD_FILTERED)
    edge = root_edge(top, PERM_CONSISTENT_READ, PERM_ALL)
    before = (bottom.perm, top.perm, edge.perm)
    with pytest.raises(BlockError, match="refused by driver"):
        set_child_perm(edge, PERM_CONSISTENT_READ | PERM_RESIZE, PERM_ALL)
    assert (bottom.perm, top.perm, edge.perm) == before
    top_calls = [c[0] for c in top.driver.calls]  # type: ignore[attr-defined]
    # Checked, aborted when the node below refused, then checked and set as before.
    assert top_calls[-4:] == ["check", "abort", "check", "set"]


def test_filtered_child_passes_permissions_through() -> None:
    top = make("top")
    bottom = make("bottom")
    top.attach_child(bottom, "file", CHILD_FILTERED)
    root_edge(top, PERM_CONSISTENT_READ | PERM_WRITE, PERM_ALL)
    assert bottom.perm == PERM_CONSISTENT_READ | PERM_WRITE
    assert bottom.shared == PERM_ALL


def test_metadata_child_unshares_write_and_resize() -> None:
    top = make("top")
    bottom = make("bottom")
    child = top.attach_child(bottom, "file", CHILD_IMAGE)
    root_edge(top, PERM_CONSISTENT_READ | PERM_WRITE, PERM_ALL)
    assert child.perm == PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE
    assert not child.shared & (PERM_WRITE | PERM_RESIZE)
    assert child.shared & PERM_WRITE_UNCHANGED


def test_backing_child_only_reads() -> None:
    top = make("top")
    base = make("base", flags=0)
    child = top.attach_child(base, "backing", CHILD_COW)
    edge = root_edge(top, PERM_CONSISTENT_READ | PERM_WRITE,
                     PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED)
    assert child.perm == PERM_CONSISTENT_READ
    assert not child.shared & (PERM_WRITE | PERM_RESIZE)
    # A user that copes with changing data lets the backing file change too
    # (7.2's bdrv_default_perms_for_cow).
    set_child_perm(edge, PERM_CONSISTENT_READ | PERM_WRITE, PERM_ALL)
    assert child.perm == PERM_CONSISTENT_READ
    assert child.shared == PERM_ALL
