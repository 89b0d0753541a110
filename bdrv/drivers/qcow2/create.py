"""qemu-img create for qcow2, laid out exactly as 7.2's qcow2_co_create() does it.

The options are checked in QEMU's order, then the protocol file is created empty, a
minimal header with a one-block refcount table is written, and the image is opened
with this driver to allocate those clusters, rewrite the full header, grow to the
requested size (with preallocation) and set the backing file. Any failure after the
file was created deletes it again, as 7.2 does.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from bdrv.errors import BlockError

from .header import (
    COMPAT_LAZY_REFCOUNTS,
    COMPRESSION_ZSTD,
    INCOMPAT_COMPRESSION,
    INCOMPAT_EXTL2,
    Qcow2Header,
    serialize,
)

_V3 = "(use version=v3 or greater)"


def _enum(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BlockError(f"Parameter '{name}' does not accept value '{value}'")
    return value


class CreateSpec:
    """The validated creation parameters (BlockdevCreateOptionsQcow2)."""

    def __init__(self, opts: dict[str, Any]) -> None:
        compat = str(opts.get("compat", "v3"))
        compat = {"0.10": "v2", "1.1": "v3"}.get(compat, compat)
        self.version = 2 if _enum("version", compat, ("v2", "v3")) == "v2" else 3
        self.prealloc = _enum("preallocation", str(opts.get("preallocation", "off")),
                              ("off", "metadata", "falloc", "full"))
        ctype = _enum("compression-type", str(opts.get("compression_type", "zlib")),
                      ("zlib", "zstd"))
        self.compression = COMPRESSION_ZSTD if ctype == "zstd" else 0
        self.size = -(-int(opts.get("size", 0)) // 512) * 512
        self.cluster_size = int(opts.get("cluster_size", 65536))
        self.extended_l2 = bool(opts.get("extended_l2", False))
        self.lazy = bool(opts.get("lazy_refcounts", False))
        self.refcount_bits = int(opts.get("refcount_bits", 16))
        self.backing_file: str | None = opts.get("backing_file")
        self.backing_fmt: str | None = opts.get("backing_fmt")
        self.data_file: str | None = opts.get("data_file")
        self.data_file_raw = bool(opts.get("data_file_raw", False))
        self.encrypt = _encrypt_format(opts)
        self.key_secret = opts.get("encrypt.key-secret")

    def validate(self) -> None:
        """qcow2_co_create()'s checks, in its order."""
        if self.extended_l2 and self.version < 3:
            raise BlockError("Extended L2 entries are only supported with compatibility "
                             f"level 1.1 and above {_V3}")
        cs = self.cluster_size
        bits = (cs & -cs).bit_length() - 1 if cs > 0 else 0
        if not 9 <= bits <= 21 or 1 << bits != cs:
            raise BlockError("Cluster size must be a power of two between 512 and 2048k")
        if self.extended_l2 and cs < 16384:
            raise BlockError("Extended L2 entries are only supported with cluster sizes of "
                             "at least 16384 bytes")
        self.cluster_bits = bits
        if self.backing_file and self.prealloc != "off" and not self.extended_l2:
            raise BlockError("Backing file and preallocation can only be used at the same "
                             "time if extended_l2 is on")
        if self.backing_fmt and not self.backing_file:
            raise BlockError("Backing format cannot be used without backing file")
        if self.version < 3 and self.lazy:
            raise BlockError("Lazy refcounts only supported with compatibility level 1.1 "
                             f"and above {_V3}")
        rb = self.refcount_bits
        if rb > 64 or rb <= 0 or rb & (rb - 1):
            raise BlockError("Refcount width must be a power of two and may not exceed "
                             "64 bits")
        if self.version < 3 and rb != 16:
            raise BlockError("Different refcount widths than 16 bits require "
                             f"compatibility level 1.1 or above {_V3}")
        if self.data_file_raw and not self.data_file:
            raise BlockError("data-file-raw requires data-file")
        if self.data_file_raw and self.backing_file:
            raise BlockError("Backing file and data-file-raw cannot be used at the same time")
        if self.data_file:
            if self.version < 3:
                raise BlockError("External data files are only supported with compatibility "
                                 f"level 1.1 and above {_V3}")
            raise BlockError("External data files are not supported by bdrv", errno.ENOTSUP)
        if self.compression and self.version < 3:
            raise BlockError("Non-zlib compression type is only supported with compatibility "
                             f"level 1.1 and above {_V3}")
        if self.encrypt:
            # Without --object secrets there is never a key: QEMU's crypto errors.
            if not self.key_secret:
                raise BlockError("Parameter 'encrypt.key-secret' is required for cipher")
            raise BlockError(f"No secret with id '{self.key_secret}'")


def _encrypt_format(opts: dict[str, Any]) -> str | None:
    fmt = opts.get("encrypt.format")
    if opts.get("encryption") is True:
        fmt = "qcow"
    elif opts.get("encryption") is False:
        fmt = None
    if fmt == "aes":
        fmt = "qcow"
    if fmt is not None:
        _enum("encrypt.format", str(fmt), ("qcow", "luks"))
    return fmt


def create_image(filename: str, opts: dict[str, Any], log: Callable[[str], None]) -> None:
    from bdrv.drivers.file import FileDriver, strip_file_prefix

    spec = CreateSpec(opts)
    file_opts: dict[str, Any] = {k: opts[k] for k in ("nocow", "extent_size_hint") if k in opts}
    FileDriver.create(filename, file_opts, log)
    try:
        spec.validate()
        _format(filename, spec)
    except BaseException:
        try:
            os.unlink(strip_file_prefix(filename))
        except OSError:
            pass
        raise


def _format(filename: str, spec: CreateSpec) -> None:
    from bdrv.backend import close_graph
    from bdrv.graph import O_NO_BACKING, O_NO_FLUSH, O_RDWR, O_RESIZE
    from bdrv.open import open_node

    cs = spec.cluster_size
    proto = open_node(filename, {"driver": "file"}, O_RDWR | O_RESIZE)
    try:
        hdr = Qcow2Header(version=3, cluster_bits=spec.cluster_bits,
                          refcount_table_offset=cs, refcount_table_clusters=1,
                          refcount_order=spec.refcount_bits.bit_length() - 1,
                          compression_type=spec.compression)
        if spec.lazy:
            hdr.compatible_features |= COMPAT_LAZY_REFCOUNTS
        if spec.compression:
            hdr.incompatible_features |= INCOMPAT_COMPRESSION
        if spec.extended_l2:
            hdr.incompatible_features |= INCOMPAT_EXTL2
        first = bytearray(serialize(hdr))
        # The initial header is the bare struct: no extensions yet, v2 or v3.
        first[4:8] = spec.version.to_bytes(4, "big")
        first[112:] = bytes(cs - 112)
        proto.pwrite(0, bytes(first))
        table = bytearray(2 * cs)
        table[0:8] = (2 * cs).to_bytes(8, "big")
        proto.pwrite(cs, bytes(table))
    finally:
        close_graph(proto)
    node = open_node(filename, {"driver": "qcow2"}, O_RDWR | O_RESIZE | O_NO_FLUSH
                     | O_NO_BACKING)
    try:
        drv = node.driver
        drv.rc.alloc_clusters(3 * cs)  # type: ignore[attr-defined]
        drv.update_header()  # type: ignore[attr-defined]
        node.truncate(spec.size, False, spec.prealloc)
        if spec.backing_file:
            name = spec.backing_file
            fmt = (spec.backing_fmt or "")[:15] or None
            if len(name.encode()) > 1023:
                raise BlockError(f"Could not assign backing file '{name}' with format "
                                 f"'{spec.backing_fmt}': Invalid argument")
            drv.hdr.backing_file = name  # type: ignore[attr-defined]
            drv.hdr.backing_format = fmt  # type: ignore[attr-defined]
            try:
                drv.update_header()  # type: ignore[attr-defined]
            except BlockError as exc:
                raise BlockError(f"Could not assign backing file '{name}' with format "
                                 f"'{spec.backing_fmt}': {exc.message}", exc.errno) from None
    finally:
        close_graph(node)
