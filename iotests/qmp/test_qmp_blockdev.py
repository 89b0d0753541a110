"""blockdev-add and blockdev-del of raw and qcow2 nodes; what query-named-block-nodes
and x-debug-query-block-graph show after each step; nodes still in use."""

from harness import Iot, formats


def test_add_del_raw(iot: Iot) -> None:
    img = iot.create("1M", fmt="raw", name="t.raw")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    m.qmp_log("blockdev-add", driver="raw", node_name="r", file="f")
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("x-debug-query-block-graph")
    iot.log("=== Still in use ===")
    m.qmp_log("blockdev-del", node_name="f")
    m.qmp_log("blockdev-add", driver="raw", node_name="r", file="f")
    m.qmp_log("blockdev-add", driver="raw", node_name="r2", file="nosuch")
    iot.log("=== Remove, top first ===")
    m.qmp_log("blockdev-del", node_name="r")
    m.qmp_log("blockdev-del", node_name="r")
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("blockdev-del", node_name="f")
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("x-debug-query-block-graph")
    m.qmp_log("quit")


@formats("qcow2")
def test_add_del_qcow2(iot: Iot) -> None:
    img = iot.create("4M")
    iot.io(img, "write -P 0x5a 0 64k")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q", file="f")
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("x-debug-query-block-graph")
    m.qmp_log("blockdev-del", node_name="f")
    m.qmp_log("blockdev-del", node_name="q")
    iot.log("=== A qcow2 node with its file opened along (an automatic node name) ===")
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q2",
              file={"driver": "file", "filename": img})
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("x-debug-query-block-graph")
    iot.log("=== Not a qcow2 image ===")
    raw = iot.create("1M", fmt="raw", name="t.raw")
    m.qmp_log("blockdev-add", driver="qcow2", node_name="bad",
              file={"driver": "file", "filename": raw})
    m.qmp_log("blockdev-del", node_name="q2")
    m.qmp_log("blockdev-del", node_name="f")
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("quit")


def test_query_options(iot: Iot) -> None:
    """Read-only, cache and detect-zeroes as query-named-block-nodes reports them."""
    img = iot.create("1M", fmt="raw", name="t.raw")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="ro", filename=img, read_only=True)
    m.qmp_log("blockdev-add", driver="file", node_name="nf", filename=img,
              cache={"no-flush": True}, detect_zeroes="on", force_share=True,
              read_only=True)
    m.qmp_log("blockdev-add", driver="raw", node_name="r", read_only=True,
              file={"driver": "file", "filename": img, "node-name": "rf"})
    m.qmp_log("blockdev-add", driver="raw", node_name="w", file="rf")
    m.qmp_log("blockdev-add", driver="file", node_name="fs", filename=img,
              force_share=True)
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("quit")


@formats("qcow2")
def test_permission_conflict(iot: Iot) -> None:
    """Two qcow2 parents on one file node: the second cannot have write and resize."""
    img = iot.create("1M")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q1", file="f")
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q2", file="f")
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q3", file="f", read_only=True)
    m.qmp_log("x-debug-query-block-graph")
    m.qmp_log("block_resize", node_name="f", size=2097152)
    m.qmp_log("blockdev-del", node_name="q3")
    m.qmp_log("blockdev-del", node_name="q1")
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q2", file="f")
    m.qmp_log("x-debug-query-block-graph")
    m.qmp_log("quit")
