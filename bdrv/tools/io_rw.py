"""bdrv-io's data commands: read, write, readv, writev, aio_read, aio_write.

Option checks run in qemu-io's order, so the first complaint is the same one; buffers
are filled and verified with whole-buffer operations (a pattern byte repeated, one
comparison), never byte by byte.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import PERM_WRITE, Node
from bdrv.request import REQ_FUA, REQ_MAY_UNMAP, REQ_NO_FALLBACK, REQ_WRITE_COMPRESSED
from bdrv.tools.getopt import UNKNOWN
from bdrv.tools.io_commands import (
    EINVAL,
    Command,
    c_strtol,
    number,
    options,
    strerror,
    usage,
)
from bdrv.tools.io_engine import Op
from bdrv.tools.io_help import (
    AIO_READ_HELP,
    AIO_WRITE_HELP,
    READ_HELP,
    READV_HELP,
    WRITE_HELP,
    WRITEV_HELP,
)
from bdrv.tools.io_output import hex_dump, report_lines
from bdrv.tools.io_session import IoSession

# BDRV_REQUEST_MAX_BYTES: the largest request, INT_MAX rounded down to whole sectors.
REQUEST_MAX_BYTES = 2147483136
SECTOR = 512
READ_FILL = 0xAB  # what qemu-io's read buffer holds before the read


def elapsed_since(started_ns: int) -> int:
    return time.monotonic_ns() - started_ns


def report(sess: IoSession, op: str, elapsed_ns: int, offset: int, count: int, total: int,
           ops: int, machine: bool) -> None:
    sess.printf(report_lines(op, elapsed_ns, offset, count, total, ops, machine))


def parse_pattern(sess: IoSession, text: str) -> int | None:
    value = c_strtol(text)
    if value is None or not 0 <= value <= 255:
        sess.printf(f"{text} is not a valid pattern byte\n")
        return None
    return value


def _vector_request(sess: IoSession, operands: list[str]) -> tuple[int, list[int]] | None:
    """The offset and lengths of readv/writev/aio_*, or None (reported)."""
    offset = number(sess, operands[0])
    if offset is None:
        return None
    lengths = _lengths(sess, operands[1:])
    return None if lengths is None else (offset, lengths)


def _lengths(sess: IoSession, args: list[str]) -> list[int] | None:
    """create_iovec(): the lengths of a vectored request, or None (reported)."""
    lengths: list[int] = []
    total = 0
    for arg in args:
        length = number(sess, arg)
        if length is None:
            return None
        if length > REQUEST_MAX_BYTES:
            sess.printf(f"Argument '{arg}' exceeds maximum size {REQUEST_MAX_BYTES}\n")
            return None
        if total > REQUEST_MAX_BYTES - length:
            sess.printf(f"The total number of bytes exceed the maximum size "
                        f"{REQUEST_MAX_BYTES}\n")
            return None
        lengths.append(length)
        total += length
    return lengths


def _aligned(sess: IoSession, offset: int, count: int) -> bool:
    for value, name in ((offset, "offset"), (count, "count")):
        if value % SECTOR:
            sess.printf(f"{value} is not a sector-aligned value for '{name}'\n")
            return False
    return True


def _load_file(sess: IoSession, path: str, count: int) -> bytes | None:
    """write -s: the file's first `count` bytes, repeated to fill `count`."""
    try:
        with open(path, "rb") as src:
            data = src.read(count)
    except OSError as exc:
        sess.eprintf(f"{path}: {os.strerror(exc.errno or errno.EIO)}\n")
        return None
    if not data:
        sess.eprintf(f"{path}: file is empty\n")
        return None
    return (data * (count // len(data) + 1))[:count]


def _verify(sess: IoSession, data: bytes, pattern: int, offset: int) -> bool:
    if data != bytes([pattern]) * len(data):
        sess.printf(f"Pattern verification failed at offset {offset}, {len(data)} bytes\n")
        return False
    return True


def _unsupported(sess: IoSession, offset: int, count: int, check_bounds: bool) -> int:
    """Requests the image's drivers cannot do (vmstate, compression) fail like QEMU's."""
    if check_bounds:
        length = sess.require_backend().getlength()
        if offset > length or length - offset < count:
            return -errno.EIO
    return -errno.ENOTSUP


def _vmstate_driver(sess: IoSession, method: str) -> Any:
    """The first driver down the primary chain with vmstate support (or None)."""
    node: Node | None = sess.require_backend().node
    while node is not None:
        if hasattr(node.driver, method):
            return node.driver
        child = node.file
        node = child.node if child is not None else None
    return None


def _vmstate(sess: IoSession, offset: int, count: int, data: bytes | None,
             sink: list[bytes]) -> int:
    """read -b / write -b: the driver's load_vmstate(offset, count) / save_vmstate(offset, data)."""
    drv = _vmstate_driver(sess, "load_vmstate" if data is None else "save_vmstate")
    if drv is None:
        return _unsupported(sess, offset, count, check_bounds=False)
    try:
        if data is None:
            sink.append(bytes(drv.load_vmstate(offset, count)))
        else:
            drv.save_vmstate(offset, data)
    except BlockError as exc:
        return -(exc.errno or errno.EIO)
    engine = sess.require_engine()
    if data is not None and data and engine.writethrough:
        # blk_save_vmstate() flushes in writethrough mode (qemu-io's default).
        return engine.run_sync(engine.flush())
    return 0


def _compressed(sess: IoSession, offset: int, data: bytes) -> int:
    """write -c: only drivers that declare `supports_compressed_writes` take it."""
    drv = sess.require_backend().node.driver
    if not getattr(drv, "supports_compressed_writes", False):
        return _unsupported(sess, offset, len(data), check_bounds=True)
    engine = sess.require_engine()
    return engine.run_sync(engine.write(offset, data, REQ_WRITE_COMPRESSED))


# -- read / readv ---------------------------------------------------------------------
@dataclass
class _ReadOpts:
    machine: bool = False
    quiet: bool = False
    verbose: bool = False
    pattern: int | None = None


def read_f(sess: IoSession, argv: list[str]) -> int:
    o = _ReadOpts()
    vmstate = has_len = has_off = False
    pat_off = pat_len = 0
    parser = options(argv, "bCl:pP:qs:v")
    for opt, value in parser:
        if opt in ("l", "s"):
            parsed = number(sess, value or "")
            if parsed is None:
                return EINVAL
            if opt == "l":
                has_len, pat_len = True, parsed
            else:
                has_off, pat_off = True, parsed
        elif opt == "P":
            o.pattern = parse_pattern(sess, value or "")
            if o.pattern is None:
                return EINVAL
        elif opt == UNKNOWN:
            return usage(sess, READ)
        else:
            vmstate |= opt == "b"
            o.machine |= opt == "C"
            o.quiet |= opt == "q"
            o.verbose |= opt == "v"
    if len(parser.operands) != 2:
        return usage(sess, READ)
    offset = number(sess, parser.operands[0])
    if offset is None:
        return EINVAL
    count = number(sess, parser.operands[1])
    if count is None:
        return EINVAL
    if count > REQUEST_MAX_BYTES:
        sess.printf(f"length cannot exceed {REQUEST_MAX_BYTES}, given {parser.operands[1]}\n")
        return EINVAL
    if o.pattern is None and (has_len or has_off):
        return usage(sess, READ)
    if not has_len:
        pat_len = count - pat_off
    if pat_len < 0 or pat_len + pat_off > count:
        sess.printf("pattern verification range exceeds end of read data\n")
        return EINVAL
    if vmstate and not _aligned(sess, offset, count):
        return EINVAL
    engine = sess.require_engine()
    sink: list[bytes] = []
    started = time.monotonic_ns()
    if vmstate:
        ret = _vmstate(sess, offset, count, None, sink)
    else:
        ret = engine.run_sync(engine.read(offset, count, sink))
    elapsed = elapsed_since(started)
    if ret < 0:
        sess.printf(f"read failed: {strerror(ret)}\n")
        return ret
    data = sink[0]
    if o.pattern is not None and not _verify(
        sess, data[pat_off : pat_off + pat_len], o.pattern, offset + pat_off
    ):
        ret = EINVAL
    _finish_read(sess, o, elapsed, offset, data)
    return ret


def _finish_read(sess: IoSession, o: _ReadOpts, elapsed: int, offset: int, data: bytes) -> None:
    if o.quiet:
        return
    if o.verbose:
        sess.printf(hex_dump(data, offset))
    report(sess, "read", elapsed, offset, len(data), len(data), 1, o.machine)


def _vector_opts(sess: IoSession, argv: list[str], spec: str, cmd: Command
                 ) -> tuple[_ReadOpts, int, list[str], int] | int:
    """Options shared by readv/writev/aio_*: (opts, flags, operands, pattern) or an error."""
    o = _ReadOpts()
    flags = 0
    fill = 0xCD
    parser = options(argv, spec)
    for opt, value in parser:
        if opt == "P":
            pattern = parse_pattern(sess, value or "")
            if pattern is None:
                return EINVAL
            o.pattern, fill = pattern, pattern
        elif opt == "i":
            kind = "read" if cmd.name == "aio_read" else "write"
            sess.printf(f"injecting invalid {kind} request\n")
            return 0
        elif opt == UNKNOWN:
            return usage(sess, cmd)
        else:
            o.machine |= opt == "C"
            o.quiet |= opt == "q"
            o.verbose |= opt == "v"
            flags |= {"f": REQ_FUA, "u": REQ_MAY_UNMAP, "z": _ZERO}.get(opt, 0)
    if len(parser.operands) < 2:
        return usage(sess, cmd)
    return o, flags, parser.operands, fill


_ZERO = 0x10000  # local marker for aio_write -z


def readv_f(sess: IoSession, argv: list[str]) -> int:
    parsed = _vector_opts(sess, argv, "CP:qv", READV)
    if isinstance(parsed, int):
        return parsed
    o, _, operands, _ = parsed
    request = _vector_request(sess, operands)
    if request is None:
        return EINVAL
    offset, lengths = request
    engine = sess.require_engine()
    sink: list[bytes] = []
    started = time.monotonic_ns()
    ret = engine.run_sync(engine.read(offset, sum(lengths), sink))
    elapsed = elapsed_since(started)
    if ret < 0:
        sess.printf(f"readv failed: {strerror(ret)}\n")
        return ret
    data = sink[0]
    if o.pattern is not None and not _verify(sess, data, o.pattern, offset):
        ret = EINVAL
    _finish_read(sess, o, elapsed, offset, data)
    return ret


def writev_f(sess: IoSession, argv: list[str]) -> int:
    parsed = _vector_opts(sess, argv, "CfP:q", WRITEV)
    if isinstance(parsed, int):
        return parsed
    o, flags, operands, fill = parsed
    request = _vector_request(sess, operands)
    if request is None:
        return EINVAL
    offset, lengths = request
    engine = sess.require_engine()
    count = sum(lengths)
    started = time.monotonic_ns()
    ret = engine.run_sync(engine.write(offset, bytes([fill]) * count, flags))
    elapsed = elapsed_since(started)
    if ret < 0:
        sess.printf(f"writev failed: {strerror(ret)}\n")
        return ret
    if not o.quiet:
        report(sess, "wrote", elapsed, offset, count, count, 1, o.machine)
    return 0


# -- write ------------------------------------------------------------------------------
def _write_checks(sess: IoSession, opts: set[str], flags: int) -> str | None:
    if "b" in opts and "z" in opts:
        return "-b and -z cannot be specified at the same time"
    if flags & REQ_FUA and ("b" in opts or "c" in opts):
        return "-f and -b or -c cannot be specified at the same time"
    if flags & REQ_NO_FALLBACK and "z" not in opts:
        return "-n requires -z to be specified"
    if flags & REQ_MAY_UNMAP and "z" not in opts:
        return "-u requires -z to be specified"
    if len(opts & {"z", "P", "s"}) > 1:
        return "Only one of -z, -P, and -s can be specified at the same time"
    return None


def write_f(sess: IoSession, argv: list[str]) -> int:
    seen: set[str] = set()
    flags = 0
    fill = 0xCD
    source = ""
    parser = options(argv, "bcCfnpP:qs:uz")
    for opt, value in parser:
        if opt == UNKNOWN:
            return usage(sess, WRITE)
        if opt == "P":
            pattern = parse_pattern(sess, value or "")
            if pattern is None:
                return EINVAL
            fill = pattern
        elif opt == "s":
            source = value or ""
        seen.add(opt)
        flags |= {"f": REQ_FUA, "n": REQ_NO_FALLBACK, "u": REQ_MAY_UNMAP}.get(opt, 0)
    if len(parser.operands) != 2:
        return usage(sess, WRITE)
    problem = _write_checks(sess, seen, flags)
    if problem:
        sess.printf(problem + "\n")
        return EINVAL
    offset = number(sess, parser.operands[0])
    if offset is None:
        return EINVAL
    count = number(sess, parser.operands[1])
    if count is None:
        return EINVAL
    if count > REQUEST_MAX_BYTES and not flags & REQ_NO_FALLBACK:
        sess.printf(f"length cannot exceed {REQUEST_MAX_BYTES} without -n, "
                    f"given {parser.operands[1]}\n")
        return EINVAL
    if seen & {"b", "c"} and not _aligned(sess, offset, count):
        return EINVAL
    data = b""
    if "z" not in seen:
        loaded = _load_file(sess, source, count) if "s" in seen else bytes([fill]) * count
        if loaded is None:
            return EINVAL
        data = loaded
    engine = sess.require_engine()
    started = time.monotonic_ns()
    if "b" in seen:
        ret = _vmstate(sess, offset, count, data, [])
    elif "z" in seen:
        ret = engine.run_sync(engine.write_zeroes(offset, count, flags))
    elif "c" in seen:
        ret = _compressed(sess, offset, data)
    else:
        ret = engine.run_sync(engine.write(offset, data, flags))
    elapsed = elapsed_since(started)
    if ret < 0:
        sess.printf(f"write failed: {strerror(ret)}\n")
        return ret
    if "q" not in seen:
        report(sess, "wrote", elapsed, offset, count, count, 1, "C" in seen)
    return 0


# -- aio ----------------------------------------------------------------------------------
def aio_read_f(sess: IoSession, argv: list[str]) -> int:
    parsed = _vector_opts(sess, argv, "CiP:qv", AIO_READ)
    if isinstance(parsed, int):
        return parsed
    o, _, operands, _ = parsed
    request = _vector_request(sess, operands)
    if request is None:
        return EINVAL
    offset, lengths = request
    engine = sess.require_engine()
    sink: list[bytes] = []
    count = sum(lengths)
    started = time.monotonic_ns()

    def done(ret: int) -> None:
        elapsed = elapsed_since(started)
        if ret < 0:
            sess.printf(f"readv failed: {strerror(ret)}\n")
            return
        if o.pattern is not None:
            _verify(sess, sink[0], o.pattern, offset)
        _finish_read(sess, o, elapsed, offset, sink[0])

    engine.submit(engine.read(offset, count, sink, defer_errors=True), done)
    return 0


def aio_write_f(sess: IoSession, argv: list[str]) -> int:
    parsed = _vector_opts(sess, argv, "CfiP:quz", AIO_WRITE)
    if isinstance(parsed, int):
        return parsed
    o, flags, operands, fill = parsed
    zero = bool(flags & _ZERO)
    flags &= ~_ZERO
    if zero and len(operands) != 2:
        sess.printf("-z supports only a single length parameter\n")
        return EINVAL
    if flags & REQ_MAY_UNMAP and not zero:
        sess.printf("-u requires -z to be specified\n")
        return EINVAL
    offset = number(sess, operands[0])
    if offset is None:
        return EINVAL
    engine = sess.require_engine()
    op: Op
    if zero:
        count = number(sess, operands[1])
        if count is None:
            return EINVAL
        started = 0  # qemu-io never starts the clock for zero writes
        op = engine.write_zeroes(offset, count, flags, defer_errors=True)
    else:
        lengths = _lengths(sess, operands[1:])
        if lengths is None:
            return EINVAL
        count = sum(lengths)
        started = time.monotonic_ns()
        op = engine.write(offset, bytes([fill]) * count, flags, defer_errors=True)

    def done(ret: int) -> None:
        elapsed = elapsed_since(started)
        if ret < 0:
            sess.printf(f"aio_write failed: {strerror(ret)}\n")
        elif not o.quiet:
            report(sess, "wrote", elapsed, offset, count, count, 1, o.machine)

    engine.submit(op, done)
    return 0


# -- the table ----------------------------------------------------------------------------
_READ_ONELINE = "reads a number of bytes at a specified offset"
_WRITE_ONELINE = "writes a number of bytes at a specified offset"

READ = Command("read", read_f, 2, -1, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
               _READ_ONELINE, READ_HELP, altname="r")
READV = Command("readv", readv_f, 2, -1, "[-Cqv] [-P pattern] off len [len..]",
                _READ_ONELINE, READV_HELP)
WRITE = Command("write", write_f, 2, -1, "[-bcCfnquz] [-P pattern | -s source_file] off len",
                _WRITE_ONELINE, WRITE_HELP, altname="w", perm=PERM_WRITE)
WRITEV = Command("writev", writev_f, 2, -1, "[-Cfq] [-P pattern] off len [len..]",
                 _WRITE_ONELINE, WRITEV_HELP, perm=PERM_WRITE)
AIO_READ = Command("aio_read", aio_read_f, 2, -1, "[-Ciqv] [-P pattern] off len [len..]",
                   "asynchronously reads a number of bytes", AIO_READ_HELP)
AIO_WRITE = Command("aio_write", aio_write_f, 2, -1, "[-Cfiquz] [-P pattern] off len [len..]",
                    "asynchronously writes a number of bytes", AIO_WRITE_HELP,
                    perm=PERM_WRITE)

RW_COMMANDS = (READ, READV, WRITE, WRITEV, AIO_READ, AIO_WRITE)
