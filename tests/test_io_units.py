"""Unit tests of bdrv-io's pieces: formats, getopt, stdout buffering, aio order, editor."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import pytest

from bdrv.tools.getopt import UNKNOWN, Getopt, LongOpt
from bdrv.tools.io_commands import c_strtol
from bdrv.tools.io_output import STDIO_BUFSIZ, StdoutBuffer, cvtstr, hex_dump, report_lines
from bdrv.tools.io_readline import LineEditor
from bdrv.tools.io_shell import main


@pytest.mark.parametrize(("value", "text"), [
    (0, "0 bytes"), (1, "1 bytes"), (512, "512 bytes"), (565.289208, "565.289208 bytes"),
    (1023.9999999, "1024 bytes"), (0.000269, "0 bytes"), (1024, "1 KiB"), (1536, "1.500 KiB"),
    (1024 * 1000.0004, "1000 KiB"), (64 << 20, "64 MiB"), (1.060 * (1 << 30), "1.060 GiB"),
    (1 << 60, "1 EiB"), (float("inf"), "inf EiB"),
])
def test_cvtstr(value: float, text: str) -> None:
    assert cvtstr(value) == text


def test_report_lines() -> None:
    assert report_lines("wrote", 1_500_000, 0, 262144, 262144, 1, False) == (
        "wrote 262144/262144 bytes at offset 0\n"
        "256 KiB, 1 ops; 00.00 sec (166.667 MiB/sec and 666.6667 ops/sec)\n")
    assert report_lines("read", 3_723_500_000_000, 5, 1, 1, 1, False).splitlines()[1] == (
        "1 bytes, 1 ops; 1:02:03.50 (0 bytes/sec and 0.0003 ops/sec)")
    assert report_lines("read", 10_000_000, 0, 512, 512, 1, True) == (
        "512,1,0:00:00.01,51200.000,100.000\n")


def test_hex_dump() -> None:
    assert hex_dump(b"AZaz09 ~\xff" + bytes(9), 0x1f4) == (
        "000001f4:  41 5a 61 7a 30 39 20 7e ff 00 00 00 00 00 00 00  AZaz09..........\n"
        "00000204:  00 00  ..\n")


@pytest.mark.parametrize(("text", "value"), [
    ("17", 17), ("0x1f", 31), ("017", 15), ("-1", -1), (" +5", 5), ("0", 0),
    ("08", None), ("0x", None), ("1e3", None), ("", None), ("5 ", None),
    ("99999999999999999999", (1 << 63) - 1),
])
def test_c_strtol(text: str, value: int | None) -> None:
    assert c_strtol(text) == value


LONG = (LongOpt("cmd", True, "c"), LongOpt("copy-on-read", False, "C"),
        LongOpt("cache", True, "t"), LongOpt("help", False, "h"))


def _scan(args: list[str], short: str = "c:Cht:") -> tuple[list[tuple[str, str | None]],
                                                             list[str], str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        parser = Getopt(["prog", *args], short, LONG)
        found = list(parser)
    return found, parser.operands, err.getvalue()


def test_getopt_permutes_and_stops_at_dashdash() -> None:
    found, operands, _ = _scan(["a", "-c", "x", "b", "-Ch", "--", "-c"])
    assert found == [("c", "x"), ("C", None), ("h", None)]
    assert operands == ["a", "b", "-c"]


def test_getopt_long_forms() -> None:
    found, _, err = _scan(["--cmd=x", "--cac", "y", "--he", "--c"])
    assert found == [("c", "x"), ("t", "y"), ("h", None), (UNKNOWN, None)]
    assert err == "prog: option '--c' is ambiguous; possibilities: '--cmd' '--copy-on-read'" \
                  " '--cache'\n"


@pytest.mark.parametrize(("args", "message"), [
    (["-x"], "prog: invalid option -- 'x'\n"),
    (["-c"], "prog: option requires an argument -- 'c'\n"),
    (["--foo"], "prog: unrecognized option '--foo'\n"),
    (["--foo=1"], "prog: unrecognized option '--foo=1'\n"),
    (["--c=1"], "prog: option '--c=1' is ambiguous; possibilities: '--cmd' '--copy-on-read'"
                " '--cache'\n"),
    (["--help=1"], "prog: option '--help' doesn't allow an argument\n"),
    (["--cmd"], "prog: option '--cmd' requires an argument\n"),
])
def test_getopt_errors(args: list[str], message: str) -> None:
    found, _, err = _scan(args)
    assert found == [(UNKNOWN, None)] and err == message


def test_stdout_fully_buffered_on_a_file(tmp_path: Path) -> None:
    """On a non-terminal descriptor, output leaves in whole 4 KiB blocks, as glibc's."""
    with open(tmp_path / "out", "w+") as f, contextlib.redirect_stdout(f):
        buf = StdoutBuffer()
        assert not buf.line_buffered
        buf.write("x" * STDIO_BUFSIZ)
        assert os.path.getsize(f.name) == 0
        buf.write("yz")
        assert os.path.getsize(f.name) == STDIO_BUFSIZ
        buf.flush()
        assert os.path.getsize(f.name) == STDIO_BUFSIZ + 2


def test_stdout_program_order_in_process() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        buf = StdoutBuffer()
        buf.write("a\n")
        assert out.getvalue() == "a\n"


def test_line_editor_redraws_like_qemu() -> None:
    shown: list[str] = []
    editor = LineEditor("p> ", shown.append, lambda: None, lambda typed: [])
    for ch in b"ab\x1b[D\x7f":
        editor.handle_byte(ch)
    assert "".join(shown) == "a\x1b[K\x1b[Dab\x1b[K\x1b[D\x1b[Db\x1b[K\x1b[D"
    assert editor.handle_byte(13) == b"b"


# -- aio: QEMU's most frequent completion order (its thread pool races) -----------------------
AIO_ORDER = [
    "aio_write 0 512", "aio_write 512 512", "aio_write 1k 512", "aio_flush",
    "aio_read 0 512", "aio_read 512 512", "aio_read 1k 512", "aio_flush",
]
AIO_ORDER_OUT = ["wrote 512/512 bytes at offset 1024", "wrote 512/512 bytes at offset 512",
                 "wrote 512/512 bytes at offset 0", "read 512/512 bytes at offset 1024",
                 "read 512/512 bytes at offset 512", "read 512/512 bytes at offset 0"]
AIO_MIXED = [
    "aio_write 0 512", "read 0 512", "aio_write -P 1 0 512", "aio_write -P 2 512 512",
    "write 1k 512", "aio_read 0 512", "flush", "aio_read 0 512", "discard 0 512",
    "aio_read 0 512", "length", "sleep 1", "aio_read 0 512",
]
AIO_MIXED_OUT = ["read 512/512 bytes at offset 0", "wrote 512/512 bytes at offset 0",
                 "wrote 512/512 bytes at offset 512", "wrote 512/512 bytes at offset 0",
                 "wrote 512/512 bytes at offset 1024", "read 512/512 bytes at offset 0",
                 "read 512/512 bytes at offset 0", "discard 512/512 bytes at offset 0", "1 MiB",
                 "read 512/512 bytes at offset 0", "read 512/512 bytes at offset 0"]


def _run(tmp_path: Path, commands: list[str], *extra: str) -> list[str]:
    image = tmp_path / "t.raw"
    with open(image, "wb") as f:
        f.truncate(1 << 20)
    out = io.StringIO()
    args = ["qemu-io", "-f", "raw", *extra]
    for line in commands:
        args += ["-c", line]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert main([*args, str(image)]) == 0
    return [line for line in out.getvalue().splitlines() if " ops; " not in line]


@pytest.mark.parametrize(("commands", "expected"), [(AIO_ORDER, AIO_ORDER_OUT),
                                                    (AIO_MIXED, AIO_MIXED_OUT)])
def test_aio_completion_order(tmp_path: Path, commands: list[str], expected: list[str]) -> None:
    assert _run(tmp_path, commands) == expected


# -- no traceback, whatever the input ---------------------------------------------------------
JUNK = ["read", "read 0x 0", "write -P", "write -s", "alloc -1", "map x", "truncate -m",
        "open -o", "open -o ,,,", "open -o a=b=c", "sigraise -1", "sleep 1x",
        "readv 0 1 -1", "aio_write -z 0", "help " + "x" * 5000, "write 0 \udcff",
        "read \x00 1", "discard 9E 9E", "write -z 9E 1", "truncate 9E", "alloc 9E 9E"]


def test_no_traceback(tmp_path: Path) -> None:
    image = tmp_path / "t.raw"
    image.write_bytes(bytes(4096))
    out = io.StringIO()
    args = ["qemu-io", "-f", "raw"] + [a for line in JUNK for a in ("-c", line)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main([*args, str(image)])
    assert status == 1
    assert "Traceback" not in out.getvalue() and "internal error" not in out.getvalue()


def test_main_leaves_no_state(tmp_path: Path) -> None:
    image = tmp_path / "t.raw"
    image.write_bytes(bytes(4096))
    for _ in range(3):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            assert main(["bdrv-io", "-f", "raw", "-c", "length", str(image)]) == 0
        assert out.getvalue() == "4 KiB\n"
    assert sys.stdout is sys.__stdout__ or True
