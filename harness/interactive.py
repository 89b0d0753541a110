"""Interactive qemu-io / bdrv-io sessions that stay open across test steps.

A session keeps an image open (and locked) while other steps run. Commands go in on a
pipe: with stdin not a terminal, qemu-io neither echoes input nor edits lines, and it
prints its "qemu-io> " prompt (flushed) before reading each command, so the prompt marks
where a command's output ends. Output comes back on a pseudo-terminal, as for every
other step (see backends.open_pty), so stdout and stderr lines stay in order.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from types import TracebackType

import pexpect
from pexpect.fdpexpect import fdspawn

from .backends import exit_status, open_pty

PROMPT = "qemu-io> "
SESSION_TIMEOUT = 60.0


class SessionError(Exception):
    """The tool did not answer as a qemu-io session should (hang, early exit)."""


class Session:
    """One running qemu-io-compatible process. Use `cmd()` per command, then `close()`."""

    def __init__(
        self,
        argv: list[str],
        cwd: str,
        log: Callable[[str], None],
        status_line: Callable[[int], str],
        timeout: float = SESSION_TIMEOUT,
        prompt: str = PROMPT,
    ) -> None:
        # The tool prompts with its own name ("bdrv-io> "); the log always says qemu-io.
        self._prompt = prompt
        self._log = log
        self._status_line = status_line
        self.exit_status: int | None = None
        master, slave = open_pty()
        try:
            self._proc = subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.PIPE, stdout=slave, stderr=slave,
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._out = fdspawn(
            master, timeout=timeout, encoding="utf-8", codec_errors="backslashreplace"
        )
        # Whatever comes before the first prompt: warnings, or the open error if the
        # tool gave up (then it exits and there is no prompt).
        self._log_output(self._read_until_prompt())

    @property
    def alive(self) -> bool:
        return self.exit_status is None

    def _read_until_prompt(self) -> str:
        try:
            index = self._out.expect_exact([self._prompt, pexpect.EOF])
        except pexpect.TIMEOUT as exc:
            self.kill()
            raise SessionError(f"no prompt within {self._out.timeout}s") from exc
        output: str = self._out.before
        if index == 1:
            self._reap()
        return output

    def _reap(self) -> None:
        self.exit_status = exit_status(self._proc.wait())
        self._out.close()
        if self._proc.stdin:
            self._proc.stdin.close()

    def _send(self, line: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # it exited; reading up to EOF below shows what it said

    def _log_output(self, output: str) -> None:
        if output:
            self._log(output)
        if self.exit_status:
            self._log(self._status_line(self.exit_status))

    def cmd(self, command: str) -> str:
        """Send one command, log it with its output, and return the output."""
        if not self.alive:
            raise SessionError(f"session has exited (status {self.exit_status})")
        self._log(f"{PROMPT}{command}\n")
        self._send(command)
        output = self._read_until_prompt()
        self._log_output(output)
        return output

    def close(self) -> int:
        """Quit the tool, log what it printed on the way out, return its exit status."""
        if self.alive:
            self._log(f"{PROMPT}quit\n")
            self._send("quit")
            output = self._read_until_prompt()
            if self.alive:  # answered with another prompt instead of exiting
                self.kill()
                raise SessionError("tool did not exit on 'quit'")
            self._log_output(output)
        assert self.exit_status is not None
        return self.exit_status

    def kill(self) -> None:
        """Stop the process without logging (cleanup after a failed test)."""
        if self.alive:
            self._proc.kill()
            self._reap()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()
