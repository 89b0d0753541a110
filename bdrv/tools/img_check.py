"""bdrv-img check: consistency check and repair, with qemu-img's report and exit codes.

Exit codes: 0 clean, 1 check failed, 2 corruptions, 3 only leaks, 63 the format has no
check. The driver's check(fix) returns a result object (corruptions, leaks, ...,
`bfi` fragmentation counters, `messages` printed to stderr first); missing attributes
count as 0.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from bdrv.check import ErrorReport
from bdrv.errors import BlockError
from bdrv.graph import O_CHECK, O_RDWR
from bdrv.tools.img_common import (
    HUMAN,
    Img,
    ImgExit,
    long_opts,
    open_image,
    parse_cache_mode,
    parse_output_format,
    print_help,
)
from bdrv.tools.output import json_pretty

FIX_LEAKS = 1
FIX_ERRORS = 2

_LONG = long_opts("help/h", "format:/f", "repair:/r", "output:", "object:", "image-opts",
                  "force-share/U")


def run(img: Img, argv: list[str]) -> int:
    fmt: str | None = None
    output: str | None = None
    cache = "writeback"
    fix = 0
    flags = O_CHECK
    quiet = image_opts = force_share = False
    for key, arg in img.getopt(argv, "hf:r:T:qU", _LONG):
        if key == "h":
            return print_help(img)
        if key == "f":
            fmt = arg
        elif key == "r":
            flags |= O_RDWR
            if arg == "leaks":
                fix = FIX_LEAKS
            elif arg == "all":
                fix = FIX_LEAKS | FIX_ERRORS
            else:
                raise img.exit_usage(
                    f"Unknown option value for -r (expecting 'leaks' or 'all'): {arg}")
        elif key == "output":
            output = arg
        elif key == "T":
            cache = str(arg)
        elif key == "q":
            quiet = True
        elif key == "U":
            force_share = True
        elif key == "image-opts":
            image_opts = True
    if img.optind != len(argv) - 1:
        raise img.exit_usage("Expecting one image file name")
    filename = argv[img.optind]
    output_format = parse_output_format(img, output)
    parsed = parse_cache_mode(cache, flags)
    if parsed is None:
        raise img.fail(f"Invalid source cache option: {cache}")
    flags = parsed[0]
    blk = open_image(img, filename, fmt, flags, image_opts=image_opts, force_share=force_share)
    try:
        return _check(img, blk.node, filename, fix, output_format, quiet)
    finally:
        blk.close()


def _collect(img: Img, node: Any, filename: str, fix: int) -> dict[str, Any]:
    """The ImageCheck fields in schema order; optional ones only when non-zero.

    The driver's per-problem lines (`messages`: "ERROR ...", "Leaked ...",
    "Repairing ...") go to stderr as the checker found them, before any summary and
    whatever the output format or -q, as qcow2's fprintf(stderr) lines do in qemu-img.
    """
    try:
        result = node.driver.check(fix)
    except BlockError as exc:
        # The lines found before the check had to stop are printed all the same.
        _print_messages(img, getattr(exc, "check_result", None))
        raise
    _print_messages(img, result)
    bfi = getattr(result, "bfi", None)

    def count(obj: Any, name: str) -> int:
        return int(getattr(obj, name, 0) or 0) if obj is not None else 0

    check: dict[str, Any] = {
        "filename": filename,
        "format": node.driver.format_name,
        "check-errors": count(result, "check_errors"),
    }
    optional = (
        ("image-end-offset", count(result, "image_end_offset")),
        ("corruptions", count(result, "corruptions")),
        ("leaks", count(result, "leaks")),
        ("corruptions-fixed", count(result, "corruptions_fixed")),
        ("leaks-fixed", count(result, "leaks_fixed")),
        ("total-clusters", count(bfi, "total_clusters")),
        ("allocated-clusters", count(bfi, "allocated_clusters")),
        ("fragmented-clusters", count(bfi, "fragmented_clusters")),
        ("compressed-clusters", count(bfi, "compressed_clusters")),
    )
    for name, value in optional:
        if value:
            check[name] = value
    return check


def _print_messages(img: Img, result: Any) -> None:
    for message in getattr(result, "messages", None) or ():
        if isinstance(message, ErrorReport):
            img.error(str(message))
        else:
            img.raw_warning(str(message))


def _check(img: Img, node: Any, filename: str, fix: int, output_format: str,
           quiet: bool) -> int:
    try:
        check = _collect(img, node, filename, fix)
        if check.get("corruptions-fixed") or check.get("leaks-fixed"):
            fixed: dict[str, Any] = {
                k: check[k] for k in ("leaks-fixed", "corruptions-fixed") if k in check
            }
            if output_format == HUMAN:
                img.qprint(quiet, "The following inconsistencies were found and repaired:\n\n"
                           f"    {check.get('leaks-fixed', 0)} leaked clusters\n"
                           f"    {check.get('corruptions-fixed', 0)} corruptions\n\n"
                           "Double checking the fixed image now...\n")
            check = _collect(img, node, filename, 0)
            check = _with_fixed(check, fixed)
    except BlockError as exc:
        if exc.errno == errno.ENOTSUP:
            raise img.fail("This image format does not support checks", 63) from None
        raise img.fail(f"Check failed: {os.strerror(exc.errno)}") from None
    if output_format == HUMAN:
        img.qprint(quiet, _human(check))
    else:
        img.qprint(quiet, json_pretty(check) + "\n")
    if check["check-errors"]:
        raise ImgExit(_failed(img))
    if check.get("corruptions"):
        return 2
    if check.get("leaks"):
        return 3
    return 0


def _failed(img: Img) -> int:
    img.error("Check failed")
    return 1


def _with_fixed(check: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Re-insert the *-fixed counters of the first pass in their schema positions."""
    order = ("filename", "format", "check-errors", "image-end-offset", "corruptions", "leaks",
             "corruptions-fixed", "leaks-fixed", "total-clusters", "allocated-clusters",
             "fragmented-clusters", "compressed-clusters")
    merged = {**check, **fixed}
    return {k: merged[k] for k in order if k in merged}


def _human(check: dict[str, Any]) -> str:
    corruptions = check.get("corruptions", 0)
    leaks = check.get("leaks", 0)
    errors = check["check-errors"]
    out = []
    if not (corruptions or leaks or errors):
        out.append("No errors were found on the image.\n")
    else:
        if corruptions:
            out.append(f"\n{corruptions} errors were found on the image.\n"
                       "Data may be corrupted, or further writes to the image may corrupt it.\n")
        if leaks:
            out.append(f"\n{leaks} leaked clusters were found on the image.\n"
                       "This means waste of disk space, but no harm to data.\n")
        if errors:
            out.append(f"\n{errors} internal errors have occurred during the check.\n")
    total = check.get("total-clusters", 0)
    allocated = check.get("allocated-clusters", 0)
    if total and allocated:
        fragmented = check.get("fragmented-clusters", 0)
        compressed = check.get("compressed-clusters", 0)
        out.append(f"{allocated}/{total} = {allocated * 100.0 / total:0.2f}% allocated, "
                   f"{fragmented * 100.0 / allocated:0.2f}% fragmented, "
                   f"{compressed * 100.0 / allocated:0.2f}% compressed clusters\n")
    if check.get("image-end-offset"):
        out.append(f"Image end offset: {check['image-end-offset']}\n")
    return "".join(out)
