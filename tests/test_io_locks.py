"""The image lock bytes a running bdrv-io holds equal those of a running qemu-io 7.2.

Both run with commands on a pipe; after each command the test asks the kernel which of
QEMU's lock bytes (100-103: permissions held, 200-203: permissions not shared) some
other open file description holds on the image.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from io_oracle import QEMU_IO, make_image, needs_qemu_io  # noqa: E402

pytestmark = needs_qemu_io
REPO = Path(__file__).resolve().parent.parent
F_OFD_GETLK = 36
LOCK_BYTES = (100, 101, 102, 103, 200, 201, 202, 203)


def locked_bytes(path: Path) -> list[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        held = []
        for byte in LOCK_BYTES:
            probe = struct.pack("@hhqqi4x", fcntl.F_WRLCK, 0, byte, 1, 0)
            if struct.unpack("@hhqqi4x", fcntl.fcntl(fd, F_OFD_GETLK, probe))[0] != fcntl.F_UNLCK:
                held.append(byte)
        return held
    finally:
        os.close(fd)


def _read_prompt(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    data = b""
    while not data.endswith(b"qemu-io> "):
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        data += chunk
    return data


def held_over_session(argv: list[str], cwd: Path, commands: list[str]) -> list[list[int]]:
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdin is not None
    seen = []
    try:
        _read_prompt(proc)
        seen.append(locked_bytes(cwd / "t.raw"))
        for line in commands:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            _read_prompt(proc)
            seen.append(locked_bytes(cwd / "t.raw"))
    finally:
        proc.stdin.close()
        proc.wait(30)
    return seen


SESSIONS = {
    "rw": (["-f", "raw", "t.raw"], ["truncate 1M", "close", "open -r -o driver=raw t.raw",
                                    "write 0 512", "close", "open -U -r t.raw"]),
    "ro": (["-r", "-f", "raw", "t.raw"], ["read 0 512"]),
    "force_share": (["-r", "-U", "-f", "raw", "t.raw"], []),
    "window": (["--image-opts", "driver=raw,size=512k,file.filename=t.raw"],
               ["write 0 512", "truncate 512k"]),
    "window_offset": (["--image-opts", "driver=raw,offset=512,file.filename=t.raw"], []),
    "protocol": (["-f", "file", "t.raw"], ["truncate 2M"]),
    "no_locking": (["--image-opts", "driver=raw,file.filename=t.raw,file.locking=off"], []),
}


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_lock_bytes(tmp_path: Path, name: str) -> None:
    assert QEMU_IO is not None
    args, commands = SESSIONS[name]
    code = ("import sys; from bdrv.tools.io_shell import main; "
            "sys.exit(main(['qemu-io'] + sys.argv[1:]))")
    results = []
    for side, argv in (("qemu", ["qemu-io", *args]),
                       ("bdrv", [sys.executable, "-c", code, *args])):
        d = tmp_path / side
        d.mkdir()
        make_image(d)
        if side == "qemu":
            argv = ["bash", "-c", 'exec -a qemu-io "$0" "$@"', QEMU_IO, *args]
        results.append(held_over_session(argv, d, commands))
    assert results[1] == results[0]
