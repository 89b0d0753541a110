"""bdrv-img compare against real qemu-img 7.2: verdicts, offsets, exit codes, progress."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import check_same, images, needs_qemu  # noqa: E402

pytestmark = needs_qemu

W = ["write -P 1 0 64k", "write -P 2 1M 64k", "write -P 3 3M 4k"]


def SETUP(d: Path) -> None:  # noqa: N802
    images(
        ("m.raw", "4M", W),
        ("m2.raw", "4M", W),
        ("m3.raw", "4M", [*W, "write -P 9 2M 512"]),
        ("m4.raw", "4M", [*W, "write -P 0 2M 64k"]),
        ("m5.raw", "4M", [*W, "write -P 1 100 1"]),
        ("m6.raw", "4M", W[:2]),
        ("big.raw", "8M", W),
        ("big2.raw", "8M", [*W, "write -P 7 6M 512"]),
    )(d)
    (d / "odd.raw").write_bytes(b"abc")


CASES = [
    ["m.raw", "m2.raw"],
    ["m.raw", "m3.raw"],
    ["-q", "m.raw", "m3.raw"],
    ["-s", "m.raw", "m2.raw"],
    ["-s", "m.raw", "m3.raw"],
    ["-s", "m.raw", "big.raw"],
    ["m.raw", "big.raw"],
    ["big.raw", "m.raw"],
    ["m.raw", "big2.raw"],
    ["big2.raw", "m.raw"],
    ["m.raw", "m4.raw"],
    ["-s", "m.raw", "m4.raw"],
    ["m.raw", "m5.raw"],
    ["m5.raw", "m.raw"],
    ["m.raw", "m6.raw"],
    ["-s", "m6.raw", "m.raw"],
    ["odd.raw", "m.raw"],
    ["-s", "odd.raw", "odd.raw"],
    ["-p", "m.raw", "m2.raw"],
    ["-p", "big.raw", "m.raw"],
    ["-p", "big2.raw", "m.raw"],
    ["-p", "m.raw", "m3.raw"],
    ["-p", "-q", "big.raw", "m.raw"],
    ["-p", "m.raw", "nonexist"],
    ["-p", "-T", "x", "m.raw", "m.raw"],
    ["-f", "raw", "-F", "raw", "m.raw", "m2.raw"],
    ["-f", "file", "m.raw", "m2.raw"],
    ["-T", "none", "m.raw", "m2.raw"],
    ["-T", "bogus", "m.raw", "m2.raw"],
    ["-U", "m.raw", "m2.raw"],
    ["--image-opts", "driver=raw,file.filename=m.raw", "file.filename=m2.raw"],
    ["--image-opts", "-f", "raw", "m.raw", "m2.raw"],
    ["m.raw"],
    ["m.raw", "m2.raw", "m3.raw"],
    ["m.raw", "nonexist"],
    ["nonexist", "m.raw"],
    ["-a", "m.raw", "m.raw"],
    ["--a-format", "raw", "m.raw", "m2.raw"],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a))
def test_compare(tmp_path: Path, args: list[str]) -> None:
    check_same(tmp_path, ["compare", *args], SETUP)
