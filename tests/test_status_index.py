"""status_index.ChainStatus (block status from run indexes, used by convert) against
request.block_status_above(), extent by extent: the same flags and pnum for every
query on fragmented images, zero clusters (v2/v3), compressed clusters, chains with
shorter and longer backing files, 512-byte to 2 MiB clusters; on damaged tables it
either agrees or declines (None), never answers differently. Also convert itself on
these images, against qemu-img 7.2's output."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import bdrv_img, needs_qemu, qemu_img  # noqa: E402
from test_img_map_batched import (  # noqa: E402
    DAMAGED,
    IMAGES,
    _chains,
    _clusters,
    _compressed,
    _damaged,
    _extended,
    _fragmented,
    _zeros,
)

from bdrv.backend import Backend  # noqa: E402
from bdrv.errors import BlockError  # noqa: E402
from bdrv.request import (  # noqa: E402
    BLOCK_ALLOCATED,
    BLOCK_DATA,
    BLOCK_EOF,
    BLOCK_ZERO,
    block_status_above,
)
from bdrv.status_index import ChainStatus  # noqa: E402

pytestmark = needs_qemu

FLAGS = BLOCK_ALLOCATED | BLOCK_DATA | BLOCK_ZERO | BLOCK_EOF
LENGTHS = [1, 512, 4096, 65536, 1 << 20, 2 << 20, 1 << 30]


@pytest.fixture(scope="module")
def imgdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("statusindex")
    for make in (_fragmented, _zeros, _compressed, _extended, _chains, _clusters, _damaged):
        make(d)
    return d


def _per_extent(top, base, offset: int, length: int) -> tuple[int, int] | None:
    try:
        st, _ = block_status_above(top, base, offset, length)
    except BlockError:
        return None
    return st.flags & FLAGS, st.pnum


def _queries(size: int, seed: int) -> list[tuple[int, int]]:
    """A convert-like walk (each query where the last answer ended) is built by the
    caller; these are random ones on top, at odd offsets too."""
    rng = random.Random(seed)
    out = []
    for _ in range(300):
        offset = rng.randrange(size) & ~rng.choice([0, 511, 4095])
        out.append((offset, rng.choice(LENGTHS)))
    return out


def _compare(path: Path, damaged: bool) -> int:
    """Queries answered by the index (and checked); fails on any disagreement."""
    blk = Backend.open(str(path), {}, 0)
    try:
        top = blk.node
        size = top.getlength()
        answered = 0
        backing = top.backing
        for base in ([None, backing.node] if backing is not None else [None]):
            chain = ChainStatus.build(top, base)
            if chain is None:
                assert "ext" in path.name, f"{path.name}: no index"
                continue
            walk: list[tuple[int, int]] = []
            offset = 0
            for i in range(100000):
                if offset >= size:
                    break
                length = LENGTHS[i % len(LENGTHS)]
                expected = _per_extent(top, base, offset, length)
                got = chain.above(offset, length)
                walk.append((offset, length))
                if expected is None:
                    assert got is None, (path.name, offset, length)
                    break
                offset += expected[1]
            for offset, length in walk + _queries(size, len(path.name)):
                got = chain.above(offset, length)
                expected = _per_extent(top, base, offset, length)
                if got is None:
                    assert damaged, (path.name, base is None, offset, length)
                    continue
                assert expected is not None, (path.name, offset, length)
                assert (got[0] & FLAGS, got[1]) == expected, (path.name, base is None,
                                                               offset, length)
                answered += 1
        return answered
    finally:
        blk.close()


@pytest.mark.parametrize("image", IMAGES)
def test_same_as_per_extent(imgdir: Path, image: str) -> None:
    answered = _compare(imgdir / image, damaged=False)
    assert answered > 0 or "ext" in image


@pytest.mark.parametrize("image", DAMAGED)
def test_damaged_agrees_or_declines(imgdir: Path, image: str) -> None:
    _compare(imgdir / image, damaged=True)


@pytest.mark.parametrize("image", ["frag.qcow2", "zero2.qcow2", "comp.qcow2", "top.qcow2",
                                   "over_short.qcow2", "over_long.qcow2", "c512.qcow2",
                                   "bad_l2b.qcow2"])
@pytest.mark.parametrize("opts", [["-O", "raw"], ["-O", "qcow2"],
                                  ["-O", "qcow2", "-S", "0"], ["-O", "qcow2", "-c"]],
                         ids=["raw", "qcow2", "S0", "compressed"])
def test_convert_same_file(imgdir: Path, image: str, opts: list[str],
                           tmp_path: Path) -> None:
    """convert through the index writes the file qemu-img 7.2 writes, byte for byte
    (or fails as it does, on the damaged image)."""
    src = str(imgdir / image)
    expected = qemu_img(tmp_path, "convert", "-f", "qcow2", *opts, src, "q.img")
    got = bdrv_img(tmp_path, "convert", "-f", "qcow2", *opts, src, "b.img")
    assert (got.status, got.stdout, got.stderr) == \
        (expected.status, expected.stdout, expected.stderr)
    if expected.status == 0:
        assert (tmp_path / "b.img").read_bytes() == (tmp_path / "q.img").read_bytes()
