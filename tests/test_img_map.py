"""bdrv-img map against real qemu-img 7.2: extents, merging, ranges, both formats."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import check_same, images, needs_qemu, sh  # noqa: E402

pytestmark = needs_qemu


def SETUP(d: Path) -> None:  # noqa: N802
    images(("m.raw", "4M", ["write -P 1 0 64k", "write -P 2 1M 64k", "write -z 1088k 64k",
                            "write -P 3 3M 4k", "write -P 0 2M 4k"]))(d)
    sh(d, "truncate", "-s", "0", "empty.raw")
    sh(d, "truncate", "-s", "1M", "sparse.raw")
    (d / "odd.raw").write_bytes(b"abc")
    (d / "odd2.raw").write_bytes(b"x" * 5000)
    sh(d, "qemu-img", "create", "-q", "-o", "preallocation=full", "full.raw", "1M")


CASES = [
    ["m.raw"],
    ["--output=json", "m.raw"],
    ["--output=human", "m.raw"],
    ["--output=xml", "m.raw"],
    ["-f", "raw", "m.raw"],
    ["-f", "file", "m.raw"],
    ["-f", "file", "--output=json", "m.raw"],
    ["-U", "m.raw"],
    ["--start-offset=1M", "m.raw"],
    ["--start-offset", "1M", "--max-length", "100k", "--output=json", "m.raw"],
    ["-s", "4096", "-l", "100", "m.raw"],
    ["-s", "0x10k", "--output=json", "m.raw"],
    ["--start-offset=5M", "m.raw"],
    ["--start-offset=5M", "--output=json", "m.raw"],
    ["--max-length=0", "m.raw"],
    ["--max-length=0", "--output=json", "m.raw"],
    ["--start-offset=abc", "m.raw"],
    ["--start-offset=-1", "m.raw"],
    ["--max-length=9E", "m.raw"],
    ["--image-opts", "-f", "raw", "m.raw"],
    ["--image-opts", "driver=raw,file.filename=m.raw,offset=4096"],
    ["--image-opts", "--output=json", "driver=raw,file.filename=m.raw,offset=4096"],
    ["--image-opts", "--output=json", "driver=raw,file.filename=m.raw,size=1536,offset=1048000"],
    ["empty.raw"],
    ["--output=json", "empty.raw"],
    ["odd.raw"],
    ["--output=json", "odd.raw"],
    ["--output=json", "odd2.raw"],
    ["sparse.raw"],
    ["--output=json", "sparse.raw"],
    ["full.raw"],
    ["--output=json", "full.raw"],
    [],
    ["nonexist"],
    ["m.raw", "m.raw"],
]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a) or "(none)")
def test_map(tmp_path: Path, args: list[str]) -> None:
    check_same(tmp_path, ["map", *args], SETUP)
