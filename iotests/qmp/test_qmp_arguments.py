"""Malformed QMP commands beyond test_qmp_protocol.py: wrong argument types in nested
and list members, missing and extra arguments, unknown commands with arguments, raw
input with odd numbers and ids. After each error the daemon keeps serving."""

from harness import Iot


def test_argument_errors(iot: Iot) -> None:
    img = iot.create("1M", fmt="raw", name="t.raw")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    f = {"driver": "file", "node-name": "f", "filename": img}
    iot.log("=== blockdev-reopen ===")
    for args in ({}, {"options": None}, {"options": "f"}, {"options": [f], "extra": 1},
                 {"options": ["f"]}, {"options": [None]}, {"options": [[f]]},
                 {"options": [{"node-name": "f", "filename": img}]},
                 {"options": [{**f, "cache": True}]},
                 {"options": [{**f, "cache": {"direct": "on"}}]},
                 {"options": [{**f, "cache": {"bogus": True}}]},
                 {"options": [f, {**f, "read-only": 1}]},
                 {"options": [{**f, "node-name": 5}]},
                 {"options": [{**f, "detect-zeroes": True}]},
                 {"options": [{**f, "locking": "maybe"}]},
                 {"options": [{**f, "aio-max-batch": "4"}]},
                 {"options": [{**f, "aio-max-batch": 1.5}]},
                 {"options": [{"driver": "raw", "node-name": "f", "file": 5}]},
                 {"options": [{"driver": "raw", "node-name": "f", "file": {}}]},
                 {"options": [{"driver": "raw", "node-name": "f",
                               "file": {"driver": "file"}}]},
                 {"options": [{"driver": "qcow2", "node-name": "f", "file": "f",
                               "backing": 5}]},
                 {"options": [{"driver": "qcow2", "node-name": "f", "file": "f",
                               "cache-size": -1}]}):
        # Not here: {"options": []}. qemu-storage-daemon 7.2 dies on an empty list
        # (no response; the monitor is gone), which is not worth copying.
        m.qmp_log("blockdev-reopen", args)
    iot.log("=== other commands ===")
    m.qmp_log("blockdev-add", driver="raw", node_name="r", file="f", size="1M")
    m.qmp_log("blockdev-add", driver="raw", node_name="r", file="f", offset=-512)
    m.qmp_log("blockdev-add", driver="raw", node_name="r", file=None)
    m.qmp_log("blockdev-add", driver="raw", node_name="r", file=["f"])
    m.qmp_log("blockdev-add", driver="raw", node_name=None, file="f")
    m.qmp_log("blockdev-add", driver=None)
    m.qmp_log("query-named-block-nodes", flat="yes")
    m.qmp_log("query-named-block-nodes", flat=True, depth=1)
    m.qmp_log("x-debug-query-block-graph", verbose=True)
    m.qmp_log("block_resize", node_name="f", size="2M")
    m.qmp_log("block_resize", node_name="f", size=-1)
    m.qmp_log("block_resize", node_name="f", size=1.5)
    m.qmp_log("block_resize", node_name="f")
    m.qmp_log("block_resize", size=1048576)
    m.qmp_log("block_resize", node_name="f", size=1048576, extra=None)
    m.qmp_log("blockdev-del", node_name=None)
    m.qmp_log("blockdev-del", node_name=["f"])
    m.qmp_log("job-dismiss", id=1)
    m.qmp_log("job-dismiss")
    m.qmp_log("query-jobs", all=True)
    m.qmp_log("quit", now=True)
    m.qmp_log("x-nosuch-command", node_name="f")
    m.qmp_log("blockdev_add", driver="file", node_name="g", filename=img)
    iot.log("=== sent as text ===")
    for text in ['{"execute": "block_resize", "arguments": {"node-name": "f", '
                 '"size": 1e6}}',
                 '{"execute": "block_resize", "arguments": {"node-name": "f", '
                 '"size": 18446744073709551616}}',
                 '{"execute": "block_resize", "arguments": {"node-name": "f", '
                 '"size": 9223372036854775808}}',
                 '{"execute": "blockdev-reopen", "arguments": {"options": '
                 '[{"driver": "file", "node-name": "f", "filename": "x", "read-only": '
                 'null}]}}',
                 '{"execute": "query-version", "id": null}',
                 '{"execute": "query-version", "id": [1, {"a": null}]}',
                 '{"execute": "x-nosuch", "arguments": {"a": 1}, "id": "x"}',
                 '{"execute": "blockdev-del", "arguments": {}, "id": 1.5}',
                 '{"execute": "blockdev-del", "arguments": {"node-name": "nosuch"}, '
                 '"id": true}']:
        m.qmp_raw_log(text)
    iot.log("=== Still serving ===")
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("blockdev-reopen", options=[{**f, "read-only": True}])
    m.qmp_log("query-jobs")
    m.qmp_log("quit")
