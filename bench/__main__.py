"""`python -m bench [--quick] [--only qcow2|check|vpc] [--dir DIR]`: run the benchmarks, print
bdrv_time / qemu_time per benchmark, then a summary. `tox -e bench` runs this."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from . import bench_check, bench_qcow2
from .common import Measurement, require_tools


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--only", choices=("qcow2", "check", "vpc"), help="one group of benchmarks")
    ap.add_argument("--dir", type=Path, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    require_tools()
    d = args.dir or Path(tempfile.mkdtemp(prefix="bdrv-bench-"))
    d.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: list[Measurement] = []
    try:
        if args.only in (None, "qcow2"):
            print("== qcow2", flush=True)
            results += bench_qcow2.run_all(d, args.quick)
        if args.only in (None, "check"):
            print("== check", flush=True)
            results += bench_check.run_all(d, args.quick)
        if args.only in (None, "vpc") and not args.quick:
            from . import bench_vpc  # pyvhdi is needed only here

            print("== vpc", flush=True)
            bench_vpc.bench_convert(d)
            bench_vpc.bench_chain(d)
    finally:
        if args.dir is None:
            shutil.rmtree(d, ignore_errors=True)
    print(f"\n== summary ({time.perf_counter() - start:.0f}s)")
    for m in results:
        print(m.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
