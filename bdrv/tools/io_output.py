"""qemu-io's output: C stdio buffering and the number, time and hex formats it prints.

qemu-io writes its results with printf() and its errors to the unbuffered stderr. When
stdout is a pipe or a file, C stdio holds stdout in a 4 KiB buffer, so in a combined
stream the errors show up *before* results printed earlier. `StdoutBuffer` reproduces
that, so bdrv-io's combined output is the same bytes as qemu-io's.

`cvtstr`, `timestr` and `report_lines` follow qemu-io's own formatting (it is not the
size formatting qemu-img uses: "1.500 KiB", "512 bytes", "565.289208 bytes").
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

# glibc gives a stream a buffer of st_blksize bytes: one page for pipes and files.
STDIO_BUFSIZ = 4096

_UNITS = ((60, " EiB"), (50, " PiB"), (40, " TiB"), (30, " GiB"), (20, " MiB"), (10, " KiB"))


class StdoutBuffer:
    """printf() into a C stdout: fully buffered unless stdout is a terminal.

    The stream is looked up (sys.stdout) only when data leaves the buffer, so callers
    that redirect sys.stdout around a whole run capture everything.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0
        self.line_buffered = _program_order()

    def write(self, text: str) -> None:
        if not text:
            return
        self._parts.append(text)
        self._size += len(text.encode("utf-8", "surrogateescape"))
        if self.line_buffered:
            if "\n" in text:
                self.flush()
        elif self._size > STDIO_BUFSIZ:
            self._spill()

    def _spill(self) -> None:
        # glibc writes out whole buffers' worth and keeps the remainder.
        data = "".join(self._parts).encode("utf-8", "surrogateescape")
        keep = len(data) % STDIO_BUFSIZ
        out, rest = data[: len(data) - keep], data[len(data) - keep :]
        _emit(out.decode("utf-8", "surrogateescape"))
        self._parts = [rest.decode("utf-8", "surrogateescape")] if rest else []
        self._size = len(rest)

    def flush(self) -> None:
        if self._parts:
            _emit("".join(self._parts))
            self._parts = []
            self._size = 0

    def discard(self) -> None:
        """Lose what is buffered, as abort() does."""
        self._parts = []
        self._size = 0


def _program_order() -> bool:
    """Line buffering for a terminal, and for a stream that is no OS file at all.

    The latter is an in-process capture (a test harness), which stands for a terminal:
    output in the order it was printed.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return True
    return os.isatty(fd)


def _emit(text: str) -> None:
    write_raw(sys.stdout, text)


def write_raw(stream: Any, text: str) -> None:
    """Write text whose undecodable bytes are surrogate escapes, as those bytes."""
    raw = getattr(stream, "buffer", None)
    if raw is not None:
        # Bytes as typed or named (non-UTF-8 file names) go out unchanged.
        stream.flush()
        raw.write(text.encode("utf-8", "surrogateescape"))
        raw.flush()
        return
    stream.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    stream.flush()


def write_stderr(text: str) -> None:
    """Unbuffered stderr, like C's."""
    write_raw(sys.stderr, text)


def c_float(value: float, precision: int) -> str:
    """printf("%.Nf") including glibc's spelling of infinities and NaN."""
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{precision}f}"


def cvtstr(value: float) -> str:
    """qemu-io's human size: '%.3f' in the largest binary unit, '.000' trimmed."""
    text, suffix = c_float(value, 6), " bytes"
    for shift, unit in _UNITS:
        if value >= float(1 << shift):
            text, suffix = c_float(value / float(1 << shift), 3), unit
            break
    trim = text.find(".000")
    if trim >= 0:
        return text[:trim] + suffix
    return text + suffix


def timestr(seconds: int, nanos: int, verbose: bool) -> str:
    """qemu-io's elapsed time: '00.00 sec' or 'H:MM:SS.SS' (always that with -C)."""
    frac = nanos / 1e9
    if verbose or seconds:
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{secs + frac:05.2f}"
    return f"{frac:05.2f} sec"


def _per_second(value: float, seconds: int, nanos: int) -> float:
    elapsed = seconds + nanos / 1e9
    if elapsed == 0.0:
        if value == 0.0:
            return -math.nan  # 0.0/0.0 on x86 is the negative NaN
        return math.inf
    return value / elapsed


def report_lines(
    op: str, elapsed_ns: int, offset: int, count: int, total: int, ops: int, machine: bool
) -> str:
    """The two report lines after an I/O command (one CSV line with -C)."""
    seconds, nanos = divmod(max(elapsed_ns, 0), 1_000_000_000)
    when = timestr(seconds, nanos, machine)
    bytes_rate = _per_second(float(total), seconds, nanos)
    ops_rate = _per_second(float(ops), seconds, nanos)
    if machine:
        return f"{total},{ops},{when},{c_float(bytes_rate, 3)},{c_float(ops_rate, 3)}\n"
    return (
        f"{op} {total}/{count} bytes at offset {offset}\n"
        f"{cvtstr(float(total))}, {ops} ops; {when} "
        f"({cvtstr(bytes_rate)}/sec and {c_float(ops_rate, 4)} ops/sec)\n"
    )


def _printable(byte: int) -> str:
    # C isalnum() in the C locale: letters and digits only.
    ch = chr(byte)
    return ch if ch.isascii() and ch.isalnum() else "."


_PRINTABLE = "".join(_printable(b) for b in range(256))


def hex_dump(data: bytes, offset: int) -> str:
    """read -v's dump: 16 bytes a line, hex then letters/digits (others as '.')."""
    lines = []
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        hexes = chunk.hex(" ") + " "
        text = chunk.decode("latin-1").translate(_TRANSLATE)
        lines.append(f"{offset + start:08x}:  {hexes} {text}\n")
    return "".join(lines)


_TRANSLATE = {i: _PRINTABLE[i] for i in range(256)}
