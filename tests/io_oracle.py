"""Run bdrv-io and real qemu-io 7.2 on identical scratch images and compare them.

`compare` builds the same files in two directories, runs qemu-io in one and bdrv-io
(in-process, named "qemu-io" so messages carry the same prefix) in the other, and
checks stdout, stderr, the exit status and the files left behind (bytes, size and
which ranges hold data). Timing figures are the only thing normalised. qemu-io's
stdout and stderr are terminals, so it prints in program order, as bdrv-io does
in-process (and as the iotests harness runs both).

Test modules load this with `load_oracle()`-style sys.path insertion (tests/ is not a
package).
"""

from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from img_oracle import data_ranges

from bdrv.tools.io_shell import main

QEMU_IO = shutil.which(os.environ.get("QEMU_IO_PROG", "qemu-io"))
needs_qemu_io = pytest.mark.skipif(QEMU_IO is None, reason="qemu-io not installed")

_TIMING = re.compile(
    r"[0-9]* ops; [0-9/:. sec]* \([0-9/.infa-]* [EPTGMKiBbytes]*/sec"
    r" and [0-9/.infa-]* ops/sec\)"
)
_CSV = re.compile(r"^(-?\d+),(\d+),\d+:\d\d:\d\d\.\d\d,[-0-9.infa]+,[-0-9.infa]+$", re.M)

Setup = Callable[[Path], None]


def normalise(text: str) -> str:
    text = _TIMING.sub("X ops; TIME", text)
    return _CSV.sub(r"\1,\2,TIME", text)


@dataclass
class Run:
    stdout: str
    stderr: str
    status: int


def _pty() -> tuple[int, int]:
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # bytes as written, no "\r\n"
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave


def _read_all(fds: list[int], proc: subprocess.Popen[bytes]) -> dict[int, bytes]:
    chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
    open_fds = list(fds)
    while open_fds:
        ready, _, _ = select.select(open_fds, [], [], 60)
        if not ready:
            proc.kill()
            raise TimeoutError("qemu-io hangs")
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)
    return {fd: b"".join(parts) for fd, parts in chunks.items()}


def run_qemu(args: list[str], cwd: Path, stdin: str = "") -> Run:
    """qemu-io with stdout and stderr on terminals: line-buffered, as the harness runs it."""
    assert QEMU_IO is not None
    (out_m, out_s), (err_m, err_s) = _pty(), _pty()
    try:
        proc = subprocess.Popen(["qemu-io", *args], executable=QEMU_IO, cwd=cwd,
                                stdin=subprocess.PIPE, stdout=out_s, stderr=err_s,
                                start_new_session=True)
        os.close(out_s)
        os.close(err_s)
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin.encode("utf-8", "surrogateescape"))
            proc.stdin.close()
        data = _read_all([out_m, err_m], proc)
        code = proc.wait(60)
    finally:
        os.close(out_m)
        os.close(err_m)
    status = code if code >= 0 else 128 - code
    decode = lambda b: b.decode("utf-8", "surrogateescape")  # noqa: E731
    return Run(decode(data[out_m]), decode(data[err_m]), status)


def run_bdrv(args: list[str], cwd: Path, stdin: str = "") -> Run:
    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_stdin = os.getcwd(), sys.stdin
    os.chdir(cwd)
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["qemu-io", *args])
    finally:
        sys.stdin = old_stdin
        os.chdir(old_cwd)
    return Run(out.getvalue(), err.getvalue(), status)


def snapshot(d: Path) -> dict[str, tuple[bytes, list[tuple[int, int]]]]:
    return {p.name: (p.read_bytes(), data_ranges(p)) for p in sorted(d.iterdir())
            if p.is_file()}


def make_image(d: Path, name: str = "t.raw", size: int = 1 << 20) -> None:
    """A raw image as qemu-img creates it: sparse, first 4 KiB allocated."""
    with open(d / name, "wb") as f:
        f.truncate(size)
        f.write(bytes(min(size, 4096)))


# qemu-io commands bdrv-io does not have (yet); `help` lists only what bdrv-io has.
MISSING_COMMANDS: tuple[str, ...] = ()


def without_missing(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith(tuple(f"{c} " for c in MISSING_COMMANDS)))


def compare(tmp_path: Path, args: list[str], setup: Setup = make_image, stdin: str = "",
            check_files: bool = True) -> Run:
    dirs = {}
    for side in ("qemu", "bdrv"):
        d = tmp_path / side
        d.mkdir()
        setup(d)
        dirs[side] = d
    want = run_qemu(args, dirs["qemu"], stdin)
    want.stdout = without_missing(want.stdout)
    got = run_bdrv(args, dirs["bdrv"], stdin)
    assert normalise(got.stdout) == normalise(want.stdout)
    assert normalise(got.stderr) == normalise(want.stderr)
    assert got.status == want.status
    if check_files:
        assert snapshot(dirs["bdrv"]) == snapshot(dirs["qemu"])
    return want


def cmds(*lines: str, fmt: str | None = "raw", image: str | None = "t.raw",
         extra: tuple[str, ...] = ()) -> list[str]:
    args: list[str] = []
    if fmt:
        args += ["-f", fmt]
    args += list(extra)
    for line in lines:
        args += ["-c", line]
    return args + ([image] if image else [])


