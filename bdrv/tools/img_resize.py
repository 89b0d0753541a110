"""bdrv-img resize: grow or shrink an image to an absolute or relative ([+|-]) size."""

from __future__ import annotations

from bdrv.errors import BlockError
from bdrv.graph import O_RDWR, O_RESIZE
from bdrv.options import OptionError, parse_resize_size
from bdrv.tools.img_common import Img, long_opts, open_image, print_help

_LONG = long_opts("help/h", "object:", "image-opts", "preallocation:", "shrink")
# PreallocMode as qapi_enum_parse knows it; the driver refuses the ones it lacks.
PREALLOC_MODES = ("off", "metadata", "falloc", "full")


def _int64(value: int) -> int:
    """Wrap to a C int64_t, as qemu-img's arithmetic on sizes does."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def run(img: Img, argv: list[str]) -> int:
    # The size comes off the end first, so that "-1G" is not taken for an option.
    if len(argv) < 3:
        raise img.exit_usage("Not enough arguments")
    size_arg = argv[-1]
    argv = argv[:-1]
    fmt: str | None = None
    quiet = image_opts = shrink = False
    prealloc = "off"
    for key, arg in img.getopt(argv, "f:hq", _LONG):
        if key == "h":
            return print_help(img)
        if key == "f":
            fmt = arg
        elif key == "q":
            quiet = True
        elif key == "image-opts":
            image_opts = True
        elif key == "preallocation":
            if arg not in PREALLOC_MODES:
                raise img.fail(f"Invalid preallocation mode '{arg}'")
            prealloc = str(arg)
        elif key == "shrink":
            shrink = True
    if img.optind != len(argv) - 1:
        raise img.exit_usage("Expecting image file name and size")
    filename = argv[img.optind]
    try:
        sign, amount = parse_resize_size(size_arg, warn=img.warn)
    except OptionError as exc:
        img.report(exc)
        return 1
    amount = _int64(amount)
    blk = open_image(img, filename, fmt, O_RDWR | O_RESIZE, image_opts=image_opts)
    try:
        current = blk.getlength()
        total = _int64(current + amount * sign) if sign else amount
        if total <= 0:
            raise img.fail("New image size must be positive")
        if total <= current and prealloc != "off":
            raise img.fail("Preallocation can only be used for growing images")
        if total < current and not shrink:
            img.error("Use the --shrink option to perform a shrink operation.")
            img.warn("Shrinking an image will delete all data beyond the shrunken image's "
                     "end. Before performing such an operation, make sure there is no "
                     "important data there.")
            return 1
        try:
            blk.truncate(total, exact=True, prealloc=prealloc)
        except BlockError as exc:
            img.report(exc)
            return 1
        img.qprint(quiet, "Image resized.\n")
        return 0
    finally:
        blk.close()
