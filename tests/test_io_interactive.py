"""bdrv-io's prompt against qemu-io 7.2: commands piped on stdin, and typed on a terminal.

On a pipe qemu-io prints "qemu-io> " before each read and echoes nothing. On a terminal
it runs its own line editor (echo off, non-canonical mode) and redraws the line after
every key; under pexpect those redraw sequences are the transcript, so both programs
get the same keystrokes and their transcripts must match byte for byte.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("io_oracle")
from io_oracle import QEMU_IO, compare, make_image, needs_qemu_io, normalise  # noqa: E402

pexpect = pytest.importorskip("pexpect")
pytestmark = needs_qemu_io

REPO = Path(__file__).resolve().parent.parent

PIPED = {
    "basic": "length\nread 0 512\n\nfoo\n   \nquit\nlength\n",
    "no_newline_at_end": "length",
    "errors": "read abc 1\nwrite -P 0x11 0 512\nread -P 0x11 0 512\nhelp nosuch\n",
    "long_line": "read -P 0 0 512" + " " * 1100 + "\nlength\n",
    "open_close": "close\nlength\nopen -r -o driver=raw t.raw\nlength\nwrite 0 1\n",
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(PIPED))
def test_piped_commands(tmp_path: Path, name: str) -> None:
    compare(tmp_path, ["-f", "raw", "t.raw"], make_image, stdin=PIPED[name])


def test_piped_without_image(tmp_path: Path) -> None:
    compare(tmp_path, [], make_image, stdin="length\nopen -o driver=raw t.raw\nlength\n")


# -- terminal ----------------------------------------------------------------------------
UP, DOWN, LEFT, RIGHT = "\x1b[A", "\x1b[B", "\x1b[D", "\x1b[C"

TYPED = {
    "plain": ["length", "read 0 512", "foo", "", "help quit"],
    "editing": ["lengthx\x7f", "rXead 0 512" + LEFT * 9 + "\x7f", "\x01\x05info",
                "len" + LEFT + LEFT + "\x1b[3~" + "e", "abc def\x17\x17length"],
    "history": ["length", "info", UP + UP, DOWN, UP + DOWN + DOWN + "map", UP + "\x10\x0e"],
    "home_end": ["ength\x1b[1~l\x1b[4~", "nfo\x1bOHi\x1bOF"],
    "completion": ["len\t", "rea\t", "a\t\t", "wr\tx\t", "help o\t"],
    "clear_screen": ["len\x0cgth"],
}


def _settle(child: object) -> str:
    out = []
    while True:
        try:
            out.append(child.read_nonblocking(4096, timeout=0.4))  # type: ignore[attr-defined]
        except pexpect.TIMEOUT:
            return "".join(out)


def _transcript(argv: list[str], cwd: Path, lines: list[str]) -> tuple[str, int | None]:
    child = pexpect.spawn(argv[0], argv[1:], cwd=str(cwd), encoding="utf-8",
                          codec_errors="surrogateescape", timeout=20,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    # qemu-io reads the terminal through stdio but waits for the descriptor to become
    # readable before each line, so keys typed ahead stay unread: send a line, then
    # collect output until it has been quiet for a moment.
    child.expect_exact("qemu-io> ")
    parts = [child.before + child.after]
    for line in lines:
        child.send(line + "\r")
        parts.append(_settle(child))
    child.sendeof()
    child.expect(pexpect.EOF)
    parts.append(child.before)
    child.close()
    return normalise("".join(parts)), child.exitstatus


@pytest.mark.parametrize("name", sorted(TYPED))
def test_typed_commands(tmp_path: Path, name: str) -> None:
    assert QEMU_IO is not None
    results = []
    for side in ("qemu", "bdrv"):
        d = tmp_path / side
        d.mkdir()
        make_image(d)
        if side == "qemu":
            argv = ["bash", "-c", f'exec -a qemu-io "{QEMU_IO}" -f raw t.raw']
        else:
            code = ("import sys; from bdrv.tools.io_shell import main; "
                    "sys.exit(main(['qemu-io'] + sys.argv[1:]))")
            argv = [sys.executable, "-c", code, "-f", "raw", "t.raw"]
        results.append(_transcript(argv, d, TYPED[name]))
    assert results[1] == results[0]
