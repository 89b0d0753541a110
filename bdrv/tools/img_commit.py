"""bdrv-img commit: write an image's data into its backing file (qemu-img 7.2's img_commit).

Without -b the immediate backing file is the base; -b names a deeper one and implies -d.
Unless -d, the top image is emptied afterwards (bdrv_make_empty; ENOTSUP is ignored).
"""

from __future__ import annotations

import errno

from numpy import float32

from bdrv.commit import chain_next, commit, find_backing_image
from bdrv.errors import BlockError
from bdrv.graph import O_RDWR, O_UNMAP
from bdrv.options import OptionError
from bdrv.ratelimit import RateLimit
from bdrv.reopen import reopen
from bdrv.sizes import parse_size
from bdrv.tools.img_common import Img, long_opts, open_image, parse_cache_mode, print_help
from bdrv.tools.progress import Progress

_LONG = long_opts("help/h", "object:", "image-opts")


def run(img: Img, argv: list[str]) -> int:
    fmt: str | None = None
    cache = "unsafe"
    base: str | None = None
    drop = progress = quiet = image_opts = False
    rate_limit = 0  # bytes per second; 0: unlimited
    for key, arg in img.getopt(argv, "f:ht:b:dpqr:", _LONG):
        if key == "h":
            return print_help(img)
        if key == "f":
            fmt = arg
        elif key == "t":
            cache = str(arg)
        elif key == "b":
            base = str(arg)
            drop = True
        elif key == "d":
            drop = True
        elif key == "p":
            progress = True
        elif key == "q":
            quiet = True
        elif key == "r":
            try:
                rate_limit = parse_size(str(arg), "rate limit")
            except OptionError as exc:
                img.report(exc)
                return 1
        elif key == "image-opts":
            image_opts = True
    if quiet:
        progress = False
    if img.optind != len(argv) - 1:
        raise img.exit_usage("Expecting one image file name")
    filename = argv[img.optind]
    parsed = parse_cache_mode(cache, O_RDWR | O_UNMAP)
    if parsed is None:
        raise img.fail(f"Invalid cache option: {cache}")
    flags = parsed[0]
    blk = open_image(img, filename, fmt, flags, image_opts=image_opts)
    meter = Progress(progress, 1.0)
    meter.print(0, 100)
    error: BlockError | None = None
    try:
        top = blk.node
        if base is not None:
            base_node = find_backing_image(top, base)
            if base_node is None:
                raise BlockError(f"Did not find '{base}' in the backing chain of '{filename}'")
        else:
            base_node = chain_next(top)
            if base_node is None:
                raise BlockError("Image does not have a backing file")
        if base_node.read_only:
            reopen(base_node, {"read-only": False})
        def step(done: int, total: int) -> None:
            meter.print(float(float32(done) / float32(total) * float32(100)), 0)

        commit(top, base_node, step, RateLimit(rate_limit))
        meter.print(100, 0)
        base_node.flush()
        if not drop:
            try:
                top.driver.make_empty()
            except BlockError as exc:
                if exc.errno != errno.ENOTSUP:
                    raise
    except BlockError as exc:
        error = exc
    finally:
        meter.end()
        blk.close()
    if error is not None:
        img.report(error)
        return 1
    img.qprint(quiet, "Image committed.\n")
    return 0
