"""Read-only transitions of a daemon's nodes while another process holds the image:
a qemu-io session (reader or writer, itself reopening), or a second daemon. The image
locks follow every reopen, on both sides.
"""

from typing import Any

import pytest

from harness import Iot, formats
from harness.machine import Machine

pytestmark = pytest.mark.locking


def _reopen(m: Machine, *options: dict[str, Any]) -> dict[str, Any]:
    return m.qmp_log("blockdev-reopen", options=list(options))


@formats("qcow2")
def test_reopen_rw_with_reader_elsewhere(iot: Iot) -> None:
    """A qemu-io reader does not share write: the daemon cannot become a writer. The
    file node, given by name, keeps its own read-only unless it is reopened too."""
    img = iot.create("1M")
    iot.io(img, "write -P 0x11 0 64k")
    m = iot.machine()
    q = {"driver": "qcow2", "node-name": "q", "file": "f"}
    f = {"driver": "file", "node-name": "f", "filename": img}
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q", read_only=True,
              file={"driver": "file", "filename": img, "node-name": "f"})
    s = iot.interactive(img, opts="-r")
    s.cmd("read -P 0x11 0 64k")
    _reopen(m, q)
    _reopen(m, q, f)
    _reopen(m, {**q, "file": {**f, "cache": {"no-flush": True}}})
    _reopen(m, {**q, "read-only": True, "cache": {"direct": True}})
    s.cmd("reopen -o force-share=on")
    s.cmd("reopen -w")
    s.cmd("reopen -r -c none")
    s.cmd("read -P 0x11 0 64k")
    _reopen(m, q, f)
    s.close()
    _reopen(m, q, f)
    m.qmp_log("query-named-block-nodes", flat=True)
    iot.log("=== The daemon writes: qemu-io can open the image only with -U ===")
    iot.io(img, "read -P 0x11 0 64k", opts="-r")
    iot.io(img, "read -P 0x11 0 64k", opts=["-r", "-U"])
    _reopen(m, {**q, "read-only": True})
    iot.io(img, "read -P 0x11 0 64k", opts="-r")
    _reopen(m, {**q, "file": f, "read-only": True})
    iot.io(img, "read -P 0x11 0 64k", opts="-r")
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("quit")


@formats("qcow2")
def test_io_session_reopens_against_daemon(iot: Iot) -> None:
    """qemu-io holds the image and reopens it -r/-w/-c/-o while the daemon adds,
    reopens and deletes nodes on it."""
    img = iot.create("1M")
    m = iot.machine()
    q = {"driver": "qcow2", "node-name": "q", "file": "f", "read-only": True}
    add = {"driver": "qcow2", "node-name": "q", "read-only": True,
           "file": {"driver": "file", "filename": img, "node-name": "f"}}
    s = iot.interactive(img)
    s.cmd("write -P 0x22 0 64k")
    m.qmp_log("blockdev-add", add)
    s.cmd("reopen -r")
    m.qmp_log("blockdev-add", add)
    s.cmd("reopen -w")
    s.cmd("reopen -o lazy-refcounts=on,cache-size=1M")
    s.cmd("read -P 0x22 0 64k")
    _reopen(m, {**q, "read-only": False})
    m.qmp_log("blockdev-del", node_name="q")
    s.cmd("reopen -w -c writethrough")
    s.cmd("write -P 0x33 64k 64k")
    m.qmp_log("blockdev-add", add)
    s.cmd("reopen -r -o overlap-check=all")
    m.qmp_log("blockdev-add", add)
    s.cmd("reopen -w")
    _reopen(m, {**q, "force-share": True})
    m.qmp_log("blockdev-del", node_name="q")
    s.cmd("reopen -w -c none -o pass-discard-request=off")
    s.cmd("read -P 0x33 64k 64k")
    s.close()
    iot.io(img, ["read -P 0x22 0 64k", "read -P 0x33 64k 64k"], by="qemu")
    m.qmp_log("quit")


@formats("qcow2")
def test_two_daemons(iot: Iot) -> None:
    """Two daemons on one image: whoever writes keeps the other from opening it;
    reopening read-only lets the other in, and then the first cannot write again."""
    img = iot.create("1M")
    m1 = iot.machine(name="vm1")
    m2 = iot.machine(name="vm2")
    q = {"driver": "qcow2", "node-name": "q", "file": "f"}
    f = {"driver": "file", "node-name": "f", "filename": img}
    add = {"driver": "qcow2", "node-name": "q",
           "file": {"driver": "file", "filename": img, "node-name": "f"}}
    iot.log("--- vm1 ---")
    m1.qmp_log("blockdev-add", add)
    iot.log("--- vm2 ---")
    m2.qmp_log("blockdev-add", {**add, "read-only": True})
    m2.qmp_log("blockdev-add", {**add, "read-only": True, "force-share": True})
    _reopen(m2, {**q, "read-only": True})
    m2.qmp_log("blockdev-del", node_name="q")
    iot.log("--- vm1 ---")
    _reopen(m1, {**q, "read-only": True})
    _reopen(m1, {**q, "read-only": True}, {**f, "read-only": True})
    iot.log("--- vm2 ---")
    m2.qmp_log("blockdev-add", {**add, "read-only": True})
    _reopen(m2, q, {**f, "read-only": False})
    iot.log("--- vm1 ---")
    iot.log("(f, also queued by q, keeps its old read-only unless it sets it itself)")
    _reopen(m1, q, f)
    _reopen(m1, f, q)
    _reopen(m1, q, {**f, "read-only": False})
    _reopen(m1, {**q, "read-only": True, "auto-read-only": True})
    iot.log("--- vm2 ---")
    m2.qmp_log("blockdev-del", node_name="q")
    m2.qmp_log("blockdev-add", {**f, "locking": "off"})
    iot.log("--- vm1 ---")
    _reopen(m1, {**f, "read-only": False}, q)
    iot.log("--- vm2 ---")
    m2.qmp_log("blockdev-del", node_name="f")
    m2.qmp_log("blockdev-add", f)
    m2.qmp_log("blockdev-add", {**f, "node-name": "f2", "read-only": True})
    m2.qmp_log("query-named-block-nodes", flat=True)
    m1.qmp_log("quit")
    m2.qmp_log("quit")
