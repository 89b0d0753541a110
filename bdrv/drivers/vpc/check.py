"""VHD check (placeholder until the checker lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bdrv.check import CheckResult

if TYPE_CHECKING:
    from bdrv.drivers.vpc.driver import VpcDriver


def check_image(drv: VpcDriver, fix: int) -> CheckResult:
    return CheckResult()
