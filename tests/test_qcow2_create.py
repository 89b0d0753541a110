"""qcow2 creation: bdrv's image files are byte-identical to qemu-img 7.2's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qcow2_util import bdrv_create, needs_qemu, qemu_create  # noqa: E402

from bdrv.errors import BlockError  # noqa: E402

CASES = [
    ("", "1M"), ("", "0"), ("", "1000K"), ("", "10G"), ("", "100G"),
    ("compat=0.10", "1M"), ("compat=0.10", "5G"), ("compat=v2", "3M"),
    ("cluster_size=512", "1M"), ("cluster_size=512", "100M"), ("cluster_size=4k", "1G"),
    ("cluster_size=8k", "1G"), ("cluster_size=2M", "1G"), ("cluster_size=2M", "1M"),
    ("lazy_refcounts=on", "1M"), ("refcount_bits=1", "1M"), ("refcount_bits=2", "64M"),
    ("refcount_bits=4", "64M"), ("refcount_bits=8", "64M"), ("refcount_bits=32", "64M"),
    ("refcount_bits=64", "64M"), ("refcount_bits=1,cluster_size=512", "64M"),
    ("compression_type=zstd", "1M"), ("extended_l2=on", "1M"),
    ("extended_l2=on,cluster_size=16k", "1G"),
    ("preallocation=metadata", "1M"), ("preallocation=metadata", "1000K"),
    ("preallocation=metadata", "100M"), ("preallocation=metadata,cluster_size=512", "10M"),
    ("preallocation=falloc", "1M"), ("preallocation=falloc", "100M"),
    ("preallocation=full", "10M"), ("preallocation=full,cluster_size=4k", "10M"),
    ("preallocation=metadata,lazy_refcounts=on", "1M"),
    ("preallocation=metadata,extended_l2=on", "10M"),
    ("preallocation=falloc,extended_l2=on", "10M"),
    ("preallocation=metadata,compat=0.10", "10M"),
    ("preallocation=falloc,refcount_bits=1,cluster_size=512", "10M"),
    ("preallocation=metadata,refcount_bits=1,cluster_size=512", "10M"),
    ("preallocation=metadata,refcount_bits=64,cluster_size=1k", "20M"),
]


@needs_qemu
@pytest.mark.parametrize("opts,size", CASES)
def test_create_identical(tmp_path: Path, opts: str, size: str) -> None:
    ours, theirs = tmp_path / "b.qcow2", tmp_path / "q.qcow2"
    assert qemu_create(theirs, opts, size).returncode == 0
    bdrv_create(ours, opts, size)
    assert ours.read_bytes() == theirs.read_bytes()


@needs_qemu
@pytest.mark.parametrize("backing,fmt,extra", [
    ("base.qcow2", "qcow2", ""), ("/abs/path/base.img", "raw", "compat=0.10"),
    ("x" * 900, "qcow2", ""), ("base.qcow2", "qcow2", "cluster_size=512"),
    ("json:{\"driver\": \"raw\"}", "raw", "cluster_size=4k"),
])
def test_create_backing_identical(tmp_path: Path, backing: str, fmt: str, extra: str) -> None:
    ours, theirs = tmp_path / "b.qcow2", tmp_path / "q.qcow2"
    opts = f"backing_file={backing.replace(',', ',,')},backing_fmt={fmt}"
    opts += f",{extra}" if extra else ""
    run = qemu_create(theirs, opts, "1M", "-u")
    assert run.returncode == 0, run.stderr
    bdrv_create(ours, opts, "1M")
    assert ours.read_bytes() == theirs.read_bytes()


BAD = [
    ("compat=foo", "Parameter 'version' does not accept value 'foo'"),
    ("compat=0.10,lazy_refcounts=on", "Lazy refcounts only supported with compatibility "
     "level 1.1 and above (use version=v3 or greater)"),
    ("cluster_size=1000", "Cluster size must be a power of two between 512 and 2048k"),
    ("cluster_size=4M", "Cluster size must be a power of two between 512 and 2048k"),
    ("refcount_bits=3", "Refcount width must be a power of two and may not exceed 64 bits"),
    ("compat=0.10,refcount_bits=8", "Different refcount widths than 16 bits require "
     "compatibility level 1.1 or above (use version=v3 or greater)"),
    ("compression_type=foo", "Parameter 'compression-type' does not accept value 'foo'"),
    ("compression_type=zstd,compat=0.10", "Non-zlib compression type is only supported with "
     "compatibility level 1.1 and above (use version=v3 or greater)"),
    ("extended_l2=on,cluster_size=8k", "Extended L2 entries are only supported with cluster "
     "sizes of at least 16384 bytes"),
    ("extended_l2=on,compat=0.10", "Extended L2 entries are only supported with "
     "compatibility level 1.1 and above (use version=v3 or greater)"),
    ("preallocation=foo", "Parameter 'preallocation' does not accept value 'foo'"),
    ("encryption=on", "Parameter 'encrypt.key-secret' is required for cipher"),
    ("data_file_raw=on", "data-file-raw requires data-file"),
    ("backing_file=a.qcow2,backing_fmt=qcow2,preallocation=metadata",
     "Backing file and preallocation can only be used at the same time if extended_l2 is on"),
    ("data_file=x.raw,compat=0.10", "External data files are only supported with "
     "compatibility level 1.1 and above (use version=v3 or greater)"),
]


@needs_qemu
@pytest.mark.parametrize("opts,message", BAD)
def test_create_errors(tmp_path: Path, opts: str, message: str) -> None:
    ours, theirs = tmp_path / "b.qcow2", tmp_path / "q.qcow2"
    run = qemu_create(theirs, opts, "1M", "-u")
    assert run.returncode == 1
    assert run.stderr == f"qemu-img: {theirs}: {message}\n"
    with pytest.raises(BlockError) as exc:
        bdrv_create(ours, opts, "1M")
    assert exc.value.message == message
    # 7.2 deletes the half-made file.
    assert not ours.exists() and not theirs.exists()


@needs_qemu
def test_create_too_big_is_efbig(tmp_path: Path) -> None:
    with pytest.raises(BlockError) as exc:
        bdrv_create(tmp_path / "b.qcow2", "cluster_size=512", "100T")
    assert exc.value.errno == 27
    assert not (tmp_path / "b.qcow2").exists()
