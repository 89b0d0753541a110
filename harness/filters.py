"""Output normalisation, in the spirit of iotests' common.filter.

Every step's output goes through `OutputFilter` before it reaches the log, so that one
reference file fits both backends and any scratch directory: the scratch directory becomes
TEST_DIR, the image format becomes IMGFMT, the tool names become QEMU's, and qemu-io's
timing figures become fixed placeholders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# bdrv's programs and the QEMU program each one stands in for.  References always show
# the QEMU name, so bdrv and QEMU runs share one reference.
CANONICAL_PROGRAMS: dict[str, str] = {
    "bdrv-img": "qemu-img",
    "bdrv-io": "qemu-io",
    "bdrv-storage-daemon": "qemu-storage-daemon",
}

# Format names that are also ordinary words: replacing them everywhere would mangle
# messages ("No such file or directory"), so only structured spots are rewritten.
_WORDLIKE_FORMATS = frozenset({"file", "null", "host_device", "host_cdrom"})

# qemu-io's statistics line, e.g.
#   "256 KiB, 1 ops; 00.00 sec (1.204 GiB/sec and 4815.3846 ops/sec)"
# The byte count stays (it is deterministic); counts of ops and all timings go, exactly
# as iotests' _filter_qemu_io does.
_QEMU_IO_TIMING = re.compile(
    r"[0-9]* ops; [0-9/:. sec]* \([0-9/.infa-]* [EPTGMKiBbytes]*/sec"
    r" and [0-9/.infa-]* ops/sec\)"
)
_QEMU_IO_TIMING_REPL = "X ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)"


def filter_qemu_io(text: str) -> str:
    """Replace qemu-io's timing statistics.

    Unlike iotests, the "qemu-io> " prompt is kept: interactive sessions split output on
    it (so it never reaches the log), the log shows session commands after it, and a
    prompt printed where QEMU prints none is a real difference.
    """
    return _QEMU_IO_TIMING.sub(_QEMU_IO_TIMING_REPL, text)


def filter_testdir(text: str, test_dirs: Iterable[str]) -> str:
    """Replace each spelling of the scratch directory with TEST_DIR.

    Longer spellings go first so that a realpath and a symlinked path that share a
    prefix are both handled.
    """
    for d in sorted({d.rstrip("/") for d in test_dirs if d}, key=len, reverse=True):
        text = text.replace(d, "TEST_DIR")
    return text


def filter_programs(text: str, program_paths: dict[str, str]) -> str:
    """Map program names (and the absolute paths they ran from) to QEMU's names.

    `program_paths` maps an absolute path to its canonical name, e.g.
    {"/usr/bin/qemu-img": "qemu-img", "/usr/local/bin/bdrv-io": "qemu-io"}.
    """
    for path in sorted(program_paths, key=len, reverse=True):
        text = text.replace(path, program_paths[path])
    for name, canonical in CANONICAL_PROGRAMS.items():
        text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", canonical, text)
    return text


def filter_imgfmt(text: str, fmt: str) -> str:
    """Replace the image format name with IMGFMT (iotests' _filter_imgfmt)."""
    if not fmt:
        return text
    f = re.escape(fmt)
    if fmt not in _WORDLIKE_FORMATS:
        return re.sub(rf"(?<![\w-]){f}(?![\w-])", "IMGFMT", text)
    # Structured places only: create's option list, info's human and JSON output,
    # command lines, and scratch file suffixes.
    patterns = [
        (rf"\bfmt={f}\b", "fmt=IMGFMT"),
        (rf"^file format: {f}$", "file format: IMGFMT"),
        (rf'"(format|driver)": "{f}"', r'"\1": "IMGFMT"'),
        (rf"(?<= -f ){f}\b", "IMGFMT"),
        (rf"(?<=\w)\.{f}\b", ".IMGFMT"),
    ]
    for pat, repl in patterns:
        text = re.sub(pat, repl, text, flags=re.MULTILINE)
    return text


def scratch_spellings(test_dir: str) -> list[str]:
    """All the ways a tool may print the scratch directory (as given, and resolved)."""
    spellings = {os.path.abspath(test_dir), os.path.realpath(test_dir)}
    return sorted(spellings, key=len, reverse=True)


@dataclass
class OutputFilter:
    """The standard filter chain applied to every logged line of a test."""

    test_dir: str
    fmt: str
    program_paths: dict[str, str] = field(default_factory=dict)

    def __call__(self, text: str) -> str:
        # Order matters: program paths before the scratch dir (they are unrelated
        # absolute paths); the format last, once paths are already TEST_DIR/...
        text = filter_programs(text, self.program_paths)
        text = filter_testdir(text, scratch_spellings(self.test_dir))
        text = filter_qemu_io(text)
        return filter_imgfmt(text, self.fmt)
