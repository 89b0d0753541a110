"""Many text lines of one shape at once, as numpy byte matrices.

A line is a row of fields laid side by side in a uint8 matrix: constant text, or
numbers written as digits. Bytes 0 mark what is not part of the line (the leading
zeros of a number, padding of shorter constants); `join_rows` drops them and joins
the rows, so each row becomes its line.
"""

from __future__ import annotations

import functools

import numpy as np

_POW10 = np.array([10**k for k in range(19)], dtype=np.int64)
_POW16 = np.array([16**k for k in range(16)], dtype=np.int64)


def _four_digit_table(base: int) -> np.ndarray:
    """Every 4-digit group in `base` (leading zeros kept) as the uint32 of its 4 ASCII
    bytes; built with numpy because 65,536 string formats cost 15 ms at every start."""
    n = np.arange(base**4)
    places = [(n // base**k) % base for k in (3, 2, 1, 0)]
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[np.stack(places, axis=1)]
    return np.ascontiguousarray(chars).view(np.uint32).ravel()


_DEC4 = _four_digit_table(10)
_hex4 = functools.cache(lambda: _four_digit_table(16))  # only the human map needs it


def constant(text: str, rows: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode(), dtype=np.uint8), (rows, len(text)))


def table(texts: list[str]) -> np.ndarray:
    """Constants to pick per row (`table(...)[index]`), padded with 0 bytes."""
    raw = [t.encode("utf-8", "surrogateescape") for t in texts]
    out = np.zeros((len(raw), max(len(r) for r in raw)), dtype=np.uint8)
    for i, data in enumerate(raw):
        out[i, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    return out


def decimal(values: np.ndarray) -> np.ndarray:
    """Non-negative int64 values in decimal (printf's %d)."""
    if len(values) and int(values.max()) < 10:  # depths: one digit, one column
        return (values.astype(np.uint8) + ord("0"))[:, None]
    return _digits(values, 10000, _DEC4, np.searchsorted(_POW10, values, side="right"))


def hex_column(values: np.ndarray, width: int = 16) -> np.ndarray:
    """printf's "%#-16x" (output.hex_column): 0x-prefixed except for zero, left-aligned."""
    count = np.maximum(np.searchsorted(_POW16, values, side="right"), 1)
    digits = _digits(values, 1 << 16, _hex4(), count)
    prefix = np.where((values != 0)[:, None], constant("0x", len(values)), 0).astype(np.uint8)
    pad = np.full((len(values), width - 1), ord(" "), dtype=np.uint8)
    used = count + np.where(values != 0, 2, 0)
    pad[np.arange(width - 1) >= (width - used)[:, None]] = 0
    return np.concatenate([prefix, digits, pad], axis=1)


def _digits(values: np.ndarray, base: int, lut: np.ndarray, count: np.ndarray) -> np.ndarray:
    rows = len(values)
    count = np.maximum(count, 1)
    chunks = max(1, -(-int(count.max(initial=1)) // 4))
    out = np.empty((rows, chunks), dtype=np.uint32)
    q = values
    for k in range(chunks - 1, -1, -1):
        q, r = np.divmod(q, base)
        out[:, k] = lut[r]
    text = out.view(np.uint8)
    width = 4 * chunks
    text[np.arange(width) < (width - count)[:, None]] = 0
    return text


def join_rows(fields: list[np.ndarray]) -> str:
    """The rows' lines, without their 0 bytes."""
    flat = np.concatenate(fields, axis=1).ravel()
    text: str = flat.tobytes().translate(None, b"\0").decode("utf-8", "surrogateescape")
    return text
