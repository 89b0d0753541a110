"""The request layer aligns once: drivers only ever see aligned requests."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from bdrv.driver import Driver
from bdrv.errors import BlockError
from bdrv.graph import O_RDWR, O_UNMAP, Node
from bdrv.request import (
    BLOCK_ALLOCATED,
    BLOCK_DATA,
    BLOCK_EOF,
    BLOCK_OFFSET_VALID,
    BLOCK_ZERO,
    REQ_NO_FALLBACK,
    BlockStatus,
)


class MemoryDriver(Driver):
    """An in-memory protocol that records requests and insists on alignment."""

    format_name = "memory-test"
    protocol_name = "memory-test"

    def __init__(self, node: Any, size: int = 8192, align: int = 512,
                 zeroes: bool = True) -> None:
        super().__init__(node)
        self.data = bytearray(size)
        self.align = align
        self.zeroes = zeroes
        self.requests: list[tuple[str, int, int]] = []

    def _aligned(self, op: str, offset: int, length: int) -> None:
        assert offset % self.align == 0, (op, offset)
        assert length % self.align == 0 or offset + length == len(self.data), (op, length)
        self.requests.append((op, offset, length))

    def getlength(self) -> int:
        return len(self.data)

    def pread(self, offset: int, length: int) -> bytes:
        self._aligned("read", offset, length)
        return bytes(self.data[offset:offset + length])

    def pwrite(self, offset: int, data: Any, flags: int) -> None:
        self._aligned("write", offset, len(data))
        self.data[offset:offset + len(data)] = data

    def pwrite_zeroes(self, offset: int, length: int, flags: int) -> None:
        if not self.zeroes:
            super().pwrite_zeroes(offset, length, flags)
        self._aligned("zero", offset, length)
        self.data[offset:offset + length] = bytes(length)

    def pdiscard(self, offset: int, length: int) -> None:
        self.requests.append(("discard", offset, length))

    def block_status(self, want_zero: bool, offset: int, length: int) -> BlockStatus:
        # First half data, second half zero.
        half = len(self.data) // 2
        if offset < half:
            return BlockStatus(BLOCK_DATA | BLOCK_OFFSET_VALID, min(length, half - offset),
                               offset, self.node)
        return BlockStatus(BLOCK_ZERO | BLOCK_OFFSET_VALID, length, offset, self.node)


def make_node(flags: int = O_RDWR, **kwargs: Any) -> tuple[Node, MemoryDriver]:
    drv = MemoryDriver.__new__(MemoryDriver)
    node = Node(driver=drv, node_name="mem", open_flags=flags)
    MemoryDriver.__init__(drv, node, **kwargs)
    node.request_alignment = drv.align
    return node, drv


def test_unaligned_read_is_widened_and_sliced() -> None:
    node, drv = make_node()
    drv.data[500:530] = bytes(range(30))
    assert node.pread(505, 10) == bytes(range(5, 15))
    assert drv.requests == [("read", 0, 1024)]


def test_unaligned_write_is_read_modify_write() -> None:
    node, drv = make_node()
    drv.data[:] = b"\xaa" * len(drv.data)
    node.pwrite(510, b"\x01\x02\x03\x04")
    assert drv.requests == [("read", 0, 1024), ("write", 0, 1024)]
    assert drv.data[508:516] == b"\xaa\xaa\x01\x02\x03\x04\xaa\xaa"


def test_aligned_write_goes_straight_through() -> None:
    node, drv = make_node()
    node.pwrite(512, b"\x05" * 1024)
    assert drv.requests == [("write", 512, 1024)]


def test_zero_write_splits_head_body_tail() -> None:
    node, drv = make_node()
    drv.data[:] = b"\xff" * len(drv.data)
    node.pwrite_zeroes(100, 2000)
    ops = [op for op, _, _ in drv.requests]
    assert ("zero", 512, 1536) in drv.requests
    assert ops.count("write") == 2  # head and tail, read-modify-written
    assert drv.data[:100] == b"\xff" * 100
    assert drv.data[100:2100] == bytes(2000)
    assert drv.data[2100:2200] == b"\xff" * 100


def test_zero_write_falls_back_to_writing_zeroes() -> None:
    node, drv = make_node(zeroes=False)
    drv.data[:] = b"\xff" * len(drv.data)
    node.pwrite_zeroes(0, 4096)
    assert drv.data[:4096] == bytes(4096)
    assert [op for op, _, _ in drv.requests] == ["write"]


def test_zero_write_without_fallback_fails() -> None:
    node, drv = make_node(zeroes=False)
    with pytest.raises(BlockError) as info:
        node.pwrite_zeroes(0, 4096, REQ_NO_FALLBACK)
    assert info.value.errno == errno.ENOTSUP


def test_reads_past_end_are_zero() -> None:
    node, drv = make_node(size=1024)
    drv.data[:] = b"\x11" * 1024
    assert node.pread(512, 1024) == b"\x11" * 512 + bytes(512)


def test_writes_need_a_writable_node() -> None:
    node, _ = make_node(flags=0)
    with pytest.raises(BlockError, match="Block node is read-only"):
        node.pwrite(0, b"x" * 512)


def test_negative_offsets_are_eio() -> None:
    node, _ = make_node()
    with pytest.raises(BlockError) as info:
        node.pread(-1, 1)
    assert info.value.errno == errno.EIO


def test_discard_is_dropped_without_unmap() -> None:
    node, drv = make_node(flags=O_RDWR)
    node.pdiscard(0, 4096)
    assert drv.requests == []
    node.open_flags |= O_UNMAP
    node.pdiscard(0, 4096)
    assert drv.requests == [("discard", 0, 4096)]


def test_block_status_sets_allocated_and_eof() -> None:
    node, _ = make_node(size=8192)
    first = node.block_status(0, 8192)
    assert first.pnum == 4096
    assert first.flags & (BLOCK_DATA | BLOCK_ALLOCATED) == BLOCK_DATA | BLOCK_ALLOCATED
    assert not first.flags & BLOCK_EOF
    second = node.block_status(4096, 8192)
    assert second.flags & BLOCK_ZERO and second.flags & BLOCK_EOF
    assert second.pnum == 4096
    assert node.block_status(8192, 512).flags == BLOCK_EOF


def test_block_status_of_unaligned_offset_keeps_mapping() -> None:
    node, _ = make_node(size=8192)
    st = node.block_status(100, 1000)
    assert st.map == 100
    assert st.pnum == 1000
