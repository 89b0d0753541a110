"""@qemu_lacks: features QEMU 7.2 lacks get references from bdrv, never silently.

Stand-in tools as in test_harness_plugin.py: shell scripts named like the real
programs. `whoami` makes them say which implementation ran, so a reference shows which
backend wrote it.
"""

import os
import stat
import sys
from pathlib import Path

import pytest

from harness.plugin import verified_by

pytest_plugins = ["pytester"]

TOOL = """#!/bin/sh
for a in "$@"; do [ "$a" = whoami ] && echo "implementation: {impl}"; done
echo "$(basename "$0") $*"
exit 0
"""

TEST_FILE = '''
from harness import formats, qemu_lacks

@formats("raw")
def test_plain(iot):
    iot.img("info whoami")

@formats("raw")
@qemu_lacks("VHD check")
def test_lacking(iot):
    """Checks what QEMU cannot.

    Verified by: a stand-in witness
    """
    iot.img("check whoami")

@formats("raw")
@qemu_lacks("VHD differencing")
def test_unverified(iot):
    """No witness named here."""
    iot.img("info whoami")
'''


@pytest.fixture
def tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ["qemu-img", "qemu-io", "bdrv-img", "bdrv-io"]:
        p = bin_dir / name
        p.write_text(TOOL.format(impl=name.split("-")[0]))
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # The subprocess pytest imports this checkout's harness, whatever is installed.
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return bin_dir


def _run(pytester, *args):
    return pytester.runpytest_subprocess("--bdrv-subprocess", "-p", "no:cacheprovider",
                                         "-rs", "-v", *args)


def test_regen_takes_lacking_tests_from_bdrv_and_the_rest_from_qemu(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    result = _run(pytester, "--regen", "-k", "not unverified")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines_random([
        "*test_plain?bdrv-raw? SKIPPED*", "*test_plain?qemu-raw? PASSED*",
        "*test_lacking?bdrv-raw? PASSED*", "*test_lacking?qemu-raw? SKIPPED*",
        "*not run: QEMU 7.2 lacks VHD check*",
        "*not run: --regen takes reference output from the qemu backend only*",
    ])
    assert (pytester.path / "test_plain.out").read_text() == (
        "$ qemu-img info whoami\nimplementation: qemu\nqemu-img info whoami\n")
    assert (pytester.path / "test_lacking.out").read_text() == (
        "$ qemu-img check whoami\nimplementation: bdrv\nqemu-img check whoami\n")


def test_lacking_test_compares_on_bdrv_and_is_not_run_on_qemu(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    _run(pytester, "--regen", "-k", "lacking")
    result = _run(pytester, "-k", "lacking")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*not run: QEMU 7.2 lacks VHD check*"])
    # The reference is a contract: a different bdrv output fails.
    ref = pytester.path / "test_lacking.out"
    ref.write_text(ref.read_text().replace("bdrv", "qemu"))
    _run(pytester, "-k", "lacking").assert_outcomes(failed=1, skipped=1)


def test_regen_on_qemu_alone_writes_no_lacking_reference(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    result = _run(pytester, "--regen", "--backend", "qemu", "-k", "lacking")
    result.assert_outcomes(skipped=1)
    assert not (pytester.path / "test_lacking.out").exists()


def test_a_lacking_test_must_name_its_witness(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    for args in [("--regen",), ()]:
        result = _run(pytester, "-k", "unverified", *args)
        # Both backends fail: no silent pass, and no silent *not run* either.
        result.assert_outcomes(errors=2)
        result.stdout.fnmatch_lines(["*test_unverified is marked qemu_lacks('VHD "
                                     "differencing')*Verified by: ...*"])
    assert not (pytester.path / "test_unverified.out").exists()


def test_runner_summary_gives_the_reason(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    _run(pytester, "--regen", "-k", "lacking")
    result = pytester.run(sys.executable, "-m", "harness.runner", "--bdrv-subprocess",
                          "-f", "raw", str(pytester.path), "--", "-k", "lacking")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "bdrv     raw           1       0        0",
        "qemu     raw           0       0        1",
        "not run:",
        "  qemu raw: 1 x QEMU 7.2 lacks VHD check",
    ])


def test_verified_by_reads_the_docstring_line():
    def with_line():
        """Something.

        Verified by: libvhdi (pyvhdi), fattools
        """

    def without():
        """Verified somehow."""

    assert verified_by(with_line) == "libvhdi (pyvhdi), fattools"
    assert verified_by(without) is None
    assert verified_by(None) is None
