"""bdrv-img amend: change options of an existing image (qemu-img 7.2's img_amend).

`-o help` prints the format's amend options: before opening anything when -f names
the format, else after opening (and probing) the image. With -p every exit after the
progress meter started ends its line, errors included, as 7.2 does.
"""

from __future__ import annotations

import copy

from numpy import float32

from bdrv.driver import Driver, find_driver
from bdrv.errors import BlockError
from bdrv.graph import O_RDWR
from bdrv.options import OptionList, accumulate_options, is_help, parse_opts
from bdrv.tools.img_common import Img, long_opts, open_image, parse_cache_mode, print_help
from bdrv.tools.progress import Progress

_LONG = long_opts("help/h", "object:", "image-opts", "force")
_CREATION_HINT = "This option is only supported for image creation\n"


def run(img: Img, argv: list[str]) -> int:
    options: str | None = None
    fmt: str | None = None
    cache = "writeback"
    quiet = progress = image_opts = force = False
    for key, arg in img.getopt(argv, "ho:f:t:pq", _LONG):
        if key == "h":
            return print_help(img)
        if key == "o":
            try:
                options = accumulate_options(options, str(arg))
            except BlockError as exc:
                img.report(exc)
                return 1
        elif key == "f":
            fmt = arg
        elif key == "t":
            cache = str(arg)
        elif key == "p":
            progress = True
        elif key == "q":
            quiet = True
        elif key == "image-opts":
            image_opts = True
        elif key == "force":
            force = True
    if options is None:
        raise img.exit_usage("Must specify options (-o)")
    meter = Progress(progress and not quiet, 1.0)
    try:
        return _amend(img, argv, options, fmt, cache, image_opts, force, meter)
    finally:
        meter.end()


def _amend(img: Img, argv: list[str], options: str, fmt: str | None, cache: str,
           image_opts: bool, force: bool, meter: Progress) -> int:
    if fmt and is_help(options):
        return _option_help(img, fmt)
    if img.optind != len(argv) - 1:
        img.error("Expecting one image file name")
        return 1
    parsed = parse_cache_mode(cache, O_RDWR)
    if parsed is None:
        img.error(f"Invalid cache option: {cache}")
        return 1
    blk = open_image(img, argv[-1], fmt, parsed[0], image_opts=image_opts)
    try:
        drv = blk.node.driver
        name = drv.format_name
        if is_help(options):
            return _option_help(img, name)
        if not drv.amend_options:
            img.error(f"Format driver '{name}' does not support option amendment")
            return 1
        try:
            values = _parse(type(drv), options, img)
        except BlockError as exc:
            img.report(exc)
            return 1

        def status(done: int, total: int) -> None:
            meter.print(float(float32(100) * float32(done) / float32(total)), 0)

        meter.print(0, 0)
        error: BlockError | None = None
        try:
            drv.amend(values, status, force)
        except BlockError as exc:
            error = exc
        meter.print(100, 0)
        if error is not None:
            img.report(error)
            return 1
        return 0
    finally:
        blk.close()


def _parse(drv: type[Driver], options: str, img: Img) -> dict[str, object]:
    """The -o values, only those given; an option only create knows gets a hint."""
    pairs = parse_opts(options)
    amend_list = OptionList(drv.amend_options)
    try:
        return amend_list.parse(pairs, warn=img.warn)
    except BlockError as exc:
        try:
            amend_list.append(OptionList(drv.create_options)).parse(pairs, warn=_silent)
        except BlockError:
            raise exc from None
        hinted = copy.copy(exc)
        hinted.hint = _CREATION_HINT
        raise hinted from None


def _silent(message: str) -> None:
    """Warnings of the second parse were given by the first already."""


def _option_help(img: Img, fmt: str) -> int:
    """print_amend_option_help()."""
    drv = find_driver(fmt)
    if drv is None:
        img.error(f"Unknown file format '{fmt}'")
        return 1
    if not drv.amend_options:
        img.error(f"Format driver '{fmt}' does not support option amendment")
        return 1
    lines = OptionList(drv.amend_options).help_lines()
    img.out(f"Amend options for '{fmt}':\n" + "".join(f"{line}\n" for line in lines))
    return 0
