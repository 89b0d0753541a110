"""iotests-style reference-output test harness for bdrv and QEMU (a pytest plugin).

Tests take the `iot` fixture (see harness.iot.Iot) and declare their formats:

    from harness import formats

    @formats("raw")
    def test_write_read(iot):
        img = iot.create("1M")
        iot.io(img, "write -P 0x11 0 64k")
        iot.io(img, "read -P 0x11 0 64k", by="qemu")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from .interactive import Session
from .iot import Image, Iot, notrun

__all__ = ["Image", "Iot", "Session", "formats", "notrun"]

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
