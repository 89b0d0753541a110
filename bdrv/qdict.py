"""QEMU's QDict key order and JSON text, for output that exposes them.

QEMU prints option dictionaries (`json:{...}` filenames) by walking its hash table,
so keys come out in bucket order, not insertion order. Reproducing that order is
what makes such filenames byte-identical to qemu-img's.
"""

from __future__ import annotations

import json
from typing import Any


def ordered_keys(keys: list[str]) -> list[str]:
    """Keys in the order QEMU iterates a QDict they were inserted into, in order."""
    from bdrv.options import qdict_order

    return qdict_order(keys)


def to_json(value: Any) -> str:
    """Compact JSON as qobject_to_json() writes it: ', ' and ': ' separators."""
    if isinstance(value, dict):
        items = [f"{_quote(k)}: {to_json(value[k])}" for k in ordered_keys(list(value))]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    return json.dumps(value)


def _quote(text: str) -> str:
    """A JSON string with QEMU's escapes: upper-case \\uXXXX for all non-ASCII."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 | (code >> 10):04X}\\u{0xDC00 | (code & 0x3FF):04X}")
        else:
            out.append(f"\\u{code:04X}")
    out.append('"')
    return "".join(out)


_SIMPLE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                   "\r": "\\r", "\t": "\\t"}
