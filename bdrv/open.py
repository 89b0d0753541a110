"""Opening nodes: options, protocol vs format, probing, children, filenames.

Follows the order of QEMU's bdrv_open_inherit(): merge `json:` options, pick the
driver (explicit, by protocol prefix, or by probing the file), open the `file`
child first for format drivers, open the node, reject leftover options, and build
the node's displayed filename the way bdrv_refresh_filename() does.
"""

from __future__ import annotations

import errno
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bdrv.driver import Driver, all_drivers, find_driver, find_protocol, protocol_drivers
from bdrv.errors import BlockError, from_oserror
from bdrv.graph import (
    CHILD_IMAGE,
    O_CACHE_MASK,
    O_CHECK,
    O_COPY_ON_READ,
    O_INACTIVE,
    O_NATIVE_AIO,
    O_NO_BACKING,
    O_NO_FLUSH,
    O_NO_IO,
    O_NOCACHE,
    O_PROTOCOL,
    O_RDWR,
    O_SNAPSHOT,
    O_TEMPORARY,
    O_UNMAP,
    Node,
    check_node_name,
    generate_node_name,
)
from bdrv.qdict import to_json

PROBE_BUF_SIZE = 2048
# snapshot=on (O_SNAPSHOT) puts a temporary qcow2 overlay on top of the image.
SUPPORTS_SNAPSHOT = True
# Generic options every node accepts (bdrv_runtime_opts plus the cache/discard ones).
GENERIC_OPTIONS = (
    "node-name", "driver", "read-only", "auto-read-only", "discard", "detect-zeroes",
    "force-share", "cache.direct", "cache.no-flush", "copy-on-read",
)

_named_nodes: dict[str, Node] = {}

Warn = Callable[[str], None]


def _default_warn(text: str) -> None:
    print(text, file=sys.stderr)


def path_has_protocol(path: str) -> bool:
    """True for 'proto:rest' names (a colon before any slash)."""
    colon = path.find(":")
    if colon < 0:
        return False
    slash = path.find("/")
    return slash < 0 or colon < slash


def protocol_prefix(path: str) -> str:
    return path[: path.find(":")]


def parse_bool_option(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise BlockError(f"Parameter '{name}' expects 'on' or 'off'")


def probe_format(header: bytes, filename: str) -> type[Driver]:
    """The format driver scoring highest for `header` (raw if nobody claims it)."""
    best: type[Driver] | None = None
    best_score = 0
    for drv in all_drivers():
        if drv.protocol_name is not None:
            continue
        score = drv.probe(header, filename)
        if score > best_score:
            best, best_score = drv, score
    if best is None or best.format_name == "raw":
        from bdrv.drivers.foreign import foreign_format

        foreign = foreign_format(header, filename)
        if foreign is not None:
            raise BlockError(f"Image format '{foreign}' is not supported by bdrv (with "
                             "-f raw the file opens as plain bytes)", errno.ENOTSUP)
    raw = find_driver("raw")
    assert raw is not None
    return best or raw


def extract_child_options(options: dict[str, Any], name: str) -> dict[str, Any]:
    """Move '<name>.x' keys out of `options` into a new dict keyed 'x'."""
    prefix = name + "."
    child = {k[len(prefix):]: v for k, v in options.items() if k.startswith(prefix)}
    for key in list(options):
        if key.startswith(prefix):
            del options[key]
    return child


def _child_inherited(
    parent_flags: int, parent_options: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """Flags and defaults a protocol child inherits (bdrv_inherited_options)."""
    flags = parent_flags & (O_RDWR | O_CACHE_MASK | O_NO_IO | O_INACTIVE | O_CHECK)
    flags |= O_PROTOCOL | O_UNMAP
    inherited = {k: v for k, v in parent_options.items()
                 if k in ("cache.direct", "cache.no-flush", "force-share", "read-only")}
    return flags, inherited


def open_node(
    filename: str | None,
    options: dict[str, Any] | None,
    flags: int,
    *,
    warn: Warn = _default_warn,
    inherited: dict[str, Any] | None = None,
) -> Node:
    """Open a node, its children and its backing chain; BlockError with QEMU's text.

    The chain is opened iteratively (each layer's backing file after the layer
    itself, as bdrv_open_backing_file() does), then each layer's leftover options are
    rejected from the bottom up and the backing edges attached, so that chains
    thousands of layers deep neither recurse nor take quadratic time.
    """
    if flags & O_SNAPSHOT:
        return _open_with_temp_snapshot(filename, options, flags, warn, inherited)
    levels: list[_Level] = []
    request: _BackingRequest | None = _BackingRequest(filename, options, flags, inherited)
    seen_files: set[tuple[int, int, str]] = set()
    try:
        while request is not None:
            depth = len(levels)
            try:
                level = _open_level(request.filename, request.options, request.flags, warn,
                                    request.inherited)
                levels.append(level)
                _check_loop(level.node, seen_files)
                request = _backing_request(level, warn)
            except BlockError as exc:
                raise _prefix_backing(exc, depth) from None
        for depth in range(len(levels) - 1, -1, -1):
            level = levels[depth]
            try:
                if depth + 1 < len(levels):
                    _attach_backing(level.node, levels[depth + 1].node)
                elif level.backing_ref is not None:
                    _attach_backing(level.node, level.backing_ref)
                _finish_level(level)
            except BlockError as exc:
                raise _prefix_backing(exc, depth) from None
    except BaseException:
        opened = [each for level in levels for each in level.node.walk()]
        for level in levels:
            if not level.node.parents:
                level.node.close()
        for each in opened:
            if each.closed:  # a node referenced by name lives on, with its name
                forget_node_name(each)
        raise
    return levels[0].node


def _open_level(
    filename: str | None,
    options: dict[str, Any] | None,
    flags: int,
    warn: Warn,
    inherited: dict[str, Any] | None,
) -> _Level:
    """Open one node and its file child; leftovers and backing are the caller's."""
    options = dict(options or {})
    if filename is not None and filename.startswith("json:"):
        json_opts = _parse_json(filename)
        for key, value in json_opts.items():
            options.setdefault(key, value)  # explicit options win
        filename = None
    if inherited:
        for key, value in inherited.items():
            options.setdefault(key, value)

    drv_cls = _choose_driver(filename, options, flags)
    flags = _apply_generic_flags(options, flags)
    backing_ref = options.get("backing")
    if "backing" in options and (backing_ref is None or backing_ref == ""):
        # "backing": null (or the deprecated "") means: no backing file.
        if backing_ref == "":
            warn('warning: Use of "backing": "" is deprecated; use "backing": null instead')
        del options["backing"]
        flags |= O_NO_BACKING
    explicit = dict(options)

    if drv_cls is not None and drv_cls.protocol_name is not None:
        if filename is not None:
            if "filename" in options:
                raise BlockError("Can't specify 'file' and 'filename' options at the same time")
            options["filename"] = filename
        node = _open_common(drv_cls, options, explicit, flags, warn, probed=False)
        return _Level(node, drv_cls, options, flags)

    # A format node: open its file child, then probe if the format is unknown.
    file_opts = extract_child_options(options, "file")
    child_flags, child_inherit = _child_inherited(flags, options)
    file_filename = filename
    referenced = isinstance(options.get("file"), str)
    if referenced:
        # A reference to an existing node by name (bdrv_lookup_bs).
        ref = options.pop("file")
        if ref not in _named_nodes:
            raise BlockError(f"Cannot find device='{ref}' nor node-name='{ref}'", errno.ENODEV)
        file_node = _named_nodes[ref]
    elif file_filename is None and "filename" not in file_opts and "driver" not in file_opts:
        if drv_cls is None:
            raise BlockError("Must specify either driver or file")
        raise BlockError("A block device must be specified for \"file\"")
    else:
        file_node = open_node(file_filename, file_opts, child_flags, warn=warn,
                              inherited=child_inherit)
    probed = False
    try:
        if drv_cls is None:
            drv_cls = _probe_node(file_node)
            probed = True
            options["driver"] = drv_cls.format_name
        node = _open_common(drv_cls, options, explicit, flags, warn, probed=probed,
                            file_node=file_node, display_name=filename)
        return _Level(node, drv_cls, options, flags)
    except BaseException:
        if not referenced and not file_node.parents:
            opened = list(file_node.walk())
            file_node.close()
            for each in opened:
                if each.closed:  # its name is free again
                    forget_node_name(each)
        raise


@dataclass
class _Level:
    """One opened layer of a chain: its node and the options nobody consumed yet."""

    node: Node
    drv_cls: type[Driver]
    options: dict[str, Any]
    flags: int
    # A backing node given by name ("backing": "node-name").
    backing_ref: Node | None = None


@dataclass
class _BackingRequest:
    filename: str | None
    options: dict[str, Any] | None
    flags: int
    inherited: dict[str, Any] | None


def _prefix_backing(exc: BlockError, depth: int) -> BlockError:
    return exc.prefixed("Could not open backing file: " * depth) if depth else exc


def _check_loop(node: Node, seen: set[tuple[int, int, str]]) -> None:
    """A chain that comes back to an image already in it, opened by the same driver,
    would never end (the same file opened as raw ends the chain there)."""
    file = node.file
    target = file.node if file is not None else node
    fd = getattr(target.driver, "fd", -1)
    if not isinstance(fd, int) or fd < 0:
        return
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, node.driver.format_name)
    if key in seen:
        raise BlockError(f"Backing file '{node.filename or target.filename}' creates an "
                         "infinite loop.", errno.ELOOP)
    seen.add(key)


def _backing_request(level: _Level, warn: Warn) -> _BackingRequest | None:
    """What bdrv_open_backing_file() would open below `level`, or None."""
    node, options, flags = level.node, level.options, level.flags
    drv = node.driver
    backing_file = getattr(drv, "backing_file", None) or ""
    backing_format = getattr(drv, "backing_format", None) or ""
    full = getattr(drv, "full_backing_file", None)
    if drv.protocol_name is None:
        # The tools read these from the node (ImageInfo's backing fields).
        if full is None and backing_file:
            try:
                full = full_backing_filename(node, backing_file)
            except BlockError:
                full = None
        node.backing_file = backing_file  # type: ignore[attr-defined]
        node.backing_format = backing_format  # type: ignore[attr-defined]
        node.full_backing_file = full  # type: ignore[attr-defined]
        node.auto_backing_file = backing_file  # type: ignore[attr-defined]
    if flags & O_NO_BACKING:
        return None
    child_opts = extract_child_options(options, "backing")
    reference = options.get("backing")
    if isinstance(reference, str):
        if reference not in _named_nodes:
            # bdrv_open_backing_file() prefixes the failed lookup like any failed open.
            raise BlockError(f"Could not open backing file: Cannot find device='{reference}' "
                             f"nor node-name='{reference}'", errno.ENODEV)
        if not drv.supports_backing:
            raise BlockError("Driver doesn't support backing files")
        # An existing node by name: attached as it is, not opened along.
        del options["backing"]
        level.backing_ref = _named_nodes[reference]
        return None
    filename: str | None = None
    if "file.filename" not in child_opts and not isinstance(child_opts.get("file"), str):
        if not backing_file and not child_opts:
            return None
        if backing_file:
            filename = getattr(drv, "full_backing_file", None) or \
                full_backing_filename(node, backing_file)
    if not drv.supports_backing:
        raise BlockError("Driver doesn't support backing files")
    node.implicit_backing = not child_opts  # type: ignore[attr-defined]
    if backing_format and "driver" not in child_opts:
        child_opts["driver"] = backing_format
    child_flags = flags & ~(O_SNAPSHOT | O_NO_BACKING | O_COPY_ON_READ | O_TEMPORARY
                            | O_PROTOCOL)
    inherit = {k: v for k, v in options.items()
               if k in ("cache.direct", "cache.no-flush", "force-share")}
    inherit.update({k: v for k, v in node.explicit_options.items()
                    if k in ("cache.direct", "cache.no-flush", "force-share")})
    inherit.setdefault("read-only", "on")
    inherit.setdefault("auto-read-only", "off")
    inherit.setdefault("discard", "unmap")
    return _BackingRequest(filename, child_opts, child_flags, inherit)


def _attach_backing(node: Node, backing: Node) -> None:
    from bdrv.graph import CHILD_COW

    if getattr(node, "implicit_backing", False):
        # The image's own backing name now means this node (auto_backing_file).
        node.auto_backing_file = backing.filename  # type: ignore[attr-defined]
    node.attach_child(backing, "backing", CHILD_COW)
    validate = getattr(node.driver, "validate_backing", None)
    if callable(validate):
        validate(backing)


def _finish_level(level: _Level) -> None:
    _reject_leftovers(level.drv_cls, level.options)
    refresh_filename(level.node)


def _dirname(node: Node) -> str:
    """bdrv_dirname(): the directory of the primary (file) child's name."""
    current = node
    while current.driver.protocol_name is None:
        file = current.file
        if file is None:
            raise BlockError("Cannot generate a base directory for "
                             f"{current.driver.format_name} nodes")
        current = file.node
    exact = getattr(current, "exact_filename", "") or current.filename
    if not exact:
        raise BlockError(f"Cannot generate a base directory for {current.driver.format_name} "
                         "nodes")
    return _path_dir(exact)


def _path_dir(base: str) -> str:
    """path_combine(base, ""): `base` up to its last '/', protocol prefix kept."""
    start = base.find(":") + 1 if path_has_protocol(base) else 0
    slash = base.rfind("/")
    return base[: slash + 1] if slash >= start else base[:start]


def full_backing_filename(node: Node, backing: str) -> str:
    """bdrv_get_full_backing_filename(): verbatim if absolute or with a protocol."""
    if path_has_protocol(backing) or backing.startswith("/"):
        return backing
    return _dirname(node) + backing


def _parse_json(filename: str) -> dict[str, Any]:
    from bdrv.options import parse_json_filename

    return parse_json_filename(filename)


def _choose_driver(
    filename: str | None, options: dict[str, Any], flags: int
) -> type[Driver] | None:
    name = options.get("driver")
    if name is not None:
        drv = find_driver(str(name))
        if drv is None:
            raise BlockError(f"Unknown driver '{name}'")
        return drv
    if filename is None:
        if "filename" not in options:
            if flags & O_PROTOCOL:
                raise BlockError("Must specify either driver or file")
            return None
        filename = str(options["filename"])
    if flags & O_PROTOCOL:
        return _protocol_for(filename)
    return None


def _protocol_for(filename: str) -> type[Driver]:
    if path_has_protocol(filename):
        prefix = protocol_prefix(filename)
        drv = find_protocol(prefix)
        if drv is None:
            raise BlockError(f"Unknown protocol '{prefix}'")
        return drv
    for candidate in protocol_drivers():
        probe_device = getattr(candidate, "probe_device", None)
        if probe_device is not None and probe_device(filename) > 0:
            return candidate
    drv = find_protocol("file")
    assert drv is not None
    return drv


def _probe_node(file_node: Node) -> type[Driver]:
    try:
        header = file_node.pread(0, min(PROBE_BUF_SIZE, file_node.getlength()))
    except BlockError as exc:
        raise BlockError(f"Could not read image for determining its format: {exc.message}",
                         exc.errno) from exc
    if not header:
        raw = find_driver("raw")
        assert raw is not None
        return raw
    return probe_format(header, file_node.filename)


def _apply_generic_flags(options: dict[str, Any], flags: int) -> int:
    """Turn read-only/cache/discard options into open flags (bdrv_open_common)."""
    if "read-only" in options:
        if parse_bool_option("read-only", options["read-only"]):
            flags &= ~O_RDWR
        else:
            flags |= O_RDWR
    if "cache.direct" in options:
        flags = flags | O_NOCACHE if parse_bool_option("cache.direct", options["cache.direct"]) \
            else flags & ~O_NOCACHE
    if "cache.no-flush" in options:
        no_flush = parse_bool_option("cache.no-flush", options["cache.no-flush"])
        flags = flags | O_NO_FLUSH if no_flush else flags & ~O_NO_FLUSH
    if "discard" in options:
        mode = options["discard"]
        if mode in ("off", "ignore"):
            flags &= ~O_UNMAP
        elif mode in ("on", "unmap"):
            flags |= O_UNMAP
        else:
            raise BlockError("Invalid discard option")
    return flags


def _open_common(
    drv_cls: type[Driver],
    options: dict[str, Any],
    explicit: dict[str, Any],
    flags: int,
    warn: Warn,
    *,
    probed: bool,
    file_node: Node | None = None,
    display_name: str | None = None,
) -> Node:
    name = options.pop("node-name", None)
    auto_name = name is None
    if name is None:
        name = generate_node_name()
    else:
        name = str(name)
        check_node_name(name)
        if name in _named_nodes:
            raise BlockError(f"Duplicate nodes with node-name='{name}'")
    options.pop("driver", None)
    force_share = parse_bool_option("force-share", options.pop("force-share", False))
    if force_share and flags & O_RDWR:
        raise BlockError("force-share=on can only be used with read-only images")
    for key in ("read-only", "cache.direct", "cache.no-flush", "discard"):
        options.pop(key, None)
    from bdrv.reopen import parse_detect_zeroes

    detect_zeroes = parse_detect_zeroes(options.get("detect-zeroes"), flags)
    for key in ("auto-read-only", "detect-zeroes", "copy-on-read"):
        options.pop(key, None)

    driver = drv_cls.__new__(drv_cls)
    node = Node(driver=driver, node_name=name, open_flags=flags, explicit_options=explicit)
    node.detect_zeroes = detect_zeroes  # type: ignore[attr-defined]
    # bs->copy_on_read: kept as opened, whatever reopen later does to the flags.
    node.copy_on_read = bool(flags & O_COPY_ON_READ)  # type: ignore[attr-defined]
    node.auto_node_name = auto_name
    node.force_share = force_share  # type: ignore[attr-defined]
    node.probed_raw = probed and drv_cls.format_name == "raw"
    drv_cls.__init__(driver, node)
    node.options = dict(explicit)
    try:
        if file_node is not None:
            role_of = getattr(driver, "file_role", None)
            role = role_of(options) if callable(role_of) else CHILD_IMAGE
            node.attach_child(file_node, "file", role)
        # Drivers print open-time warnings (raw's probing WARNING) through this.
        node.warn = warn  # type: ignore[attr-defined]
        driver.open(options, flags)
    except BaseException:
        node.close()
        raise
    if not auto_name:
        _named_nodes[name] = node
    return node


def _reject_leftovers(drv_cls: type[Driver], options: dict[str, Any]) -> None:
    from bdrv.options import qdict_order

    # QEMU names the first leftover in its dictionary's order.
    for key in qdict_order(list(options)):
        if drv_cls.protocol_name is not None:
            raise BlockError(f"Block protocol '{drv_cls.format_name}' doesn't support the "
                             f"option '{key}'")
        raise BlockError(
            f"Block format '{drv_cls.format_name}' does not support the option '{key}'"
        )


def forget_node_name(node: Node) -> None:
    if _named_nodes.get(node.node_name) is node:
        del _named_nodes[node.node_name]


# -- filenames -----------------------------------------------------------------

_STRONG_OPTIONS_ATTR = "strong_options"


def full_open_options(node: Node) -> dict[str, Any]:
    """The options that fully describe `node` (bs->full_open_options)."""
    cached = getattr(node, "full_open_options", None)
    if cached is None:
        refresh_filename(node)
        cached = node.full_open_options  # type: ignore[attr-defined]
    return dict(cached)


def backing_overridden(node: Node) -> bool:
    """bdrv_backing_overridden(): the backing node is not what the image names."""
    backing = node.backing
    if backing is None:
        # Detached (backing=null) although the image names one.
        return bool(getattr(node, "auto_backing_file", None))
    return str(getattr(node, "auto_backing_file", "")) != backing.node.filename


def _gather(node: Node) -> tuple[dict[str, Any], bool]:
    drv = node.driver
    opts: dict[str, Any] = {"driver": drv.format_name}
    strong = False
    if drv.protocol_name is not None and not drv.is_filter:
        opts["filename"] = getattr(drv, "filename", node.filename)
    for key in getattr(drv, _STRONG_OPTIONS_ATTR, ()):
        if key.endswith("."):
            # A prefix: every option under it (blkdebug's "inject-error.").
            for each in node.options:
                if each.startswith(key):
                    opts[each] = node.options[each]
                    strong = True
        elif key in node.options:
            opts[key] = node.options[key]
            strong = True
    # Without I/O (qemu-img info) a backing file changes nothing: not overridden.
    overridden = backing_overridden(node) and not node.open_flags & O_NO_IO
    for child in node.children:
        if child.name == "backing" and not overridden:
            continue
        opts[child.name] = dict(child.node.full_open_options)  # type: ignore[attr-defined]
    if overridden and node.backing is None:
        opts["backing"] = None  # force no backing file
    return opts, strong or overridden


def refresh_filename(node: Node) -> None:
    """Set node.filename (and full_open_options) as bdrv_refresh_filename() would.

    Children first, without recursion: a deep backing chain is a long path.
    """
    order: list[Node] = []
    stack = [node]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        order.append(current)
        stack.extend(child.node for child in current.children)
    for current in reversed(order):
        _refresh_one(current)


def _refresh_one(node: Node) -> None:
    drv = node.driver
    if drv.protocol_name is not None:
        node.filename = str(getattr(drv, "filename", node.filename))
        node.exact_filename = node.filename  # type: ignore[attr-defined]
        opts, _ = _gather(node)
        node.full_open_options = opts  # type: ignore[attr-defined]
        return
    opts, strong = _gather(node)
    exact = ""
    file = node.file
    if not strong and file is not None:
        exact = getattr(file.node, "exact_filename", "")
    node.exact_filename = exact  # type: ignore[attr-defined]
    node.full_open_options = opts  # type: ignore[attr-defined]
    node.filename = exact if exact else "json:" + to_json(opts)


# -- snapshot=on -----------------------------------------------------------------


def temp_dir() -> str:
    """g_get_tmp_dir() as 7.2's create_tmp_file() uses it ('/tmp' becomes '/var/tmp')."""
    tmpdir = os.environ.get("TMPDIR") or "/tmp"
    if len(tmpdir) > 1 and tmpdir.endswith("/"):
        tmpdir = tmpdir[:-1]
    return "/var/tmp" if tmpdir == "/tmp" else tmpdir


def create_tmp_file() -> str:
    """An empty, uniquely named file DIR/vl.XXXXXX made the way mkstemp() makes one."""
    directory = temp_dir()
    while True:
        name = f"{directory}/vl." + "".join(random.choice(_MKSTEMP_LETTERS) for _ in range(6))
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise from_oserror(exc, f"Could not open temporary file '{name}'") from None
        os.close(fd)
        return name


def _open_with_temp_snapshot(
    filename: str | None,
    options: dict[str, Any] | None,
    flags: int,
    warn: Warn,
    inherited: dict[str, Any] | None,
) -> Node:
    """bdrv_open_inherit() with snapshot=on: open the image as a read-only backing
    file, then put a temporary qcow2 overlay of its length on top (writes go there
    and vanish with it). The overlay file is unlinked as soon as it is open."""
    from bdrv.drivers.qcow2.driver import Qcow2Driver

    options = dict(options or {})
    if filename is not None and filename.startswith("json:"):
        for key, value in _parse_json(filename).items():
            options.setdefault(key, value)
        filename = None
    read_only = not flags & O_RDWR
    if "read-only" in options:
        read_only = parse_bool_option("read-only", options["read-only"])
    # bdrv_temp_snapshot_options(): the overlay's flags and options.
    snapshot_flags = (flags & ~(O_SNAPSHOT | O_NATIVE_AIO)) | O_TEMPORARY
    snapshot_options: dict[str, Any] = {"cache.direct": "off", "cache.no-flush": "on",
                                        "read-only": "on" if read_only else "off"}
    if "discard" in options:
        snapshot_options["discard"] = options["discard"]
    # The image itself is opened the way a backing file is.
    options.pop("read-only", None)
    options.setdefault("read-only", "on")
    options.setdefault("auto-read-only", "off")
    options.setdefault("discard", "unmap")
    base_flags = flags & ~(O_SNAPSHOT | O_TEMPORARY | O_COPY_ON_READ)
    base = open_node(filename, options, base_flags, warn=warn, inherited=inherited)
    try:
        total_size = base.getlength()
        tmp = create_tmp_file()
        try:
            try:
                Qcow2Driver.create(tmp, {"size": total_size}, lambda _text: None)
            except BlockError as exc:
                raise exc.prefixed(f"Could not create temporary overlay '{tmp}': ") from None
            snapshot_options.update({"file.driver": "file", "file.filename": tmp,
                                     "driver": "qcow2"})
            overlay = open_node(None, snapshot_options, snapshot_flags, warn=warn)
        finally:
            os.unlink(tmp)
        try:
            _attach_backing(overlay, base)
            refresh_filename(overlay)
        except BaseException:
            overlay.close()
            raise
    except BaseException:
        if not base.parents:
            close_chain(base)
        raise
    return overlay


def close_chain(node: Node) -> None:
    for each in list(node.walk()):
        forget_node_name(each)
    node.close()


_MKSTEMP_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
