"""The daemon's command line: --blockdev as JSON and as key=value."""

import json

from harness import Iot


def test_blockdev_on_command_line(iot: Iot) -> None:
    img = iot.create("1M", fmt="raw", name="t.raw")
    m = iot.machine(args=[
        "--blockdev", f"driver=file,node-name=f,filename={img},read-only=on",
        "--blockdev", json.dumps({"driver": "raw", "node-name": "r", "file": "f"})])
    m.qmp_log("query-named-block-nodes", flat=True)
    m.qmp_log("blockdev-del", node_name="f")
    m.qmp_log("blockdev-del", node_name="r")
    m.qmp_log("blockdev-del", node_name="f")
    m.qmp_log("query-named-block-nodes")
    m.qmp_log("quit")
