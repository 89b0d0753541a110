"""bdrv-img map: where an image's data lives, as qemu-img 7.2 prints it.

Each range gets the block status of the first layer in the backing chain that knows
about it (`depth` counts the layers skipped). Adjacent ranges that agree are merged;
the human format shows only data ranges and treats all others alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from bdrv.errors import BlockError
from bdrv.graph import Node
from bdrv.options import OptionError, parse_size
from bdrv.request import BLOCK_ALLOCATED, BLOCK_DATA, BLOCK_OFFSET_VALID, BLOCK_ZERO
from bdrv.tools.img_common import (
    HUMAN,
    Img,
    ImgExit,
    long_opts,
    open_image,
    parse_output_format,
    print_help,
)
from bdrv.tools.output import hex_column

_LONG = long_opts("help/h", "format:/f", "output:", "object:", "image-opts", "force-share/U",
                  "start-offset:/s", "max-length:/l")


@dataclass
class MapEntry:
    start: int
    length: int
    data: bool = False
    zero: bool = False
    present: bool = False
    offset: int | None = None
    depth: int = 0
    filename: str | None = None


def run(img: Img, argv: list[str]) -> int:
    fmt: str | None = None
    output: str | None = None
    image_opts = force_share = False
    start_offset = 0
    max_length = -1
    for key, arg in img.getopt(argv, "f:s:l:hU", _LONG):
        if key == "h":
            return print_help(img)
        if key == "f":
            fmt = arg
        elif key == "U":
            force_share = True
        elif key == "output":
            output = arg
        elif key == "s":
            start_offset = _number(img, "start offset", str(arg))
        elif key == "l":
            max_length = _number(img, "max length", str(arg))
        elif key == "image-opts":
            image_opts = True
    if img.optind != len(argv) - 1:
        raise img.exit_usage("Expecting one image file name")
    filename = argv[img.optind]
    output_format = parse_output_format(img, output)
    blk = open_image(img, filename, fmt, 0, image_opts=image_opts, force_share=force_share)
    try:
        return _map(img, blk.node, blk.getlength(), start_offset, max_length, output_format)
    finally:
        blk.close()


def _number(img: Img, name: str, text: str) -> int:
    try:
        return parse_size(text, name, warn=img.warn)
    except OptionError as exc:
        img.report(exc)
        raise ImgExit(1) from None


def block_status_entry(node: Node, offset: int, length: int) -> MapEntry:
    """get_block_status(): the first layer of the chain that has data or zeros here."""
    depth = 0
    current: Node | None = node
    flags, pnum, mapped, file = 0, length, 0, None
    while current is not None:
        st = current.block_status(offset, length)
        flags, pnum, mapped, file = st.flags, st.pnum, st.map, st.file
        if pnum == 0:
            break
        length = pnum
        if flags & (BLOCK_DATA | BLOCK_ZERO):
            break
        backing = current.backing
        current = backing.node if backing is not None else None
        if current is None:
            flags = 0
            break
        depth += 1
    has_offset = bool(flags & BLOCK_OFFSET_VALID)
    return MapEntry(
        start=offset,
        length=pnum,
        data=bool(flags & BLOCK_DATA),
        zero=bool(flags & BLOCK_ZERO),
        present=bool(flags & BLOCK_ALLOCATED),
        offset=mapped if has_offset else None,
        depth=depth,
        filename=file.filename if file is not None and has_offset else None,
    )


def mergeable(curr: MapEntry, nxt: MapEntry) -> bool:
    if curr.length == 0:
        return False
    if (curr.zero, curr.data, curr.present, curr.depth, curr.filename is None,
            curr.offset is None) != (nxt.zero, nxt.data, nxt.present, nxt.depth,
                                     nxt.filename is None, nxt.offset is None):
        return False
    if curr.filename is not None and curr.filename != nxt.filename:
        return False
    return not (curr.offset is not None and nxt.offset is not None
                and curr.offset + curr.length != nxt.offset)


def _map(img: Img, node: Node, length: int, start: int, max_length: int,
         output_format: str) -> int:
    human = output_format == HUMAN
    img.out(f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File\n" if human else "[")
    if max_length != -1:
        length = min(start + max_length, length)
    curr = MapEntry(start=start, length=0)
    while curr.start + curr.length < length:
        offset = curr.start + curr.length
        try:
            nxt = block_status_entry(node, offset, length - offset)
        except BlockError as exc:
            raise img.fail(f"Could not read file metadata: {os.strerror(exc.errno)}") from None
        if mergeable(curr, nxt):
            curr.length += nxt.length
            continue
        if curr.length > 0:
            nxt = _dump(img, human, curr, nxt)
        curr = nxt
    _dump(img, human, curr, None)
    if not human:
        img.out("]\n")
    return 0


def _dump(img: Img, human: bool, entry: MapEntry, nxt: MapEntry | None) -> MapEntry:
    """Print one entry; returns `nxt`, which the human format may relabel as zero."""
    if human:
        if entry.data and entry.offset is None:
            raise img.fail("File contains external, encrypted or compressed clusters.")
        if entry.data and not entry.zero:
            img.out(hex_column(entry.start) + hex_column(entry.length)
                    + hex_column(entry.offset or 0) + (entry.filename or "") + "\n")
        # Human output does not tell zero and unallocated apart: let them merge.
        if nxt is not None and (not nxt.data or nxt.zero):
            nxt = replace(nxt, data=False, zero=True)
        return nxt if nxt is not None else entry
    text = (f'{{ "start": {entry.start}, "length": {entry.length}, "depth": {entry.depth},'
            f' "present": {_bool(entry.present)}, "zero": {_bool(entry.zero)},'
            f' "data": {_bool(entry.data)}')
    if entry.offset is not None:
        text += f', "offset": {entry.offset}'
    img.out(text + "}" + (",\n" if nxt is not None else ""))
    return nxt if nxt is not None else entry


def _bool(value: bool) -> str:
    return "true" if value else "false"
