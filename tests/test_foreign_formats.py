"""Formats QEMU 7.2 knows and bdrv does not (vdi, vmdk, qed, ...) are refused when
probed, never guessed as raw: a raw guess let convert copy the container's bytes as
disk data and bdrv-io overwrite the format's header."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from img_oracle import bdrv_img, needs_qemu, qemu_img, sh  # noqa: E402
from io_oracle import run_bdrv  # noqa: E402

from bdrv.drivers.foreign import foreign_format  # noqa: E402

FORMATS = ["qed", "vdi", "vmdk", "vhdx", "parallels", "qcow"]


@needs_qemu
@pytest.mark.parametrize("fmt", FORMATS)
def test_probed_foreign_image_is_refused_and_left_alone(tmp_path: Path, fmt: str) -> None:
    name = f"t.{fmt}"
    sh(tmp_path, "qemu-img", "create", "-q", "-f", fmt, name, "16M")
    before = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    message = f"Image format '{fmt}' is not supported by bdrv"
    info = bdrv_img(tmp_path, "info", name)
    assert info.status == 1 and message in info.stderr
    convert = bdrv_img(tmp_path, "convert", "-O", "raw", name, "out.raw")
    assert convert.status == 1 and message in convert.stderr
    assert not (tmp_path / "out.raw").exists()
    write = run_bdrv(["-c", "write 0 4k", name], tmp_path)
    assert write.status == 1 and message in write.stderr
    assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == before
    assert qemu_img(tmp_path, "info", "-f", fmt, name).status == 0
    # Asked for explicitly, raw still opens the file as plain bytes.
    assert bdrv_img(tmp_path, "info", "-f", "raw", name).status == 0


def test_magics() -> None:
    assert foreign_format(b"QED\0" + bytes(60), "x") == "qed"
    assert foreign_format(b"QFI\xfb\0\0\0\1", "x") == "qcow"
    assert foreign_format(b"QFI\xfb\0\0\0\3", "x") is None  # qcow2 is ours
    vdi = bytearray(512)
    vdi[0x40:0x44] = (0xBEDA107F).to_bytes(4, "little")
    assert foreign_format(bytes(vdi), "x") == "vdi"
    assert foreign_format(bytes(512), "disk.dmg") == "dmg"
    assert foreign_format(bytes(512), "disk.img") is None


@needs_qemu
def test_probed_raw_refuses_writing_a_foreign_header(tmp_path: Path) -> None:
    sh(tmp_path, "qemu-img", "create", "-q", "-f", "raw", "t.raw", "1M")
    (tmp_path / "h.bin").write_bytes(b"QED\0" + bytes(4092))
    ours = run_bdrv(["-c", "write -s h.bin 0 4k", "t.raw"], tmp_path)
    assert "write failed: Operation not permitted" in ours.stdout + ours.stderr
    assert (tmp_path / "t.raw").read_bytes() == bytes(1 << 20)
