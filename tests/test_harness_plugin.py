"""End-to-end tests of the plugin with stand-in tools, so they run without QEMU or bdrv.

The stand-ins are shell scripts named like the real programs; they print their arguments
on stdout and a line on stderr, and exit with the status given by a "status=N" argument.
"""

import os
import stat
import sys
import textwrap

import pytest

from harness import backends
from harness.interactive import Session

pytest_plugins = ["pytester"]

TOOL = """#!/bin/sh
echo "$(basename "$0") $*"
echo "stderr line from $(basename "$0")" >&2
for a in "$@"; do case "$a" in status=*) exit "${a#status=}";; esac; done
exit 0
"""

TEST_FILE = """
from harness import formats

@formats("raw")
def test_steps(iot):
    img = iot.create("1M")
    iot.log("--- a comment")
    iot.img(["info", "-f", iot.fmt], img)
    iot.io(img, ["read 0 512", "status=2"])

@formats("raw")
def test_skips(iot):
    iot.notrun("feature missing here")
"""


@pytest.fixture
def tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ["qemu-img", "qemu-io", "bdrv-img", "bdrv-io"]:
        p = bin_dir / name
        p.write_text(TOOL)
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def _run(pytester, *args):
    # Stand-in bdrv scripts run as subprocesses; in-process bdrv is tested separately.
    return pytester.runpytest_subprocess("--bdrv-subprocess", "-p", "no:cacheprovider",
                                         "-rs", *args)


def test_regen_then_compare_on_both_backends(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    _run(pytester, "--backend", "qemu", "--regen").assert_outcomes(passed=1, skipped=1)
    ref = pytester.path / "test_steps.out"
    assert ref.read_text() == textwrap.dedent("""\
        $ qemu-img create -f IMGFMT TEST_DIR/t.IMGFMT 1M
        qemu-img create -f IMGFMT TEST_DIR/t.IMGFMT 1M
        stderr line from qemu-img
        --- a comment
        $ qemu-img info -f IMGFMT TEST_DIR/t.IMGFMT
        qemu-img info -f IMGFMT TEST_DIR/t.IMGFMT
        stderr line from qemu-img
        $ qemu-io -f IMGFMT -c 'read 0 512' -c status=2 TEST_DIR/t.IMGFMT
        qemu-io -f IMGFMT -c read 0 512 -c status=2 TEST_DIR/t.IMGFMT
        stderr line from qemu-io
        [exit status 2]
        """)
    result = _run(pytester)
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*not run: feature missing here*"])
    assert [p.name for p in pytester.path.glob("*.out")] == ["test_steps.out"]


def test_removing_a_reference_line_fails_both_backends(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    _run(pytester, "--backend", "qemu", "--regen")
    ref = pytester.path / "test_steps.out"
    lines = ref.read_text().splitlines(keepends=True)
    ref.write_text("".join(lines[:3] + lines[4:]))
    result = _run(pytester, "-k", "test_steps")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*output differs from reference*", "+--- a comment"])
    bad = list(pytester.path.parent.rglob("test_steps.out.bad"))
    assert len(bad) >= 2
    assert all(b.read_text() == "".join(lines) for b in bad)


def test_regen_never_writes_from_bdrv(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    result = _run(pytester, "--backend", "bdrv", "--regen", "-k", "test_steps")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*not run: --regen takes reference output from the qemu*"])
    assert not (pytester.path / "test_steps.out").exists()


def test_missing_qemu_is_not_run(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    result = _run(pytester, "--backend", "qemu", "--qemu-img", "/nonexistent/qemu-img",
                  "-k", "test_steps")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*not run: qemu backend: qemu-img not found*"])


def test_unsupported_format_is_not_run(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    result = _run(pytester, "--iotests-format", "qcow2", "-k", "test_steps", "-v")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*test_steps?bdrv-qcow2?*", "*test_steps?qemu-qcow2?*",
                                 "*not suitable for format qcow2 (test supports: raw)*"])


def test_runner_summary(pytester, tools):
    pytester.makepyfile(test_x=TEST_FILE)
    _run(pytester, "--backend", "qemu", "--regen")
    result = pytester.run(sys.executable, "-m", "harness.runner", "--bdrv-subprocess",
                          "-f", "raw", str(pytester.path))
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "iotests summary",
        "backend  format   passed  failed  not run",
        "bdrv     raw           1       0        1",
        "qemu     raw           1       0        1",
        "not run:",
        "  bdrv raw: 1 x feature missing here",
        "  qemu raw: 1 x feature missing here",
        "iotests: 2 passed, 0 failed, 2 skipped",
    ])


def _fake_module(monkeypatch, body):
    module = type(sys)("fake_bdrv_tool")
    exec(textwrap.dedent(body), module.__dict__)
    monkeypatch.setitem(sys.modules, "fake_bdrv_tool", module)
    monkeypatch.setitem(backends.BDRV_MODULES, "img", "fake_bdrv_tool")


def test_in_process_bdrv_captures_both_streams_in_order(tmp_path, monkeypatch):
    _fake_module(monkeypatch, """
        import os, sys
        def main(argv):
            print(argv[0], *argv[1:])
            print("error line", file=sys.stderr)
            sys.stdout.buffer.write(b"bytes line\\n")
            print("cwd", os.getcwd())
            return 3
    """)
    result = backends.BdrvBackend().run("img", ["info", "x"], str(tmp_path))
    assert result == backends.Result(
        f"bdrv-img info x\nerror line\nbytes line\ncwd {tmp_path}\n", 3
    )


def test_in_process_bdrv_system_exit(tmp_path, monkeypatch):
    _fake_module(monkeypatch, """
        import sys
        def main(argv):
            print("bye")
            sys.exit(int(argv[1]) if argv[1].isdigit() else argv[1])
    """)
    b = backends.BdrvBackend()
    assert b.run("img", ["0"], str(tmp_path)) == backends.Result("bye\n", 0)
    assert b.run("img", ["63"], str(tmp_path)) == backends.Result("bye\n", 63)
    assert b.run("img", ["256"], str(tmp_path)) == backends.Result("bye\n", 0)
    assert b.run("img", ["boom"], str(tmp_path)) == backends.Result("bye\nboom\n", 1)


SHELL = """
import sys
print("warming up", file=sys.stderr)
while True:
    sys.stdout.write("qemu-io> ")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line or line.strip() == "quit":
        sys.exit(int(sys.argv[1]))
    print("out:", line.strip())
    print("err:", line.strip(), file=sys.stderr)
"""


def test_interactive_session_logs_commands_and_output(tmp_path):
    log = []
    s = Session([sys.executable, "-c", SHELL, "5"], str(tmp_path), log.append,
                lambda n: f"[exit status {n}]\n")
    assert s.cmd("write 0 1") == "out: write 0 1\nerr: write 0 1\n"
    assert s.close() == 5
    assert "".join(log) == (
        "warming up\n"
        "qemu-io> write 0 1\nout: write 0 1\nerr: write 0 1\n"
        "qemu-io> quit\n[exit status 5]\n"
    )


def test_in_process_bdrv_must_close_its_files(tmp_path, monkeypatch):
    _fake_module(monkeypatch, """
        kept = []
        def main(argv):
            kept.append(open(argv[1], "w"))
            return 0
    """)
    b = backends.BdrvBackend()
    with pytest.raises(backends.LeakedFiles, match="t.raw"):
        b.run("img", [str(tmp_path / "t.raw")], str(tmp_path))
    sys.modules["fake_bdrv_tool"].kept[0].close()
