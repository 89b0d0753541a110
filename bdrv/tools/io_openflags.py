"""Open modes shared by bdrv-io's command line and its `open` command.

QEMU turns -t/-d/-i values into BDRV_O_* flags plus a write-cache setting
(bdrv_parse_cache_mode, bdrv_parse_discard_flags, bdrv_parse_aio); the same words are
accepted here, case-sensitively, and anything else is refused.
"""

from __future__ import annotations

from bdrv.graph import O_CACHE_MASK, O_NATIVE_AIO, O_NO_FLUSH, O_NOCACHE, O_UNMAP

# Not in bdrv.graph because nothing in the core acts on it; QEMU's value.
O_IO_URING = 0x40000

# mode -> (flags to set, writethrough)
_CACHE_MODES = {
    "off": (O_NOCACHE, False),
    "none": (O_NOCACHE, False),
    "directsync": (O_NOCACHE, True),
    "writeback": (0, False),
    "unsafe": (O_NO_FLUSH, False),
    "writethrough": (0, True),
}


def parse_cache_mode(mode: str, flags: int) -> tuple[int, bool] | None:
    """(new flags, writethrough) for a cache mode, or None if the mode is unknown."""
    if mode not in _CACHE_MODES:
        return None
    extra, writethrough = _CACHE_MODES[mode]
    return (flags & ~O_CACHE_MASK) | extra, writethrough


def parse_discard_mode(mode: str, flags: int) -> int | None:
    if mode in ("off", "ignore"):
        return flags & ~O_UNMAP
    if mode in ("on", "unmap"):
        return flags | O_UNMAP
    return None


def parse_aio_mode(mode: str, flags: int) -> int | None:
    if mode == "threads":
        return flags
    if mode == "native":
        return flags | O_NATIVE_AIO
    if mode == "io_uring":
        return flags | O_IO_URING
    return None
