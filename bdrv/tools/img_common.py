"""What every bdrv-img subcommand shares: messages, exits, option scanning, opening images.

Messages follow QEMU's error_report() ("<prog>: <text>"), warn_report()
("<prog>: warning: <text>") and error_exit() (the message plus "Try '<prog> --help'
for more information"). Streams are looked up at call time so that callers can
redirect sys.stdout/sys.stderr around main().
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bdrv import __version__
from bdrv.backend import Backend
from bdrv.driver import all_drivers
from bdrv.errors import BlockError
from bdrv.graph import O_CACHE_MASK, O_NO_FLUSH, O_NOCACHE
from bdrv.options import parse_opts
from bdrv.tools import img_help
from bdrv.tools.getopt import END, MISSING, UNKNOWN, Getopt, LongOpt
from bdrv.tools.output import write_stdout

HUMAN, JSON = "human", "json"


class ImgExit(Exception):
    """Leave the subcommand with this exit status (messages already printed)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Img:
    """The running tool: its program name (argv[0]'s basename) and output helpers."""

    prog: str
    # After `getopt`: where the operands start in the (permuted) argv.
    optind: int = 1

    # -- output ---------------------------------------------------------------------
    def out(self, text: str) -> None:
        write_stdout(text)

    def qprint(self, quiet: bool, text: str) -> None:
        if not quiet:
            self.out(text)

    def error(self, message: str) -> None:
        write_stdout("", flush=True)
        sys.stderr.write(f"{self.prog}: {message}\n")

    def report(self, exc: BlockError, prefix: str = "") -> None:
        """error_report_err(): the message (with a prefix) and QEMU's extra lines."""
        write_stdout("", flush=True)
        sys.stderr.write((exc.prefixed(prefix) if prefix else exc).render(self.prog))

    def warn(self, message: str) -> None:
        write_stdout("", flush=True)
        sys.stderr.write(f"{self.prog}: warning: {message}\n")

    def raw_warning(self, text: str) -> None:
        """Text printed as is (the probing WARNING block has no program prefix)."""
        write_stdout("", flush=True)
        sys.stderr.write(text + "\n")

    def fail(self, message: str, status: int = 1) -> ImgExit:
        """error_report() then an exit; use as `raise img.fail(...)`."""
        self.error(message)
        return ImgExit(status)

    def exit_usage(self, message: str) -> ImgExit:
        """error_exit(): the message, the --help hint, exit 1."""
        self.error(message)
        sys.stderr.write(f"Try '{self.prog} --help' for more information\n")
        return ImgExit(1)

    # -- option scanning ----------------------------------------------------------------
    def getopt(
        self, argv: list[str], optstring: str, longopts: tuple[LongOpt, ...]
    ) -> Iterator[tuple[str, str | None]]:
        """getopt_long() as qemu-img uses it: errors end the command with its wording.

        '-h'/'--help' is yielded as "h"; the caller prints the help. After the loop,
        `self.optind` holds the index of the first operand in the permuted `argv`.
        """
        flags = "+:" if optstring.startswith("+") else ":"
        scan = Getopt(argv, flags + optstring.lstrip("+"), longopts)
        while True:
            key = scan.next_option()
            self.optind = scan.optind
            if key is END:
                return
            if key == MISSING:
                raise self.exit_usage(f"missing argument for option '{scan.failed_arg}'")
            if key == UNKNOWN:
                raise self.exit_usage(f"unrecognized option '{scan.failed_arg}'")
            yield key, scan.optarg


def version_text(prog: str) -> str:
    return (f"{prog} version {__version__} (bdrv, qemu-img 7.2 compatible)\n"
            "Copyright (c) 2026 the bdrv developers\n")


def print_help(img: Img) -> int:
    """qemu-img's help text with bdrv's name, version and formats; returns exit status 0."""
    out = version_text(img.prog) + img_help.USAGE.replace("{prog}", img.prog)
    names = sorted({drv.format_name for drv in all_drivers()})
    out += "Supported formats:" + "".join(f" {name}" for name in names) + "\n"
    img.out(out + img_help.BOTTOM)
    return 0


def long_opts(*specs: str) -> tuple[LongOpt, ...]:
    """Long options from specs "name" / "name:" (takes an argument), optionally "/key"."""
    result = []
    for spec in specs:
        name, _, key = spec.partition("/")
        has_arg = name.endswith(":")
        name = name.rstrip(":")
        result.append(LongOpt(name, has_arg, key or name))
    return tuple(result)


def parse_output_format(img: Img, value: str | None) -> str:
    """--output's value; anything but human/json is an error (exit 1)."""
    if value is None or value == HUMAN:
        return HUMAN
    if value == JSON:
        return JSON
    raise img.fail("--output must be used with human or json as argument.")


def parse_cache_mode(mode: str, flags: int) -> tuple[int, bool] | None:
    """bdrv_parse_cache_mode(): (flags, writethrough), or None for an unknown mode."""
    flags &= ~O_CACHE_MASK
    if mode in ("off", "none"):
        return flags | O_NOCACHE, False
    if mode == "directsync":
        return flags | O_NOCACHE, True
    if mode == "writeback":
        return flags, False
    if mode == "unsafe":
        return flags | O_NO_FLUSH, False
    if mode == "writethrough":
        return flags, True
    return None


def image_opts_dict(img: Img, text: str) -> dict[str, Any]:
    """An --image-opts string as the flat option dict qemu-img builds from it."""
    options: dict[str, Any] = {}
    for name, value in parse_opts(text, "file", warn_on_flag=True, warn=img.warn):
        options[name] = value
    return options


def open_image(
    img: Img,
    filename: str,
    fmt: str | None,
    flags: int,
    *,
    image_opts: bool = False,
    force_share: bool = False,
    options: dict[str, Any] | None = None,
) -> Backend:
    """img_open(): open `filename` (or an option string) or report why not and exit 1."""
    if image_opts:
        if fmt:
            raise img.fail("--image-opts and --format are mutually exclusive")
        opts = image_opts_dict(img, filename)
        if force_share:
            if "force-share" in opts and opts["force-share"] != "on":
                raise img.fail("--force-share/-U conflicts with image options")
            opts["force-share"] = "on"
        return _open(img, None, opts, flags, filename)
    opts = dict(options or {})
    if fmt:
        opts["driver"] = fmt
    if force_share:
        opts["force-share"] = True
    return _open(img, filename, opts, flags, filename)


def _open(img: Img, filename: str | None, opts: dict[str, Any], flags: int,
          shown: str) -> Backend:
    try:
        return Backend.open(filename, opts, flags, warn=img.raw_warning)
    except BlockError as exc:
        img.report(exc, f"Could not open '{shown}': ")
        raise ImgExit(1) from None


def program_name(argv: list[str]) -> str:
    return os.path.basename(argv[0]) if argv and argv[0] else "bdrv-img"


Command = Callable[[Img, list[str]], int]
