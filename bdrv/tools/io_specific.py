"""The "Format specific information" block, as bdrv_image_info_specific_dump() prints it.

Keys come in QDict order (QEMU's hash order, not insertion order), dashes in key names
become spaces, nested values are indented four spaces per level, lists show "[i]:".
A driver's get_specific_info() may return the QAPI union ({"type", "data"}) or just
the data.
"""

from __future__ import annotations

from typing import Any

from bdrv.options import qdict_order


def dump_specific_info(spec: dict[str, Any]) -> str:
    data = spec.get("data", spec) if set(spec) == {"type", "data"} else spec
    lines: list[str] = []
    _dump(data, 1, lines)
    return "".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _dump(value: Any, indent: int, out: list[str]) -> None:
    if isinstance(value, dict):
        for key in qdict_order(value):
            item = value[key]
            composite = isinstance(item, dict | list)
            name = key.replace("-", " ")
            out.append(f"{' ' * (indent * 4)}{name}:" + ("\n" if composite else " "))
            _dump(item, indent + 1, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            composite = isinstance(item, dict | list)
            out.append(f"{' ' * (indent * 4)}[{i}]:" + ("\n" if composite else " "))
            _dump(item, indent + 1, out)
    else:
        out.append(_scalar(value) + "\n")
