"""The block commands of bdrv-storage-daemon, as qemu-storage-daemon 7.2 runs them.

`BlockMonitor` owns the nodes added with blockdev-add (the monitor's reference is a
permission-less parent edge, so a node someone else uses stays open when the
monitor lets go) and the jobs of blockdev-create.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from bdrv.errors import BlockError
from bdrv.graph import (
    CHILD_IMAGE,
    O_RDWR,
    PERM_ALL,
    PERM_CONSISTENT_READ,
    PERM_RESIZE,
    PERM_WRITE,
    PERM_WRITE_UNCHANGED,
    Child,
    Node,
    Parent,
    attach_child,
    detach_child,
)
from bdrv.open import forget_node_name, open_node
from bdrv.options import flatten
from bdrv.tools.qmp_schema import (
    BLOCKDEV_CREATE_OPTIONS,
    BLOCKDEV_OPTIONS,
    BOOL,
    INT,
    STR,
    QMPError,
    check,
    list_of,
    opt,
    req,
    struct,
)

Emit = Callable[[str, dict[str, Any]], None]
Defer = Callable[[Callable[[], None]], None]

# BlockPermission, in enum order.
_PERMS = ((PERM_CONSISTENT_READ, "consistent-read"), (PERM_WRITE, "write"),
          (PERM_WRITE_UNCHANGED, "write-unchanged"), (PERM_RESIZE, "resize"))


class MonitorRef(Parent):
    """The monitor's hold on a node it added (a reference, no permissions)."""

    def parent_description(self, child: Child) -> str:
        return "the monitor"


class TempBackend(Parent):
    """The anonymous BlockBackend a command such as block_resize opens on a node."""

    def parent_description(self, child: Child) -> str:
        return (f"an unnamed block device (uses node '{child.node.node_name}' as "
                f"'{child.name}' child)")


def _perm_list(perm: int) -> list[str]:
    return [name for bit, name in reversed(_PERMS) if perm & bit]


class Job:
    def __init__(self, job_id: str, kind: str) -> None:
        self.id = job_id
        self.type = kind
        self.status = "created"
        self.error: str | None = None
        self.progress = 0


class BlockMonitor:
    """The graph as the monitor sees it, and the command handlers."""

    def __init__(self, emit: Emit, defer: Defer, version: dict[str, Any],
                 on_quit: Callable[[], None]) -> None:
        self.emit = emit
        self.defer = defer
        self.version = version
        self.on_quit = on_quit
        self.owned: dict[str, Child] = {}
        self.order: list[Node] = []  # every node, in creation order
        self.jobs: dict[str, Job] = {}

    def commands(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "blockdev-add": self.blockdev_add,
            "blockdev-del": self.blockdev_del,
            "blockdev-reopen": self.blockdev_reopen,
            "blockdev-create": self.blockdev_create,
            "block_resize": self.block_resize,
            "query-named-block-nodes": self.query_named_block_nodes,
            "x-debug-query-block-graph": self.x_debug_query_block_graph,
            "query-jobs": self.query_jobs,
            "job-dismiss": self.job_dismiss,
            "query-version": self.query_version,
            "quit": self.quit,
        }

    # -- the graph ----------------------------------------------------------------
    def _nodes(self) -> list[Node]:
        self.order = [n for n in self.order if not n.closed]
        return self.order

    def _register(self, node: Node) -> None:
        """Record new nodes in the order open.py created them (file, node, backing)."""
        known = {id(n) for n in self.order}
        stack: list[tuple[Node, bool]] = [(node, False)]
        seen: set[int] = set()
        while stack:
            current, expanded = stack.pop()
            if expanded:
                if id(current) not in known:
                    known.add(id(current))
                    self.order.append(current)
                continue
            if id(current) in seen:
                continue
            seen.add(id(current))
            later = [c.node for c in current.children if c.name != "file"]
            first = [c.node for c in current.children if c.name == "file"]
            for child in reversed(later):
                stack.append((child, False))
            stack.append((current, True))
            for child in reversed(first):
                stack.append((child, False))

    def find(self, name: str) -> Node | None:
        for node in self._nodes():
            if node.node_name == name:
                return node
        return None

    def close(self) -> None:
        for name in list(self.owned):
            self._release(name)

    def _release(self, name: str) -> None:
        edge = self.owned.pop(name)
        node = edge.node
        detach_child(edge)
        if not node.parents:
            nodes = list(node.walk())
            node.close()
            for each in nodes:
                if each.closed:
                    forget_node_name(each)

    # -- commands -----------------------------------------------------------------
    def blockdev_add(self, args: dict[str, Any]) -> None:
        check(BLOCKDEV_OPTIONS, args)
        if "node-name" not in args:
            raise QMPError("'node-name' must be specified for the root node")
        options = flatten(args)
        flags = 0 if args.get("read-only") else O_RDWR
        options.setdefault("discard", "ignore")
        try:
            node = open_node(None, options, flags, warn=lambda _text: None)
        except BlockError as exc:
            raise QMPError(exc.message) from None
        if "discard" not in args:
            node.explicit_options.pop("discard", None)  # blockdev-add's default
        edge = Child("monitor", CHILD_IMAGE, MonitorRef(), node, 0, PERM_ALL)
        attach_child(edge)
        self.owned[node.node_name] = edge
        self._register(node)

    def blockdev_del(self, args: dict[str, Any]) -> None:
        check(struct(req("node-name", STR)), args)
        name = args["node-name"]
        node = self.find(name)
        if node is None:
            raise QMPError(f"Failed to find node with node-name='{name}'")
        for edge in reversed(node.parents):  # the newest blocker is reported
            if edge.name == "backing" and isinstance(edge.parent, Node):
                raise QMPError(f"Node '{name}' is busy: node is used as backing hd of "
                               f"'{edge.parent.node_name}'")
        if name not in self.owned:
            raise QMPError(f"Node {name} is not owned by the monitor")
        if len(node.parents) > 1:
            raise QMPError(f"Block device {name} is in use")
        self._release(name)

    def blockdev_reopen(self, args: dict[str, Any]) -> None:
        from bdrv.reopen import ReopenQueue

        check(struct(req("options", list_of(BLOCKDEV_OPTIONS))), args)
        queue = ReopenQueue(self.find)
        for options in args["options"]:
            name = options.get("node-name")
            if name is None:
                raise QMPError("node-name not specified")
            node = self.find(name)
            if node is None:
                raise QMPError(f"Failed to find node with node-name='{name}'")
            queue.add(node, flatten(options), keep_old_opts=False)
        try:
            queue.run()
        except BlockError as exc:
            raise QMPError(exc.message) from None

    def block_resize(self, args: dict[str, Any]) -> None:
        check(struct(opt("device", STR), opt("node-name", STR), req("size", INT)), args)
        device = args.get("device", "")
        name = args.get("node-name", "")
        node = self.find(name) if name and not device else None
        if node is None:
            raise QMPError(f"Cannot find device='{device}' nor node-name='{name}'")
        size = args["size"]
        if size < 0:
            raise QMPError("Parameter 'size' expects a >0 size")
        for edge in node.parents:
            if edge.name == "backing" and isinstance(edge.parent, Node):
                raise QMPError("Device '(null)' is in use")
        edge = Child("root", CHILD_IMAGE, TempBackend(), node, PERM_RESIZE, PERM_ALL)
        try:
            attach_child(edge)
        except BlockError as exc:
            raise QMPError(exc.message) from None
        try:
            node.truncate(size, False, "off")
        except BlockError as exc:
            raise QMPError(exc.message) from None
        finally:
            detach_child(edge)

    def query_version(self, args: dict[str, Any]) -> dict[str, Any]:
        check(struct(), args)
        return self.version

    def quit(self, args: dict[str, Any]) -> None:
        check(struct(), args)
        self.on_quit()

    # -- queries ------------------------------------------------------------------
    def query_named_block_nodes(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        from bdrv.tools.qmp_info import block_device_info

        check(struct(opt("flat", BOOL)), args)
        flat = bool(args.get("flat", False))
        return [block_device_info(node, flat) for node in reversed(self._nodes())]

    def x_debug_query_block_graph(self, args: dict[str, Any]) -> dict[str, Any]:
        check(struct(), args)
        ids: dict[int, int] = {}

        def num(node: Node) -> int:
            if id(node) not in ids:
                ids[id(node)] = len(ids) + 1
            return ids[id(node)]

        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        for node in self._nodes():
            nodes.insert(0, {"id": num(node), "type": "block-driver", "name": node.node_name})
            # Edges come out in the order the children were attached, as 7.2 lists
            # them (its newest child first, each edge prepended).
            for child in reversed(node.children):
                edges.insert(0, {"parent": num(node), "child": num(child.node),
                                 "name": child.name, "perm": _perm_list(child.perm),
                                 "shared-perm": _perm_list(child.shared)})
        return {"nodes": nodes, "edges": edges}

    # -- jobs ---------------------------------------------------------------------
    def _status(self, job: Job, status: str) -> None:
        job.status = status
        self.emit("JOB_STATUS_CHANGE", {"status": status, "id": job.id})

    def blockdev_create(self, args: dict[str, Any]) -> None:
        check(struct(req("job-id", STR), req("options", BLOCKDEV_CREATE_OPTIONS)), args)
        job_id = args["job-id"]
        if job_id in self.jobs:
            raise QMPError(f"Job ID '{job_id}' already in use")
        options = args["options"]
        job = Job(job_id, "create")
        self.jobs[job_id] = job
        self._status(job, "created")
        self._status(job, "running")

        def finish() -> None:
            try:
                self._create(options)
            except BlockError as exc:
                job.error = exc.message
            job.progress = 1
            if job.error is None:
                self._status(job, "waiting")
                self._status(job, "pending")
            else:
                self._status(job, "aborting")
            self._status(job, "concluded")

        self.defer(finish)

    def _create(self, options: dict[str, Any]) -> None:
        from bdrv.driver import find_driver

        driver = options["driver"]
        drv = find_driver(driver)
        if drv is None or driver not in ("file", "qcow2"):
            raise BlockError("Driver does not support blockdev-create", errno.ENOTSUP)
        opts: dict[str, Any] = {"size": options["size"]}
        if driver == "file":
            filename = options["filename"]
            if "preallocation" in options:
                opts["preallocation"] = options["preallocation"]
        else:
            ref = options["file"]
            node = self.find(ref) if isinstance(ref, str) else None
            if node is None:
                raise BlockError(f"Cannot find device='{ref}' nor node-name='{ref}'")
            filename = node.filename
            names = {"version": "compat", "cluster-size": "cluster_size",
                     "lazy-refcounts": "lazy_refcounts", "refcount-bits": "refcount_bits",
                     "preallocation": "preallocation", "backing-file": "backing_file",
                     "backing-fmt": "backing_fmt", "extended-l2": "extended_l2",
                     "compression-type": "compression_type"}
            for key, name in names.items():
                if key in options:
                    value = options[key]
                    if key == "version":
                        value = "0.10" if value == "v2" else "1.1"
                    opts[name] = value
        drv.create(filename, opts, lambda _text: None)

    def query_jobs(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        check(struct(), args)
        result = []
        for job in reversed(self.jobs.values()):  # newest first, as 7.2 lists them
            info: dict[str, Any] = {"id": job.id, "type": job.type, "status": job.status,
                                    "current-progress": job.progress, "total-progress": 1}
            if job.error is not None:
                info["error"] = job.error
            result.append(info)
        return result

    def job_dismiss(self, args: dict[str, Any]) -> None:
        check(struct(req("id", STR)), args)
        job = self.jobs.get(args["id"])
        if job is None:
            raise QMPError("Job not found")
        if job.status != "concluded":
            raise QMPError(f"Job '{job.id}' in state '{job.status}' cannot accept command "
                           "verb 'dismiss'")
        self._status(job, "null")
        del self.jobs[job.id]

