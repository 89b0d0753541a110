"""`check` benchmarks: bdrv-img against qemu-img 7.2 on the same images, same run.

(e) an image with 1,000,000 allocated 512-byte clusters (512 MiB of data;
    --quick: 100,000)
(f) an image of 4 KiB clusters (1 GiB; --quick: 128 MiB) with 5 internal snapshots,
    each followed by rewriting a tenth of the clusters, so refcounts above 1 and
    OFLAG_COPIED are all over the tables

Inputs are made with QEMU's tools, so both sides read the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

from .common import BDRV_IMG, QEMU_IMG, QEMU_IO, GiB, KiB, Measurement, MiB, best_of, run


def bench_check_many_clusters(d: Path, clusters: int, repeat: int) -> Measurement:
    img = d / "many.qcow2"
    size = clusters * 512
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(img),
         str(size)])
    run([QEMU_IO, "-f", "qcow2", "-c", f"write -P 0x5a 0 {size}", str(img)])
    m = _check(f"(e) check, {clusters} allocated 512-byte clusters", img, repeat)
    img.unlink()
    return m


def bench_check_snapshots(d: Path, size: int, repeat: int) -> Measurement:
    img = d / "snaps.qcow2"
    cluster = 4 * KiB
    n = size // cluster
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", str(img),
         str(size)])
    run([QEMU_IO, "-f", "qcow2", "-c", f"write -P 0x11 0 {size}", str(img)])
    rng = random.Random(5)
    for s in range(5):
        run([QEMU_IMG, "snapshot", "-c", f"snap{s}", str(img)])
        script = [f"write -P {0x20 + s} {c * cluster} {cluster}"
                  for c in rng.sample(range(n), n // 10)]
        run([QEMU_IO, "-f", "qcow2", str(img)],
            stdin="\n".join(script + ["quit"]).encode())
    m = _check(f"(f) check, {size // MiB} MiB of 4 KiB clusters, 5 internal snapshots", img, repeat)
    img.unlink()
    return m


def _check(name: str, img: Path, repeat: int) -> Measurement:
    argv = ["check", "-f", "qcow2", str(img)]
    qemu = best_of(repeat, [QEMU_IMG, *argv])
    bdrv = best_of(repeat, [BDRV_IMG, *argv])
    return Measurement(name, bdrv, qemu, 2.0)


def run_all(d: Path, quick: bool) -> list[Measurement]:
    repeat = 1 if quick else 3
    results = []
    for bench in (lambda: bench_check_many_clusters(d, 100_000 if quick else 1_000_000,
                                                    repeat),
                  lambda: bench_check_snapshots(d, 128 * MiB if quick else GiB, repeat)):
        m = bench()
        print(m.line(), flush=True)
        results.append(m)
    return results

