"""The two implementations a test runs against: real QEMU and bdrv.

A backend runs one tool invocation ("img" for qemu-img/bdrv-img, "io" for
qemu-io/bdrv-io) and returns its combined stdout+stderr and exit status. It can also
start a long-running qemu-io/bdrv-io process for interactive sessions.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib
import importlib.util
import io
import os
import pty
import select
import shutil
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

Tool = Literal["img", "io"]
BACKEND_NAMES = ("bdrv", "qemu")
QEMU_TOOL_NAMES: dict[Tool, str] = {"img": "qemu-img", "io": "qemu-io"}
BDRV_TOOL_NAMES: dict[Tool, str] = {"img": "bdrv-img", "io": "bdrv-io"}
# Where the in-process entry points live: module and function `main(argv) -> int`.
BDRV_MODULES: dict[Tool, str] = {"img": "bdrv.tools.img", "io": "bdrv.tools.io_shell"}

# Generous: a hung tool should fail its test, not stall the whole run.
STEP_TIMEOUT = 300.0


@dataclass(frozen=True)
class Result:
    """What one tool invocation produced."""

    output: str  # stdout and stderr interleaved, decoded
    status: int  # exit status, 0..255 as a shell would see it


class LeakedFiles(Exception):
    """An in-process tool returned without closing the files it opened."""


class ToolMissing(Exception):
    """The backend cannot run this tool here; tests turn it into *not run*."""


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def open_pty() -> tuple[int, int]:
    """A pseudo-terminal for a tool's stdout and stderr: (master, slave).

    Why a terminal and not a pipe: on a pipe, C stdio buffers stdout but not stderr,
    so QEMU's messages would come out of order (all of stderr first). On a terminal
    stdout is line-buffered and the log shows lines in the order they were printed,
    which is also what the in-process bdrv backend records. Output post-processing is
    switched off so bytes arrive exactly as written (no "\n" -> "\r\n").
    """
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave


def _drain(master: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Read the terminal until every writer has closed it (EIO), within `timeout`."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            proc.wait()
            raise subprocess.TimeoutExpired(proc.args, timeout, b"".join(chunks))
        ready, _, _ = select.select([master], [], [], remaining)
        if not ready:
            continue
        try:
            data = os.read(master, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:  # Linux: the last slave fd was closed
                break
            raise
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def exit_status(returncode: int) -> int:
    """A signal shows as a negative returncode; report it as a shell would (128+n)."""
    return returncode if returncode >= 0 else 128 - returncode


def run_subprocess(argv: list[str], executable: str, cwd: str) -> Result:
    """Run a program with argv[0] as given, stdout+stderr on one terminal, no stdin."""
    master, slave = open_pty()
    try:
        try:
            # A new session: the terminal is the tool's output, not its controlling tty.
            proc = subprocess.Popen(
                argv, executable=executable, cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=slave, stderr=slave, start_new_session=True,
            )
        finally:
            os.close(slave)
        output = _drain(master, proc, STEP_TIMEOUT)
    finally:
        os.close(master)
    return Result(_decode(output), exit_status(proc.wait()))


class Backend:
    """Common interface; see QemuBackend and BdrvBackend."""

    name: str = ""

    def unavailable(self, tool: Tool) -> str | None:
        """Why `tool` cannot run on this backend, or None if it can."""
        raise NotImplementedError

    def run(self, tool: Tool, args: list[str], cwd: str) -> Result:
        """Run the tool with `args` (without argv[0]) in `cwd`."""
        raise NotImplementedError

    def spawn_argv(self, tool: Tool, args: list[str]) -> list[str]:
        """The command line that starts the tool as a separate process."""
        raise NotImplementedError

    def program_paths(self) -> dict[str, str]:
        """Absolute program paths this backend may print, mapped to QEMU's names."""
        return {}

    def require(self, tool: Tool) -> None:
        reason = self.unavailable(tool)
        if reason:
            raise ToolMissing(reason)


class QemuBackend(Backend):
    """Real QEMU binaries, from --qemu-img/--qemu-io, $QEMU_*_PROG, or PATH."""

    name = "qemu"

    def __init__(self, img_prog: str | None = None, io_prog: str | None = None) -> None:
        self.progs: dict[Tool, str] = {
            "img": img_prog or os.environ.get("QEMU_IMG_PROG") or "qemu-img",
            "io": io_prog or os.environ.get("QEMU_IO_PROG") or "qemu-io",
        }

    def _resolve(self, tool: Tool) -> str | None:
        return shutil.which(self.progs[tool])

    def unavailable(self, tool: Tool) -> str | None:
        if self._resolve(tool) is None:
            return f"{QEMU_TOOL_NAMES[tool]} not found ({self.progs[tool]})"
        return None

    def run(self, tool: Tool, args: list[str], cwd: str) -> Result:
        self.require(tool)
        exe = self._resolve(tool)
        assert exe is not None
        # argv[0] is the plain name, so QEMU prefixes its messages with "qemu-img:".
        return run_subprocess([QEMU_TOOL_NAMES[tool], *args], exe, cwd)

    def spawn_argv(self, tool: Tool, args: list[str]) -> list[str]:
        self.require(tool)
        exe = self._resolve(tool)
        assert exe is not None
        return [exe, *args]

    def program_paths(self) -> dict[str, str]:
        paths: dict[str, str] = {}
        for tool, name in QEMU_TOOL_NAMES.items():
            exe = self._resolve(tool)
            if exe:
                paths[exe] = name
                paths[os.path.realpath(exe)] = name
        return paths


@contextlib.contextmanager
def _captured_process_state(cwd: str) -> Iterator[io.TextIOWrapper]:
    """Point sys.stdout and sys.stderr at one stream, stdin at nothing, cwd at `cwd`.

    One stream for both keeps the interleaving a terminal would show. The stream has a
    .buffer so tools that write bytes are captured too; write_through keeps text and
    byte writes in order.
    """
    stream = io.TextIOWrapper(
        io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True
    )
    old_cwd = os.getcwd()
    old_stdin = sys.stdin
    os.chdir(cwd)
    sys.stdin = io.StringIO("")
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield stream
    finally:
        sys.stdin = old_stdin
        os.chdir(old_cwd)


def _exit_status(code: object, stream: io.TextIOWrapper) -> int:
    """Turn a main() return value or SystemExit code into what a shell would see."""
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code & 0xFF
    # sys.exit("message") prints the message and exits 1, as the interpreter does.
    stream.write(f"{code}\n")
    return 1


def _open_files() -> set[tuple[int, str]]:
    """(fd, target) for each open descriptor; the pair, since numbers get reused."""
    files = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            files.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:  # the descriptor listdir itself used is gone already
            continue
    return files


def _check_no_leaked_files(before: set[tuple[int, str]], test_dir: str, tool: str) -> None:
    """Fail a step whose in-process tool left scratch files open.

    A separate process gets its files closed (and its image locks dropped) when it
    exits; in-process, a forgotten file would keep its lock and break later steps, so
    it is reported right where it happens.
    """
    gc.collect()  # files only reachable from garbage cycles get closed now
    root = os.path.realpath(test_dir) + os.sep
    leaked = [f"fd {fd} -> {target}" for fd, target in sorted(_open_files() - before)
              if target.startswith(root)]
    if leaked:
        raise LeakedFiles(f"{tool} returned with files still open: {', '.join(leaked)}")


def _bdrv_import_root() -> str:
    """The directory that holds the bdrv package this process would import."""
    spec = importlib.util.find_spec("bdrv")
    if spec is None or not spec.submodule_search_locations:
        return os.getcwd()
    return os.path.dirname(list(spec.submodule_search_locations)[0])


class BdrvBackend(Backend):
    """bdrv's tools: called in-process (fast), or as installed console scripts."""

    name = "bdrv"

    def __init__(self, subprocess_mode: bool = False) -> None:
        self.subprocess_mode = subprocess_mode

    def _script(self, tool: Tool) -> str | None:
        return shutil.which(BDRV_TOOL_NAMES[tool])

    def unavailable(self, tool: Tool) -> str | None:
        if self.subprocess_mode and self._script(tool) is None:
            return f"{BDRV_TOOL_NAMES[tool]} console script not installed (--bdrv-subprocess)"
        return None

    def _entry(self, tool: Tool) -> Callable[[list[str]], int | None]:
        # Imported late: bdrv is developed alongside the harness, and an import error
        # must fail the bdrv run of a test, not the whole plugin.
        module = importlib.import_module(BDRV_MODULES[tool])
        entry: Callable[[list[str]], int | None] = module.main
        return entry

    def run(self, tool: Tool, args: list[str], cwd: str) -> Result:
        self.require(tool)
        argv = [BDRV_TOOL_NAMES[tool], *args]
        if self.subprocess_mode:
            script = self._script(tool)
            assert script is not None
            return run_subprocess(argv, script, cwd)
        main = self._entry(tool)
        files_before = _open_files()
        with _captured_process_state(cwd) as stream:
            try:
                code: object = main(argv)
            except SystemExit as exc:
                code = exc.code
            status = _exit_status(code, stream)
        stream.flush()
        raw = stream.buffer
        assert isinstance(raw, io.BytesIO)
        _check_no_leaked_files(files_before, cwd, BDRV_TOOL_NAMES[tool])
        return Result(_decode(raw.getvalue()), status)

    def spawn_argv(self, tool: Tool, args: list[str]) -> list[str]:
        self.require(tool)
        if self.subprocess_mode:
            script = self._script(tool)
            assert script is not None
            return [script, *args]
        # No installed script needed: run main() under this interpreter, argv[0] as
        # the console script would see it, importing bdrv from where this process does.
        code = (
            f"import sys; sys.path.insert(0, {_bdrv_import_root()!r}); "
            "from importlib import import_module; "
            f"sys.exit(import_module({BDRV_MODULES[tool]!r}).main("
            f"[{BDRV_TOOL_NAMES[tool]!r}] + sys.argv[1:]))"
        )
        return [sys.executable, "-c", code, *args]

    def program_paths(self) -> dict[str, str]:
        paths: dict[str, str] = {}
        for tool in BDRV_TOOL_NAMES:
            script = self._script(tool)
            if script:
                paths[script] = QEMU_TOOL_NAMES[tool]
        return paths


def make_backend(name: str, *, bdrv_subprocess: bool = False, qemu_img: str | None = None,
                 qemu_io: str | None = None) -> Backend:
    if name == "qemu":
        return QemuBackend(qemu_img, qemu_io)
    if name == "bdrv":
        return BdrvBackend(bdrv_subprocess)
    raise ValueError(f"unknown backend {name!r} (expected one of {', '.join(BACKEND_NAMES)})")
