"""bdrv.reopen: the queue, the transaction, and bdrv-io's `reopen` against qemu-io 7.2."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bdrv.backend import Backend
from bdrv.errors import BlockError
from bdrv.graph import O_NOCACHE, O_RDWR, O_UNMAP, PERM_CONSISTENT_READ, Node
from bdrv.reopen import ReopenQueue, current_explicit_options, reopen

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("io_oracle")
from io_oracle import QEMU_IO, cmds, compare, make_image, needs_qemu_io  # noqa: E402
from test_io_locks import held_over_session  # noqa: E402


@pytest.fixture
def image(tmp_path: Path) -> Path:
    make_image(tmp_path)
    return tmp_path / "t.raw"


def _open(image: Path, flags: int = O_RDWR | O_UNMAP, **opts: Any) -> Backend:
    return Backend.open(str(image), {"driver": "raw", **opts}, flags, warn=lambda _: None)


def _snapshot(node: Node) -> list[tuple[Any, ...]]:
    """Everything a failed reopen must leave as it was, for every node below `node`."""
    state = []
    for each in node.walk():
        drv = each.driver
        state.append((each.node_name, each.open_flags, dict(each.options),
                      dict(each.explicit_options), each.perm, each.shared,
                      [(c.perm, c.shared) for c in each.children],
                      getattr(drv, "fd", None), getattr(drv, "mode", None),
                      getattr(drv, "offset", None), getattr(drv, "size", None),
                      each.request_alignment))
    return state


def _access_mode(backend: Backend) -> int:
    file = backend.node.file
    assert file is not None
    fd = file.node.driver.fd  # type: ignore[attr-defined]
    return fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_DIRECT)


# -- the transaction ------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"read-only": False, "driver": "qcow2"}, "Cannot change the option 'driver'"),
    ({"read-only": False, "file.locking": "off"}, "Cannot change the option 'locking'"),
    ({"read-only": False, "offset": "2M"}, "Offset (2097152) cannot be greater than size "
     "of the containing file (1048576)"),
    ({"read-only": False, "file.drop-cache": "foo"}, "Parameter 'drop-cache' expects 'on' or "
     "'off'"),
    ({"read-only": True, "file.read-only": False, "file.filename": "other"},
     "Cannot change the option 'filename'"),
    ({"read-only": False, "cache.direct": True, "file.aio": "native"},
     "Cannot change the option 'aio'"),
])
def test_failed_reopen_leaves_every_node_as_before(image: Path, options: dict[str, Any],
                                                   message: str) -> None:
    blk = _open(image, O_RDWR | O_UNMAP, offset="512")
    try:
        before = _snapshot(blk.node)
        mode = _access_mode(blk)
        with pytest.raises(BlockError) as info:
            reopen(blk.node, options)
        assert info.value.message == message
        assert _snapshot(blk.node) == before
        assert _access_mode(blk) == mode
        blk.pwrite(0, b"still writable")
    finally:
        blk.close()


def test_permission_failure_rolls_back_fd_and_flags(image: Path) -> None:
    # A writer on the node: making it read-only fails in the permission stage, after the
    # file driver has opened its new descriptor; the old one must stay in use.
    blk = _open(image)
    try:
        before = _snapshot(blk.node)
        with pytest.raises(BlockError, match="cannot support read-write users"):
            reopen(blk.node, {"read-only": True, "cache.direct": True})
        assert _snapshot(blk.node) == before
        assert _access_mode(blk) == os.O_RDWR
    finally:
        blk.close()


def _edges(nodes: list[Node]) -> list[tuple[Any, ...]]:
    """Who is whose child, in order, with the permissions: the graph to compare."""
    return [(n.node_name, [(c.name, id(c), c.node.node_name, c.perm, c.shared)
                           for c in n.children],
             [id(c) for c in n.parents]) for n in nodes]


def test_child_swap_undone_when_a_later_node_fails(image: Path, tmp_path: Path) -> None:
    make_image(tmp_path, "b.raw")
    blk = _open(image)
    other = _open(tmp_path / "b.raw", **{"file.node-name": "fb"})
    try:
        assert other.node.file is not None
        fb = other.node.file.node
        nodes = [blk.node, *blk.node.walk(), other.node, fb]
        before, snapshots = _edges(nodes), [_snapshot(n) for n in (blk.node, other.node)]
        names = {"fb": fb}
        queue = ReopenQueue(names.get)
        queue.add(blk.node, {"file": "fb"}, keep_old_opts=True)
        queue.add(other.node, {"offset": "4k", "size": "1000"}, keep_old_opts=True)
        with pytest.raises(BlockError, match="Specified size is not multiple of 512"):
            queue.run()
        assert _edges(nodes) == before
        assert [_snapshot(n) for n in (blk.node, other.node)] == snapshots
        blk.pwrite(0, b"still on a.raw")
        assert (image.read_bytes()[:14]) == b"still on a.raw"
    finally:
        blk.close()
        other.close()


def test_child_swap_commits_and_closes_the_dropped_child(image: Path, tmp_path: Path) -> None:
    make_image(tmp_path, "b.raw")
    blk = _open(image)
    other = _open(tmp_path / "b.raw", **{"file.node-name": "fb"})
    try:
        assert blk.node.file is not None and other.node.file is not None
        old, fb = blk.node.file.node, other.node.file.node
        queue = ReopenQueue({"fb": fb}.get)
        queue.add(blk.node, {"file": "fb"}, keep_old_opts=True)
        queue.run()
        assert blk.node.file.node is fb and old.closed
        assert [c.parent for c in fb.parents] == [other.node, blk.node]
        # Both raw nodes write through fb now (raw shares everything).
        blk.pwrite(0, b"now on b.raw")
        assert (tmp_path / "b.raw").read_bytes()[:12] == b"now on b.raw"
        queue = ReopenQueue({"fb": fb, "r": blk.node}.get)
        queue.add(blk.node, {"file": "r"}, keep_old_opts=True)
        with pytest.raises(BlockError, match="would create a cycle"):
            queue.run()
    finally:
        blk.close()
        other.close()


def test_read_write_transitions_reopen_the_descriptor(image: Path) -> None:
    blk = _open(image, O_UNMAP)
    try:
        assert _access_mode(blk) == os.O_RDONLY
        reopen(blk.node, {"read-only": False})
        assert not blk.node.read_only and blk.node.file is not None
        assert not blk.node.file.node.read_only
        assert _access_mode(blk) == os.O_RDWR
        reopen(blk.node, {"cache.direct": True})
        assert _access_mode(blk) == os.O_RDWR | os.O_DIRECT
        assert blk.node.open_flags & O_NOCACHE
        assert blk.node.file.node.request_alignment == 4096
        blk.set_perm(blk.child.perm | 0x2, blk.child.shared)
        blk.pwrite(1, b"x")
        assert blk.pread(0, 3) == b"\0x\0"
        blk.set_perm(PERM_CONSISTENT_READ, blk.child.shared)
        reopen(blk.node, {"read-only": True, "cache.direct": False})
        assert _access_mode(blk) == os.O_RDONLY
        assert blk.node.file.node.request_alignment == 1
    finally:
        blk.close()


# -- option precedence ------------------------------------------------------------------------
def test_precedence_explicit_over_old_explicit_over_inherited(image: Path) -> None:
    blk = _open(image, O_RDWR | O_UNMAP)
    try:
        file = blk.node.file
        assert file is not None
        # An explicit file.read-only=on survives the parent becoming read-write again.
        blk.set_perm(PERM_CONSISTENT_READ, blk.child.shared)
        reopen(blk.node, {"read-only": True, "file.read-only": True})
        reopen(blk.node, {"read-only": False})
        assert not blk.node.read_only and file.node.read_only
        assert current_explicit_options(file.node) == {"read-only": True}
        # Explicitly passed beats the old explicit value.
        reopen(blk.node, {"file.read-only": False})
        assert not file.node.read_only
        # Inherited values follow the parent; old effective ones fill in the rest.
        reopen(blk.node, {"cache.no-flush": True})
        assert file.node.options["cache.no-flush"] is True
        assert file.node.options["filename"] == str(image)
        assert file.node.options["discard"] == "unmap"
    finally:
        blk.close()


def test_queue_takes_the_children_that_inherit(image: Path) -> None:
    blk = _open(image)
    try:
        queue = ReopenQueue()
        queue.add(blk.node, {"read-only": True, "file.cache.direct": True, "offset": "512"})
        root, file = queue.entries
        assert root.node is blk.node and file.node is blk.node.file.node  # type: ignore[union-attr]
        assert root.explicit_options == {"read-only": True, "offset": "512", "driver": "raw"}
        assert file.explicit_options == {"cache.direct": True}
        assert file.options["read-only"] is True  # inherited
        assert file.flags & O_NOCACHE and not file.flags & O_RDWR
        assert queue.new_flags(blk.node) == root.flags
    finally:
        blk.close()


def test_minus_r_overrides_an_earlier_explicit_read_only_off(image: Path) -> None:
    blk = _open(image)
    try:
        reopen(blk.node, {"read-only": "off"})
        blk.set_perm(PERM_CONSISTENT_READ, blk.child.shared)
        reopen(blk.node, {"read-only": True})
        assert blk.node.read_only
    finally:
        blk.close()


# -- bdrv-io against qemu-io ------------------------------------------------------------------
ORACLE = {
    "help": cmds("help reopen", "help"),
    "ro_rw": cmds("reopen -r", "write 0 512", "reopen -w", "write -P 0x11 0 512",
                  "read -P 0x11 0 512"),
    "unchangeable": cmds("reopen -o driver=qcow2", "reopen -o driver=raw",
                         "reopen -o node-name=foo", "reopen -o file.filename=x",
                         "reopen -o file.filename=t.raw", "reopen -o file.locking=off",
                         "reopen -o file.driver=file", "reopen -o file.node-name=y",
                         "reopen -o file.driver=raw", "reopen -o foo=bar",
                         "reopen -o file.foo=bar", "reopen -o force-share=on",
                         "reopen -o file.aio=threads", "reopen -o help"),
    "bad_input": cmds("reopen -c bad", "reopen -r -w", "reopen -r -o read-only=on",
                      "reopen -c none -o cache.direct=on", "reopen x", "reopen -x",
                      "reopen -o read-only=foo", "reopen -o discard=foo",
                      "reopen -o detect-zeroes=foo",
                      "reopen -o detect-zeroes=unmap,discard=ignore",
                      "reopen -o file.drop-cache=foo", "reopen -o cache.direct=foo",
                      "reopen -o id=foo", "reopen -o foo"),
    "options_carry_over": cmds("reopen -o a=b -c bad", "reopen", "reopen -o a=b -r -w",
                               "reopen -c none", "reopen -o a=b x", "reopen"),
    "window": cmds("reopen -o offset=2M", "reopen -o size=513", "reopen -o size=2M",
                   "reopen -o offset=1k,size=4k", "length", "reopen -o offset=0", "length",
                   "reopen -o offset=1k", "length", "reopen", "length"),
    # Named nodes: QEMU's automatic names end in two random digits.
    "read_only_with_writer": cmds("reopen -o read-only=on", "reopen -o file.read-only=on",
                                  "reopen -o file.read-only=off", "write 0 1",
                                  fmt=None, extra=("--image-opts",),
                                  image="driver=raw,node-name=top,file.filename=t.raw,"
                                        "file.node-name=proto"),
    "file_stays_read_only": cmds("reopen -o file.read-only=on", "reopen -w", "write 0 1",
                                 "reopen -o file.read-only=off,read-only=off", "write 0 1",
                                 extra=("-r",)),
    "cache_modes": cmds("reopen -c none", "write -P 1 1 1", "read -P 1 1 1",
                        "reopen -c writeback", "read -P 1 1 1", "reopen -c directsync",
                        "write -P 2 0 4k", "reopen -c unsafe", "flush",
                        "reopen -c writethrough", "read -P 2 0 4k"),
    "discard_modes": cmds("reopen -o discard=ignore", "discard 0 4k", "map",
                          "reopen -o discard=unmap", "discard 0 4k", "map"),
    "resize_kept_read_only": cmds("truncate 2M", "reopen -r", "truncate 1M", "length",
                                  "reopen -w", "truncate 1M", "length"),
    "force_share": cmds("reopen -w", "reopen -o force-share=off", "reopen -o force-share=on",
                        extra=("-r", "-U")),
    "no_file": cmds("reopen", fmt=None, image=None),
}


@needs_qemu_io
@pytest.mark.parametrize("name", sorted(ORACLE))
def test_reopen_like_qemu_io(tmp_path: Path, name: str) -> None:
    compare(tmp_path, ORACLE[name])


def test_reopen_node_name_with_image_opts(tmp_path: Path) -> None:
    if QEMU_IO is None:
        pytest.skip("qemu-io not installed")
    compare(tmp_path, ["-c", "reopen -o node-name=x", "-c", "reopen -o node-name=y",
                       "--image-opts", "driver=raw,node-name=x,file.filename=t.raw"])


LOCK_SESSIONS = {
    "ro_rw_ro": ["reopen -r", "reopen -w", "write 0 512", "reopen -r", "reopen -w",
                 "truncate 1M", "reopen -r", "truncate 1M", "reopen -w", "write 0 1",
                 "reopen -c none", "reopen -c unsafe", "reopen -r -o read-only=on"],
    "opened_read_only": ["reopen -w", "write 0 512", "reopen -r", "read 0 512"],
}


@needs_qemu_io
@pytest.mark.parametrize("name", sorted(LOCK_SESSIONS))
def test_lock_bytes_over_reopens(tmp_path: Path, name: str) -> None:
    assert QEMU_IO is not None
    commands = LOCK_SESSIONS[name]
    args = ["-r", "-f", "raw", "t.raw"] if name == "opened_read_only" else ["-f", "raw", "t.raw"]
    code = ("import sys; from bdrv.tools.io_shell import main; "
            "sys.exit(main(['qemu-io'] + sys.argv[1:]))")
    results = []
    for side in ("qemu", "bdrv"):
        d = tmp_path / side
        d.mkdir()
        make_image(d)
        argv = (["bash", "-c", 'exec -a qemu-io "$0" "$@"', QEMU_IO, *args] if side == "qemu"
                else [sys.executable, "-c", code, *args])
        results.append(held_over_session(argv, d, commands))
    assert results[1] == results[0]
