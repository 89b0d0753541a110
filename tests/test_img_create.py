"""bdrv-img create against real qemu-img 7.2: options, sizes, -o help, errors, files made."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import check_same, images, needs_qemu  # noqa: E402

pytestmark = needs_qemu

SETUP = images(("t.raw", "1M", ["write -P 1 0 64k"]))

CASES = [
    [],
    ["-f", "raw"],
    ["x.raw", "1M", "extra"],
    ["x.raw", "abc"],
    ["x.raw", "1.5"],
    ["x.raw", "1.5k"],
    ["x.raw", "-5"],
    ["x.raw", "16E"],
    ["x.raw", "8E"],
    ["x.raw", "9223372036854775807"],
    ["x.raw", "0x100"],
    ["x.raw", "0x10k"],
    ["x.raw", ""],
    ["x.raw", " 1M"],
    ["x.raw", "1b"],
    ["x.raw", "100"],
    ["x.raw", "0"],
    ["x.raw", "4E"],
    ["x.raw", "1e3"],
    ["-f", "foo", "x.raw", "1M"],
    ["-f", "raw", "x.raw"],
    ["-f", "file", "x.raw", "1M"],
    ["-o", "size=1M", "x.raw"],
    ["-o", "size=1M", "x.raw", "2M"],
    ["-o", "size=1.5k", "x.raw"],
    ["-o", "size=abc", "x.raw"],
    ["-o", "size=-1", "x.raw"],
    ["-o", "preallocation=full", "x.raw", "1M"],
    ["-o", "preallocation=falloc", "x.raw", "1M"],
    ["-o", "preallocation=bad", "x.raw", "1M"],
    ["-o", "preallocation=metadata", "x.raw", "1M"],
    ["-o", "foo=bar", "x.raw", "1M"],
    ["-o", "nocow=on,extent_size_hint=1M,preallocation=off", "x.raw", "1M"],
    ["-o", "extent_size_hint=1M", "-o", "nocow=yes", "x.raw", "1M"],
    ["-o", "nocow=maybe", "x.raw", "1M"],
    ["-o", "extent_size_hint=abc", "x.raw", "1M"],
    ["-o", "extent_size_hint=5G", "x.raw", "1M"],
    ["-o", ",size=1", "x.raw"],
    ["-o", "size=1,", "x.raw"],
    ["-o", "size=1,,", "x.raw"],
    ["-o", "", "x.raw", "1"],
    ["-o", "help"],
    ["-o", "?"],
    ["-o", "help,size=1", "x.raw"],
    ["-o", "size=1", "-o", "help", "x.raw"],
    ["-o", "help=on", "x.raw"],
    ["-f", "file", "-o", "help"],
    ["-f", "foo", "-o", "help"],
    ["-f", "raw", "-o", "help", "foo:bar"],
    ["-f", "raw", "-o", "help", "file:x.raw"],
    ["-q", "x.raw", "1M"],
    ["x.raw", "1M", "-q"],
    ["-qf", "raw", "x.raw", "2k"],
    ["-fraw", "x.raw", "2k"],
    ["--", "x.raw", "1M"],
    ["x.raw", "--", "1M"],
    ["-f"],
    ["-z", "x.raw"],
    ["--foo", "x.raw"],
    ["-xq", "x.raw", "1M"],
    ["-b", "t.raw", "-F", "raw", "x.raw"],
    ["-u", "-b", "t.raw", "x.raw", "1M"],
    ["-b", "", "x.raw", "1M"],
    ["-F", "raw", "x.raw", "1M"],
    ["foo:bar", "1M"],
    ['json:{"driver":"file","filename":"x.raw"}', "1M"],
    ["/nonexistent-dir/x.raw", "1M"],
    ["", "1M"],
    ["t.raw", "2M"],
    ["-u", "x.raw", "1M"],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a) or "(none)")
def test_create(tmp_path: Path, args: list[str]) -> None:
    check_same(tmp_path, ["create", *args], SETUP)


def test_create_over_a_locked_image(tmp_path: Path) -> None:
    """Creating over an image qemu-img holds open for convert fails on the write lock."""
    check_same(tmp_path, ["convert", "t.raw", "t.raw"], SETUP)
