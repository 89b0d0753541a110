"""blockdev-reopen, option by option: what the file, raw and qcow2 drivers and the block
layer let a reopen change, what they refuse ("Cannot change the option '...'"), and which
explicit options may be left out (reset to their default).

Each step is followed by a one-line summary per node from query-named-block-nodes
(node name, driver, read-only, cache modes, detect-zeroes, virtual size, file name):
the fields a reopen changes, without the allocation figures.
"""

from typing import Any

from harness import Iot, formats
from harness.machine import Machine, filter_qmp


def _nodes(iot: Iot, m: Machine) -> None:
    iot.log("nodes:")
    for n in m.cmd("query-named-block-nodes", flat=True):
        cache = n["cache"]
        line = (f"  {n['node-name']}: drv={n['drv']} ro={n['ro']} "
                f"direct={cache['direct']} no-flush={cache['no-flush']} "
                f"detect_zeroes={n['detect_zeroes']} size={n['image']['virtual-size']} "
                f"file={n['file']}")
        iot.log(filter_qmp(line))


def _reopen(m: Machine, *options: dict[str, Any]) -> dict[str, Any]:
    return m.qmp_log("blockdev-reopen", options=list(options))


def test_reopen_file_options(iot: Iot) -> None:
    img = iot.create("1M", fmt="raw", name="t.raw")
    other = iot.create("1M", fmt="raw", name="o.raw")
    m = iot.machine()
    f = {"driver": "file", "node-name": "f", "filename": img}
    m.qmp_log("blockdev-add", f)
    iot.log("=== Unchanged: accepted ===")
    _reopen(m, f)
    iot.log("=== Unchangeable ===")
    _reopen(m, {**f, "filename": other})
    _reopen(m, {**f, "locking": "off"})
    _reopen(m, {**f, "locking": "auto"})
    _reopen(m, {**f, "aio": "threads"})
    _reopen(m, {**f, "aio": "native"})
    _reopen(m, {**f, "aio-max-batch": 4})
    _reopen(m, {**f, "node-name": "g"})
    _reopen(m, {**f, "driver": "host_device"})
    _reopen(m, {**f, "drop-cache": "off"})
    iot.log("=== Changeable: x-check-cache-dropped (and left out again), drop-cache ===")
    _reopen(m, {**f, "x-check-cache-dropped": True})
    _reopen(m, f)
    _reopen(m, {**f, "drop-cache": False})
    _reopen(m, {**f, "drop-cache": True, "x-check-cache-dropped": False})
    iot.log("--- drop-cache, once given, must be given again ---")
    _reopen(m, f)
    _reopen(m, {**f, "drop-cache": True})
    _nodes(iot, m)
    iot.log("=== Explicit options: the same value again, or left out ===")
    g = {"driver": "file", "node-name": "g", "filename": other, "locking": "off",
         "aio": "threads", "aio-max-batch": 4}
    m.qmp_log("blockdev-add", g)
    _reopen(m, g)
    _reopen(m, {**g, "aio-max-batch": 8})
    _reopen(m, {k: v for k, v in g.items() if k != "locking"})
    _reopen(m, {k: v for k, v in g.items() if k != "aio"})
    _reopen(m, {k: v for k, v in g.items() if k != "aio-max-batch"})
    _reopen(m, {**g, "locking": "on"})
    _nodes(iot, m)
    m.qmp_log("quit")


def test_reopen_common_options(iot: Iot) -> None:
    """discard, cache.*, detect-zeroes, read-only, auto-read-only, force-share; the file
    child opened along with the raw node inherits what it does not set itself."""
    img = iot.create("1M", fmt="raw", name="t.raw")
    m = iot.machine()
    r = {"driver": "raw", "node-name": "r",
         "file": {"driver": "file", "filename": img, "node-name": "f"}}
    m.qmp_log("blockdev-add", r)
    r = {"driver": "raw", "node-name": "r", "file": "f"}
    _nodes(iot, m)
    iot.log("=== cache ===")
    _reopen(m, {**r, "cache": {"direct": True}})
    _reopen(m, {**r, "cache": {"no-flush": True}})
    _nodes(iot, m)
    iot.log("=== Inline child options: the file node follows its parent ===")
    r2 = {"driver": "raw", "node-name": "r2",
          "file": {"driver": "file", "filename": img, "node-name": "f2"}}
    m.qmp_log("blockdev-add", {**r2, "read-only": True})
    _reopen(m, {**r2, "read-only": True, "cache": {"direct": True, "no-flush": True}})
    _nodes(iot, m)
    _reopen(m, {**r2, "read-only": True,
                "file": {"driver": "file", "filename": img, "node-name": "f2",
                         "cache": {"direct": False}}})
    _nodes(iot, m)
    _reopen(m, {**r2, "read-only": True})
    _nodes(iot, m)
    iot.log("=== discard and detect-zeroes ===")
    _reopen(m, {**r, "detect-zeroes": "on"})
    _reopen(m, {**r, "detect-zeroes": "unmap"})
    _reopen(m, {**r, "detect-zeroes": "unmap", "discard": "ignore"})
    _reopen(m, {**r, "detect-zeroes": "unmap", "discard": "unmap"})
    _nodes(iot, m)
    _reopen(m, {**r, "discard": "unmap"})
    _reopen(m, {**r, "discard": "off"})
    iot.log("=== read-only, auto-read-only, force-share ===")
    _reopen(m, {**r, "read-only": True, "auto-read-only": True})
    _nodes(iot, m)
    _reopen(m, {**r, "auto-read-only": True})
    _nodes(iot, m)
    _reopen(m, {**r, "read-only": True, "force-share": True})
    _reopen(m, {**r, "force-share": False})
    _reopen(m, {**r, "read-only": True})
    _reopen(m, {**r2, "read-only": False})
    _nodes(iot, m)
    m.qmp_log("blockdev-add", {"driver": "file", "node-name": "fs", "filename": img,
                               "read-only": True, "force-share": True})
    _reopen(m, {"driver": "file", "node-name": "fs", "filename": img, "read-only": True})
    _reopen(m, {"driver": "file", "node-name": "fs", "filename": img,
                "force-share": True})
    _reopen(m, {"driver": "file", "node-name": "fs", "filename": img, "read-only": True,
                "force-share": True})
    _nodes(iot, m)
    m.qmp_log("quit")


def test_reopen_raw_window(iot: Iot) -> None:
    """raw's offset and size change on reopen; left out, they are reset."""
    img = iot.create("1M", fmt="raw", name="t.raw")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    r = {"driver": "raw", "node-name": "r", "file": "f"}
    m.qmp_log("blockdev-add", {**r, "offset": 4096, "size": 8192})
    _nodes(iot, m)
    _reopen(m, {**r, "offset": 0, "size": 65536})
    _nodes(iot, m)
    _reopen(m, {**r, "offset": 65536})
    _nodes(iot, m)
    _reopen(m, r)
    _nodes(iot, m)
    iot.log("=== Out of the file, or badly aligned ===")
    _reopen(m, {**r, "offset": 1048576, "size": 512})
    _reopen(m, {**r, "offset": 2097152})
    _reopen(m, {**r, "size": 2097152})
    _reopen(m, {**r, "size": 1000})
    _reopen(m, {**r, "offset": 1})
    _reopen(m, {**r, "offset": -1})
    _reopen(m, {**r, "size": "4k"})
    _nodes(iot, m)
    m.qmp_log("quit")


@formats("qcow2")
def test_reopen_qcow2_options(iot: Iot) -> None:
    """Every qcow2 runtime option changes on reopen; bad values and combinations fail
    with qcow2's messages, and the node stays as it was."""
    img = iot.create("1M")
    m = iot.machine()
    m.qmp_log("blockdev-add", driver="file", node_name="f", filename=img)
    q = {"driver": "qcow2", "node-name": "q", "file": "f"}
    m.qmp_log("blockdev-add", q)
    iot.log("=== Changeable ===")
    for opts in ({"lazy-refcounts": True}, {"lazy-refcounts": False},
                 {"pass-discard-request": False}, {"pass-discard-snapshot": False},
                 {"pass-discard-other": True},
                 {"overlap-check": "none"}, {"overlap-check": "all"},
                 {"overlap-check": {"template": "constant", "active-l2": True}},
                 {"overlap-check": {"inactive-l1": False}},
                 {"cache-size": 1048576}, {"l2-cache-size": 262144},
                 {"refcount-cache-size": 65536},
                 {"cache-size": 1048576, "l2-cache-size": 524288},
                 {"l2-cache-entry-size": 4096}, {"cache-clean-interval": 10},
                 {"cache-clean-interval": 0}):
        _reopen(m, {**q, **opts})
    iot.log("=== Refused ===")
    for opts in ({"overlap-check": "bogus"}, {"overlap-check": {"template": "bogus"}},
                 {"overlap-check": 5},
                 {"cache-size": 1048576, "l2-cache-size": 262144,
                  "refcount-cache-size": 65536},
                 {"cache-size": 65536, "l2-cache-size": 262144},
                 {"cache-size": 65536, "refcount-cache-size": 131072},
                 {"l2-cache-entry-size": 1000}, {"l2-cache-entry-size": 256},
                 {"l2-cache-entry-size": 131072},
                 {"cache-clean-interval": -1}, {"lazy-refcounts": "on"},
                 {"discard-no-unref": True}, {"data-file": "f"}, {"bogus": 1}):
        _reopen(m, {**q, **opts})
    iot.log("=== The same checks when a node is added ===")
    img3 = iot.create("1M", name="t3.qcow2")
    for opts in ({"cache-size": 65536, "l2-cache-size": 262144},
                 {"l2-cache-entry-size": 1000}, {"cache-clean-interval": -1},
                 {"overlap-check": {"template": "none", "active-l1": True}}):
        m.qmp_log("blockdev-add", {"driver": "qcow2", "node-name": "q3",
                                   "file": {"driver": "file", "filename": img3}, **opts})
    m.qmp_log("blockdev-del", node_name="q3")
    iot.log("=== Explicit options left out ===")
    img2 = iot.create("1M", name="t2.qcow2")
    m.qmp_log("blockdev-add", driver="file", node_name="f2", filename=img2, read_only=True)
    q2 = {"driver": "qcow2", "node-name": "q2", "file": "f2", "read-only": True,
          "lazy-refcounts": True, "cache-size": 1048576, "overlap-check": "none",
          "pass-discard-other": True}
    m.qmp_log("blockdev-add", q2)
    _reopen(m, {k: v for k, v in q2.items() if k not in ("lazy-refcounts", "cache-size")})
    _reopen(m, {"driver": "qcow2", "node-name": "q2", "file": "f2", "read-only": True})
    _nodes(iot, m)
    m.qmp_log("quit")


@formats("qcow2")
def test_reopen_qcow2_lazy_refcounts_v2(iot: Iot) -> None:
    """A compat=0.10 image has no lazy refcounts; the refused reopen keeps the node."""
    img = iot.create("1M", opts="compat=0.10")
    m = iot.machine()
    q = {"driver": "qcow2", "node-name": "q",
         "file": {"driver": "file", "filename": img, "node-name": "f"}}
    m.qmp_log("blockdev-add", q)
    q = {"driver": "qcow2", "node-name": "q", "file": "f"}
    _reopen(m, {**q, "lazy-refcounts": True})
    _reopen(m, {**q, "lazy-refcounts": True, "read-only": True})
    _reopen(m, {**q, "lazy-refcounts": False, "read-only": True})
    _nodes(iot, m)
    _reopen(m, q)
    _nodes(iot, m)
    _reopen(m, {**q, "file": {"driver": "file", "filename": img, "node-name": "f"}})
    _nodes(iot, m)
    m.qmp_log("quit")
    iot.img(["check", "-f", iot.fmt], img)


@formats("qcow2")
def test_io_reopen_qcow2_options(iot: Iot) -> None:
    """qemu-io's `reopen -o` with qcow2 options given as strings: sizes with suffixes,
    booleans as on/off, bad values and combinations."""
    img = iot.create("1M")
    iot.io(img, ["write -P 0x55 0 64k", "reopen -o lazy-refcounts=on",
                 "write -P 0x56 64k 64k", "reopen -o lazy-refcounts=off",
                 "reopen -o cache-size=2M,l2-cache-size=1M",
                 "reopen -o l2-cache-entry-size=4k,refcount-cache-size=64k",
                 "reopen -o overlap-check=none", "reopen -o overlap-check.template=all",
                 "reopen -o overlap-check.main-header=off,overlap-check.active-l1=on",
                 "reopen -o pass-discard-request=off,pass-discard-other=on",
                 "reopen -o cache-clean-interval=30", "read -P 0x56 64k 64k"])
    iot.img(["check", "-f", iot.fmt], img)
    iot.io(img, ["reopen -o cache-size=foo", "reopen -o cache-size=1M,l2-cache-size=2M",
                 "reopen -o cache-size=1M,l2-cache-size=64k,refcount-cache-size=64k",
                 "reopen -o l2-cache-entry-size=1000", "reopen -o l2-cache-entry-size=128k",
                 "reopen -o overlap-check=bogus",
                 "reopen -o overlap-check=none,overlap-check.template=all",
                 "reopen -o overlap-check.main-header=maybe",
                 "reopen -o lazy-refcounts=maybe", "reopen -o cache-clean-interval=-1",
                 "reopen -o cache-clean-interval=4294967296", "reopen -o discard-no-unref=on",
                 "reopen -o data-file=x", "read -P 0x55 0 64k"])
    iot.log("=== The same checks when the image is opened ===")
    for opts in ("cache-size=64k,l2-cache-size=1M", "l2-cache-entry-size=256",
                 "cache-clean-interval=-5", "overlap-check=all,overlap-check.template=none"):
        iot.io(None, "read -P 0x55 0 64k", fmt="",
               opts=["--image-opts", f"driver=qcow2,file.filename={img.path},{opts}"])
