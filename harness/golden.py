"""Reference (golden) files: lookup, comparison, .out.bad, and regeneration.

A test `test_foo` in `dir/test_x.py` is compared with `dir/test_foo.out`, or with
`dir/test_foo.out.<fmt>` when that file exists (output that differs per format).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path

# A file's allocated size depends on its write history, not only on its final extents:
# ext4 keeps an extent-tree block once a file has had more than four extents (and
# delayed allocation may split or merge extents depending on when writeback ran).
# So `disk size:` / "actual-size" may differ by a block or two between two runs that
# wrote the same data; a difference of whole clusters (a hole kept or not) still fails.
ALLOCATION_NOISE = 8 << 10
_UNITS = {"B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40, "PiB": 50, "EiB": 60}
_HUMAN_SIZE = re.compile(r"^(?P<pre>\s*disk size: )(?P<num>[0-9.]+) (?P<unit>[KMGTPE]?i?B)$")
_JSON_SIZE = re.compile(r'^(?P<pre>\s*"actual-size": )(?P<num>\d+)(?P<post>,?)$')


def reference_path(test_file_dir: Path, test_name: str, fmt: str) -> Path:
    """The reference a run compares with: the per-format variant wins when present."""
    base = test_file_dir / f"{test_name}.out"
    variant = base.with_name(f"{base.name}.{fmt}")
    return variant if variant.exists() else base


@dataclass(frozen=True)
class Mismatch:
    """Why a log does not match its reference, with the evidence on disk."""

    reference: Path
    bad: Path
    diff: str

    def message(self) -> str:
        return (
            f"output differs from reference {self.reference}\n"
            f"actual output written to {self.bad}\n{self.diff}"
        )


def unified_diff(expected: str, actual: str, ref_name: str, bad_name: str) -> str:
    lines = difflib.unified_diff(
        expected.splitlines(keepends=True),
        actual.splitlines(keepends=True),
        fromfile=ref_name,
        tofile=bad_name,
    )
    # Lines without a trailing newline would run into the next diff line.
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline\n" for line in lines)


def _allocation(line: str) -> tuple[str, float, float] | None:
    """(the line without its size, the size in bytes, the precision it is shown with)."""
    m = _HUMAN_SIZE.match(line)
    if m and m["unit"] in _UNITS:
        scale = 1 << _UNITS[m["unit"]]
        num = float(m["num"])
        # qemu-img prints three significant digits ("2.02 MiB", "464 KiB").
        step = 10.0 ** (math.floor(math.log10(num)) - 2) if num >= 1 else 0.01
        return m["pre"], num * scale, step * scale
    m = _JSON_SIZE.match(line)
    if m:
        return m["pre"] + "#" + m["post"], float(m["num"]), 0.0
    return None


def same_but_allocation_noise(expected: str, actual: str) -> bool:
    """True if the two logs differ only in allocated sizes, each by at most
    ALLOCATION_NOISE (plus the precision the size is printed with)."""
    exp_lines = expected.split("\n")
    act_lines = actual.split("\n")
    if len(exp_lines) != len(act_lines):
        return False
    for exp, act in zip(exp_lines, act_lines, strict=True):
        if exp == act:
            continue
        a, b = _allocation(exp), _allocation(act)
        if a is None or b is None or a[0] != b[0]:
            return False
        if abs(a[1] - b[1]) > ALLOCATION_NOISE + max(a[2], b[2]):
            return False
    return True


def _read(reference: Path) -> str:
    """A reference as written: carriage returns (progress meters) stay as they are."""
    with reference.open(encoding="utf-8", newline="") as f:
        return f.read()


def check(log: str, reference: Path, bad: Path) -> Mismatch | None:
    """Compare `log` with `reference`; on a difference write `bad` and describe it.

    A missing reference is a mismatch against an empty file, so a forgotten --regen
    fails loudly instead of passing.
    """
    if reference.exists():
        expected = _read(reference)
        if expected == log or same_but_allocation_noise(expected, log):
            if bad.exists():
                bad.unlink()
            return None
        diff = unified_diff(expected, log, str(reference), str(bad))
    else:
        diff = (
            f"reference {reference} does not exist; generate it with "
            "--regen (from the qemu backend, or from bdrv for a qemu_lacks test), "
            "review it, and commit it\n"
        )
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(log, encoding="utf-8")
    return Mismatch(reference, bad, diff)


def regenerate(log: str, reference: Path) -> bool:
    """Write `log` as the new reference. Returns True if the content changed."""
    if reference.exists() and _read(reference) == log:
        return False
    reference.write_text(log, encoding="utf-8")
    return True
