"""Keep big I/O buffers in the process instead of handing them back to the kernel.

The tools read and write in runs of up to megabytes, each a fresh bytes object. With
glibc's default thresholds every such buffer is mapped anew (or the heap top trimmed
and regrown), so each run pays for page faults and for the kernel zeroing the pages:
that was most of `bdrv-img convert`'s system time. Raising the thresholds lets freed
buffers be reused. Called once by each console script; a no-op off glibc.
"""

from __future__ import annotations

import ctypes

# mallopt() parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

_TRIM_THRESHOLD = 256 << 20
_TOP_PAD = 64 << 20
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit hosts is 32 MiB


def tune_malloc() -> None:
    try:
        # The interpreter's own symbols include libc's; ctypes.util.find_library would
        # import subprocess and friends for nothing.
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mallopt(M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    mallopt(M_TOP_PAD, _TOP_PAD)
