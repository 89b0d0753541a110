"""bdrv-img convert: copy one or more images (concatenated) into a new or existing one.

Option checks, creation of the target and their messages follow qemu-img 7.2's
img_convert(); the copy itself is in img_convert_copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bdrv.backend import Backend
from bdrv.errors import BlockError
from bdrv.graph import O_NO_SHARE, O_RDWR, O_UNMAP
from bdrv.options import OptionError, accumulate_options, is_help, parse_opts, parse_size
from bdrv.ratelimit import RateLimit
from bdrv.tools.img_common import (
    Img,
    ImgExit,
    long_opts,
    open_image,
    parse_cache_mode,
    print_help,
)
from bdrv.tools.img_convert_copy import (
    IO_BUF_SECTORS,
    SECTOR,
    Converter,
    CopyError,
    Source,
    target_alignment,
)
from bdrv.tools.img_create import (
    create_option_list,
    find_format_driver,
    find_protocol_driver,
    option_help,
)
from bdrv.tools.progress import Progress

MAX_COROUTINES = 16
MAX_BUF_SECTORS = 32768
_LONG = long_opts("help/h", "object:", "image-opts", "target-image-opts", "salvage",
                  "target-is-zero", "bitmaps", "skip-broken-bitmaps")


@dataclass
class ConvertArgs:
    fmt: str | None = None
    out_fmt: str | None = None
    cache: str = "unsafe"
    src_cache: str = "writeback"
    out_baseimg: str | None = None
    backing_fmt: str | None = None
    options: str | None = None
    snapshot: str | None = None
    snapshot_opts: bool = False  # given as snapshot.id=...,snapshot.name=...
    image_opts: bool = False
    tgt_image_opts: bool = False
    skip_create: bool = False
    progress: bool = False
    quiet: bool = False
    force_share: bool = False
    compressed: bool = False
    copy_range: bool = False
    salvage: bool = False
    has_zero_init: bool = False
    bitmaps: bool = False
    skip_broken: bool = False
    min_sparse: int = 8
    rate_limit: int = 0  # bytes per second (-r); 0: unlimited
    explicit_min_sparse: bool = False
    files: list[str] = field(default_factory=list)


def _strtol(text: str) -> int | None:
    """qemu_strtol(text, NULL, 0): the whole string must be a C long in base 0."""
    match = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[:2].lower() == "0x":
        value = int(digits, 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    value = -value if sign == "-" else value
    return value if -(1 << 63) <= value < 1 << 63 else None


def _parse_args(img: Img, argv: list[str]) -> ConvertArgs | int:
    a = ConvertArgs()
    for key, arg in img.getopt(argv, "hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", _LONG):
        value = str(arg)
        if key == "h":
            return print_help(img)
        if key == "f":
            a.fmt = value
        elif key == "O":
            a.out_fmt = value
        elif key == "B":
            a.out_baseimg = value
        elif key == "C":
            a.copy_range = True
        elif key == "c":
            a.compressed = True
        elif key == "F":
            a.backing_fmt = value
        elif key == "o":
            try:
                a.options = accumulate_options(a.options, value)
            except BlockError as exc:
                img.report(exc)
                return 1
        elif key == "l":
            if value.startswith("snapshot."):
                bad = _snapshot_opts_error(value)
                if bad is not None:
                    img.error(bad)
                    img.error(f"Failed in parsing snapshot param '{value}'")
                    return 1
                a.snapshot_opts = True
            a.snapshot = value
        elif key == "S":
            try:
                sval = parse_size(value, "buffer size for sparse output", warn=img.warn)
            except OptionError as exc:
                img.report(exc)
                return 1
            if sval % SECTOR or sval // SECTOR > MAX_BUF_SECTORS:
                img.error("Invalid buffer size for sparse output specified. Valid sizes are "
                          f"multiples of {SECTOR} up to {MAX_BUF_SECTORS * SECTOR}. Select 0 "
                          "to disable sparse detection (fully allocates output).")
                return 1
            a.min_sparse = sval // SECTOR
            a.explicit_min_sparse = True
        elif key == "p":
            a.progress = True
        elif key == "t":
            a.cache = value
        elif key == "T":
            a.src_cache = value
        elif key == "q":
            a.quiet = True
        elif key == "n":
            a.skip_create = True
        elif key == "m":
            count = _strtol(value)
            if count is None or not 1 <= count <= MAX_COROUTINES:
                img.error("Invalid number of coroutines. Allowed number of coroutines is "
                          f"between 1 and {MAX_COROUTINES}")
                return 1
        elif key == "U":
            a.force_share = True
        elif key == "r":
            try:
                a.rate_limit = parse_size(value, "rate limit", warn=img.warn)
            except OptionError as exc:
                img.report(exc)
                return 1
        elif key == "image-opts":
            a.image_opts = True
        elif key == "target-image-opts":
            a.tgt_image_opts = True
        elif key == "salvage":
            a.salvage = True
        elif key == "target-is-zero":
            a.has_zero_init = True
        elif key == "bitmaps":
            a.bitmaps = True
        elif key == "skip-broken-bitmaps":
            a.skip_broken = True
    a.files = argv[img.optind :]
    return a


def _snapshot_opts_error(text: str) -> str | None:
    """Why a "snapshot.id=...,snapshot.name=..." parameter is invalid, or None."""
    try:
        pairs = parse_opts(text)
    except BlockError as exc:
        return exc.message
    for name, _ in pairs:
        if name not in ("snapshot.id", "snapshot.name"):
            return f"Invalid parameter '{name}'"
    return None


def _usage_errors(img: Img, a: ConvertArgs) -> int | None:
    """The checks qemu-img makes before touching any file; an exit status or None."""
    if not a.out_fmt and not a.tgt_image_opts:
        a.out_fmt = "raw"
    checks = (
        (a.skip_broken and not a.bitmaps, "Use of --skip-broken-bitmaps requires --bitmaps"),
        (a.compressed and a.copy_range, "Cannot enable copy offloading when -c is used"),
        (a.explicit_min_sparse and a.copy_range,
         "Cannot enable copy offloading when -S is used"),
        (a.copy_range and a.salvage, "Cannot use copy offloading in salvaging mode"),
        (a.tgt_image_opts and not a.skip_create, "--target-image-opts requires use of -n flag"),
        (a.skip_create and a.options is not None,
         "-o has no effect when skipping image creation"),
        (a.has_zero_init and not a.skip_create, "--target-is-zero requires use of -n flag"),
    )
    for failed, message in checks:
        if failed:
            img.error(message)
            return 1
    out_filename = a.files[-1] if len(a.files) >= 2 else None
    if a.options is not None and is_help(a.options):
        if a.out_fmt:
            return option_help(img, out_filename, a.out_fmt)
        img.error("Option help requires a format be specified")
        return 1
    if len(a.files) < 2:
        img.error("Must specify image file name")
        return 1
    return None


def run(img: Img, argv: list[str]) -> int:
    parsed = _parse_args(img, argv)
    if isinstance(parsed, int):
        return parsed
    a = parsed
    status = _usage_errors(img, a)
    if status is not None:
        return status
    src_flags = parse_cache_mode(a.src_cache, O_NO_SHARE)
    if src_flags is None:
        img.error(f"Invalid source cache option: {a.src_cache}")
        return 1
    if a.quiet:
        a.progress = False
    meter = Progress(a.progress, 1.0)
    meter.print(0, 100)
    sources: list[Backend] = []
    target: Backend | None = None
    ok = False
    try:
        target = _convert(img, a, src_flags[0], sources, meter)
        ok = True
    except (ImgExit, CopyError):
        pass
    finally:
        if target is not None:
            target.close()
        for blk in sources:
            blk.close()
    if ok:
        meter.print(100, 0)
    meter.end()
    return 0 if ok else 1


def _convert(img: Img, a: ConvertArgs, src_flags: int, sources: list[Backend],
             meter: Progress) -> Backend | None:
    names, out_filename = a.files[:-1], a.files[-1]
    for name in names:
        sources.append(open_image(img, name, a.fmt, src_flags, image_opts=a.image_opts,
                                  force_share=a.force_share))
    total_sectors = sum(blk.getlength() // SECTOR for blk in sources)
    if a.snapshot is not None:
        if len(sources) > 1 and not a.snapshot_opts:
            raise img.fail("No support for concatenating multiple snapshot")
        from bdrv.tools.img_snapshot import load_tmp, load_tmp_by_id_or_name

        try:
            if a.snapshot_opts:
                given = dict(parse_opts(a.snapshot))
                load_tmp(sources[0].node, given.get("snapshot.id"), given.get("snapshot.name"))
            else:
                load_tmp_by_id_or_name(sources[0].node, a.snapshot)
        except BlockError as exc:
            img.report(exc, "Failed to load snapshot: ")
            raise ImgExit(1) from None
    drv_cls = None
    values: dict[str, Any] = {}
    if not a.skip_create:
        assert a.out_fmt is not None
        drv_cls, values = _create_options(img, a, out_filename, total_sectors)
    out_baseimg = values.get("backing_file", a.out_baseimg)
    target_has_backing = bool(out_baseimg)
    if a.has_zero_init and target_has_backing:
        raise img.fail("Cannot use --target-is-zero when the destination image has a backing "
                       "file")
    if len(sources) > 1 and out_baseimg:
        raise img.fail("Having a backing file for the target makes no sense when "
                       "concatenating multiple input images")
    if "backing_file" in values and "backing_fmt" not in values:
        raise img.fail("Use of backing file requires explicit backing format")
    if a.compressed:
        if drv_cls is not None and not getattr(drv_cls, "supports_compressed_writes", False):
            raise img.fail("Compression not supported for this file format")
        if values.get("encryption") or values.get("encrypt.format") is not None:
            raise img.fail("Compression and encryption not supported at the same time")
        if values.get("preallocation", "off") != "off":
            raise img.fail("Compression and preallocation not supported at the same time")
    if a.bitmaps:
        if len(sources) > 1:
            raise img.fail("Copying bitmaps only possible with single source")
        if not getattr(sources[0].node.driver, "supports_persistent_dirty_bitmap", False):
            raise img.fail("Source lacks bitmap support")
    if drv_cls is not None:
        try:
            drv_cls.create(out_filename, values, img.warn)
        except BlockError as exc:
            img.report(exc, f"{out_filename}: error while converting {a.out_fmt}: ")
            raise ImgExit(1) from None
    flags = O_RDWR | O_UNMAP if a.min_sparse else O_RDWR
    parsed = parse_cache_mode(a.cache, flags)
    if parsed is None:
        raise img.fail(f"Invalid cache option: {a.cache}")
    target = open_image(img, out_filename, a.out_fmt, parsed[0],
                        image_opts=a.skip_create and a.tgt_image_opts)
    try:
        _copy(img, a, sources, target, total_sectors, target_has_backing, meter)
    except BaseException:
        target.close()
        raise
    return target


def _create_options(img: Img, a: ConvertArgs, out_filename: str,
                    total_sectors: int) -> tuple[Any, dict[str, Any]]:
    """The target's driver and creation options, checked the way qemu-img checks them."""
    assert a.out_fmt is not None
    try:
        drv_cls = find_format_driver(a.out_fmt)
        proto = find_protocol_driver(out_filename)
        if not drv_cls.create_options:
            raise BlockError(f"Format driver '{drv_cls.format_name}' does not support image "
                             "creation")
        if not proto.create_options:
            raise BlockError(f"Protocol driver '{proto.format_name}' does not support image "
                             "creation")
        optlist = create_option_list(drv_cls, proto)
        values = optlist.parse(parse_opts(a.options) if a.options else [], warn=img.warn)
    except BlockError as exc:
        img.report(exc)
        raise ImgExit(1) from None
    values["size"] = total_sectors * SECTOR
    if a.out_baseimg is not None:
        if optlist.find("backing_file") is None:
            raise img.fail(f"Backing file not supported for file format '{a.out_fmt}'")
        values["backing_file"] = a.out_baseimg
    if a.backing_fmt is not None:
        if optlist.find("backing_fmt") is None:
            raise img.fail(f"Backing file format not supported for file format '{a.out_fmt}'")
        values["backing_fmt"] = a.backing_fmt
    return drv_cls, values


def _copy(img: Img, a: ConvertArgs, sources: list[Backend], target: Backend,
          total_sectors: int, target_has_backing: bool, meter: Progress) -> None:
    out_node = target.node
    if a.bitmaps and not getattr(out_node.driver, "supports_persistent_dirty_bitmap", False):
        raise img.fail(f"Format driver '{out_node.driver.format_name}' does not support bitmaps")
    if a.compressed and not getattr(out_node.driver, "supports_compressed_writes", False):
        raise img.fail("Compression not supported for this file format")
    if a.skip_create and target.getlength() // SECTOR < total_sectors:
        raise img.fail("output file is smaller than input file")
    srcs = []
    for blk in sources:
        alignment = -(-blk.node.request_alignment // SECTOR)
        try:
            cluster = int(blk.node.driver.get_info().get("cluster_size", 0))
            alignment = max(alignment, cluster // SECTOR)
        except BlockError:
            pass
        srcs.append(Source(blk, blk.getlength() // SECTOR, alignment))
    cluster_sectors = 0
    try:
        cluster_sectors = int(out_node.driver.get_info().get("cluster_size", 0)) // SECTOR
    except BlockError:
        if a.compressed:
            raise img.fail("could not get block driver info") from None
    conv = Converter(
        img, srcs, target,
        compressed=a.compressed,
        cluster_sectors=cluster_sectors,
        min_sparse=a.min_sparse,
        rate_limit=RateLimit(a.rate_limit),
        has_zero_init=a.has_zero_init,
        target_is_new=not a.skip_create,
        target_has_backing=target_has_backing,
        copy_range=a.copy_range,
        salvage=a.salvage,
        quiet=a.quiet,
        alignment=target_alignment(a.min_sparse, out_node.request_alignment),
        buf_sectors=IO_BUF_SECTORS,
        total_sectors=total_sectors,
    )
    if target_has_backing and not a.skip_create:
        backing = out_node.backing
        conv.target_backing_sectors = backing.node.getlength() // SECTOR if backing else -1
    conv.run(meter)
