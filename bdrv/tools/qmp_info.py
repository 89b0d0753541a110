"""query-named-block-nodes: BlockDeviceInfo for a node, as 7.2's bdrv_block_device_info."""

from __future__ import annotations

from typing import Any

from bdrv.graph import O_NO_FLUSH, O_NOCACHE, Node
from bdrv.tools.img_info import image_info


def _image(node: Node) -> dict[str, Any]:
    info = image_info(node)
    info.setdefault("dirty-flag", False)
    return info


def block_device_info(node: Node, flat: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"file": node.filename, "node-name": node.node_name,
                            "ro": node.read_only, "drv": node.driver.format_name}
    if node.backing is not None:
        # 7.2 names the backing node's current filename, not the image header's.
        info["backing_file"] = node.backing.node.filename
    info["encrypted"] = bool(getattr(node, "encrypted", False))
    info["detect_zeroes"] = str(getattr(node, "detect_zeroes", None)
                                or node.options.get("detect-zeroes", "off"))
    for key in ("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"):
        info[key] = 0
    info["cache"] = {"writeback": True, "direct": bool(node.open_flags & O_NOCACHE),
                     "no-flush": bool(node.open_flags & O_NO_FLUSH)}
    info["write_threshold"] = 0
    depth = 0
    image = _image(node)
    info["image"] = image
    current = node
    while not flat and current.backing is not None:
        depth += 1
        current = current.backing.node
        below = _image(current)
        image["backing-image"] = below
        image = below
    info["backing_file_depth"] = depth
    return info
