"""bdrv-img info and check against real qemu-img 7.2: human and JSON output, errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import check_same, images, needs_qemu, sh  # noqa: E402

pytestmark = needs_qemu


def SETUP(d: Path) -> None:  # noqa: N802
    images(("t.raw", "1M", ["write -P 1 0 64k"]))(d)
    sh(d, "truncate", "-s", "0", "empty.raw")
    (d / "odd.raw").write_bytes(b"abc")
    os.mkdir(d / "dir")


RAW_JSON = 'json:{"driver":"raw","file":{"driver":"file","filename":"t.raw"}}'
RAW_OFFSET_JSON = 'json:{"driver":"raw","offset":1024,"file":{"driver":"file","filename":"t.raw"}}'

INFO = [
    [],
    ["t.raw", "t.raw"],
    ["t.raw"],
    ["nonexist"],
    ["dir"],
    [""],
    ["foo:bar"],
    ["file:t.raw"],
    ["json:{"],
    ["json:[]"],
    [RAW_JSON],
    [RAW_OFFSET_JSON],
    ["-f", "raw", "t.raw"],
    ["-f", "file", "--output=json", "t.raw"],
    ["-f", "foo", "t.raw"],
    ["--output=json", "t.raw"],
    ["--output", "json", "t.raw"],
    ["--output=human", "t.raw"],
    ["--output=xml", "t.raw"],
    ["--out=json", "t.raw"],
    ["--o=json", "t.raw"],
    ["-U", "t.raw"],
    ["--force-share", "--output=json", "t.raw"],
    ["--backing-chain", "t.raw"],
    ["--backing", "--output=json", "t.raw"],
    ["empty.raw"],
    ["--output=json", "empty.raw"],
    ["odd.raw"],
    ["--output=json", "odd.raw"],
    ["--image-opts", "driver=raw,file.filename=t.raw"],
    ["--image-opts", "--output=json", "driver=raw,file.filename=t.raw"],
    ["--image-opts", "file.filename=t.raw"],
    ["--image-opts", "t.raw"],
    ["--image-opts", RAW_JSON],
    ["--image-opts", "-f", "raw", "t.raw"],
    ["--image-opts", "driver=raw,file.filename=t.raw,offset=512"],
    ["--image-opts", "--output=json", "driver=raw,file.filename=t.raw,offset=512"],
    ["--image-opts", "--backing-chain", "--output=json", "driver=raw,size=512,file.filename=t.raw"],
    ["--image-opts", "driver=file,filename=t.raw"],
    ["--image-opts", "driver=raw,file.filename=t.raw,foo=1"],
    ["--image-opts", "driver=raw,file.filename=t.raw,,x"],
    ["--image-opts", "driver=raw,file.filename=t.raw,id=foo"],
    ["--image-opts", "driver=raw,file.filename=t.raw,force-share"],
    ["--image-opts", "-U", "driver=raw,file.filename=t.raw,force-share=off"],
    ["--image-opts", "-U", "driver=raw,file.filename=t.raw,force-share=on"],
    ["--image-opts", ""],
    ["-x", "t.raw"],
    ["-xU", "t.raw"],
    ["-Ux", "t.raw"],
    ["t.raw", "-xU"],
    ["t.raw", "-f"],
    ["-Uf"],
    ["t.raw", "--output"],
    ["t.raw", "--image-opts=1"],
    ["--backing-chain=x", "t.raw"],
    ["t.raw", "--obj"],
    ["--", "t.raw"],
]


@pytest.mark.parametrize("args", INFO, ids=lambda a: " ".join(a) or "(none)")
def test_info(tmp_path: Path, args: list[str]) -> None:
    check_same(tmp_path, ["info", *args], SETUP)


CHECK = [
    [],
    ["t.raw"],
    ["-f", "raw", "t.raw"],
    ["-r", "leaks", "t.raw"],
    ["-r", "all", "-f", "raw", "t.raw"],
    ["-r", "foo", "t.raw"],
    ["-r", "foo"],
    ["-r", "all", "-U", "t.raw"],
    ["--output=json", "t.raw"],
    ["--output=xml", "t.raw"],
    ["--output=xml", "nonexist"],
    ["-q", "t.raw"],
    ["-U", "t.raw"],
    ["-T", "none", "t.raw"],
    ["-T", "foo", "t.raw"],
    ["nonexist"],
    ["--image-opts", "driver=raw,file.filename=t.raw"],
    ["t.raw", "--rep"],
    ["t.raw", "--re=leaks"],
    ["t.raw", "t.raw"],
]


@pytest.mark.parametrize("args", CHECK, ids=lambda a: " ".join(a) or "(none)")
def test_check(tmp_path: Path, args: list[str]) -> None:
    check_same(tmp_path, ["check", *args], SETUP)
