"""Unit tests for harness.runner: iotests options -> pytest options, and the summary."""

from types import SimpleNamespace

import pytest

from harness import runner


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "_plugin_installed", lambda: True)
    return tmp_path


def _without(args, *pairs):
    return [a for a in args if a not in pairs]


def test_defaults_run_both_backends_on_the_iotests_dir(tmp_path):
    assert runner.translate([]) == ["--backend", "both"]
    (tmp_path / "iotests").mkdir()
    assert runner.translate([]) == ["--backend", "both", "iotests"]


def test_format_backend_jobs_junit():
    args = runner.translate(["-f", "raw", "--backend", "bdrv", "-j", "4",
                             "--junitxml", "r.xml"])
    assert args == ["--backend", "bdrv", "--iotests-format", "raw", "-n", "4",
                    "--junitxml", "r.xml"]


def test_groups_become_marker_expressions():
    args = runner.translate(["-g", "quick,rw", "-g", "img", "-x", "slow"])
    assert args[args.index("-m") + 1] == "(quick or rw or img) and not (slow)"
    args = runner.translate(["-x", "locking"])
    assert args[args.index("-m") + 1] == "not (locking)"


def test_names_select_with_k_and_paths_pass_through(tmp_path):
    (tmp_path / "iotests").mkdir()
    args = runner.translate(["test_compare", "resize",
                             "iotests/raw/test_x.py::test_y[qemu-raw]"])
    assert args[args.index("-k") + 1] == "test_compare or resize"
    assert args[-1] == "iotests/raw/test_x.py::test_y[qemu-raw]"
    assert "iotests" not in args  # an explicit path replaces the default


def test_flags_and_passthrough():
    args = runner.translate(["--regen", "--bdrv-subprocess", "--qemu-img", "/q/img",
                             "-v", "--", "-x", "--lf"])
    assert args == ["--backend", "both", "--regen", "--bdrv-subprocess",
                    "--qemu-img", "/q/img", "-v", "-x", "--lf"]


def test_loads_plugin_when_not_installed(monkeypatch):
    monkeypatch.setattr(runner, "_plugin_installed", lambda: False)
    assert runner.translate([])[:2] == ["-p", "harness.plugin"]


def _report(nodeid, when, outcome, backend="bdrv", fmt="raw", longrepr=None):
    return SimpleNamespace(
        nodeid=nodeid, when=when, outcome=outcome, longrepr=longrepr,
        failed=outcome == "failed", skipped=outcome == "skipped", passed=outcome == "passed",
        user_properties=[("iotests_backend", backend), ("iotests_format", fmt)],
    )


def test_summary_counts_per_backend_with_reasons():
    c = runner.SummaryCollector()
    for r in [
        _report("a[bdrv-raw]", "setup", "passed"),
        _report("a[bdrv-raw]", "call", "passed"),
        _report("a[bdrv-raw]", "teardown", "passed"),
        _report("b[bdrv-raw]", "call", "failed"),
        _report("a[qemu-raw]", "setup", "skipped", "qemu",
                longrepr=("f.py", 1, "Skipped: not run: qemu-img not found (qemu-img)")),
        _report("b[qemu-raw]", "call", "passed", "qemu"),
        _report("b[qemu-raw]", "teardown", "failed", "qemu"),
    ]:
        c.pytest_runtest_logreport(r)
    text = c.render()
    assert "bdrv     raw           1       1        0" in text
    assert "qemu     raw           0       1        1" in text
    assert "  qemu raw: 1 x qemu-img not found (qemu-img)" in text
    assert "  b[bdrv-raw]" in text and "  b[qemu-raw]" in text
    assert text.endswith("iotests: 1 passed, 2 failed, 1 skipped\n")
