"""bdrv-img create, and the image creation steps convert shares (bdrv_img_create).

Creation options come from the format driver's `create_options` followed by the
protocol driver's (duplicates dropped, as qemu_opts_append does). Errors are
BlockErrors with QEMU's words; `run` prefixes them with the file name.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from bdrv.driver import Driver, find_driver
from bdrv.errors import BlockError
from bdrv.graph import O_NO_BACKING, O_NO_IO, O_RDWR, O_SNAPSHOT
from bdrv.open import open_node, path_has_protocol, protocol_prefix
from bdrv.options import OptionList, accumulate_options, is_help, parse_opts, parse_size
from bdrv.sizes import OptionError
from bdrv.tools.img_common import Img, long_opts, print_help

_LONG = long_opts("help/h", "object:")
UNSET = -1


def find_protocol_driver(filename: str | None) -> type[Driver]:
    """bdrv_find_protocol(filename, allow_protocol_prefix=true)."""
    name = "file"
    if filename is not None and path_has_protocol(filename):
        name = protocol_prefix(filename)
    drv = find_driver(name)
    if drv is None or drv.protocol_name != name:
        raise BlockError(f"Unknown protocol '{name}'")
    return drv


def find_format_driver(fmt: str) -> type[Driver]:
    drv = find_driver(fmt)
    if drv is None:
        raise BlockError(f"Unknown file format '{fmt}'")
    return drv


def create_option_list(drv: type[Driver], proto: type[Driver] | None,
                       *, with_backing: bool = False) -> OptionList:
    """The options create accepts in `-o`: the format's, then the protocol's.

    A driver whose backing options QEMU 7.2 does not have (vpc: `-b` makes a
    differencing image, which 7.2 cannot create) keeps them in `create_backing_options`:
    only -b/-F set them, so `-o` and `-o help` stay as in 7.2. `with_backing` appends
    them (after the format's own) for the "Formatting ..." line.
    """
    descs = tuple(drv.create_options)
    if with_backing:
        descs += tuple(getattr(drv, "create_backing_options", ()))
    options = OptionList(descs)
    if proto is not None:
        options = options.append(OptionList(proto.create_options))
    return options


def option_help(img: Img, filename: str | None, fmt: str) -> int:
    """`-o help`: the format's (and, given a file name, the protocol's) create options."""
    try:
        drv = find_format_driver(fmt)
        if not drv.create_options:
            raise BlockError(f"Format driver '{fmt}' does not support image creation")
        proto = None
        if filename is not None:
            proto = find_protocol_driver(filename)
            if not proto.create_options:
                raise BlockError(
                    f"Protocol driver '{proto.format_name}' does not support image creation")
    except BlockError as exc:
        img.report(exc)
        return 1
    options = create_option_list(drv, proto)
    img.out(options.help_text(fmt, protocol_included=filename is not None))
    return 0


def run(img: Img, argv: list[str]) -> int:
    fmt = "raw"
    base_fmt: str | None = None
    base_filename: str | None = None
    options: str | None = None
    quiet = False
    flags = 0
    for key, arg in img.getopt(argv, "F:b:f:ho:qu", _LONG):
        if key == "h":
            return print_help(img)
        if key == "F":
            base_fmt = arg
        elif key == "b":
            base_filename = arg
        elif key == "f":
            fmt = str(arg)
        elif key == "o":
            try:
                options = accumulate_options(options, str(arg))
            except BlockError as exc:
                img.report(exc)
                return 1
        elif key == "q":
            quiet = True
        elif key == "u":
            flags |= O_NO_BACKING
    optind = img.optind
    filename = argv[optind] if optind < len(argv) else None
    if options is not None and is_help(options):
        return option_help(img, filename, fmt)
    if filename is None:
        raise img.exit_usage("Expecting image file name")
    optind += 1
    size = UNSET
    if optind < len(argv):
        try:
            size = parse_size(argv[optind], "image size", warn=img.warn)
        except OptionError as exc:
            img.report(exc)
            return 1
        optind += 1
    if optind != len(argv):
        raise img.exit_usage(f"Unexpected argument: {argv[optind]}")
    try:
        img_create(img, filename, fmt, base_filename, base_fmt, options, size, flags, quiet)
    except BlockError as exc:
        img.report(exc, f"{filename}: ")
        return 1
    return 0


def img_create(
    img: Img,
    filename: str,
    fmt: str,
    base_filename: str | None,
    base_fmt: str | None,
    options: str | None,
    size: int,
    flags: int,
    quiet: bool,
) -> None:
    """bdrv_img_create(): check and complete the options, print them, create the image."""
    drv = find_format_driver(fmt)
    proto = find_protocol_driver(filename)
    if not drv.create_options:
        raise BlockError(f"Format driver '{fmt}' does not support image creation")
    if not proto.create_options:
        raise BlockError(
            f"Protocol driver '{proto.format_name}' does not support image creation")
    optlist = create_option_list(drv, proto)
    pairs = parse_opts(options) if options else []
    values = optlist.parse(pairs, warn=img.warn)
    if "size" not in values:
        pairs.append(("size", str(size)))
        values["size"] = size
    elif size != UNSET:
        raise BlockError("The image size must be specified only once")
    extra_backing: tuple[object, ...] = tuple(getattr(drv, "create_backing_options", ()))
    if (base_filename is not None or base_fmt is not None) and extra_backing:
        optlist = create_option_list(drv, proto, with_backing=True)
    if base_filename is not None:
        if optlist.find("backing_file") is None:
            raise BlockError(f"Backing file not supported for file format '{fmt}'")
        pairs.append(("backing_file", base_filename))
        values["backing_file"] = base_filename
    if base_fmt is not None:
        if optlist.find("backing_fmt") is None:
            raise BlockError(f"Backing file format not supported for file format '{fmt}'")
        pairs.append(("backing_fmt", base_fmt))
        values["backing_fmt"] = base_fmt
    backing_file = values.get("backing_file")
    if backing_file is not None:
        if backing_file == filename:
            raise BlockError(
                "Error: Trying to create an image with the same filename as the backing file")
        if backing_file == "":
            raise BlockError("Expected backing file name, got empty string")
    backing_fmt = values.get("backing_fmt")
    total = values["size"]
    if backing_file is not None and not flags & O_NO_BACKING:
        backing_size = _backing_size(filename, backing_file, backing_fmt, flags)
        if total == UNSET:
            total = backing_size
            pairs.append(("size", str(total)))
            values["size"] = total
    elif backing_file is not None and backing_fmt is None:
        raise BlockError("Backing file specified without backing format")
    if total == UNSET:
        raise BlockError("Image creation needs a size parameter")
    if not quiet:
        img.out(f"Formatting '{filename}', fmt={fmt} {optlist.format_values(pairs)}\n")
    try:
        drv.create(filename, values, img.warn)
    except BlockError as exc:
        if exc.errno == errno.EFBIG:
            hint = " (try using a larger cluster size)" if values.get("cluster_size") else ""
            raise BlockError(f"The image size is too large for file format '{fmt}'{hint}",
                             errno.EFBIG) from None
        raise


def full_backing_filename(filename: str, backing: str) -> str:
    """bdrv_get_full_backing_filename_from_filename(): resolve against the image's dir."""
    if path_has_protocol(backing) or os.path.isabs(backing):
        return backing
    if filename.startswith("json:") or not filename:
        raise BlockError("Cannot use relative backing file names for '" + filename + "'")
    directory = filename[: filename.rfind("/") + 1] if "/" in filename else ""
    return directory + backing


def _backing_size(filename: str, backing: str, backing_fmt: str | None, flags: int) -> int:
    """Open the backing file as bdrv_img_create does; its length, or QEMU's error."""
    full = full_backing_filename(filename, backing)
    open_flags = (flags & ~(O_RDWR | O_SNAPSHOT | O_NO_BACKING)) | O_NO_IO
    opts: dict[str, Any] = {"force-share": True}
    if backing_fmt is not None:
        opts["driver"] = backing_fmt
    try:
        node = open_node(full, opts, open_flags)
    except BlockError as exc:
        exc.hint = exc.hint + "Could not open backing image.\n"
        raise
    try:
        if backing_fmt is None:
            raise BlockError("Backing file specified without backing format",
                             hint=f"Detected format of {node.driver.format_name}.")
        return node.getlength()
    finally:
        from bdrv.backend import close_graph

        close_graph(node)
