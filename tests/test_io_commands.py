"""bdrv-io's commands against real qemu-io 7.2 (see io_oracle.py for how)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
pytest.register_assert_rewrite("io_oracle")
from io_oracle import Setup, cmds, compare, make_image, needs_qemu_io  # noqa: E402

pytestmark = needs_qemu_io


def _patterned(d: Path) -> None:
    make_image(d, size=4 << 20)
    with open(d / "t.raw", "r+b") as f:
        f.seek(0)
        f.write(b"\x11" * 65536)
        f.seek(1 << 20)
        f.write(bytes(range(256)) * 64)
    (d / "src.bin").write_bytes(b"hello world, from a source file\n" * 24)
    (d / "empty.bin").write_bytes(b"")


# -- single-image command cases -------------------------------------------------------------
CASES = {
    "write_read_pattern": cmds("write -P 0x22 0 256k", "read -P 0x22 0 256k",
                               "read -P 0x23 0 4k", "read -P 0x22 -s 512 -l 1k 0 4k"),
    "read_verify_ranges": cmds("read -P 0x11 0 64k", "read -P 0 64k 64k",
                               "read -P 0x11 -s 1k 0 2k", "read -P 0x11 -l 64k -s 1 0 64k",
                               "read -P 0 -s 3G 0 16", "read -P 0 -l abc 0 16"),
    "hexdump": cmds("read -v 0 33", "read -v 1M 300", "read -v 3 5", "read -v 0 0"),
    "machine_and_quiet": cmds("read -C 0 512", "read -q 0 512", "write -C 0 1",
                              "write -q 0 1", "discard -C 0 1", "discard -q 0 1",
                              "readv -C 0 512", "writev -q 0 512"),
    "parse_errors": cmds("read abc 1", "read 1k1 1", "read 0 1e", "read 0x10k 1",
                         "read 1.5k 1", "read +0 1", "read -- -512 512", "read 0 -1",
                         "read 0 8E", "read 0 3G", "read - 5", "write 0 3G"),
    "option_errors": cmds("read -x 0 1", "read -s 1 0 512", "read 0", "read 0 16 -P",
                          "read -a 0 1", "r -y 0 1", "write -x 0 1", "read 0 1 2",
                          "readv", "writev 0", "truncate -x 1", "discard 0",
                          "discard -z 0 1", "map 1", "alloc 0 1M 5", "length 1"),
    "patterns": cmds("write -P 256 0 1", "write -P -1 0 1", "write -P 0x1g 0 1",
                     "write -P 017 0 1", "read -v 0 1", "write -P \" 5\" 0 1",
                     "write -P 0xff 1 1", "read -P 255 1 1", "read -P xyz 0 1"),
    "write_flag_checks": cmds("write -b -z 0 512", "write -f -b 0 512", "write -f -c 0 512",
                              "write -n 0 512", "write -u 0 512", "write -z -P 1 0 512",
                              "write -z -s src.bin 0 512", "write -P 1 -s src.bin 0 1",
                              "write -b 1 512", "write -c 0 1", "write -b 0 512",
                              "write -c 0 512", "write -c 4M 512", "write -c 0 0",
                              "read -b 0 512", "read -b 1 512", "read -b 0 1",
                              "read -b -p 0 512", "read -p 0 1", "write -p 0 1"),
    "write_from_file": cmds("write -s src.bin 4k 768", "read -v 4k 64",
                            "write -s nosuch.bin 0 1", "write -s empty.bin 0 1",
                            "write -s src.bin 0 0", "write -s . 0 1"),
    "zero_writes": cmds("write -z 0 64k", "write -z -u 64k 64k", "write -z -n 128k 4k",
                        "write -z -f 1M 4k", "read -P 0 0 192k", "write -z 0 3G",
                        "write -zn 0 3G", "write -z 1 1", "alloc 0 4M"),
    "beyond_end": cmds("read 4M 512", "read 4193792 1k", "read 8M 1", "read 4M 0",
                       "write 4M 512", "write -P 0x11 4193792 1k", "write -z 4M 512",
                       "discard 4M 512", "discard 8M 1", "readv 4M 512",
                       "writev 4M 1 1", "read -P 0 4193792 512"),
    "vectors": cmds("writev -P 0x22 0 512 1k 2k", "writev -P 0x33 64k 4k 4k",
                    "writev 128k 1", "readv -P 0x22 0 512 1k 2k", "readv -P 0x33 64k 8k",
                    "readv -v 0 16 16", "readv -P 0x33 64k 1k 3k 4k", "readv -P 0x22 0",
                    "readv 0 3G", "readv 0 1G 1G 1G", "writev 0 3G", "readv 0 abc",
                    "readv 1 512", "readv 0 0", "writev 0 0", "writev -f 0 512"),
    "discard": cmds("write -P 0x55 0 1M", "discard 0 64k", "discard 64k 1",
                    "discard 1M 0", "discard 0 3G", "discard abc 1", "map",
                    "alloc 0 4M", "read -P 0 0 64k", extra=("-d", "unmap")),
    "discard_ignored": cmds("write -P 0x55 0 1M", "discard 0 64k", "map",
                            "read -P 0x55 0 64k", extra=("-d", "ignore")),
    "alloc_map_length": cmds("alloc 0 1M", "alloc 512", "alloc 100", "alloc 0 0",
                             "alloc 4M", "alloc 8M 1", "alloc 0 10G", "alloc abc",
                             "alloc 0 x", "map", "length", "info"),
    "truncate": cmds("length", "truncate 1k", "length", "truncate 1000", "length",
                     "truncate -m full 4k", "truncate -m bogus 1", "truncate -m metadata 1",
                     "truncate -m falloc 8k", "length", "truncate abc",
                     "truncate 1M 5", "length", "truncate", "map"),
    "flush_info": cmds("flush", "aio_flush", "info", "length", "i", "l", "f"),
    "aliases": cmds("r 0 512", "w 0 512", "l", "i", "a 0", "f", "t 1M", "d 0 512",
                    "? quit", "help r", "o", "c", "c"),
    "help": cmds("help", "help read", "help readv", "help write", "help writev",
                 "help discard", "help alloc", "help map", "help length", "help info",
                 "help open", "help close", "help flush", "help truncate", "help quit",
                 "help help", "help ?", "help sleep", "help aio_flush", "help aio_read",
                 "help aio_write", "help abort", "help break", "help remove_break",
                 "help resume", "help sigraise", "help wait_break", "help nosuch",
                 "help a b"),
    "not_found": cmds("foo", "exit", "", "   ", "read  0   512"),
    "quit_stops": cmds("length", "quit", "length"),
    "quit_alias_args": cmds("q now please", "length"),
    "sleep": cmds("sleep 10", "sleep abc", "sleep -1", "sleep 0x10", "sleep 010",
                  "sleep 1e3", "sleep 0"),
    "sigraise_ignored": cmds("length", "sigraise 13", "sigraise 0", "sigraise 17",
                             "sigraise 65", "sigraise 66", "sigraise abc", "length"),
    "sigraise_kills": cmds("length", "sigraise 15", "length"),
    "abort": cmds("length", "abort", "length"),
    "truncate_segfault": cmds("length", "truncate -m full", "length"),
    "debug_commands": cmds("break foo bar", "remove_break bar", "resume bar"),
    "no_file": cmds("read 0 512", "length", "close", "help quit", "sleep 1", fmt=None,
                    image=None),
    "probed_raw": cmds("write -P 0x11 0 512", "write -P 0x22 512 512", "read -P 0x22 512 512",
                       "info", fmt=None),
    "probed_raw_qcow2_magic": cmds("write -s magic.bin 0 512", "write -s magic.bin 512 512",
                                   "read -v 0 16", fmt=None),
    "read_only": cmds("write -P 0x11 0 4k", "write -z 0 4k", "discard 0 4k",
                      "truncate 2M", "writev 0 512", "aio_write 0 512", "read -P 0x11 0 4k",
                      "flush", extra=("-r",)),
    "format_file": cmds("info", "map", "length", "write -P 1 0 512", "alloc 0 1M", fmt="file"),
    "cache_none": cmds("write -P 0x11 0 512", "read -P 0x11 0 512", "write 1 1",
                       "read -v 1 1", extra=("-n",)),
    # Only one aio request in flight at a time: with more, QEMU's own order of results
    # varies from run to run (thread pool races); test_io_engine covers those.
    "aio_basic": cmds("aio_write -P 0x22 0 512 512", "aio_flush", "aio_read -P 0x22 0 1k",
                      "aio_flush", "aio_read -P 0x23 0 1k", "aio_flush", "aio_write -z 0 512",
                      "aio_flush", "aio_read -P 0 0 512", "aio_flush", "aio_read -v 0 4",
                      "length"),
    "aio_errors": cmds("aio_read 8M 512", "aio_write 8M 512", "aio_read 0 abc",
                       "aio_read -P 0x11 0 512", "aio_read 8M 1", "aio_flush",
                       "aio_write -z 0 512 512", "aio_write -u 0 512", "aio_read -i 0 512",
                       "aio_write -i 0 512", "aio_read -q 0 512", "aio_read -v 0 16",
                       "aio_write -C 0 512", "aio_read -x 0 1", "aio_read 0", "aio_flush 1"),
}


def _setup_for(name: str) -> Setup:
    def setup(d: Path) -> None:
        _patterned(d)
        if name == "probed_raw_qcow2_magic":
            (d / "magic.bin").write_bytes(b"QFI\xfb\x00\x00\x00\x03" + bytes(504))
    return setup


def _needs_qcow2(name: str) -> bool:
    from bdrv.driver import find_driver

    return name == "probed_raw_qcow2_magic" and find_driver("qcow2") is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_commands(tmp_path: Path, name: str) -> None:
    if _needs_qcow2(name):
        pytest.xfail("block 0 is protected against format magics only of drivers bdrv has")
    compare(tmp_path, CASES[name], _setup_for(name))
