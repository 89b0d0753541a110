"""Committing an image into a node of its backing chain (qemu-img commit's block job).

qemu-img 7.2 runs an active commit (a mirror job whose target is the base): the base
grows to the top's length, the ranges allocated above the base are copied in pieces of
at most 1 MiB (zero ranges as zero writes that may unmap), in order; afterwards, unless
the top is dropped, the top image is emptied (bdrv_make_empty).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from bdrv.errors import BlockError
from bdrv.graph import Node
from bdrv.open import full_backing_filename
from bdrv.ratelimit import RateLimit
from bdrv.request import (
    BLOCK_DATA,
    BLOCK_ZERO,
    REQ_MAY_UNMAP,
    block_status_above,
    is_allocated_above,
)

MAX_IO_BYTES = 1 << 20
BUF_SIZE = 16 << 20


def chain_next(node: Node) -> Node | None:
    backing = node.backing
    return backing.node if backing is not None else None


def commit(top: Node, base: Node, progress: Callable[[int, int], None] | None = None,
           rate_limit: RateLimit | None = None) -> None:
    """Copy everything allocated in `top` and the layers above `base` into `base`.

    `progress(done, total)` follows the job's progress: bytes copied of those to copy;
    `rate_limit` (commit -r) paces the copy.
    """
    length = top.getlength()
    if length > base.getlength():
        base.truncate(length, False, "off")
    overlay = top
    while chain_next(overlay) is not None and chain_next(overlay) is not base:
        overlay = chain_next(overlay)  # type: ignore[assignment]
    ranges: list[tuple[int, int]] = []
    offset = 0
    while offset < length:
        allocated, pnum, _ = is_allocated_above(top, overlay, True, offset,
                                                min(length - offset, BUF_SIZE))
        if pnum <= 0:
            raise BlockError("Input/output error", errno.EIO)
        if allocated:
            if ranges and ranges[-1][0] + ranges[-1][1] == offset:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + pnum)
            else:
                ranges.append((offset, pnum))
        offset += pnum
    total = sum(n for _, n in ranges)
    done = 0
    for start, n in ranges:
        for piece in range(start, start + n, MAX_IO_BYTES):
            size = min(MAX_IO_BYTES, start + n - piece)
            if rate_limit is not None:
                rate_limit.account(size)
            _copy(top, base, piece, size)
            done += size
            if progress is not None:
                progress(done, total)


def _copy(top: Node, base: Node, offset: int, length: int) -> None:
    end = offset + length
    while offset < end:
        st, _ = block_status_above(top, None, offset, min(end - offset, MAX_IO_BYTES))
        n = max(1, min(st.pnum, end - offset))
        if st.flags & BLOCK_ZERO and not st.flags & BLOCK_DATA:
            base.pwrite_zeroes(offset, n, REQ_MAY_UNMAP)
        else:
            base.pwrite(offset, top.pread(offset, n), 0)
        offset += n


def find_backing_image(top: Node, name: str) -> Node | None:
    """bdrv_find_backing_image(): the chain member below `top` that `name` names."""
    node: Node | None = top
    while node is not None:
        below = chain_next(node)
        if below is None:
            return None
        recorded = str(getattr(node, "backing_file", "") or "")
        if name == recorded or name == below.filename:
            return below
        try:
            wanted = os.path.realpath(full_backing_filename(node, name))
            if os.path.realpath(below.filename) == wanted:
                return below
        except (OSError, BlockError):
            pass
        node = below
    return None
