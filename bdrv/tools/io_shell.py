"""bdrv-io: the qemu-io compatible command line and interactive prompt.

`main(argv)` parses the options as qemu-io 7.2 does (glibc getopt_long, same messages
and exit codes), opens the image, then runs the -c commands, or reads commands from
stdin: with QEMU's line editor when stdin is a terminal, line by line otherwise,
printing the "<prog>> " prompt before each. The exit status is 1 if any command
failed. Nothing outlives a call: all state is on an IoSession.
"""

from __future__ import annotations

import os
import sys
import termios
from typing import Any

import bdrv
from bdrv.errors import BlockError
from bdrv.graph import O_COPY_ON_READ, O_NATIVE_AIO, O_NOCACHE, O_RDWR, O_SNAPSHOT, O_UNMAP
from bdrv.options import parse_opts
from bdrv.tools.getopt import UNKNOWN, Getopt, LongOpt
from bdrv.tools.io_commands import command_table, run_command_line
from bdrv.tools.io_open import parse_option_string
from bdrv.tools.io_openflags import parse_aio_mode, parse_cache_mode, parse_discard_mode
from bdrv.tools.io_readline import LineEditor
from bdrv.tools.io_session import IoSession

# fgets() with qemu-io's 1024-byte buffer: longer lines arrive in pieces.
MAX_FGETS = 1023

_SHORT = "hVc:d:f:rsnCmki:t:T:U"
_LONG = (
    LongOpt("help", False, "h"),
    LongOpt("version", False, "V"),
    LongOpt("cmd", True, "c"),
    LongOpt("format", True, "f"),
    LongOpt("read-only", False, "r"),
    LongOpt("snapshot", False, "s"),
    LongOpt("nocache", False, "n"),
    LongOpt("copy-on-read", False, "C"),
    LongOpt("misalign", False, "m"),
    LongOpt("native-aio", False, "k"),
    LongOpt("aio", True, "i"),
    LongOpt("discard", True, "d"),
    LongOpt("cache", True, "t"),
    LongOpt("trace", True, "T"),
    LongOpt("object", True, "object"),
    LongOpt("image-opts", False, "image-opts"),
    LongOpt("force-share", False, "U"),
)

_USAGE = """Usage: {0} [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser

  --object OBJECTDEF   define an object such as 'secret' for
                       passwords and/or encryption keys
  --image-opts         treat file as option string
  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -s, --snapshot       use snapshot file
  -n, --nocache        disable host cache, short for -t none
  -C, --copy-on-read   enable copy-on-read
  -m, --misalign       misalign allocations for O_DIRECT
  -k, --native-aio     use kernel AIO implementation
                       (Linux only, prefer use of -i)
  -i, --aio=MODE       use AIO mode (threads, native or io_uring)
  -t, --cache=MODE     use the given cache mode for the image
  -d, --discard=MODE   use the given discard mode for the image
  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]
                       specify tracing options
                       see qemu-img(1) man page for full description
  -U, --force-share    force shared permissions
  -h, --help           display this help and exit
  -V, --version        output version information and exit

See '{0} -c help' for information on available commands.

See <https://qemu.org/contribute/report-a-bug> for how to report bugs.
More information on the QEMU project at <https://qemu.org>.
"""


class _Exit(Exception):
    """Leave main() with a status (qemu-io calls exit() in these places)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Settings:
    """What the command line asked for."""

    def __init__(self) -> None:
        self.flags = O_UNMAP
        self.writethrough = True
        self.read_only = False
        self.force_share = False
        self.image_opts = False
        self.fmt: str | None = None
        self.commands: list[str] = []
        self.objects: list[str] = []
        self.file: str | None = None
        self.trace_file: str | None = None


def main(argv: list[str]) -> int:
    """Run bdrv-io with `argv` (argv[0] is the program name); returns the exit status."""
    sess = IoSession(argv[0] if argv else "bdrv-io")
    sess.commands = command_table()
    try:
        status = _run(sess, argv)
    except _Exit as stop:
        status = stop.status
    except KeyboardInterrupt:
        status = 130
    except Exception as exc:  # a bdrv bug: say what happened, never dump a traceback
        sess.out.flush()
        sess.error_report(f"internal error: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        try:
            _shutdown(sess)
        except Exception as exc:  # same as above, while closing the image
            sess.error_report(f"internal error: {type(exc).__name__}: {exc}")
            status = 1
    return status


def console_main() -> None:
    from bdrv.tools.memory import tune_malloc

    tune_malloc()
    sys.exit(main(sys.argv))


def _shutdown(sess: IoSession) -> None:
    if sess.terminated is None:
        try:
            sess.close_image()
        finally:
            sess.out.flush()
    else:
        sess.out.flush()
        sess.backend, sess.engine = None, None


def _run(sess: IoSession, argv: list[str]) -> int:
    settings = _parse_command_line(sess, argv)
    sess.image_opts = settings.image_opts
    if settings.fmt is not None and settings.image_opts:
        sess.error_report("--image-opts and -f are mutually exclusive")
        raise _Exit(1)
    if settings.objects:
        sess.error_report("--object is not supported by bdrv-io")
        raise _Exit(1)
    _create_trace_file(sess, settings.trace_file)
    flags = settings.flags | (0 if settings.read_only else O_RDWR)
    if settings.file is not None:
        _open_from_command_line(sess, settings, flags)
    last_error = _command_loop(sess, settings.commands)
    if sess.terminated is not None:
        return sess.terminated
    if sess.engine is not None:
        sess.engine.drain()
    return 1 if last_error < 0 else 0


def _parse_command_line(sess: IoSession, argv: list[str]) -> _Settings:
    s = _Settings()
    parser = Getopt([argv[0] if argv else sess.prog, *argv[1:]], _SHORT, _LONG)
    for opt, value in parser:
        arg = value or ""
        if opt in ("s", "n", "C", "k"):
            s.flags |= {"s": O_SNAPSHOT, "n": O_NOCACHE, "C": O_COPY_ON_READ,
                        "k": O_NATIVE_AIO}[opt]
            s.writethrough = s.writethrough and opt != "n"
        elif opt == "t":
            cache = parse_cache_mode(arg, s.flags)
            if cache is None:
                sess.error_report(f"Invalid cache option: {arg}")
                raise _Exit(1)
            s.flags, s.writethrough = cache
        elif opt in ("d", "i"):
            parse = parse_discard_mode if opt == "d" else parse_aio_mode
            flags = parse(arg, s.flags)
            if flags is None:
                sess.error_report(f"Invalid {'discard' if opt == 'd' else 'aio'} option: {arg}")
                raise _Exit(1)
            s.flags = flags
        elif opt == "T":
            _trace_option(sess, s, arg)
        elif opt in ("h", "V"):
            sess.printf(_USAGE.format(sess.prog) if opt == "h" else _version(sess.prog))
            raise _Exit(0)
        elif opt == UNKNOWN:
            sess.printf(_USAGE.format(sess.prog))
            raise _Exit(1)
        else:
            _simple_option(s, opt, arg)
    if len(parser.operands) > 1:
        sess.printf(_USAGE.format(sess.prog))
        raise _Exit(1)
    s.file = parser.operands[0] if parser.operands else None
    return s


def _version(prog: str) -> str:
    return (f"{prog} version {bdrv.__version__} (bdrv, qemu-io 7.2 compatible)\n"
            "Copyright (c) 2026 the bdrv developers\n")


def _trace_option(sess: IoSession, s: _Settings, text: str) -> None:
    """-T: bdrv has no trace events, so each one named is unknown (and "help" lists none)."""
    try:
        pairs = parse_opts(text, "enable")
    except BlockError as exc:
        sess.report_error(exc)
        raise _Exit(1) from None
    for name, _ in pairs:
        if name not in ("enable", "events", "file"):
            sess.error_report(f"Invalid parameter '{name}'")
            raise _Exit(1)
    for name, value in pairs:
        if name == "enable":
            if value in ("help", "?"):
                raise _Exit(0)
            _enable_event(sess, value, "")
        elif name == "events":
            _enable_events_from(sess, value)
        else:
            s.trace_file = value


def _enable_event(sess: IoSession, pattern: str, where: str) -> None:
    event = pattern[1:] if pattern.startswith("-") else pattern
    if "*" not in event:
        sess.eprintf(f"{sess.prog}:{where} warning: trace event '{event}' does not exist\n"
                     if where else f"{sess.prog}: warning: trace event '{event}' does not exist\n")


def _enable_events_from(sess: IoSession, path: str) -> None:
    """events=FILE: one pattern a line, '#' comments; read at once, as QEMU does."""
    try:
        with open(path, "rb") as src:
            data = src.read()
        lines = [part + b"\n" for part in data.split(b"\n")[:-1]]
        if not data.endswith(b"\n") and data:
            lines.append(data.rsplit(b"\n", 1)[-1])
    except OSError as exc:
        sess.eprintf(f"{sess.prog}:{path}: {os.strerror(exc.errno or 5)}\n")
        raise _Exit(1) from None
    for number, raw in enumerate(lines, start=1):
        # QEMU cuts the last character as the newline, even on a last line without one.
        line = raw[:-1].decode("utf-8", "surrogateescape")
        if len(raw) > 1 and not line.startswith("#"):
            _enable_event(sess, line, f"{path}:{number}:")


def _create_trace_file(sess: IoSession, path: str | None) -> None:
    if path is None:
        return
    try:
        with open(path, "w"):
            pass
    except OSError as exc:
        sess.error_report(f"Error opening logfile {path}: {os.strerror(exc.errno or 5)}")
        raise _Exit(1) from None


def _simple_option(s: _Settings, opt: str, arg: str) -> None:
    if opt == "f":
        s.fmt = arg
    elif opt == "c":
        s.commands.append(arg)
    elif opt == "r":
        s.read_only = True
    elif opt == "U":
        s.force_share = True
    elif opt == "object":
        s.objects.append(arg)
    elif opt == "image-opts":
        s.image_opts = True
    # "m" (misalign buffers for O_DIRECT) changes nothing for a Python core.


def _open_from_command_line(sess: IoSession, s: _Settings, flags: int) -> None:
    assert s.file is not None
    opts: dict[str, Any] | None = None
    name: str | None = s.file
    if s.image_opts:
        opts = {}
        if not parse_option_string(sess, s.file, opts):
            raise _Exit(1)
        name = None
    elif s.fmt is not None:
        opts = {"driver": s.fmt}
    if not sess.open_image(name, flags, s.writethrough, s.force_share, opts):
        raise _Exit(1)


def _command_loop(sess: IoSession, commands: list[str]) -> int:
    last_error = 0
    if commands:
        for line in commands:
            if sess.quit:
                break
            ret = run_command_line(sess, line)
            last_error = ret if ret < 0 else last_error
        return last_error
    reader = _LineReader(sess)
    try:
        while not sess.quit:
            sess.printf(f"{sess.prog}> ")
            sess.out.flush()
            fetched = reader.fetch()
            if fetched is None:
                break
            ret = run_command_line(sess, fetched)
            last_error = ret if ret < 0 else last_error
    finally:
        reader.close()
    return last_error


class _LineReader:
    """Where commands come from: QEMU's line editor on a terminal, else fgets()."""

    def __init__(self, sess: IoSession) -> None:
        self.sess = sess
        self.editor: LineEditor | None = None
        self._fd = -1
        self._saved: list[Any] | None = None
        self._pending = b""
        self._eof_char = 4
        if _isatty(sys.stdin):
            self._fd = sys.stdin.fileno()
            self._setup_terminal()
            self.editor = LineEditor(f"{sess.prog}> ", sess.printf, sess.out.flush,
                                     self._complete)

    def _setup_terminal(self) -> None:
        try:
            attrs = termios.tcgetattr(self._fd)
        except termios.error:
            return
        self._saved = [list(a) if isinstance(a, list) else a for a in attrs]
        self._eof_char = ord(attrs[6][termios.VEOF])
        attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)

    def close(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
            self._saved = None

    def _complete(self, typed: str) -> list[str]:
        return [name for name in self.sess.commands if name.startswith(typed)]

    def fetch(self) -> str | None:
        if self.editor is None:
            text: str = sys.stdin.readline(MAX_FGETS)
            if not text:
                return None
            return text[:-1] if text.endswith("\n") else text
        editor = self.editor
        editor.start(f"{self.sess.prog}> ")
        while True:
            ch = self._getchar()
            if ch is None or ch == self._eof_char:
                self.sess.printf("\n")
                return None
            done = editor.handle_byte(ch)
            if done is not None:
                return done.decode("utf-8", "surrogateescape")

    def _getchar(self) -> int | None:
        if not self._pending:
            try:
                self._pending = os.read(self._fd, 4096)
            except OSError:
                return None
            if not self._pending:
                return None
        ch, self._pending = self._pending[0], self._pending[1:]
        return ch


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":
    console_main()
