"""qemu-io's `reopen`: read-only/read-write transitions, cache and discard modes, the raw
window, and the errors for options that cannot change.

A read-write raw image held by qemu-io takes the "write" lock only while its user holds
the write permission: `reopen -r` gives it up (so a `convert` of the image works again),
`reopen -w` does not take it back until the next write.
"""

import pytest

from harness import formats

pytestmark = pytest.mark.io


def _contend(iot, img, by=None):
    """A convert needs nobody writing the source: refused or done, the copy is dropped."""
    out = iot.path("copy.img")
    iot.img(["convert", "-f", iot.fmt, "-O", "raw"], img, out, by=by)
    iot.log(f"copy exists: {out.exists()}")
    out.unlink(missing_ok=True)


def _reopen_cycle(iot, s, img, contender):
    s.cmd("write -P 0x5a 0 64k")
    _contend(iot, img, by=contender)
    s.cmd("reopen -r")
    _contend(iot, img, by=contender)
    s.cmd("write -P 0x11 0 4k")
    s.cmd("reopen -w")
    _contend(iot, img, by=contender)
    s.cmd("write -P 0xa5 64k 64k")
    _contend(iot, img, by=contender)
    iot.log("--- a refused reopen -r has dropped the write permission already ---")
    s.cmd("reopen -r -o read-only=on")
    _contend(iot, img, by=contender)
    s.cmd("read -P 0x5a 0 64k")
    s.cmd("read -P 0xa5 64k 64k")


@pytest.mark.locking
@formats("raw")
def test_reopen_ro_rw_while_another_opens(iot):
    img = iot.create("1M")
    iot.log("=== qemu-io (QEMU) reopens; the backend under test converts ===")
    s = iot.interactive(img, by="qemu")
    _reopen_cycle(iot, s, img, None)
    s.close()
    iot.log("=== qemu-io (backend under test) reopens; QEMU converts ===")
    s = iot.interactive(img)
    _reopen_cycle(iot, s, img, "qemu")
    s.close()
    iot.io(img, ["read -P 0x5a 0 64k", "read -P 0xa5 64k 64k"], by="qemu")


@formats("raw")
def test_reopen_errors(iot):
    img = iot.create("1M")
    iot.io(img, ["reopen -o driver=qcow2", "reopen -o driver=raw", "reopen -o node-name=foo",
                 "reopen -o file.filename=other", "reopen -o file.locking=off",
                 "reopen -o file.driver=file", "reopen -o file.aio=threads",
                 "reopen -o force-share=on", "reopen -o foo=bar", "reopen -o file.foo=bar"])
    iot.io(img, ["reopen -c bad", "reopen -r -w", "reopen -r -o read-only=on",
                 "reopen -c none -o cache.direct=on", "reopen x", "reopen -x",
                 "reopen -o read-only=foo", "reopen -o discard=foo",
                 "reopen -o detect-zeroes=foo", "reopen -o detect-zeroes=unmap,discard=ignore",
                 "reopen -o file.drop-cache=foo", "reopen -o id=foo"])
    iot.log("=== options from a refused reopen carry over to the next one ===")
    iot.io(img, ["reopen -o a=b -c bad", "reopen", "reopen"])
    iot.log("=== a read-only node cannot support a writer ===")
    spec = f"driver={iot.fmt},node-name=top,file.filename={img.path},file.node-name=proto"
    iot.io(None, ["reopen -o read-only=on", "reopen -o file.read-only=on", "write 0 512"],
           opts=["--image-opts", spec], fmt="")
    iot.io(img, ["reopen -r", "write 0 512", "truncate 2M", "reopen -w", "write 0 512"])
    iot.io(None, "help reopen")


@formats("raw")
def test_reopen_window_cache_discard(iot):
    img = iot.create("1M")
    iot.io(img, ["write -P 0x11 0 1k", "write -P 0x22 1k 4k", "write -P 0x33 5k 1k"])
    iot.log("=== the window moves; left-out options keep their values ===")
    iot.io(img, ["reopen -o offset=1k,size=4k", "length", "read -P 0x22 0 4k",
                 "reopen -o offset=5k", "length", "read -P 0x33 0 1k",
                 "reopen -o offset=0", "length", "read -P 0x11 0 1k",
                 "reopen -o offset=2M", "reopen -o size=513", "reopen -o size=2M", "length"])
    iot.log("=== cache modes ===")
    iot.io(img, ["reopen -c none", "write -P 0x44 1 1", "read -P 0x44 1 1",
                 "reopen -c directsync", "write -P 0x55 4k 4k", "reopen -c unsafe", "flush",
                 "reopen -c writethrough", "read -P 0x55 4k 4k", "reopen -c writeback",
                 "read -P 0x44 1 1"])
    iot.io(img, "read -P 0x55 4k 4k", by="qemu")
    iot.log("=== discard modes ===")
    iot.io(img, ["write -P 0x66 64k 64k", "reopen -o discard=ignore", "discard 64k 64k",
                 "read -P 0x66 64k 64k", "reopen -o discard=unmap", "discard 64k 64k",
                 "read -P 0 64k 64k"])
