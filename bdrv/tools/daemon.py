"""bdrv-storage-daemon: a QMP server with qemu-storage-daemon 7.2's command line.

    bdrv-storage-daemon --chardev socket,id=c0,path=PATH,server=on,wait=off \\
                        --monitor chardev=c0 [--blockdev OPTIONS]... [--pidfile PATH]

--blockdev takes JSON or key=value,... options, as qemu-storage-daemon does. The block
layer stays synchronous; asyncio only serves the sockets (bdrv.tools.qmp_server).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from bdrv import __version__ as bdrv_version
from bdrv.options import parse_opts, unflatten
from bdrv.tools.qmp_commands import BlockMonitor
from bdrv.tools.qmp_schema import QMPError
from bdrv.tools.qmp_server import QMPServer

USAGE = """\
Usage: {prog} [options]
QEMU storage daemon (bdrv)

  -h, --help                display this help and exit
  -V, --version             output version information and exit

  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]
             [,cache.direct=on|off][,cache.no-flush=on|off]
             [,read-only=on|off][,auto-read-only=on|off]
             [,force-share=on|off][,detect-zeroes=on|off|unmap]
             [,<driver options>]
                            configure a block backend
  --chardev <options>       configure a character device backend
                            (only socket,id=,path=,server=on,wait=off)
  --monitor [chardev=]name[,mode=control][,pretty[=on|off]]
                            configure a QMP monitor
  --pidfile <path>          write process ID to a file after startup
"""


class UsageError(Exception):
    pass


def _version() -> dict[str, Any]:
    parts = [int(p) if p.isdigit() else 0 for p in bdrv_version.split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return {"qemu": {"micro": parts[2], "minor": parts[1], "major": parts[0]},
            "package": f"bdrv {bdrv_version}"}


def _keyval(text: str, implied: str) -> dict[str, Any]:
    """key=value,... (with ",," escapes); a first bare value is the `implied` key."""
    nested = unflatten(dict(parse_opts(text, implied)))
    assert isinstance(nested, dict)
    return nested


def _parse_args(prog: str, argv: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {"chardevs": {}, "monitors": [], "blockdevs": [],
                              "pidfile": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, _, inline = arg.partition("=")
        if name in ("-h", "--help"):
            sys.stdout.write(USAGE.format(prog=prog))
            raise SystemExit(0)
        if name in ("-V", "--version"):
            sys.stdout.write(f"{prog} version {bdrv_version}\n")
            raise SystemExit(0)
        if name not in ("--chardev", "--monitor", "--blockdev", "--pidfile", "--object"):
            raise UsageError(f"unrecognized option '{arg}'")
        if inline or "=" in arg:
            value = inline
        else:
            i += 1
            if i >= len(argv):
                raise UsageError(f"option '{arg}' requires an argument")
            value = argv[i]
        i += 1
        if name == "--chardev":
            opts = _keyval(value, "backend")
            if opts.get("backend") != "socket" or "path" not in opts:
                raise UsageError("only --chardev socket,id=...,path=...,server=on is "
                                 "supported")
            config["chardevs"][opts.get("id", "")] = opts["path"]
        elif name == "--monitor":
            opts = _keyval(value, "chardev")
            config["monitors"].append(opts.get("chardev", ""))
        elif name == "--blockdev":
            blockdev = json.loads(value) if value.lstrip().startswith("{") else \
                _keyval(value, "driver")
            config["blockdevs"].append(_typed(blockdev))
        elif name == "--pidfile":
            config["pidfile"] = value
        else:
            opts = _keyval(value, "qom-type")
            raise UsageError(f"Invalid parameter 'qom-type': '{opts.get('qom-type')}' "
                             "is not supported by bdrv")
    return config


_BOOL_KEYS = {"read-only", "auto-read-only", "force-share", "direct", "no-flush",
              "lazy-refcounts", "read-zeroes", "drop-cache"}
_INT_KEYS = {"offset", "size", "cache-size", "l2-cache-size", "refcount-cache-size"}


def _typed(options: Any) -> Any:
    """key=value strings as the QAPI keyval visitor would type them."""
    if isinstance(options, dict):
        typed: dict[str, Any] = {}
        for key, value in options.items():
            if isinstance(value, str) and key in _BOOL_KEYS:
                typed[key] = value == "on"
            elif isinstance(value, str) and key in _INT_KEYS and value.isdigit():
                typed[key] = int(value)
            else:
                typed[key] = _typed(value)
        return typed
    return options


def _defer(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    loop.call_soon(fn)


async def _serve(prog: str, config: dict[str, Any]) -> int:
    loop = asyncio.get_running_loop()
    server: QMPServer
    monitor = BlockMonitor(lambda name, data: server.emit_event(name, data),
                           lambda fn: _defer(loop, fn), _version(),
                           lambda: server.quit.set())
    server = QMPServer(monitor.commands(), _version())
    try:
        for blockdev in config["blockdevs"]:
            try:
                monitor.blockdev_add(blockdev)
            except QMPError as exc:
                sys.stderr.write(f"{prog}: {exc.desc}\n")
                return 1
        for chardev in config["monitors"]:
            path = config["chardevs"].get(chardev)
            if path is None:
                sys.stderr.write(f"{prog}: --monitor: chardev \"{chardev}\" not found\n")
                return 1
            await server.listen(path)
        if config["pidfile"]:
            with open(config["pidfile"], "w", encoding="ascii") as f:
                f.write(f"{os.getpid()}\n")
        await server.quit.wait()
        # Let the last response reach the client before closing.
        for session in list(server.sessions):
            await session.writer.drain()
        return 0
    finally:
        for srv in server.servers:
            srv.close()
        monitor.close()
        if config["pidfile"]:
            try:
                os.unlink(config["pidfile"])
            except OSError:
                pass


def main(argv: list[str]) -> int:
    prog = os.path.basename(argv[0]) if argv else "bdrv-storage-daemon"
    try:
        config = _parse_args(prog, argv[1:])
    except UsageError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return 1
    try:
        return asyncio.run(_serve(prog, config))
    except KeyboardInterrupt:
        return 0


def console_main() -> None:
    from bdrv.tools.memory import tune_malloc

    tune_malloc()
    sys.exit(main(sys.argv))
