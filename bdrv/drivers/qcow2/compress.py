"""Compressed clusters: raw deflate (window bits -12) and zstd, as QEMU 7.2 does them.

zstd goes through the system libzstd (the one qemu-img links) so the compressed bytes
are identical; the `zstandard` module is the fallback.
"""

from __future__ import annotations

import ctypes
import errno
import zlib
from typing import Any

from bdrv.errors import BlockError

from .header import COMPRESSION_ZLIB

COMPRESSED_SECTOR = 512


class _ZstdBuffer(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


_zstd_lib: Any = None


def _libzstd() -> Any:
    global _zstd_lib
    if _zstd_lib is None:
        import ctypes.util  # here: it imports subprocess and more, for zstd images only

        name = ctypes.util.find_library("zstd") or "libzstd.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            _zstd_lib = False
            return None
        lib.ZSTD_createCCtx.restype = ctypes.c_void_p
        lib.ZSTD_createDCtx.restype = ctypes.c_void_p
        lib.ZSTD_freeCCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_compressStream2.restype = ctypes.c_size_t
        lib.ZSTD_compressStream2.argtypes = [ctypes.c_void_p, ctypes.POINTER(_ZstdBuffer),
                                             ctypes.POINTER(_ZstdBuffer), ctypes.c_int]
        lib.ZSTD_decompressStream.restype = ctypes.c_size_t
        lib.ZSTD_decompressStream.argtypes = [ctypes.c_void_p, ctypes.POINTER(_ZstdBuffer),
                                              ctypes.POINTER(_ZstdBuffer)]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        _zstd_lib = lib
    return _zstd_lib or None


def compress(data: bytes, limit: int, ctype: int) -> bytes | None:
    """Compressed `data` of at most `limit` bytes, or None if it does not fit."""
    if ctype == COMPRESSION_ZLIB:
        # Level default, memLevel 9, like qcow2_zlib_compress().
        comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
        out = comp.compress(data) + comp.flush(zlib.Z_FINISH)
        return out if len(out) <= limit else None
    return _zstd_compress(data, limit)


def _zstd_compress(data: bytes, limit: int) -> bytes | None:
    lib = _libzstd()
    if lib is None:
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BlockError("zstd compression is not available", errno.ENOTSUP) from exc
        out = zstandard.ZstdCompressor().compress(data)
        return out if len(out) <= limit else None
    src = ctypes.create_string_buffer(bytes(data), len(data))
    dst = ctypes.create_string_buffer(limit)
    outb = _ZstdBuffer(ctypes.cast(dst, ctypes.c_void_p), limit, 0)
    inb = _ZstdBuffer(ctypes.cast(src, ctypes.c_void_p), len(data), 0)
    cctx = lib.ZSTD_createCCtx()
    try:
        ret = lib.ZSTD_compressStream2(cctx, ctypes.byref(outb), ctypes.byref(inb), 2)
    finally:
        lib.ZSTD_freeCCtx(cctx)
    if ret:
        return None
    return dst.raw[: outb.pos]


def decompress(data: bytes, size: int, ctype: int) -> bytes:
    """Exactly `size` bytes out of a compressed cluster, or EIO."""
    if ctype == COMPRESSION_ZLIB:
        try:
            dec = zlib.decompressobj(-12)
            out = dec.decompress(data, size)
        except zlib.error as exc:
            raise BlockError("Input/output error", errno.EIO) from exc
    else:
        out = _zstd_decompress(data, size)
    if len(out) != size:
        raise BlockError("Input/output error", errno.EIO)
    return out


def _zstd_decompress(data: bytes, size: int) -> bytes:
    lib = _libzstd()
    if lib is None:
        try:
            import zstandard
        except ImportError as exc:
            raise BlockError("zstd compression is not available", errno.ENOTSUP) from exc
        try:
            return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data)[:size])
        except zstandard.ZstdError as exc:
            raise BlockError("Input/output error", errno.EIO) from exc
    src = ctypes.create_string_buffer(bytes(data), len(data))
    dst = ctypes.create_string_buffer(size)
    outb = _ZstdBuffer(ctypes.cast(dst, ctypes.c_void_p), size, 0)
    inb = _ZstdBuffer(ctypes.cast(src, ctypes.c_void_p), len(data), 0)
    dctx = lib.ZSTD_createDCtx()
    try:
        # As qcow2_zstd_decompress: stream until the output cluster is full.
        while outb.pos < outb.size:
            last_in = inb.pos
            ret = lib.ZSTD_decompressStream(dctx, ctypes.byref(outb), ctypes.byref(inb))
            if lib.ZSTD_isError(ret):
                raise BlockError("Input/output error", errno.EIO)
            if ret == 0 and outb.pos < outb.size and inb.pos == last_in:
                break
            if inb.pos == inb.size and outb.pos < outb.size and ret != 0:
                break
    finally:
        lib.ZSTD_freeDCtx(dctx)
    return dst.raw[: outb.pos]


def parse_entry(entry: int, cluster_bits: int) -> tuple[int, int]:
    """(host offset, bytes to read) of a compressed L2 entry."""
    csize_shift = 62 - (cluster_bits - 8)
    csize_mask = (1 << (cluster_bits - 8)) - 1
    offset_mask = (1 << csize_shift) - 1
    coffset = entry & offset_mask
    nb_csectors = ((entry >> csize_shift) & csize_mask) + 1
    return coffset, nb_csectors * COMPRESSED_SECTOR - (coffset & (COMPRESSED_SECTOR - 1))


def make_entry(host: int, length: int, cluster_bits: int) -> int:
    csize_shift = 62 - (cluster_bits - 8)
    nb_csectors = (host + length - 1) // COMPRESSED_SECTOR - host // COMPRESSED_SECTOR
    return (1 << 62) | (nb_csectors << csize_shift) | host
