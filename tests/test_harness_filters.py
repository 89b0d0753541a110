"""Unit tests for harness.filters: what the references see instead of raw output."""

from harness.filters import (
    OutputFilter,
    filter_imgfmt,
    filter_programs,
    filter_qemu_io,
    filter_testdir,
)


def test_qemu_io_timing_line():
    line = "256 KiB, 1 ops; 00.00 sec (1.204 GiB/sec and 4815.3846 ops/sec)\n"
    assert filter_qemu_io(line) == (
        "256 KiB, X ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)\n"
    )


def test_qemu_io_timing_variants():
    for stats in ["0 bytes, 1 ops; 00.00 sec (0 bytes/sec and 7438.8157 ops/sec)",
                  "4.002 KiB, 12 ops; 0:00:01.50 (inf GiB/sec and inf ops/sec)",
                  "1 bytes, 1 ops; 00.00 sec (-nan bytes/sec and -nan ops/sec)"]:
        size = stats.split(",")[0]
        assert filter_qemu_io(stats) == (
            f"{size}, X ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)"
        )


def test_qemu_io_keeps_prompt_and_other_lines():
    text = "qemu-io> read 0 512\nread 512/512 bytes at offset 0\n"
    assert filter_qemu_io(text) == text


def test_testdir_longest_spelling_first():
    text = "Could not open '/tmp/real/dir/t.raw' (/tmp/real)"
    assert filter_testdir(text, ["/tmp/real", "/tmp/real/dir/"]) == (
        "Could not open 'TEST_DIR/t.raw' (TEST_DIR)"
    )


def test_imgfmt_whole_words_only():
    text = "fmt=raw file format: raw t.raw rawhide draw 'raw' \"raw\" raw-ish"
    assert filter_imgfmt(text, "raw") == (
        "fmt=IMGFMT file format: IMGFMT t.IMGFMT rawhide draw 'IMGFMT' \"IMGFMT\" raw-ish"
    )


def test_imgfmt_wordlike_format_only_in_structured_places():
    text = ("Formatting 'TEST_DIR/t.file', fmt=file size=1\n"
            "file format: file\n"
            "Could not open file: No such file or directory\n"
            '"format": "file"\n')
    assert filter_imgfmt(text, "file") == (
        "Formatting 'TEST_DIR/t.IMGFMT', fmt=IMGFMT size=1\n"
        "file format: IMGFMT\n"
        "Could not open file: No such file or directory\n"
        '"format": "IMGFMT"\n'
    )


def test_programs_canonical_names():
    paths = {"/usr/bin/qemu-img": "qemu-img", "/opt/venv/bin/bdrv-io": "qemu-io"}
    text = ("/usr/bin/qemu-img: oops\nbdrv-img: Could not open 'x'\n"
            "/opt/venv/bin/bdrv-io: can't open device\nTry 'bdrv-img --help'\n"
            "my-bdrv-img.txt stays\n")
    assert filter_programs(text, paths) == (
        "qemu-img: oops\nqemu-img: Could not open 'x'\n"
        "qemu-io: can't open device\nTry 'qemu-img --help'\n"
        "my-bdrv-img.txt stays\n"
    )


def test_output_filter_chain(tmp_path):
    f = OutputFilter(str(tmp_path), "raw", {"/usr/bin/qemu-io": "qemu-io"})
    text = (f"/usr/bin/qemu-io: can't open device {tmp_path}/t.raw: x\n"
            "4 KiB, 1 ops; 00.00 sec (79.310 MiB/sec and 20303.3318 ops/sec)\n")
    assert f(text) == (
        "qemu-io: can't open device TEST_DIR/t.IMGFMT: x\n"
        "4 KiB, X ops; XX:XX:XX.X (XXX YYY/sec and XXX ops/sec)\n"
    )
