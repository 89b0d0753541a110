"""Unit tests of bdrv-storage-daemon's pieces: the QMP input streamer, argument
checking, the harness machine's filters, and a daemon round trip."""

from __future__ import annotations

import tempfile

import pytest

from bdrv.tools.qmp_schema import BLOCKDEV_OPTIONS, QMPError, check
from bdrv.tools.qmp_server import JsonStreamer, split_tokens
from harness.machine import Machine, filter_qmp


def test_split_tokens_keeps_incomplete_tokens() -> None:
    assert split_tokens(b'{"execute": "qu') == (b'{"execute": ', b'"qu')
    assert split_tokens(b"foo") == (b"", b"foo")
    assert split_tokens(b"foo\n") == (b"foo\n", b"")
    assert split_tokens(b'{"a": "x,\\"}') == (b'{"a": ', b'"x,\\"}')


def test_streamer_values_and_errors() -> None:
    s = JsonStreamer()
    assert s.feed(b'{"execute":') == []
    assert s.feed(b' "quit"}') == [({"execute": "quit"}, None)]
    assert s.feed(b"foo @ [1, 2]") == [
        (None, "JSON parse error, invalid keyword 'foo'"),
        (None, "JSON parse error, stray '@'"),
        ([1, 2], None),
    ]
    assert s.feed(b'{"a" 1}') == [(None, "JSON parse error, missing : in object pair")]


@pytest.mark.parametrize(("args", "message"), [
    ({}, "Parameter 'driver' is missing"),
    ({"driver": "nosuch"}, "Parameter 'driver' does not accept value 'nosuch'"),
    ({"driver": "file"}, "Parameter 'filename' is missing"),
    ({"driver": "file", "filename": 1}, "Invalid parameter type for 'filename', expected: string"),
    ({"driver": "file", "filename": "x", "cache": {"direct": 1}},
     "Invalid parameter type for 'cache.direct', expected: boolean"),
    ({"driver": "file", "filename": "x", "x": 1}, "Parameter 'x' is unexpected"),
    ({"driver": "raw", "file": 1}, "Invalid parameter type for 'file', expected: BlockdevRef"),
    ({"driver": "raw", "file": {"driver": "file"}}, "Parameter 'file.filename' is missing"),
])
def test_blockdev_options_errors(args: dict[str, object], message: str) -> None:
    with pytest.raises(QMPError) as info:
        check(BLOCKDEV_OPTIONS, args)
    assert info.value.desc == message


def test_filter_qmp() -> None:
    event = {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "X",
             "data": {"node": "#block123"}}
    assert filter_qmp(event) == {"timestamp": {"seconds": "SECS", "microseconds": "USECS"},
                                 "event": "X", "data": {"node": "#blockNNN"}}


def test_daemon_round_trip(tmp_path: object) -> None:
    with tempfile.TemporaryDirectory(prefix="qmp-") as sock_dir:
        img = f"{sock_dir}/t.raw"
        with open(img, "wb") as f:
            f.truncate(1 << 20)
        lines: list[str] = []
        m = Machine("bdrv-storage-daemon", sock_dir, log=lines.append)
        with m:
            assert m.cmd("blockdev-add", driver="file", node_name="f", filename=img) == {}
            nodes = m.cmd("query-named-block-nodes")
            assert [n["node-name"] for n in nodes] == ["f"]
            assert nodes[0]["image"]["virtual-size"] == 1 << 20
            assert m.qmp_raw("foo")["error"]["desc"] == \
                "JSON parse error, invalid keyword 'foo'"
            m.qmp_log("blockdev-del", node_name="f")
            assert m.qmp("blockdev-del", node_name="f")["error"]["class"] == "GenericError"
        assert m.exitcode == 0
        assert lines == ['{"arguments": {"node-name": "f"}, "execute": "blockdev-del"}',
                         '{"return": {}}']
