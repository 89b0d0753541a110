"""bdrv-img info: what an image is (format, sizes, backing file), human or JSON.

`image_info(node)` builds QEMU's ImageInfo as a dict in QAPI schema order (the JSON
output lists keys in QDict order derived from it). Format drivers contribute through
get_info() (cluster size, dirty flag), get_specific_info() (a dict shown under
"Format specific information:") and, for formats with backing files, the node
attributes `backing_file`, `full_backing_file` and `backing_format`.
"""

from __future__ import annotations

import errno
from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import O_NO_BACKING, O_NO_IO, Node
from bdrv.tools.img_common import (
    HUMAN,
    Img,
    ImgExit,
    long_opts,
    open_image,
    parse_output_format,
    print_help,
)
from bdrv.tools.output import dump_specific_info, json_pretty, size_to_str, snapshot_table

_LONG = long_opts("help/h", "format:/f", "output:", "backing-chain", "object:", "image-opts",
                  "force-share/U")


def run(img: Img, argv: list[str]) -> int:
    fmt: str | None = None
    output: str | None = None
    chain = image_opts = force_share = False
    for key, arg in img.getopt(argv, "f:hU", _LONG):
        if key == "h":
            return print_help(img)
        if key == "f":
            fmt = arg
        elif key == "U":
            force_share = True
        elif key == "output":
            output = arg
        elif key == "backing-chain":
            chain = True
        elif key == "image-opts":
            image_opts = True
    if img.optind != len(argv) - 1:
        raise img.exit_usage("Expecting one image file name")
    filename = argv[img.optind]
    output_format = parse_output_format(img, output)
    infos = collect_chain(img, filename, fmt, chain, image_opts, force_share)
    if output_format == HUMAN:
        img.out("\n".join(human_info(info) for info in infos))
    elif chain:
        img.out(json_pretty(infos) + "\n")
    else:
        img.out(json_pretty(infos[0]) + "\n")
    return 0


def collect_chain(img: Img, filename: str, fmt: str | None, chain: bool, image_opts: bool,
                  force_share: bool) -> list[dict[str, Any]]:
    """ImageInfo of the image and, with `chain`, of each backing file in turn."""
    infos: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = filename
    while current is not None:
        if current in seen:
            raise img.fail(f"Backing file '{current}' creates an infinite loop.")
        seen.add(current)
        blk = open_image(img, current, fmt, O_NO_BACKING | O_NO_IO, image_opts=image_opts,
                         force_share=force_share)
        try:
            info = image_info(blk.node)
        except BlockError as exc:
            img.report(exc)
            raise ImgExit(1) from None
        finally:
            blk.close()
        infos.append(info)
        current, fmt, image_opts = None, None, False
        if chain:
            if "full-backing-filename" in info:
                current = info["full-backing-filename"]
            elif "backing-filename" in info:
                raise img.fail("Could not determine absolute backing filename, but backing "
                               f"filename '{info['backing-filename']}' present")
            fmt = info.get("backing-filename-format")
    return infos


def image_info(node: Node) -> dict[str, Any]:
    """bdrv_query_image_info(): the ImageInfo fields, in QAPI schema order."""
    size = node.getlength()
    driver = node.driver
    info: dict[str, Any] = {"filename": node.filename, "format": driver.format_name}
    try:
        driver_info: dict[str, Any] | None = dict(driver.get_info())
    except BlockError as exc:
        if exc.errno != errno.ENOTSUP:
            raise
        driver_info = None
    if driver_info is not None:
        info["dirty-flag"] = bool(driver_info.get("is_dirty", False))
    try:
        info["actual-size"] = int(driver.get_allocated_file_size())
    except BlockError:
        pass
    info["virtual-size"] = size
    if driver_info is not None and driver_info.get("cluster_size"):
        info["cluster-size"] = int(driver_info["cluster_size"])
    if getattr(node, "encrypted", False):
        info["encrypted"] = True
    backing = str(getattr(node, "backing_file", "") or "")
    if backing:
        info["backing-filename"] = backing
        full = getattr(node, "full_backing_file", None)
        if full:
            info["full-backing-filename"] = str(full)
        backing_fmt = getattr(node, "backing_format", "")
        if backing_fmt:
            info["backing-filename-format"] = str(backing_fmt)
    snapshots = getattr(driver, "snapshot_infos", None)
    if callable(snapshots):
        listed = snapshots()
        if listed:
            info["snapshots"] = listed
    specific = driver.get_specific_info()
    if specific is not None:
        info["format-specific"] = specific
    return info


def human_info(info: dict[str, Any]) -> str:
    """bdrv_image_info_dump()."""
    actual = info.get("actual-size")
    disk = "unavailable" if actual is None else size_to_str(actual)
    size = info["virtual-size"]
    out = [f"image: {info['filename']}\n",
           f"file format: {info['format']}\n",
           f"virtual size: {size_to_str(size)} ({size} bytes)\n",
           f"disk size: {disk}\n"]
    if info.get("encrypted"):
        out.append("encrypted: yes\n")
    if "cluster-size" in info:
        out.append(f"cluster_size: {info['cluster-size']}\n")
    if info.get("dirty-flag"):
        out.append("cleanly shut down: no\n")
    if "backing-filename" in info:
        backing = info["backing-filename"]
        full = info.get("full-backing-filename")
        line = f"backing file: {backing}"
        if full is None:
            line += " (cannot determine actual path)"
        elif full != backing:
            line += f" (actual path: {full})"
        out.append(line + "\n")
        if "backing-filename-format" in info:
            out.append(f"backing file format: {info['backing-filename-format']}\n")
    if info.get("snapshots"):
        out.append(snapshot_table(info["snapshots"]))
    if "format-specific" in info:
        out.append("Format specific information:\n")
        out.append(dump_specific_info(info["format-specific"]))
    return "".join(out)
