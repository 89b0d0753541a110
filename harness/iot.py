"""The per-test context behind the `iot` fixture: scratch dir, steps, and the log.

Every step logs the command it runs (as `$ qemu-img ...`, with the canonical program
name whichever backend runs it), then the tool's filtered stdout+stderr, then
`[exit status N]` when the status is not 0. The log is what gets compared with the
reference file once the test body returns.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from .backends import BDRV_TOOL_NAMES, QEMU_TOOL_NAMES, Backend, Result, Tool, ToolMissing
from .corrupt import RawCorrupter, corrupter, digest
from .filters import OutputFilter
from .interactive import Session
from .machine import Machine, MachineError, program_argv

# argv[0] values that route a generic `iot.run()` to a backend's tool.
_TOOL_BY_PROGRAM: dict[str, Tool] = {
    "qemu-img": "img",
    "bdrv-img": "img",
    "qemu-io": "io",
    "bdrv-io": "io",
}


def status_line(status: int) -> str:
    """How a non-zero exit status appears in the log."""
    return f"[exit status {status}]\n"


NO_NEWLINE = "[no newline at end of output]\n"


def notrun(reason: str) -> None:
    """Skip the current test the iotests way: reported as *not run* with a reason."""
    pytest.skip(f"not run: {reason}")


class StepError(Exception):
    """A step could not complete: the tool raised instead of exiting, or (in-process)
    returned with scratch files still open."""


@dataclass(frozen=True)
class Image:
    """A scratch image: where it is and the format to open it with."""

    path: Path
    fmt: str

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


PathArg = Image | Path | str


def _split(args: str | Sequence[str]) -> list[str]:
    return shlex.split(args) if isinstance(args, str) else list(args)


class Iot:
    """Runs a test's steps on one backend and one format, logging as it goes."""

    def __init__(
        self,
        backend: Backend,
        fmt: str,
        test_dir: Path,
        backends: dict[str, Backend],
    ) -> None:
        self.backend = backend
        self.fmt = fmt
        self.test_dir = test_dir
        self._backends = backends
        program_paths: dict[str, str] = {}
        for b in backends.values():
            program_paths.update(b.program_paths())
        self.filter: Callable[[str], str] = OutputFilter(str(test_dir), fmt, program_paths)
        self._log: list[str] = []
        self._sessions: list[Session] = []
        self._machines: list[tuple[Machine, str]] = []

    # -- the log ---------------------------------------------------------------------

    @property
    def output(self) -> str:
        """The filtered log so far (what is compared with the reference)."""
        return "".join(self._log)

    def log(self, text: str) -> None:
        """Add free text (a heading, a comment) to the log, filtered like tool output."""
        self._append(text if text.endswith("\n") else text + "\n")

    def add_filter(self, extra: Callable[[str], str]) -> None:
        """Apply `extra` after the standard filters to everything logged from now on."""
        inner = self.filter

        def chained(text: str) -> str:
            return extra(inner(text))

        self.filter = chained

    def _append(self, text: str) -> None:
        self._log.append(self.filter(text))

    def _log_output(self, output: str) -> None:
        if output:
            self._append(output)
            if not output.endswith("\n"):
                self._log.append(NO_NEWLINE)

    def _log_command(self, argv: Sequence[str], by: str | None, note: str = "") -> None:
        notes = [f"by {by}"] if by else []
        notes += [note] if note else []
        line = "$ " + shlex.join(argv) + (f"  # {', '.join(notes)}" if notes else "")
        self._append(line + "\n")

    def _log_result(self, result: Result) -> None:
        self._log_output(result.output)
        if result.status:
            self._log.append(status_line(result.status))

    # -- scratch files ---------------------------------------------------------------

    def path(self, name: str) -> Path:
        """A file name in the scratch directory (TEST_DIR in the log)."""
        return self.test_dir / name

    def image(self, name: str | None = None, fmt: str | None = None) -> Image:
        """An Image handle for a scratch file, without creating it."""
        fmt = fmt or self.fmt
        return Image(self.path(name or f"t.{fmt}"), fmt)

    # -- backends --------------------------------------------------------------------

    def _backend(self, by: str | None) -> Backend:
        if by is None:
            return self.backend
        if by not in self._backends:
            raise ValueError(f"by={by!r}: no such backend ({', '.join(self._backends)})")
        return self._backends[by]

    def _run_tool(self, tool: Tool, args: list[str], by: str | None) -> Result:
        __tracebackhide__ = True  # a failing step should point at the test line
        backend = self._backend(by)
        self._log_command([QEMU_TOOL_NAMES[tool], *args], by)
        try:
            result = backend.run(tool, args, str(self.test_dir))
        except ToolMissing as exc:
            notrun(f"{backend.name} backend: {exc}")
            raise  # unreachable: notrun raises
        except Exception as exc:
            raise StepError(
                f"{backend.name} backend failed running {QEMU_TOOL_NAMES[tool]} "
                f"{shlex.join(args)}: {exc!r}"
            ) from exc
        self._log_result(result)
        return result

    # -- steps -----------------------------------------------------------------------

    def img(self, args: str | Sequence[str], *images: PathArg, by: str | None = None) -> Result:
        """qemu-img ARGS IMAGES... (a string is split like a shell would)."""
        return self._run_tool("img", [*_split(args), *(os.fspath(i) for i in images)], by)

    def create(
        self,
        size: str | int | None,
        fmt: str | None = None,
        name: str | None = None,
        opts: str | Sequence[str] | None = None,
        args: str | Sequence[str] = (),
        by: str | None = None,
    ) -> Image:
        """qemu-img create -f FMT [-o OPTS] [ARGS] TEST_DIR/NAME [SIZE]; returns the Image."""
        image = self.image(name, fmt)
        argv = ["create", "-f", image.fmt]
        if opts:
            argv += ["-o", opts if isinstance(opts, str) else ",".join(opts)]
        argv += [*_split(args), str(image.path)]
        if size is not None:
            argv.append(str(size))
        self._run_tool("img", argv, by)
        return image

    def io(
        self,
        img: PathArg | None,
        cmds: str | Iterable[str] = (),
        opts: str | Sequence[str] = (),
        fmt: str | None = None,
        by: str | None = None,
    ) -> Result:
        """qemu-io -f FMT [OPTS] -c CMD... IMAGE.

        fmt=None takes the image's format (or the test's); fmt="" leaves -f out so the
        tool probes. img=None runs without an image (e.g. `-c help`).
        """
        commands = [cmds] if isinstance(cmds, str) else list(cmds)
        cflags = [arg for c in commands for arg in ("-c", c)]
        return self._run_tool("io", self._io_argv(img, opts, fmt, cflags), by)

    def _io_argv(
        self,
        img: PathArg | None,
        opts: str | Sequence[str],
        fmt: str | None,
        cflags: Sequence[str] = (),
    ) -> list[str]:
        # Same order as iotests' $QEMU_IO: -f FMT, options, -c commands, image last.
        if img is None:
            return [*_split(opts), *cflags]
        if fmt is None:
            fmt = img.fmt if isinstance(img, Image) else self.fmt
        fflag = ["-f", fmt] if fmt else []
        return [*fflag, *_split(opts), *cflags, os.fspath(img)]

    def run(self, argv: Sequence[str], by: str | None = None) -> Result:
        """Run any command. qemu-img/qemu-io (or bdrv-*) go to the backend; others run
        as plain subprocesses in the scratch directory."""
        argv = list(argv)
        tool = _TOOL_BY_PROGRAM.get(argv[0])
        if tool is not None:
            return self._run_tool(tool, argv[1:], by)
        self._log_command(argv, None)
        proc = subprocess.run(
            argv, cwd=self.test_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, check=False, timeout=300,
        )
        result = Result(proc.stdout.decode("utf-8", "backslashreplace"), proc.returncode & 0xFF)
        self._log_result(result)
        return result

    def interactive(
        self,
        img: PathArg | None,
        opts: str | Sequence[str] = (),
        fmt: str | None = None,
        by: str | None = None,
    ) -> Session:
        """Start qemu-io on IMAGE reading commands from a pipe; keep it open across steps."""
        backend = self._backend(by)
        args = self._io_argv(img, opts, fmt)
        self._log_command([QEMU_TOOL_NAMES["io"], *args], by, note="interactive")
        try:
            argv = backend.spawn_argv("io", args)
        except ToolMissing as exc:
            notrun(f"{backend.name} backend: {exc}")
            raise
        names = BDRV_TOOL_NAMES if backend.name == "bdrv" else QEMU_TOOL_NAMES
        session = Session(argv, str(self.test_dir), self._log_output, status_line,
                          prompt=f"{names['io']}> ")
        self._sessions.append(session)
        return session

    def corrupt(self, img: PathArg, fmt: str | None = None) -> RawCorrupter:
        """A structure-aware corrupter for IMG (harness.corrupt); each edit is logged."""
        if fmt is None:
            fmt = img.fmt if isinstance(img, Image) else self.fmt
        return corrupter(os.fspath(img), fmt, self.log)

    def checksum(self, img: PathArg) -> str:
        """Log and return the SHA-256 of IMG's bytes (to show a step left it unchanged)."""
        value = digest(os.fspath(img))
        self.log(f"sha256 {Path(os.fspath(img)).name}: {value}")
        return value

    def machine(self, args: Sequence[str] = (), by: str | None = None,
                kind: str | None = None, name: str = "vm") -> Machine:
        """Launch the backend's QMP daemon (qemu-storage-daemon or bdrv-storage-daemon,
        or `kind`) in the scratch directory; `m.qmp_log(...)` writes to this log."""
        backend = self._backend(by)
        if kind is None:
            kind = "bdrv-storage-daemon" if backend.name == "bdrv" else "qemu-storage-daemon"
        try:
            program_argv(kind)
        except MachineError as exc:
            notrun(f"{backend.name} backend: {exc}")
        # Unix socket paths are short (108 bytes): keep them out of pytest's tmp tree.
        sock_dir = tempfile.mkdtemp(prefix="iot-qmp-")
        m = Machine(kind, sock_dir, name=name, args=args, log=self.log, cwd=self.test_dir)
        self._machines.append((m, sock_dir))
        m.launch()
        return m

    def notrun(self, reason: str) -> None:
        """Stop here and report the test as *not run* on this backend."""
        notrun(reason)

    def kill_sessions(self) -> None:
        """Stop sessions a test left open (no logging: the test is over)."""
        for s in self._sessions:
            s.kill()
        self._sessions.clear()
        for m, sock_dir in self._machines:
            m.kill()
            shutil.rmtree(sock_dir, ignore_errors=True)
        self._machines.clear()
