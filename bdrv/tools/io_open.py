"""bdrv-io's open, close and quit commands (qemu-io keeps these in its front end)."""

from __future__ import annotations

from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import O_COPY_ON_READ, O_NATIVE_AIO, O_NOCACHE, O_RDWR, O_SNAPSHOT, O_UNMAP
from bdrv.options import parse_opts
from bdrv.tools.getopt import UNKNOWN
from bdrv.tools.io_commands import EINVAL, Command, options, usage
from bdrv.tools.io_help import OPEN_HELP
from bdrv.tools.io_openflags import parse_aio_mode, parse_cache_mode, parse_discard_mode
from bdrv.tools.io_session import CMD_FLAG_GLOBAL, CMD_NOFILE_OK, IoSession


def parse_option_string(sess: IoSession, text: str, into: dict[str, Any]) -> bool:
    """Merge one QemuOpts string (`-o`, --image-opts) into `into`; False if refused."""
    try:
        pairs = parse_opts(text, warn_on_flag=True, warn=sess.warn_report)
    except BlockError as exc:
        sess.report_error(exc)
        return False
    for name, value in pairs:
        if name == "id":
            # The options list merges, and merging lists take no id.
            sess.error_report("Invalid parameter 'id'")
            return False
        into[name] = value
    return True


def open_f(sess: IoSession, argv: list[str]) -> int:
    flags = O_UNMAP
    read_only = force_share = False
    writethrough = True
    opts: dict[str, Any] | None = None
    parser = options(argv, "snCro:ki:t:d:U")
    for opt, value in parser:
        arg = value or ""
        if opt in ("s", "n", "C", "k"):
            flags |= {"s": O_SNAPSHOT, "n": O_NOCACHE, "C": O_COPY_ON_READ,
                      "k": O_NATIVE_AIO}[opt]
            writethrough = writethrough and opt != "n"
        elif opt == "r":
            read_only = True
        elif opt == "U":
            force_share = True
        elif opt == "t":
            cache = parse_cache_mode(arg, flags)
            if cache is None:
                sess.error_report(f"Invalid cache option: {arg}")
                return EINVAL
            flags, writethrough = cache
        elif opt in ("d", "i"):
            parse = parse_discard_mode if opt == "d" else parse_aio_mode
            new_flags = parse(arg, flags)
            if new_flags is None:
                kind = "discard" if opt == "d" else "aio"
                sess.error_report(f"Invalid {kind} option: {arg}")
                return EINVAL
            flags = new_flags
        elif opt == "o":
            if sess.image_opts:
                sess.printf("--image-opts and 'open -o' are mutually exclusive\n")
                return EINVAL
            opts = {} if opts is None else opts
            if not parse_option_string(sess, arg, opts):
                return EINVAL
        else:
            assert opt == UNKNOWN
            return usage(sess, OPEN)
    if not read_only:
        flags |= O_RDWR
    operands = parser.operands
    if sess.image_opts and len(operands) == 1:
        opts = {} if opts is None else opts
        if not parse_option_string(sess, operands.pop(), opts):
            return EINVAL
        name = None
    elif len(operands) == 1:
        name = operands[0]
    elif not operands:
        name = None
    else:
        return usage(sess, OPEN)
    if not sess.open_image(name, flags, writethrough, force_share, opts):
        return EINVAL
    return 0


def close_f(sess: IoSession, argv: list[str]) -> int:
    sess.close_image()
    return 0


def quit_f(sess: IoSession, argv: list[str]) -> int:
    sess.quit = True
    return 0



OPEN = Command("open", open_f, 1, -1, "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
               "open the file specified by path", OPEN_HELP, altname="o",
               flags=CMD_NOFILE_OK)

OPEN_COMMANDS = (
    OPEN,
    Command("close", close_f, oneline="close the current open file", altname="c"),
    Command("quit", quit_f, -1, -1, oneline="exit the program", altname="q",
            flags=CMD_FLAG_GLOBAL),
)
