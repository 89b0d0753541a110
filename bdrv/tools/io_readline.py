"""The line editor bdrv-io uses when stdin is a terminal, drawing what QEMU's draws.

qemu-io switches the terminal to non-canonical mode without echo and edits the line
itself: after every byte it redraws the line (cursor back over the old text, the new
text, "erase to end of line", cursor to its place). Under pexpect those bytes are the
output, so they are reproduced here exactly, together with QEMU's keys: arrows and
Home/End/Delete sequences, ^A ^E ^W ^L, backspace, history (64 entries) and
completion of command names with Tab.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_HISTORY = 64
MAX_LINE = 4095
_NORMAL, _ESC, _CSI, _SS3 = range(4)
_SPACE = b" \t\n\v\f\r"


class LineEditor:
    """State of QEMU's ReadLineState; feed bytes with `handle_byte`."""

    def __init__(
        self,
        prompt: str,
        write: Callable[[str], None],
        flush: Callable[[], None],
        complete: Callable[[str], list[str]],
    ) -> None:
        self.prompt = prompt
        self._write = write
        self._flush = flush
        self._complete = complete
        self.buf = bytearray()
        self.index = 0
        self._last = bytearray()
        self._last_index = 0
        self._state = _NORMAL
        self._param = 0
        self.history: list[bytes] = []
        self._hist_entry = -1

    def start(self, prompt: str) -> None:
        """readline_start(): a new line; the prompt itself is printed by the caller."""
        self.prompt = prompt
        self.buf = bytearray()
        self.index = 0

    # -- output ------------------------------------------------------------------------
    def _print(self, data: bytes | str) -> None:
        text = data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")
        self._write(text)

    def show_prompt(self) -> None:
        self._print(self.prompt)
        self._flush()
        self._last = bytearray()
        self._last_index = 0
        self._state = _NORMAL

    def _update(self) -> None:
        if self.buf != self._last:
            self._print(b"\033[D" * self._last_index + bytes(self.buf) + b"\033[K")
            self._last = bytearray(self.buf)
            self._last_index = len(self.buf)
        if self.index != self._last_index:
            delta = self.index - self._last_index
            self._print(("\033[C" if delta > 0 else "\033[D") * abs(delta))
            self._last_index = self.index
        self._flush()

    # -- input -------------------------------------------------------------------------
    def handle_byte(self, ch: int) -> bytes | None:
        """Process one input byte; returns the finished line on Enter."""
        line = None
        if self._state == _NORMAL:
            line = self._normal(ch)
        elif self._state == _ESC:
            if ch == ord("["):
                self._state, self._param = _CSI, 0
            elif ch == ord("O"):
                self._state, self._param = _SS3, 0
            else:
                self._state = _NORMAL
        elif self._state == _CSI:
            self._csi(ch)
        else:
            if ch == ord("F"):
                self.index = len(self.buf)
            elif ch == ord("H"):
                self.index = 0
            self._state = _NORMAL
        self._update()
        return line

    def _normal(self, ch: int) -> bytes | None:
        if ch == 1:
            self.index = 0
        elif ch == 4:
            self._delete()
        elif ch == 5:
            self.index = len(self.buf)
        elif ch == 9:
            self._completion()
        elif ch == 12:
            self._print("\033[2J\033[1;1H")
            self.show_prompt()
        elif ch in (10, 13):
            line = bytes(self.buf)
            self._hist_add(line)
            self._print("\n")
            self.buf = bytearray()
            self.index = 0
            self._last = bytearray()
            self._last_index = 0
            return line
        elif ch == 23:
            self._backword()
        elif ch == 27:
            self._state = _ESC
        elif ch in (8, 127):
            if self.index > 0:
                del self.buf[self.index - 1]
                self.index -= 1
        elif ch == 155:
            self._state = _CSI
        elif ch >= 32:
            self._insert(ch)
        return None

    def _csi(self, ch: int) -> None:
        if ch in (ord("A"), ord("F")):
            self._up()
        elif ch in (ord("B"), ord("E")):
            self._down()
        elif ch == ord("D"):
            self.index = max(self.index - 1, 0)
        elif ch == ord("C"):
            self.index = min(self.index + 1, len(self.buf))
        elif ord("0") <= ch <= ord("9"):
            self._param = self._param * 10 + ch - ord("0")
            return
        elif ch == ord("~"):
            if self._param == 1:
                self.index = 0
            elif self._param == 3:
                self._delete()
            elif self._param == 4:
                self.index = len(self.buf)
        self._state = _NORMAL

    # -- editing -------------------------------------------------------------------------
    def _insert(self, ch: int) -> None:
        if self.index < MAX_LINE:
            self.buf.insert(self.index, ch)
            self.index += 1

    def _delete(self) -> None:
        if self.index < len(self.buf):
            del self.buf[self.index]

    def _backword(self) -> None:
        if self.index == 0 or self.index > len(self.buf):
            return
        start = self.index - 1
        while start >= 0 and self.buf[start] in _SPACE:
            start -= 1
        while start >= 0 and self.buf[start] not in _SPACE:
            start -= 1
        start += 1
        del self.buf[start : self.index]
        self.index = start

    # -- history ---------------------------------------------------------------------------
    def _hist_add(self, line: bytes) -> None:
        if line:
            if line in self.history:
                self.history.remove(line)
            self.history.append(line)
            del self.history[:-MAX_HISTORY]
        self._hist_entry = -1

    def _up(self) -> None:
        if self._hist_entry == 0:
            return
        if self._hist_entry == -1:
            self._hist_entry = len(self.history)
        self._hist_entry -= 1
        if self._hist_entry >= 0:
            self.buf = bytearray(self.history[self._hist_entry])
            self.index = len(self.buf)

    def _down(self) -> None:
        if self._hist_entry == -1:
            return
        self._hist_entry += 1
        if self._hist_entry < len(self.history):
            self.buf = bytearray(self.history[self._hist_entry])
        else:
            self.buf = bytearray()
            self._hist_entry = -1
        self.index = len(self.buf)

    # -- completion ------------------------------------------------------------------------
    def _completion(self) -> None:
        typed = bytes(self.buf[: self.index]).decode("utf-8", "surrogateescape")
        found = self._complete(typed)
        if not found:
            return
        done = len(typed)
        if len(found) == 1:
            for ch in found[0][done:].encode():
                self._insert(ch)
            if not found[0].endswith("/"):
                self._insert(ord(" "))
            return
        found.sort()
        self._print("\n")
        prefix = len(found[0])
        for word in found[1:]:
            prefix = min(prefix, len(word))
            for j in range(prefix):
                if word[j] != found[0][j]:
                    prefix = j
                    break
        for ch in found[0][done:prefix].encode():
            self._insert(ch)
        width = min(max(max(len(w) for w in found) + 2, 10), 80)
        columns = 80 // width
        for i, word in enumerate(found):
            self._print(word.ljust(width))
            if (i + 1) % columns == 0 or i == len(found) - 1:
                self._print("\n")
        self.show_prompt()
