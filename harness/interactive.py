"""Interactive qemu-io / bdrv-io sessions that stay open across test steps.

A session keeps an image open (and locked) while other steps run, as iotests do with
`qemu-io` reading commands from a pipe. The process talks over plain pipes, not a
terminal: qemu-io then prints its "qemu-io> " prompt and flushes stdout before reading
each command, and does not echo input, so the prompt marks where a command's output ends.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import TracebackType

import pexpect
from pexpect.popen_spawn import PopenSpawn

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
    ) -> None:
        self._log = log
        self._status_line = status_line
        self.exit_status: int | None = None
        self._proc = PopenSpawn(
            argv, cwd=cwd, timeout=timeout, encoding="utf-8", codec_errors="backslashreplace"
        )
        # Whatever comes before the first prompt: warnings, or the open error if the
        # tool gave up (then it exits and there is no prompt).
        self._log_output(self._read_until_prompt())

    @property
    def alive(self) -> bool:
        return self.exit_status is None

    def _read_until_prompt(self) -> str:
        try:
            index = self._proc.expect_exact([PROMPT, pexpect.EOF])
        except pexpect.TIMEOUT as exc:
            self.kill()
            raise SessionError(f"no prompt within {self._proc.timeout}s") from exc
        output: str = self._proc.before
        if index == 1:
            self._reap()
        return output

    def _reap(self) -> None:
        status = self._proc.wait()
        # PopenSpawn reports a signal as a negative status; show it as a shell would.
        self.exit_status = status if status >= 0 else 128 - status

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
        self._proc.sendline(command)
        output = self._read_until_prompt()
        self._log_output(output)
        return output

    def close(self) -> int:
        """Quit the tool, log what it printed on the way out, return its exit status."""
        if self.alive:
            self._log(f"{PROMPT}quit\n")
            self._proc.sendline("quit")
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
            try:
                self._proc.kill(signal.SIGKILL)
            except ProcessLookupError:
                pass
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
