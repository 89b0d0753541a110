"""Finding and validating the parent of a differencing VHD.

Locators are tried relative ones first (resolved against the child's directory), then
absolute ones; the first that names an existing file wins. The parent is checked by
its footer UUID (and time stamp when the child recorded one), and the chain of
parents is walked once to refuse loops before anything is opened.
"""

from __future__ import annotations

import errno
import os
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass

from bdrv.drivers.vpc.dynamic import (
    HEADER_SIZE,
    MAX_LOCATOR_BYTES,
    PLAT_NONE,
    DynamicHeader,
    LocatorError,
    decode_locator,
    platform_name,
)
from bdrv.drivers.vpc.footer import (
    COOKIE,
    FOOTER_SIZE,
    TYPE_DIFFERENCING,
    VHD_EPOCH,
    Footer,
)
from bdrv.errors import BlockError

ReadFn = Callable[[int, int], bytes]

# How many parents we follow when looking for a loop; deeper chains are not refused.
MAX_CHAIN_SCAN = 1024


@dataclass
class ParentCandidate:
    display: str  # what info shows as the backing file name
    path: str  # the path resolved against the child's directory
    relative: bool


@dataclass
class ParentSearch:
    candidates: list[ParentCandidate]
    problems: list[str]

    def chosen(self) -> ParentCandidate | None:
        """The first candidate that exists, else the first one at all."""
        for cand in self.candidates:
            if os.path.exists(cand.path):
                return cand
        return self.candidates[0] if self.candidates else None


def _read(fd: int, offset: int, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = os.pread(fd, length - len(data), offset + len(data))
        if not chunk:
            break
        data += chunk
    return data


def locator_candidates(header: DynamicHeader, read: ReadFn, file_size: int,
                       child_dir: str) -> ParentSearch:
    """Decode every locator of `header` into parent path candidates, relative first."""
    rel: list[ParentCandidate] = []
    absolute: list[ParentCandidate] = []
    problems: list[str] = []
    for loc in header.locators:
        if loc.platform == PLAT_NONE:
            continue
        where = f"locator {loc.index} ({platform_name(loc.platform)})"
        if loc.data_length == 0 or loc.data_length > MAX_LOCATOR_BYTES:
            problems.append(f"{where}: bad data length {loc.data_length}")
            continue
        if loc.data_offset < HEADER_SIZE or loc.data_offset + loc.data_length > file_size:
            problems.append(f"{where}: data at offset {loc.data_offset} is outside the file")
            continue
        try:
            path = decode_locator(loc, read(loc.data_offset, loc.data_length))
        except LocatorError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if loc.is_relative:
            display = path[2:] if path.startswith("./") else path
            resolved = os.path.normpath(os.path.join(child_dir, display))
            rel.append(ParentCandidate(display, resolved, True))
        else:
            absolute.append(ParentCandidate(path, path, False))
    return ParentSearch(rel + absolute, problems)



def no_parent_error(child: str, search: ParentSearch) -> BlockError:
    detail = "; ".join(search.problems) if search.problems else "it has no parent locator"
    return BlockError(f"Could not find the parent of differencing image '{child}': {detail}",
                      errno.EINVAL)


def read_vhd_footer(path: str) -> Footer | None:
    """The footer of the VHD at `path` (start, else end of file); None if not a VHD."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = _read(fd, 0, FOOTER_SIZE)
        if head[:8] == COOKIE:
            return Footer.parse(head)
        size = os.fstat(fd).st_size
        if size >= FOOTER_SIZE:
            tail = _read(fd, size - FOOTER_SIZE, FOOTER_SIZE)
            if tail[:8] == COOKIE:
                return Footer.parse(tail)
    finally:
        os.close(fd)
    return None


def check_parent_identity(child: str, parent_uuid: bytes, parent_timestamp: int,
                          parent_path: str, parent: Footer) -> None:
    """Refuse a parent that is not the one the child was made from.

    The time stamp is compared only when the child recorded one (Windows writes 0);
    it may be the parent footer's time stamp or the parent file's modification time.
    """
    if parent.uuid != parent_uuid:
        raise BlockError(
            f"Parent '{parent_path}' of differencing image '{child}' has UUID "
            f"{uuidlib.UUID(bytes=parent.uuid)}, but the image expects "
            f"{uuidlib.UUID(bytes=parent_uuid)} (open with check_parent=off to override)")
    if parent_timestamp == 0 or parent.timestamp == parent_timestamp:
        return
    try:
        mtime = int(os.stat(parent_path).st_mtime) - VHD_EPOCH
    except OSError:
        mtime = -1
    if mtime & 0xFFFFFFFF == parent_timestamp:
        return
    raise BlockError(
        f"Parent '{parent_path}' of differencing image '{child}' has time stamp "
        f"{parent.timestamp}, but the image expects {parent_timestamp} "
        f"(open with check_parent=off to override)")


def _parent_of(path: str) -> str | None:
    """The parent path a differencing VHD at `path` points to (None: not differencing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        footer = Footer.parse(_read(fd, 0, FOOTER_SIZE))
        if not footer.has_cookie or footer.disk_type != TYPE_DIFFERENCING:
            return None
        size = os.fstat(fd).st_size
        if footer.data_offset >= size:
            return None
        header = DynamicHeader.parse(_read(fd, footer.data_offset, HEADER_SIZE))
        search = locator_candidates(header, lambda off, n: _read(fd, off, n), size,
                                    os.path.dirname(path))
        chosen = search.chosen()
        return chosen.path if chosen is not None else None
    finally:
        os.close(fd)


def check_no_loop(child_path: str, first_parent: str) -> None:
    """Follow the parents from `first_parent`; refuse one that leads back to a visited file."""
    seen: set[tuple[int, int]] = set()
    try:
        st = os.stat(child_path)
        seen.add((st.st_dev, st.st_ino))
    except OSError:
        return
    current: str | None = first_parent
    for _ in range(MAX_CHAIN_SCAN):
        if current is None:
            return
        try:
            st = os.stat(current)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen:
            raise BlockError(f"Backing file '{current}' creates an infinite loop.",
                             errno.ELOOP)
        seen.add((st.st_dev, st.st_ino))
        current = _parent_of(current)

