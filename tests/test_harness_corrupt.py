"""Unit tests for harness.corrupt: edits land where qcow2.txt puts the structures."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness.corrupt import (
    QCOW2_EXT_END,
    QCOW2_EXT_FEATURE_TABLE,
    Qcow2Corrupter,
    RawCorrupter,
    corrupter,
    digest,
    qcow2,
)

QEMU_IMG = shutil.which("qemu-img")
QEMU_IO = shutil.which("qemu-io")
needs_qemu = pytest.mark.skipif(QEMU_IMG is None or QEMU_IO is None,
                                reason="qemu-img/qemu-io not installed")


def _image(tmp_path: Path, *opts: str, write: bool = True) -> Path:
    path = tmp_path / "t.qcow2"
    assert QEMU_IMG is not None and QEMU_IO is not None
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", *opts, str(path), "64M"],
                   check=True)
    if write:
        subprocess.run([QEMU_IO, "-f", "qcow2", "-c", "write -P 0x11 0 128k", str(path)],
                       check=True, capture_output=True)
    return path


def _check(path: Path) -> str:
    assert QEMU_IMG is not None
    run = subprocess.run([QEMU_IMG, "check", str(path)], capture_output=True, text=True)
    return run.stdout + run.stderr


def test_digest_and_raw_edits(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(1024))
    first = digest(path)
    lines: list[str] = []
    c = RawCorrupter(path, lines.append)
    c.poke(16, b"\xab\xcd")
    assert path.read_bytes()[16:18] == b"\xab\xcd"
    assert digest(path) != first
    c.truncate(100)
    assert c.size() == 100
    assert lines == ["corrupt f: 2 bytes at 0x10 = 0xabcd", "corrupt f: truncated to 100 bytes"]


def test_corrupter_by_format(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"")
    assert type(corrupter(path, "qcow2")) is Qcow2Corrupter
    assert type(corrupter(path, "raw")) is RawCorrupter


@needs_qemu
def test_header_fields_round_trip(tmp_path: Path) -> None:
    path = _image(tmp_path)
    lines: list[str] = []
    c = qcow2(path, lines.append)
    f = c.fields()
    assert (f["magic"], f["version"], f["cluster_bits"], f["size"]) == (0x514649FB, 3, 16,
                                                                        64 << 20)
    assert (f["l1_table_offset"], f["refcount_table_offset"], f["header_length"]) == (
        0x30000, 0x10000, 112)
    c.header(cluster_bits=8, l1_size=0x2000001)
    raw = path.read_bytes()
    assert struct.unpack_from(">I", raw, 20)[0] == 8
    assert struct.unpack_from(">I", raw, 36)[0] == 0x2000001
    assert lines == ["corrupt t.qcow2: header cluster_bits=8, l1_size=0x2000001"]
    with pytest.raises(KeyError):
        c.header(no_such_field=1)


@needs_qemu
def test_incompatible_bits(tmp_path: Path) -> None:
    path = _image(tmp_path)
    c = qcow2(path)
    c.incompatible(set_bits=1 << 1)
    assert c.fields()["incompatible_features"] == 2
    assert "corrupt: true" in subprocess.run([QEMU_IMG or "", "info", str(path)],
                                             capture_output=True, text=True).stdout
    c.incompatible(clear_bits=1 << 1)
    assert c.fields()["incompatible_features"] == 0


@needs_qemu
def test_extensions_listed_changed_and_added(tmp_path: Path) -> None:
    path = _image(tmp_path)
    c = qcow2(path)
    exts = c.extensions()
    assert [(m, n) for _, m, n in exts] == [(QCOW2_EXT_FEATURE_TABLE, 384), (QCOW2_EXT_END, 0)]
    c.extension(0x12345678, b"abc")
    exts = c.extensions()
    assert [(m, n) for _, m, n in exts][1:] == [(0x12345678, 3), (QCOW2_EXT_END, 0)]
    assert "No errors were found" in _check(path)  # an unknown extension is fine
    c.extension(QCOW2_EXT_FEATURE_TABLE, length=0x10000)
    assert "Header extension too large" in _check(path)


@needs_qemu
def test_backing_name(tmp_path: Path) -> None:
    path = _image(tmp_path)
    qcow2(path).backing_name(b"base.qcow2")
    assert QEMU_IMG is not None
    info = subprocess.run([QEMU_IMG, "info", "-U", str(path)], capture_output=True,
                          text=True).stdout
    assert "backing file: base.qcow2" in info


@needs_qemu
def test_tables_follow_the_header(tmp_path: Path) -> None:
    path = _image(tmp_path)
    c = qcow2(path)
    l2 = c.l1_entry(0)
    assert l2 == (1 << 63) | 0x40000
    assert c.l2_entry(0) == (1 << 63) | 0x50000
    assert c.l2_entry(64 << 10) == (1 << 63) | 0x60000
    assert c.reftable_entry(0) == 0x20000
    assert [c.refcount_of(i) for i in range(8)] == [1, 1, 1, 1, 1, 1, 1, 0]
    c.l2(64 << 10, 0)
    assert c.l2_entry(64 << 10) == 0
    assert "Leaked cluster 6 refcount=1 reference=0" in _check(path)
    c.l1(0, 0x40201)
    assert "ERROR l2_offset=40200: Table is not cluster aligned" in _check(path)


@needs_qemu
@pytest.mark.parametrize("bits", [1, 2, 4, 8, 32, 64])
def test_refcount_widths(tmp_path: Path, bits: int) -> None:
    path = _image(tmp_path, "-o", f"refcount_bits={bits}")
    c = qcow2(path)
    assert [c.refcount_of(i) for i in range(8)] == [1, 1, 1, 1, 1, 1, 1, 0]
    c.refcount(7, 1).refcount(6, 0)
    assert [c.refcount_of(i) for i in range(9)] == [1, 1, 1, 1, 1, 1, 0, 1, 0]
    assert "ERROR cluster 6 refcount=0 reference=1" in _check(path)
    with pytest.raises(ValueError):
        c.refcount(7, 1 << bits)


@needs_qemu
def test_snapshot_entries(tmp_path: Path) -> None:
    path = _image(tmp_path)
    assert QEMU_IMG is not None
    for name in ("first", "a-longer-second-name"):
        subprocess.run([QEMU_IMG, "snapshot", "-c", name, str(path)], check=True)
    c = qcow2(path)
    listing = subprocess.run([QEMU_IMG, "snapshot", "-l", str(path)], capture_output=True,
                             text=True, check=True).stdout
    assert "a-longer-second-name" in listing
    first, second = c.snapshot_entry(0), c.snapshot_entry(1)
    assert first["l1_size"] == second["l1_size"] == 1
    assert first["name_size"] == len("first")
    assert second["name_size"] == len("a-longer-second-name")
    assert first["l1_table_offset"] % 65536 == 0
    assert first["l1_table_offset"] != second["l1_table_offset"]
    # The second entry's L1 table is found past the first's variable-sized parts.
    c.snapshot_l1(1, 0, 0x123400)
    assert "ERROR l2_offset=123400: Table is not cluster aligned" in _check(path)
    assert int.from_bytes(c.read(second["l1_table_offset"], 8), "big") == 0x123400
    c.snapshot(0, l1_table_offset=0x10200)
    assert c.snapshot_entry(0)["l1_table_offset"] == 0x10200
    with pytest.raises(ValueError):
        c.snapshot_entry(2)
