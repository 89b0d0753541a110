"""Reference (golden) files: lookup, comparison, .out.bad, and regeneration.

A test `test_foo` in `dir/test_x.py` is compared with `dir/test_foo.out`, or with
`dir/test_foo.out.<fmt>` when that file exists (output that differs per format).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path


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
        if expected == log:
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
