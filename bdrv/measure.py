"""bdrv_measure(): the file size an image of a format needs (qemu-img measure).

raw needs the virtual size (rounded to sectors); qcow2 counts its metadata for the
fully allocated image (qcow2_calc_prealloc_size) and, from an input image, only the
clusters holding data, as 7.2's qcow2_measure does.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import Node
from bdrv.request import BLOCK_ALLOCATED, BLOCK_DATA, BLOCK_ZERO, block_status_above

QCOW_MAX_L1_SIZE = 32 << 20


@dataclass
class MeasureInfo:
    required: int
    fully_allocated: int
    bitmaps: int | None = None


def measure(fmt: str, opts: dict[str, Any], in_node: Node | None) -> MeasureInfo:
    if fmt == "raw":
        return _raw(opts, in_node)
    if fmt == "qcow2":
        return _qcow2(opts, in_node)
    raise BlockError(f"Block driver '{fmt}' does not support size measurement", errno.ENOTSUP)


def _raw(opts: dict[str, Any], in_node: Node | None) -> MeasureInfo:
    if in_node is not None:
        required = in_node.getlength()
    else:
        required = -(-int(opts.get("size", 0)) // 512) * 512
    return MeasureInfo(required, required)


def calc_prealloc_size(total: int, cluster_size: int, refcount_order: int,
                       extended_l2: bool) -> int:
    """qcow2_calc_prealloc_size()."""
    from bdrv.drivers.qcow2.refcount import metadata_size

    aligned = -(-total // cluster_size) * cluster_size
    l2e = 16 if extended_l2 else 8
    meta = cluster_size
    nl2e = aligned // cluster_size
    nl2e = -(-nl2e // (cluster_size // l2e)) * (cluster_size // l2e)
    meta += nl2e * l2e
    nl1e = nl2e * l2e // cluster_size
    nl1e = -(-nl1e // (cluster_size // 8)) * (cluster_size // 8)
    meta += nl1e * 8
    meta += metadata_size((meta + aligned) // cluster_size, cluster_size, refcount_order,
                          False)[0]
    return meta + aligned


def _qcow2(opts: dict[str, Any], in_node: Node | None) -> MeasureInfo:
    extended = bool(opts.get("extended_l2", False))
    cs = int(opts.get("cluster_size", 65536))
    bits = (cs & -cs).bit_length() - 1 if cs > 0 else 0
    if not 9 <= bits <= 21 or 1 << bits != cs:
        raise BlockError("Cluster size must be a power of two between 512 and 2048k")
    if extended and cs < 16384:
        raise BlockError("Extended L2 entries are only supported with cluster sizes of at "
                         "least 16384 bytes")
    compat = opts.get("compat")
    version = 3
    if compat is not None:
        if compat == "0.10":
            version = 2
        elif compat != "1.1":
            raise BlockError(f"Invalid compatibility level: '{compat}'")
    rb = int(opts.get("refcount_bits", 16))
    if rb > 64 or rb <= 0 or rb & (rb - 1):
        raise BlockError("Refcount width must be a power of two and may not exceed 64 bits")
    if version < 3 and rb != 16:
        raise BlockError("Different refcount widths than 16 bits require compatibility level "
                         "1.1 or above (use compat=1.1 or greater)")
    prealloc = str(opts.get("preallocation", "off"))
    if prealloc not in ("off", "metadata", "falloc", "full"):
        raise BlockError(f"invalid parameter value: {prealloc}")
    has_backing = opts.get("backing_file") is not None
    if opts.get("encrypt.format") == "luks":
        raise BlockError("Parameter 'encrypt.key-secret' is required for cipher")
    virtual = -(-int(opts.get("size", 0)) // cs) * cs
    l2e = 16 if extended else 8
    l2_tables = -(-(virtual // cs) // (cs // l2e))
    if l2_tables * 8 > QCOW_MAX_L1_SIZE:
        raise BlockError("The image size is too large (try using a larger cluster size)")
    required = 0
    if in_node is not None:
        ssize = in_node.getlength()
        virtual = -(-ssize // cs) * cs
        if has_backing:
            required = virtual
        else:
            offset = 0
            while offset < ssize:
                st, _ = block_status_above(in_node, None, offset, ssize - offset)
                pnum = st.pnum
                if pnum <= 0:
                    raise BlockError("Unable to get block status: Input/output error",
                                     errno.EIO)
                if st.flags & BLOCK_ZERO:
                    pass
                elif st.flags & (BLOCK_DATA | BLOCK_ALLOCATED) == BLOCK_DATA | BLOCK_ALLOCATED:
                    pnum = -(-(offset + pnum) // cs) * cs - offset
                    required += offset % cs + pnum
                offset += pnum
    if prealloc in ("full", "falloc"):
        required = virtual
    full = calc_prealloc_size(virtual, cs, rb.bit_length() - 1, extended)
    info = MeasureInfo(full - virtual + required, full)
    if version >= 3 and in_node is not None and in_node.driver.format_name == "qcow2" \
            and getattr(in_node.driver, "version", 2) >= 3:
        info.bitmaps = 0
    return info
