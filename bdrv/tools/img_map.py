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
from bdrv.status_runs import StatusRuns, batch_layers, chain_runs
from bdrv.tools.img_common import (
    HUMAN,
    Img,
    ImgExit,
    long_opts,
    open_image,
    parse_output_format,
    print_help,
)
from bdrv.tools.img_map_batch import human_text, json_text, merge_runs, odd_for_human
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
    layers = batch_layers(node)
    resume = start  # where runs may be asked for (see StatusRuns.resume)
    while curr.start + curr.length < length:
        offset = curr.start + curr.length
        if layers is not None and offset >= resume:
            runs = chain_runs(layers, offset, length)
            if runs is None:
                layers = None
            else:
                resume = runs.resume
                if len(runs.start):
                    curr = _dump_runs(img, human, curr, runs, layers)
                    continue
        try:
            nxt = block_status_entry(node, offset, length - offset)
        except BlockError as exc:
            raise img.fail(f"Could not read file metadata: {os.strerror(exc.errno)}") from None
        curr = _step(img, human, curr, nxt)
    _dump(img, human, curr, None)
    if not human:
        img.out("]\n")
    return 0


def _step(img: Img, human: bool, curr: MapEntry, nxt: MapEntry) -> MapEntry:
    """Merge `nxt` into `curr`, or print `curr` and go on with `nxt`."""
    if mergeable(curr, nxt):
        curr.length += nxt.length
        return curr
    if curr.length > 0:
        nxt = _dump(img, human, curr, nxt)
    return nxt


def _dump_runs(img: Img, human: bool, curr: MapEntry, runs: StatusRuns,
               layers: list[Node]) -> MapEntry:
    """The per-entry steps for a chunk of runs, the middle of it printed at once."""
    merged = merge_runs(runs)
    names = [_file_name(n) for n in layers]

    def entry(i: int) -> MapEntry:
        flags = int(merged.flags[i])
        has_offset = bool(flags & BLOCK_OFFSET_VALID)
        return MapEntry(start=int(merged.start[i]), length=int(merged.length[i]),
                        data=bool(flags & BLOCK_DATA), zero=bool(flags & BLOCK_ZERO),
                        present=bool(flags & BLOCK_ALLOCATED),
                        offset=int(merged.host[i]) if has_offset else None,
                        depth=int(merged.depth[i]),
                        filename=names[int(merged.depth[i])] if has_offset else None)

    n = len(merged)
    if human and odd_for_human(merged):
        for i in range(n):
            curr = _step(img, human, curr, entry(i))
        return curr
    curr = _step(img, human, curr, entry(0))
    if n == 1:
        return curr
    # Entries merged within the chunk do not merge with their neighbours.
    last = entry(n - 1)
    nxt = _dump(img, human, curr, entry(1) if n > 2 else last)
    if n > 2:
        if human:
            pieces, stopped = human_text(merged, 1, n - 1, lambda d: names[d] or "")
            for text in pieces:
                img.out(text)
            if stopped:
                raise _unmapped(img)
        else:
            for text in json_text(merged, 1, n - 1):
                img.out(text)
        nxt = _relabel(last) if human else last
    return nxt


def _file_name(node: Node) -> str | None:
    file = getattr(node.driver, "file", None)
    return file.filename if file is not None else None


def _dump(img: Img, human: bool, entry: MapEntry, nxt: MapEntry | None) -> MapEntry:
    """Print one entry; returns `nxt`, which the human format may relabel as zero."""
    if human:
        if entry.data and entry.offset is None:
            raise _unmapped(img)
        if entry.data and not entry.zero:
            img.out(hex_column(entry.start) + hex_column(entry.length)
                    + hex_column(entry.offset or 0) + (entry.filename or "") + "\n")
        return _relabel(nxt) if nxt is not None else entry
    text = (f'{{ "start": {entry.start}, "length": {entry.length}, "depth": {entry.depth},'
            f' "present": {_bool(entry.present)}, "zero": {_bool(entry.zero)},'
            f' "data": {_bool(entry.data)}')
    if entry.offset is not None:
        text += f', "offset": {entry.offset}'
    img.out(text + "}" + (",\n" if nxt is not None else ""))
    return nxt if nxt is not None else entry


def _relabel(entry: MapEntry) -> MapEntry:
    """Human output does not tell zero and unallocated apart: let them merge."""
    if not entry.data or entry.zero:
        return replace(entry, data=False, zero=True)
    return entry


def _unmapped(img: Img) -> ImgExit:
    return img.fail("File contains external, encrypted or compressed clusters.")


def _bool(value: bool) -> str:
    return "true" if value else "false"
