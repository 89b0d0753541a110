"""Image formats QEMU 7.2 recognises that bdrv cannot read.

Probing used to fall back to raw for them, so `bdrv-img convert` copied a VMDK's
container bytes as if they were the disk and `bdrv-io write` overwrote a QED header.
An image whose first bytes say it is one of these is refused instead; `-f raw` still
opens the file as plain bytes on purpose.
"""

from __future__ import annotations

import struct

# (format name, test on the first bytes of the file), as QEMU's probes recognise them.
_MAGICS: tuple[tuple[str, bytes], ...] = (
    ("qed", b"QED\0"),
    ("vhdx", b"vhdxfile"),
    ("vmdk", b"KDMV"),
    ("vmdk", b"COWD"),
    ("vmdk", b"# Disk DescriptorFile"),
    ("parallels", b"WithoutFreeSpace"),
    ("parallels", b"WithouFreSpacExt"),
    ("luks", b"LUKS\xba\xbe"),
    ("bochs", b"Bochs Virtual HD Image"),
    ("cloop", b"#!/bin/sh\n#V2.0 Format\n"),
)
_QCOW_MAGIC = b"QFI\xfb"
_VDI_SIGNATURE = 0xBEDA107F


def foreign_format(header: bytes, filename: str) -> str | None:
    """The name of the unsupported format `header` belongs to, if any."""
    for name, magic in _MAGICS:
        if header.startswith(magic):
            return name
    if header[:4] == _QCOW_MAGIC and header[4:8] == b"\0\0\0\1":
        return "qcow"
    if len(header) >= 0x44 and struct.unpack_from("<I", header, 0x40)[0] == _VDI_SIGNATURE:
        return "vdi"
    if filename.endswith(".dmg"):
        return "dmg"
    return None
