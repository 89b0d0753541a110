"""iotests-style reference-output test harness for bdrv and QEMU (a pytest plugin).

Tests take the `iot` fixture (see harness.iot.Iot) and declare their formats:

    from harness import formats

    @formats("raw")
    def test_write_read(iot):
        img = iot.create("1M")
        iot.io(img, "write -P 0x11 0 64k")
        iot.io(img, "read -P 0x11 0 64k", by="qemu")

Where QEMU 7.2 lacks the feature under test, `@qemu_lacks("reason")` reports the qemu
run as *not run* and takes the reference from bdrv (see harness.plugin).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from .interactive import Session
from .iot import Image, Iot, notrun

__all__ = ["Image", "Iot", "Session", "formats", "notrun", "qemu_lacks"]

F = TypeVar("F", bound=Callable[..., object])


def formats(*fmts: str) -> Callable[[F], F]:
    """Declare the image formats a test supports; it runs once per format and backend."""
    if not fmts:
        raise ValueError("formats() needs at least one format")
    marker = pytest.mark.formats(*fmts)

    def apply(func: F) -> F:
        result: F = marker(func)
        return result

    return apply


def qemu_lacks(reason: str) -> pytest.MarkDecorator:
    """Declare that QEMU 7.2 cannot run this test: it lacks `reason` (a feature).

    The qemu run is reported as *not run* with the reason; `--regen` writes the
    reference from the bdrv backend, for these tests only. QEMU is then no oracle, so
    the test must name the independent tool that checked its data in a
    "Verified by: ..." line of its docstring (without one the test fails).
    Use it as a decorator, or in a module's `pytestmark`.
    """
    if not reason.strip():
        raise ValueError("qemu_lacks() needs a reason")
    return pytest.mark.qemu_lacks(reason)
