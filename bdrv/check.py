"""What a format driver's `check(fix)` returns, shared by every format checker.

The fields mirror QEMU's BdrvCheckResult and BlockFragInfo, so `bdrv-img check`
can report them in qemu-img's words whatever the format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Repair modes (BdrvCheckMode): what `check(fix)` may repair.
FIX_LEAKS = 1
FIX_ERRORS = 2


class ErrorReport(str):
    """A check message that QEMU prints with error_report() ("<prog>: <text>")."""


@dataclass
class FragInfo:
    """BlockFragInfo: cluster counts for the allocation summary line."""

    allocated_clusters: int = 0
    total_clusters: int = 0
    fragmented_clusters: int = 0
    compressed_clusters: int = 0


@dataclass
class CheckResult:
    """BdrvCheckResult, plus the messages the checker produced (for stderr)."""

    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    image_end_offset: int = 0
    bfi: FragInfo = field(default_factory=FragInfo)
    # One line each, without the trailing newline, in the order they were found.
    messages: list[str] = field(default_factory=list)

    # Shortcuts for the counters QEMU keeps in bfi.
    @property
    def allocated_clusters(self) -> int:
        return self.bfi.allocated_clusters

    @property
    def total_clusters(self) -> int:
        return self.bfi.total_clusters

    @property
    def fragmented_clusters(self) -> int:
        return self.bfi.fragmented_clusters

    @property
    def compressed_clusters(self) -> int:
        return self.bfi.compressed_clusters

    def corruption(self, message: str) -> None:
        self.corruptions += 1
        self.messages.append(f"ERROR {message}")

    def leak(self, message: str) -> None:
        self.leaks += 1
        self.messages.append(f"Leaked {message}")
