"""Many lookups at once: the (sub)cluster types of a guest range from whole L2 tables.

`type_runs()` answers what a sequence of `Mapping.lookup()` calls answers (type, host
offset, extent), as numpy arrays: runs of one type whose host offsets, for the types
that have one, are contiguous. Runs may be split where lookup() would not split them
(or the other way round) only where the split is invisible once adjacent equal
extents are merged, as map does.

A table that lookup() would refuse anywhere (unaligned L2 or cluster offset, a zero
cluster in a v2 image, an invalid extended entry, a failing read) is not classified:
the answer stops at its start (or at `offset`), and `resume` is where it ends, so that
the per-extent path meets the same error at the same place. No corruption is signalled
here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bdrv.errors import BlockError

from .mapping import (
    L1E_OFFSET_MASK,
    L2E_OFFSET_MASK,
    OFLAG_COMPRESSED,
    OFLAG_ZERO,
    SC_COMPRESSED,
    SC_NORMAL,
    SC_UNALLOC_ALLOC,
    SC_UNALLOC_PLAIN,
    SC_ZERO_ALLOC,
    SC_ZERO_PLAIN,
    SUBCLUSTERS,
)

if TYPE_CHECKING:
    from .mapping import Mapping

# Units ((sub)clusters, or a whole unallocated L2 range) classified in one call.
MAX_UNITS = 1 << 18
# Types whose host offset is meaningful (and must be contiguous within a run).
HOST_TYPES = (SC_NORMAL, SC_ZERO_ALLOC, SC_UNALLOC_ALLOC)

_U64 = np.uint64
_LOW32 = _U64(0xFFFFFFFF)


@dataclass
class TypeRuns:
    """Runs covering [offset, end[-1]) (nothing when `start` is empty)."""

    start: np.ndarray  # int64 guest offsets
    end: np.ndarray  # int64
    sc_type: np.ndarray  # int64 SC_* types
    host: np.ndarray  # int64 host offset at `start` (0 for types without one)
    resume: int  # where batching may go on; beyond the covered end if a table was refused


@dataclass
class _Piece:
    """One L2 table's part of the range: `table` None for an unallocated L1 entry."""

    guest: int  # guest offset of the first cluster (or of the range, if unallocated)
    stop: int  # guest end of the part
    table: np.ndarray | None = None
    first: int = 0  # first cluster index in the table
    count: int = 0  # clusters


def type_runs(m: Mapping, offset: int, length: int) -> TypeRuns:
    end = offset + length
    pieces, resume = _pieces(m, offset, end)
    if not pieces:
        empty = np.zeros(0, np.int64)
        return TypeRuns(empty, empty, empty, empty, resume)
    starts, types, hosts = _units(m, pieces)
    # The first unit may begin before `offset` (offset inside a (sub)cluster).
    skip = int(np.searchsorted(starts, offset, side="right")) - 1
    starts, types, hosts = starts[skip:], types[skip:], hosts[skip:]
    delta = offset - int(starts[0])
    starts[0] = offset
    hosts[0] += delta
    has_host = np.isin(types, HOST_TYPES)
    brk = np.ones(len(starts), dtype=bool)
    brk[1:] = (types[1:] != types[:-1]) | (
        has_host[1:] & (hosts[1:] - hosts[:-1] != starts[1:] - starts[:-1]))
    idx = np.flatnonzero(brk)
    covered = pieces[-1].stop
    run_start = starts[idx]
    run_end = np.empty_like(run_start)
    run_end[:-1] = run_start[1:]
    run_end[-1] = covered
    run_host = np.where(has_host[idx], hosts[idx], 0)
    return TypeRuns(run_start, run_end, types[idx], run_host,
                    resume=max(resume, covered))


def _pieces(m: Mapping, offset: int, end: int) -> tuple[list[_Piece], int]:
    """The L2 tables of [offset, end) within the unit budget, up to the first refused
    one; and where batching may resume (the end of a refused table, else the end
    of what was covered)."""
    cbits = m.cluster_bits
    tshift = cbits + m.l2_bits
    per_cluster = m.sc_per_cluster
    budget = MAX_UNITS
    pieces: list[_Piece] = []
    pos = offset
    loaded: list[int] = []  # indexes of pieces with tables, to validate together
    while pos < end and budget > 0:
        index = pos >> tshift
        table_end = (index + 1) << tshift
        stop = min(end, table_end)
        l2_offset = int(m.l1[index]) & L1E_OFFSET_MASK if index < m.l1_size else 0
        if l2_offset & (m.cluster_size - 1):
            return _cut(m, pieces, loaded, table_end)
        if not l2_offset:
            pieces.append(_Piece(pos, stop))
            budget -= 1
            pos = stop
            continue
        first = (pos >> cbits) & (m.l2_size - 1)
        count = ((stop - 1) >> cbits) - (pos >> cbits) + 1
        if count * per_cluster > budget:
            count = budget // per_cluster
            if count == 0:
                break
            stop = ((pos >> cbits) + count) << cbits
        try:
            table = m.cache.get(l2_offset)
        except BlockError:
            return _cut(m, pieces, loaded, table_end)
        loaded.append(len(pieces))
        pieces.append(_Piece(((pos >> cbits) << cbits), stop, table, first, count))
        budget -= count * per_cluster
        pos = stop
    return _cut(m, pieces, loaded, pos)


def _cut(m: Mapping, pieces: list[_Piece], loaded: list[int],
         resume: int) -> tuple[list[_Piece], int]:
    """Drop the pieces from the first table lookup() would refuse on."""
    if loaded:
        tables = [pieces[i].table for i in loaded]
        bad = np.flatnonzero(_refused(m, np.concatenate(tables)))  # type: ignore[arg-type]
        if len(bad):
            at = loaded[int(bad[0]) // m.l2_size]
            tshift = m.cluster_bits + m.l2_bits
            resume = ((pieces[at].guest >> tshift) + 1) << tshift
            del pieces[at:]
    return pieces, resume


def _refused(m: Mapping, entries: np.ndarray) -> np.ndarray:
    """Per L2 entry (per pair, extended): whether lookup() would raise on it."""
    if m.extended:
        entries, bitmaps = entries[0::2], entries[1::2]
    offs = entries & _U64(L2E_OFFSET_MASK)
    plain = (entries & _U64(OFLAG_COMPRESSED)) == 0
    unaligned = plain & ((offs & _U64(m.cluster_size - 1)) != 0)
    if m.extended:
        alloc = bitmaps & _LOW32
        zero = bitmaps >> _U64(32)
        invalid = plain & np.where(offs != 0, (alloc & zero) != 0, alloc != 0)
        refused: np.ndarray = unaligned | invalid
    elif m.version < 3:  # v2 has no zero clusters
        refused = unaligned | (plain & ((entries & _U64(OFLAG_ZERO)) != 0))
    else:
        refused = unaligned
    return refused


def _units(m: Mapping, pieces: list[_Piece]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(guest start, type, host) per unit, in guest order."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    run: list[_Piece] = []
    for piece in pieces + [_Piece(0, 0)]:
        if piece.table is not None:
            run.append(piece)
            continue
        if run:
            parts.append(_table_units(m, run))
            run = []
        if piece.stop > piece.guest:
            parts.append((np.array([piece.guest], np.int64),
                          np.array([SC_UNALLOC_PLAIN], np.int64), np.zeros(1, np.int64)))
    if len(parts) == 1:
        return parts[0]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _table_units(m: Mapping, run: list[_Piece]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Units of consecutive allocated table parts (adjacent in guest space)."""
    w = m.width
    entries = np.concatenate([p.table[w * p.first : w * (p.first + p.count)]  # type: ignore[index]
                              for p in run]) if len(run) > 1 else \
        run[0].table[w * run[0].first : w * (run[0].first + run[0].count)]  # type: ignore[index]
    if m.extended:
        entries, bitmaps = entries[0::2], entries[1::2]
    n = len(entries)
    offs = entries & _U64(L2E_OFFSET_MASK)
    compressed = (entries & _U64(OFLAG_COMPRESSED)) != 0
    host = offs.astype(np.int64)
    start = (np.arange(n, dtype=np.int64) << m.cluster_bits) + run[0].guest
    if not m.extended:
        types = np.where(offs != 0, SC_NORMAL, SC_UNALLOC_PLAIN)
        zero = (entries & _U64(OFLAG_ZERO)) != 0
        types[zero] = np.where(offs[zero] != 0, SC_ZERO_ALLOC, SC_ZERO_PLAIN)
        types[compressed] = SC_COMPRESSED
        return start, types.astype(np.int64), host
    shifts = np.arange(SUBCLUSTERS, dtype=np.uint64)
    alloc = ((bitmaps[:, None] >> shifts) & _U64(1)) != 0
    zero = ((bitmaps[:, None] >> (shifts + _U64(32))) & _U64(1)) != 0
    allocated = (offs != 0)[:, None]
    types = np.where(allocated, np.where(zero, SC_ZERO_ALLOC,
                                         np.where(alloc, SC_NORMAL, SC_UNALLOC_ALLOC)),
                     np.where(zero, SC_ZERO_PLAIN, SC_UNALLOC_PLAIN))
    types[compressed] = SC_COMPRESSED
    within = np.arange(SUBCLUSTERS, dtype=np.int64) * m.sc_size
    return ((start[:, None] + within).ravel(), types.astype(np.int64).ravel(),
            (host[:, None] + within).ravel())
