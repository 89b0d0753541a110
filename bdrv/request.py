"""The request layer: the one place where I/O requests are checked and aligned.

Drivers see only requests aligned to their node's `request_alignment`; unaligned
reads are widened and sliced, unaligned writes become read-modify-write here.
Block status follows QEMU's rules (io.c): RAW results are resolved in the child,
a protocol layer gives OFFSET_VALID, and EOF/ALLOCATED are derived the same way.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bdrv.errors import BlockError

if TYPE_CHECKING:
    from bdrv.graph import Node

SECTOR_SIZE = 512
# Largest length the block layer handles (BDRV_MAX_LENGTH in QEMU, rounded to sectors).
MAX_LENGTH = (2**63 - 1) // (1 << 30) * (1 << 30) // SECTOR_SIZE * SECTOR_SIZE
# Largest single driver request we issue; bigger requests are split.
MAX_TRANSFER = 1 << 30

# Request flags (BDRV_REQ_*).
REQ_COPY_ON_READ = 0x1
REQ_ZERO_WRITE = 0x2
REQ_MAY_UNMAP = 0x4
REQ_FUA = 0x10
REQ_WRITE_COMPRESSED = 0x20
REQ_WRITE_UNCHANGED = 0x40
REQ_NO_FALLBACK = 0x100

# Block status flags (BDRV_BLOCK_*).
BLOCK_DATA = 0x01
BLOCK_ZERO = 0x02
BLOCK_OFFSET_VALID = 0x04
BLOCK_RAW = 0x08
BLOCK_ALLOCATED = 0x10
BLOCK_EOF = 0x20
BLOCK_RECURSE = 0x40
BLOCK_COMPRESSED = 0x80


@dataclass
class BlockStatus:
    """The answer for [offset, offset + pnum): flags, host mapping and its node."""

    flags: int
    pnum: int
    map: int = 0
    file: Node | None = None


def _align_down(value: int, align: int) -> int:
    return value // align * align


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _is_zero(data: bytes | bytearray | memoryview) -> bool:
    import numpy as np

    return not np.frombuffer(data, dtype=np.uint8).any()


def eio(message: str = "Input/output error") -> BlockError:
    return BlockError(message, errno.EIO)


class RequestLayer:
    """Mixed into Node: the byte-granular request API every caller uses."""

    # Supplied by Node.
    driver: object
    request_alignment: int
    open_flags: int

    def _drv(self):  # type: ignore[no-untyped-def]
        return self.driver

    # -- size ------------------------------------------------------------------
    def getlength(self) -> int:
        """Length in bytes, rounded up to whole sectors as QEMU's total_sectors is."""
        return _align_up(self._drv().getlength(), SECTOR_SIZE)

    # -- reads -----------------------------------------------------------------
    def pread(self, offset: int, length: int, flags: int = 0) -> bytes:
        """Read `length` bytes; past the end of the node, zeros (as QEMU does)."""
        _check_request(offset, length)
        if length == 0:
            return b""
        align = self.request_alignment
        start = _align_down(offset, align)
        end = _align_up(offset + length, align)
        if self._copies_on_read():
            from bdrv import copy_on_read

            data = copy_on_read.read(self, start, end - start, self._aligned_read)  # type: ignore[arg-type]
        else:
            data = self._aligned_read(start, end - start)
        if start == offset and end == offset + length:
            return data
        return data[offset - start : offset - start + length]

    def _copies_on_read(self) -> bool:
        from bdrv.graph import O_RDWR

        return bool(getattr(self, "copy_on_read", False) and self.open_flags & O_RDWR)

    def _aligned_read(self, offset: int, length: int) -> bytes:
        drv = self._drv()
        if length <= MAX_TRANSFER and getattr(drv, "reads_zeros_past_end", False):
            return bytes(drv.pread(offset, length))
        total = _align_up(drv.getlength(), self.request_alignment)
        readable = max(0, min(length, total - offset))
        parts: list[bytes] = []
        pos = offset
        while pos < offset + readable:
            chunk = min(MAX_TRANSFER, offset + readable - pos)
            parts.append(bytes(self._drv().pread(pos, chunk)))
            pos += chunk
        if readable < length:
            parts.append(bytes(length - readable))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- writes ----------------------------------------------------------------
    def _check_writable(self) -> None:
        from bdrv.graph import O_RDWR

        if not self.open_flags & O_RDWR:
            raise BlockError("Block node is read-only", errno.EPERM)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Write `data` at `offset`, read-modify-writing unaligned edges."""
        length = len(data)
        _check_request(offset, length)
        self._check_writable()
        if length == 0:
            if flags & REQ_WRITE_COMPRESSED and offset % self.request_alignment == 0:
                # An empty compressed write reaches the driver (qemu-img convert -c
                # ends with one so the driver can align the end of its file).
                self._drv().pwrite(offset, b"", flags)
            return
        align = self.request_alignment
        start = _align_down(offset, align)
        end = _align_up(offset + length, align)
        if start != offset or end != offset + length:
            data, offset = self._pad_write(offset, data, start, end), start
        detect = getattr(self, "detect_zeroes", "off")
        if detect != "off" and not flags & REQ_ZERO_WRITE and _is_zero(data):
            # detect-zeroes: an all-zero write becomes a zero write (which may unmap).
            flags |= REQ_ZERO_WRITE | (REQ_MAY_UNMAP if detect == "unmap" else 0)
            self._zero_aligned(offset, len(data), flags)
            return
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            chunk = min(MAX_TRANSFER, len(view) - pos)
            self._drv().pwrite(offset + pos, view[pos : pos + chunk], flags)
            pos += chunk

    def _pad_write(self, offset: int, data: bytes | bytearray | memoryview, start: int,
                   end: int) -> bytearray:
        """Read-modify-write padding as bdrv_padding_rmw_read() does it: the head
        block and the tail block are read (one read if the padded request is one
        block, or two adjacent ones with both ends unaligned), with the
        pwritev_rmw_* events on a blkdebug node. 7.2's bdrv_co_pwritev_part()
        ignores a failed padding read: the write goes on with zeros there (and in
        the tail block too when the head block's read failed)."""
        failed = False

        def read(pos: int, count: int) -> bytes:
            nonlocal failed
            if not failed:
                try:
                    return self._aligned_read(pos, count)
                except BlockError:
                    failed = True
            return bytes(count)

        align = self.request_alignment
        dbg = getattr(self, "debug", None)
        head = offset - start
        tail = end - (offset + len(data))
        total = end - start
        buf_len = 2 * align if total > align and head and tail else align
        merge = total == buf_len and bool(tail)
        buf = bytearray(total)
        if head or merge:
            n = buf_len if merge else align
            if dbg is not None:
                if head:
                    dbg.event("pwritev_rmw_head")
                if merge:
                    dbg.event("pwritev_rmw_tail")
            buf[:n] = read(start, n)
            if dbg is not None and not failed:
                if head:
                    dbg.event("pwritev_rmw_after_head")
                if merge:
                    dbg.event("pwritev_rmw_after_tail")
        if tail and not merge and not failed:
            if dbg is not None:
                dbg.event("pwritev_rmw_tail")
            buf[total - align :] = read(end - align, align)
            if dbg is not None and not failed:
                dbg.event("pwritev_rmw_after_tail")
        buf[head : head + len(data)] = data
        return buf

    def pwrite_zeroes(self, offset: int, length: int, flags: int = 0) -> None:
        """Zero a range: the driver's efficient way if it has one, else plain writes."""
        from bdrv.graph import O_UNMAP

        _check_request(offset, length)
        self._check_writable()
        if length == 0:
            return
        if not self.open_flags & O_UNMAP:
            flags &= ~REQ_MAY_UNMAP  # unmapping is only allowed with discard=unmap
        align = self.request_alignment
        head_end = min(_align_up(offset, align), offset + length)
        tail_start = max(_align_down(offset + length, align), head_end)
        if head_end > offset:
            self.pwrite(offset, bytes(head_end - offset), flags & ~REQ_MAY_UNMAP)
        if tail_start > head_end:
            self._zero_aligned(head_end, tail_start - head_end, flags)
        if tail_start < offset + length:
            self.pwrite(tail_start, bytes(offset + length - tail_start), flags & ~REQ_MAY_UNMAP)

    def _zero_aligned(self, offset: int, length: int, flags: int) -> None:
        """An aligned zero write: the driver's way, or plain zeros where it has none."""
        from bdrv.graph import O_UNMAP

        if not self.open_flags & O_UNMAP:
            flags &= ~REQ_MAY_UNMAP
        pos = offset
        while pos < offset + length:
            chunk = min(MAX_TRANSFER, offset + length - pos)
            try:
                self._drv().pwrite_zeroes(pos, chunk, flags)
            except BlockError as exc:
                if exc.errno != errno.ENOTSUP or flags & REQ_NO_FALLBACK:
                    raise
                self._fallback_zero_write(pos, chunk, flags)
            pos += chunk

    def _fallback_zero_write(self, offset: int, length: int, flags: int) -> None:
        step = 1 << 20
        zeros = bytes(min(step, length))
        pos = offset
        while pos < offset + length:
            chunk = min(step, offset + length - pos)
            self._drv().pwrite(pos, memoryview(zeros)[:chunk], flags & ~REQ_MAY_UNMAP)
            pos += chunk

    def pdiscard(self, offset: int, length: int) -> None:
        """Discard a range; a no-op unless the node was opened with discard=unmap."""
        from bdrv.graph import O_UNMAP

        _check_request(offset, length)
        self._check_writable()
        if length == 0 or not self.open_flags & O_UNMAP:
            return
        try:
            self._drv().pdiscard(offset, length)
        except BlockError as exc:
            if exc.errno != errno.ENOTSUP:
                raise

    def flush(self) -> None:
        """Flush this node, then the nodes below it."""
        self._drv().flush()
        for child in getattr(self, "children", []):
            child.node.flush()

    def truncate(self, size: int, exact: bool = False, prealloc: str = "off") -> None:
        """Change the node's length (RESIZE permission is the caller's business)."""
        if size < 0:
            raise BlockError("Image size cannot be negative", errno.EINVAL)
        if size > MAX_LENGTH:
            raise BlockError(f"offset({size}) exceeds maximum({MAX_LENGTH})", errno.EIO)
        self._check_writable()
        self._drv().truncate(size, exact, prealloc)

    # -- block status ----------------------------------------------------------
    def block_status(self, offset: int, length: int, want_zero: bool = True) -> BlockStatus:
        """Status of the range starting at `offset` in this node alone."""
        from bdrv.graph import Node

        assert isinstance(self, Node)
        return _block_status(self, offset, length, want_zero)

    def is_allocated(self, offset: int, length: int) -> tuple[bool, int]:
        """Whether this layer (not its backing file) determines the range's content."""
        st = self.block_status(offset, length, want_zero=False)
        return bool(st.flags & BLOCK_ALLOCATED), st.pnum


def _check_request(offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset > MAX_LENGTH or length > MAX_LENGTH - offset:
        raise eio()


def _block_status(node: Node, offset: int, length: int, want_zero: bool) -> BlockStatus:
    total = node.getlength()
    if offset >= total:
        return BlockStatus(BLOCK_EOF, 0)
    length = min(length, total - offset)
    if length == 0:
        return BlockStatus(0, 0)
    drv = node.driver
    align = node.request_alignment
    start = _align_down(offset, align)
    span = _align_up(offset + length, align) - start
    st = drv.block_status(want_zero, start, span)
    if st is None:
        # Drivers without block status: all data, mapped 1:1 if this is a protocol.
        st = BlockStatus(BLOCK_DATA | BLOCK_ALLOCATED, span)
        if drv.is_protocol:
            st.flags |= BLOCK_OFFSET_VALID
            st.map, st.file = start, node
    pnum = min(st.pnum - (offset - start), length)
    if pnum <= 0:
        raise eio()
    flags = st.flags
    mapped = st.map + (offset - start) if flags & BLOCK_OFFSET_VALID else 0
    result = BlockStatus(flags, pnum, mapped, st.file)
    if flags & BLOCK_RAW:
        assert st.file is not None
        inner = _block_status(st.file, mapped, pnum, want_zero)
        result = inner
    else:
        if flags & (BLOCK_DATA | BLOCK_ZERO):
            result.flags |= BLOCK_ALLOCATED
        elif drv.supports_backing:
            backing = node.backing
            if backing is None:
                result.flags |= BLOCK_ZERO
            elif want_zero and offset >= backing.node.getlength():
                result.flags |= BLOCK_ZERO
        if (
            want_zero
            and flags & BLOCK_RECURSE
            and result.file is not None
            and result.file is not node
            and flags & BLOCK_DATA
            and not flags & BLOCK_ZERO
            and flags & BLOCK_OFFSET_VALID
        ):
            inner = _block_status(result.file, mapped, pnum, want_zero)
            if inner.flags & BLOCK_EOF and (inner.pnum == 0 or inner.flags & BLOCK_ZERO):
                result.flags |= BLOCK_ZERO
            else:
                result.pnum = inner.pnum
                result.flags |= inner.flags & BLOCK_ZERO
    if offset + result.pnum == total:
        result.flags |= BLOCK_EOF
    return result


def block_status_above(
    top: Node, base: Node | None, offset: int, length: int, want_zero: bool = True
) -> tuple[BlockStatus, int]:
    """Status through the backing chain from `top` down to (excluding) `base`.

    As bdrv_co_common_block_status_above(): the first layer that allocates the range
    answers; if none does, the status of the last layer visited (which reads as zero
    when it has no backing file). Returns the status and that layer's depth (0 = top).
    A layer shorter than the range reads as zeros allocated there.
    """
    st = top.block_status(offset, length, want_zero)
    if st.pnum == 0 or st.flags & BLOCK_ALLOCATED or top is base:
        return st, 0
    eof = offset + st.pnum if st.flags & BLOCK_EOF else -1
    length = st.pnum
    depth = 0
    backing = top.backing
    node = backing.node if backing is not None else None
    while node is not None and node is not base:
        depth += 1
        st = node.block_status(offset, length, want_zero)
        if st.pnum == 0:
            # Beyond this (shorter) layer: zeros, as if allocated here.
            st = BlockStatus(BLOCK_ZERO | BLOCK_ALLOCATED, length, 0, node)
            break
        if st.flags & BLOCK_ALLOCATED:
            st.flags &= ~BLOCK_EOF
            break
        length = st.pnum
        backing = node.backing
        node = backing.node if backing is not None else None
    if offset + st.pnum == eof:
        st.flags |= BLOCK_EOF
    return st, depth


def is_allocated_above(
    top: Node, base: Node | None, include_base: bool, offset: int, length: int
) -> tuple[bool, int, int]:
    """(allocated, pnum, depth) through the chain, as bdrv_is_allocated_above()."""
    node: Node | None = top
    depth = 0
    pnum_inter = length
    while node is not None:
        if node is base and not include_base:
            break
        allocated, pnum = node.is_allocated(offset, length)
        if allocated:
            return True, pnum, depth
        if pnum == 0:
            # Past this layer's end; treat the rest of the request as unallocated here.
            pnum = length
        pnum_inter = min(pnum_inter, pnum)
        if node is base:
            break
        backing = node.backing
        node = backing.node if backing is not None else None
        depth += 1
    return False, pnum_inter, depth
