"""bdrv-img measure: the size a new image would need (qemu-img 7.2's img_measure)."""

from __future__ import annotations

from typing import Any

from bdrv.driver import find_driver
from bdrv.errors import BlockError
from bdrv.measure import MeasureInfo, measure
from bdrv.options import OptionError, accumulate_options, parse_opts
from bdrv.sizes import parse_size
from bdrv.tools.img_common import (
    HUMAN,
    JSON,
    Img,
    ImgExit,
    long_opts,
    open_image,
    print_help,
)
from bdrv.tools.img_create import create_option_list, find_protocol_driver

_LONG = long_opts("help/h", "image-opts", "object:", "output:", "size:", "force-share/U")
UNSET = -1


def run(img: Img, argv: list[str]) -> int:
    fmt: str | None = None
    out_fmt = "raw"
    options: str | None = None
    snapshot_name: str | None = None
    sn_opts: dict[str, str] | None = None
    output = HUMAN
    size = UNSET
    image_opts = force_share = False
    for key, arg in img.getopt(argv, "hf:O:o:l:U", _LONG):
        value = str(arg)
        if key == "h":
            return print_help(img)
        if key == "f":
            fmt = value
        elif key == "O":
            out_fmt = value
        elif key == "o":
            try:
                options = accumulate_options(options, value)
            except BlockError as exc:
                img.report(exc)
                return 1
        elif key == "l":
            if value.startswith("snapshot."):
                sn_opts = {}
                for name, val in parse_opts(value):
                    if name not in ("snapshot.id", "snapshot.name"):
                        img.error(f"Invalid parameter '{name}'")
                        raise img.fail(f"Failed in parsing snapshot param '{value}'")
                    sn_opts[name] = val
            else:
                snapshot_name = value
        elif key == "U":
            force_share = True
        elif key == "image-opts":
            image_opts = True
        elif key == "output":
            if value == JSON:
                output = JSON
            elif value == HUMAN:
                output = HUMAN
            else:
                raise img.fail("--output must be used with human or json as argument.")
        elif key == "size":
            try:
                size = parse_size(value, "image size")
            except OptionError as exc:
                img.report(exc)
                return 1
    operands = argv[img.optind:]
    if len(operands) > 1:
        raise img.fail("At most one filename argument is allowed.")
    filename = operands[0] if operands else None
    if filename is None and (image_opts or fmt or snapshot_name or sn_opts is not None):
        raise img.fail("--image-opts, -f, and -l require a filename argument.")
    if filename is not None and size != UNSET:
        raise img.fail("--size N cannot be used together with a filename.")
    if filename is None and size == UNSET:
        raise img.fail("Either --size N or one filename must be specified.")
    blk = None
    if filename is not None:
        blk = open_image(img, filename, fmt, 0, image_opts=image_opts, force_share=force_share)
    try:
        if blk is not None and (sn_opts is not None or snapshot_name is not None):
            _load_snapshot(img, blk.node, sn_opts, snapshot_name)
        info = _measure(img, out_fmt, options, size, blk.node if blk is not None else None)
        if info is None:
            return 1
    finally:
        if blk is not None:
            blk.close()
    if output == HUMAN:
        text = f"required size: {info.required}\nfully allocated size: {info.fully_allocated}\n"
        if info.bitmaps is not None:
            text += f"bitmaps size: {info.bitmaps}\n"
    else:
        lines = []
        if info.bitmaps is not None:
            lines.append(f'    "bitmaps": {info.bitmaps}')
        lines.append(f'    "required": {info.required}')
        lines.append(f'    "fully-allocated": {info.fully_allocated}')
        text = "{\n" + ",\n".join(lines) + "\n}\n"
    img.out(text)
    return 0


def _load_snapshot(img: Img, node: Any, sn_opts: dict[str, str] | None,
                   name: str | None) -> None:
    try:
        from bdrv.tools import img_snapshot
    except ImportError:  # internal snapshots not available in this tree
        raise img.fail("Failed to load snapshot: Can't find snapshot") from None
    try:
        if sn_opts is not None:
            img_snapshot.load_tmp(node, sn_opts.get("snapshot.id"), sn_opts.get("snapshot.name"))
        else:
            assert name is not None
            img_snapshot.load_tmp_by_id_or_name(node, name)
    except BlockError as exc:
        img.report(exc, "Failed to load snapshot: ")
        raise ImgExit(1) from None


def _measure(img: Img, out_fmt: str, options: str | None, size: int,
             node: Any) -> MeasureInfo | None:
    drv = find_driver(out_fmt)
    if drv is None or drv.protocol_name is not None and not drv.format_name:
        img.error(f"Unknown file format '{out_fmt}'")
        return None
    if not drv.create_options:
        img.error(f"Format driver '{out_fmt}' does not support image creation")
        return None
    optlist = create_option_list(drv, find_protocol_driver(None))
    values: dict[str, Any] = {}
    if options:
        try:
            values = optlist.parse(parse_opts(options), warn=img.warn)
        except BlockError as exc:
            img.report(exc)
            img.error(f"Invalid options for file format '{out_fmt}'")
            return None
    if size != UNSET:
        values["size"] = size
    try:
        return measure(drv.format_name, values, node)
    except BlockError as exc:
        img.report(exc)
        return None
