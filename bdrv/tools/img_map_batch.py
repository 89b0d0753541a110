"""bdrv-img map for many extents at once: merging and printing runs with numpy.

The runs of a chunk (status_runs.chain_runs) are merged the way img_map.mergeable()
merges entries; the first merged entry goes through img_map's own merge step (it may
join the entry carried over from before), the last is carried on, and those between
are printed in one formatting call each chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from bdrv.request import BLOCK_ALLOCATED, BLOCK_DATA, BLOCK_OFFSET_VALID, BLOCK_ZERO
from bdrv.status_runs import StatusRuns
from bdrv.tools import byte_lines

_KEY_FLAGS = BLOCK_ALLOCATED | BLOCK_DATA | BLOCK_OFFSET_VALID | BLOCK_ZERO


@dataclass
class Merged:
    """Merged entries: start, length, flags, host offset, depth (arrays)."""

    start: np.ndarray
    length: np.ndarray
    flags: np.ndarray
    host: np.ndarray
    depth: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


def merge_runs(runs: StatusRuns) -> Merged:
    """Adjacent runs that img_map.mergeable() would merge, merged."""
    assert runs.depth is not None
    start, flags, host, depth = runs.start, runs.flags & _KEY_FLAGS, runs.host, runs.depth
    length = runs.end - start
    brk = np.ones(len(start), dtype=bool)
    brk[1:] = (flags[1:] != flags[:-1]) | (depth[1:] != depth[:-1]) | (
        ((flags[1:] & BLOCK_OFFSET_VALID) != 0) & (host[:-1] + length[:-1] != host[1:]))
    idx = np.flatnonzero(brk)
    merged_len = np.add.reduceat(length, idx)
    return Merged(start[idx], merged_len, flags[idx], host[idx], depth[idx])


def odd_for_human(merged: Merged) -> bool:
    """Whether some entry is both data and zero or neither: the human format relabels
    those, so only the per-entry merge steps reproduce its merging exactly."""
    data = (merged.flags & BLOCK_DATA) != 0
    zero = (merged.flags & BLOCK_ZERO) != 0
    return bool(np.any(data == zero))


# Lines are formatted this many at a time: buffers that stay in cache, and no 10 MB
# strings whose fresh pages cost more than the formatting (measured: 8192 is fastest).
CHUNK = 8192


def json_text(m: Merged, a: int, b: int) -> Iterator[str]:
    """Entries a..b-1, each followed by another: img_map._dump's JSON lines, in pieces."""
    for lo in range(a, b, CHUNK):
        yield _json_chunk(m, lo, min(lo + CHUNK, b))


def _json_chunk(m: Merged, a: int, b: int) -> str:
    flags = m.flags[a:b]
    has_offset = (flags & BLOCK_OFFSET_VALID) != 0
    key = ((flags & BLOCK_ALLOCATED) != 0) * 8 + ((flags & BLOCK_ZERO) != 0) * 4 + \
        ((flags & BLOCK_DATA) != 0) * 2 + has_offset
    rows = b - a
    offset = byte_lines.decimal(np.where(has_offset, m.host[a:b], 0))
    offset[~has_offset] = 0
    return byte_lines.join_rows([
        byte_lines.constant('{ "start": ', rows), byte_lines.decimal(m.start[a:b]),
        byte_lines.constant(', "length": ', rows), byte_lines.decimal(m.length[a:b]),
        byte_lines.constant(', "depth": ', rows), byte_lines.decimal(m.depth[a:b]),
        _JSON_MIDDLE[key], offset, byte_lines.constant("},\n", rows)])


def _json_middle(key: int) -> str:
    def word(bit: int) -> str:
        return "true" if key & bit else "false"

    offset = ', "offset": ' if key & 1 else ""
    return f', "present": {word(8)}, "zero": {word(4)}, "data": {word(2)}{offset}'


_JSON_MIDDLE = byte_lines.table([_json_middle(k) for k in range(16)])


def human_text(m: Merged, a: int, b: int,
               filename: Callable[[int], str]) -> tuple[Iterator[str], bool]:
    """img_map._dump's human lines for entries a..b-1, in pieces; and whether an entry
    among them (data without an offset) stops the output there."""
    flags = m.flags[a:b]
    data = (flags & BLOCK_DATA) != 0
    unmapped = np.flatnonzero(data & ((flags & BLOCK_OFFSET_VALID) == 0))
    stop = len(flags) if not len(unmapped) else int(unmapped[0])
    show = a + np.flatnonzero((data & ((flags & BLOCK_ZERO) == 0))[:stop])
    depth = m.depth[show]
    names = byte_lines.table([filename(d) + "\n" for d in range(int(depth.max(initial=0)) + 1)])

    def pieces() -> Iterator[str]:
        for lo in range(0, len(show), CHUNK):
            rows = show[lo : lo + CHUNK]
            yield byte_lines.join_rows([
                byte_lines.hex_column(m.start[rows]), byte_lines.hex_column(m.length[rows]),
                byte_lines.hex_column(m.host[rows]), names[m.depth[rows]]])

    return pieces(), stop < len(flags)
