"""bdrv-img resize against real qemu-img 7.2: sizes, --shrink, preallocation, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import check_same, images, needs_qemu  # noqa: E402

pytestmark = needs_qemu

SETUP = images(("r.raw", "1M", ["write -P 1 0 64k", "write -P 2 960k 64k"]))

CASES = [
    [],
    ["r.raw"],
    ["r.raw", "2M"],
    ["r.raw", "+1M"],
    ["r.raw", "-512k"],
    ["--shrink", "r.raw", "-512k"],
    ["--shrink", "-f", "raw", "r.raw", "100"],
    ["-f", "raw", "r.raw", "1000001"],
    ["r.raw", "0"],
    ["--shrink", "r.raw", "-5M"],
    ["r.raw", "abc"],
    ["r.raw", "+abc"],
    ["r.raw", "1.5"],
    ["r.raw", "1.5M"],
    ["r.raw", ""],
    ["r.raw", "+"],
    ["r.raw", "0x1000"],
    ["r.raw", "0x10k"],
    ["r.raw", "1G2"],
    ["r.raw", "16E"],
    ["r.raw", "9E"],
    ["r.raw", "+9E"],
    ["r.raw", "8E"],
    ["-f", "raw", "r.raw", "4E"],
    ["-f", "raw", "r.raw", "9223372036854775807"],
    ["-q", "r.raw", "2M"],
    ["--preallocation=full", "r.raw", "2M"],
    ["--preallocation=full", "-f", "raw", "r.raw", "1000001"],
    ["--preallocation=falloc", "r.raw", "4M"],
    ["--preallocation=falloc", "r.raw", "1M"],
    ["--preallocation=metadata", "r.raw", "3M"],
    ["--preallocation=bogus", "r.raw", "3M"],
    ["-f", "file", "r.raw", "3M"],
    ["nonexist", "1M"],
    ["--image-opts", "driver=raw,file.filename=r.raw", "6M"],
    ["--image-opts", "driver=raw,file.filename=r.raw,size=1048576", "7M"],
    ["--image-opts", "driver=raw,file.filename=r.raw,offset=4096", "3M"],
    ["--image-opts", "-f", "raw", "r.raw", "3M"],
    ["-U", "r.raw", "1M"],
    ["r.raw", "1M", "extra"],
    ["r.raw", "--", "-512k"],
    ["--", "r.raw", "-512k"],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a) or "(none)")
def test_resize(tmp_path: Path, args: list[str]) -> None:
    check_same(tmp_path, ["resize", *args], SETUP)
