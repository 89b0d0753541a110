"""Options as QEMU 7.2 spells them on the command line and in `json:` filenames.

- option trees: `flatten` (nested -> dotted keys, like qdict_flatten), `unflatten`
  (dotted -> nested, like qdict_crumple) and `qdict_order` (the order in which QEMU's
  hash-table dictionaries list keys, which decides e.g. which unknown option is named
  in an error);
- `json:{...}` pseudo-filenames: `parse_json_filename`;
- `-o` strings (QemuOpts syntax): `parse_opts`, `is_help`, `is_valid_option_list`,
  `accumulate_options`;
- typed option values: `parse_bool`, `parse_number`, `parse_enum`, and the option
  description model `OptionDesc` / `OptionList` (conversion, `-o help` text, and the
  "Formatting ..." rendering of values);
- sizes, re-exported from bdrv.sizes: `parse_size`, `parse_option_size`,
  `parse_resize_size`, `parse_io_number`, `strtosz`.

Errors are BlockError (or its subclass OptionError, which carries QEMU's extra lines
and hints) with QEMU's words; callers add their own prefixes ("x.raw: ",
"Could not open '...': ").
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bdrv.errors import BlockError
from bdrv.qjson import JSONValue, parse_json
from bdrv.sizes import (
    INT64_MAX,
    UINT64_MAX,
    OptionError,
    WarnFn,
    default_warn,
    parse_io_number,
    parse_option_size,
    parse_resize_size,
    parse_size,
    strtosz,
)

__all__ = [
    "INT64_MAX",
    "UINT64_MAX",
    "OptionDesc",
    "OptionError",
    "OptionList",
    "accumulate_options",
    "flatten",
    "is_help",
    "is_help_option",
    "is_valid_option_list",
    "option_value_to_str",
    "parse_bool",
    "parse_enum",
    "parse_io_number",
    "parse_json_filename",
    "parse_number",
    "parse_option_size",
    "parse_opts",
    "parse_resize_size",
    "parse_size",
    "qdict_order",
    "strtosz",
    "unflatten",
]

# ---------------------------------------------------------------------------
# Option trees

_QDICT_BUCKETS = 512


def _qdict_bucket(key: str) -> int:
    """The hash bucket QEMU's QDict puts `key` in."""
    raw = key.encode("utf-8", "surrogateescape")
    value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
    for i, byte in enumerate(raw):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return ((1103515243 * value + 12345) & 0xFFFFFFFF) % _QDICT_BUCKETS


def qdict_order(keys: Iterable[str]) -> list[str]:
    """`keys` (in insertion order) in the order a QEMU QDict iterates them.

    QDict walks its hash buckets in order; within a bucket the newest key comes first.
    QEMU reports e.g. the first left-over option in this order ("Block format 'raw'
    does not support the option 'a.1'").
    """
    ordered = list(keys)
    rank = {key: index for index, key in enumerate(ordered)}
    return sorted(ordered, key=lambda k: (_qdict_bucket(k), -rank[k]))


def flatten(nested: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts and lists -> dotted keys ("file.driver", "list.0"), as qdict_flatten.

    Empty dicts and lists stay as values. When a dotted key also comes out of a nested
    dict, the nested value wins, as in QEMU.
    """
    result: dict[str, Any] = {}
    order = qdict_order(nested)
    for key in order:
        if not _is_container(nested[key]):
            result[key] = nested[key]
    for key in order:
        if _is_container(nested[key]):
            _flatten_into(nested[key], key, result)
    return result


def _is_container(value: Any) -> bool:
    return isinstance(value, dict | list) and len(value) > 0


def _flatten_into(value: Any, prefix: str, target: dict[str, Any]) -> None:
    if isinstance(value, dict):
        items = [(key, value[key]) for key in qdict_order(value)]
    else:
        items = [(str(index), item) for index, item in enumerate(value)]
    for key, item in items:
        if _is_container(item):
            _flatten_into(item, f"{prefix}.{key}", target)
        else:
            target[f"{prefix}.{key}"] = item


def _split_flat_key(key: str) -> tuple[str, str | None]:
    """Split at the first '.' that is not part of a '..' escape; unescape the prefix."""
    pos = 0
    while True:
        dot = key.find(".", pos)
        if dot < 0 or key[dot + 1 : dot + 2] != ".":
            break
        pos = dot + 2
    if dot < 0:
        return key.replace("..", "."), None
    return key[:dot].replace("..", "."), key[dot + 1 :]


_INT64_KEY = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")


def _list_index(key: str) -> int | None:
    if not _INT64_KEY.fullmatch(key):
        return None
    value = int(key)
    return value if -(1 << 63) <= value <= INT64_MAX else None


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any] | list[Any]:
    """Dotted keys -> nested dicts, and dicts keyed 0..n-1 -> lists (qdict_crumple).

    ".." in a key stands for a literal dot. Errors, in QEMU's words: "Value <key> is
    not flat", "Cannot mix scalar and non-scalar keys", "Cannot mix list and non-list
    keys", "List indices are not contiguous, saw N elements but M largest index".
    """
    two_level: dict[str, Any] = {}
    for key in qdict_order(flat):
        value = flat[key]
        if _is_container(value):
            raise BlockError(f"Value {key} is not flat")
        prefix, suffix = _split_flat_key(key)
        child = two_level.get(prefix)
        if prefix in two_level and (not isinstance(child, dict) or suffix is None):
            raise BlockError("Cannot mix scalar and non-scalar keys")
        if suffix is None:
            # An empty dict value can take dotted keys after it, as in QEMU.
            two_level[prefix] = _Group() if value == {} else value
        else:
            if not isinstance(child, dict):
                child = two_level[prefix] = _Group()
            child[suffix] = value
    multi = {
        key: unflatten(value) if isinstance(value, _Group) else value
        for key, value in two_level.items()
    }
    indices = [_list_index(key) for key in qdict_order(multi)]
    if not indices or indices[0] is None:
        if any(index is not None for index in indices):
            raise BlockError("Cannot mix list and non-list keys")
        return multi
    if None in indices:
        raise BlockError("Cannot mix list and non-list keys")
    largest = max(index for index in indices if index is not None)
    if len(indices) != largest + 1:
        raise BlockError(
            f"List indices are not contiguous, saw {len(indices)} elements "
            f"but {largest} largest index"
        )
    for i in range(len(indices)):
        if str(i) not in multi:
            raise BlockError(f"Missing list index {i}")
    return [multi[str(i)] for i in range(len(indices))]


class _Group(dict[str, Any]):
    """Keys sharing a prefix while unflattening (distinct from a user's empty dict)."""


def parse_json_filename(filename: str) -> dict[str, Any]:
    """The flat options of a `json:{...}` filename, values kept typed.

    Errors: "Could not parse the JSON options: <parser message>" and "Invalid JSON
    object given"; qemu-img prints them as "Could not open '<filename>': <message>".
    """
    if not filename.startswith("json:"):
        raise ValueError("not a json: filename")
    try:
        value: JSONValue = parse_json(filename[len("json:") :])
    except BlockError as exc:
        raise exc.prefixed("Could not parse the JSON options: ") from None
    if not isinstance(value, dict):
        raise BlockError("Invalid JSON object given")
    return flatten(value)


def option_value_to_str(value: Any) -> str | None:
    """A typed option value as the string QemuOpts sees (None: ignored by QEMU)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.17g}"
    if isinstance(value, str):
        return value
    return None


# ---------------------------------------------------------------------------
# "-o a=b,c=d" strings


def is_help_option(name: str) -> bool:
    """Whether `name` asks for help ("help" or "?")."""
    return name in ("help", "?")


def is_valid_option_list(text: str) -> bool:
    """qemu-img's check of one -o argument: not empty, no leading ',', no lone trailing ','."""
    if not text or text[0] == ",":
        return False
    trailing = len(text) - len(text.rstrip(","))
    return trailing % 2 == 0


def accumulate_options(current: str | None, text: str) -> str:
    """Join a further -o argument onto the ones before it, as qemu-img does.

    Raises BlockError "Invalid option list: <text>" (qemu-img exits 1).
    """
    if not is_valid_option_list(text):
        raise BlockError(f"Invalid option list: {text}")
    return text if current is None else f"{current},{text}"


def _opt_value(text: str, pos: int) -> tuple[str, int]:
    """A value up to the next single ','; ',,' is a literal comma. Returns (value, end)."""
    out: list[str] = []
    while pos < len(text):
        if text[pos] == ",":
            if text[pos + 1 : pos + 2] != ",":
                break
            pos += 1
        out.append(text[pos])
        pos += 1
    return "".join(out), pos


def _name_value(
    text: str, pos: int, implied_key: str | None, warn: WarnFn | None
) -> tuple[str, str, bool, int]:
    """One 'name=value' or flag at text[pos]: (name, value, is_help, next position)."""
    end = pos
    while end < len(text) and text[end] not in "=,":
        end += 1
    is_help = False
    if end < len(text) and text[end] == "=":
        name = text[pos:end]
        value, end = _opt_value(text, end + 1)
    elif implied_key is not None:
        name = implied_key
        value, end = _opt_value(text, pos)
    else:
        name = text[pos:end]
        prefix = ""
        if name.startswith("no"):
            name, value, prefix = name[2:], "off", "no"
        else:
            value = "on"
            is_help = is_help_option(name)
        if not is_help and warn is not None:
            if name == "delay":
                advice = f"nodelay={'on' if prefix else 'off'}"
            else:
                advice = f"{name}={value}"
            warn(
                f"short-form boolean option '{prefix}{name}' deprecated\n"
                f"Please use {advice} instead"
            )
    if end < len(text):
        end += 1  # the ',' separator
    return name, value, is_help, end


def parse_opts(
    text: str,
    implied_key: str | None = None,
    *,
    warn_on_flag: bool = False,
    warn: WarnFn | None = None,
) -> list[tuple[str, str]]:
    """Split a QemuOpts string into (name, value) pairs, in order, duplicates kept.

    `a=b,c=d`; ',,' inside a value is a literal ','; a bare `name` means name=on and
    `noname` means name=off. With `implied_key`, a first item without '=' is that
    key's value. With `warn_on_flag` (qemu-img --image-opts, --object), bare flags
    give QEMU's deprecation warning, whose text has a second, unprefixed line.
    "id" is returned like any other pair. Unknown names are not checked here.
    """
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        flag_warn = (warn or default_warn) if warn_on_flag else None
        name, value, _, pos = _name_value(text, pos, implied_key, flag_warn)
        implied_key = None
        pairs.append((name, value))
    return pairs


def is_help(text: str) -> bool:
    """Whether an option string asks for help: a bare 'help' or '?' item anywhere.

    "help=on" and "size=help" are not help requests (they fail as options instead).
    """
    pos = 0
    while pos < len(text):
        _, _, wanted, pos = _name_value(text, pos, None, None)
        if wanted:
            return True
    return False


# ---------------------------------------------------------------------------
# Typed values

_HEX_DIGITS = "0123456789abcdefABCDEF"
_TRUE = ("on", "yes", "true", "y")
_FALSE = ("off", "no", "false", "n")


def parse_bool(name: str, text: str | bool) -> bool:
    """on/yes/true/y and off/no/false/n (case matters), else "Parameter 'x' expects ...".

    JSON options arrive already typed: a bool passes through.
    """
    if isinstance(text, bool):
        return text
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BlockError(f"Parameter '{name}' expects 'on' or 'off'")


_NUMBER = re.compile(r"[ \t\n\v\f\r]*([+-]?)(.*)", re.DOTALL)


def parse_number(name: str, text: str) -> int:
    """A number-typed option: C strtoull with base 0 (decimal, 0x hex, 0 octal).

    Negative numbers wrap as in C. Errors: "Parameter 'x' expects a number" and
    "Value '<text>' is too large for parameter 'x'".
    """
    match = _NUMBER.fullmatch(text)
    assert match is not None
    sign, rest = match.groups()
    if rest[:2].lower() == "0x" and rest[2:3] and rest[2] in _HEX_DIGITS:
        base, rest = 16, rest[2:]
    else:
        base = 8 if rest[:1] == "0" else 10
    allowed = _HEX_DIGITS[: 22 if base == 16 else base]
    valid = len(rest) - len(rest.lstrip(allowed))
    if valid == 0 or valid < len(rest):
        raise BlockError(f"Parameter '{name}' expects a number")
    value = int(rest, base)
    if value > UINT64_MAX:
        raise BlockError(f"Value '{text}' is too large for parameter '{name}'", errno.ERANGE)
    return (-value) & UINT64_MAX if sign == "-" else value


def parse_enum(text: str, choices: Iterable[str]) -> str:
    """A value that must be one of `choices` (qapi_enum_parse): "invalid parameter value: x"."""
    if text not in tuple(choices):
        raise BlockError(f"invalid parameter value: {text}")
    return text


def _signed64(value: int) -> int:
    return value - (1 << 64) if value > INT64_MAX else value


# ---------------------------------------------------------------------------
# Option descriptions

OptionType = Literal["string", "bool", "number", "size"]
_TYPE_NAMES: dict[str, str] = {
    "string": "str",
    "bool": "bool (on/off)",
    "number": "num",
    "size": "size",
}


@dataclass(frozen=True)
class OptionDesc:
    """One option a driver accepts: name, type, help text, default (as a string)."""

    name: str
    type: OptionType
    help: str
    default: str | None = None


class OptionList:
    """The options a driver accepts (a QemuOptsList), in declaration order."""

    def __init__(self, descs: Iterable[OptionDesc] = (), *, accept_any: bool = False) -> None:
        self.descs: tuple[OptionDesc, ...] = tuple(descs)
        self.accept_any = accept_any

    def find(self, name: str) -> OptionDesc | None:
        """The description of `name`, or None."""
        return next((d for d in self.descs if d.name == name), None)

    def append(self, other: OptionList) -> OptionList:
        """This list followed by `other`'s options not already here (qemu_opts_append)."""
        names = {d.name for d in self.descs}
        extra = [d for d in other.descs if d.name not in names]
        return OptionList(self.descs + tuple(extra), accept_any=self.accept_any)

    def convert(self, name: str, value: str, *, warn: WarnFn | None = None) -> Any:
        """One value converted by its option's type; unknown name: "Invalid parameter"."""
        desc = self.find(name)
        if desc is None:
            if self.accept_any:
                return value
            raise BlockError(f"Invalid parameter '{name}'")
        if desc.type == "bool":
            return parse_bool(name, value)
        if desc.type == "number":
            return parse_number(name, value)
        if desc.type == "size":
            return parse_option_size(name, value, warn=warn)
        return value

    def parse(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        with_defaults: bool = False,
        warn: WarnFn | None = None,
    ) -> dict[str, Any]:
        """Check and convert pairs in order (the first bad one raises); the last wins.

        "id" is skipped, as QEMU does for -o. With `with_defaults`, options that were
        not given but have a default appear with the converted default.
        """
        result: dict[str, Any] = {}
        for name, value in pairs:
            if name != "id":
                result[name] = self.convert(name, value, warn=warn)
        if with_defaults:
            for desc in self.descs:
                if desc.name not in result and desc.default is not None:
                    result[desc.name] = self.convert(desc.name, desc.default, warn=warn)
        return result

    def format_values(self, pairs: Sequence[tuple[str, str]]) -> str:
        """Values as qemu-img prints them after "Formatting '...', fmt=raw " (qemu_opts_print).

        Options in declaration order, each given (last) value or else its default;
        sizes and numbers as signed 64-bit numbers, strings with ',' doubled, booleans
        as typed. `pairs` must already have passed `parse`.
        """
        given = {name: value for name, value in pairs if name != "id"}
        if not self.descs:
            return " ".join(f"{n}={v.replace(',', ',,')}" for n, v in pairs if n != "id")
        parts: list[str] = []
        for desc in self.descs:
            value = given.get(desc.name, desc.default)
            if value is None:
                continue
            if desc.type == "string":
                value = value.replace(",", ",,")
            elif desc.type in ("size", "number") and desc.name in given:
                value = str(_signed64(int(self.convert(desc.name, value, warn=_quiet))))
            parts.append(f"{desc.name}={value}")
        return " ".join(parts)

    def help_lines(self) -> list[str]:
        """One line per option, sorted, as qemu_opts_print_help formats them."""
        lines = []
        for desc in self.descs:
            line = f"  {desc.name}=<{_TYPE_NAMES[desc.type]}>"
            if desc.help:
                line = f"{line:<24} - {desc.help}"
            lines.append(line)
        return sorted(lines, key=lambda s: s.encode("utf-8", "surrogateescape"))

    def help_text(self, fmt_name: str, *, protocol_included: bool = True) -> str:
        """What `qemu-img create -f <fmt> -o help` prints (exit 0).

        `protocol_included`: a filename was given, so this list already holds the
        protocol driver's options ("Supported options:"). Without a filename qemu-img
        prints "Supported <fmt> options:" and a note about the protocol level.
        """
        if protocol_included:
            head = "Supported options:\n"
        else:
            head = f"Supported {fmt_name} options:\n"
        lines = self.help_lines()
        body = "".join(f"{line}\n" for line in lines) if lines else "No options.\n"
        tail = ""
        if not protocol_included:
            tail = (
                "\nThe protocol level may support further options.\n"
                "Specify the target filename to include those options.\n"
            )
        return head + body + tail


def _quiet(message: str) -> None:
    """Swallow a warning already given when the value was first parsed."""
