"""`create -f vpc`: fixed and dynamic images as QEMU 7.2 writes them, and differencing ones.

Fixed and dynamic images are byte-identical to 7.2's except for the footer's time
stamp and UUID (and so its checksum). A differencing image (`-b parent`) follows
the layout Windows uses: W2ku (absolute) and W2ru (relative) locators around a
4 KiB-aligned BAT, and the first block's data 4 KiB-aligned. The W2ku path keeps the
host's separators so that tools on the same host can follow it.
"""

from __future__ import annotations

import errno
import os
import struct
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from bdrv.drivers.vpc.dynamic import (
    PLAT_W2KU,
    PLAT_W2RU,
    ParentLocator,
    encode_w2u,
    pack_header,
)
from bdrv.drivers.vpc.footer import (
    CHECKSUM_OFFSET,
    COOKIE,
    FOOTER_SIZE,
    NO_DATA_OFFSET,
    SECTOR,
    TYPE_DIFFERENCING,
    TYPE_DYNAMIC,
    TYPE_FIXED,
    VHD_EPOCH,
    Footer,
    calculate_geometry,
    checksum,
    rounded_image_size,
)
from bdrv.errors import BlockError
from bdrv.options import OptionDesc

BLOCK_SIZE = 0x200000
SUBFORMATS = {"dynamic": TYPE_DYNAMIC, "fixed": TYPE_FIXED}
_VPC_OPTION_NAMES = ("size", "subformat", "force_size", "backing_file", "backing_fmt")

CREATE_OPTIONS = (
    OptionDesc("size", "size", "Virtual disk size"),
    OptionDesc("subformat", "string",
               "Type of virtual hard disk format. Supported formats are "
               "{dynamic (default) | fixed} "),
    OptionDesc("force_size", "bool",
               "Force disk size calculation to use the actual size specified, rather than "
               "using the nearest CHS-based calculation"),
)
BACKING_OPTIONS = (
    OptionDesc("backing_file", "string", "File name of a base image"),
    OptionDesc("backing_fmt", "string", "Image format of the base image"),
)

_FOOTER = struct.Struct(">8sIIQI4sHH4sQQHBBII16sB")


def pack_footer(*, disk_type: int, size: int, geometry: tuple[int, int, int],
                creator_app: bytes, data_offset: int, timestamp: int | None = None,
                disk_uuid: bytes | None = None) -> bytes:
    """A footer as 7.2's vpc_co_create fills it."""
    if timestamp is None:
        timestamp = (int(time.time()) - VHD_EPOCH) & 0xFFFFFFFF
    if disk_uuid is None:
        disk_uuid = uuidlib.uuid4().bytes
    buf = bytearray(FOOTER_SIZE)
    cyls, heads, secs = geometry
    _FOOTER.pack_into(buf, 0, COOKIE, 0x02, 0x00010000, data_offset, timestamp, creator_app,
                      0x0005, 0x0003, b"Wi2k", size, size, cyls, heads, secs, disk_type, 0,
                      disk_uuid, 0)
    struct.pack_into(">I", buf, CHECKSUM_OFFSET, checksum(buf, CHECKSUM_OFFSET))
    return bytes(buf)


def _open_file(filename: str) -> Any:
    from bdrv.backend import Backend
    from bdrv.graph import O_RDWR, O_RESIZE

    return Backend.open(filename, {"driver": "file"}, O_RDWR | O_RESIZE)


def create(filename: str, options: dict[str, Any], log: Callable[[str], None]) -> None:
    """vpc_co_create_opts(): make the file, check the options, write the image."""
    from bdrv.driver import find_driver

    file_driver = find_driver("file")
    assert file_driver is not None
    # The protocol gets what is not ours; the file starts empty.
    file_opts = {k: v for k, v in options.items() if k not in _VPC_OPTION_NAMES}
    file_driver.create(filename, file_opts, log)
    subformat = str(options.get("subformat", "dynamic"))
    if subformat not in SUBFORMATS:
        raise BlockError(f"Parameter 'subformat' does not accept value '{subformat}'")
    force_size = bool(options.get("force_size", False))
    size = -(-int(options.get("size", 0)) // SECTOR) * SECTOR
    backing = options.get("backing_file")
    if backing is not None:
        if "subformat" in options and subformat != "dynamic":
            raise BlockError("A differencing VHD image cannot be fixed")
        _create_differencing(filename, size, str(backing), options.get("backing_fmt"))
        return
    if not force_size:
        size = rounded_image_size(size, False)[3] * SECTOR
    blk = _open_file(filename)
    try:
        write_image(blk, size, SUBFORMATS[subformat], force_size)
    finally:
        blk.close()


def write_image(blk: Any, total_size: int, disk_type: int, force_size: bool) -> None:
    """vpc_co_create(): refuse sizes CHS cannot hold (unless forced), then write."""
    cyls, heads, secs, total_sectors = rounded_image_size(total_size, force_size)
    if total_size != total_sectors * SECTOR:
        raise BlockError("The requested image size cannot be represented in CHS geometry",
                         hint=f"Try size={total_sectors * SECTOR} or force-size=on (the latter "
                              "makes the image incompatible with Virtual PC)")
    footer = pack_footer(disk_type=disk_type, size=total_size, geometry=(cyls, heads, secs),
                         creator_app=b"qem2" if force_size else b"qemu",
                         data_offset=SECTOR if disk_type == TYPE_DYNAMIC else NO_DATA_OFFSET)
    node = blk.node
    if disk_type == TYPE_DYNAMIC:
        try:
            _write_dynamic(node, footer, total_sectors)
        except BlockError as exc:
            raise BlockError("Unable to create or write VHD header", exc.errno) from exc
        return
    node.truncate(total_size + FOOTER_SIZE, False, "off")
    try:
        node.pwrite(total_size, footer)
    except BlockError as exc:
        raise BlockError(f"Unable to write VHD header: {exc.message}", exc.errno) from exc


def _write_dynamic(node: Any, footer: bytes, total_sectors: int) -> None:
    """Footer at 0 and after the BAT, the BAT (all unused), then the dynamic header."""
    entries = -(-total_sectors // (BLOCK_SIZE // SECTOR))
    bat_bytes = -(-entries * 4 // SECTOR) * SECTOR
    node.pwrite(0, footer)
    node.pwrite(3 * SECTOR + bat_bytes, footer)
    if bat_bytes:
        node.pwrite(3 * SECTOR, b"\xff" * bat_bytes)
    node.pwrite(SECTOR, pack_header(table_offset=3 * SECTOR, max_table_entries=entries,
                                    block_size=BLOCK_SIZE))


# -- differencing images -------------------------------------------------------------


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def _parent_facts(path: str, fmt: Any) -> tuple[bytes, int, tuple[int, int, int] | None, int]:
    """(uuid, time stamp, geometry, size) of the parent; zeros if it is not a VHD."""
    from bdrv.backend import Backend
    from bdrv.drivers.vpc.driver import VpcDriver
    from bdrv.graph import O_NO_BACKING

    opts: dict[str, Any] = {"driver": str(fmt)} if fmt else {}
    try:
        blk = Backend.open(path, opts, O_NO_BACKING, warn=lambda _text: None)
    except BlockError:
        return bytes(16), 0, None, -1
    try:
        drv = blk.node.driver
        size = blk.getlength()
        if isinstance(drv, VpcDriver) and drv.footer is not None:
            f: Footer = drv.footer
            return f.uuid, f.timestamp, (f.cylinders, f.heads, f.sectors_per_track), size
        return bytes(16), 0, None, size
    finally:
        blk.close()


def windows_relative_path(parent: str, child_dir: str) -> str:
    """The W2ru form of `parent` seen from `child_dir`: `.\\name` or `..\\dir\\name`."""
    rel = os.path.relpath(parent, child_dir)
    if not rel.startswith(".."):
        rel = os.path.join(".", rel)
    return rel


def _create_differencing(filename: str, size: int, backing: str, backing_fmt: Any) -> None:
    child_dir = os.path.dirname(os.path.abspath(filename))
    parent = backing if os.path.isabs(backing) else os.path.join(child_dir, backing)
    parent = os.path.normpath(parent)
    parent_uuid, parent_ts, geometry, parent_size = _parent_facts(parent, backing_fmt)
    if size <= 0 and parent_size > 0:
        size = parent_size
    if size > 0xFF000000 * SECTOR:
        raise BlockError("Disk size is too large, max size is 2040 GiB", errno.EFBIG)
    if geometry is None or geometry[0] * geometry[1] * geometry[2] * SECTOR > size:
        geometry = calculate_geometry(size // SECTOR)
    # The absolute path stays as the host spells it: Windows accepts '/' too, and POSIX
    # readers (fattools, libvhdi) can then open it; the relative one is Windows' '.\\x'.
    absolute = parent.encode("utf-16-le")
    relative = encode_w2u(windows_relative_path(parent, child_dir))
    entries = -(-size // BLOCK_SIZE)
    # Windows' layout: W2ku at 4 KiB, the BAT 4 KiB-aligned after it, then W2ru.
    ku_offset = 0x1000
    ku_space = _align(max(len(absolute), 1), 0x1000)
    bat_offset = ku_offset + ku_space
    bat_space = _align(max(entries * 4, 1), 0x1000)
    ru_offset = bat_offset + bat_space
    ru_space = _align(max(len(relative), 1), 0x10000)
    # The footer sits so that the first block's data starts 4 KiB-aligned.
    footer_at = ru_offset + ru_space + 0x1000 - FOOTER_SIZE
    footer = pack_footer(disk_type=TYPE_DIFFERENCING, size=size, geometry=geometry,
                         creator_app=b"qem2", data_offset=SECTOR)
    locators = (
        ParentLocator(0, PLAT_W2KU, ku_space, len(absolute), ku_offset),
        ParentLocator(1, PLAT_W2RU, ru_space, len(relative), ru_offset),
    )
    header = pack_header(table_offset=bat_offset, max_table_entries=entries,
                         block_size=BLOCK_SIZE, parent_uuid=parent_uuid,
                         parent_timestamp=parent_ts, parent_name=parent, locators=locators)
    blk = _open_file(filename)
    try:
        node = blk.node
        node.pwrite(0, footer)
        node.pwrite(SECTOR, header)
        node.pwrite(ku_offset, absolute)
        node.pwrite(bat_offset, b"\xff" * bat_space)
        node.pwrite(ru_offset, relative)
        node.pwrite(footer_at, footer)
    except BlockError as exc:
        raise BlockError("Unable to create or write VHD header", exc.errno) from exc
    finally:
        blk.close()
