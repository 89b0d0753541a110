"""bdrv-img compare: do two images show the same guest data?

Exit codes as qemu-img's: 0 identical, 1 different, 2 open/usage errors after the
option scan, 3 block status failed, 4 read errors. Ranges both images report as zero
are skipped; allocated ranges are read in 2 MiB chunks and compared in bulk, and a
mismatch is reported at the start of the first differing 512-byte sector.
"""

from __future__ import annotations

import os

import numpy as np

from bdrv.backend import Backend
from bdrv.errors import BlockError
from bdrv.request import BLOCK_ALLOCATED, BLOCK_ZERO, block_status_above
from bdrv.tools.img_common import (
    Img,
    ImgExit,
    long_opts,
    open_image,
    parse_cache_mode,
    print_help,
)
from bdrv.tools.progress import Progress

IO_BUF_SIZE = 2 << 20
SECTOR = 512
_LONG = long_opts("help/h", "object:", "image-opts", "force-share/U")


class _Stop(Exception):
    """The comparison is decided: exit with `status`."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def run(img: Img, argv: list[str]) -> int:
    fmt1: str | None = None
    fmt2: str | None = None
    cache = "writeback"
    progress = quiet = strict = image_opts = force_share = False
    for key, arg in img.getopt(argv, "hf:F:T:pqsU", _LONG):
        if key == "h":
            return print_help(img)
        if key == "f":
            fmt1 = arg
        elif key == "F":
            fmt2 = arg
        elif key == "T":
            cache = str(arg)
        elif key == "p":
            progress = True
        elif key == "q":
            quiet = True
        elif key == "s":
            strict = True
        elif key == "U":
            force_share = True
        elif key == "image-opts":
            image_opts = True
    if quiet:
        progress = False
    if img.optind != len(argv) - 2:
        raise img.exit_usage("Expecting two image file names")
    name1, name2 = argv[img.optind], argv[img.optind + 1]
    meter = Progress(progress, 2.0)
    try:
        return _compare(img, meter, name1, name2, fmt1, fmt2, cache, image_opts, force_share,
                        strict, quiet)
    finally:
        meter.end()


def _compare(img: Img, meter: Progress, name1: str, name2: str, fmt1: str | None,
             fmt2: str | None, cache: str, image_opts: bool, force_share: bool, strict: bool,
             quiet: bool) -> int:
    parsed = parse_cache_mode(cache, 0)
    if parsed is None:
        img.error(f"Invalid source cache option: {cache}")
        return 2
    flags = parsed[0]
    try:
        blk1 = open_image(img, name1, fmt1, flags, image_opts=image_opts,
                          force_share=force_share)
    except ImgExit:
        return 2
    try:
        try:
            blk2 = open_image(img, name2, fmt2, flags, image_opts=image_opts,
                              force_share=force_share)
        except ImgExit:
            return 2
        try:
            return _Comparison(img, meter, quiet, blk1, blk2, name1, name2).run(strict)
        except _Stop as stop:
            return stop.status
        finally:
            blk2.close()
    finally:
        blk1.close()


class _Comparison:
    def __init__(self, img: Img, meter: Progress, quiet: bool, blk1: Backend, blk2: Backend,
                 name1: str, name2: str) -> None:
        self.img, self.meter, self.quiet = img, meter, quiet
        self.blk = (blk1, blk2)
        self.names = (name1, name2)

    def run(self, strict: bool) -> int:
        img, quiet = self.img, self.quiet
        size1, size2 = self.blk[0].getlength(), self.blk[1].getlength()
        total = min(size1, size2)
        self.base = max(size1, size2)
        self.meter.print(0, 100)
        if strict and size1 != size2:
            img.qprint(quiet, "Strict mode: Image size mismatch!\n")
            return 1
        offset = 0
        while offset < total:
            st1 = self._status(0, offset, size1 - offset)
            st2 = self._status(1, offset, size2 - offset)
            chunk = min(st1[1], st2[1])
            if strict and st1[0] != st2[0]:
                img.qprint(quiet, f"Strict mode: Offset {offset} block status mismatch!\n")
                return 1
            alloc1, alloc2 = st1[0] & BLOCK_ALLOCATED, st2[0] & BLOCK_ALLOCATED
            if st1[0] & BLOCK_ZERO and st2[0] & BLOCK_ZERO:
                pass
            elif alloc1 == alloc2:
                if alloc1:
                    chunk = min(chunk, IO_BUF_SIZE)
                    self._compare_data(offset, chunk)
            else:
                chunk = min(chunk, IO_BUF_SIZE)
                self._check_empty(0 if alloc1 else 1, offset, chunk)
            offset += chunk
            self._advance(chunk)
        if size1 != size2:
            img.qprint(quiet, "Warning: Image size mismatch!\n")
            over = 0 if size1 > size2 else 1
            while offset < self.base:
                flags, chunk = self._status(over, offset, self.base - offset)
                if flags & BLOCK_ALLOCATED and not flags & BLOCK_ZERO:
                    chunk = min(chunk, IO_BUF_SIZE)
                    self._check_empty(over, offset, chunk)
                offset += chunk
                self._advance(chunk)
        img.qprint(quiet, "Images are identical.\n")
        return 0

    def _advance(self, chunk: int) -> None:
        share = np.float32(chunk) / np.float32(self.base) * np.float32(100)
        self.meter.print(float(share), 100)

    def _status(self, which: int, offset: int, length: int) -> tuple[int, int]:
        try:
            st, _ = block_status_above(self.blk[which].node, None, offset, length)
        except BlockError:
            self.img.error(f"Sector allocation test failed for {self.names[which]}")
            raise _Stop(3) from None
        return st.flags, st.pnum

    def _read(self, which: int, offset: int, length: int) -> bytes:
        try:
            return self.blk[which].pread(offset, length)
        except BlockError as exc:
            self.img.error(f"Error while reading offset {offset} of {self.names[which]}: "
                           f"{os.strerror(exc.errno)}")
            raise _Stop(4) from None

    def _compare_data(self, offset: int, length: int) -> None:
        data1, data2 = self._read(0, offset, length), self._read(1, offset, length)
        if data1 == data2:
            return
        a = np.frombuffer(data1, dtype=np.uint8)
        b = np.frombuffer(data2, dtype=np.uint8)
        first = int(np.argmax(a != b))
        self._mismatch(offset + first // SECTOR * SECTOR)

    def _check_empty(self, which: int, offset: int, length: int) -> None:
        data = self._read(which, offset, length)
        nonzero = len(data) - len(data.lstrip(b"\0"))
        if nonzero < len(data):
            self._mismatch(offset + nonzero // SECTOR * SECTOR)

    def _mismatch(self, offset: int) -> None:
        self.img.qprint(self.quiet, f"Content mismatch at offset {offset}!\n")
        raise _Stop(1)
