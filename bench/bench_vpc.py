"""VHD benchmarks, run side by side in one process run (not a test: prints ratios).

1. `convert -O raw` of a 1 GiB fully written dynamic VHD: bdrv-img vs qemu-img.
2. Reading a 1 GiB three-layer differencing chain in 2 MiB requests: bdrv vs libvhdi.

Usage: python bench/bench_vpc.py [scratch-dir]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

GiB = 1 << 30
MiB = 1 << 20


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def bench_convert(d: Path) -> None:
    img = d / "d.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", str(img), "1G"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 1G", str(img)], check=True,
                   capture_output=True)
    q = timed(lambda: subprocess.run(["qemu-img", "convert", "-O", "raw", str(img),
                                      str(d / "q.raw")], check=True))
    b = timed(lambda: subprocess.run(["bdrv-img", "convert", "-O", "raw", str(img),
                                      str(d / "b.raw")], check=True))
    print(f"convert -O raw, 1 GiB dynamic: qemu-img {q:.2f}s, bdrv-img {b:.2f}s, "
          f"ratio {b / q:.2f}")


def bench_chain(d: Path) -> None:
    from vpc_helpers import open_chain, pyvhdi

    from bdrv.drivers.vpc.create import create
    from bdrv.graph import O_RDWR

    create(str(d / "l1.vhd"), {"size": 0, "backing_file": "d.vhd", "backing_fmt": "vpc"},
           print)
    blk = open_chain(d / "l1.vhd", O_RDWR)
    for off in range(0, 512 * MiB, 64 * MiB):
        blk.pwrite(off, b"\x11" * 64 * MiB)
    blk.close()
    create(str(d / "l2.vhd"), {"size": 0, "backing_file": "l1.vhd", "backing_fmt": "vpc"},
           print)
    blk = open_chain(d / "l2.vhd", O_RDWR)
    for off in range(256 * MiB, 768 * MiB, 4 * MiB):
        blk.pwrite(off, b"\x22" * 2 * MiB)
    blk.close()

    def ours() -> None:
        b = open_chain(d / "l2.vhd")
        for pos in range(0, b.getlength(), 2 * MiB):
            b.pread(pos, min(2 * MiB, b.getlength() - pos))
        b.close()

    def theirs() -> None:
        files = []
        for name in ("l2.vhd", "l1.vhd", "d.vhd"):
            f = pyvhdi.file()
            f.open(str(d / name))
            files.append(f)
        files[0].set_parent(files[1])
        files[1].set_parent(files[2])
        size = files[0].media_size
        for pos in range(0, size, 2 * MiB):
            files[0].read_buffer_at_offset(min(2 * MiB, size - pos), pos)
        for f in files:
            f.close()

    b, v = timed(ours), timed(theirs)
    print(f"read 1 GiB 3-layer differencing chain: bdrv {b:.2f}s, libvhdi {v:.2f}s, "
          f"ratio {b / v:.2f}")


def main() -> None:
    d = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    try:
        bench_convert(d)
        bench_chain(d)
    finally:
        if len(sys.argv) <= 1:
            shutil.rmtree(d)


if __name__ == "__main__":
    main()
