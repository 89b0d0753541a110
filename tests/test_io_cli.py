"""bdrv-io's command line against real qemu-io 7.2: options, opening, errors, locking."""

from __future__ import annotations

import fcntl
import os
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("io_oracle")
from io_oracle import (  # noqa: E402
    QEMU_IO,
    cmds,
    compare,
    make_image,
    needs_qemu_io,
    normalise,
    run_bdrv,
)

pytestmark = needs_qemu_io
REPO = Path(__file__).resolve().parent.parent


def _setup(d: Path) -> None:
    make_image(d)
    (d / "dir").mkdir()


CLI_CASES: dict[str, list[str]] = {
    "help": ["-h"],
    "no_quiet_option": ["-q", "-c", "length", "t.raw"],
    "help_long": ["--help"],
    "help_abbrev": ["--he"],
    "help_with_arg": ["--help=x"],
    "bad_short": ["-x", "t.raw"],
    "bad_long": ["--foo", "t.raw"],
    "ambiguous": ["--c", "x", "t.raw"],
    "bad_long_with_value": ["--foo=bar", "t.raw"],
    "ambiguous_with_value": ["--c=x", "t.raw"],
    "abbrev_cache": ["--cach=none", "-f", "raw", "-c", "info", "t.raw"],
    "abbrev_format": ["--form", "raw", "--cmd=length", "t.raw"],
    "missing_arg_short": ["-c"],
    "missing_arg_long": ["--cmd"],
    "flag_with_arg": ["--image-opts=1"],
    "two_files": ["t.raw", "t.raw"],
    "dashdash_file": ["-f", "raw", "-c", "length", "--", "t.raw"],
    "dashdash_two": ["-f", "raw", "t.raw", "-c", "length", "--", "-c"],
    "permuted": ["t.raw", "-c", "length", "-f", "raw"],
    "fmt_and_image_opts": ["-f", "raw", "--image-opts", "t.raw"],
    "bad_cache": ["-t", "bogus", "t.raw"],
    "bad_cache_case": ["-t", "NONE", "t.raw"],
    "bad_discard": ["-d", "bogus", "t.raw"],
    "bad_aio": ["-i", "bogus", "t.raw"],
    "cache_modes": cmds("write 0 512", "flush", "read 0 512",
                        extra=("-t", "off", "-t", "directsync", "-t", "unsafe")),
    "cache_writeback_nocache": cmds("write 0 512", extra=("-n", "-t", "writeback")),
    "writethrough": cmds("write -P 3 0 512", extra=("-t", "writethrough")),
    "native_aio_needs_direct": cmds("length", extra=("-k",)),
    "native_aio_direct": cmds("length", extra=("-k", "-n")),
    "aio_native": cmds("length", extra=("-i", "native")),
    "aio_threads": cmds("length", extra=("-i", "threads")),
    "aio_io_uring": cmds("length", extra=("-i", "io_uring")),
    "copy_on_read": cmds("read 0 512", extra=("-C",)),
    "copy_on_read_ro": cmds("read 0 512", extra=("-C", "-r")),
    "misalign": cmds("read -P 0 0 512", "write 0 512", extra=("-m",)),
    "discard_modes": cmds("length", extra=("-d", "off", "-d", "on", "-d", "unmap")),
    "force_share_rw": cmds("info", extra=("-U",)),
    "force_share_ro": cmds("info", "read 0 512", extra=("-U", "-r")),
    "missing_file": ["-c", "info", "nosuch.raw"],
    "missing_file_fmt": ["-f", "raw", "-c", "info", "nosuch.raw"],
    "directory": ["-c", "info", "dir"],
    "directory_ro": ["-r", "-c", "info", "dir"],
    "unknown_format": ["-f", "foo", "-c", "info", "t.raw"],
    "empty_name": ["-c", "info", ""],
    "probe_warning": ["-c", "length", "t.raw"],
    "probe_warning_ro": ["-r", "-c", "length", "t.raw"],
    "format_file": ["-f", "file", "-c", "info", "-c", "map", "t.raw"],
    "json_filename": ["-f", "raw", "-c", "length",
                      'json:{"file":{"driver":"file","filename":"t.raw"}}'],
    "json_driver": ["-c", "info", 'json:{"driver":"raw","file":{"filename":"t.raw"}}'],
    "json_bad": ["-c", "info", "json:{"],
    "image_opts": ["--image-opts", "-c", "info", "driver=raw,file.filename=t.raw"],
    "image_opts_window": ["--image-opts", "-c", "length", "-c", "read -v 0 16",
                          "driver=raw,file.driver=file,file.filename=t.raw,offset=512,size=1k"],
    "image_opts_flag": ["--image-opts", "-c", "info", "t.raw"],
    "image_opts_empty": ["--image-opts", "-c", "length", ","],
    "image_opts_missing": ["--image-opts", "-c", "info", "driver=raw,file.filename=nosuch"],
    "image_opts_comma": ["--image-opts", "-c", "info", "driver=raw,file.filename=t.raw,,x"],
    "image_opts_bad_size": ["--image-opts", "-c", "length",
                            "driver=raw,file.filename=t.raw,size=abc"],
    "image_opts_unknown": ["--image-opts", "-c", "length", "driver=raw,file.filename=t.raw,x=y"],
    "image_opts_ro": ["--image-opts", "-c", "write 0 1", "-r",
                      "driver=raw,file.filename=t.raw"],
    "image_opts_ro_option": ["--image-opts", "-c", "write 0 1",
                             "driver=raw,file.filename=t.raw,read-only=on"],
    "image_opts_force_share": ["--image-opts", "-U", "-r", "-c", "length",
                               "driver=raw,file.filename=t.raw,force-share=off"],
    "no_file_commands": ["-c", "help quit", "-c", "length"],
    "open_commands": ["-c", "open -o driver=raw t.raw", "-c", "info", "-c", "close",
                      "-c", "info", "-c", "open -r -o driver=raw,read-only=off t.raw",
                      "-c", "write 0 1", "-c", "close", "-c", "open -r t.raw",
                      "-c", "write 0 512"],
    "open_twice": cmds("open t.raw", "open -r t.raw"),
    "open_errors": ["-c", "open -t bogus t.raw", "-c", "open -d bogus t.raw",
                    "-c", "open -i bogus t.raw", "-c", "open -o foo t.raw",
                    "-c", "open -o driver=raw,foo=bar t.raw", "-c", "open a b",
                    "-c", "open -f raw t.raw", "-c", "open", "-c", "open -r",
                    "-c", "open -o driver=raw", "-c", "open -o id=x,driver=raw t.raw",
                    "-c", "open -o =x t.raw", "-c", "open nosuch", "-c", "open dir"],
    "open_force_share": ["-c", "open -U t.raw", "-c", "open -r -U -o force-share=off t.raw",
                         "-c", "open -r -U -o force-share=on t.raw", "-c", "info"],
    "open_options_merge": ["-c", "open -o driver=raw -o file.filename=t.raw", "-c", "length",
                           "-c", "close", "-c", "open -o driver=raw,driver=file t.raw",
                           "-c", "info"],
    "open_filename_twice": ["-c", "open -o driver=raw,file.filename=t.raw t.raw",
                            "-c", "length"],
    "open_file_option": ["-c", "open -o file.filename=t.raw", "-c", "length"],
    "open_modes": ["-c", "open -n -o driver=raw t.raw", "-c", "write 0 512", "-c", "close",
                   "-c", "open -t writeback -d ignore -o driver=raw t.raw",
                   "-c", "discard 0 4k", "-c", "close", "-c", "open -k t.raw",
                   "-c", "open -C -r t.raw", "-c", "open -i native -n -r t.raw", "-c", "info"],
    "open_image_opts": ["--image-opts", "-c", "open driver=raw,file.filename=t.raw",
                        "-c", "length", "-c", "close", "-c", "open -o driver=raw t.raw",
                        "-c", "open driver=raw,file.filename=t.raw extra",
                        "-c", "open -r driver=raw,file.filename=t.raw", "-c", "write 0 1"],
    "open_alias": ["-c", "o -x", "-c", "o -r -o driver=raw t.raw", "-c", "c", "-c", "c"],
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_command_line(tmp_path: Path, name: str) -> None:
    compare(tmp_path, CLI_CASES[name], _setup)


def test_write_lock_shared_for_raw(tmp_path: Path) -> None:
    """A raw image another process holds read-write (raw shares everything) stays usable."""
    compare(tmp_path, cmds("write -P 1 0 512", "read -P 1 0 512"),
            _held_setup(perm_bytes=(100, 101), shared_bytes=()))


def test_write_lock_refused(tmp_path: Path) -> None:
    """An image whose writer unshares write access (as qcow2 users do) is refused."""
    compare(tmp_path, cmds("write 0 512"),
            _held_setup(perm_bytes=(100, 101, 103), shared_bytes=(201, 203)))


def test_write_lock_force_share(tmp_path: Path) -> None:
    compare(tmp_path, cmds("read 0 512", extra=("-U", "-r")),
            _held_setup(perm_bytes=(100, 101, 103), shared_bytes=(201, 203)))


def test_read_lock_refused(tmp_path: Path) -> None:
    compare(tmp_path, cmds("read 0 512", extra=("-r",)),
            _held_setup(perm_bytes=(100,), shared_bytes=(200,)))


_HELD: list[int] = []


def _lock(fd: int, byte: int) -> None:
    fcntl.fcntl(fd, 37, struct.pack("@hhqqi4x", fcntl.F_RDLCK, 0, byte, 1, 0))  # F_OFD_SETLK


def _held_setup(perm_bytes: tuple[int, ...], shared_bytes: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """Setup that creates the image and leaves its lock bytes held until the test ends."""

    def setup(d: Path) -> None:
        make_image(d)
        fd = os.open(d / "t.raw", os.O_RDWR)
        for byte in perm_bytes + shared_bytes:
            _lock(fd, byte)
        _HELD.append(fd)

    return setup


@pytest.fixture(autouse=True)
def _release_held() -> object:
    yield None
    while _HELD:
        os.close(_HELD.pop())


# -- deliberate differences, checked for what bdrv-io says instead -------------------------
def test_version(tmp_path: Path) -> None:
    run = run_bdrv(["-V"], tmp_path)
    assert run.status == 0
    assert run.stdout.startswith("qemu-io version ") and "qemu-io 7.2 compatible" in run.stdout


def test_trace_events_unknown(tmp_path: Path) -> None:
    """bdrv has no trace events: qemu-io's answer for events it does not know."""
    compare(tmp_path, cmds("length", extra=("-T", "foo", "-T", "enable=bar*",
                                            "--trace", "-baz,file=x.log")))


def test_trace_bad_option(tmp_path: Path) -> None:
    compare(tmp_path, cmds("length", extra=("-T", "foo,bogus=1")))


def test_trace_events_file(tmp_path: Path) -> None:
    def setup(d: Path) -> None:
        make_image(d)
        (d / "ev.txt").write_text("bar\n\n# comment\nbaz*\n-qux\nlast")

    compare(tmp_path, cmds("length", extra=("-T", "events=ev.txt")), setup)
    (tmp_path / "2").mkdir()
    compare(tmp_path / "2", cmds("length", extra=("-T", "events=nosuch.txt")), setup)


def test_trace_file_errors(tmp_path: Path) -> None:
    compare(tmp_path, cmds("length", extra=("-T", "foo,file=nodir/x.log")))
    (tmp_path / "2").mkdir()
    compare(tmp_path / "2", cmds("length", extra=("-T", "file=a.log", "-T", "file=b.log")))


def test_trace_help(tmp_path: Path) -> None:
    run = run_bdrv(["-T", "help", "-c", "length", "t.raw"], tmp_path)
    assert (run.status, run.stdout, run.stderr) == (0, "", "")


def test_object_rejected(tmp_path: Path) -> None:
    make_image(tmp_path)
    run = run_bdrv(["--object", "secret,id=s0,data=x", "-c", "length", "t.raw"], tmp_path)
    assert (run.status, run.stderr) == (1, "qemu-io: --object is not supported by bdrv-io\n")


def test_snapshot_overlay_is_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-s writes go to a qcow2 overlay in $TMPDIR that is gone when the tool exits."""
    make_image(tmp_path)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    before = (tmp_path / "t.raw").read_bytes()
    run = run_bdrv(["-s", "-f", "raw", "-c", "write -P 0x11 0 512", "-c", "read -P 0x11 0 512",
                    "t.raw"], tmp_path)
    assert (run.status, run.stderr) == (0, "")
    assert (tmp_path / "t.raw").read_bytes() == before
    assert list(tmpdir.iterdir()) == []
    monkeypatch.setenv("TMPDIR", str(tmp_path / "nosuchdir"))
    run = run_bdrv(["-s", "-f", "raw", "-c", "read 0 512", "t.raw"], tmp_path)
    assert run.status == 1
    assert run.stderr.startswith("qemu-io: can't open device t.raw: Could not open temporary "
                                 f"file '{tmp_path}/nosuchdir/vl.")
    assert run.stderr.endswith("': No such file or directory\n")


def test_piped_output_order(tmp_path: Path) -> None:
    """stdout and stderr on one pipe: C stdio holds stdout back, so errors come first."""
    import subprocess

    assert QEMU_IO is not None
    args = cmds("write 0 512", "read 0", "read -x 0 512", "foo", "help quit")
    code = ("import sys; from bdrv.tools.io_shell import main; "
            "sys.exit(main(['qemu-io'] + sys.argv[1:]))")
    outputs = []
    for argv in (["bash", "-c", 'exec -a qemu-io "$0" "$@"', QEMU_IO, *args],
                 [sys.executable, "-c", code, *args]):
        d = tmp_path / str(len(outputs))
        d.mkdir()
        make_image(d)
        proc = subprocess.run(argv, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        outputs.append((normalise(proc.stdout.decode()), proc.returncode))
    assert outputs[1] == outputs[0]
    assert outputs[0][0].startswith("bad argument count")
