"""qcow2 benchmarks: bdrv-img/bdrv-io against qemu-img/qemu-io 7.2, same inputs, same run.

(a) `convert -O raw` of a fully allocated qcow2 (1 GiB; --quick: 128 MiB)
(b) the same with 50% of the clusters allocated across a two-layer chain
(c) random 4 KiB writes that each allocate a cluster, one qemu-io/bdrv-io process
    reading the commands from stdin (20,000; --quick: 2,000)
(d) `map --output=json` of an image with 100,000 extents (--quick: 10,000): every
    other 4 KiB cluster allocated, in a shuffled order so host offsets are fragmented

Inputs are made with QEMU's tools, so both sides read the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

from .common import (
    BDRV_IMG,
    BDRV_IO,
    QEMU_IMG,
    QEMU_IO,
    GiB,
    KiB,
    Measurement,
    MiB,
    best_of,
    run,
)


def _create(path: Path, size: int, *opts: str) -> None:
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", *opts, str(path), str(size)])


def _qemu_io_script(path: Path, commands: list[str]) -> None:
    run([QEMU_IO, "-f", "qcow2", str(path)], stdin="\n".join(commands + ["quit"]).encode())


def _convert(name: str, src: Path, d: Path, repeat: int, target: float) -> Measurement:
    out = d / "out.raw"

    def clean() -> None:
        out.unlink(missing_ok=True)

    argv = ["convert", "-f", "qcow2", "-O", "raw", str(src), str(out)]
    qemu = best_of(repeat, [QEMU_IMG, *argv], before=clean)
    bdrv = best_of(repeat, [BDRV_IMG, *argv], before=clean)
    clean()
    return Measurement(name, bdrv, qemu, target)


def bench_convert_full(d: Path, size: int, repeat: int) -> Measurement:
    src = d / "full.qcow2"
    _create(src, size)
    run([QEMU_IO, "-f", "qcow2", "-c", f"write -P 0x5a 0 {size}", str(src)])
    m = _convert(f"(a) convert -O raw, {size // MiB} MiB fully allocated", src, d, repeat, 1.5)
    src.unlink()
    return m


def bench_convert_chain(d: Path, size: int, repeat: int) -> Measurement:
    cluster = 64 * KiB
    n = size // cluster
    base, top = d / "base.qcow2", d / "top.qcow2"
    _create(base, size)
    _qemu_io_script(base, [f"write -P 0x11 {i * cluster} {cluster}" for i in range(0, n, 4)])
    _create(top, size, "-b", base.name, "-F", "qcow2")
    _qemu_io_script(top, [f"write -P 0x22 {i * cluster} {cluster}" for i in range(2, n, 4)])
    m = _convert(f"(b) convert -O raw, {size // MiB} MiB, 50% allocated in 2 layers",
                 top, d, repeat, 1.5)
    base.unlink()
    top.unlink()
    return m


def bench_random_writes(d: Path, count: int) -> Measurement:
    cluster = 64 * KiB
    clusters = count * 2
    rng = random.Random(20240101)
    picks = rng.sample(range(clusters), count)
    script = [f"write -P 0x33 {c * cluster + rng.randrange(16) * 4 * KiB} 4k" for c in picks]
    stdin = "\n".join(script + ["quit"]).encode()
    times = {}
    for tool in (QEMU_IO, BDRV_IO):
        img = d / "rw.qcow2"
        _create(img, clusters * cluster)
        times[tool] = run([tool, "-f", "qcow2", str(img)], stdin=stdin)
        img.unlink()
    return Measurement(f"(c) {count} random 4 KiB allocating writes, one process",
                       times[BDRV_IO], times[QEMU_IO])


def bench_map(d: Path, extents: int, repeat: int) -> Measurement:
    cluster = 4 * KiB
    img = d / "frag.qcow2"
    _create(img, extents * cluster, "-o", "cluster_size=4k")
    order = list(range(0, extents, 2))
    random.Random(7).shuffle(order)
    _qemu_io_script(img, [f"write -P 0x44 {i * cluster} 4k" for i in order])
    argv = ["map", "-f", "qcow2", "--output=json", str(img)]
    qemu = best_of(repeat, [QEMU_IMG, *argv])
    bdrv = best_of(repeat, [BDRV_IMG, *argv])
    img.unlink()
    return Measurement(f"(d) map --output=json, {extents} extents", bdrv, qemu, 2.0)


def run_all(d: Path, quick: bool) -> list[Measurement]:
    size = 128 * MiB if quick else GiB
    repeat = 1 if quick else 2
    results = []
    for bench in (lambda: bench_convert_full(d, size, repeat),
                  lambda: bench_convert_chain(d, size, repeat),
                  lambda: bench_random_writes(d, 2000 if quick else 20000),
                  lambda: bench_map(d, 10000 if quick else 100000, repeat)):
        m = bench()
        print(m.line(), flush=True)
        results.append(m)
    return results
