"""blockdev-reopen and backing chains of three qcow2 images (base <- mid <- top): the
backing child replaced, set to null, left out ("backing is missing"), a cycle refused,
a read-write node as the backing, and an inline backing node dropped by a swap.

After each step: one line per node from query-named-block-nodes (read-only, the
backing file name from the header, the depth of the chain actually attached) and the
graph from x-debug-query-block-graph.
"""

from typing import Any

from harness import Iot, formats
from harness.machine import Machine, filter_qmp


def _nodes(iot: Iot, m: Machine) -> None:
    iot.log("nodes:")
    for n in m.cmd("query-named-block-nodes"):
        line = (f"  {n['node-name']}: drv={n['drv']} ro={n['ro']} "
                f"backing_file={n.get('backing_file', '-')} depth={n['backing_file_depth']}")
        iot.log(filter_qmp(line))


def _reopen(m: Machine, *options: dict[str, Any]) -> dict[str, Any]:
    return m.qmp_log("blockdev-reopen", options=list(options))


def _chain(iot: Iot) -> tuple[Any, Any, Any]:
    base = iot.create("1M", name="base.qcow2")
    mid = iot.create("1M", name="mid.qcow2", args=["-b", "base.qcow2", "-F", "qcow2"])
    top = iot.create("1M", name="top.qcow2", args=["-b", "mid.qcow2", "-F", "qcow2"])
    iot.io(base, "write -P 0x11 0 64k")
    iot.io(mid, "write -P 0x22 64k 64k")
    iot.io(top, "write -P 0x33 128k 64k")
    return base, mid, top


def _add_chain(m: Machine, base: Any, mid: Any, top: Any) -> None:
    m.qmp_log("blockdev-add", {"driver": "qcow2", "node-name": "base", "backing": None,
                               "file": {"driver": "file", "filename": base,
                                        "node-name": "base-file"}})
    m.qmp_log("blockdev-add", {"driver": "qcow2", "node-name": "mid", "backing": "base",
                               "file": {"driver": "file", "filename": mid,
                                        "node-name": "mid-file"}})
    m.qmp_log("blockdev-add", {"driver": "qcow2", "node-name": "top", "backing": "mid",
                               "file": {"driver": "file", "filename": top,
                                        "node-name": "top-file"}})


def _opts(name: str, **extra: Any) -> dict[str, Any]:
    options = {"driver": "qcow2", "node-name": name, "file": f"{name}-file"}
    options.update({k.replace("_", "-"): v for k, v in extra.items()})
    return options


@formats("qcow2")
def test_backing_replace(iot: Iot) -> None:
    base, mid, top = _chain(iot)
    m = iot.machine()
    _add_chain(m, base, mid, top)
    _nodes(iot, m)
    m.graph_log()
    iot.log("=== top's backing: base instead of mid ===")
    _reopen(m, _opts("top", backing="base"))
    _nodes(iot, m)
    m.graph_log()
    iot.log("=== mid is nobody's backing now: it can go ===")
    m.qmp_log("blockdev-del", node_name="base")
    m.qmp_log("blockdev-del", node_name="mid")
    _nodes(iot, m)
    iot.log("=== A node that does not exist, or a format with no backing ===")
    _reopen(m, _opts("top", backing="nosuch"))
    _reopen(m, _opts("top", backing="top-file"))
    _reopen(m, {"driver": "raw", "node-name": "base", "file": "base-file",
                "backing": None})
    _reopen(m, {"driver": "file", "node-name": "base-file", "filename": base,
                "backing": None})
    _nodes(iot, m)
    m.graph_log()
    m.qmp_log("quit")
    iot.io(top, ["read -P 0x11 0 64k", "read -P 0x22 64k 64k", "read -P 0x33 128k 64k"])


@formats("qcow2")
def test_backing_null(iot: Iot) -> None:
    """backing=null detaches; the header's backing file name stays (and is reported)."""
    base, mid, top = _chain(iot)
    m = iot.machine()
    _add_chain(m, base, mid, top)
    _reopen(m, _opts("mid", backing=None))
    _nodes(iot, m)
    m.graph_log()
    m.qmp_log("blockdev-del", node_name="base")
    iot.log("=== null again, then mid again ===")
    _reopen(m, _opts("top", backing=None))
    _reopen(m, _opts("top", backing=None))
    _nodes(iot, m)
    _reopen(m, _opts("top", backing="mid"))
    _nodes(iot, m)
    m.graph_log()
    iot.log("=== Both in one reopen ===")
    _reopen(m, _opts("top", backing=None), _opts("mid", backing=None))
    _nodes(iot, m)
    m.graph_log()
    m.qmp_log("quit")


@formats("qcow2")
def test_backing_missing(iot: Iot) -> None:
    """Leaving `backing` out of a reopen is an error while the node has a backing child
    or a backing file name; a qcow2 image without one may leave it out."""
    base, mid, top = _chain(iot)
    m = iot.machine()
    _add_chain(m, base, mid, top)
    _reopen(m, _opts("top"))
    _reopen(m, _opts("top", read_only=True))
    _reopen(m, _opts("mid"))
    _reopen(m, _opts("base"))
    _reopen(m, _opts("base", read_only=True))
    _reopen(m, _opts("top", backing="mid"), _opts("mid"))
    _reopen(m, _opts("mid", backing=None))
    _reopen(m, _opts("mid"))
    _nodes(iot, m)
    iot.log("=== A chain opened from the headers ===")
    for name in ("top", "mid", "base"):
        m.qmp_log("blockdev-del", node_name=name)
    m.qmp_log("blockdev-add", {"driver": "qcow2", "node-name": "top2",
                               "file": {"driver": "file", "filename": top}})
    _reopen(m, {"driver": "qcow2", "node-name": "top2",
                "file": {"driver": "file", "filename": top}})
    _nodes(iot, m)
    m.qmp_log("quit")


@formats("qcow2")
def test_backing_cycle(iot: Iot) -> None:
    base, mid, top = _chain(iot)
    m = iot.machine()
    _add_chain(m, base, mid, top)
    _reopen(m, _opts("base", backing="top"))
    _reopen(m, _opts("base", backing="mid"))
    _reopen(m, _opts("mid", backing="mid"))
    _reopen(m, _opts("mid", backing="top"))
    _reopen(m, _opts("mid", backing="top"), _opts("top", backing=None))
    _reopen(m, _opts("top", backing="base"), _opts("base", backing="mid"),
            _opts("mid", backing=None))
    _nodes(iot, m)
    m.graph_log()
    m.qmp_log("quit")


@formats("qcow2")
def test_backing_read_write(iot: Iot) -> None:
    """A backing node may be read-write (it was added so); the overlay takes only
    read permissions on it. Reopening the backing node read-only or back works."""
    base, mid, top = _chain(iot)
    other = iot.create("1M", name="other.qcow2")
    m = iot.machine()
    _add_chain(m, base, mid, top)
    m.qmp_log("blockdev-add", {"driver": "qcow2", "node-name": "other",
                               "file": {"driver": "file", "filename": other,
                                        "node-name": "other-file"}})
    _nodes(iot, m)
    m.graph_log()
    _reopen(m, _opts("base", read_only=True, backing=None))
    _reopen(m, _opts("mid", read_only=True, backing="base"))
    _nodes(iot, m)
    m.graph_log()
    iot.log("=== A read-write node as top's backing ===")
    _reopen(m, _opts("top", backing="other"))
    _reopen(m, _opts("other", read_only=True))
    _reopen(m, _opts("other"))
    _nodes(iot, m)
    m.graph_log()
    iot.log("=== And the backing made read-write in the same reopen ===")
    _reopen(m, _opts("top", backing="mid"), _opts("mid", backing="base"))
    _nodes(iot, m)
    m.graph_log()
    m.qmp_log("quit")


@formats("qcow2")
def test_backing_inline_dropped(iot: Iot) -> None:
    """A backing node opened along with its overlay goes away when a reopen replaces
    it; one added by the monitor stays."""
    base, mid, top = _chain(iot)
    m = iot.machine()
    m.qmp_log("blockdev-add", {"driver": "qcow2", "node-name": "base", "backing": None,
                               "file": {"driver": "file", "filename": base,
                                        "node-name": "base-file"}})
    m.qmp_log("blockdev-add", {
        "driver": "qcow2", "node-name": "top",
        "file": {"driver": "file", "filename": top, "node-name": "top-file"},
        "backing": {"driver": "qcow2", "node-name": "mid", "backing": "base",
                    "file": {"driver": "file", "filename": mid, "node-name": "mid-file"}}})
    _nodes(iot, m)
    m.graph_log()
    m.qmp_log("blockdev-del", node_name="mid")
    _reopen(m, _opts("top", backing="base"))
    _nodes(iot, m)
    m.graph_log()
    _reopen(m, _opts("top", backing="mid"))
    m.qmp_log("quit")


@formats("qcow2")
def test_backing_options_inline(iot: Iot) -> None:
    """`backing` given as options: they reopen the current backing node if it was
    opened along with its overlay (and must name that node); options for a backing
    node added on its own cannot change that way."""
    base, mid, top = _chain(iot)
    m = iot.machine()
    m.qmp_log("blockdev-add", {"driver": "qcow2", "node-name": "base", "backing": None,
                               "file": {"driver": "file", "filename": base,
                                        "node-name": "base-file"}})
    m.qmp_log("blockdev-add", {
        "driver": "qcow2", "node-name": "top",
        "file": {"driver": "file", "filename": top, "node-name": "top-file"},
        "backing": {"driver": "qcow2", "node-name": "mid", "backing": "base",
                    "file": {"driver": "file", "filename": mid, "node-name": "mid-file"}}})
    mid_opts = {"driver": "qcow2", "node-name": "mid", "backing": "base", "file": "mid-file"}
    _reopen(m, _opts("top", backing={**mid_opts, "detect-zeroes": "on",
                                     "cache": {"no-flush": True}}))
    for n in m.cmd("query-named-block-nodes", flat=True):
        iot.log(f"  {n['node-name']}: detect_zeroes={n['detect_zeroes']} "
                f"no-flush={n['cache']['no-flush']}")
    _reopen(m, _opts("top", backing={**mid_opts, "read-only": False}))
    _reopen(m, _opts("top", backing={**mid_opts, "node-name": "other"}))
    _reopen(m, _opts("top", backing={**mid_opts, "driver": "raw"}))
    _reopen(m, _opts("top", backing={**mid_opts, "backing": None}))
    _nodes(iot, m)
    m.graph_log()
    iot.log("=== mid's own backing, base, was added on its own ===")
    _reopen(m, _opts("top", backing={**mid_opts, "backing": {
        "driver": "qcow2", "node-name": "base", "file": "base-file", "backing": None}}))
    _reopen(m, _opts("top", backing="mid"),
            {**mid_opts, "backing": {"driver": "qcow2", "node-name": "base",
                                     "file": "base-file", "backing": None}})
    _nodes(iot, m)
    m.qmp_log("quit")


@formats("qcow2")
def test_io_reopen_backing(iot: Iot) -> None:
    """qemu-io's reopen on a chain opened from the image headers: options for the
    backing nodes (opened along, so they may change), and a `backing` reference,
    which -o can only give as a node name ('null' is one, not JSON's null)."""
    base, mid, top = _chain(iot)
    iot.io(top, ["read -P 0x11 0 64k", "reopen -o backing.detect-zeroes=on",
                 "reopen -o backing.backing.cache.no-flush=on",
                 "reopen -o backing.read-only=off", "reopen -o backing.node-name=x",
                 "reopen -o backing.driver=raw", "reopen -o backing.file.filename=x",
                 "reopen -o backing=nosuch", "reopen -o backing.backing=null",
                 "read -P 0 0 64k", "read -P 0x22 64k 64k", "read -P 0x33 128k 64k",
                 "reopen -o backing=null", "read -P 0 64k 64k", "read -P 0x33 128k 64k",
                 "reopen -r", "reopen -w", "write -P 0x44 192k 64k"])
    iot.img("map --output=json", top)
    iot.io(top, ["read -P 0x11 0 64k", "read -P 0x22 64k 64k", "read -P 0x44 192k 64k"])
    iot.img(["check", "-f", iot.fmt], top)


@formats("qcow2")
def test_io_reopen_backing_swap_reads(iot: Iot) -> None:
    """A backing swap seen by reads: qemu-io opens the chain with node names, then
    `reopen -o backing=base` skips mid (which goes away), and reads of mid's data
    now come from base."""
    base, mid, top = _chain(iot)
    spec = (f"driver=qcow2,node-name=top,file.filename={top.path},"
            f"backing.node-name=mid,backing.file.filename={mid.path},"
            f"backing.backing.node-name=base,backing.backing.file.filename={base.path}")
    s = iot.interactive(None, opts=["--image-opts", spec], fmt="")
    s.cmd("read -P 0x22 64k 64k")
    s.cmd("reopen -o backing=mid")
    s.cmd("reopen -o backing=top")
    s.cmd("reopen -o backing=base")
    s.cmd("read -P 0x11 0 64k")
    s.cmd("read -P 0 64k 64k")
    s.cmd("read -P 0x33 128k 64k")
    s.cmd("reopen -o backing=mid")
    s.cmd("write -P 0x55 256k 64k")
    s.cmd("reopen -r")
    s.cmd("read -P 0x55 256k 64k")
    s.close()
    iot.io(top, ["read -P 0x22 64k 64k", "read -P 0x55 256k 64k"])
    iot.img(["check", "-f", iot.fmt], top)
