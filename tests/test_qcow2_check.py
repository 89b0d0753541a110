"""bdrv-img check on corrupted qcow2 images against qemu-img check 7.2.

Each scenario builds an image with qemu-img/qemu-io, corrupts it with raw byte edits
(offsets found from the image's own tables), copies it, and runs `check` (human and
JSON), `check -r leaks` and `check -r all` with both tools on identical copies: stdout,
stderr, exit code and the repaired file's bytes must be the same.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from img_oracle import QEMU_IMG, QEMU_IO, bdrv_img, needs_qemu, qemu_img  # noqa: E402

pytestmark = needs_qemu


class Image:
    """Raw edits of a qcow2 file by its own tables (no bdrv involved)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, offset: int, n: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def write(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def u64(self, offset: int) -> int:
        return int(struct.unpack(">Q", self.read(offset, 8))[0])

    def set64(self, offset: int, value: int) -> None:
        self.write(offset, struct.pack(">Q", value))

    @property
    def cluster_bits(self) -> int:
        return int(struct.unpack(">I", self.read(20, 4))[0])

    @property
    def l1_offset(self) -> int:
        return self.u64(40)

    @property
    def reftable_offset(self) -> int:
        return self.u64(48)

    def l2_slot(self, guest: int) -> int:
        cb = self.cluster_bits
        l2_bits = cb - 3
        l1_index = guest >> (cb + l2_bits)
        l2 = self.u64(self.l1_offset + 8 * l1_index) & 0x00FFFFFFFFFFFE00
        return l2 + 8 * ((guest >> cb) & ((1 << l2_bits) - 1))

    def refcount_slot(self, cluster: int) -> int:
        cb = self.cluster_bits
        order = int(struct.unpack(">I", self.read(96, 4))[0])
        assert order == 4
        per = 1 << (cb - 1)
        block = self.u64(self.reftable_offset + 8 * (cluster // per)) & ~0x1FF
        return block + 2 * (cluster % per)

    def set_refcount(self, cluster: int, value: int) -> None:
        self.write(self.refcount_slot(cluster), struct.pack(">H", value))


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=60)


def make(d: Path, size: str = "64M", opts: str = "", *writes: str) -> Image:
    path = d / "t.qcow2"
    args = [str(QEMU_IMG), "create", "-q", "-f", "qcow2"]
    if opts:
        args += ["-o", opts]
    sh(*args, str(path), size)
    for w in writes:
        sh(str(QEMU_IO), "-f", "qcow2", "-c", w, str(path))
    return Image(path)


Scenario = Callable[[Path], Image]


def _leak(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x11 0 256k")
    img.set_refcount(9, 1)  # past the data: cluster 9 is free
    return img


def _refcount_zero(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x11 0 256k")
    img.set_refcount(5, 0)
    return img


def _refcount_low(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x11 0 64k")
    img.set_refcount(4, 0)
    img.set_refcount(4, 1)
    sh(str(QEMU_IMG), "snapshot", "-c", "s", str(img.path))
    return img


def _refcount_too_low_shared(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x22 0 128k")
    sh(str(QEMU_IMG), "snapshot", "-c", "s1", str(img.path))
    img.set_refcount(5, 1)
    return img


def _leaks_many(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x33 0 1M")
    for c in range(30, 40):
        img.set_refcount(c, 2)
    return img


def _leak_raised(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x44 0 128k")
    img.set_refcount(4, 3)
    return img


def _copied_l2_clear(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x55 0 64k")
    slot = img.l2_slot(0)
    img.set64(slot, img.u64(slot) & ~(1 << 63))
    return img


def _copied_l1_clear(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x55 0 64k")
    img.set64(img.l1_offset, img.u64(img.l1_offset) & ~(1 << 63))
    return img


def _copied_set_on_shared(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x66 0 64k")
    sh(str(QEMU_IMG), "snapshot", "-c", "s", str(img.path))
    slot = img.l2_slot(0)
    img.set64(slot, img.u64(slot) | (1 << 63))
    return img


def _l2_unaligned(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x77 0 64k", "write -P 0x78 64k 64k")
    slot = img.l2_slot(65536)
    img.set64(slot, img.u64(slot) + 0x200)
    return img


def _l2_prealloc_unaligned(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x77 0 64k", "write -z 64k 64k")
    slot = img.l2_slot(0)
    img.set64(img.l2_slot(65536), (img.u64(slot) + 0x200) | 1)
    return img


def _l2_beyond_end(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x77 0 64k")
    img.set64(img.l2_slot(131072), (1 << 63) | (100 << 16))
    return img


def _l1_unaligned(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x12 0 64k")
    img.set64(img.l1_offset, img.u64(img.l1_offset) + 0x200)
    return img


def _l1_beyond_end(d: Path) -> Image:
    img = make(d, "8G", "", "write -P 0x12 0 64k")
    img.set64(img.l1_offset + 8, (1 << 63) | (1000 << 16))
    return img


def _l1_reserved(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x12 0 64k")
    img.set64(img.l1_offset, img.u64(img.l1_offset) | 1)
    return img


def _l2_reserved(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x12 0 64k")
    slot = img.l2_slot(0)
    img.set64(slot, img.u64(slot) | 0x2)
    return img


def _reftable_unaligned(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x12 0 64k")
    img.set64(img.reftable_offset, img.u64(img.reftable_offset) + 0x200)
    return img


def _reftable_outside(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x12 0 64k")
    img.set64(img.reftable_offset + 8, 50 << 16)
    return img


def _reftable_reserved(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x12 0 64k")
    img.set64(img.reftable_offset, img.u64(img.reftable_offset) | 1)
    return img


def _refblock_shared(d: Path) -> Image:
    """The refblock is also used as a data cluster (overlapping metadata)."""
    img = make(d, "64M", "", "write -P 0x12 0 64k", "write -P 0x13 64k 64k")
    refblock = img.u64(img.reftable_offset)
    slot = img.l2_slot(65536)
    img.set64(slot, (1 << 63) | refblock)
    return img


def _l2_shared_with_l1(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x12 0 64k")
    slot = img.l2_slot(0)
    img.set64(slot, (1 << 63) | img.l1_offset)
    return img


def _compressed_beyond(d: Path) -> Image:
    img = make(d, "64M", "", "write -c -P 0x21 0 64k")
    slot = img.l2_slot(0)
    entry = img.u64(slot)
    img.set64(slot, entry | (1 << 63))
    img.set64(img.l2_slot(65536), (1 << 62) | (200 << 16))
    return img


def _compressed_ok(d: Path) -> Image:
    return make(d, "64M", "", "write -c -P 0x21 0 64k", "write -P 0x22 64k 64k",
                "write -c -P 0x23 1M 64k")


def _fragmented(d: Path) -> Image:
    return make(d, "64M", "", "write -P 1 1M 64k", "write -P 2 0 64k", "write -P 3 4M 64k")


def _clean_small_clusters(d: Path) -> Image:
    img = make(d, "4M", "cluster_size=512", "write -P 0x31 0 64k")
    img.set_refcount(200, 1)
    return img


def _truncated(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x31 0 256k")
    Path(img.path).stat()
    size = img.path.stat().st_size
    with open(img.path, "r+b") as f:
        f.truncate(size - 3 * 65536)
    return img


def _dirty_lazy(d: Path) -> Image:
    img = make(d, "64M", "lazy_refcounts=on", "write -P 0x31 0 128k")
    img.write(72, struct.pack(">Q", 1))
    img.set_refcount(4, 0)
    return img


def _extended_l2(d: Path) -> Image:
    img = make(d, "64M", "extended_l2=on", "write -P 0x31 0 64k", "write -P 0x32 128k 4k")
    img.set_refcount(9, 1)
    return img


def _refcount_bits_1(d: Path) -> Image:
    return make(d, "64M", "refcount_bits=1", "write -P 0x31 0 64k")


def _reftable_self(d: Path) -> Image:
    """Hostile: the refcount table's first entry points at the table itself."""
    img = make(d, "64M", "", "write -P 0x31 0 64k")
    img.set64(img.reftable_offset, img.reftable_offset)
    return img


def _l2_is_l1(d: Path) -> Image:
    """Hostile: the L1 table's entry points at the L1 table (a loop)."""
    img = make(d, "64M", "", "write -P 0x31 0 64k")
    img.set64(img.l1_offset, (1 << 63) | img.l1_offset)
    return img


def _l2_is_header(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x31 0 64k")
    img.set64(img.l1_offset, (1 << 63))
    return img


def _l1_size_huge(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x31 0 64k")
    img.write(36, struct.pack(">I", 0x3FFFFFF))
    return img


def _l1_size_big_in_file(d: Path) -> Image:
    """An L1 table far larger than needed (and the file), within 7.2's limit."""
    img = make(d, "64M", "", "write -P 0x31 0 64k")
    img.write(36, struct.pack(">I", 0x400000))
    return img


def _reftable_clusters_huge(d: Path) -> Image:
    img = make(d, "64M", "", "write -P 0x31 0 64k")
    img.write(56, struct.pack(">I", 0x100000))
    return img


def _all_l2_entries_same(d: Path) -> Image:
    """Every L2 entry maps the same host cluster (a refcount far past 16 bits)."""
    img = make(d, "8G", "refcount_bits=1", "write -P 0x31 0 64k")
    slot = img.l2_slot(0)
    entry = img.u64(slot)
    img.write(slot, struct.pack(">Q", entry) * 8192)
    return img


SCENARIOS: dict[str, Scenario] = {
    "reftable_self": _reftable_self,
    "l2_is_l1": _l2_is_l1,
    "l2_is_header": _l2_is_header,
    "l1_size_huge": _l1_size_huge,
    "l1_size_big_in_file": _l1_size_big_in_file,
    "reftable_clusters_huge": _reftable_clusters_huge,
    "all_l2_entries_same": _all_l2_entries_same,
    "leak": _leak,
    "refcount_zero": _refcount_zero,
    "refcount_low": _refcount_low,
    "refcount_too_low_shared": _refcount_too_low_shared,
    "leaks_many": _leaks_many,
    "leak_raised": _leak_raised,
    "copied_l2_clear": _copied_l2_clear,
    "copied_l1_clear": _copied_l1_clear,
    "copied_set_on_shared": _copied_set_on_shared,
    "l2_unaligned": _l2_unaligned,
    "l2_prealloc_unaligned": _l2_prealloc_unaligned,
    "l2_beyond_end": _l2_beyond_end,
    "l1_unaligned": _l1_unaligned,
    "l1_beyond_end": _l1_beyond_end,
    "l1_reserved": _l1_reserved,
    "l2_reserved": _l2_reserved,
    "reftable_unaligned": _reftable_unaligned,
    "reftable_outside": _reftable_outside,
    "reftable_reserved": _reftable_reserved,
    "refblock_shared": _refblock_shared,
    "l2_shared_with_l1": _l2_shared_with_l1,
    "compressed_beyond": _compressed_beyond,
    "compressed_ok": _compressed_ok,
    "fragmented": _fragmented,
    "small_clusters": _clean_small_clusters,
    "truncated": _truncated,
    "dirty_lazy": _dirty_lazy,
    "extended_l2": _extended_l2,
    "refcount_bits_1": _refcount_bits_1,
}


def _norm(text: str) -> str:
    return text.replace("qemu-img:", "IMG:")


def _same(tmp: Path, name: str, *args: str) -> None:
    q = tmp / "q"
    b = tmp / "b"
    ours = bdrv_img(b, *args)
    theirs = qemu_img(q, *args)
    assert (ours.status, _norm(ours.stdout), _norm(ours.stderr)) == \
        (theirs.status, _norm(theirs.stdout), _norm(theirs.stderr)), name
    assert (b / "t.qcow2").read_bytes() == (q / "t.qcow2").read_bytes(), name


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_check_and_repair_like_qemu(tmp_path: Path, name: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    SCENARIOS[name](src)
    for sub in ("q", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(src / "t.qcow2", tmp_path / sub / "t.qcow2")
    _same(tmp_path, name, "check", "t.qcow2")
    _same(tmp_path, name, "check", "--output=json", "t.qcow2")
    _same(tmp_path, name, "check", "-r", "leaks", "t.qcow2")
    _same(tmp_path, name, "check", "-r", "all", "t.qcow2")
    _same(tmp_path, name, "check", "--output=json", "t.qcow2")


# -- recovery on open ------------------------------------------------------------------

def _dirty(d: Path, damage: str) -> Image:
    img = make(d, "64M", "lazy_refcounts=on", "write -P 0x31 0 128k")
    img.write(72, struct.pack(">Q", 1))  # the dirty bit, as a killed process leaves it
    if damage == "refcount_zero":
        img.set_refcount(4, 0)
    elif damage == "leak":
        img.set_refcount(9, 1)
    elif damage == "copied":
        slot = img.l2_slot(0)
        img.set64(slot, img.u64(slot) & ~(1 << 63))
    elif damage == "unrepairable":
        img.set64(img.l1_offset, (1 << 63) | img.l1_offset)
    return img


@pytest.mark.parametrize("damage", ["none", "refcount_zero", "leak", "copied",
                                    "unrepairable"])
def test_dirty_image_repaired_on_read_write_open_only(tmp_path: Path, damage: str) -> None:
    from io_oracle import run_bdrv, run_qemu

    src = tmp_path / "src"
    src.mkdir()
    _dirty(src, damage)
    for sub in ("q", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(src / "t.qcow2", tmp_path / sub / "t.qcow2")
    for opts in (["-r"], []):
        args = ["-f", "qcow2", *opts, "-c", "read -P 0x31 0 128k", "t.qcow2"]
        theirs = run_qemu(args, tmp_path / "q")
        ours = run_bdrv(args, tmp_path / "b")
        strip = lambda t: "\n".join(  # noqa: E731
            line for line in t.replace("\r\n", "\n").split("\n") if "ops/sec" not in line)
        assert (ours.status, strip(ours.stdout), strip(ours.stderr)) == \
            (theirs.status, strip(theirs.stdout), strip(theirs.stderr)), (damage, opts)
        if damage != "unrepairable":
            assert (tmp_path / "b" / "t.qcow2").read_bytes() == \
                (tmp_path / "q" / "t.qcow2").read_bytes(), (damage, opts)
