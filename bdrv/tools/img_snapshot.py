"""bdrv-img snapshot: list (-l), create (-c), apply (-a) or delete (-d) internal snapshots.

As qemu-img 7.2's img_snapshot(): the image is opened read-write except for -l, the
action goes to the first driver down the primary-child chain that has internal
snapshots (bdrv_snapshot_fallback), and failures are reported with 7.2's words.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import O_RDWR, Node
from bdrv.tools.img_common import Img, long_opts, open_image, print_help
from bdrv.tools.output import snapshot_table

_LONG = long_opts("help/h", "object:", "image-opts", "force-share/U")
NAME_MAX = 255  # QEMUSnapshotInfo.name holds 256 bytes with the NUL
ID_MAX = 127


def snapshot_driver(node: Node, method: str) -> Any:
    """The driver that does `method` for `node`: its own, or its primary child's."""
    current: Node | None = node
    while current is not None:
        drv = current.driver
        if hasattr(drv, method):
            return drv
        child = current.file
        current = child.node if child is not None else None
    return None


def snapshot_list(node: Node) -> list[Any]:
    """bdrv_snapshot_list(): the snapshots, or [] where snapshots are not supported."""
    drv = snapshot_driver(node, "snapshot_list")
    return list(drv.snapshot_list()) if drv is not None else []


def listed_infos(node: Node) -> list[dict[str, Any]]:
    """SnapshotInfo dicts with ids and names cut as QEMUSnapshotInfo holds them."""
    infos = []
    for sn in snapshot_list(node):
        info = sn.info()
        info["id"] = _text(sn.id_str[:ID_MAX])
        info["name"] = _text(sn.name[:NAME_MAX])
        infos.append(info)
    return infos


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def run(img: Img, argv: list[str]) -> int:
    fmt: str | None = None  # 7.2's snapshot has no -f: the format is probed
    action: str | None = None
    name = ""
    image_opts = force_share = False
    flags = O_RDWR
    for key, arg in img.getopt(argv, "la:c:d:hqU", _LONG):
        if key == "h":
            return print_help(img)
        if key in ("l", "a", "c", "d"):
            if action is not None:
                raise img.exit_usage("Cannot mix '-l', '-a', '-c', '-d'")
            action = key
            if key == "l":
                flags &= ~O_RDWR
            else:
                name = str(arg)
        elif key == "image-opts":
            image_opts = True
        elif key == "U":
            force_share = True
    if img.optind != len(argv) - 1:
        raise img.exit_usage("Expecting one image file name")
    filename = argv[img.optind]
    blk = open_image(img, filename, fmt, flags, image_opts=image_opts,
                     force_share=force_share)
    try:
        return _act(img, blk.node, action, name)
    finally:
        blk.close()


def _act(img: Img, node: Node, action: str | None, name: str) -> int:
    raw_name = os.fsencode(name)
    if action == "l":
        infos = listed_infos(node)
        if infos:
            img.out(snapshot_table(infos))
        return 0
    if action == "c":
        drv = snapshot_driver(node, "snapshot_create")
        now = time.time_ns() // 1000
        try:
            if drv is None:
                raise BlockError("Operation not supported", errno.ENOTSUP)
            drv.snapshot_create(raw_name[:NAME_MAX], now // 1_000_000,
                                now % 1_000_000 * 1000)
        except BlockError as exc:
            img.error(f"Could not create snapshot '{name}': -{exc.errno} "
                      f"({os.strerror(exc.errno)})")
            return 1
        return 0
    if action == "a":
        drv = snapshot_driver(node, "snapshot_goto")
        try:
            if drv is None:
                _reopen_after_fallback(img, node)
                raise BlockError("Block driver does not support snapshots", errno.ENOTSUP)
            drv.snapshot_goto(raw_name)
        except BlockError as exc:
            for line in getattr(exc, "reported", ()):
                img.error(line)
            img.report(exc, f"Could not apply snapshot '{name}': ")
            return 1
        return 0
    if action == "d":
        found = None
        for sn in snapshot_list(node):
            if sn.name[:NAME_MAX] == raw_name:
                found = sn
                break
        if found is None:
            img.error(f"Could not delete snapshot '{name}': snapshot not found")
            return 1
        drv = snapshot_driver(node, "snapshot_delete")
        try:
            drv.snapshot_delete(found.id_str[:ID_MAX], found.name[:NAME_MAX])
        except BlockError as exc:
            img.report(exc, f"Could not delete snapshot '{name}': ")
            return 1
        return 0
    return 0


def _reopen_after_fallback(img: Img, node: Node) -> None:
    """7.2's goto closes the top driver, tries the primary child, then opens the top
    driver again: a probed raw image warns a second time."""
    from bdrv.drivers.raw import PROBED_RAW_WARNING

    child = node.file
    if child is not None and node.probed_raw and node.open_flags & O_RDWR:
        img.raw_warning(PROBED_RAW_WARNING.format(child.node.filename))


def load_tmp(node: Node, sid: str | None, name: str | None) -> None:
    """bdrv_snapshot_load_tmp(): switch a read-only node to a snapshot's view."""
    if sid is None and name is None:
        raise BlockError("snapshot_id and name are both NULL")
    if not node.read_only:
        raise BlockError("Device is not readonly")
    drv = node.driver
    if not hasattr(drv, "snapshot_load_tmp"):
        raise BlockError(f"Block format '{drv.format_name}' used by device '' does not "
                         "support temporarily loading internal snapshots", errno.ENOTSUP)
    drv.snapshot_load_tmp(None if sid is None else os.fsencode(sid),
                          None if name is None else os.fsencode(name))


def load_tmp_by_id_or_name(node: Node, id_or_name: str) -> None:
    """bdrv_snapshot_load_tmp_by_id_or_name(): by id first, then by name."""
    try:
        load_tmp(node, id_or_name, None)
    except BlockError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            raise
        load_tmp(node, None, id_or_name)
