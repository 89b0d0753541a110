"""bdrv-io's `reopen` command: qemu-io 7.2's reopen_f over bdrv.reopen.

Its quirks are kept: `-o` options gather in a list that lives as long as the process
(qemu-io's static QemuOptsList), which is emptied on most errors but not after a bad
cache mode or a second -r/-w, so those options carry over to the next reopen; and `-r`
drops the write permissions before the reopen is even attempted.
"""

from __future__ import annotations

import errno
from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import O_NO_FLUSH, O_NOCACHE, O_RDWR, PERM_WRITE, PERM_WRITE_UNCHANGED
from bdrv.reopen import reopen
from bdrv.tools.io_commands import EINVAL, Command, options, usage
from bdrv.tools.io_help import REOPEN_HELP
from bdrv.tools.io_open import parse_option_string
from bdrv.tools.io_openflags import parse_cache_mode
from bdrv.tools.io_session import IoSession

_PENDING = "reopen_opts"


def _pending(sess: IoSession) -> dict[str, Any]:
    """The session's reopen option list (created on first use)."""
    opts = getattr(sess, _PENDING, None)
    if opts is None:
        opts = {}
        setattr(sess, _PENDING, opts)
    return opts


def _reset(sess: IoSession) -> None:
    setattr(sess, _PENDING, {})


def reopen_f(sess: IoSession, argv: list[str]) -> int:
    backend = sess.require_backend()
    engine = sess.require_engine()
    node = backend.node
    flags = node.open_flags
    writethrough = engine.writethrough
    has_rw = has_cache = False
    parser = options(argv, "c:o:rw")
    for opt, value in parser:
        arg = value or ""
        if opt == "c":
            cache = parse_cache_mode(arg, flags)
            if cache is None:
                sess.error_report(f"Invalid cache option: {arg}")
                return EINVAL  # the -o list is kept (as in qemu-io)
            flags, writethrough = cache
            has_cache = True
        elif opt == "o":
            collected = dict(_pending(sess))
            if not parse_option_string(sess, arg, collected):
                _reset(sess)
                return EINVAL
            setattr(sess, _PENDING, collected)
        elif opt in ("r", "w"):
            if has_rw:
                sess.error_report("Only one -r/-w option may be given")
                return EINVAL  # the -o list is kept (as in qemu-io)
            flags = flags & ~O_RDWR if opt == "r" else flags | O_RDWR
            has_rw = True
        else:
            _reset(sess)
            return usage(sess, REOPEN)
    if parser.operands:
        _reset(sess)
        return usage(sess, REOPEN)
    engine.drain()
    if not flags & O_RDWR:
        perm, shared = backend.child.perm, backend.child.shared
        backend.set_perm(perm & ~(PERM_WRITE | PERM_WRITE_UNCHANGED), shared)
    opts = dict(_pending(sess))
    _reset(sess)
    if "read-only" in opts:
        if has_rw:
            sess.error_report("Cannot set both -r/-w and 'read-only'")
            return EINVAL
    else:
        opts["read-only"] = not flags & O_RDWR
    for key, bit in (("cache.direct", O_NOCACHE), ("cache.no-flush", O_NO_FLUSH)):
        if key in opts:
            if has_cache:
                sess.error_report("Cannot set both -c and the cache options")
                return EINVAL
        else:
            opts[key] = bool(flags & bit)
    try:
        reopen(node, opts, keep_old_opts=True)
    except BlockError as exc:
        sess.report_error(exc)
        return -(exc.errno or errno.EINVAL)
    engine.writethrough = writethrough
    engine.refresh_levels()
    return 0


REOPEN = Command("reopen", reopen_f, 0, -1, "[(-r|-w)] [-c cache] [-o options]",
                 "reopens an image with new options", REOPEN_HELP)

REOPEN_COMMANDS = (REOPEN,)
