"""bdrv.ratelimit against the arithmetic of QEMU's ratelimit.h (100 ms slices), on a
fake clock; and convert -r / commit -r pacing a real copy (a lower bound on the
sleeping asked for, never on elapsed time)."""

from __future__ import annotations

import sys
from pathlib import Path

from bdrv.ratelimit import SLICE_NS, RateLimit

sys.path.insert(0, str(Path(__file__).parent))
from img_oracle import bdrv_img, needs_qemu, sh  # noqa: E402


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += int(seconds * 1e9)


def test_unlimited_never_waits() -> None:
    clock = FakeClock()
    limit = RateLimit(0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limit.account(1 << 30)
    assert clock.slept == []


def test_quota_per_slice() -> None:
    clock = FakeClock()
    limit = RateLimit(10 * 1024 * 1024, clock=clock)  # 1 MiB per 100 ms slice
    assert limit.delay_ns(512 * 1024) == 0
    assert limit.delay_ns(256 * 1024) == 0
    # Over the quota: wait until the dispatched bytes' share of slices has passed.
    assert limit.delay_ns(768 * 1024) == int(1.5 * SLICE_NS)
    clock.now += int(1.5 * SLICE_NS)
    # The stretched slice ends exactly now: still in it, so one more byte is counted
    # against it and waits its share.
    assert limit.delay_ns(1) == int((1536 * 1024 + 1) / (1024 * 1024) * SLICE_NS) \
        - int(1.5 * SLICE_NS)
    clock.now += int(1.5 * SLICE_NS)
    assert limit.delay_ns(1) == 0  # a new slice


def test_long_run_rate() -> None:
    clock = FakeClock()
    limit = RateLimit(4 * 1024 * 1024, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(64):
        limit.account(1024 * 1024)
    elapsed = (clock.now - start) / 1e9
    assert 15.5 <= elapsed <= 16.1  # 64 MiB at 4 MiB/s


def test_tiny_rate_keeps_quota_of_one_byte() -> None:
    clock = FakeClock()
    limit = RateLimit(1, clock=clock)
    assert limit.quota == 1
    assert limit.delay_ns(2) == 2 * SLICE_NS


@needs_qemu
def test_convert_and_commit_are_paced(tmp_path: Path, monkeypatch) -> None:
    from bdrv import ratelimit

    clock = FakeClock()  # time passes only by sleeping
    monkeypatch.setattr(ratelimit, "_now", clock)
    monkeypatch.setattr(ratelimit, "_sleep", clock.sleep)
    asked = clock.slept
    sh(tmp_path, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "8M")
    sh(tmp_path, "qemu-io", "-c", "write -P 1 0 4M", "base.qcow2")
    assert bdrv_img(tmp_path, "convert", "-r", "1M", "-O", "raw", "base.qcow2",
                    "out.raw").status == 0
    assert 3.5 <= sum(asked) <= 4.2  # 4 MiB at 1 MiB/s, the first slice free
    asked.clear()
    sh(tmp_path, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
       "qcow2", "top.qcow2")
    sh(tmp_path, "qemu-io", "-c", "write -P 2 0 2M", "top.qcow2")
    assert bdrv_img(tmp_path, "commit", "-r", "1M", "top.qcow2").status == 0
    assert 1.5 <= sum(asked) <= 2.2
    asked.clear()
    assert bdrv_img(tmp_path, "convert", "-O", "raw", "base.qcow2", "out2.raw").status == 0
    assert asked == []
