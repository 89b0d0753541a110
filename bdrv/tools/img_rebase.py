"""bdrv-img rebase: change an image's backing file (qemu-img 7.2's img_rebase).

Safe mode compares the old and the new backing file wherever the image itself
allocates nothing, in pieces of IO_BUF_SIZE, and writes the old data into the image
where they differ (zero writes where the old backing file has ended); -u only rewrites
the backing name. -b "" removes the backing file.
"""

from __future__ import annotations

import errno
import os

from bdrv.backend import Backend
from bdrv.commit import chain_next, find_backing_image
from bdrv.driver import find_driver
from bdrv.errors import BlockError
from bdrv.graph import O_NO_BACKING, O_RDWR, Node
from bdrv.open import full_backing_filename
from bdrv.request import is_allocated_above
from bdrv.tools.img_common import Img, long_opts, open_image, parse_cache_mode, print_help
from bdrv.tools.progress import Progress

IO_BUF_SIZE = 2 << 20
SECTOR = 512
_LONG = long_opts("help/h", "object:", "image-opts", "force-share/U")


class _Fail(Exception):
    """Stop with status 1 (message printed)."""


def run(img: Img, argv: list[str]) -> int:
    fmt: str | None = None
    out_fmt: str | None = None
    out_base: str | None = None
    cache = "writeback"
    src_cache = "writeback"
    unsafe = progress = quiet = image_opts = force_share = False
    for key, arg in img.getopt(argv, "hf:F:b:upt:T:qU", _LONG):
        if key == "h":
            return print_help(img)
        if key == "f":
            fmt = arg
        elif key == "F":
            out_fmt = arg
        elif key == "b":
            out_base = str(arg)
        elif key == "u":
            unsafe = True
        elif key == "p":
            progress = True
        elif key == "t":
            cache = str(arg)
        elif key == "T":
            src_cache = str(arg)
        elif key == "q":
            quiet = True
        elif key == "U":
            force_share = True
        elif key == "image-opts":
            image_opts = True
    if quiet:
        progress = False
    if img.optind != len(argv) - 1:
        raise img.exit_usage("Expecting one image file name")
    if out_base is None:
        raise img.exit_usage("Must specify backing file (-b) or use unsafe mode (-u)")
    filename = argv[img.optind]
    meter = Progress(progress, 2.0)
    meter.print(0, 100)
    try:
        return _rebase(img, meter, filename, fmt, out_base, out_fmt, cache, src_cache,
                       unsafe, image_opts, force_share)
    except _Fail:
        return 1
    finally:
        meter.end()


def _rebase(img: Img, meter: Progress, filename: str, fmt: str | None, out_base: str,
            out_fmt: str | None, cache: str, src_cache: str, unsafe: bool, image_opts: bool,
            force_share: bool) -> int:
    parsed = parse_cache_mode(cache, O_RDWR | (O_NO_BACKING if unsafe else 0))
    if parsed is None:
        img.error(f"Invalid cache option: {cache}")
        raise _Fail
    src = parse_cache_mode(src_cache, 0)
    if src is None:
        img.error(f"Invalid source cache option: {src_cache}")
        raise _Fail
    blk = open_image(img, filename, fmt, parsed[0], image_opts=image_opts)
    new_blk: Backend | None = None
    try:
        if out_fmt is not None and find_driver(out_fmt) is None:
            img.error(f"Invalid format name: '{out_fmt}'")
            raise _Fail
        node = blk.node
        if not unsafe:
            old = chain_next(node)
            new_node: Node | None = None
            prefix: Node | None = None
            if out_base:
                try:
                    real = full_backing_filename(node, out_base)
                except BlockError as exc:
                    img.report(exc, "Could not resolve backing filename: ")
                    raise _Fail from None
                prefix = find_backing_image(node, real) if old is not None else None
                if prefix is not None:
                    new_node = prefix
                else:
                    opts: dict[str, object] = {}
                    if out_fmt:
                        opts["driver"] = out_fmt
                    if force_share:
                        opts["force-share"] = True
                    try:
                        new_blk = Backend.open(real, opts, src[0], warn=img.raw_warning)
                    except BlockError as exc:
                        img.report(exc, f"Could not open new backing file '{out_base}': ")
                        raise _Fail from None
                    new_node = new_blk.node
            _copy_differences(img, meter, blk, node, old, new_node, prefix, filename)
        try:
            if out_base:
                if not out_fmt:
                    raise BlockError("Invalid argument", errno.EINVAL)
                node.driver.change_backing_file(out_base, out_fmt)
            else:
                node.driver.change_backing_file(None, None)
        except BlockError as exc:
            if exc.errno == errno.ENOSPC:
                img.error(f"Could not change the backing file to '{out_base}': "
                          "No space left in the file header")
            elif exc.errno == errno.EINVAL and out_base and not out_fmt:
                img.error(f"Could not change the backing file to '{out_base}': "
                          "backing format must be specified")
            else:
                img.error(f"Could not change the backing file to '{out_base}': "
                          f"{os.strerror(exc.errno)}")
            raise _Fail from None
        meter.print(100, 0)
        return 0
    finally:
        if new_blk is not None:
            new_blk.close()
        blk.close()


def _copy_differences(img: Img, meter: Progress, blk: Backend, node: Node, old: Node | None,
                      new: Node | None, prefix: Node | None, filename: str) -> None:
    size = blk.getlength()
    old_size = old.getlength() if old is not None else 0
    new_size = new.getlength() if new is not None else 0
    step = 100.0 / (size // min(size, IO_BUF_SIZE)) if size else 0.0
    offset = 0
    while offset < size:
        n = min(IO_BUF_SIZE, size - offset)
        allocated, n = node.is_allocated(offset, n)
        if allocated:
            offset += n
            continue
        if prefix is not None and old is not None:
            above, n, _ = is_allocated_above(old, prefix, False, offset, n)
            if not above:
                offset += n
                continue
        old_is_zero = False
        if offset >= old_size or old is None:
            old_is_zero = True
            buf_old = bytes(n)
        else:
            n = min(n, old_size - offset)
            buf_old = old.pread(offset, n)
        if offset >= new_size or new is None:
            buf_new = bytes(n)
        else:
            n = min(n, new_size - offset)
            buf_new = new.pread(offset, n)
        buf_old = buf_old[:n]
        buf_new = buf_new[:n]
        written = 0
        while written < n:
            differ, pnum = _compare(buf_old, buf_new, written, n)
            if differ:
                if old_is_zero:
                    blk.pwrite_zeroes(offset + written, pnum)
                else:
                    blk.pwrite(offset + written, buf_old[written:written + pnum])
            written += pnum
        meter.print(step, 100)
        offset += n


def _compare(a: bytes, b: bytes, start: int, end: int) -> tuple[bool, int]:
    """compare_buffers(): does the first sector differ, and how far does that hold."""
    first = a[start:start + SECTOR] != b[start:start + SECTOR]
    pos = start + SECTOR
    while pos < end:
        if (a[pos:pos + SECTOR] != b[pos:pos + SECTOR]) != first:
            break
        pos += SECTOR
    return first, min(pos, end) - start
