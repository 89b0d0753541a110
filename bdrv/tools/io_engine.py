"""How qemu-io's requests run and complete, so that output order matches QEMU's.

bdrv itself is synchronous, but qemu-io's `aio_read`/`aio_write` only *submit* a request;
its result is printed when QEMU's event loop later sees it complete, and that is visible
in the output (which line comes first). QEMU runs file I/O in a thread pool and delivers
completions in batches; within a batch the newest request comes first. Flushes are
serialized per node and skipped when nothing was written since the last one. A
synchronous command (read, write, discard, flush, truncate) runs the loop only until its
own request is done, so pending aio results may print during it, before its own report.

Each request is a generator standing in for a QEMU coroutine: it does its data work at
once (bdrv is synchronous) and yields `POOL` where QEMU would wait for the thread pool,
or `WAIT` after queueing itself behind a flush in progress. `IoEngine` plays the event
loop: `run_sync` for commands, `submit` plus `drain` for aio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from bdrv.backend import Backend
from bdrv.errors import BlockError
from bdrv.graph import O_NO_FLUSH, O_UNMAP, PERM_WRITE, PERM_WRITE_UNCHANGED, Node
from bdrv.request import REQ_FUA, REQ_MAY_UNMAP, REQ_WRITE_COMPRESSED

POOL = "pool"  # wait for one thread-pool round trip
BH = "bh"  # completion deferred to the next loop iteration (a one-shot bottom half)
WAIT = "wait"  # queued behind a running flush; woken by it
Op = Generator[str, None, int]


@dataclass
class FlushState:
    """Per-node flush bookkeeping (QEMU's write_gen/flushed_gen/active_flush_req)."""

    node: Node
    write_gen: int = 0
    flushed_gen: int = 0
    active: bool = False
    waiters: deque[Task] = field(default_factory=deque)


@dataclass(eq=False)
class Task:
    """A running request and what to do when it finishes."""

    gen: Op
    on_done: Callable[[int], None] | None = None
    done: bool = False
    ret: int = 0


def _errno(exc: BlockError) -> int:
    return -(exc.errno or 5)


class IoEngine:
    """The event loop of one open image."""

    def __init__(self, backend: Backend, writethrough: bool) -> None:
        self.backend = backend
        self.writethrough = writethrough
        self._pool: list[Task] = []
        self._bh: list[Task] = []
        self._wakeups: deque[Task] = deque()
        self._current: Task | None = None
        self.levels = self._flush_levels(backend.node)

    @staticmethod
    def _flush_levels(node: Node) -> list[FlushState]:
        # A flush walks from the top node down the children it writes through.
        levels = [FlushState(node)]
        while True:
            child = levels[-1].node.file
            if child is None or not child.perm & (PERM_WRITE | PERM_WRITE_UNCHANGED):
                return levels
            levels.append(FlushState(child.node))

    def refresh_levels(self) -> None:
        """After a reopen: which nodes a flush walks follows the new write permissions."""
        known = {id(state.node): state for state in self.levels}
        self.levels = [known.get(id(state.node), state)
                       for state in self._flush_levels(self.backend.node)]

    # -- the loop ----------------------------------------------------------------
    def _step(self, task: Task) -> None:
        self._current = task
        try:
            event = next(task.gen)
        except StopIteration as stop:
            task.done = True
            task.ret = int(stop.value or 0)
            if task.on_done is not None:
                task.on_done(task.ret)
        else:
            if event == POOL:
                self._pool.append(task)
            elif event == BH:
                self._bh.append(task)
        finally:
            self._current = None
        # Coroutines woken by this one run once it has yielded or finished.
        while self._wakeups:
            self._step(self._wakeups.popleft())

    def _round(self) -> None:
        # Bottom halves were queued before any worker could finish; newest first.
        batch = self._bh[::-1] + self._pool[::-1]
        self._bh, self._pool = [], []
        for task in batch:
            self._step(task)

    def run_sync(self, op: Op) -> int:
        """Run a request to completion, letting others progress meanwhile."""
        task = Task(op)
        self._step(task)
        while not task.done:
            if not self.busy:
                raise RuntimeError("request waits for nothing")
            self._round()
        return task.ret

    def submit(self, op: Op, on_done: Callable[[int], None]) -> None:
        self._step(Task(op, on_done))

    def drain(self) -> None:
        while self.busy:
            self._round()

    @property
    def busy(self) -> bool:
        return bool(self._pool or self._bh)

    # -- requests ---------------------------------------------------------------
    def _wrote(self) -> None:
        self.levels[-1].write_gen += 1

    def _write_tail(self, flags: int) -> Op:
        self._wrote()
        if self.writethrough or flags & REQ_FUA:
            return (yield from self.flush(fua=True))
        return 0

    def read(self, offset: int, count: int, sink: list[bytes], *, defer_errors: bool = False
             ) -> Op:
        """Read into sink[0]; returns 0 or -errno."""
        try:
            sink.append(self.backend.pread(offset, count))
        except BlockError as exc:
            if defer_errors:
                yield BH
            return _errno(exc)
        if count:
            yield POOL
        return 0

    def write(self, offset: int, data: bytes, flags: int, *, defer_errors: bool = False) -> Op:
        try:
            self.backend.pwrite(offset, data, flags & ~REQ_FUA)
        except BlockError as exc:
            if defer_errors:
                yield BH
            return _errno(exc)
        if not data:
            return 0
        yield POOL
        if flags & REQ_WRITE_COMPRESSED:
            # 7.2 completes compressed writes without the writethrough flush.
            self._wrote()
            return 0
        return (yield from self._write_tail(flags))

    def write_zeroes(self, offset: int, count: int, flags: int, *, defer_errors: bool = False
                     ) -> Op:
        try:
            self.backend.pwrite_zeroes(offset, count, flags & ~REQ_FUA)
        except BlockError as exc:
            if defer_errors:
                yield BH
            return _errno(exc)
        if not count:
            return 0
        yield POOL
        return (yield from self._write_tail(flags & ~REQ_MAY_UNMAP))

    def discard(self, offset: int, count: int) -> Op:
        try:
            self.backend.pdiscard(offset, count)
        except BlockError as exc:
            return _errno(exc)
        if not count or not self.backend.node.open_flags & O_UNMAP:
            return 0
        yield POOL
        self._wrote()
        return 0

    def truncate(self, size: int, prealloc: str) -> Op:
        self.backend.truncate(size, exact=False, prealloc=prealloc)  # errors go to caller
        yield POOL
        self._wrote()
        return 0

    def flush(self, level: int = 0, fua: bool = False) -> Op:
        """bdrv_co_flush on levels[level] and, through it, the nodes below.

        A node over blkdebug flushes itself (`debug_flush`: events, metadata caches
        and the nodes below); `fua` marks the flush that completes a write."""
        state = self.levels[level]
        if state.node.read_only:
            return 0
        current = state.write_gen
        while state.active:
            assert self._current is not None
            state.waiters.append(self._current)
            yield WAIT
        state.active = True
        ret = 0
        driver = state.node.driver
        if getattr(driver, "dbg", None) is not None and hasattr(driver, "debug_flush"):
            try:
                driver.debug_flush(fua)
            except BlockError as exc:
                ret = _errno(exc)
            yield POOL
        elif level + 1 < len(self.levels):
            ret = yield from self.flush(level + 1)
        elif not state.node.open_flags & O_NO_FLUSH and state.flushed_gen != current:
            try:
                state.node.flush()
            except BlockError as exc:
                ret = _errno(exc)
            yield POOL
        if ret == 0:
            state.flushed_gen = current
        state.active = False
        if state.waiters:
            self._wakeups.append(state.waiters.popleft())
        return ret
