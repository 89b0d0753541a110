"""bdrv-io's command table, the dispatcher, `help`, and the commands without data I/O.

A command line is split on single spaces (quotes mean nothing, as in qemu-io), looked
up by name or one-letter alias, checked for an open image and its argument count,
given the extra permissions it needs (write, resize), and run. Each command returns 0
or a negative errno; any negative result makes the process exit with status 1.
"""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from bdrv.errors import BlockError
from bdrv.graph import PERM_RESIZE, PERM_WRITE
from bdrv.sizes import parse_io_number
from bdrv.tools.getopt import Getopt
from bdrv.tools.io_help import DISCARD_HELP, SIGRAISE_HELP
from bdrv.tools.io_output import cvtstr
from bdrv.tools.io_session import CMD_FLAG_GLOBAL, CMD_NOFILE_OK, IoSession

CommandFn = Callable[[IoSession, list[str]], int]
EINVAL = -errno.EINVAL
NSIG = 65
# Signals after which qemu-io carries on: ignored by default or by QEMU, blocked and
# consumed by its event loop, or refused by raise(). Stop signals would stop it.
_SURVIVED_SIGNALS = frozenset({0, 7, 10, 13, 14, 17, 18, 19, 20, 21, 22, 23, 28, 29, 32, 33,
                               65})
_PREALLOC_MODES = ("off", "metadata", "falloc", "full")


@dataclass(frozen=True)
class Command:
    """One entry of the table (qemu-io's cmdinfo_t)."""

    name: str
    func: CommandFn
    argmin: int = 0
    argmax: int = 0
    args: str | None = None
    oneline: str = ""
    help: str = ""
    altname: str | None = None
    flags: int = 0
    perm: int = 0


def command_table() -> dict[str, Command]:
    """All commands, keyed and ordered by name (as qemu-io sorts them)."""
    from bdrv.tools.io_open import OPEN_COMMANDS
    from bdrv.tools.io_reopen import REOPEN_COMMANDS
    from bdrv.tools.io_rw import RW_COMMANDS

    cmds = [*MISC_COMMANDS, *RW_COMMANDS, *OPEN_COMMANDS, *REOPEN_COMMANDS]
    return {c.name: c for c in sorted(cmds, key=lambda c: c.name)}


def find_command(sess: IoSession, name: str) -> Command | None:
    for cmd in sess.commands.values():
        if name in (cmd.name, cmd.altname):
            assert isinstance(cmd, Command)
            return cmd
    return None


def run_command_line(sess: IoSession, line: str) -> int:
    """Split and run one command line; 0 or a negative errno."""
    words = [w for w in line.split(" ") if w]
    if not words:
        return 0
    cmd = find_command(sess, words[0])
    if cmd is None:
        sess.eprintf(f'command "{words[0]}" not found\n')
        return EINVAL
    return _run(sess, cmd, words)


def _run(sess: IoSession, cmd: Command, argv: list[str]) -> int:
    if not cmd.flags & (CMD_FLAG_GLOBAL | CMD_NOFILE_OK) and sess.backend is None:
        sess.eprintf("no file open, try 'help open'\n")
        return EINVAL
    count = len(argv) - 1
    if count < cmd.argmin or (cmd.argmax != -1 and count > cmd.argmax):
        if cmd.argmax == -1:
            expected = f"at least {cmd.argmin} arguments"
        elif cmd.argmin == cmd.argmax:
            expected = f"{cmd.argmin} arguments"
        else:
            expected = f"between {cmd.argmin} and {cmd.argmax} arguments"
        sess.eprintf(f"bad argument count {count} to {argv[0]}, expected {expected}\n")
        return EINVAL
    if cmd.perm and sess.backend is not None:
        backend = sess.backend
        perm, shared = backend.child.perm, backend.child.shared
        if cmd.perm & ~perm:
            try:
                backend.set_perm(perm | cmd.perm, shared)
            except BlockError as exc:
                sess.report_error(exc)
                return -(exc.errno or errno.EPERM)
    try:
        return cmd.func(sess, argv)
    except BlockError as exc:  # not expected: commands report their own errors
        sess.report_error(exc)
        return -(exc.errno or errno.EIO)
    except (ArithmeticError, LookupError, TypeError, ValueError, OSError) as exc:
        # A bdrv bug; the command fails and the session goes on.
        sess.error_report(f"internal error in {cmd.name}: {type(exc).__name__}: {exc}")
        return -errno.EIO


def usage(sess: IoSession, cmd: Command) -> int:
    """qemuio_command_usage(): the one-line synopsis, always with the real name."""
    sess.printf(f"{cmd.name} {cmd.args} -- {cmd.oneline}\n")
    return EINVAL


def options(argv: list[str], spec: str) -> Getopt:
    """getopt over a command's words; messages are prefixed with the word typed."""
    return Getopt(list(argv), spec)


def number(sess: IoSession, text: str) -> int | None:
    """qemu-io's cvtnum; prints the parsing error and returns None on failure."""
    try:
        return parse_io_number(text, warn=sess.warn_report)
    except BlockError as exc:
        sess.printf(exc.message + "\n")
        return None


def strerror(ret: int) -> str:
    import os

    return os.strerror(-ret)


# -- help -------------------------------------------------------------------------
def _oneline(name: str, cmd: Command) -> str:
    args = f"{cmd.args} " if cmd.args is not None else ""
    return f"{name} {args}-- {cmd.oneline}\n"


def help_f(sess: IoSession, argv: list[str]) -> int:
    if len(argv) < 2:
        for cmd in sess.commands.values():
            sess.printf(_oneline(cmd.name, cmd))
        sess.printf("\nUse 'help commandname' for extended help.\n")
        return 0
    found = find_command(sess, argv[1])
    if found is None:
        sess.printf(f"command {argv[1]} not found\n")
        return EINVAL
    sess.printf(_oneline(argv[1], found) + found.help)
    return 0


# -- information -----------------------------------------------------------------------
def length_f(sess: IoSession, argv: list[str]) -> int:
    try:
        size = sess.require_backend().getlength()
    except BlockError as exc:
        sess.printf(f"getlength: {strerror(-exc.errno)}\n")
        return -exc.errno
    sess.printf(cvtstr(float(size)) + "\n")
    return 0


def info_f(sess: IoSession, argv: list[str]) -> int:
    node = sess.require_backend().node
    drv = node.driver
    sess.printf(f"format name: {drv.format_name}\n")
    if drv.protocol_name is not None:
        sess.printf(f"format name: {drv.protocol_name}\n")
    try:
        info = drv.get_info()
    except BlockError as exc:
        return -(exc.errno or errno.ENOTSUP)
    sess.printf(f"cluster size: {cvtstr(float(info.get('cluster_size', 0)))}\n")
    sess.printf(f"vm state offset: {cvtstr(float(info.get('vm_state_offset', 0)))}\n")
    try:
        specific = drv.get_specific_info()
    except BlockError:
        return -errno.EIO
    if specific:
        from bdrv.tools.output import dump_specific_info

        sess.printf("Format specific information:\n" + dump_specific_info(specific))
    return 0


def alloc_f(sess: IoSession, argv: list[str]) -> int:
    start = number(sess, argv[1])
    if start is None:
        return EINVAL
    count = 512
    if len(argv) == 3:
        parsed = number(sess, argv[2])
        if parsed is None:
            return EINVAL
        count = parsed
    node = sess.require_backend().node
    offset, remaining, allocated = start, count, 0
    while remaining:
        try:
            is_alloc, num = node.is_allocated(offset, remaining)
        except BlockError as exc:
            sess.printf(f"is_allocated failed: {strerror(-exc.errno)}\n")
            return -exc.errno
        offset += num
        remaining -= num
        if is_alloc:
            allocated += num
        if num == 0:
            count -= remaining
            remaining = 0
    sess.printf(f"{allocated}/{count} bytes allocated at offset {cvtstr(float(start))}\n")
    return 0


def map_f(sess: IoSession, argv: list[str]) -> int:
    backend = sess.require_backend()
    node = backend.node
    offset, remaining = 0, backend.getlength()
    while remaining:
        try:
            first, num = node.is_allocated(offset, remaining)
            while num < remaining:
                again, more = node.is_allocated(offset + num, remaining - num)
                if again != first or not more:
                    break
                num += more
        except BlockError as exc:
            sess.printf(f"Failed to get allocation status: {strerror(-exc.errno)}\n")
            return -exc.errno
        if not num:
            sess.printf("Unexpected end of image\n")
            return -errno.EIO
        state = "    allocated" if first else "not allocated"
        sess.printf(f"{cvtstr(float(num))} (0x{num:x}) bytes {state} at offset "
                    f"{cvtstr(float(offset))} (0x{offset:x})\n")
        offset += num
        remaining -= num
    return 0


# -- housekeeping --------------------------------------------------------------------
def flush_f(sess: IoSession, argv: list[str]) -> int:
    engine = sess.require_engine()
    return engine.run_sync(engine.flush())


def aio_flush_f(sess: IoSession, argv: list[str]) -> int:
    sess.require_engine().drain()
    return 0


def truncate_f(sess: IoSession, argv: list[str]) -> int:
    prealloc = "off"
    parser = options(argv, "m:")
    for opt, value in parser:
        if opt == "m" and value is not None:
            if value not in _PREALLOC_MODES:
                sess.error_report(f"Invalid preallocation mode '{value}'")
                return EINVAL
            prealloc = value
        else:
            return usage(sess, TRUNCATE)
    if not parser.operands:
        # qemu-io reads past the end of its argument list here and crashes.
        sess.out.discard()
        sess.terminated, sess.quit = 139, True
        return 0
    try:
        size = parse_io_number(parser.operands[0], warn=sess.warn_report)
    except BlockError as exc:
        # qemu-io names its first argument in this message, whatever that was.
        text = exc.message[: len(exc.message) - len(parser.operands[0])]
        sess.printf(text + argv[1] + "\n")
        return -exc.errno
    engine = sess.require_engine()
    try:
        return engine.run_sync(engine.truncate(size, prealloc))
    except BlockError as exc:
        sess.report_error(exc)
        return -(exc.errno or errno.EINVAL)


def discard_f(sess: IoSession, argv: list[str]) -> int:
    from bdrv.tools.io_rw import REQUEST_MAX_BYTES, elapsed_since, report

    machine = quiet = False
    parser = options(argv, "Cq")
    for opt, _ in parser:
        if opt == "C":
            machine = True
        elif opt == "q":
            quiet = True
        else:
            return usage(sess, DISCARD)
    if len(parser.operands) != 2:
        return usage(sess, DISCARD)
    offset = number(sess, parser.operands[0])
    if offset is None:
        return EINVAL
    count = number(sess, parser.operands[1])
    if count is None:
        return EINVAL
    if count > REQUEST_MAX_BYTES:
        sess.printf(f"length cannot exceed {REQUEST_MAX_BYTES}, given {parser.operands[1]}\n")
        return EINVAL
    engine = sess.require_engine()
    started = time.monotonic_ns()
    ret = engine.run_sync(engine.discard(offset, count))
    elapsed = elapsed_since(started)
    if ret < 0:
        sess.printf(f"discard failed: {strerror(ret)}\n")
        return ret
    if not quiet:
        report(sess, "discard", elapsed, offset, count, count, 1, machine)
    return 0


def sleep_f(sess: IoSession, argv: list[str]) -> int:
    ms = c_strtol(argv[1])
    if ms is None or ms < 0:
        sess.printf(f"{argv[1]} is not a valid number\n")
        return EINVAL
    if sess.engine is not None:
        sess.engine.drain()
    # Absurd values would sleep for ages in qemu-io too; Python just needs them bounded.
    time.sleep(min(ms / 1000.0, 1e9))
    return 0


_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def c_strtol(text: str) -> int | None:
    """strtol(text, &end, 0) when it consumes the whole string, else None."""
    match = _STRTOL.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[:2] in ("0x", "0X"):
        value = int(digits[2:], 16)
    else:
        value = int(digits, 8 if digits.startswith("0") else 10)
    value = -value if sign == "-" else value
    return max(min(value, (1 << 63) - 1), -(1 << 63))


def sigraise_f(sess: IoSession, argv: list[str]) -> int:
    sig = number(sess, argv[1])
    if sig is None:
        return EINVAL
    if sig > NSIG:
        sess.printf(f"signal argument '{argv[1]}' is too large to be a valid signal\n")
        return EINVAL
    sess.out.flush()
    if sig not in _SURVIVED_SIGNALS:
        # The default action ends the process; a shell reports 128 + the signal.
        sess.terminated, sess.quit = 128 + sig, True
    return 0


def abort_f(sess: IoSession, argv: list[str]) -> int:
    # abort(3) kills the process with SIGABRT; buffered stdout is lost.
    sess.out.discard()
    sess.terminated, sess.quit = 134, True
    return 0


# -- blkdebug hooks: the debug driver (if any) sits somewhere down the primary chain ---
def _debug_driver(sess: IoSession, method: str) -> object | None:
    node = sess.require_backend().node
    while node is not None:
        if hasattr(node.driver, method):
            return node.driver
        child = node.file
        node = child.node if child is not None else None  # type: ignore[assignment]
    return None


def _debug_call(sess: IoSession, method: str, args: list[str], failure: str) -> int:
    drv = _debug_driver(sess, method)
    try:
        if drv is None:
            raise BlockError("Operation not supported", errno.ENOTSUP)
        getattr(drv, method)(*args)
    except BlockError as exc:
        sess.printf(f"{failure}: {strerror(-exc.errno)}\n")
        return -exc.errno
    return 0


def break_f(sess: IoSession, argv: list[str]) -> int:
    return _debug_call(sess, "debug_breakpoint", argv[1:3], "Could not set breakpoint")


def remove_break_f(sess: IoSession, argv: list[str]) -> int:
    return _debug_call(sess, "debug_remove_breakpoint", argv[1:2],
                       f"Could not remove breakpoint {argv[1]}")


def resume_f(sess: IoSession, argv: list[str]) -> int:
    return _debug_call(sess, "debug_resume", argv[1:2], "Could not resume request")


def wait_break_f(sess: IoSession, argv: list[str]) -> int:
    # qemu-io would wait forever here; a synchronous core never suspends a request.
    return _debug_call(sess, "debug_wait_suspended", argv[1:2],
                       "Could not wait for breakpoint")


# -- the table --------------------------------------------------------------------------


TRUNCATE = Command("truncate", truncate_f, 1, 3, "[-m prealloc_mode] off",
                   "truncates the current file at the given offset", altname="t",
                   perm=PERM_WRITE | PERM_RESIZE)
DISCARD = Command("discard", discard_f, 2, -1, "[-Cq] off len",
                  "discards a number of bytes at a specified offset", DISCARD_HELP,
                  altname="d", perm=PERM_WRITE)

MISC_COMMANDS = (
    Command("help", help_f, 0, 1, "[command]", "help for one or all commands", altname="?",
            flags=CMD_FLAG_GLOBAL),
    Command("length", length_f, oneline="gets the length of the current file", altname="l"),
    Command("info", info_f, oneline="prints information about the current file",
            altname="i"),
    Command("alloc", alloc_f, 1, 2, "offset [count]",
            "checks if offset is allocated in the file", altname="a"),
    Command("map", map_f, 0, 0, "", "prints the allocated areas of a file"),
    Command("flush", flush_f, oneline="flush all in-core file state to disk", altname="f"),
    Command("aio_flush", aio_flush_f, oneline="completes all outstanding aio requests"),
    TRUNCATE,
    DISCARD,
    Command("sleep", sleep_f, 1, 1, oneline="waits for the given value in milliseconds",
            flags=CMD_NOFILE_OK),
    Command("sigraise", sigraise_f, 1, 1, "signal", "raises a signal", SIGRAISE_HELP,
            flags=CMD_NOFILE_OK),
    Command("abort", abort_f, oneline="simulate a program crash using abort(3)",
            flags=CMD_NOFILE_OK),
    Command("break", break_f, 2, 2, "event tag",
            "sets a breakpoint on event and tags the stopped request as tag"),
    Command("remove_break", remove_break_f, 1, 1, "tag", "remove a breakpoint by tag"),
    Command("resume", resume_f, 1, 1, "tag", "resumes the request tagged as tag"),
    Command("wait_break", wait_break_f, 1, 1, "tag", "waits for the suspension of a request"),
)
