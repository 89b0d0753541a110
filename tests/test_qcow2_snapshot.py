"""qcow2 internal snapshots against qemu-img 7.2.

The same sequence of writes and snapshot operations through bdrv and through QEMU
leaves byte-identical images. Only each entry's date (date_sec and date_nsec, 8 bytes
at offset 16 of its table entry) comes from the clock: `masked()` walks the snapshot
table of an image and zeroes those 8 bytes of every entry before the comparison; every
other byte, the table layout included, must match. Snapshots made by one
implementation are applied and deleted by the other, and `qemu-img check` is clean
afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bdrv.tools import img as img_tool
from bdrv.tools import io_shell

QEMU_IMG = shutil.which(os.environ.get("QEMU_IMG_PROG", "qemu-img"))
QEMU_IO = shutil.which(os.environ.get("QEMU_IO_PROG", "qemu-io"))
needs_qemu = pytest.mark.skipif(QEMU_IMG is None or QEMU_IO is None,
                                reason="qemu-img/qemu-io not installed")


def _inproc(main, prog: str, args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main([prog, *args])
    return status, out.getvalue()


def run(who: str, tool: str, *args: str) -> tuple[int, str]:
    """Run qemu-img/qemu-io (who="qemu") or bdrv's in-process (who="bdrv")."""
    if who == "qemu":
        prog = QEMU_IMG if tool == "img" else QEMU_IO
        assert prog is not None
        proc = subprocess.run([prog, *args], capture_output=True, text=True)
        return proc.returncode, proc.stdout + proc.stderr
    main = img_tool.main if tool == "img" else io_shell.main
    status, text = _inproc(main, "qemu-img" if tool == "img" else "qemu-io", list(args))
    return status, text


def masked(path: Path) -> bytes:
    """The image's bytes with each snapshot's date fields zeroed."""
    data = bytearray(path.read_bytes())
    nb, offset = struct.unpack(">IQ", data[60:72])
    pos = offset
    for _ in range(nb):
        pos = -(-pos // 8) * 8
        _, _, id_len, name_len, _, _, _, _, extra = struct.unpack(
            ">QIHHIIQII", data[pos : pos + 40])
        data[pos + 16 : pos + 24] = bytes(8)
        pos += 40 + extra + id_len + name_len
    return bytes(data)


def qemu_check(path: Path) -> str:
    status, out = run("qemu", "img", "check", "-f", "qcow2", str(path))
    assert status == 0, out
    return out


# Steps: ("io", cmd...) writes through the io tool; ("img", args...) runs qemu-img.
SEQUENCE = [
    ("io", "write -P 1 0 128k", "write -c -P 7 1M 64k"),
    ("img", "snapshot", "-c", "s1"),
    ("io", "write -P 2 64k 128k", "write -P 9 3M 4k"),
    ("img", "snapshot", "-c", "s2"),
    ("io", "write -P 3 0 32k", "write -z 1M 64k", "discard 3M 64k"),
    ("img", "snapshot", "-c", "s3"),
    ("img", "snapshot", "-a", "s1"),
    ("io", "write -P 4 512k 64k"),
    ("img", "snapshot", "-d", "s2"),
    ("img", "snapshot", "-a", "3"),
    ("img", "snapshot", "-c", "s1"),
    ("img", "snapshot", "-d", "s1"),
    ("img", "snapshot", "-d", "s3"),
    ("img", "snapshot", "-c", "s4"),
    ("img", "snapshot", "-a", "s4"),
    ("img", "snapshot", "-d", "s4"),
    ("img", "snapshot", "-d", "s1"),
]

CREATE = ["", "compat=0.10", "cluster_size=512", "cluster_size=4k", "cluster_size=2M",
          "refcount_bits=1", "refcount_bits=2", "refcount_bits=64", "extended_l2=on",
          "lazy_refcounts=on", "compression_type=zstd"]


def _play(who: str, path: Path, steps: list[tuple[str, ...]]) -> list[tuple[int, str]]:
    results = []
    for step in steps:
        if step[0] == "io":
            args = ["-f", "qcow2"]
            for cmd in step[1:]:
                args += ["-c", cmd]
            status, out = run(who, "io", *args, str(path))
            results.append((status, "failed" if "failed" in out else ""))
        else:
            results.append(run(who, "img", *step[1:], str(path)))
    return results


@needs_qemu
@pytest.mark.parametrize("opts", CREATE)
def test_same_sequence_same_bytes(tmp_path: Path, opts: str) -> None:
    ours, theirs = tmp_path / "b.qcow2", tmp_path / "q.qcow2"
    args = ["create", "-q", "-f", "qcow2"] + (["-o", opts] if opts else [])
    assert run("qemu", "img", *args, str(theirs), "4M")[0] == 0
    shutil.copy(theirs, ours)
    got = _play("bdrv", ours, SEQUENCE)
    want = _play("qemu", theirs, SEQUENCE)
    assert got == want
    assert masked(ours) == masked(theirs)
    if "refcount_bits=1" not in opts:
        assert "No errors were found" in qemu_check(ours)


@needs_qemu
@pytest.mark.parametrize("maker,user", [("qemu", "bdrv"), ("bdrv", "qemu")])
def test_interop(tmp_path: Path, maker: str, user: str) -> None:
    """Snapshots made by one implementation, applied and deleted by the other."""
    path = tmp_path / "t.qcow2"
    assert run("qemu", "img", "create", "-q", "-f", "qcow2", str(path), "8M")[0] == 0
    _play(maker, path, [("io", "write -P 0x11 0 1M", "write -P 0x12 6M 64k"),
                        ("img", "snapshot", "-c", "one"),
                        ("io", "write -P 0x21 512k 1M"),
                        ("img", "snapshot", "-c", "two"),
                        ("io", "write -P 0x31 0 64k")])
    status, out = run(user, "img", "snapshot", "-a", "one", str(path))
    assert status == 0, out
    assert "No errors were found" in qemu_check(path)
    status, out = run(maker, "io", "-f", "qcow2", "-c", "read -P 0x11 0 1M",
                      "-c", "read -P 0x12 6M 64k", str(path))
    assert status == 0 and "failed" not in out, out
    status, out = run(user, "io", "-f", "qcow2", "-c", "write -P 0x41 0 64k", str(path))
    assert status == 0, out
    status, out = run(user, "img", "snapshot", "-d", "one", str(path))
    assert status == 0, out
    assert "No errors were found" in qemu_check(path)
    status, out = run(maker, "img", "snapshot", "-a", "two", str(path))
    assert status == 0, out
    status, out = run(user, "io", "-f", "qcow2", "-c", "read -P 0x11 0 512k",
                      "-c", "read -P 0x21 512k 1M", "-c", "read -P 0 1536k 512k",
                      str(path))
    assert status == 0 and "failed" not in out, out
    status, out = run(maker, "img", "snapshot", "-d", "two", str(path))
    assert status == 0, out
    listing = run(user, "img", "snapshot", "-l", str(path))
    assert listing == (0, "")
    assert "No errors were found" in qemu_check(path)


@needs_qemu
def test_listing_and_info_match(tmp_path: Path) -> None:
    """info (human and JSON) and snapshot -l print what qemu-img prints for the same
    table; the table comes from QEMU so that the dates are the same ones."""
    path = tmp_path / "t.qcow2"
    assert run("qemu", "img", "create", "-q", "-f", "qcow2", str(path), "1M")[0] == 0
    for name in ("first", "second", "first", "1", "a-much-longer-snapshot-name-here"):
        assert run("qemu", "img", "snapshot", "-c", name, str(path))[0] == 0
    assert run("qemu", "img", "snapshot", "-d", "1", str(path))[0] == 0
    for args in (["snapshot", "-l"], ["info"], ["info", "--output=json"],
                 ["info", "-U", "--output=json"]):
        assert run("bdrv", "img", *args, str(path)) == run("qemu", "img", *args, str(path))


@needs_qemu
@pytest.mark.parametrize("args", [
    ["snapshot", "-a", "nope"], ["snapshot", "-d", "nope"], ["snapshot", "-d", "1"],
    ["snapshot", "-l", "-c", "x"], ["snapshot", "-c"], ["snapshot"],
    ["snapshot", "-a", "2"], ["snapshot", "-a", "s"], ["snapshot", "-U", "-c", "x"],
    ["convert", "-l", "nope", "-O", "raw"], ["convert", "-l", "snapshot.id=1", "-O", "raw"],
    ["convert", "-l", "snapshot.name=s", "-O", "raw"],
    ["convert", "-l", "snapshot.id=2,snapshot.name=s", "-O", "raw"],
])
def test_messages(tmp_path: Path, args: list[str]) -> None:
    outs = []
    for who in ("qemu", "bdrv"):
        d = tmp_path / who
        d.mkdir()
        path = d / "t.qcow2"
        assert run("qemu", "img", "create", "-q", "-f", "qcow2", str(path), "1M")[0] == 0
        assert run("qemu", "img", "snapshot", "-c", "s", str(path))[0] == 0
        argv = list(args) + [str(path)]
        if args[0] == "convert":
            argv.append(str(d / "out.raw"))
        status, out = run(who, "img", *argv)
        extra = (d / "out.raw").read_bytes() if (d / "out.raw").exists() else None
        outs.append((status, out.replace(str(d), "DIR"), extra))
    assert outs[0] == outs[1]


@needs_qemu
def test_convert_snapshot_reads_old_data(tmp_path: Path) -> None:
    path = tmp_path / "t.qcow2"
    assert run("qemu", "img", "create", "-q", "-f", "qcow2", str(path), "2M")[0] == 0
    run("qemu", "io", "-c", "write -P 0x55 0 1M", str(path))
    run("qemu", "img", "snapshot", "-c", "old", str(path))
    run("qemu", "io", "-c", "write -P 0x66 256k 1M", str(path))
    for spec in ("old", "1", "snapshot.name=old", "snapshot.id=1,snapshot.name=old"):
        ours, theirs = tmp_path / "b.raw", tmp_path / "q.raw"
        for who, out in (("bdrv", ours), ("qemu", theirs)):
            status, text = run(who, "img", "convert", "-l", spec, "-O", "raw", str(path),
                               str(out))
            assert status == 0, text
        assert ours.read_bytes() == theirs.read_bytes()
        assert ours.read_bytes()[:1 << 20] == b"\x55" * (1 << 20)
        ours.unlink()
        theirs.unlink()


def _v2_entry(l1_offset: int, l1_size: int, sid: bytes, name: bytes,
              extra: bytes) -> bytes:
    head = struct.pack(">QIHHIIQII", l1_offset, l1_size, len(sid), len(name), 1000, 5,
                       7_000_000_123, 4096, len(extra))
    return head + extra + sid + name


@needs_qemu
@pytest.mark.parametrize("extra", [b"", bytes(8) + (1 << 20).to_bytes(8, "big"),
                                   bytes(24) + b"\xab" * 16])
def test_old_and_unknown_extra_data(tmp_path: Path, extra: bytes) -> None:
    """Entries with 0, 16 and 40 bytes of extra data (the last with 16 unknown bytes)
    read as 7.2 reads them, and a rewrite of the table keeps the unknown bytes."""
    paths = {}
    for who in ("qemu", "bdrv"):
        path = tmp_path / f"{who}.qcow2"
        assert run("qemu", "img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10",
                   str(path), "1M")[0] == 0
        run("qemu", "img", "snapshot", "-c", "base", str(path))
        data = bytearray(path.read_bytes())
        nb, offset = struct.unpack(">IQ", data[60:72])
        l1_offset, l1_size = struct.unpack(">QI", data[offset : offset + 12])
        table = _v2_entry(l1_offset, l1_size, b"1", b"base", extra)
        data[offset : offset + len(table)] = table
        path.write_bytes(bytes(data))
        paths[who] = path
    for args in (["info"], ["info", "--output=json"], ["snapshot", "-l"]):
        got = run("bdrv", "img", *args, str(paths["bdrv"]))
        want = run("qemu", "img", *args, str(paths["qemu"]))
        assert got[0] == want[0]
        assert got[1].replace("bdrv.qcow2", "X") == want[1].replace("qemu.qcow2", "X")
    for who in ("qemu", "bdrv"):
        status, out = run(who, "img", "snapshot", "-c", "next", str(paths[who]))
        assert status == 0, out
    assert masked(paths["bdrv"]) == masked(paths["qemu"])
    if len(extra) > 24:
        assert b"\xab" * 16 in paths["bdrv"].read_bytes()
