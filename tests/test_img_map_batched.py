"""bdrv-img map through the batched block status (whole L2 tables at once) against
real qemu-img 7.2: fragmented images, zero clusters (v2/v3), compressed clusters,
extended L2 with partial subclusters, 2- and 3-layer chains, odd --start-offset and
--max-length, 512-byte and 2 MiB clusters, damaged L1/L2 tables; both output formats,
also with tiny batches (chunk boundaries everywhere)."""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("img_oracle")
from img_oracle import bdrv_img, needs_qemu, qemu_img, sh  # noqa: E402

from bdrv.drivers.qcow2 import l2_runs  # noqa: E402
from bdrv.tools import img_map  # noqa: E402

pytestmark = needs_qemu

K, M = 1024, 1024 * 1024


def _io(d: Path, name: str, cmds: list[str], fmt: str = "qcow2") -> None:
    argv = ["qemu-io", "-f", fmt]
    for cmd in cmds:
        argv += ["-c", cmd]
    sh(d, *argv, name)


def _create(d: Path, name: str, size: str, *opts: str) -> None:
    sh(d, "qemu-img", "create", "-q", "-f", "qcow2", *opts, name, size)


def _fragmented(d: Path) -> None:
    _create(d, "frag.qcow2", "8M", "-o", "cluster_size=4k")
    order = list(range(0, 2048, 2))
    random.Random(3).shuffle(order)
    cmds = [f"write -P 0x44 {i * 4 * K} 4k" for i in order[:700]]
    cmds += ["write -P 5 6M 256k", "write -z 7M 64k", "write -P 6 7200k 12k"]
    _io(d, "frag.qcow2", cmds)


def _zeros(d: Path) -> None:
    for name, compat in (("zero3.qcow2", "1.1"), ("zero2.qcow2", "0.10")):
        _create(d, name, "4M", "-o", f"compat={compat},cluster_size=64k")
        _io(d, name, ["write -P 1 0 256k", "write -z 64k 64k", "write -z -u 192k 64k",
                      "write -z 1M 128k", "write -P 2 2M 64k", "discard 2M 64k",
                      "write -P 3 3M 64k", "write -z 3M 64k"])


def _compressed(d: Path) -> None:
    # Mostly plain data, so that the few small compressed clusters do not look like
    # metadata preallocation (which would take the per-extent path).
    _create(d, "comp.qcow2", "16M", "-o", "cluster_size=64k")
    _io(d, "comp.qcow2", ["write -c -P 7 0 64k", "write -c -P 8 64k 64k", "write -P 9 128k 64k",
                          "write -c -P 1 1M 64k", "write -z 2M 64k", "write -c -P 2 3M 64k",
                          "write -P 3 8M 8M"])


def _extended(d: Path) -> None:
    # As above: the partly written clusters are sparse in the file, the last 8M not.
    _create(d, "ext.qcow2", "16M", "-o", "cluster_size=64k,extended_l2=on")
    _io(d, "ext.qcow2", ["write -P 1 0 2k", "write -P 2 6k 4k", "write -z 12k 2k",
                         "write -P 3 64k 64k", "write -z 130k 4k", "write -P 4 200k 1k",
                         "write -P 5 1M 256k", "discard 1M 2k", "write -z -u 1100k 64k",
                         "write -P 6 5M 30k", "write -P 7 8M 8M"])


def _chains(d: Path) -> None:
    _create(d, "base.qcow2", "4M", "-o", "cluster_size=4k")
    _io(d, "base.qcow2", ["write -P 1 0 1M", "write -P 2 2M 512k", "write -z 3M 64k"])
    _create(d, "mid.qcow2", "6M", "-b", "base.qcow2", "-F", "qcow2", "-o",
            "cluster_size=64k")
    _io(d, "mid.qcow2", ["write -P 3 128k 64k", "write -z 512k 128k", "write -P 4 4M 64k",
                         "discard 2M 64k"])
    _create(d, "top.qcow2", "8M", "-b", "mid.qcow2", "-F", "qcow2", "-o",
            "cluster_size=512")
    _io(d, "top.qcow2", ["write -P 5 4k 1k", "write -P 6 600k 8k", "write -z 2100k 4k",
                         "write -P 7 7M 4k"])
    # Two layers; the backing file is shorter, then longer.
    _create(d, "short.qcow2", "1M", "-o", "cluster_size=4k")
    _io(d, "short.qcow2", ["write -P 1 0 1M"])
    _create(d, "over_short.qcow2", "3M", "-b", "short.qcow2", "-F", "qcow2")
    _io(d, "over_short.qcow2", ["write -P 2 100k 4k", "write -P 3 2M 64k"])
    _create(d, "long.qcow2", "16M", "-o", "cluster_size=4k")
    _io(d, "long.qcow2", ["write -P 1 0 16M"])
    _create(d, "over_long.qcow2", "2M", "-b", "long.qcow2", "-F", "qcow2", "-o",
            "cluster_size=4k")
    _io(d, "over_long.qcow2", ["write -P 2 40k 8k", "write -z 1M 4k"])


def _clusters(d: Path) -> None:
    _create(d, "c512.qcow2", "2M", "-o", "cluster_size=512")
    _io(d, "c512.qcow2", [f"write -P 1 {i * 1536} 512" for i in range(300)]
        + ["write -P 2 1M 100k", "write -z 1500k 3k"])
    _create(d, "c2m.qcow2", "64M", "-o", "cluster_size=2M")
    _io(d, "c2m.qcow2", ["write -P 1 0 1k", "write -P 2 6M 4M", "write -z 20M 2M",
                         "write -P 3 40M 1k"])
    _create(d, "odd.qcow2", "1000001", "-o", "cluster_size=4k")
    _io(d, "odd.qcow2", ["write -P 1 972k 4k", "write -P 3 976k 1k", "write -P 2 4k 4k"])
    _create(d, "c2m_ext.qcow2", "64M", "-o", "cluster_size=2M,extended_l2=on")
    _io(d, "c2m_ext.qcow2", ["write -P 1 0 64k", "write -P 2 6M 4M", "write -z 20M 128k",
                             "write -P 3 40M 1k"])


def _l1_l2(path: Path) -> tuple[int, list[int]]:
    data = path.read_bytes()
    l1_size, l1_offset = struct.unpack(">IQ", data[36:48])
    l1 = list(struct.unpack(f">{l1_size}Q", data[l1_offset : l1_offset + 8 * l1_size]))
    return l1_offset, l1


def _poke(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(">Q", value))


def _damaged(d: Path) -> None:
    """Images whose second L2 table (or its L1 entry) is bad, data before and after."""
    def make(name: str, opts: str = "cluster_size=4k") -> tuple[Path, int, list[int]]:
        _create(d, name, "3M", "-o", opts)
        _io(d, name, ["write -P 1 0 8k", "write -P 2 100k 4k", "write -P 3 2M 8k",
                      "write -P 4 2060k 4k", "write -P 5 2100k 4k"])
        path = d / name
        l1_offset, l1 = _l1_l2(path)
        return path, l1_offset, l1

    mask = 0x00FFFFFFFFFFFE00
    path, l1_offset, l1 = make("bad_l1.qcow2")
    _poke(path, l1_offset, l1[0] + 512)  # unaligned L2 table offset (first table)
    path, l1_offset, l1 = make("bad_l1b.qcow2")
    _poke(path, l1_offset + 8, l1[0] | 512)  # the second table's, unaligned
    path, _, l1 = make("bad_l2.qcow2")
    _poke(path, (l1[0] & mask) + 8 * 1, (1 << 20) + 512)  # cluster 1: unaligned host
    path, _, l1 = make("bad_l2b.qcow2")
    _poke(path, (l1[1] & mask) + 8 * 20, (1 << 20) + 512)  # the same, second table
    path, _, l1 = make("v2zero.qcow2", "cluster_size=4k,compat=0.10")
    _poke(path, (l1[1] & mask) + 8 * 12, 1)  # a zero cluster, which v2 does not have
    path, _, l1 = make("bad_ext.qcow2", "cluster_size=64k,extended_l2=on")
    _poke(path, (l1[0] & mask) + 16 * 3 + 8, 1)  # unallocated cluster, alloc bit set
    path, l1_offset, l1 = make("past_eof.qcow2")
    _poke(path, l1_offset + 8, 1 << 40)  # the second L2 table lies beyond the file end


@pytest.fixture(scope="module")
def imgdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mapbatch")
    for make in (_fragmented, _zeros, _compressed, _extended, _chains, _clusters, _damaged):
        make(d)
    return d


IMAGES = ["frag.qcow2", "zero3.qcow2", "zero2.qcow2", "comp.qcow2", "ext.qcow2",
          "base.qcow2", "mid.qcow2", "top.qcow2", "over_short.qcow2", "over_long.qcow2",
          "c512.qcow2", "c2m.qcow2", "c2m_ext.qcow2", "odd.qcow2"]
DAMAGED = ["bad_l1.qcow2", "bad_l1b.qcow2", "bad_l2.qcow2", "bad_l2b.qcow2",
           "v2zero.qcow2", "bad_ext.qcow2", "past_eof.qcow2"]
RANGES = [[], ["-s", "1000", "-l", "777777"], ["-s", "4095", "-l", "2M"],
          ["-s", "3000k", "-l", "3001k"], ["-s", "2049k", "-l", "1"], ["-s", "1M"]]
FORMATS = [["--output=json"], ["--output=human"]]


def _same(d: Path, args: list[str]) -> None:
    expected = qemu_img(d, "map", *args)
    got = bdrv_img(d, "map", *args)
    assert got == expected, f"qemu-img map {' '.join(args)}"


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda a: a[0][9:])
@pytest.mark.parametrize("image", IMAGES)
def test_map_batched(imgdir: Path, image: str, fmt: list[str]) -> None:
    for rng in RANGES:
        _same(imgdir, [*fmt, *rng, image])


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda a: a[0][9:])
@pytest.mark.parametrize("image", ["frag.qcow2", "ext.qcow2", "top.qcow2", "c512.qcow2",
                                   "comp.qcow2", "over_short.qcow2", "bad_l2b.qcow2"])
def test_map_tiny_batches(imgdir: Path, image: str, fmt: list[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of a few (sub)clusters: runs cut and carried over everywhere."""
    for units in (1, 7, 64):
        monkeypatch.setattr(l2_runs, "MAX_UNITS", units)
        for rng in RANGES[:3]:
            _same(imgdir, [*fmt, *rng, image])


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda a: a[0][9:])
@pytest.mark.parametrize("image", DAMAGED)
def test_map_damaged(imgdir: Path, image: str, fmt: list[str]) -> None:
    _same(imgdir, [*fmt, image])
    _same(imgdir, [*fmt, "-s", "2M", image])


def test_batched_path_taken(imgdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sound images never take the per-extent path; a damaged table does."""
    calls: list[int] = []
    per_extent = img_map.block_status_entry

    def counted(node: object, offset: int, length: int) -> img_map.MapEntry:
        calls.append(offset)
        return per_extent(node, offset, length)  # type: ignore[arg-type]

    monkeypatch.setattr(img_map, "block_status_entry", counted)
    for image in ("frag.qcow2", "zero2.qcow2", "zero3.qcow2", "top.qcow2", "ext.qcow2",
                  "comp.qcow2", "c512.qcow2", "c2m.qcow2", "over_short.qcow2"):
        assert bdrv_img(imgdir, "map", "--output=json", image).status == 0
    assert calls == []
    bdrv_img(imgdir, "map", "--output=json", "bad_l2b.qcow2")
    assert calls and min(calls) >= 2 * M


def test_raw_backing_keeps_per_extent_path(tmp_path: Path) -> None:
    sh(tmp_path, "qemu-img", "create", "-q", "-f", "raw", "base.raw", "2M")
    _io(tmp_path, "base.raw", ["write -P 1 64k 64k"], fmt="raw")
    _create(tmp_path, "top.qcow2", "2M", "-b", "base.raw", "-F", "raw")
    _io(tmp_path, "top.qcow2", ["write -P 2 1M 4k"])
    for fmt in FORMATS:
        _same(tmp_path, [*fmt, "top.qcow2"])


def test_odd_file_names(tmp_path: Path) -> None:
    """Human lines name the file: '%', spaces and non-ASCII pass through as they are."""
    _create(tmp_path, "b%s ñ.qcow2", "1M", "-o", "cluster_size=4k")
    _io(tmp_path, "b%s ñ.qcow2", ["write -P 1 0 8k", "write -P 2 64k 4k"])
    _create(tmp_path, "t%d.qcow2", "1M", "-b", "b%s ñ.qcow2", "-F", "qcow2", "-o",
            "cluster_size=4k")
    _io(tmp_path, "t%d.qcow2", ["write -P 3 4k 8k", "write -P 4 100k 4k"])
    for fmt in FORMATS:
        _same(tmp_path, [*fmt, "t%d.qcow2"])
