"""Size and number strings as QEMU 7.2 reads them ("64M", "1.5G", "0x200").

One scanner, `strtosz`, follows the rules of QEMU's size parser; the functions around
it reproduce how each caller reports a failure:

- `parse_size`: qemu-img's positional and flag arguments (`create ... 64M`, `-S`, ...),
  two error lines, or "Must be between 0 and 9223372036854775807.";
- `parse_option_size`: a `-o name=value` option of size type, message plus hint;
- `parse_resize_size`: `qemu-img resize`'s `[+|-]size`;
- `parse_io_number`: qemu-io's offsets and lengths ("Parsing error: ...", on stdout).

Hexadecimal with a multiplier suffix ("0x10k") works but QEMU warns about it; the
warning goes to `warn` (by default printed to stderr as "<prog>: warning: ...").
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable

from bdrv.errors import BlockError

INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

WarnFn = Callable[[str], None]

_SUFFIX_POWER = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_C_SPACE = " \t\n\v\f\r"
_DEC = re.compile(r"[+-]?([0-9]*)")
_HEX = re.compile(r"[+-]?(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]*)")
# What strtod() can take after the integral part: the point, digits, an exponent.
_FRACTION = re.compile(r"\.([0-9]*)(?:[eE][+-]?[0-9]+)?")
_DBL_MIN = 2.2250738585072014e-308


class OptionError(BlockError):
    """A BlockError about an option value (may carry `extra` lines and a `hint`)."""


def default_warn(message: str) -> None:
    """Print a warning the way warn_report() does: '<prog>: warning: <message>'."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "bdrv"
    sys.stderr.write(f"{prog}: warning: {message}\n")


def _strtoull(text: str, pos: int, base: int) -> tuple[int, int, int]:
    """C strtoull() on text[pos:]: (value, end index, 0 or ERANGE); end == pos if none."""
    start = pos
    while pos < len(text) and text[pos] in _C_SPACE:
        pos += 1
    match = (_DEC if base == 10 else _HEX).match(text, pos)
    assert match is not None
    digits = match.group(1)
    if not digits:
        return 0, start, 0
    value = int(digits, base)
    if value > UINT64_MAX:
        return UINT64_MAX, match.end(), errno.ERANGE
    if text[pos] == "-":
        value = (-value) & UINT64_MAX
    return value, match.end(), 0


def _strtod_fraction(text: str, pos: int) -> tuple[float, int, int]:
    """strtod() on the '.'-led fraction at text[pos]: (value, end, error)."""
    match = _FRACTION.match(text, pos)
    if match is None or not match.group(1):
        return 0.0, pos, errno.EINVAL
    value = float("0" + match.group(0))
    if value == float("inf"):
        return 0.0, pos, errno.EINVAL
    tiny = value < _DBL_MIN and match.group(1).strip("0") != ""
    return value, match.end(), errno.ERANGE if tiny else 0


def strtosz(text: str, *, default_suffix: str = "B", warn: WarnFn | None = None) -> int:
    """Parse a size the way QEMU's qemu_strtosz() does and return it (0 .. 2^64-1).

    Decimal or 0x-hexadecimal; an optional suffix B, K, M, G, T, P or E (either case,
    powers of 1024); a decimal fraction only together with a suffix larger than bytes,
    rounded to the nearest byte. Leading white space is skipped, nothing may follow.
    Raises BlockError with errno EINVAL (malformed) or ERANGE (2^64 or more).
    """
    err = 0
    value, end, err = _strtoull(text, 0, 10)
    is_hex = False
    fraction = 0
    if end == 0:
        err = errno.EINVAL
    elif not err and "-" in text[:end]:
        err, end = errno.EINVAL, 0
    elif not err and value == 0 and text[end : end + 1] in ("x", "X"):
        is_hex = True
        value, end, err = _strtoull(text, 0, 16)
        if not err and text[end : end + 1] == ".":
            err, end = errno.EINVAL, 0
    elif not err and text[end : end + 1] == ".":
        dot = end
        frac, end, ferr = _strtod_fraction(text, dot)
        if ferr:
            # QEMU steps over one character and carries on; this is what it does.
            end = min(end + 1, len(text))
        elif re.search("[eE]", text[dot:end]):
            err, end = errno.EINVAL, 0
        else:
            # 64-bit fixed-point fraction; 1.0 wraps to 0 as the C conversion does on x86.
            fraction = int(frac * 2.0**64) & UINT64_MAX
    if not err:
        suffix = text[end : end + 1]
        if suffix and suffix in "bBkKmMgGtTpPeE":
            suffix = suffix.upper()
            if is_hex:
                (warn or default_warn)(
                    f"Using a multiplier suffix on hex numbers is deprecated: {text}"
                )
            end += 1
        else:
            suffix = default_suffix
        mul = 1024 ** _SUFFIX_POWER[suffix]
        if mul == 1 and fraction:
            err, end = errno.EINVAL, 0
        else:
            low = fraction * mul
            value = value * mul + (low >> 64) + ((low & UINT64_MAX) >> 63)
            if value > UINT64_MAX:
                err = errno.ERANGE
    if end < len(text):
        err = errno.EINVAL
    if err:
        raise BlockError(f"Invalid size '{text}'", err)
    return value


def parse_size(
    text: str,
    name: str = "image size",
    *,
    min_value: int = 0,
    max_value: int = INT64_MAX,
    warn: WarnFn | None = None,
) -> int:
    """qemu-img's reading of a size argument (its cvtnum); `name` goes into the message.

    Malformed: OptionError "Invalid <name> specified. You may use k, M, G, T, P or E
    suffixes for" plus a second line "kilobytes, megabytes, ...". Out of range:
    "Invalid <name> specified. Must be between <min> and <max>." (errno ERANGE).
    """
    try:
        value = strtosz(text, warn=warn)
    except BlockError as exc:
        if exc.errno != errno.ERANGE:
            raise OptionError(
                f"Invalid {name} specified. You may use k, M, G, T, P or E suffixes for",
                extra=["kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."],
            ) from None
        value = UINT64_MAX + 1
    if not min_value <= value <= max_value:
        raise OptionError(
            f"Invalid {name} specified. Must be between {min_value} and {max_value}.",
            errno.ERANGE,
        )
    return value


def parse_option_size(name: str, value: str, *, warn: WarnFn | None = None) -> int:
    """A size-typed QemuOpts value (`-o cluster_size=64k`): 0 .. 2^64-1."""
    try:
        return strtosz(value, warn=warn)
    except BlockError as exc:
        if exc.errno == errno.ERANGE:
            raise OptionError(
                f"Value '{value}' is out of range for parameter '{name}'", errno.ERANGE
            ) from None
        raise OptionError(
            f"Parameter '{name}' expects a non-negative number below 2^64",
            hint="Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
            "and exabytes, respectively.\n",
        ) from None


def parse_resize_size(text: str, *, warn: WarnFn | None = None) -> tuple[int, int]:
    """`qemu-img resize`'s size: (sign, value), sign +1/-1 for "+N"/"-N", 0 if absolute.

    Only the first character is taken as the sign; the rest is a size option value,
    so errors read "Parameter 'size' expects ..." (with hint) as for `-o size=`.
    The caller checks the result ("New image size must be positive").
    """
    sign = 0
    if text[:1] in ("+", "-"):
        sign = 1 if text[0] == "+" else -1
        text = text[1:]
    return sign, parse_option_size("size", text, warn=warn)


def parse_io_number(text: str, *, warn: WarnFn | None = None) -> int:
    """qemu-io's offsets and lengths (its cvtnum): 0 .. INT64_MAX.

    Failures carry the whole line qemu-io prints, *to stdout*:
    "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- <arg>"
    (EINVAL) or "Parsing error: argument too large -- <arg>" (ERANGE).
    """
    try:
        value = strtosz(text, warn=warn)
    except BlockError as exc:
        if exc.errno != errno.ERANGE:
            reason = "non-numeric argument, or extraneous/unrecognized suffix"
            raise BlockError(f"Parsing error: {reason} -- {text}") from None
        value = UINT64_MAX
    if value > INT64_MAX:
        raise BlockError(f"Parsing error: argument too large -- {text}", errno.ERANGE)
    return value
