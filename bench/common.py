"""Timing and process helpers shared by the benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

QEMU_IMG = os.environ.get("QEMU_IMG_PROG", "qemu-img")
QEMU_IO = os.environ.get("QEMU_IO_PROG", "qemu-io")


def _console_script(name: str) -> str:
    """The script installed beside this interpreter, not a wrapper found on PATH first
    (a pyenv shim is a bash script that costs a tenth of a second per run)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.access(beside, os.X_OK) else name


BDRV_IMG = _console_script("bdrv-img")
BDRV_IO = _console_script("bdrv-io")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass
class Measurement:
    name: str
    bdrv: float
    qemu: float
    target: float | None = None

    @property
    def ratio(self) -> float:
        return self.bdrv / self.qemu if self.qemu else float("inf")

    def line(self) -> str:
        target = "" if self.target is None else (
            f"  (target <= {self.target:g}: {'met' if self.ratio <= self.target else 'MISSED'})")
        return (f"{self.name}: bdrv {self.bdrv:.2f}s, qemu {self.qemu:.2f}s, "
                f"ratio {self.ratio:.2f}{target}")


def require_tools() -> None:
    missing = [t for t in (QEMU_IMG, QEMU_IO, BDRV_IMG, BDRV_IO) if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"bench: missing tools: {', '.join(missing)}")


def run(argv: Sequence[str], stdin: bytes | None = None) -> float:
    """Run a command to completion (output discarded); its wall-clock time in seconds."""
    start = time.perf_counter()
    subprocess.run(list(argv), input=stdin, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - start


def best_of(n: int, argv: Sequence[str], stdin: bytes | None = None,
            before: object = None) -> float:
    """The fastest of `n` runs (`before()` is called ahead of each, untimed)."""
    times = []
    for _ in range(n):
        if callable(before):
            before()
        times.append(run(argv, stdin))
    return min(times)
