"""Unit tests of bdrv-img's building blocks: formatting, progress, getopt, sparse runs."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bdrv.tools.getopt import END, MISSING, UNKNOWN, Getopt, LongOpt
from bdrv.tools.img_convert_copy import SECTOR, sparse_runs, target_alignment
from bdrv.tools.output import dump_human, hex_column, json_pretty, size_to_str
from bdrv.tools.progress import Progress


@pytest.mark.parametrize("value, text", [
    (0, "0 B"), (1, "1 B"), (512, "512 B"), (1000, "0.977 KiB"), (1023, "0.999 KiB"),
    (1024, "1 KiB"), (4096, "4 KiB"), (65536, "64 KiB"), (1047552, "0.999 MiB"),
    (1048064, "1 MiB"), (67108864, "64 MiB"), (10**12, "931 GiB"), (2**63 - 1, "8 EiB"),
])
def test_size_to_str(value: int, text: str) -> None:
    assert size_to_str(value) == text


def test_hex_column() -> None:
    assert hex_column(0) == "0" + " " * 15
    assert hex_column(0x40000) == "0x40000" + " " * 9


def test_json_pretty() -> None:
    info = {"filename": "t.raw", "format": "raw", "dirty-flag": False, "actual-size": 4096,
            "virtual-size": 67108864}
    assert json_pretty(info) == (
        '{\n    "virtual-size": 67108864,\n    "filename": "t.raw",\n    "format": "raw",\n'
        '    "actual-size": 4096,\n    "dirty-flag": false\n}')
    assert json_pretty([{}]) == "[\n    {\n    }\n]"
    assert json_pretty({"a": []}) == '{\n    "a": [\n    ]\n}'


def test_dump_human() -> None:
    data = {"compat": "1.1", "lazy-refcounts": False, "bitmaps": [{"name": "b"}]}
    text = dump_human(data)
    assert "    lazy refcounts: false\n" in text
    assert "    bitmaps:\n        [0]:\n            name: b\n" in text


def _progress_lines(steps: list[tuple[float, int]], enabled: bool = True) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        meter = Progress(enabled, 1.0)
        for delta, maximum in steps:
            meter.print(delta, maximum)
        meter.end()
    return out.getvalue()


def test_progress_prints_like_qemu_img_convert() -> None:
    """qemu-img convert -p of 128+128+8 allocated sectors prints exactly this."""
    steps = [(0, 100)] + [(100.0 * done / 264, 0) for done in (128, 256, 264)] + [(100, 0)]
    assert _progress_lines(steps) == (
        "    (0.00/100%)\r    (48.48/100%)\r    (96.97/100%)\r    (100.00/100%)\r"
        "    (100.00/100%)\r\n")
    assert _progress_lines(steps, enabled=False) == ""


def _scan(argv: list[str], optstring: str, longopts: tuple[LongOpt, ...] = ()
          ) -> tuple[list[tuple[str, str | None]], str, list[str]]:
    scan = Getopt(argv, optstring, longopts)
    seen: list[tuple[str, str | None]] = []
    while True:
        key = scan.next_option()
        if key is END:
            return seen, "", scan.operands
        if key in (UNKNOWN, MISSING):
            return seen, f"{key} {scan.failed_arg}", scan.operands
        seen.append((key, scan.optarg))


LONG = (LongOpt("output", True, "output"), LongOpt("object", True, "object"),
        LongOpt("force-share", False, "U"))


def test_getopt_permutes_operands_behind_options() -> None:
    seen, err, operands = _scan(["info", "a", "-U", "b", "--output=json", "c"], ":f:U", LONG)
    assert seen == [("U", None), ("output", "json")] and not err
    assert operands == ["a", "b", "c"]


def test_getopt_double_dash_and_lone_dash() -> None:
    seen, _, operands = _scan(["x", "-", "--", "-U"], ":U", LONG)
    assert seen == [] and operands == ["-", "-U"]


@pytest.mark.parametrize("argv, error", [
    (["info", "-xU", "t"], "? info"),        # optind is not past "-xU" yet
    (["info", "-Ux", "t"], "? -Ux"),
    (["info", "t", "-xU"], "? t"),
    (["info", "-Uf"], ": -Uf"),
    (["info", "t", "--output"], ": --output"),
    (["info", "--o=json", "t"], "? --o=json"),   # ambiguous: output, object
    (["info", "--force-share=1", "t"], "? --force-share=1"),
])
def test_getopt_error_names_argv_optind_minus_one(argv: list[str], error: str) -> None:
    assert _scan(argv, ":f:U", LONG)[1] == error


def test_getopt_abbreviations_and_attached_arguments() -> None:
    seen, err, _ = _scan(["c", "--out", "json", "--force", "-fraw", "-Uf", "qcow2"], ":f:U",
                         LONG)
    assert not err
    assert seen == [("output", "json"), ("U", None), ("f", "raw"), ("U", None), ("f", "qcow2")]


def test_getopt_require_order_stops_at_first_operand() -> None:
    seen, _, operands = _scan(["qemu-img", "-V", "info", "-U"], "+:hV")
    assert seen == [("V", None)] and operands == ["info", "-U"]


# -- sparse detection: a literal per-sector transcription of qemu-img's rules -------------


def _allocated_sectors(nz: list[bool], start: int, n: int, sector_num: int,
                       alignment: int) -> tuple[bool, int]:
    is_data = nz[start]
    i = 1
    while i < n and nz[start + i] == is_data:
        i += 1
    if i == n:
        return is_data, i
    tail = (sector_num + i) & (alignment - 1)
    if tail:
        if not is_data and i <= tail:
            is_data = True
        if is_data:
            i = min(i + alignment - tail, n)
        else:
            i -= tail
    return is_data, i


def _reference_runs(nz: list[bool], sector_num: int, min_sparse: int,
                    alignment: int) -> list[tuple[int, int, bool]]:
    out = []
    start = 0
    while start < len(nz):
        n = len(nz) - start
        minimum = min(min_sparse, n)
        is_data, pnum = _allocated_sectors(nz, start, n, sector_num + start, alignment)
        if is_data:
            used = checked = pnum
            pos = start + pnum
            while pos < len(nz):
                more, count = _allocated_sectors(nz, pos, len(nz) - pos, sector_num + pos,
                                                 alignment)
                pos += count
                checked += count
                if more:
                    used = checked
                elif count >= minimum:
                    break
            pnum = used
        out.append((start, pnum, is_data))
        start += pnum
    return out


@settings(max_examples=300, deadline=None)
@given(
    flags=st.lists(st.booleans(), min_size=1, max_size=64),
    sector_num=st.integers(0, 20),
    min_sparse=st.sampled_from([1, 2, 8, 16, 32768]),
    request_alignment=st.sampled_from([1, 512, 4096]),
)
def test_sparse_runs_match_qemu_rules(flags: list[bool], sector_num: int, min_sparse: int,
                                      request_alignment: int) -> None:
    buf = b"".join((b"\1" if f else b"\0") * SECTOR for f in flags)
    alignment = target_alignment(min_sparse, request_alignment)
    assert sparse_runs(buf, sector_num, min_sparse, alignment) == _reference_runs(
        flags, sector_num, min_sparse, alignment)
