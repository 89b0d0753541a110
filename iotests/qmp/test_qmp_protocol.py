"""QMP protocol: greeting, negotiation, and malformed input (the daemon keeps serving)."""

from harness import Iot


def test_malformed_input(iot: Iot) -> None:
    m = iot.machine()
    iot.log("=== Not JSON, not an object, bad members ===")
    for text in ["foo", "@", '{"execute" "x"}', '{"execute": "query-version",}',
                 "[1, 2]", '"text"', "123", "null",
                 '{"execute": 1}', '{"foo": 1}', '{"arguments": {}}',
                 '{"execute": "query-version", "arguments": []}',
                 "{'execute': 'query-version'}",
                 '{"execute": "query-version", "id": "abc"}',
                 '{"execute": "query-version", "id": {"a": [1]}}',
                 '{"execute": "nosuch", "id": 7}']:
        m.qmp_raw_log(text)
    iot.log("=== Unknown command, wrong argument types, missing arguments ===")
    m.qmp_log("nosuch-command")
    m.qmp_log("qmp_capabilities")
    m.qmp_log("query-version", bogus=1)
    m.qmp_log("blockdev-add")
    m.qmp_log("blockdev-add", driver="nosuch", node_name="x")
    m.qmp_log("blockdev-add", driver="file", node_name="x")
    m.qmp_log("blockdev-add", driver="file", node_name="x", filename=5)
    m.qmp_log("blockdev-add", driver="file", node_name="x", filename="f", read_only="yes")
    m.qmp_log("blockdev-add", driver="file", node_name="x", filename="f",
              cache={"direct": "x"})
    m.qmp_log("blockdev-add", driver="file", node_name="x", filename="f", bogus=1)
    m.qmp_log("blockdev-add", driver="file", filename=iot.path("nonexistent"))
    m.qmp_log("blockdev-add", driver="file", node_name="9bad", filename=iot.path("t"))
    m.qmp_log("blockdev-del")
    m.qmp_log("blockdev-del", node_name=1)
    m.qmp_log("blockdev-del", node_name="x", extra=True)
    m.qmp_log("blockdev-del", node_name="nosuch")
    m.qmp_log("block_resize", node_name="nosuch", size=1)
    m.qmp_log("block_resize", device="nosuch", size=1)
    m.qmp_log("block_resize", node_name="x")
    m.qmp_log("blockdev-reopen", options={})
    m.qmp_log("blockdev-reopen", options=[{"driver": "file"}])
    m.qmp_log("job-dismiss", id="nosuch")
    iot.log("=== Still serving ===")
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("query-jobs")
    m.qmp_log("quit")
