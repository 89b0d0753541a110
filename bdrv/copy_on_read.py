"""Copy-on-read (the copy-on-read=on open option, bdrv-io -C), as QEMU 7.2's io.c does it.

A read that is not wholly allocated in the node itself is widened to whole clusters;
each run the node does not allocate is read through the node (so from its backing
chain) and written back into it unchanged: as a zero write where it reads as zeros
(zero clusters in qcow2 v3; a discard in a v2 image without backing file), as data
otherwise. Runs the node allocates are read as they are. The caller gets the bytes it
asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bdrv.errors import BlockError
from bdrv.request import MAX_TRANSFER, REQ_WRITE_UNCHANGED

if TYPE_CHECKING:
    from bdrv.graph import Node

# QEMU's bounce buffer limit for one copied run.
MAX_BOUNCE_BUFFER = 16 << 20


def _cluster_size(node: Node) -> int:
    try:
        size = int(node.driver.get_info().get("cluster_size", 0))
    except BlockError:
        size = 0
    return size if size > 0 else 1


def read(node: Node, offset: int, length: int, plain_read: Callable[[int, int], bytes]) -> bytes:
    """`length` bytes at `offset`, copying what the node lacks into it.

    `plain_read(offset, length)` reads through the node without copying (the driver
    read QEMU's bdrv_driver_preadv does)."""
    allocated, pnum = node.is_allocated(offset, length)
    if allocated and pnum == length:
        return bytes(plain_read(offset, length))
    cs = _cluster_size(node)
    pos = offset // cs * cs
    remaining = -(-(offset + length) // cs) * cs - pos
    skip = offset - pos
    parts: list[bytes] = []
    done = 0
    while remaining > 0:
        ask = min(remaining, MAX_TRANSFER)
        try:
            allocated, pnum = node.is_allocated(pos, ask)
        except BlockError:
            # As QEMU: take it as unallocated; the read below reports the error.
            allocated, pnum = False, ask
        if not allocated and pnum == 0:
            break  # the image ends inside the last cluster
        if not allocated:
            pnum = min(pnum, MAX_BOUNCE_BUFFER)
        want = max(0, min(pnum - skip, length - done))  # of this run, for the caller
        if not allocated:
            data = bytes(plain_read(pos, pnum))
            if data == bytes(len(data)):
                node.pwrite_zeroes(pos, pnum, REQ_WRITE_UNCHANGED)
            else:
                node.driver.pwrite(pos, data, REQ_WRITE_UNCHANGED)
            parts.append(data[skip : skip + want])
        elif want:
            parts.append(bytes(plain_read(offset + done, want)))
        pos += pnum
        remaining -= pnum
        done += pnum - skip
        skip = 0
    got = b"".join(parts)
    return got + bytes(length - len(got)) if len(got) < length else got
