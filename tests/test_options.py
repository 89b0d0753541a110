"""Unit tests for bdrv.options (with bdrv.sizes and bdrv.qjson).

Expected values and message texts were observed from QEMU 7.2 (qemu-img/qemu-io
7.2.22, Debian 1:7.2+dfsg-7) and are hard-coded here. `TestAgainstQemu` repeats some
checks against the real binaries when they are installed.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bdrv.errors import BlockError
from bdrv.options import (
    OptionDesc,
    OptionError,
    OptionList,
    accumulate_options,
    flatten,
    is_help,
    is_valid_option_list,
    option_value_to_str,
    parse_bool,
    parse_enum,
    parse_io_number,
    parse_json_filename,
    parse_number,
    parse_option_size,
    parse_opts,
    parse_resize_size,
    parse_size,
    qdict_order,
    strtosz,
    unflatten,
)
from bdrv.qjson import parse_json

INVALID_SIZE = (
    "qemu-img: Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n"
    "qemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n"
)
SIZE_RANGE = "qemu-img: Invalid image size specified. Must be between 0 and 9223372036854775807.\n"
SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively.\n"
)

# --------------------------------------------------------------------------- sizes

# `qemu-img create -f raw x.raw -- <text>`: the size printed in "Formatting ... size=N".
GOOD_SIZES = [
    ("1M", 1048576),
    ("1m", 1048576),
    ("1k", 1024),
    ("1K", 1024),
    ("1b", 1),
    ("1B", 1),
    ("1", 1),
    ("0", 0),
    ("00", 0),
    ("0k", 0),
    ("1.5G", 1610612736),
    ("0.5k", 512),
    ("000.5k", 512),
    ("1.1k", 1126),
    ("1.0001k", 1024),
    ("1.0007k", 1025),  # rounded to nearest, not truncated
    ("0.0007k", 1),
    ("1.3333333333k", 1365),
    ("1.0", 1),
    ("1.0b", 1),
    ("1.", 1),
    ("1.b", 1),
    ("1.k", 1024),
    ("5.k", 5120),
    ("0.0", 0),
    ("0.b", 0),
    ("0x10", 16),
    ("0X10", 16),
    ("0x10b", 267),  # b and B are hex digits here
    ("0x10B", 267),
    (" 1M", 1048576),
    ("\t1M", 1048576),
    ("+1M", 1048576),
    (" +0x10", 16),
    ("012", 12),
    ("08", 8),
    ("1t", 1099511627776),
    ("1T", 1099511627776),
    ("1g", 1073741824),
    ("1p", 1125899906842624),
    ("1e", 1152921504606846976),
    ("1E", 1152921504606846976),
    ("1.e", 1152921504606846976),
    ("1.5e", 1729382256910270464),
    ("1.5E", 1729382256910270464),
    ("7E", 8070450532247928832),
    ("8191P", 9222246136947933184),
    ("7.9999999E", 9223371921562625408),
    ("9223372036854775807", 9223372036854775807),
    ("0x7fffffffffffffff", 9223372036854775807),
    ("1.99999999999999999999k", 1024),
    ("1.9999999999999999999999b", 1),
    ("1.0000000000000000000001k", 1024),
    ("1." + "0" * 330 + "1k", 1),  # QEMU quirk: fraction underflow skips one character
]

BAD_SIZES = [
    "1.5", "0.5", "1e3", "1M ", "M", "1MB", "1Mb", "1Z", "abc", "", " ", "1G2", "1.5b",
    "1.5B", "0x", "0xk", "0x1.8k", "0x1.8", "0x1 ", ".5k", "1e1k", "inf", "nan", "1..5k",
    "1.5 k", "00x10", "1i", "1Ki", "1KiB", "1,5k", "1_000", "1.5x", "-1", "-0", "--1",
    " -0x5", "-1M", "1.5e3k", "1.e3k", "99999999999999999999k", "0x1ffffffffffffffffk",
    "0.5000000000000000001b", "1.51e1024",
]  # fmt: skip

OUT_OF_RANGE_SIZES = [
    "8E", "16E", "15.9999E", "17179869183.99999999G", "8796093022207.9999999999M",
    "9223372036854775808", "18446744073709551615", "18446744073709551616",
    "99999999999999999999", "-99999999999999999999", "0xffffffffffffffff",
    "0x8000000000000000", "0x1ffffffffffffffff",
]  # fmt: skip


@pytest.mark.parametrize(("text", "value"), GOOD_SIZES)
def test_parse_size_accepts(text: str, value: int) -> None:
    assert parse_size(text, warn=_no_warning) == value


@pytest.mark.parametrize("text", BAD_SIZES)
def test_parse_size_rejects_malformed(text: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_size(text)
    assert info.value.render("qemu-img") == INVALID_SIZE
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("text", OUT_OF_RANGE_SIZES)
def test_parse_size_rejects_out_of_range(text: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_size(text)
    assert info.value.render("qemu-img") == SIZE_RANGE
    assert info.value.errno == errno.ERANGE


def test_parse_size_names_the_argument() -> None:
    with pytest.raises(OptionError) as info:
        parse_size("abc", "buffer size for sparse output")
    assert info.value.render("qemu-img") == (
        "qemu-img: Invalid buffer size for sparse output specified. You may use k, M, G, T,"
        " P or E suffixes for\n"
        "qemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n"
    )
    with pytest.raises(OptionError) as info:
        parse_size("8E", "start offset")
    assert str(info.value) == (
        "Invalid start offset specified. Must be between 0 and 9223372036854775807."
    )


@pytest.mark.parametrize(
    ("text", "value"), [("0x10k", 16384), ("0x10m", 16777216), ("0x1p", 1 << 50)]
)
def test_hex_with_suffix_warns(text: str, value: int) -> None:
    warnings: list[str] = []
    assert parse_size(text, warn=warnings.append) == value
    assert warnings == [f"Using a multiplier suffix on hex numbers is deprecated: {text}"]


def test_default_warning_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert strtosz("0x1k") == 1024
    err = capsys.readouterr().err
    assert err.endswith(": warning: Using a multiplier suffix on hex numbers is deprecated: 0x1k\n")


def test_strtosz_reaches_2_to_64() -> None:
    assert strtosz("15E") == 15 << 60
    assert strtosz("18446744073709551615") == (1 << 64) - 1
    with pytest.raises(BlockError) as info:
        strtosz("16E")
    assert info.value.errno == errno.ERANGE
    with pytest.raises(BlockError) as info:
        strtosz("16Ex")
    assert info.value.errno == errno.EINVAL


# `qemu-img create -f raw -o size=<text> x.raw`: errors get the "x.raw: " prefix.
@pytest.mark.parametrize("text", ["abc", "-1", "1.5", "", "1M ", "1M,", "on", "off"])
def test_option_size_rejects(text: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_option_size("size", text)
    assert info.value.prefixed("x.raw: ").render("qemu-img") == (
        "qemu-img: x.raw: Parameter 'size' expects a non-negative number below 2^64\n" + SIZE_HINT
    )


def test_option_size_range() -> None:
    assert parse_option_size("size", "8E") == 1 << 63  # printed as size=-9223372036854775808
    assert parse_option_size("size", "18446744073709551615") == (1 << 64) - 1
    with pytest.raises(OptionError) as info:
        parse_option_size("size", "16E")
    assert info.value.prefixed("x.raw: ").render("qemu-img") == (
        "qemu-img: x.raw: Value '16E' is out of range for parameter 'size'\n"
    )
    with pytest.raises(OptionError) as info:
        parse_option_size("cluster_size", "abc")
    assert str(info.value) == "Parameter 'cluster_size' expects a non-negative number below 2^64"


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("2M", (0, 2097152)),
        ("+1M", (1, 1048576)),
        ("-512k", (-1, 524288)),
        ("+1.5k", (1, 1536)),
        ("++1M", (1, 1048576)),
        ("+ 1M", (1, 1048576)),
        (" 1M", (0, 1048576)),
        ("+0", (1, 0)),
        ("8E", (0, 1 << 63)),
        ("+8E", (1, 1 << 63)),
    ],
)
def test_resize_size(text: str, result: tuple[int, int]) -> None:
    assert parse_resize_size(text) == result


@pytest.mark.parametrize("text", ["abc", "+abc", "-abc", "1.5", "+", "-", "--", "+-1M", "1M "])
def test_resize_size_rejects(text: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_resize_size(text)
    assert info.value.render("qemu-img") == (
        "qemu-img: Parameter 'size' expects a non-negative number below 2^64\n" + SIZE_HINT
    )


def test_resize_size_out_of_range_quotes_the_number_only() -> None:
    for text in ("+99999999999999999999", "-99999999999999999999"):
        with pytest.raises(OptionError) as info:
            parse_resize_size(text)
        assert str(info.value) == (
            "Value '99999999999999999999' is out of range for parameter 'size'"
        )


# qemu-io -c 'read 0 <text>': the line printed on stdout.
NON_NUMERIC = "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- "


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1k", 1024),
        ("1.5k", 1536),
        ("0", 0),
        ("1.0007k", 1025),
        ("12foo", NON_NUMERIC + "12foo"),
        ("abc", NON_NUMERIC + "abc"),
        ("1.5", NON_NUMERIC + "1.5"),
        ("1.5b", NON_NUMERIC + "1.5b"),
        ("''", NON_NUMERIC + "''"),
        ("99999999999999999999", "Parsing error: argument too large -- 99999999999999999999"),
        ("8E", "Parsing error: argument too large -- 8E"),
        ("18446744073709551615", "Parsing error: argument too large -- 18446744073709551615"),
        ("0x8000000000000000", "Parsing error: argument too large -- 0x8000000000000000"),
    ],
)
def test_io_number(text: str, expected: int | str) -> None:
    if isinstance(expected, int):
        assert parse_io_number(text) == expected
    else:
        with pytest.raises(BlockError) as info:
            parse_io_number(text)
        assert str(info.value) == expected


def test_io_number_hex_suffix_warns() -> None:
    warnings: list[str] = []
    assert parse_io_number("0x10k", warn=warnings.append) == 16384
    assert warnings == ["Using a multiplier suffix on hex numbers is deprecated: 0x10k"]


# --------------------------------------------------------------------------- json:

JSON_ERRORS = [
    ("{", "JSON parse error, premature EOI"),
    ("", "Expecting a JSON value"),
    ("  ", "Expecting a JSON value"),
    ("}", "JSON parse error, expecting value"),
    ("]", "JSON parse error, expecting value"),
    ("[", "JSON parse error, premature EOI"),
    ('{"a"', "JSON parse error, premature EOI"),
    ('{"a":', "JSON parse error, premature EOI"),
    ('{"a":1', "JSON parse error, premature EOI"),
    ('{"a":1,', "JSON parse error, premature EOI"),
    ('{"a":{}', "JSON parse error, premature EOI"),
    ('{"a" 1}', "JSON parse error, missing : in object pair"),
    ('{"a"nul}', "JSON parse error, missing : in object pair"),
    ("{1:2}", "JSON parse error, key is not a string in object"),
    ('{"a":1 "b":2}', "JSON parse error, expected separator in dict"),
    ('{"a":1 2}', "JSON parse error, expected separator in dict"),
    ('{"a":0e5}', "JSON parse error, expected separator in dict"),
    ('{"a":1,}', "JSON parse error, expecting value"),
    ("{,}", "JSON parse error, expecting value"),
    ('{"a":1,"b":}', "JSON parse error, expecting value"),
    ('{"a"::1}', "JSON parse error, expecting value"),
    ("{:1}", "JSON parse error, expecting value"),
    ('{"a":[1,}', "JSON parse error, expecting value"),
    ('{"a":[,1]}', "JSON parse error, expecting value"),
    ('{"a":[}', "JSON parse error, expecting value"),
    ('{"a":[1 2]}', "JSON parse error, expected separator in list"),
    ('{"a":foo}', "JSON parse error, invalid keyword 'foo'"),
    ('{"a":nul}', "JSON parse error, invalid keyword 'nul'"),
    ('{"a":nullx}', "JSON parse error, invalid keyword 'nullx'"),
    ('{"a":tru}', "JSON parse error, invalid keyword 'tru'"),
    ('{"a":1,"a":2}', "JSON parse error, duplicate key"),
    ('{"a":True}', "JSON parse error, stray 'T'"),
    ('{"a":"abc', "JSON parse error, stray '\"abc'"),
    ('{"a":@}', "JSON parse error, stray '@'"),
    ('{"a":-}', "JSON parse error, stray '-}'"),
    ('{"a":01}', "JSON parse error, stray '01'"),
    ('{"a":1.}', "JSON parse error, stray '1.}'"),
    ('{"a":.5}', "JSON parse error, stray '.'"),
    ('{"a":1e}', "JSON parse error, stray '1e}'"),
    ('{"a":+1}', "JSON parse error, stray '+'"),
    ('{"a":%d}', "JSON parse error, stray '%'"),
    ('{"a":"\x01"}', "JSON parse error, stray '\"\x01'"),
    ('{"a":"\t"}', "JSON parse error, stray '\"\t'"),
    ('{"a":1é}', "JSON parse error, stray '\udcc3'"),
    ('{"a":-é}', "JSON parse error, stray '-\udcc3'"),
    ("\x01{}", "JSON parse error, stray '\x01'"),
    ("@ {}", "JSON parse error, stray '@'"),
    ('{"a":"\\x"}', "JSON parse error, invalid escape sequence in string"),
    ('{"a":"\\u12"}', 'JSON parse error, \\u12" is not a valid Unicode character'),
    ('{"a":"é\\u"}', 'JSON parse error, \\u" is not a valid Unicode character'),
    ('{"a":"\\u12g4"}', "JSON parse error, \\u12g4 is not a valid Unicode character"),
    ('{"a":"\\ud800"}', "JSON parse error, \\ud800 is not a valid Unicode character"),
    ('{"a":"\\ud800\\u0041"}', "JSON parse error, \\ud800 is not a valid Unicode character"),
    ('{"a":"\\udc00"}', "JSON parse error, \\udc00 is not a valid Unicode character"),
    ('{"a":"\\uffff"}', "JSON parse error, \\uffff is not a valid Unicode character"),
    ('{"a":"\udc80"}', "JSON parse error, invalid UTF-8 sequence in string"),
    ('{"a":"\uffff"}', "JSON parse error, invalid UTF-8 sequence in string"),
    ('{"a":1}}', "Expecting at most one JSON value"),
    ('{"a":1}]', "Expecting at most one JSON value"),
    ('{"a":1} 2', "Expecting at most one JSON value"),
    ('{"a":1}{', "Expecting at most one JSON value"),
    ('{"a":1}-', "Expecting at most one JSON value"),
    ('{"a":1} @', "Expecting at most one JSON value"),
    ('{"a":"x"}tr', "Expecting at most one JSON value"),
    ('{"file.filename":"r.raw"}{}', "Expecting at most one JSON value"),
    ("[" * 1025, "JSON nesting depth limit exceeded"),
    ("[" * 1024, "JSON parse error, premature EOI"),
]


@pytest.mark.parametrize(("text", "message"), JSON_ERRORS)
def test_json_filename_errors(text: str, message: str) -> None:
    with pytest.raises(BlockError) as info:
        parse_json_filename("json:" + text)
    assert str(info.value) == "Could not parse the JSON options: " + message


@pytest.mark.parametrize("text", ["[]", "1", '"x"', "null", "true", "[1,2]"])
def test_json_filename_needs_an_object(text: str) -> None:
    with pytest.raises(BlockError) as info:
        parse_json_filename("json:" + text)
    assert str(info.value) == "Invalid JSON object given"


def test_json_values() -> None:
    text = (
        "{'s': 'it''s', \"q\": '\"', 'i': -5, 'z': -0, 'u': 18446744073709551615,"
        ' "big": 99999999999999999999999, "f": 1.5E+3, "inf": 1e999, "t": true,'
        ' "n": null, "e": "\\n\\t\\/\\u00e9\\ud83d\\ude00", "raw": "é", "nul": "\\u0000"}'
    )
    with pytest.raises(BlockError):  # '' is not an escape: two strings
        parse_json(text)
    value = parse_json(text.replace("'it''s'", "'it\\'s'"))
    assert value == {
        "s": "it's",
        "q": '"',
        "i": -5,
        "z": 0,
        "u": 18446744073709551615,
        "big": 1e23,
        "f": 1500.0,
        "inf": float("inf"),
        "t": True,
        "n": None,
        "e": "\n\t/é\U0001f600",
        "raw": "é",
        "nul": "\udcc0\udc80",  # QEMU keeps U+0000 as the bytes C0 80
    }
    assert isinstance(value, dict) and isinstance(value["big"], float)


def test_json_filename_is_flattened() -> None:
    assert parse_json_filename(
        'json: {"driver":"raw","file":{"driver":"file","filename":"r.raw"},'
        '"a":[1,{"b":true}],"e":{},"l":[]}'
    ) == {
        "driver": "raw",
        "file.driver": "file",
        "file.filename": "r.raw",
        "a.0": 1,
        "a.1.b": True,
        "e": {},
        "l": [],
    }


def test_json_nested_value_beats_dotted_key() -> None:
    # Both orders open r.raw in QEMU: the nested file.filename wins.
    for text in (
        '{"file":{"filename":"r.raw"},"file.filename":"nonexist"}',
        '{"file.filename":"nonexist","file":{"filename":"r.raw"}}',
    ):
        assert parse_json_filename("json:" + text)["file.filename"] == "r.raw"


# --------------------------------------------------------------------------- trees


def test_qdict_order_matches_qemu() -> None:
    # The first key of each result is the option QEMU names in "does not support the
    # option '...'" for json:{"file.filename":"r.raw", <keys>}.
    assert qdict_order(["a", "b", "zz"])[0] == "a"
    assert qdict_order(["zz", "b", "a"])[0] == "a"
    assert qdict_order(["foo", "bar", "baz", "qux"])[0] == "qux"
    assert qdict_order(["a.0", "a.1"])[0] == "a.1"
    assert qdict_order(["o80", "o81"])[0] == "o81"  # same bucket: newest first
    assert qdict_order(["o81", "o80"])[0] == "o80"
    keys = ["opt945826", "opt1", "opt2", "opt3"]
    assert qdict_order(keys)[0] == "opt945826"


def test_flatten_and_unflatten() -> None:
    nested: dict[str, Any] = {
        "driver": "qcow2",
        "file": {"driver": "file", "filename": "a.img", "locking": False},
        "backing": {"file": {"filename": "b.img"}},
        "list": ["x", {"y": 1}, ["z"]],
        "empty": {},
    }
    flat = flatten(nested)
    assert flat == {
        "driver": "qcow2",
        "file.driver": "file",
        "file.filename": "a.img",
        "file.locking": False,
        "backing.file.filename": "b.img",
        "list.0": "x",
        "list.1.y": 1,
        "list.2.0": "z",
        "empty": {},
    }
    assert unflatten(flat) == nested


def test_unflatten_escaped_dots_and_lists() -> None:
    assert unflatten({"a..b.c": 1, "x.1": "b", "x.0": "a"}) == {"a.b": {"c": 1}, "x": ["a", "b"]}
    assert unflatten({"0": "a", "1": "b"}) == ["a", "b"]
    assert unflatten({}) == {}


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ({"a": 1, "a.b": 2}, "Cannot mix scalar and non-scalar keys"),
        ({"a.b": 2, "a": 1}, "Cannot mix scalar and non-scalar keys"),
        ({"a.0": 1, "a.x": 2}, "Cannot mix list and non-list keys"),
        (
            {"a.0": 1, "a.2": 2},
            "List indices are not contiguous, saw 2 elements but 2 largest index",
        ),
        ({"a.1": 1, "a.+0": 2}, "Missing list index 0"),
        ({"a": {"b": 1}}, "Value a is not flat"),
        ({"a": [1]}, "Value a is not flat"),
    ],
)
def test_unflatten_errors(flat: dict[str, Any], message: str) -> None:
    with pytest.raises(BlockError) as info:
        unflatten(flat)
    assert str(info.value) == message


def test_option_value_to_str() -> None:
    assert option_value_to_str(True) == "on"
    assert option_value_to_str(False) == "off"
    assert option_value_to_str(-5) == "-5"
    assert option_value_to_str(0.1) == "0.10000000000000001"
    assert option_value_to_str("x,y") == "x,y"
    assert option_value_to_str(None) is None
    assert option_value_to_str([]) is None


# --------------------------------------------------------------------------- -o strings


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("a=b,c=d", [("a", "b"), ("c", "d")]),
        ("preallocation=off,,full", [("preallocation", "off,full")]),
        ("size=1M,,", [("size", "1M,")]),
        ("size=1M,,,,foo", [("size", "1M,,foo")]),
        ("size", [("size", "on")]),
        ("nosize", [("size", "off")]),
        ("nocow", [("cow", "off")]),
        ("node-name", [("de-name", "off")]),
        ("=1M", [("", "1M")]),
        ("x=y=z", [("x", "y=z")]),
        ("preallocation=", [("preallocation", "")]),
        ("a,,b=c", [("a", "on"), ("", "on"), ("b", "c")]),
        ("id=foo,a=b", [("id", "foo"), ("a", "b")]),
        ("a=1,a=2", [("a", "1"), ("a", "2")]),
        ("help", [("help", "on")]),
        ("", []),
    ],
)
def test_parse_opts(text: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_opts(text) == pairs


def test_parse_opts_implied_key() -> None:
    assert parse_opts("secret,id=s0", "qom-type") == [("qom-type", "secret"), ("id", "s0")]
    assert parse_opts("a,,b,c=d", "k") == [("k", "a,b"), ("c", "d")]
    assert parse_opts("x=1,flag", "k") == [("x", "1"), ("flag", "on")]


def test_parse_opts_flag_warnings() -> None:
    # qemu-img info --image-opts driver=raw,file.filename=r.raw,force-share,noforce-share,nodelay
    warnings: list[str] = []
    pairs = parse_opts(
        "driver=raw,force-share,noforce-share,nodelay,delay,help",
        warn_on_flag=True,
        warn=warnings.append,
    )
    assert pairs[1:] == [
        ("force-share", "on"),
        ("force-share", "off"),
        ("delay", "off"),
        ("delay", "on"),
        ("help", "on"),
    ]
    assert warnings == [
        "short-form boolean option 'force-share' deprecated\nPlease use force-share=on instead",
        "short-form boolean option 'noforce-share' deprecated\nPlease use force-share=off instead",
        "short-form boolean option 'nodelay' deprecated\nPlease use nodelay=on instead",
        "short-form boolean option 'delay' deprecated\nPlease use nodelay=off instead",
    ]


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("help", True),
        ("?", True),
        ("size=1M,help", True),
        ("help,foo=bar", True),
        ("foo=bar,help", True),
        ("a,,help", True),
        ("a,help,,", True),
        ("size=help", False),
        ("help=on", False),
        ("nohelp", False),
        ("helpme", False),
        ("a=b,,help", False),
    ],
)
def test_is_help(text: str, wanted: bool) -> None:
    assert is_help(text) is wanted


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("size=1M", True),
        ("size=1M,,", True),
        ("a", True),
        (",", False),
        (",,", False),
        ("", False),
        ("size=1M,", False),
        ("size=1M,,,", False),
        ("help,", False),
        (",a", False),
    ],
)
def test_is_valid_option_list(text: str, valid: bool) -> None:
    assert is_valid_option_list(text) is valid


def test_accumulate_options() -> None:
    assert accumulate_options(None, "size=1M") == "size=1M"
    assert accumulate_options("size=1M", "preallocation=off") == "size=1M,preallocation=off"
    with pytest.raises(BlockError) as info:
        accumulate_options("size=1M", ",")
    assert str(info.value) == "Invalid option list: ,"
    with pytest.raises(BlockError) as info:
        accumulate_options(None, "")
    assert str(info.value) == "Invalid option list: "


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("text", ["on", "yes", "true", "y"])
def test_parse_bool_true(text: str) -> None:
    assert parse_bool("x", text) is True


@pytest.mark.parametrize("text", ["off", "no", "false", "n"])
def test_parse_bool_false(text: str) -> None:
    assert parse_bool("x", text) is False


@pytest.mark.parametrize("text", ["bogus", "ON", "1", "0", "", "True"])
def test_parse_bool_rejects(text: str) -> None:
    with pytest.raises(BlockError) as info:
        parse_bool("lazy_refcounts", text)
    assert str(info.value) == "Parameter 'lazy_refcounts' expects 'on' or 'off'"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16", 16),
        ("0x10", 16),
        ("0X10", 16),
        ("010", 8),
        (" 16", 16),
        ("+16", 16),
        ("-0", 0),
        ("-1", (1 << 64) - 1),  # printed as refcount_bits=-1
        ("18446744073709551615", (1 << 64) - 1),
    ],
)
def test_parse_number(text: str, value: int) -> None:
    assert parse_number("refcount_bits", text) == value


@pytest.mark.parametrize("text", ["abc", "08", "0x", "16 ", "", "0x1g", "99999999999999999999x"])
def test_parse_number_rejects(text: str) -> None:
    with pytest.raises(BlockError) as info:
        parse_number("refcount_bits", text)
    assert str(info.value) == "Parameter 'refcount_bits' expects a number"


def test_parse_number_too_large() -> None:
    for text in ("18446744073709551616", "99999999999999999999"):
        with pytest.raises(BlockError) as info:
            parse_number("refcount_bits", text)
        assert str(info.value) == f"Value '{text}' is too large for parameter 'refcount_bits'"


def test_parse_enum() -> None:
    assert parse_enum("falloc", ["off", "falloc", "full"]) == "falloc"
    with pytest.raises(BlockError) as info:
        parse_enum("bogus", ["off", "falloc", "full"])
    assert str(info.value) == "invalid parameter value: bogus"


# --------------------------------------------------------------------------- OptionList

RAW_OPTS = OptionList([OptionDesc("size", "size", "Virtual disk size")])
FILE_OPTS = OptionList(
    [
        OptionDesc("size", "size", "Virtual disk size"),
        OptionDesc("nocow", "bool", "Turn off copy-on-write (valid only on btrfs)"),
        OptionDesc(
            "preallocation", "string", "Preallocation mode (allowed values: off, falloc, full)"
        ),
        OptionDesc("extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"),
    ]
)
RAW_CREATE = RAW_OPTS.append(FILE_OPTS)

# qemu-img create -f raw -o help x.raw
RAW_HELP = """\
Supported options:
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
"""

# qemu-img create -f raw -o help   (no filename)
RAW_HELP_NO_FILENAME = """\
Supported raw options:
  size=<size>            - Virtual disk size

The protocol level may support further options.
Specify the target filename to include those options.
"""

# qemu-img create -f qcow2 -o help x.qcow2
QCOW2_HELP = """\
Supported options:
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Image format of the base image
  cluster_size=<size>    - qcow2 cluster size
  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])
  compression_type=<str> - Compression method used for image cluster compression
  data_file=<str>        - File name of an external data file
  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image
  encrypt.cipher-alg=<str> - Name of encryption cipher algorithm
  encrypt.cipher-mode=<str> - Name of encryption cipher mode
  encrypt.format=<str>   - Encrypt the image, format choices: 'aes', 'luks'
  encrypt.hash-alg=<str> - Name of encryption hash algorithm
  encrypt.iter-time=<num> - Time to spend in PBKDF in milliseconds
  encrypt.ivgen-alg=<str> - Name of IV generator algorithm
  encrypt.ivgen-hash-alg=<str> - Name of IV generator hash algorithm
  encrypt.key-secret=<str> - ID of secret providing qcow AES key or LUKS passphrase
  encryption=<bool (on/off)> - Encrypt the image with format 'aes'. (Deprecated in favor of \
encrypt.format=aes)
  extended_l2=<bool (on/off)> - Extended L2 tables
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  lazy_refcounts=<bool (on/off)> - Postpone refcount updates
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, metadata, falloc, full)
  refcount_bits=<num>    - Width of a reference count entry in bits
  size=<size>            - Virtual disk size
"""

# qemu-img create -f vpc -o help   (note the trailing blank in subformat's help)
VPC_HELP_NO_FILENAME = """\
Supported vpc options:
  force_size=<bool (on/off)> - Force disk size calculation to use the actual size \
specified, rather than using the nearest CHS-based calculation
  size=<size>            - Virtual disk size
  subformat=<str>        - Type of virtual hard disk format. Supported formats are \
{dynamic (default) | fixed} \n\

The protocol level may support further options.
Specify the target filename to include those options.
"""


def _options_from_help(text: str) -> OptionList:
    """Rebuild an option list from help output, in reverse order (sorting is tested)."""
    types = {"str": "string", "bool (on/off)": "bool", "num": "number", "size": "size"}
    descs = []
    for line in text.splitlines()[1:]:
        if not line.startswith("  "):
            break
        head, help_text = line.split(" - ", 1)
        name, kind = head.strip().split("=<", 1)
        descs.append(OptionDesc(name, types[kind.rstrip(">")], help_text))  # type: ignore[arg-type]
    return OptionList(reversed(descs))


def test_help_text_raw() -> None:
    assert RAW_CREATE.help_text("raw") == RAW_HELP
    assert RAW_OPTS.help_text("raw", protocol_included=False) == RAW_HELP_NO_FILENAME


def test_help_text_qcow2_and_vpc() -> None:
    qcow2 = _options_from_help(QCOW2_HELP)
    assert qcow2.help_text("qcow2") == QCOW2_HELP
    vpc = _options_from_help(VPC_HELP_NO_FILENAME)
    assert vpc.help_text("vpc", protocol_included=False) == VPC_HELP_NO_FILENAME


def test_help_text_empty_list() -> None:
    assert OptionList().help_text("x") == "Supported options:\nNo options.\n"


def test_append_keeps_first_description() -> None:
    merged = RAW_OPTS.append(FILE_OPTS)
    assert [d.name for d in merged.descs] == [
        "size",
        "nocow",
        "preallocation",
        "extent_size_hint",
    ]
    assert merged.find("size") is RAW_OPTS.descs[0]
    assert merged.find("nope") is None


def test_option_list_parse() -> None:
    pairs = [("size", "1048576")] + parse_opts("nocow=yes,id=x,size=2M,extent_size_hint=0x10")
    assert RAW_CREATE.parse(pairs) == {"size": 2097152, "nocow": True, "extent_size_hint": 16}
    with_defaults = OptionList(
        [OptionDesc("cluster_size", "size", "qcow2 cluster size", "65536")]
    ).parse([], with_defaults=True)
    assert with_defaults == {"cluster_size": 65536}


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ("foo=bar", "Invalid parameter 'foo'"),
        ("foo", "Invalid parameter 'foo'"),
        ("nofoo", "Invalid parameter 'foo'"),
        ("nocow", "Invalid parameter 'cow'"),
        ("=1M", "Invalid parameter ''"),
        ("help=on", "Invalid parameter 'help'"),
        ("nocow=bogus", "Parameter 'nocow' expects 'on' or 'off'"),
        ("size=abc", "Parameter 'size' expects a non-negative number below 2^64"),
        ("size", "Parameter 'size' expects a non-negative number below 2^64"),
        ("nosize", "Parameter 'size' expects a non-negative number below 2^64"),
        ("size=16E", "Value '16E' is out of range for parameter 'size'"),
        ("foo=1,size=abc", "Invalid parameter 'foo'"),  # the first bad item wins
        ("size=abc,foo=1", "Parameter 'size' expects a non-negative number below 2^64"),
    ],
)
def test_option_list_rejects(opts: str, message: str) -> None:
    with pytest.raises(BlockError) as info:
        RAW_CREATE.parse(parse_opts(opts))
    assert str(info.value) == message


def test_accept_any_list() -> None:
    anything = OptionList(accept_any=True)
    assert anything.parse([("x", "1"), ("y", "on")]) == {"x": "1", "y": "on"}
    assert anything.format_values([("x", "a,b"), ("y", "on")]) == "x=a,,b y=on"


# "Formatting 'x.raw', fmt=raw <this>" for qemu-img create -f raw -o <opts> x.raw 1M
@pytest.mark.parametrize(
    ("opts", "line"),
    [
        ("preallocation=bogus", "size=1048576 preallocation=bogus"),
        ("preallocation=off,,full", "size=1048576 preallocation=off,,full"),
        (
            "extent_size_hint=1M,nocow=on,preallocation=bogus",
            "size=1048576 nocow=on preallocation=bogus extent_size_hint=1048576",
        ),
        ("nocow=yes,preallocation=bogus", "size=1048576 nocow=yes preallocation=bogus"),
        ("size=8E", "size=-9223372036854775808"),
        ("size=0x10k", "size=16384"),
        ("id=foo", "size=1048576"),
    ],
)
def test_format_values_raw(opts: str, line: str) -> None:
    pairs = [("size", "1048576")] + parse_opts(opts)
    RAW_CREATE.parse(pairs, warn=_no_warning_except_hex)
    assert RAW_CREATE.format_values(pairs) == line


def test_format_values_defaults_and_numbers() -> None:
    qcow2 = OptionList(
        [
            OptionDesc("cluster_size", "size", "qcow2 cluster size", "65536"),
            OptionDesc("extended_l2", "bool", "Extended L2 tables", "off"),
            OptionDesc("compression_type", "string", "Compression method", "zlib"),
            OptionDesc("size", "size", "Virtual disk size"),
            OptionDesc("compat", "string", "Compatibility level"),
            OptionDesc("lazy_refcounts", "bool", "Postpone refcount updates", "off"),
            OptionDesc("refcount_bits", "number", "Width of a reference count entry", "16"),
        ]
    )
    expected = {
        "": "cluster_size=65536 extended_l2=off compression_type=zlib size=1048576"
        " lazy_refcounts=off refcount_bits=16",
        "lazy_refcounts=yes,compat=1.1": "cluster_size=65536 extended_l2=off"
        " compression_type=zlib size=1048576 compat=1.1 lazy_refcounts=yes refcount_bits=16",
        "refcount_bits=0x10": "cluster_size=65536 extended_l2=off compression_type=zlib"
        " size=1048576 lazy_refcounts=off refcount_bits=16",
        "refcount_bits=-1": "cluster_size=65536 extended_l2=off compression_type=zlib"
        " size=1048576 lazy_refcounts=off refcount_bits=-1",
        "cluster_size=1.5k": "cluster_size=1536 extended_l2=off compression_type=zlib"
        " size=1048576 lazy_refcounts=off refcount_bits=16",
    }
    for opts, line in expected.items():
        pairs = [("size", "1048576")] + parse_opts(opts)
        qcow2.parse(pairs)
        assert qcow2.format_values(pairs) == line


def test_option_error_render() -> None:
    error = OptionError("first", extra=["second"], hint="hint line\n")
    assert error.render("bdrv-img") == "bdrv-img: first\nbdrv-img: second\nhint line\n"
    moved = error.prefixed("x.raw: ")
    assert isinstance(moved, OptionError)
    assert moved.render("p") == "p: x.raw: first\np: second\nhint line\n"


# --------------------------------------------------------------------------- oracle


def _no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")


def _no_warning_except_hex(message: str) -> None:
    assert message.startswith("Using a multiplier suffix on hex numbers is deprecated")


QEMU_IMG = shutil.which("qemu-img")


@pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img not installed")
class TestAgainstQemu:
    """The same sizes and json: strings, checked live against the installed qemu-img."""

    def _create(self, tmp_path: Path, size: str) -> subprocess.CompletedProcess[str]:
        target = tmp_path / "missing-dir" / "x.raw"  # never created
        args = ["-f", "raw", "-o", "preallocation=bogus", str(target), "--", size]
        assert QEMU_IMG is not None
        return subprocess.run(
            [QEMU_IMG, "create", *args], capture_output=True, text=True, check=False
        )

    @pytest.mark.parametrize(
        "text", [t for t, _ in GOOD_SIZES[::4]] + BAD_SIZES[::4] + OUT_OF_RANGE_SIZES[::4]
    )
    def test_size(self, tmp_path: Path, text: str) -> None:
        result = self._create(tmp_path, text)
        try:
            value = parse_size(text, warn=_no_warning)
        except OptionError as exc:
            assert result.stdout == ""
            assert result.stderr == exc.render("qemu-img")
        else:
            assert f" size={value} " in result.stdout

    @pytest.mark.parametrize(("text", "message"), JSON_ERRORS[::5])
    def test_json(self, text: str, message: str) -> None:
        assert QEMU_IMG is not None
        filename = "json:" + text
        result = subprocess.run(
            [QEMU_IMG, "info", filename.encode("utf-8", "surrogateescape")],
            capture_output=True,
            check=False,
        )
        prefix = f"qemu-img: Could not open '{filename}': Could not parse the JSON options: "
        expected = (prefix + message + "\n").encode("utf-8", "surrogateescape")
        assert result.stderr == expected
        assert result.returncode == 1
