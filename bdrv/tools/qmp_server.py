"""The QMP protocol of qemu-storage-daemon 7.2 over Unix sockets (the edge of bdrv).

Each monitor listens on a socket; a client gets the greeting, must negotiate with
`qmp_capabilities`, and then sends commands. Input is cut into JSON values as
QEMU's streamer cuts it (bdrv.qjson's lexer), and every malformed input gets 7.2's
error class and text while the monitor keeps serving. The block layer is
synchronous: commands run one at a time on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from bdrv.qdict import to_json
from bdrv.qjson import MAX_NESTING, _lex, _parse_tokens, _text, _Token
from bdrv.tools.qmp_schema import QMPError

Handler = Callable[[dict[str, Any]], Any]


class JsonStreamer:
    """json-streamer.c: tokens in, one top-level value (or an error text) out."""

    def __init__(self) -> None:
        self.pending: list[_Token] = []
        self.braces = 0
        self.brackets = 0

    def feed(self, line: bytes) -> list[tuple[Any, str | None]]:
        out: list[tuple[Any, str | None]] = []
        for item in _lex(line):
            if isinstance(item, bytes):
                self._reset()
                out.append((None, f"JSON parse error, stray '{_text(item)}'"))
                continue
            self.braces += (item.kind == "{") - (item.kind == "}")
            self.brackets += (item.kind == "[") - (item.kind == "]")
            if self.braces + self.brackets > MAX_NESTING:
                self._reset()
                out.append((None, "JSON nesting depth limit exceeded"))
                continue
            self.pending.append(item)
            if (self.braces > 0 or self.brackets > 0) and self.braces >= 0 and \
                    self.brackets >= 0:
                continue
            out.append(_parse_tokens(self.pending))
            self._reset()
        return out

    def _reset(self) -> None:
        self.pending, self.braces, self.brackets = [], 0, 0


def split_tokens(data: bytes) -> tuple[bytes, bytes]:
    """Cut `data` after its last complete token (input need not end in a newline):
    after the last delimiter or punctuation outside a string."""
    cut = 0
    quote = 0
    escaped = False
    for i, b in enumerate(data):
        if quote:
            if escaped:
                escaped = False
            elif b == 0x5C:
                escaped = True
            elif b == quote:
                quote = 0
                cut = i + 1
        elif b in (0x22, 0x27):
            quote = b
        elif b in b" \t\r\n{}[],:":
            cut = i + 1
    return data[:cut], data[cut:]


def timestamp() -> dict[str, int]:
    now = time.time()
    seconds = int(now)
    return {"seconds": seconds, "microseconds": int((now - seconds) * 1_000_000)}


class QMPServer:
    """The daemon's monitors: sockets, sessions, command dispatch and events."""

    def __init__(self, commands: dict[str, Handler], version: dict[str, Any]) -> None:
        self.commands = commands
        self.version = version
        self.sessions: list[Session] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.quit = asyncio.Event()

    async def listen(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        server = await asyncio.start_unix_server(self._client, path=path)
        self.servers.append(server)

    def emit_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"timestamp": timestamp(), "event": name}
        if data is not None:
            message["data"] = data
        for session in self.sessions:
            if session.negotiated:
                session.send(message)

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        session = Session(self, writer)
        self.sessions.append(session)
        try:
            session.send({"QMP": {"version": self.version, "capabilities": ["oob"]}})
            streamer = JsonStreamer()
            pending = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                ready, pending = split_tokens(pending + data)
                for value, error in streamer.feed(ready):
                    session.handle(value, error)
                    await writer.drain()
                    await asyncio.sleep(0)  # let deferred job steps run in order
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.sessions.remove(session)
            with contextlib.suppress(Exception):
                writer.close()


class Session:
    """One connected client: negotiation state and responses."""

    def __init__(self, server: QMPServer, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.writer = writer
        self.negotiated = False

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(to_json(message).encode() + b"\r\n")

    def handle(self, request: Any, parse_error: str | None) -> None:
        if parse_error is not None:
            self._error(QMPError(parse_error), None, False)
            return
        has_id = isinstance(request, dict) and "id" in request
        req_id = request.get("id") if has_id else None
        try:
            name, args = self._check_request(request)
            result = self._dispatch(name, args)
        except QMPError as exc:
            self._error(exc, req_id, has_id)
            return
        response: dict[str, Any] = {"return": {} if result is None else result}
        if has_id:
            response["id"] = req_id
        self.send(response)

    def _error(self, exc: QMPError, req_id: Any, has_id: bool) -> None:
        response: dict[str, Any] = {"error": {"class": exc.cls, "desc": exc.desc}}
        if has_id:
            response["id"] = req_id
        self.send(response)

    def _check_request(self, request: Any) -> tuple[str, dict[str, Any]]:
        """qmp_dispatch_check_obj()."""
        if not isinstance(request, dict):
            raise QMPError("QMP input must be a JSON object")
        for key, value in request.items():
            if key in ("execute", "exec-oob"):
                if not isinstance(value, str):
                    raise QMPError(f"QMP input member '{key}' must be a string")
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise QMPError("QMP input member 'arguments' must be an object")
            elif key != "id":
                raise QMPError(f"QMP input member '{key}' is unexpected")
        if "execute" in request and "exec-oob" in request:
            raise QMPError("QMP input must not have both 'execute' and 'exec-oob'")
        if "exec-oob" in request:
            raise QMPError("QMP input member 'exec-oob' is unexpected")  # no oob enabled
        if "execute" not in request:
            raise QMPError("QMP input lacks member 'execute'")
        return request["execute"], dict(request.get("arguments", {}))

    def _dispatch(self, name: str, args: dict[str, Any]) -> Any:
        if not self.negotiated:
            if name != "qmp_capabilities":
                raise QMPError("Expecting capabilities negotiation with 'qmp_capabilities'",
                               "CommandNotFound")
            self._capabilities(args)
            self.negotiated = True
            return {}
        if name == "qmp_capabilities":
            raise QMPError("Capabilities negotiation is already complete, command ignored",
                           "CommandNotFound")
        handler = self.server.commands.get(name)
        if handler is None:
            raise QMPError(f"The command {name} has not been found", "CommandNotFound")
        return handler(args)

    def _capabilities(self, args: dict[str, Any]) -> None:
        from bdrv.tools.qmp_schema import STR, check, list_of, opt, struct

        check(struct(opt("enable", list_of(STR))), args)
        for cap in args.get("enable", []):
            if cap != "oob":
                raise QMPError(f"Parameter 'enable' does not accept value '{cap}'")
