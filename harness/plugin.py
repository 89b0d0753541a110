"""pytest plugin (entry point `bdrv_harness`): options, markers and the `iot` fixture.

Any test that takes the `iot` fixture runs once per backend and format; its log is
compared with the reference file when the test body returns. Installing the package
makes all of this available to any pytest run.

References come from the qemu backend (`--regen`), except for tests marked
`qemu_lacks(reason)`: QEMU 7.2 cannot run those, so their qemu runs are *not run*
with the reason and `--regen` writes their reference from the bdrv backend. Such a
test names its independent witness in a "Verified by: ..." docstring line.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import golden
from .backends import BACKEND_NAMES, Backend, make_backend
from .iot import Iot, notrun

DEFAULT_FORMATS = ("raw",)
# Groups as in iotests' group file; select with `-m quick` or `iotests -g quick`.
GROUP_MARKERS = {
    "quick": "fast tests, run on every change",
    "rw": "tests that write data and read it back",
    "img": "qemu-img command tests",
    "io": "qemu-io command tests",
    "locking": "image locking between processes",
    "auto": "tests for automated runs (CI)",
    "slow": "tests that take long",
}

IOT_KEY = pytest.StashKey[Iot]()
# References rewritten by --regen, gathered from the reports (xdist workers' too).
_regenerated: list[str] = []
BACKEND_PROPERTY = "iotests_backend"
FORMAT_PROPERTY = "iotests_format"
REGEN_PROPERTY = "iotests_regenerated"
QEMU_LACKS_MARKER = "qemu_lacks"
_VERIFIED_BY = re.compile(r"^\s*Verified by:\s*(\S.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Variant:
    """One parametrization of a test: which backend, which format."""

    backend: str
    fmt: str
    supported: bool = True  # False: the format was asked for but the test does not do it

    def __str__(self) -> str:
        return f"{self.backend}-{self.fmt}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bdrv_harness", "reference-output tests against bdrv and QEMU")
    group.addoption(
        "--backend", choices=[*BACKEND_NAMES, "both"], default="both",
        help="run iot tests on this backend only (default: both)",
    )
    group.addoption(
        "--regen", action="store_true",
        help="write reference files from the qemu backend's output (bdrv runs are skipped), "
             "and from bdrv's for tests marked qemu_lacks",
    )
    group.addoption(
        "--bdrv-subprocess", action="store_true",
        help="run the installed bdrv-img/bdrv-io scripts instead of calling them in-process",
    )
    group.addoption(
        "--iotests-format", "--imgfmt", dest="iotests_format", default=None, metavar="FMT",
        help="image format to test (default: every format each test declares)",
    )
    group.addoption("--qemu-img", default=None, metavar="PATH",
                    help="qemu-img binary (default: $QEMU_IMG_PROG, else from PATH)")
    group.addoption("--qemu-io", default=None, metavar="PATH",
                    help="qemu-io binary (default: $QEMU_IO_PROG, else from PATH)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "formats(*fmts): image formats an iot test supports (default: raw)"
    )
    config.addinivalue_line(
        "markers",
        f"{QEMU_LACKS_MARKER}(reason): QEMU 7.2 lacks the feature; the qemu run is not run "
        "and --regen takes the reference from bdrv (docstring must say 'Verified by: ...')",
    )
    for name, text in GROUP_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: iotests group: {text}")
    _regenerated.clear()


def _selected_backends(config: pytest.Config) -> list[str]:
    choice = config.getoption("backend")
    return list(BACKEND_NAMES) if choice == "both" else [choice]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "iot" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("formats")
    declared = tuple(marker.args) if marker and marker.args else DEFAULT_FORMATS
    wanted = metafunc.config.getoption("iotests_format")
    params = []
    for backend in _selected_backends(metafunc.config):
        if wanted:
            # Keep the test visible as *not run* rather than silently absent.
            v = Variant(backend, wanted, supported=wanted in declared)
            params.append(pytest.param(v, id=str(v)))
        else:
            params += [pytest.param(Variant(backend, f), id=f"{backend}-{f}") for f in declared]
    metafunc.parametrize("iot", params, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tag reports with backend and format: the runner's summary reads them (they
    # travel with the report, also from pytest-xdist workers).
    for item in items:
        callspec = getattr(item, "callspec", None)
        variant = callspec.params.get("iot") if callspec else None
        if isinstance(variant, Variant):
            item.user_properties.append((BACKEND_PROPERTY, variant.backend))
            item.user_properties.append((FORMAT_PROPERTY, variant.fmt))


def qemu_lacks_reason(node: pytest.Item) -> str | None:
    """The reason given to @qemu_lacks on this test (or its module/class), if any."""
    marker = node.get_closest_marker(QEMU_LACKS_MARKER)
    if marker is None:
        return None
    reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
    if not isinstance(reason, str) or not reason.strip():
        raise pytest.UsageError(f"{node.nodeid}: @qemu_lacks needs a reason")
    return reason


def verified_by(func: object) -> str | None:
    """The witness a test's docstring names on its "Verified by: ..." line."""
    match = _VERIFIED_BY.search(inspect.getdoc(func) or "")
    return match.group(1).strip() if match else None


def _backends(config: pytest.Config) -> dict[str, Backend]:
    return {
        name: make_backend(
            name,
            bdrv_subprocess=config.getoption("bdrv_subprocess"),
            qemu_img=config.getoption("qemu_img"),
            qemu_io=config.getoption("qemu_io"),
        )
        for name in BACKEND_NAMES
    }


@pytest.fixture
def iot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Iot]:
    """The per-test context: run steps on the backend and format of this test id."""
    variant = getattr(request, "param", None)
    if not isinstance(variant, Variant):
        raise pytest.UsageError("the iot fixture is parametrized by the bdrv_harness plugin")
    config = request.config
    if not variant.supported:
        marker = request.node.get_closest_marker("formats")
        declared = ", ".join(marker.args) if marker else ", ".join(DEFAULT_FORMATS)
        notrun(f"not suitable for format {variant.fmt} (test supports: {declared})")
    lacks = qemu_lacks_reason(request.node)
    if lacks is not None:
        if verified_by(getattr(request.node, "obj", None)) is None:
            name = getattr(request.node, "originalname", request.node.name)
            pytest.fail(f"{name} is marked qemu_lacks({lacks!r}), so QEMU is no "
                        "oracle for it: its docstring must name the independent tool that "
                        "verified the data on a 'Verified by: ...' line", pytrace=False)
        if variant.backend == "qemu":
            notrun(f"QEMU 7.2 lacks {lacks}")
    elif config.getoption("regen") and variant.backend != "qemu":
        notrun("--regen takes reference output from the qemu backend only")
    backends = _backends(config)
    backend = backends[variant.backend]
    for tool in ("img", "io"):
        reason = backend.unavailable(tool)
        if reason:
            notrun(f"{backend.name} backend: {reason}")
    test_dir = tmp_path / "scratch"
    test_dir.mkdir()
    ctx = Iot(backend, variant.fmt, test_dir, backends)
    request.node.stash[IOT_KEY] = ctx
    yield ctx
    ctx.kill_sessions()


def _paths(item: pytest.Item, ctx: Iot) -> tuple[Path, Path]:
    name = getattr(item, "originalname", item.name)
    reference = golden.reference_path(Path(item.path).parent, name, ctx.fmt)
    # Beside the scratch dir, so runs on different backends never overwrite each other.
    bad = ctx.test_dir.parent / f"{name}.out.bad"
    return reference, bad


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    try:
        result = yield
    except pytest.skip.Exception:
        raise
    except BaseException:
        ctx = item.stash.get(IOT_KEY, None)
        if ctx is not None:  # keep the partial log: it shows how far the test got
            ctx.kill_sessions()
            _, bad = _paths(item, ctx)
            bad.write_text(ctx.output, encoding="utf-8")
        raise
    ctx = item.stash.get(IOT_KEY, None)
    if ctx is not None:
        ctx.kill_sessions()
        reference, bad = _paths(item, ctx)
        if item.config.getoption("regen"):
            if golden.regenerate(ctx.output, reference):
                item.user_properties.append((REGEN_PROPERTY, str(reference)))
        else:
            mismatch = golden.check(ctx.output, reference, bad)
            if mismatch is not None:
                pytest.fail(mismatch.message(), pytrace=False)
    return result


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == REGEN_PROPERTY:
            _regenerated.append(str(value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _regenerated:
        terminalreporter.section("reference files regenerated")
        for path in sorted(set(_regenerated)):
            terminalreporter.write_line(path)
