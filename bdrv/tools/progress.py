"""qemu-img's progress meter (-p): "    (12.50/100%)\\r" lines, in single precision.

QEMU keeps the state in C floats and prints only when the value moved by more than
`min_skip` or hit 0 or 100, so which lines appear depends on float rounding; the
arithmetic here is done in numpy.float32 to print exactly the same lines.
"""

from __future__ import annotations

from numpy import float32

from bdrv.tools.output import write_stdout


class Progress:
    """One meter; a disabled meter prints nothing (QEMU's SIGUSR1 reporting is not kept)."""

    def __init__(self, enabled: bool, min_skip: float) -> None:
        self.enabled = enabled
        self.min_skip = float32(min_skip)
        self.current = float32(0)
        self.last_print = float32(0)

    def print(self, delta: float, maximum: int) -> None:
        """Advance by `delta` percent of `maximum`, or set to `delta` when maximum is 0."""
        if maximum == 0:
            current = float32(delta)
        else:
            current = self.current + float32(delta) / float32(100) * float32(maximum)
        current = min(current, float32(100))
        self.current = float32(current)
        if (
            current > self.last_print + self.min_skip
            or current < self.last_print - self.min_skip
            or current == 0
            or current == 100
        ):
            self.last_print = self.current
            if self.enabled:
                write_stdout(f"    ({float(self.current):3.2f}/100%)\r", flush=True)

    def end(self) -> None:
        if self.enabled:
            write_stdout("\n")
