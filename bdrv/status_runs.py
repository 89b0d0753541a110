"""Block status of a backing chain for many extents at once.

The batched twin of walking the chain with Node.block_status() (the request layer's
rules): a driver's `block_status_runs(offset, length)` answers for a run of its
clusters what its block_status() answers one extent at a time; `chain_runs()` adds
what the request layer adds (ALLOCATED; ZERO where there is no backing file or the
backing file is shorter) and takes the ranges a layer leaves unallocated from the
layer below, as map's get_block_status() does.

Runs may be split differently from the per-extent answers, but every byte gets the
same status; callers merge adjacent runs that agree. A driver stops short of what it
would refuse to answer (see `resume`), so that the per-extent path reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bdrv.request import BLOCK_ALLOCATED, BLOCK_DATA, BLOCK_ZERO

if TYPE_CHECKING:
    from bdrv.graph import Node

# Deeper chains take the per-extent path (chain_runs recurses once per layer).
MAX_DEPTH = 64


@dataclass
class StatusRuns:
    """Runs [start[i], end[i]) covering [offset, end[-1]) without gaps.

    `host` is the mapped offset at `start` where flags has BLOCK_OFFSET_VALID; `depth`
    the layer that answered (0 = top). Past the covered end, `resume` is where runs
    may be asked for again: equal to it, the answer was only cut short; beyond it, the
    per-extent path must be taken up to there.
    """

    start: np.ndarray
    end: np.ndarray
    flags: np.ndarray
    host: np.ndarray
    resume: int
    depth: np.ndarray | None = None

    def covered(self, offset: int) -> int:
        return int(self.end[-1]) if len(self.end) else offset


def batch_layers(top: Node) -> list[Node] | None:
    """The backing chain from `top`, if every layer can answer in runs."""
    layers: list[Node] = []
    node: Node | None = top
    while node is not None:
        if not hasattr(node.driver, "block_status_runs") or node.request_alignment != 1 \
                or len(layers) == MAX_DEPTH:
            return None
        layers.append(node)
        backing = node.backing
        node = backing.node if backing is not None else None
    return layers


def chain_runs(layers: list[Node], offset: int, end: int, depth: int = 0) -> StatusRuns | None:
    """Status of [offset, end) (within layers[depth]'s length) through the chain below
    layers[depth]; None if some layer needed cannot answer in runs."""
    hook = getattr(layers[depth].driver, "block_status_runs")  # noqa: B009 (not on Driver)
    runs: StatusRuns | None = hook(offset, end - offset)
    if runs is None:
        return None
    start, stop, flags, host = runs.start, runs.end, runs.flags, runs.host
    settled = (flags & (BLOCK_DATA | BLOCK_ZERO)) != 0
    flags = flags | np.where(settled, BLOCK_ALLOCATED, 0)
    if depth + 1 == len(layers):
        flags |= np.where(settled, 0, BLOCK_ZERO)
        return StatusRuns(start, stop, flags, host, runs.resume,
                          np.full(len(start), depth, dtype=np.int64))
    blen = layers[depth + 1].getlength()
    # Past the end of the backing file the layer itself reads as zeros.
    i = int(np.searchsorted(start, blen, side="right")) - 1
    if 0 <= i < len(start) and start[i] < blen < stop[i] and not settled[i]:
        start = np.insert(start, i + 1, blen)
        stop = np.insert(stop, i, blen)
        flags = np.insert(flags, i + 1, flags[i])
        host = np.insert(host, i + 1, host[i] + (blen - start[i]))
        settled = np.insert(settled, i + 1, False)
    beyond = ~settled & (start >= blen)
    flags |= np.where(beyond, BLOCK_ZERO, 0)
    need = ~(settled | beyond)
    layer = np.full(len(start), depth, dtype=np.int64)
    wanted = np.flatnonzero(need)
    if not len(wanted):
        return StatusRuns(start, stop, flags, host, runs.resume, layer)
    lo, hi = int(start[wanted[0]]), int(stop[wanted[-1]])
    below = chain_runs(layers, lo, hi, depth + 1)
    if below is None:
        return None
    covered, resume = runs.covered(offset), runs.resume
    if below.covered(lo) < hi:
        covered, resume = below.covered(lo), below.resume
    keep = start < covered
    start, stop, flags, host = start[keep], stop[keep], flags[keep], host[keep]
    need, layer = need[keep], layer[keep]
    if len(start):
        stop[-1] = covered
    if not len(below.start) or not len(start):
        return StatusRuns(start, stop, flags, host, resume, layer)
    return _overlay(StatusRuns(start, stop, flags, host, resume, layer), need, below)


def _overlay(top: StatusRuns, need: np.ndarray, below: StatusRuns) -> StatusRuns:
    """`top` with its runs marked `need` replaced by what `below` says there."""
    assert below.depth is not None and top.depth is not None
    covered = int(top.end[-1])
    bs = below.start
    inside = bs < covered
    inside[inside] = need[np.searchsorted(top.start, bs[inside], side="right") - 1]
    seg = np.union1d(top.start, bs[inside])
    ti = np.searchsorted(top.start, seg, side="right") - 1
    bi = np.maximum(np.searchsorted(bs, seg, side="right") - 1, 0)
    lower = need[ti]
    seg_end = np.empty_like(seg)
    seg_end[:-1] = seg[1:]
    seg_end[-1] = covered
    return StatusRuns(
        seg, seg_end,
        np.where(lower, below.flags[bi], top.flags[ti]),
        np.where(lower, below.host[bi] + (seg - bs[bi]), top.host[ti] + (seg - top.start[ti])),
        top.resume,
        np.where(lower, below.depth[bi], top.depth[ti]),
    )
