"""bdrv-img dd: copy (part of) an image into a new one, dd(1) style (qemu-img 7.2's img_dd).

Operands if=, of=, bs= (1..INT_MAX, default 512), count= and skip= (in bs units). The
output is created with the input's remaining size (0 if skip= is past the end, with an
error message but exit 0), then written from the start in blocks of bs bytes.
"""

from __future__ import annotations

import os

from bdrv.errors import BlockError
from bdrv.graph import O_RDWR
from bdrv.options import OptionError
from bdrv.sizes import parse_size
from bdrv.tools.img_common import Img, ImgExit, long_opts, open_image, print_help
from bdrv.tools.img_create import find_format_driver, find_protocol_driver

_LONG = long_opts("help/h", "object:", "image-opts", "force-share/U")
INT64_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1
CHUNK = 1 << 20


def run(img: Img, argv: list[str]) -> int:
    out_fmt = "raw"
    fmt: str | None = None
    image_opts = force_share = False
    for key, arg in img.getopt(argv, "hf:O:U", _LONG):
        if key == "h":
            return print_help(img)
        if key == "O":
            out_fmt = str(arg)
        elif key == "f":
            fmt = arg
        elif key == "U":
            force_share = True
        elif key == "image-opts":
            image_opts = True
    bsz = 512
    count = skip = 0
    in_name = out_name = None
    given: set[str] = set()
    for operand in argv[img.optind:]:
        name, eq, value = operand.partition("=")
        if not eq or name not in ("bs", "count", "if", "of", "skip"):
            raise img.fail(f"unrecognized operand {name}")
        try:
            if name == "bs":
                bsz = parse_size(value, "bs", min_value=1, max_value=INT_MAX)
            elif name == "count":
                count = parse_size(value, "count")
            elif name == "skip":
                skip = parse_size(value, "skip")
        except OptionError as exc:
            img.report(exc)
            return 1
        if name == "if":
            in_name = value
        elif name == "of":
            out_name = value
        given.add(name)
    if in_name is None or out_name is None:
        raise img.fail("Must specify both input and output files")
    blk1 = open_image(img, in_name, fmt, 0, image_opts=image_opts, force_share=force_share)
    try:
        return _dd(img, blk1, in_name, out_name, out_fmt, bsz, count, skip, given)
    finally:
        blk1.close()


def _dd(img: Img, blk1: object, in_name: str, out_name: str, out_fmt: str, bsz: int,
        count: int, skip: int, given: set[str]) -> int:
    from bdrv.backend import Backend

    assert isinstance(blk1, Backend)
    try:
        drv = find_format_driver(out_fmt)
    except BlockError:
        raise img.fail("Unknown file format") from None
    try:
        proto = find_protocol_driver(out_name)
    except BlockError as exc:
        img.report(exc)
        return 1
    if not drv.create_options:
        raise img.fail(f"Format driver '{drv.format_name}' does not support image creation")
    if not proto.create_options:
        raise img.fail(
            f"Protocol driver '{proto.format_name}' does not support image creation")
    size = blk1.getlength()
    if "count" in given and count <= INT64_MAX // bsz and count * bsz < size:
        size = count * bsz
    past_end = "skip" in given and (skip > INT64_MAX // bsz or size < bsz * skip)
    out_size = 0 if past_end else size - bsz * skip
    try:
        drv.create(out_name, {"size": out_size}, img.warn)
    except BlockError as exc:
        img.report(exc, f"{out_name}: error while creating output image: ")
        return 1
    blk2 = open_image(img, out_name, out_fmt, O_RDWR)
    try:
        if past_end:
            img.error(f"{in_name}: cannot skip to specified offset")
            in_pos = size
        else:
            in_pos = skip * bsz
        step = max(bsz, CHUNK // bsz * bsz)
        out_pos = 0
        while in_pos < size:
            n = min(step, size - in_pos)
            try:
                data = blk1.pread(in_pos, n)
            except BlockError as exc:
                img.error(f"error while reading from input image file: {os.strerror(exc.errno)}")
                raise ImgExit(1) from None
            in_pos += n
            try:
                blk2.pwrite(out_pos, data)
            except BlockError as exc:
                img.error(f"error while writing to output image file: {os.strerror(exc.errno)}")
                raise ImgExit(1) from None
            out_pos += n
        return 0
    finally:
        blk2.close()
