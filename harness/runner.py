"""The `iotests` command: iotests' `check` options on top of pytest, plus a summary.

    iotests -f raw                     every test, both backends, raw
    iotests --backend bdrv -g quick    the quick group on bdrv only
    iotests -j 4 test_compare          tests whose name contains test_compare, 4 workers
    iotests -- -x --lf                 anything after -- goes to pytest unchanged

It runs pytest in this process with a small plugin that gathers every test's outcome,
then prints passed / failed / not run per backend and format, with the reasons for
*not run*, and a last line "iotests: N passed, N failed, N skipped".
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pytest

from .plugin import BACKEND_PROPERTY, FORMAT_PROPERTY

DEFAULT_TEST_DIR = "iotests"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iotests",
        description="Run the reference-output tests against bdrv and QEMU (wraps pytest).",
        epilog="Arguments after -- are passed to pytest unchanged.",
    )
    p.add_argument("-f", dest="fmt", metavar="FMT", help="image format to test (e.g. raw)")
    p.add_argument("--backend", choices=["bdrv", "qemu", "both"], default="both",
                   help="implementation(s) to run (default: both)")
    p.add_argument("-g", dest="groups", action="append", default=[], metavar="GROUP[,GROUP]",
                   help="run only tests in these groups (pytest markers)")
    p.add_argument("-x", dest="exclude", action="append", default=[], metavar="GROUP[,GROUP]",
                   help="skip tests in these groups")
    p.add_argument("-j", dest="jobs", type=int, metavar="N",
                   help="run N tests in parallel (pytest-xdist)")
    p.add_argument("--junitxml", metavar="PATH", help="write a JUnit XML report")
    p.add_argument("--regen", action="store_true",
                   help="rewrite reference files from the qemu backend's output "
                        "(from bdrv's for tests marked qemu_lacks)")
    p.add_argument("--bdrv-subprocess", action="store_true",
                   help="run the installed bdrv-img/bdrv-io scripts instead of in-process")
    p.add_argument("--qemu-img", metavar="PATH", help="qemu-img binary to use")
    p.add_argument("--qemu-io", metavar="PATH", help="qemu-io binary to use")
    p.add_argument("-v", dest="verbose", action="count", default=0, help="more pytest output")
    p.add_argument("tests", nargs="*", metavar="TEST",
                   help="test files, node ids, or (parts of) test names")
    return p


def _groups_expr(include: list[str], exclude: list[str]) -> str | None:
    def names(values: list[str]) -> list[str]:
        return [g for v in values for g in v.split(",") if g]

    parts = []
    if inc := names(include):
        parts.append("(" + " or ".join(inc) + ")")
    if exc := names(exclude):
        parts.append("not (" + " or ".join(exc) + ")")
    return " and ".join(parts) or None


def _is_path(arg: str) -> bool:
    return "::" in arg or arg.endswith(".py") or os.path.exists(arg)


def _plugin_installed() -> bool:
    return any(ep.value == "harness.plugin" for ep in entry_points(group="pytest11"))


def translate(argv: Sequence[str]) -> list[str]:
    """Turn `iotests` arguments into pytest arguments."""
    argv = list(argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    opts = build_parser().parse_args(argv)
    args: list[str] = []
    if not _plugin_installed():  # running from a checkout without `pip install`
        args += ["-p", "harness.plugin"]
    args += ["--backend", opts.backend]
    if opts.fmt:
        args += ["--iotests-format", opts.fmt]
    if expr := _groups_expr(opts.groups, opts.exclude):
        args += ["-m", expr]
    if opts.jobs:
        args += ["-n", str(opts.jobs)]
    if opts.junitxml:
        args += ["--junitxml", opts.junitxml]
    for flag in ("regen", "bdrv_subprocess"):
        if getattr(opts, flag):
            args.append("--" + flag.replace("_", "-"))
    for prog in ("qemu_img", "qemu_io"):
        if value := getattr(opts, prog):
            args += ["--" + prog.replace("_", "-"), value]
    args += ["-v"] * opts.verbose
    paths = [t for t in opts.tests if _is_path(t)]
    names = [t for t in opts.tests if not _is_path(t)]
    if names:
        args += ["-k", " or ".join(names)]
    if not paths and os.path.isdir(DEFAULT_TEST_DIR):
        paths = [DEFAULT_TEST_DIR]
    return args + passthrough + paths


@dataclass
class Outcome:
    backend: str
    fmt: str
    state: str = "passed"  # passed | failed | notrun
    reason: str = ""


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    text = text.removeprefix("Skipped: ")
    return text.removeprefix("not run: ")


@dataclass(eq=False)  # pluggy needs plugin objects hashable
class SummaryCollector:
    """pytest plugin object: remembers the outcome of each test id."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    collect_errors: int = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        outcome = self.outcomes.setdefault(
            report.nodeid,
            Outcome(str(props.get(BACKEND_PROPERTY, "-")), str(props.get(FORMAT_PROPERTY, "-"))),
        )
        if report.failed:
            outcome.state = "failed"
        elif report.skipped and outcome.state != "failed":
            outcome.state = "notrun"
            outcome.reason = _skip_reason(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors += 1

    def render(self) -> str:
        rows: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        reasons: dict[tuple[str, str, str], int] = Counter()
        failed: list[str] = []
        for nodeid, o in self.outcomes.items():
            rows[(o.backend, o.fmt)][o.state] += 1
            if o.state == "notrun":
                reasons[(o.backend, o.fmt, o.reason)] += 1
            elif o.state == "failed":
                failed.append(nodeid)
        lines = ["", "iotests summary", "backend  format   passed  failed  not run"]
        for (backend, fmt), c in sorted(rows.items()):
            lines.append(f"{backend:<8} {fmt:<8} {c['passed']:>6}  {c['failed']:>6}"
                         f"  {c['notrun']:>7}")
        if reasons:
            lines.append("not run:")
            for (backend, fmt, reason), n in sorted(reasons.items()):
                lines.append(f"  {backend} {fmt}: {n} x {reason}")
        if failed:
            lines.append("failed:")
            lines += [f"  {nodeid}" for nodeid in sorted(failed)]
        if self.collect_errors:
            lines.append(f"collection errors: {self.collect_errors}")
        total = Counter(o.state for o in self.outcomes.values())
        lines.append(f"iotests: {total['passed']} passed, "
                     f"{total['failed'] + self.collect_errors} failed, "
                     f"{total['notrun']} skipped")
        return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = translate(sys.argv[1:] if argv is None else argv)
    collector = SummaryCollector()
    status = pytest.main(args, plugins=[collector])
    sys.stdout.write(collector.render())
    sys.stdout.flush()
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
