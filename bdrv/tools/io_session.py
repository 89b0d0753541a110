"""The state of one bdrv-io run: the open image, its event loop, and the output streams.

Everything a command needs lives on an `IoSession`, so `main()` can be called many
times in one process without anything carrying over between calls.
"""

from __future__ import annotations

import os
from typing import Any

from bdrv.backend import Backend
from bdrv.errors import BlockError
from bdrv.graph import O_COPY_ON_READ, O_NATIVE_AIO, O_NOCACHE, O_RDWR, O_SNAPSHOT
from bdrv.options import parse_bool
from bdrv.tools.io_engine import IoEngine
from bdrv.tools.io_output import StdoutBuffer, write_stderr

# Commands that run with no image open, or regardless of one.
CMD_NOFILE_OK = 0x01
CMD_FLAG_GLOBAL = 0x02


class IoSession:
    """One bdrv-io process worth of state."""

    def __init__(self, argv0: str) -> None:
        self.prog = os.path.basename(argv0) or argv0
        self.out = StdoutBuffer()
        self.backend: Backend | None = None
        self.engine: IoEngine | None = None
        self.image_opts = False
        self.quit = False
        # Set when a command "kills" the process (abort, sigraise): the exit status.
        self.terminated: int | None = None
        self.commands: dict[str, Any] = {}

    # -- output -------------------------------------------------------------------
    def printf(self, text: str) -> None:
        """Text for stdout (buffered as C stdio would)."""
        self.out.write(text)

    def eprintf(self, text: str) -> None:
        """fprintf(stderr, ...): unprefixed, unbuffered."""
        write_stderr(text)

    def error_report(self, message: str) -> None:
        """QEMU's error_report(): '<prog>: <message>' on stderr."""
        write_stderr(f"{self.prog}: {message}\n")

    def warn_report(self, message: str) -> None:
        write_stderr(f"{self.prog}: warning: {message}\n")

    def report_error(self, exc: BlockError, prefix: str = "") -> None:
        """error_reportf_err(): the error with `prefix`, extra lines and hint."""
        write_stderr(exc.prefixed(prefix).render(self.prog))

    def warn_raw(self, text: str) -> None:
        """Warnings the block layer words in full (the raw-probing WARNING)."""
        write_stderr(text + "\n")

    # -- the image ----------------------------------------------------------------
    def open_image(
        self,
        name: str | None,
        flags: int,
        writethrough: bool,
        force_share: bool,
        options: dict[str, Any] | None,
    ) -> bool:
        """qemu-io's openfile(): True on success, errors reported."""
        if self.backend is not None:
            self.error_report("file open already, try 'help close'")
            return False
        if force_share:
            options = dict(options or {})
            if "force-share" in options and options["force-share"] != "on":
                self.error_report("-U conflicts with image options")
                return False
            options["force-share"] = "on"
        prefix = "can't open" + (f" device {name}" if name is not None else "") + ": "
        try:
            _check_unsupported(flags, options or {})
            backend = Backend.open(name, options, flags, warn=self.warn_raw)
        except BlockError as exc:
            self.report_error(exc, prefix)
            return False
        self.backend = backend
        self.engine = IoEngine(backend, writethrough)
        return True

    def close_image(self) -> None:
        if self.engine is not None:
            self.engine.drain()
        if self.backend is not None:
            self.backend.close()
        self.backend = None
        self.engine = None

    def require_engine(self) -> IoEngine:
        assert self.engine is not None
        return self.engine

    def require_backend(self) -> Backend:
        assert self.backend is not None
        return self.backend


def _check_unsupported(flags: int, options: dict[str, Any]) -> None:
    """Open flags the core does not act on yet: QEMU's error where it has one."""
    read_only = not flags & O_RDWR
    if "read-only" in options:
        read_only = parse_bool("read-only", str(options["read-only"]))
    if flags & O_COPY_ON_READ and read_only:
        raise BlockError("Can't use copy-on-read on read-only device")
    direct = bool(flags & O_NOCACHE)
    if "cache.direct" in options:
        direct = parse_bool("cache.direct", str(options["cache.direct"]))
    if flags & O_NATIVE_AIO and not direct:
        raise BlockError("aio=native was specified, but it requires cache.direct=on, "
                         "which was not specified.")
    if flags & O_SNAPSHOT and not _snapshot_supported():
        raise BlockError(
            "snapshot=on (-s) is not supported by bdrv yet: QEMU 7.2 would put a "
            "temporary qcow2 overlay on top of the image and discard it on exit"
        )


def _snapshot_supported() -> bool:
    # The core advertises temporary-overlay support (snapshot=on) with this flag.
    import bdrv.open

    return bool(getattr(bdrv.open, "SUPPORTS_SNAPSHOT", False))

