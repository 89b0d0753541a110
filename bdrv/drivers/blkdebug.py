"""The `blkdebug` filter: I/O error injection driven by events, as in QEMU 7.2.

A blkdebug node sits between a format driver and its image (`blkdebug:CONFIG:IMAGE`,
or `driver=blkdebug,image.filename=...`). Format drivers report what they are doing
as named events (qcow2's `l2_alloc_write`, `refblock_load`, ...) on their file child;
the events reach the first blkdebug node below (see `Node.debug`). Rules from a
config file or from inline options (`inject-error.0.event=...`) react to them:

- `[inject-error]` makes the rule *active* when its event fires (in its `state`, if
  given); from then on every request of a matching I/O type (`iotype`, by default
  read, write, write-zeroes, discard and flush) that covers `sector` (any, if not
  given) fails with `errno` (EIO). With `once=on` only the first such request fails
  and the rule is gone. `immediately` only decides, in QEMU, whether the failure is
  reported before or after yielding once; a synchronous caller sees the same result.
- `[set-state]` moves the node from `state` to `new_state` when its event fires.

An event that fires an inject-error rule replaces the set of active rules; among the
active rules the one defined first that matches the request decides its fate. The
node starts in state 1, and the `none` event fires once when it has been opened.

With a blkdebug node below it, qcow2 emulates 7.2's write-back metadata caches so
that events and failures meet the same writes in the same order (see refcount.py's
write_cache and mapping.py's). Not modelled: the interleaving of concurrent requests
inside qcow2 (qemu-io aio_* commands, and a request spanning several L2 tables or
allocations, which 7.2 runs as parallel tasks); an error injected there can leave a
different image. Breakpoints (qemu-io break) are kept and used up, but a request
never suspends at one, so `resume` finds nothing.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bdrv.driver import Driver, register
from bdrv.errors import BlockError, from_oserror
from bdrv.graph import CHILD_FILTERED, CHILD_PRIMARY, O_NO_FLUSH, O_PROTOCOL
from bdrv.options import parse_bool, parse_enum, parse_number, parse_option_size
from bdrv.request import BLOCK_OFFSET_VALID, BLOCK_RAW, BlockStatus

if TYPE_CHECKING:
    from bdrv.graph import Node
    from bdrv.reopen import ReopenState

# BlkdebugEvent in 7.2's QAPI schema, in its order.
EVENTS = (
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
    "l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
    "read_aio", "read_backing_aio", "read_compressed", "write_aio", "write_compressed",
    "vmstate_load", "vmstate_save", "cow_read", "cow_write", "reftable_load",
    "reftable_grow", "reftable_update", "refblock_load", "refblock_update",
    "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
    "refblock_alloc_write", "refblock_alloc_write_blocks", "refblock_alloc_write_table",
    "refblock_alloc_switch_table", "cluster_alloc", "cluster_alloc_bytes", "cluster_free",
    "flush_to_os", "flush_to_disk", "pwritev_rmw_head", "pwritev_rmw_after_head",
    "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev", "pwritev_zero",
    "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
)
# BlkdebugIOType.
IOTYPES = ("read", "write", "write-zeroes", "discard", "flush", "block-status")
IO_READ, IO_WRITE, IO_WRITE_ZEROES, IO_DISCARD, IO_FLUSH, IO_BLOCK_STATUS = range(6)
DEFAULT_IOTYPE_MASK = sum(1 << t for t in (IO_READ, IO_WRITE, IO_WRITE_ZEROES, IO_DISCARD,
                                           IO_FLUSH))
UINT64 = (1 << 64) - 1
INT_MAX = 0x7FFFFFFF

# The option groups of a config file and the type of each key.
GROUPS: dict[str, dict[str, str]] = {
    "inject-error": {"event": "string", "state": "number", "iotype": "string",
                     "errno": "number", "sector": "number", "once": "bool",
                     "immediately": "bool"},
    "set-state": {"event": "string", "state": "number", "new_state": "number"},
}
RUNTIME_OPTIONS = ("config", "x-image", "align", "max-transfer", "opt-write-zero",
                   "max-write-zero", "opt-discard", "max-discard", "take-child-perms",
                   "unshare-child-perms")


# -- configuration -------------------------------------------------------------------


@dataclass
class Section:
    """One [group] of settings (a QemuOpts): keys in the order they were set."""

    group: str
    values: list[tuple[str, str]]
    id: str | None = None

    def get(self, key: str) -> str | None:
        for name, value in reversed(self.values):
            if name == key:
                return value
        return None


def _check_value(group: str, key: str, value: Any) -> str:
    """qemu_opt_set(): the key must exist in the group and the value parse."""
    kind = GROUPS[group].get(key)
    if kind is None:
        raise BlockError(f"Invalid parameter '{key}'")
    if isinstance(value, bool):
        value = "on" if value else "off"
    value = str(value)
    if kind == "number":
        parse_number(key, value)
    elif kind == "bool":
        parse_bool(key, value)
    return str(value)


def _scan_word(line: str, pos: int) -> tuple[str, int]:
    """sscanf's %63s after skipping white space: ('', pos) if nothing is there."""
    n = len(line)
    while pos < n and line[pos] in " \t\n\v\f\r":
        pos += 1
    start = pos
    while pos < n and line[pos] not in " \t\n\v\f\r" and pos - start < 63:
        pos += 1
    return line[start:pos], pos


def _skip_space(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t\n\v\f\r":
        pos += 1
    return pos


def _parse_group_line(line: str) -> tuple[str, str | None] | None:
    """'[group "id"]' or '[group]' (anything after the ']' is ignored)."""
    if not line.startswith("["):
        return None
    word, pos = _scan_word(line, 1)
    if word:
        pos = _skip_space(line, pos)
        if line[pos : pos + 1] == '"':
            end = pos + 1
            while end < len(line) and line[end] != '"' and end - pos - 1 < 63:
                end += 1
            if end > pos + 1:
                return word, line[pos + 1 : end]
    end = 1
    while end < len(line) and line[end] != "]" and end - 1 < 63:
        end += 1
    if end == 1:
        return None
    return line[1:end], None


def _parse_key_line(line: str) -> tuple[str, str] | None:
    """' key = "value"' -> (key, value); ' key ...' without a quoted value -> (key, '')."""
    key, pos = _scan_word(line, 0)
    if not key:
        return None
    pos = _skip_space(line, pos)
    if line[pos : pos + 1] != "=":
        return key, ""
    pos = _skip_space(line, pos + 1)
    if line[pos : pos + 1] != '"':
        return key, ""
    end = line.find('"', pos + 1)
    if end < 0:
        end = len(line)
    value = line[pos + 1 : end][:1023]
    return key, value


def parse_config_text(text: str) -> list[Section]:
    """Sections of a config file, with qemu_config_parse()'s errors."""
    sections: list[Section] = []
    ids: set[tuple[str, str]] = set()
    current: Section | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith("\n") or line.startswith("#"):
            continue
        group = _parse_group_line(line)
        if group is not None:
            name, ident = group
            if name not in GROUPS:
                raise BlockError(f"There is no option group '{name}'")
            if ident is not None:
                if (name, ident) in ids:
                    raise BlockError(f"Duplicate ID '{ident}' for {name}")
                ids.add((name, ident))
            current = Section(name, [], ident)
            sections.append(current)
            continue
        pair = _parse_key_line(line)
        if pair is None:
            raise BlockError("parse error")
        if current is None:
            raise BlockError("no group defined")
        key, value = pair
        current.values.append((key, _check_value(current.group, key, value)))
    return sections


def read_config_file(path: str) -> list[Section]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fp:
            text = fp.read()
    except OSError as exc:
        raise from_oserror(exc, "Could not read blkdebug config file") from None
    return parse_config_text(text)


def _array_index(key: str) -> tuple[int, str] | None:
    head, _, rest = key.partition(".")
    if not rest or not head.isdigit() or (len(head) > 1 and head[0] == "0"):
        return None
    return int(head), rest


def sections_from_options(options: dict[str, Any]) -> list[Section]:
    """Rules given as options (qemu_config_parse_qdict): 'inject-error.event=...' for
    one section or 'inject-error.0.event=...', 'inject-error.1....' for several.
    The keys used are removed from `options`."""
    sections: list[Section] = []
    for group in GROUPS:
        prefix = group + "."
        sub = {k[len(prefix):]: v for k, v in options.items() if k.startswith(prefix)}
        for key in list(options):
            if key.startswith(prefix):
                del options[key]
        if not sub:
            continue
        plain = [(k, v) for k, v in sub.items() if k in GROUPS[group]]
        rest = {k: v for k, v in sub.items() if k not in GROUPS[group]}
        if plain:
            values = [(k, _check_value(group, k, v)) for k, v in plain]
            if rest:
                raise BlockError(f"Unknown option '{next(iter(rest))}' for [{group}]")
            sections.append(Section(group, values))
            continue
        index = 0
        while True:
            head = f"{index}."
            entry = {k[len(head):]: v for k, v in rest.items() if k.startswith(head)}
            if not entry:
                if str(index) in rest:
                    raise BlockError(f"[{group}] section (index {index}) does not consist "
                                     "of keys")
                break
            for key in list(rest):
                if key.startswith(head):
                    del rest[key]
            values = []
            for key, value in entry.items():
                if key not in GROUPS[group]:
                    raise BlockError(f"[{group}] section doesn't support the option '{key}'")
                values.append((key, _check_value(group, key, value)))
            sections.append(Section(group, values, f"{group}.{index}"))
            index += 1
        if rest:
            raise BlockError(f"Unused option '{next(iter(rest))}' for [{group}]")
    return sections


@dataclass(eq=False)
class Rule:
    event: str
    action: str  # "inject-error" or "set-state"
    state: int
    error: int = errno.EIO
    once: bool = False
    immediately: bool = False
    offset: int = UINT64  # the byte offset a request must cover; all ones: any
    iotype_mask: int = DEFAULT_IOTYPE_MASK
    new_state: int = 0
    tag: str = ""  # a breakpoint's (action "suspend")


def _c_int(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def make_rules(sections: list[Section]) -> list[Rule]:
    """add_rule() over every inject-error section, then every set-state section."""
    rules: list[Rule] = []
    for action in GROUPS:
        for sec in sections:
            if sec.group != action:
                continue
            event = sec.get("event")
            if event is None:
                raise BlockError("Missing event name for rule")
            parse_enum(event, EVENTS)
            state = _c_int(parse_number("state", sec.get("state") or "0"))
            rule = Rule(event, action, state)
            if action == "inject-error":
                raw_errno = sec.get("errno")
                rule.error = _c_int(parse_number("errno", raw_errno)) \
                    if raw_errno is not None else errno.EIO
                rule.once = parse_bool("once", sec.get("once") or "off")
                rule.immediately = parse_bool("immediately", sec.get("immediately") or "off")
                raw_sector = sec.get("sector")
                sector = parse_number("sector", raw_sector) if raw_sector is not None \
                    else UINT64
                rule.offset = UINT64 if sector == UINT64 else (sector * 512) & UINT64
                iotype = sec.get("iotype")
                if iotype is not None:
                    rule.iotype_mask = 1 << IOTYPES.index(parse_enum(iotype, IOTYPES))
            else:
                rule.new_state = _c_int(parse_number("new_state", sec.get("new_state") or "0"))
            rules.append(rule)
    return rules


# -- the driver ------------------------------------------------------------------------


@register
class BlkdebugDriver(Driver):
    format_name = "blkdebug"
    protocol_name = "blkdebug"
    is_filter = True
    runtime_options = RUNTIME_OPTIONS
    strong_options = ("config", "inject-error.", "set-state.", "align", "max-transfer",
                      "opt-write-zero", "max-write-zero", "opt-discard", "max-discard")

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.config_file: str | None = None
        self.rules: dict[str, list[Rule]] = {}
        self.active: list[Rule] = []
        self.state = 1
        self.align = 0
        self.inline_rules = False
        # Flushes reach the rules only if something was written since the last one
        # that succeeded (the block layer's write_gen/flushed_gen).
        self.write_gen = 0
        self.flushed_gen = 0

    # -- open --------------------------------------------------------------------------
    def open(self, options: dict[str, Any], flags: int) -> None:
        from bdrv.open import _child_inherited, extract_child_options, open_node

        filename = options.pop("filename", None)
        if filename is not None:
            self._parse_filename(str(filename), options)
        sizes: dict[str, int] = {}
        for key in ("align", "max-transfer", "opt-write-zero", "max-write-zero",
                    "opt-discard", "max-discard"):
            if key in options:
                value = options.pop(key)
                sizes[key] = value if isinstance(value, int) and not isinstance(value, bool) \
                    else parse_option_size(key, str(value))
        for key in ("take-child-perms", "unshare-child-perms"):
            options.pop(key, None)
        config = options.pop("config", None)
        x_image = options.pop("x-image", None)
        sections = read_config_file(str(config)) if config is not None else []
        inline = sections_from_options(options)
        self.inline_rules = bool(inline)
        rules = make_rules(sections + inline)
        for rule in rules:
            self.rules.setdefault(rule.event, []).insert(0, rule)
        self.config_file = None if config is None else str(config)
        self.state = 1

        image_opts = extract_child_options(options, "image")
        if x_image is None and "filename" not in image_opts and "driver" not in image_opts:
            raise BlockError('A block device must be specified for "image"')
        child_flags, inherit = _child_inherited(flags, options)
        child = open_node(None if x_image is None else str(x_image), image_opts,
                          child_flags | O_PROTOCOL, warn=getattr(self.node, "warn", print),
                          inherited=inherit)
        try:
            self.node.attach_child(child, "image", CHILD_FILTERED | CHILD_PRIMARY)
        except BaseException:
            child.close()
            raise
        self.node.debug = self
        self.align = sizes.get("align", 0)
        if self.align and (self.align >= INT_MAX or self.align & (self.align - 1)):
            raise BlockError(f"Cannot meet constraints with align {self.align}")
        align = max(self.align, child.request_alignment)
        for key in ("max-transfer", "opt-write-zero", "opt-discard"):
            value = sizes.get(key, 0)
            if value and (value >= INT_MAX or value % align):
                raise BlockError(f"Cannot meet constraints with {key} {value}")
        for key, opt in (("max-write-zero", "opt-write-zero"), ("max-discard", "opt-discard")):
            value = sizes.get(key, 0)
            if value and (value >= INT_MAX or value % max(sizes.get(opt, 0), align)):
                raise BlockError(f"Cannot meet constraints with {key} {value}")
        self.node.request_alignment = align
        self.event("none")

    @staticmethod
    def _parse_filename(filename: str, options: dict[str, Any]) -> None:
        """'blkdebug:[CONFIG]:IMAGE'; a name without the prefix is the image itself."""
        if not filename.startswith("blkdebug:"):
            options["x-image"] = filename
            return
        rest = filename[len("blkdebug:"):]
        colon = rest.find(":")
        if colon < 0:
            raise BlockError("blkdebug requires both config file and image path")
        if colon:
            options["config"] = rest[:colon]
        options["x-image"] = rest[colon + 1:]

    def reopen_prepare(self, state: ReopenState) -> None:
        pass

    @property
    def image(self) -> Node:
        child = self.node.child_by_name("image")
        assert child is not None
        return child.node

    @property
    def filename(self) -> str:
        """blkdebug:CONFIG:IMAGE while nothing but a config file and image describe us."""
        child = self.node.child_by_name("image")
        exact = getattr(child.node, "exact_filename", "") if child is not None else ""
        if not exact or self.inline_rules or any(
                key in self.node.options for key in self.strong_options[3:]):
            return ""
        return f"blkdebug:{self.config_file or ''}:{exact}"

    # -- events and rules ------------------------------------------------------------
    def event(self, name: str) -> None:
        """bdrv_debug_event(): run the rules of `name` against the current state."""
        rules = self.rules.get(name)
        if not rules:
            return
        current = self.state
        new_state = current
        injected = False
        for rule in list(rules):
            if rule.state and rule.state != current:
                continue
            if rule.action == "suspend":
                # 7.2 suspends the request until `resume`; a synchronous core cannot,
                # so the one-shot breakpoint is only used up.
                rules.remove(rule)
            elif rule.action == "inject-error":
                if not injected:
                    self.active = []
                    injected = True
                self.active.insert(0, rule)
            else:
                new_state = rule.new_state
        self.state = new_state

    def rule_check(self, offset: int, length: int, iotype: int) -> None:
        """rule_check(): fail the request if an active rule covers it."""
        if not self.active:
            return
        bit = 1 << iotype
        for rule in self.active:
            if (rule.offset == UINT64 or (length and offset <= rule.offset < offset + length)) \
                    and rule.iotype_mask & bit:
                break
        else:
            return
        if not rule.error:
            return
        if rule.once:
            self.active.remove(rule)
            self.rules[rule.event].remove(rule)
        raise BlockError(_strerror(rule.error), rule.error)

    # -- breakpoints (qemu-io break / remove_break / resume) -----------------------------
    def debug_breakpoint(self, event: str, tag: str) -> None:
        if event not in EVENTS:
            raise BlockError(_strerror(errno.ENOENT), errno.ENOENT)
        self.rules.setdefault(event, []).insert(0, Rule(event, "suspend", 0, tag=tag))

    def debug_remove_breakpoint(self, tag: str) -> None:
        found = False
        for rules in self.rules.values():
            for rule in list(rules):
                if rule.action == "suspend" and rule.tag == tag:
                    rules.remove(rule)
                    found = True
        if not found:
            raise BlockError(_strerror(errno.ENOENT), errno.ENOENT)

    def debug_resume(self, tag: str) -> None:
        raise BlockError(_strerror(errno.ENOENT), errno.ENOENT)  # nothing is suspended

    # -- I/O ---------------------------------------------------------------------------
    def getlength(self) -> int:
        return self.image.getlength()

    def pread(self, offset: int, length: int) -> bytes:
        self.rule_check(offset, length, IO_READ)
        return self.image.pread(offset, length)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview, flags: int) -> None:
        # The block layer's events for a write to this node come around the request.
        self.write_gen += 1
        self.event("pwritev")
        try:
            self.rule_check(offset, len(data), IO_WRITE)
            self.image.pwrite(offset, data, flags)
        finally:
            self.event("pwritev_done")

    def pwrite_zeroes(self, offset: int, length: int, flags: int) -> None:
        self.write_gen += 1
        self.event("pwritev_zero")
        try:
            self.rule_check(offset, length, IO_WRITE_ZEROES)
            self.image.pwrite_zeroes(offset, length, flags)
        finally:
            self.event("pwritev_done")

    def pdiscard(self, offset: int, length: int) -> None:
        self.write_gen += 1
        self.rule_check(offset, length, IO_DISCARD)
        self.image.pdiscard(offset, length)

    def flush(self) -> None:
        """Only the rules: the request layer flushes the image node after us. With
        cache.no-flush (cache=unsafe) a flush never reaches the rules."""
        gen = self.write_gen
        if gen == self.flushed_gen or self.node.open_flags & O_NO_FLUSH:
            return
        self.rule_check(0, 0, IO_FLUSH)
        self.flushed_gen = gen

    def truncate(self, size: int, exact: bool, prealloc: str) -> None:
        self.image.truncate(size, exact, prealloc)

    def block_status(self, want_zero: bool, offset: int, length: int) -> BlockStatus:
        self.rule_check(offset, length, IO_BLOCK_STATUS)
        return BlockStatus(BLOCK_RAW | BLOCK_OFFSET_VALID, length, offset, self.image)

    def get_info(self) -> dict[str, int]:
        return {"cluster_size": 0, "vm_state_offset": 0}

    def get_allocated_file_size(self) -> int:
        from bdrv.driver import enotsup

        raise enotsup()


def _strerror(err: int) -> str:
    import os

    return os.strerror(err) if err > 0 else f"Unknown error {err}"
