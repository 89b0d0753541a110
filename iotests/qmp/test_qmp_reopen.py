"""blockdev-reopen: read-only transitions, options that cannot change, and a reopen of
several nodes where one fails, after which every node is as before."""

from harness import Iot, formats


def test_reopen_read_only(iot: Iot) -> None:
    img = iot.create("1M", fmt="raw", name="t.raw")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="raw", node_name="r",
              file={"driver": "file", "filename": img, "node-name": "f"})
    m.qmp_log("query-named-block-nodes", flat=True)
    iot.log("=== To read-only: the file child inherits it ===")
    m.qmp_log("blockdev-reopen", options=[
        {"driver": "raw", "node-name": "r", "file": "f", "read-only": True}])
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("x-debug-query-block-graph")
    iot.log("=== Back to read-write ===")
    m.qmp_log("blockdev-reopen", options=[{"driver": "raw", "node-name": "r", "file": "f"}])
    m.qmp_log("query-named-block-nodes", flat=True)
    iot.log("=== Options that cannot change ===")
    m.qmp_log("blockdev-reopen", options=[
        {"driver": "file", "node-name": "f", "filename": "other"}])
    m.qmp_log("blockdev-reopen", options=[{"driver": "file", "node-name": "nosuch",
                                           "filename": img}])
    m.qmp_log("blockdev-reopen", options=[{"driver": "file", "filename": img}])
    m.qmp_log("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "r",
                                           "file": "f"}])
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("quit")


@formats("qcow2")
def test_reopen_read_only_qcow2(iot: Iot) -> None:
    img = iot.create("1M")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q", file="f")
    m.qmp_log("blockdev-reopen", options=[
        {"driver": "qcow2", "node-name": "q", "file": "f", "read-only": True}])
    m.qmp_log("x-debug-query-block-graph")
    m.qmp_log("blockdev-reopen", options=[
        {"driver": "file", "node-name": "f", "filename": img, "read-only": True}])
    m.qmp_log("query-named-block-nodes", flat=True)
    iot.log("=== q cannot be read-write on a read-only file ===")
    m.qmp_log("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "q", "file": "f"}])
    m.qmp_log("blockdev-reopen", options=[
        {"driver": "file", "node-name": "f", "filename": img},
        {"driver": "qcow2", "node-name": "q", "file": "f"}])
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("x-debug-query-block-graph")
    m.qmp_log("quit")


def test_reopen_rollback(iot: Iot) -> None:
    """Three nodes reopened at once; the last one fails, so none changes."""
    a = iot.create("1M", fmt="raw", name="a.raw")
    b = iot.create("1M", fmt="raw", name="b.raw")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="fa", filename=a)
    m.qmp_log("blockdev-add", driver="raw", node_name="ra", file="fa")
    m.qmp_log("blockdev-add", driver="file", node_name="fb", filename=b, read_only=True)
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("blockdev-reopen", options=[
        {"driver": "raw", "node-name": "ra", "file": "fa", "read-only": True},
        {"driver": "file", "node-name": "fb", "filename": b},
        {"driver": "file", "node-name": "fa", "filename": a, "locking": "off"}])
    iot.log("=== Every node as before ===")
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("x-debug-query-block-graph")
    iot.log("=== Without the failing one, all change ===")
    m.qmp_log("blockdev-reopen", options=[
        {"driver": "raw", "node-name": "ra", "file": "fa", "read-only": True},
        {"driver": "file", "node-name": "fb", "filename": b}])
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("quit")


@formats("qcow2")
def test_reopen_read_only_with_other_writer(iot: Iot) -> None:
    """The daemon's image locks follow its reopens: while its node is read-write no
    other process may write or even open the image; read-only, others may read."""
    img = iot.create("1M")
    iot.io(img, "write -P 0x11 0 64k")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="qcow2", node_name="q",
              file={"driver": "file", "filename": img, "node-name": "f"})
    iot.io(img, "read -P 0x11 0 64k")
    iot.io(img, "read -P 0x11 0 64k", opts="-r")
    iot.io(img, "read -P 0x11 0 64k", opts="-U")
    m.qmp_log("blockdev-reopen", options=[
        {"driver": "qcow2", "node-name": "q", "file": "f", "read-only": True}])
    iot.io(img, "read -P 0x11 0 64k", opts="-r")
    iot.io(img, "write -P 0x22 0 64k")
    m.qmp_log("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "q", "file": "f"}])
    iot.io(img, "read -P 0x11 0 64k", opts="-r")
    m.qmp_log("blockdev-del", node_name="q")
    iot.io(img, "write -P 0x22 0 64k")
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("quit")
