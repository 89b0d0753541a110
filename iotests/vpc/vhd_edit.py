"""Helpers for the vpc iotests: edit VHD structures, and the independent witnesses.

Edits work on the bytes as the VHD specification lays them out (not through bdrv),
and log what they did so the reference shows it. The witnesses read images with
libvhdi (`pyvhdi`) and fattools (`FATtools.vhdutils`), never with bdrv, and log a
one-line verdict ("libvhdi: 4096 bytes at 0 match") that the reference records.
"""

from __future__ import annotations

import os
import struct
import uuid as uuidlib
from collections.abc import Sequence
from pathlib import Path

from harness import Iot

try:
    import pyvhdi
except ImportError:  # pragma: no cover - depends on the test environment
    pyvhdi = None
try:
    from FATtools import vhdutils
except ImportError:  # pragma: no cover
    vhdutils = None

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "third-party" / "vhd"
FOOTER_SIZE = 512
HEADER_SIZE = 1024
# Footer fields (offset, struct format).
FOOTER_FIELDS = {
    "cookie": (0, "8s"), "data_offset": (16, ">Q"), "creator_app": (28, "4s"),
    "current_size": (48, ">Q"), "cylinders": (56, ">H"), "heads": (58, "B"),
    "sectors": (59, "B"), "disk_type": (60, ">I"), "checksum": (64, ">I"),
    "uuid": (68, "16s"),
}
HEADER_FIELDS = {
    "cookie": (0, "8s"), "table_offset": (16, ">Q"), "max_table_entries": (28, ">I"),
    "block_size": (32, ">I"), "checksum": (36, ">I"),
}


def checksum(buf: bytes | bytearray, at: int) -> int:
    """The VHD checksum: ones' complement of the byte sum, the checksum field as 0."""
    total = sum(buf[:at]) + sum(buf[at + 4:])
    return ~total & 0xFFFFFFFF


def _poke(data: bytearray, base: int, fields: dict[str, tuple[int, str]], name: str,
          value: object) -> None:
    off, fmt = fields[name]
    struct.pack_into(fmt, data, base + off, value)


def _show(value: object) -> str:
    # Bytes as hex: a creator app such as "vpc " must not meet the IMGFMT filter.
    return "0x" + value.hex() if isinstance(value, bytes) else repr(value)


def edit_footer(iot: Iot, path: Path, fix_checksum: bool = True, **values: object) -> None:
    """Set footer fields in both copies (offset 0 when it is one, and the last 512)."""
    data = bytearray(path.read_bytes())
    places = [len(data) - FOOTER_SIZE]
    if data[:8] == b"conectix" and len(data) > FOOTER_SIZE:
        places.insert(0, 0)
    for base in places:
        for name, value in values.items():
            _poke(data, base, FOOTER_FIELDS, name, value)
        if fix_checksum and "checksum" not in values:
            struct.pack_into(">I", data, base + 64,
                             checksum(data[base:base + FOOTER_SIZE], 64))
    path.write_bytes(bytes(data))
    shown = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
    iot.log(f"--- footer of {path.name}: {shown}"
            f"{'' if fix_checksum else ' (checksum left as it was)'}")


def edit_header(iot: Iot, path: Path, fix_checksum: bool = True, **values: object) -> None:
    """Set dynamic header fields (the header is where the footer's data_offset says)."""
    data = bytearray(path.read_bytes())
    base = struct.unpack_from(">Q", data, 16)[0]
    for name, value in values.items():
        _poke(data, base, HEADER_FIELDS, name, value)
    if fix_checksum and "checksum" not in values:
        struct.pack_into(">I", data, base + 36, checksum(data[base:base + HEADER_SIZE], 36))
    path.write_bytes(bytes(data))
    shown = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
    iot.log(f"--- dynamic header of {path.name}: {shown}"
            f"{'' if fix_checksum else ' (checksum left as it was)'}")


def set_bat_entry(iot: Iot, path: Path, index: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    base = struct.unpack_from(">Q", data, 16)[0]
    table = struct.unpack_from(">Q", data, base + 16)[0]
    struct.pack_into(">I", data, table + 4 * index, value)
    path.write_bytes(bytes(data))
    iot.log(f"--- BAT entry {index} of {path.name} set to 0x{value:08x}")


def bat_entry(path: Path, index: int) -> int:
    data = path.read_bytes()
    base = struct.unpack_from(">Q", data, 16)[0]
    table = struct.unpack_from(">Q", data, base + 16)[0]
    value: int = struct.unpack_from(">I", data, table + 4 * index)[0]
    return value


class Expected:
    """What a disk should read as: a fill byte, then patterns written over it."""

    def __init__(self, size: int, fill: int = 0) -> None:
        self.data = bytearray([fill]) * size

    def write(self, offset: int, length: int, pattern: int) -> Expected:
        self.data[offset:offset + length] = bytes([pattern]) * length
        return self


def _verdict(tool: str, got: bytes, want: bytes, offset: int) -> str:
    if got == want:
        return f"{tool}: {len(want)} bytes at {offset} match"
    if len(got) != len(want):
        return f"{tool}: MISMATCH: read {len(got)} bytes, expected {len(want)}"
    first = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    return (f"{tool}: MISMATCH at offset {offset + first}: 0x{got[first]:02x}, "
            f"expected 0x{want[first]:02x}")


def need_witnesses(iot: Iot, *tools: str) -> None:
    """Report the test as not run when a witness it relies on is not installed."""
    if "libvhdi" in tools and pyvhdi is None:
        iot.notrun("libvhdi-python (pyvhdi) is not installed (pip install '.[test]')")
    if "fattools" in tools and vhdutils is None:
        iot.notrun("fattools is not installed (pip install '.[test]')")


def libvhdi_check(iot: Iot, path: Path, parents: Sequence[Path], expected: Expected,
                  offset: int = 0, length: int | None = None) -> None:
    """Read through libvhdi (parents set explicitly, nearest first) and log the verdict."""
    assert pyvhdi is not None
    length = len(expected.data) - offset if length is None else length
    files = []
    try:
        for p in [path, *parents]:
            f = pyvhdi.file()
            f.open(str(p))
            files.append(f)
        for child, parent in zip(files, files[1:], strict=False):
            child.set_parent(parent)
        got = bytes(files[0].read_buffer_at_offset(length, offset))
    finally:
        for f in files:
            f.close()
    iot.log(_verdict("libvhdi", got, bytes(expected.data[offset:offset + length]), offset))


def libvhdi_parent(iot: Iot, path: Path, parent: Path | None = None) -> None:
    """Log the parent name and identifier libvhdi reads from a differencing VHD, and
    whether the identifier is `parent`'s footer UUID (default: the file it names)."""
    assert pyvhdi is not None
    f = pyvhdi.file()
    f.open(str(path))
    try:
        name = f.get_parent_filename()
        ident = f.get_parent_identifier()
        iot.log(f"libvhdi: {path.name}: disk type {f.get_disk_type()}, media size "
                f"{f.get_media_size()}, parent {name}")
    finally:
        f.close()
    parent = parent or (Path(name) if name else None)
    if parent is None or not parent.is_file():
        iot.log("libvhdi: parent identifier: no parent file to compare with")
        return
    with open(parent, "rb") as p:
        p.seek(-FOOTER_SIZE, os.SEEK_END)
        uuid = str(uuidlib.UUID(bytes=p.read(FOOTER_SIZE)[68:84]))
    iot.log(f"libvhdi: parent identifier matches the footer UUID of {parent.name}: "
            f"{ident == uuid}")


def fattools_check(iot: Iot, path: Path, expected: Expected, offset: int = 0,
                   length: int | None = None) -> None:
    """Read through fattools (which follows the parent locators itself); log the verdict."""
    assert vhdutils is not None
    length = len(expected.data) - offset if length is None else length
    im = vhdutils.Image(str(path), "rb")
    try:
        im.seek(offset)
        got = bytes(im.read(length))
    finally:
        im.close()
    iot.log(_verdict("fattools", got, bytes(expected.data[offset:offset + length]), offset))


def fattools_write(iot: Iot, path: Path, writes: Sequence[tuple[int, int, int]]) -> None:
    """Write (offset, length, pattern) runs with fattools, logging each."""
    assert vhdutils is not None
    im = vhdutils.Image(str(path), "r+b")
    try:
        for offset, length, pattern in writes:
            im.seek(offset)
            im.write(bytes([pattern]) * length)
            iot.log(f"fattools: wrote {length} bytes of 0x{pattern:02x} at {offset}")
    finally:
        im.close()
