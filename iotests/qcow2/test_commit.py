"""qemu-img commit on qcow2 chains: into the immediate backing file (the top emptied as
7.2 empties it), -d, -b into a deeper base, chains written by one implementation and
committed by the other, v2 tops (emptied by discarding), and the errors. Each commit is
repeated by QEMU on a twin chain and the images are cmp'd."""

import pytest

from harness import formats

pytestmark = pytest.mark.img


def _chain(iot, prefix="", by=None, top_opts=None, layers=2):
    """base (0x11 everywhere) <- l1 <- ..., written by `by` (or the backend); a prefix
    is a subdirectory, so that twin chains record the same backing names."""
    if prefix:
        iot.path(prefix).mkdir(exist_ok=True)
    base = iot.create("4M", name=f"{prefix}base.qcow2", by=by)
    iot.io(base, "write -P 0x11 0 4M", by=by)
    below = base
    made = [base]
    for i in range(1, layers):
        name = f"{prefix}l{i}.qcow2"
        img = iot.create(None, name=name, opts=top_opts,
                         args=["-b", below.path.name, "-F", "qcow2"], by=by)
        iot.io(img, [f"write -P 0x{0x20 + i:02x} {i * 64}k 192k",
                     f"write -z {i}M 128k", f"write -P 0x{0x30 + i:02x} 3M 1000"], by=by)
        made.append(img)
        below = img
    return made


def _twin(iot, layers=2, top_opts=None):
    return _chain(iot, prefix="q/", by="qemu", layers=layers, top_opts=top_opts)


def _cmp(iot, ours, theirs):
    for a, b in zip(ours, theirs, strict=True):
        iot.run(["cmp", str(a.path.relative_to(iot.test_dir)),
                 str(b.path.relative_to(iot.test_dir))])


def _check_all(iot, imgs):
    for img in imgs:
        iot.img(["check", "-f", "qcow2"], img, by="qemu")


@formats("qcow2")
def test_commit_into_backing(iot):
    ours = _chain(iot)
    theirs = _twin(iot)
    iot.img(["commit", "-f", "qcow2"], ours[-1])
    iot.img(["commit", "-f", "qcow2"], theirs[-1], by="qemu")
    _cmp(iot, ours, theirs)
    _check_all(iot, ours)
    iot.io(ours[0], ["read -P 0x11 0 64k", "read -P 0x21 64k 192k", "read -P 0 1M 128k",
                     "read -P 0x31 3M 1000", "read -P 0x11 4000k 96k"], by="qemu")
    iot.img(["map", "-f", "qcow2", "--output=json"], ours[1], by="qemu")


@formats("qcow2")
def test_commit_keep_top(iot):
    ours = _chain(iot)
    theirs = _twin(iot)
    iot.img(["commit", "-f", "qcow2", "-d"], ours[-1])
    iot.img(["commit", "-f", "qcow2", "-d"], theirs[-1], by="qemu")
    _cmp(iot, ours, theirs)
    _check_all(iot, ours)
    iot.io(ours[-1], ["read -P 0x21 64k 192k", "read -P 0x31 3M 1000"], by="qemu")


@formats("qcow2")
def test_commit_deeper_base(iot):
    ours = _chain(iot, layers=4)
    theirs = _twin(iot, layers=4)
    iot.img(["commit", "-f", "qcow2", "-b", "base.qcow2"], ours[-1])
    iot.img(["commit", "-f", "qcow2", "-b", "base.qcow2"], theirs[-1], by="qemu")
    _cmp(iot, ours, theirs)
    _check_all(iot, ours)
    iot.io(ours[0], ["read -P 0x11 0 64k", "read -P 0x23 192k 192k", "read -P 0 2M 128k"],
           by="qemu")
    iot.img(["commit", "-q", "-f", "qcow2", "-b", "l1.qcow2"], ours[-1])
    iot.img(["commit", "-q", "-f", "qcow2", "-b", "l1.qcow2"], theirs[-1], by="qemu")
    _cmp(iot, ours, theirs)


@formats("qcow2")
def test_commit_cross_implementation(iot):
    """A chain QEMU wrote, committed by the backend, and one bdrv wrote, by QEMU."""
    q = _chain(iot, prefix="q/", by="qemu", layers=3)
    b = _chain(iot, prefix="b/", by="bdrv", layers=3)
    iot.img(["commit", "-f", "qcow2"], q[-1], by="bdrv")
    iot.img(["commit", "-f", "qcow2"], b[-1], by="qemu")
    _cmp(iot, q, b)
    _check_all(iot, q + b)
    iot.img(["commit", "-f", "qcow2"], q[-2], by="bdrv")
    iot.img(["commit", "-f", "qcow2"], b[-2], by="qemu")
    _cmp(iot, q, b)
    iot.img(["compare", "-f", "qcow2", "-F", "qcow2"], q[-1], b[0], by="qemu")


@formats("qcow2")
def test_commit_v2_top(iot):
    """A compat=0.10 top is emptied by discarding every cluster."""
    ours = _chain(iot, top_opts="compat=0.10")
    theirs = _twin(iot, top_opts="compat=0.10")
    iot.img(["commit", "-f", "qcow2"], ours[-1])
    iot.img(["commit", "-f", "qcow2"], theirs[-1], by="qemu")
    _cmp(iot, ours, theirs)
    _check_all(iot, ours)


@formats("qcow2")
def test_commit_grows_base(iot):
    base = iot.create("1M", name="base.qcow2")
    iot.io(base, "write -P 0x11 0 1M")
    top = iot.create("3M", name="top.qcow2", args=["-b", "base.qcow2", "-F", "qcow2"])
    iot.io(top, "write -P 0x22 2M 64k")
    iot.img(["commit", "-f", "qcow2"], top)
    iot.img(["info", "-f", "qcow2"], base)
    iot.io(base, ["read -P 0x11 0 1M", "read -P 0 1M 1M", "read -P 0x22 2M 64k"], by="qemu")
    iot.img(["check", "-f", "qcow2"], base, by="qemu")


@formats("qcow2")
def test_commit_errors(iot):
    lone = iot.create("1M", name="lone.qcow2")
    iot.img(["commit", "-f", "qcow2"], lone)
    ours = _chain(iot)
    iot.img(["commit", "-f", "qcow2", "-b", "nosuch.qcow2"], ours[-1])
    iot.img(["commit", "-f", "qcow2", "-t", "bogus"], ours[-1])
    iot.img(["commit", "-f", "qcow2", "-r", "1x"], ours[-1])
    iot.img(["commit", "-f", "qcow2"], ours[-1], ours[0])
    iot.img(["commit", "-f", "qcow2"], iot.image("missing.qcow2"))
    iot.img(["commit", "-f", "raw"], iot.create("1M", name="r.raw", fmt="raw"))
