"""bdrv-img: a qemu-img 7.2 compatible command line for bdrv.

`main(argv)` scans the global options (-h, -V, -T) the way qemu-img does, then runs
the subcommand; each subcommand lives in its own module. Errors never escape as
tracebacks: every failure ends with qemu-img's message and exit status.
"""

from __future__ import annotations

import importlib
import os
import sys

from bdrv.errors import BlockError
from bdrv.options import parse_opts
from bdrv.tools.img_common import (
    Command,
    Img,
    ImgExit,
    long_opts,
    print_help,
    program_name,
    version_text,
)
from bdrv.tools.output import write_stdout

# Subcommands qemu-img 7.2 has and bdrv-img does not implement (yet).
_NOT_IMPLEMENTED = ("bench", "bitmap")


# Subcommand name -> module in bdrv.tools with a `run(img, argv) -> int`.
_COMMANDS = {
    "amend": "img_amend",
    "check": "img_check",
    "commit": "img_commit",
    "compare": "img_compare",
    "convert": "img_convert",
    "create": "img_create",
    "dd": "img_dd",
    "info": "img_info",
    "map": "img_map",
    "measure": "img_measure",
    "rebase": "img_rebase",
    "resize": "img_resize",
    "snapshot": "img_snapshot",
}


def _command(name: str) -> Command | None:
    module = _COMMANDS.get(name)
    if module is None:
        return None
    run: Command = importlib.import_module(f"bdrv.tools.{module}").run
    return run


def main(argv: list[str]) -> int:
    """Run bdrv-img with `argv` (argv[0] is the program name); returns the exit status."""
    img = Img(program_name(argv))
    try:
        return _main(img, list(argv))
    except ImgExit as exc:
        return exc.status
    except BlockError as exc:
        img.report(exc)
        return 1
    except OSError as exc:
        img.error(exc.strerror or str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bdrv bug: say what happened, never dump a traceback
        img.error(f"internal error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        write_stdout("", flush=True)


def _main(img: Img, argv: list[str]) -> int:
    if len(argv) < 2:
        raise img.exit_usage("Not enough arguments")
    optspec = long_opts("help/h", "version/V", "trace:/T")
    for key, arg in img.getopt(argv, "+hVT:", optspec):
        if key == "h":
            return print_help(img)
        if key == "V":
            img.out(version_text(img.prog))
            return 0
        if key == "T" and _trace_option(img, str(arg)):
            return 0
    rest = argv[img.optind :]
    if not rest:
        return 0
    name = rest[0]
    command = _command(name)
    if command is None:
        if name in _NOT_IMPLEMENTED:
            raise img.fail(f"Command not implemented in bdrv-img yet: {name}")
        raise img.exit_usage(f"Command not found: {name}")
    return command(img, rest)


def _trace_option(img: Img, text: str) -> bool:
    """-T/--trace: bdrv has no trace events, so every named one is unknown to it.

    Returns True for "help" (qemu-img lists its events and exits 0; bdrv has none).
    """
    for name, value in parse_opts(text, "enable"):
        if name not in ("enable", "events", "file"):
            raise img.fail(f"Invalid parameter '{name}'")
        if name != "enable":
            continue
        if value in ("help", "?"):
            return True
        event = value[1:] if value.startswith("-") else value
        if "*" not in event:
            img.warn(f"trace event '{event}' does not exist")
    return False


def console_main() -> None:
    from bdrv.tools.memory import tune_malloc

    tune_malloc()
    status = main(sys.argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Nobody reads our output any more; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(status)
