"""bdrv-img convert against real qemu-img 7.2: data, holes, allocation, options, errors.

Every case also compares the files left behind: bytes, size, allocated blocks and
data extents, so the sparse detection must punch the same holes as qemu-img's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import check_same, images, needs_qemu, sh  # noqa: E402

pytestmark = needs_qemu

W = ["write -P 1 0 64k", "write -P 2 1M 64k", "write -P 3 3M 4k"]


def SETUP(d: Path) -> None:  # noqa: N802
    images(
        ("m.raw", "4M", W),
        ("big.raw", "8M", W),
        ("z.raw", "8M", [*W, "write -z 5M 1M", "write -P 0 6M 3k", "write -P 4 6M 1k",
                         "write -P 5 6143k 512", "write -P 0 7M 1M"]),
        ("ex.raw", "12M", ["write -P 8 0 12M"]),
    )(d)
    (d / "odd.raw").write_bytes(b"abc" * 1000)
    sh(d, "qemu-img", "create", "-q", "-o", "preallocation=full", "full.raw", "3M")
    sh(d, "qemu-io", "-f", "raw", "-c", "write -P 9 1M 4k", "full.raw")


CASES = [
    ["big.raw", "c.raw"],
    ["-O", "raw", "-S", "0", "big.raw", "c.raw"],
    ["-S", "512", "big.raw", "c.raw"],
    ["-S", "1000", "big.raw", "c.raw"],
    ["-S", "17M", "big.raw", "c.raw"],
    ["-S", "abc", "big.raw", "c.raw"],
    ["z.raw", "c.raw"],
    ["-S", "0", "z.raw", "c.raw"],
    ["-S", "1k", "z.raw", "c.raw"],
    ["-S", "64k", "z.raw", "c.raw"],
    ["-t", "none", "z.raw", "c.raw"],
    ["-T", "none", "z.raw", "c.raw"],
    ["-C", "z.raw", "c.raw"],
    ["-n", "z.raw", "ex.raw"],
    ["-n", "-S", "0", "z.raw", "ex.raw"],
    ["-n", "--target-is-zero", "z.raw", "ex.raw"],
    ["-n", "--target-image-opts", "z.raw", "driver=raw,file.filename=ex.raw"],
    ["-n", "big.raw", "m.raw"],
    ["-n", "big.raw", "c.raw"],
    ["-n", "-o", "size=1", "big.raw", "m.raw"],
    ["--target-image-opts", "big.raw", "driver=raw,file.filename=m.raw"],
    ["--target-is-zero", "big.raw", "c.raw"],
    ["m.raw", "z.raw", "c.raw"],
    ["odd.raw", "c.raw"],
    ["full.raw", "c.raw"],
    ["-o", "preallocation=full", "big.raw", "c.raw"],
    ["-o", "preallocation=bad", "big.raw", "c.raw"],
    ["-o", "size=1M", "big.raw", "c.raw"],
    ["-o", "foo=1", "big.raw", "c.raw"],
    ["-o", "help"],
    ["-O", "raw", "-o", "help"],
    ["-o", "help", "big.raw", "c.raw"],
    ["-O", "file", "big.raw", "c.raw"],
    ["-f", "file", "big.raw", "c.raw"],
    ["-O", "foo", "big.raw", "c.raw"],
    ["--image-opts", "driver=raw,file.filename=big.raw", "c.raw"],
    ["--image-opts", "-f", "raw", "big.raw", "c.raw"],
    ["-U", "-q", "big.raw", "c.raw"],
    ["-p", "big.raw", "c.raw"],
    ["-p", "-S", "0", "big.raw", "c.raw"],
    ["-p", "m.raw", "z.raw", "c.raw"],
    ["-p", "-n", "big.raw", "m.raw"],
    ["-p", "nonexist", "c.raw"],
    ["-W", "-m", "4", "big.raw", "c.raw"],
    ["-m", "0", "big.raw", "c.raw"],
    ["-m", "17", "big.raw", "c.raw"],
    ["-m", "abc", "big.raw", "c.raw"],
    ["-m", "0x10", "big.raw", "c.raw"],
    ["-C", "-S", "0", "big.raw", "c.raw"],
    ["-c", "big.raw", "c.raw"],
    ["-B", "m.raw", "big.raw", "c.raw"],
    ["-F", "raw", "big.raw", "c.raw"],
    ["-t", "bogus", "big.raw", "c.raw"],
    ["-T", "bogus", "big.raw", "c.raw"],
    ["-l", "foo", "big.raw", "c.raw"],
    ["-l", "snapshot.foo=1", "big.raw", "c.raw"],
    ["-l", "snapshot.id=1", "m.raw", "big.raw", "c.raw"],
    ["-l", "foo", "m.raw", "big.raw", "c.raw"],
    ["--salvage", "z.raw", "c.raw"],
    ["--bitmaps", "big.raw", "c.raw"],
    ["--skip-broken-bitmaps", "big.raw", "c.raw"],
    ["-a", "big.raw", "c.raw"],
    ["-b", "m.raw", "big.raw", "c.raw"],
    ["big.raw", "big.raw"],
    ["big.raw", "/nonexistent-dir/c.raw"],
    ["nonexist", "c.raw"],
    ["big.raw"],
    [],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a) or "(none)")
def test_convert(tmp_path: Path, args: list[str]) -> None:
    check_same(tmp_path, ["convert", *args], SETUP)
