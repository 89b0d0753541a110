"""bdrv-img's global command line against real qemu-img 7.2: dispatch, getopt quirks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import bdrv_img, check_same, images, needs_qemu  # noqa: E402

SETUP = images(("t.raw", "1M", []))

CASES = [
    [],
    ["foo"],
    [""],
    ["-x"],
    ["--foo"],
    ["-T"],
    ["-T", "foo", "info", "t.raw"],
    ["-T", "foo", "-T", "bar*", "-T", "-baz", "info", "t.raw"],
    ["-T", "enable=a,file=/dev/null"],
    ["-T", "foo=1"],
    ["--version=3"],
    ["--help=1"],
    ["--", "info", "t.raw"],
    ["--"],
    ["-q", "create", "x.raw", "1M"],
    ["info", "-xU", "t.raw"],
    ["info", "-U\u00e9", "t.raw"],   # glibc scans bytes: optind stays on the cluster
    ["info", "--foo=bar", "t.raw"],
    ["create", "-xq", "x.raw", "1M"],
    ["map", "t.raw", "-xq"],
    ["convert", "-xO", "raw", "t.raw", "u.raw"],
]


@needs_qemu
@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a) or "(none)")
def test_global(tmp_path: Path, args: list[str]) -> None:
    check_same(tmp_path, args, SETUP)


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["--he"], ["-h", "info"],
                                  ["info", "-h"], ["create", "--help"]])
def test_help(tmp_path: Path, args: list[str]) -> None:
    """qemu-img's help text, with bdrv's version line and format list."""
    run = bdrv_img(tmp_path, *args)
    assert run.status == 0 and run.stderr == ""
    lines = run.stdout.splitlines()
    assert lines[0].startswith("qemu-img version ")
    assert lines[2] == "usage: qemu-img [standard options] command [command options]"
    formats = next(line for line in lines if line.startswith("Supported formats:")).split()
    assert {"file", "raw"} <= set(formats[2:])


@pytest.mark.parametrize("args", [["-V"], ["--version"], ["--ver"], ["-Vh"]])
def test_version(tmp_path: Path, args: list[str]) -> None:
    run = bdrv_img(tmp_path, *args)
    assert run.status == 0 and run.stderr == ""
    assert run.stdout.startswith("qemu-img version ")
    assert len(run.stdout.splitlines()) == 2


def test_main_is_reentrant(tmp_path: Path) -> None:
    """Repeated calls in one process leave no state (node names, open files) behind."""
    for _ in range(3):
        assert bdrv_img(tmp_path, "create", "-q", "a.raw", "1M").status == 0
        assert bdrv_img(tmp_path, "info", "--image-opts",
                        "driver=raw,node-name=n1,file.filename=a.raw").status == 0
        assert bdrv_img(tmp_path, "convert", "a.raw", "b.raw").status == 0
        assert bdrv_img(tmp_path, "resize", "-f", "raw", "b.raw", "+1M").status == 0
