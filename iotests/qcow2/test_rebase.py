"""qemu-img rebase on qcow2: safe mode copying what differs between the old and the new
backing file, onto a smaller file, onto an image of the chain, removing the backing file
(-b ""), unsafe -u, and the errors. Each rebase is repeated by QEMU on a twin and cmp'd."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


def _setup(iot, prefix="", by=None):
    if prefix:
        iot.path(prefix).mkdir(exist_ok=True)
    base = iot.create("4M", name=f"{prefix}base.qcow2", by=by)
    iot.io(base, ["write -P 0x11 0 4M"], by=by)
    new = iot.create("4M", name=f"{prefix}new.qcow2", by=by)
    iot.io(new, ["write -P 0x11 0 1M", "write -P 0x55 1M 512k", "write -P 0x11 3M 4k"], by=by)
    small = iot.create("1M", name=f"{prefix}small.qcow2", by=by)
    iot.io(small, ["write -P 0x11 0 512k"], by=by)
    top = iot.create(None, name=f"{prefix}top.qcow2", args=["-b", base.path.name, "-F", "qcow2"],
                     by=by)
    iot.io(top, ["write -P 0x22 64k 192k", "write -z 2M 128k", "write -P 0x33 3M 1000"], by=by)
    return top


def _both(iot, args, reads=()):
    ours = _setup(iot)
    theirs = _setup(iot, prefix="q/", by="qemu")
    iot.img(["rebase", "-f", "qcow2", *args], ours)
    iot.img(["rebase", "-f", "qcow2", *args], theirs, by="qemu")
    iot.run(["cmp", "top.qcow2", "q/top.qcow2"])
    iot.img(["check", "-f", "qcow2"], ours, by="qemu")
    iot.img(["info", "-f", "qcow2"], ours, by="qemu")
    if reads:
        iot.io(ours, list(reads), by="qemu")
    return ours


@formats("qcow2")
def test_rebase_safe(iot):
    _both(iot, ["-b", "new.qcow2", "-F", "qcow2"],
          ["read -P 0x11 0 64k", "read -P 0x22 64k 192k", "read -P 0x11 1M 512k",
           "read -P 0 2M 128k", "read -P 0x33 3M 1000", "read -P 0x11 3146728 1047576"])


@formats("qcow2")
def test_rebase_onto_smaller(iot):
    _both(iot, ["-b", "small.qcow2", "-F", "qcow2"],
          ["read -P 0x11 0 64k", "read -P 0x11 1M 1M", "read -P 0x11 4190208 4k"])


@formats("qcow2")
def test_rebase_remove_backing(iot):
    _both(iot, ["-b", ""], ["read -P 0x11 0 64k", "read -P 0x11 1M 1M"])


@formats("qcow2")
def test_rebase_unsafe(iot):
    _both(iot, ["-u", "-b", "new.qcow2", "-F", "qcow2"], ["read -P 0x55 1M 512k"])
    iot.img(["rebase", "-f", "qcow2", "-u", "-b", "", "-F", "qcow2"], iot.image("top.qcow2"))
    iot.img(["rebase", "-f", "qcow2", "-u", "-b", ""], iot.image("top.qcow2"))
    iot.img(["info", "-f", "qcow2"], iot.image("top.qcow2"))


@formats("qcow2")
def test_rebase_within_chain(iot):
    """Onto an image of the chain: only what the layers in between change is copied."""
    q = iot.create("4M", name="base.qcow2", by="qemu")
    iot.io(q, "write -P 0x11 0 4M", by="qemu")
    mid = iot.create(None, name="mid.qcow2", args=["-b", "base.qcow2", "-F", "qcow2"],
                     by="qemu")
    iot.io(mid, ["write -P 0x44 1M 1M"], by="qemu")
    top = iot.create(None, name="top.qcow2", args=["-b", "mid.qcow2", "-F", "qcow2"],
                     by="qemu")
    iot.io(top, ["write -P 0x22 1536k 64k"], by="qemu")
    iot.path("q").mkdir()
    for name in ("base.qcow2", "mid.qcow2", "top.qcow2"):
        iot.run(["cp", name, "q/" + name])
    iot.img(["rebase", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2"], top)
    iot.img(["rebase", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2"],
            iot.image("q/top.qcow2"), by="qemu")
    iot.run(["cmp", "top.qcow2", "q/top.qcow2"])
    iot.io(top, ["read -P 0x44 1M 512k", "read -P 0x22 1536k 64k", "read -P 0x11 0 1M"],
           by="qemu")
    iot.img(["check", "-f", "qcow2"], top, by="qemu")


@formats("qcow2")
def test_rebase_errors(iot):
    top = _setup(iot)
    iot.img(["rebase", "-f", "qcow2"], top)
    iot.img(["rebase", "-f", "qcow2", "-b", "nosuch.qcow2", "-F", "qcow2"], top)
    iot.img(["rebase", "-f", "qcow2", "-b", "new.qcow2", "-F", "bogus"], top)
    iot.img(["rebase", "-f", "qcow2", "-b", "new.qcow2", "-t", "bogus", "-F", "qcow2"], top)
    iot.img(["rebase", "-f", "qcow2", "-b", "new.qcow2", "-T", "bogus", "-F", "qcow2"], top)
    iot.img(["rebase", "-f", "qcow2", "-b", "new.qcow2"], top)
    iot.img(["info", "-f", "qcow2"], top)
    small = iot.create("1M", name="c512.qcow2", opts="cluster_size=512")
    iot.img(["rebase", "-f", "qcow2", "-u", "-b", "x" * 600, "-F", "qcow2"], small)
    iot.img(["rebase", "-f", "qcow2", "-b", "new.qcow2", "-F", "qcow2"], top, top)
