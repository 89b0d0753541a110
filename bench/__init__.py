"""Side-by-side benchmarks of bdrv against QEMU 7.2 (`python -m bench`, `tox -e bench`).

Not tests: each benchmark runs bdrv's tool and QEMU's on the same input in the same run
and prints the ratio bdrv_time / qemu_time. Nothing here runs in the test suite.
"""
