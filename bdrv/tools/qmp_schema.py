"""Argument checking for QMP commands, as QEMU 7.2's QAPI input visitor words it.

A schema is a small tree of `Member`s; `check(schema, args)` walks the arguments in
schema order and raises QMPError with the visitor's texts: "Parameter 'x' is missing",
"Invalid parameter type for 'x', expected: boolean", "Parameter 'x' does not accept
value 'y'", "Parameter 'x' is unexpected" (nested names as 'cache.direct',
'options[0].driver').
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class QMPError(Exception):
    """A command failure: QMP error class and description."""

    def __init__(self, desc: str, cls: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.cls = cls


@dataclass(frozen=True)
class Type:
    """A QAPI type: 'str', 'int', 'size', 'bool', 'any', 'enum', 'struct', 'list',
    'ref' (BlockdevRef: a node name or options), 'ref-or-null', 'union' (by driver)."""

    kind: str
    name: str = ""
    values: tuple[str, ...] = ()
    members: tuple[Member, ...] = ()
    element: Type | None = None
    variants: dict[str, tuple[Member, ...]] = field(default_factory=dict, compare=False,
                                                   hash=False)


@dataclass(frozen=True)
class Member:
    name: str
    type: Type
    required: bool = False


STR = Type("str")
INT = Type("int")
SIZE = Type("size")
BOOL = Type("bool")
ANY = Type("any")

_EXPECTED = {"str": "string", "int": "integer", "size": "size", "bool": "boolean",
             "struct": "object", "union": "object", "list": "array"}


def enum(name: str, *values: str) -> Type:
    return Type("enum", name, values)


def struct(*members: Member) -> Type:
    return Type("struct", members=members)


def list_of(element: Type) -> Type:
    return Type("list", element=element)


def opt(name: str, type_: Type) -> Member:
    return Member(name, type_)


def req(name: str, type_: Type) -> Member:
    return Member(name, type_, True)


def _full(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def check(schema: Type, args: Any, path: str = "") -> None:
    """Raise QMPError if `args` does not fit `schema` (the object at `path`)."""
    _visit(schema, args, path)


def _bare(name: str) -> str:
    """The member's own name, as 7.2's visitor words enum and alternate errors (a list
    element has none: 'null')."""
    if not name or name.endswith("]"):
        return "null"
    return name.rsplit(".", 1)[-1]


def _visit(t: Type, value: Any, name: str) -> None:
    kind = t.kind
    if kind == "any":
        return
    if kind in ("ref", "ref-or-null"):
        if isinstance(value, str) or (value is None and kind == "ref-or-null"):
            return
        if not isinstance(value, dict):
            expected = "BlockdevRefOrNull" if kind == "ref-or-null" else "BlockdevRef"
            raise QMPError(f"Invalid parameter type for '{_bare(name)}', expected: "
                           f"{expected}")
        _visit(BLOCKDEV_OPTIONS, value, name)
        return
    if kind == "alternate":
        # A string of the enum `element`, or the object of `members`.
        assert t.element is not None
        if isinstance(value, str):
            _visit(t.element, value, name)
        elif isinstance(value, dict):
            _visit(struct(*t.members), value, name)
        else:
            raise QMPError(f"Invalid parameter type for '{_bare(name)}', expected: {t.name}")
        return
    if kind == "str" or kind == "enum":
        if not isinstance(value, str):
            raise QMPError(f"Invalid parameter type for '{name}', expected: string")
        if kind == "enum" and value not in t.values:
            raise QMPError(f"Parameter '{_bare(name)}' does not accept value '{value}'")
        return
    if kind in ("int", "size"):
        low, high = (0, 1 << 64) if kind == "size" else (-(1 << 63), 1 << 63)
        if isinstance(value, bool) or not isinstance(value, int) or \
                not low <= value < high:
            raise QMPError(f"Invalid parameter type for '{name}', expected: "
                           f"{_EXPECTED[kind]}")
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise QMPError(f"Invalid parameter type for '{name}', expected: boolean")
        return
    if kind == "list":
        if not isinstance(value, list):
            raise QMPError(f"Invalid parameter type for '{name}', expected: array")
        assert t.element is not None
        for index, item in enumerate(value):
            _visit(t.element, item, f"{name}[{index}]")
        return
    if not isinstance(value, dict):
        raise QMPError(f"Invalid parameter type for '{name or 'null'}', expected: object")
    members = list(t.members)
    if kind == "union":
        _members(tuple(members[:1]), value, name)
        driver = value["driver"]
        members += list(t.variants.get(driver, ()))
    _members(tuple(members), value, name)
    known = {m.name for m in members}
    from bdrv.options import qdict_order

    for key in qdict_order(list(value)):  # QEMU reports the first in QDict order
        if key not in known:
            raise QMPError(f"Parameter '{_full(name, key)}' is unexpected")


def _members(members: tuple[Member, ...], value: dict[str, Any], path: str) -> None:
    for member in members:
        full = _full(path, member.name)
        if member.name not in value:
            if member.required:
                raise QMPError(f"Parameter '{full}' is missing")
            continue
        _visit(member.type, value[member.name], full)


# -- BlockdevOptions (the part bdrv implements) ------------------------------------

BLOCKDEV_DRIVERS = (
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "snapshot-access", "ftp", "ftps",
    "gluster", "host_cdrom", "host_device", "http", "https", "io_uring", "iscsi", "luks",
    "nbd", "nfs", "null-aio", "null-co", "nvme", "nvme-io_uring", "parallels", "preallocate",
    "qcow", "qcow2", "qed", "quorum", "raw", "rbd", "replication", "ssh", "throttle",
    "vdi", "vhdx", "virtio-blk-vfio-pci", "virtio-blk-vhost-user",
    "virtio-blk-vhost-vdpa", "vmdk", "vpc", "vvfat",
)
_ON_OFF_AUTO = enum("OnOffAuto", "auto", "on", "off")
_CACHE = struct(opt("direct", BOOL), opt("no-flush", BOOL))
_BASE = (
    req("driver", enum("BlockdevDriver", *BLOCKDEV_DRIVERS)),
    opt("node-name", STR),
    opt("discard", enum("BlockdevDiscardOptions", "ignore", "unmap")),
    opt("cache", _CACHE),
    opt("read-only", BOOL),
    opt("auto-read-only", BOOL),
    opt("force-share", BOOL),
    opt("detect-zeroes", enum("BlockdevDetectZeroesOptions", "off", "on", "unmap")),
)
_REF = Type("ref")
_REF_OR_NULL = Type("ref-or-null")
_FILE = (
    req("filename", STR), opt("pr-manager", STR), opt("locking", _ON_OFF_AUTO),
    opt("aio", enum("BlockdevAioOptions", "threads", "native", "io_uring")),
    opt("aio-max-batch", INT), opt("drop-cache", BOOL), opt("x-check-cache-dropped", BOOL),
)
_GENERIC_FORMAT = (req("file", _REF),)
_COW_FORMAT = (*_GENERIC_FORMAT, opt("backing", _REF_OR_NULL))
_OVERLAP_MODE = enum("Qcow2OverlapCheckMode", "none", "constant", "cached", "all")
_OVERLAP_CHECKS = Type(
    "alternate", "Qcow2OverlapChecks", element=_OVERLAP_MODE,
    members=(opt("template", _OVERLAP_MODE),
             *(opt(flag, BOOL) for flag in (
                 "main-header", "active-l1", "active-l2", "refcount-table",
                 "refcount-block", "snapshot-table", "inactive-l1", "inactive-l2",
                 "bitmap-directory"))))
_QCOW2 = (
    *_COW_FORMAT, opt("lazy-refcounts", BOOL), opt("pass-discard-request", BOOL),
    opt("pass-discard-snapshot", BOOL), opt("pass-discard-other", BOOL),
    opt("overlap-check", _OVERLAP_CHECKS), opt("cache-size", INT), opt("l2-cache-size", INT),
    opt("l2-cache-entry-size", INT), opt("refcount-cache-size", INT),
    opt("cache-clean-interval", INT), opt("encrypt", ANY), opt("data-file", _REF),
)
_NULL = (opt("size", INT), opt("latency-ns", INT), opt("read-zeroes", BOOL))

BLOCKDEV_OPTIONS = Type(
    "union", "BlockdevOptions", members=_BASE,
    variants={
        "file": _FILE, "host_device": _FILE, "host_cdrom": _FILE,
        "raw": (*_GENERIC_FORMAT, opt("offset", INT), opt("size", INT)),
        "qcow2": _QCOW2, "vpc": _GENERIC_FORMAT, "null-co": _NULL, "null-aio": _NULL,
    },
)

_PREALLOC = enum("PreallocMode", "off", "metadata", "falloc", "full")
BLOCKDEV_CREATE_OPTIONS = Type(
    "union", "BlockdevCreateOptions", members=(BLOCKDEV_OPTIONS.members[0],),
    variants={
        "file": (req("filename", STR), req("size", SIZE), opt("preallocation", _PREALLOC),
                 opt("nocow", BOOL), opt("extent-size-hint", SIZE)),
        "qcow2": (req("file", _REF), opt("data-file", _REF), opt("data-file-raw", BOOL),
                  opt("extended-l2", BOOL), req("size", SIZE),
                  opt("version", enum("BlockdevQcow2Version", "v2", "v3")),
                  opt("backing-file", STR), opt("backing-fmt", Type("enum", "BlockdevDriver",
                                                                      BLOCKDEV_DRIVERS)),
                  opt("encrypt", ANY), opt("cluster-size", SIZE),
                  opt("preallocation", _PREALLOC), opt("lazy-refcounts", BOOL),
                  opt("refcount-bits", INT),
                  opt("compression-type", enum("Qcow2CompressionType", "zlib", "zstd"))),
    },
)
