"""Rate limiting for copies (convert -r, commit -r), as QEMU's ratelimit.h counts.

Time is cut into 100 ms slices, each allowing speed/10 bytes. A request that takes
the slice over its quota is let through, and the caller then waits for as many
slices as the bytes dispatched so far need, before a new slice starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SLICE_NS = 100_000_000

# The clock and the wait, replaceable as a pair (tests).
_now = time.monotonic_ns
_sleep = time.sleep


class RateLimit:
    def __init__(self, bytes_per_second: int, *,
                 clock: Callable[[], int] | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.quota = max(bytes_per_second * SLICE_NS / 1e9, 1) if bytes_per_second else 0
        self.clock = clock or _now
        self.sleep = sleep or _sleep
        self.slice_start = self.slice_end = 0
        self.dispatched = 0

    def delay_ns(self, nbytes: int) -> int:
        """How long to wait after dispatching `nbytes` (ratelimit_calculate_delay)."""
        if not self.quota:
            return 0
        now = self.clock()
        if self.slice_end < now:  # the last (maybe stretched) slice is over
            self.slice_start, self.slice_end, self.dispatched = now, now + SLICE_NS, 0
        self.dispatched += nbytes
        if self.dispatched < self.quota:
            return 0
        self.slice_end = self.slice_start + int(self.dispatched / self.quota * SLICE_NS)
        return self.slice_end - now

    def account(self, nbytes: int) -> None:
        """Dispatch `nbytes`, waiting first if the limit asks for it."""
        delay = self.delay_ns(nbytes)
        if delay > 0:
            self.sleep(delay / 1e9)
