"""request.block_status_above() for many small extents, answered from run indexes.

The same answers (flags and pnum), computed from each layer's `run_index()` (a driver
hook; qcow2's RunIndex) instead of the driver and request-layer calls per layer and
extent. Used where the exact per-extent answers matter and there are many of them
(convert). A chain qualifies only when every layer offers an index and has request
alignment 1; where an index declines a range (None), the caller asks the request layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bdrv.request import BLOCK_ALLOCATED, BLOCK_DATA, BLOCK_EOF, BLOCK_ZERO

if TYPE_CHECKING:
    from bdrv.graph import Node

# The driver's lookup length cap (qcow2 block_status asks for at most this much).
_LOOKUP_MAX = 0x7FFFFFFF


@dataclass
class _Layer:
    index: Any  # lookup(offset, length) -> (sc_type, bytes) | None
    flags: list[int]  # sc_type -> the driver's block status flags
    size: int
    backing_size: int  # -1: no backing file


class ChainStatus:
    """block_status_above(top, base, ...) with want_zero, from run indexes."""

    def __init__(self, layers: list[_Layer]) -> None:
        self.layers = layers

    @classmethod
    def build(cls, top: Node, base: Node | None) -> ChainStatus | None:
        layers: list[_Layer] = []
        node: Node | None = top
        while node is not None and node is not base:
            hook = getattr(node.driver, "run_index", None)
            index = hook() if hook is not None and node.request_alignment == 1 else None
            if index is None:
                return None
            backing = node.backing
            layers.append(_Layer(index.lookup, index.status_flags, node.getlength(),
                                 backing.node.getlength() if backing is not None else -1))
            node = backing.node if backing is not None else None
        return cls(layers) if layers else None

    def _layer(self, layer: _Layer, offset: int, length: int) -> tuple[int, int] | None:
        """request._block_status() of one layer (flags, pnum)."""
        if offset >= layer.size:
            return BLOCK_EOF, 0
        length = min(length, layer.size - offset)
        if length == 0:
            return 0, 0
        found = layer.index(offset, min(length, _LOOKUP_MAX))
        if found is None:
            return None
        sc_type, n = found
        pnum = min(n, length)
        if pnum <= 0:
            return None
        flags: int = layer.flags[sc_type]
        if flags & (BLOCK_DATA | BLOCK_ZERO):
            flags |= BLOCK_ALLOCATED
        elif layer.backing_size < 0 or offset >= layer.backing_size:
            flags |= BLOCK_ZERO
        if offset + pnum == layer.size:
            flags |= BLOCK_EOF
        return flags, pnum

    def above(self, offset: int, length: int) -> tuple[int, int] | None:
        """(flags, pnum) as block_status_above() returns them, or None: ask it."""
        layers = self.layers
        st = self._layer(layers[0], offset, length)
        if st is None:
            return None
        flags, pnum = st
        if pnum == 0 or flags & BLOCK_ALLOCATED:
            return st
        eof = offset + pnum if flags & BLOCK_EOF else -1
        length = pnum
        for layer in layers[1:]:
            st = self._layer(layer, offset, length)
            if st is None:
                return None
            flags, pnum = st
            if pnum == 0:  # beyond this (shorter) layer: zeros, as if allocated here
                flags, pnum = BLOCK_ZERO | BLOCK_ALLOCATED, length
                break
            if flags & BLOCK_ALLOCATED:
                flags &= ~BLOCK_EOF
                break
            length = pnum
        if offset + pnum == eof:
            flags |= BLOCK_EOF
        return flags, pnum
