"""Human and JSON output shared by the tools, formatted the way QEMU 7.2 formats it.

- `size_to_str`: "64 MiB", "0.999 MiB", "4 KiB", "0 B" (QEMU's size_to_str);
- `json_pretty`: qobject_to_json_pretty(): four-space indents, keys in QDict order;
- `dump_human`: the "Format specific information:" dump of nested values
  (block/qapi.c's dump_qobject), keys in QDict order, dashes shown as spaces;
  `dump_specific_info` applies it to ImageInfoSpecific (the union's data only);
- `hex_column`: printf's "%#-16" PRIx64 (plain "0" for zero);
- `write_stdout`: stdout writes that survive a closed pipe.

Dictionaries passed in must list keys in the order QEMU inserts them (for QAPI
structs: schema order); the QDict order is derived from that.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from bdrv.qdict import ordered_keys, to_json

_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def write_stdout(text: str, *, flush: bool = False) -> None:
    """Write to the current sys.stdout; a reader that went away is ignored, as QEMU's
    tools ignore SIGPIPE and carry on."""
    try:
        sys.stdout.write(text)
        if flush:
            sys.stdout.flush()
    except BrokenPipeError:
        pass


def size_to_str(value: int) -> str:
    """Three significant digits and a binary unit; switches unit at 1000, not 1024."""
    _, exponent = math.frexp(value / (1000.0 / 1024.0))
    index = int((exponent - 1) / 10)  # C division truncates toward zero
    return f"{value / (1 << (index * 10)):0.3g} {_SUFFIXES[index]}B"


def hex_column(value: int, width: int = 16) -> str:
    """printf("%#-16" PRIx64): '0x' prefix except for zero, left-aligned in `width`."""
    text = f"{value:#x}" if value else "0"
    return text.ljust(width)


def json_pretty(value: Any) -> str:
    """JSON as qobject_to_json_pretty() writes it (no trailing newline)."""
    out: list[str] = []
    _pretty(value, 0, out)
    return "".join(out)


def _pretty(value: Any, depth: int, out: list[str]) -> None:
    if isinstance(value, dict):
        keys = ordered_keys(list(value))
        out.append("{")
        for i, key in enumerate(keys):
            out.append("," if i else "")
            out.append("\n" + " " * (4 * (depth + 1)) + to_json(key) + ": ")
            _pretty(value[key], depth + 1, out)
        out.append("\n" + " " * (4 * depth) + "}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            out.append("," if i else "")
            out.append("\n" + " " * (4 * (depth + 1)))
            _pretty(item, depth + 1, out)
        out.append("\n" + " " * (4 * depth) + "]")
    else:
        out.append(to_json(value))


def dump_human(value: Any, indent: int = 1) -> str:
    """Nested dicts/lists as bdrv_image_info_specific_dump() prints them."""
    out: list[str] = []
    _dump(value, indent, out)
    return "".join(out)


def dump_specific_info(specific: Any) -> str:
    """The lines under "Format specific information:" (qemu-img info, qemu-io info).

    ImageInfoSpecific is the QAPI union {"type": ..., "data": {...}}; only the data is
    shown. A driver's get_specific_info() may also return the data alone.
    """
    if isinstance(specific, dict) and set(specific) == {"type", "data"}:
        specific = specific["data"]
    return dump_human(specific)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _dump(value: Any, indent: int, out: list[str]) -> None:
    if isinstance(value, dict):
        entries = [(key.replace("-", " "), value[key]) for key in ordered_keys(list(value))]
    elif isinstance(value, list):
        entries = [(f"[{i}]", item) for i, item in enumerate(value)]
    else:
        out.append(_scalar_text(value))
        return
    for label, item in entries:
        composite = isinstance(item, dict | list)
        out.append(" " * (4 * indent) + label + (":\n" if composite else ": "))
        _dump(item, indent + 1, out)
        if not composite:
            out.append("\n")


def snapshot_table(snapshots: list[dict[str, Any]]) -> str:
    """'Snapshot list:' as qemu-img info prints it, from SnapshotInfo dicts.

    Keys as in QAPI: id, name, vm-state-size, date-sec, vm-clock-sec, vm-clock-nsec,
    and optionally icount.
    """
    import time

    lines = ["Snapshot list:\n",
             f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}\n"]
    for snap in snapshots:
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(snap["date-sec"])))
        clock_ns = int(snap.get("vm-clock-sec", 0)) * 1_000_000_000 + int(
            snap.get("vm-clock-nsec", 0))
        secs = clock_ns // 1_000_000_000
        clock = (f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}."
                 f"{clock_ns // 1_000_000 % 1000:03d}")
        icount = str(snap["icount"]) if "icount" in snap else ""
        lines.append(f"{snap['id']:<9} {snap['name']:<16} "
                     f"{size_to_str(int(snap['vm-state-size'])):>8}{date:>20}{clock:>13}"
                     f"{icount:>11}\n")
    return "".join(lines)
