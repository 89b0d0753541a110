"""qemu-img measure: for raw and qcow2 targets, from --size and from images (with data,
zero clusters, a backing chain, v2), human and json output, -o options, snapshots, and
the errors."""

import importlib.util

import pytest

from harness import formats

pytestmark = pytest.mark.img


@formats("qcow2")
def test_measure_from_size(iot):
    for args in (["--size", "1G"], ["-O", "qcow2", "--size", "1G"],
                 ["-O", "qcow2", "--size", "1G", "--output=json"],
                 ["-O", "qcow2", "-o", "cluster_size=4k,preallocation=full", "--size", "3M"],
                 ["-O", "qcow2", "-o", "extended_l2=on", "--size", "1G"],
                 ["-O", "qcow2", "-o", "refcount_bits=1", "--size", "100G"],
                 ["-O", "qcow2", "-o", "cluster_size=2M,extended_l2=on", "--size", "7G"],
                 ["-O", "qcow2", "-o", "size=5M", "--size", "1M"],
                 ["-O", "raw", "-o", "preallocation=full", "--size", "1000"]):
        iot.img(["measure", *args])


@formats("qcow2")
def test_measure_from_image(iot):
    img = iot.create("10M")
    iot.io(img, ["write 0 100k", "write -z 1M 1M", "write 5M 1"])
    for args in ([], ["--output=json"], ["-O", "qcow2"], ["-O", "qcow2", "--output=json"],
                 ["-O", "qcow2", "-o", "compat=0.10"], ["-O", "qcow2", "-o", "backing_file=x"],
                 ["-O", "qcow2", "-o", "cluster_size=512"], ["-f", "raw", "-O", "qcow2"]):
        iot.img(["measure", *args], img)
    v2 = iot.create("4M", name="v2.qcow2", opts="compat=0.10")
    iot.io(v2, "write 0 1M")
    iot.img(["measure", "-O", "qcow2"], v2)
    top = iot.create(None, name="top.qcow2", args=["-b", "t.qcow2", "-F", "qcow2"])
    iot.io(top, "write 2M 64k")
    iot.img(["measure", "-O", "qcow2", "--output=json"], top)


@formats("qcow2")
def test_measure_snapshot(iot):
    if iot.backend.name == "bdrv" and importlib.util.find_spec("bdrv.tools.img_snapshot") is None:
        iot.notrun("bdrv-img has no internal snapshots in this tree (img_snapshot.py)")
    img = iot.create("10M")
    iot.io(img, "write 0 1M")
    iot.img(["snapshot", "-c", "s1"], img, by="qemu")
    iot.io(img, "write 7M 1M")
    iot.img(["measure", "-O", "qcow2"], img)
    iot.img(["measure", "-O", "qcow2", "-l", "s1"], img)
    iot.img(["measure", "-O", "qcow2", "-l", "snapshot.id=1"], img)
    iot.img(["measure", "-O", "qcow2", "-l", "nosuch"], img)


@formats("qcow2")
def test_measure_errors(iot):
    img = iot.create("1M")
    for args in ([], ["--size", "1M", str(img.path)], ["-f", "qcow2"],
                 ["a", "b"], ["-O", "vpc", "--size", "1M"], ["-O", "foo", "--size", "1M"],
                 ["-O", "qcow2", "-o", "foo=bar", "--size", "1M"],
                 ["-O", "qcow2", "-o", "help", "--size", "1M"],
                 ["-O", "qcow2", "--size", "1P", "-o", "cluster_size=512"],
                 ["--size", "1x"], ["--output=foo", "--size", "1M"],
                 ["-O", "qcow2", "--size", "1M", "-o", "compat=v3"],
                 ["-O", "qcow2", "--size", "1M", "-o", "preallocation=x"],
                 ["-O", "qcow2", "--size", "1M", "-o", "cluster_size=3k"],
                 ["-O", "qcow2", "--size", "1M", "-o", "refcount_bits=3"],
                 ["-O", "qcow2", "--size", "1M", "-o", "compat=0.10,refcount_bits=8"],
                 ["-O", "qcow2", "--size", "1M", "-o", "extended_l2=on,cluster_size=4k"]):
        iot.img(["measure", *args])
