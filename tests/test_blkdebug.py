"""blkdebug's config parsing, rules and state machine (bdrv/drivers/blkdebug.py).

The expected texts are qemu-io 7.2's for the same config files (the iotests in
iotests/qcow2/test_blkdebug.py check them against QEMU end to end).
"""

from __future__ import annotations

import errno

import pytest

from bdrv.drivers.blkdebug import (
    DEFAULT_IOTYPE_MASK,
    EVENTS,
    IO_FLUSH,
    IO_READ,
    IO_WRITE,
    UINT64,
    BlkdebugDriver,
    make_rules,
    parse_config_text,
    sections_from_options,
)
from bdrv.errors import BlockError


def _rules(text: str):
    return make_rules(parse_config_text(text))


def test_event_names_are_72s():
    assert len(EVENTS) == 48 and EVENTS[0] == "l1_update" and EVENTS[-1] == "none"
    assert "l2_alloc_write" in EVENTS and "l2_alloc.write" not in EVENTS


def test_parse_sections_keys_and_defaults():
    text = ('# comment\n\n[inject-error]\n  event = "l2_load"\n  errno = "28"\n'
            'sector = "0x10"\nonce = "on"\n[set-state]\nevent = "l1_update"\n'
            'state = "1"\nnew_state = "2"\n')
    rules = _rules(text)
    inject, set_state = rules
    assert (inject.event, inject.action, inject.error, inject.once) == \
        ("l2_load", "inject-error", 28, True)
    assert inject.offset == 16 * 512 and inject.iotype_mask == DEFAULT_IOTYPE_MASK
    assert not inject.immediately and inject.state == 0
    assert (set_state.action, set_state.state, set_state.new_state) == ("set-state", 1, 2)


def test_defaults_without_options():
    (rule,) = _rules('[inject-error]\nevent = "read_aio"\n')
    assert rule.error == errno.EIO and rule.offset == UINT64 and not rule.once


def test_last_value_of_a_key_wins_and_iotype_narrows():
    (rule,) = _rules('[inject-error]\nevent = "l1_update"\nevent = "l2_load"\n'
                     'iotype = "flush"\n')
    assert rule.event == "l2_load" and rule.iotype_mask == 1 << IO_FLUSH


@pytest.mark.parametrize("text, message", [
    ('[inject-error]\nevent = "l2_alloc.write"\n', "invalid parameter value: l2_alloc.write"),
    ('[inject-error]\nerrno = "5"\n', "Missing event name for rule"),
    ('event = "l1_update"\n', "no group defined"),
    ("garbage\n", "no group defined"),
    ('[inject-errorx]\nevent = "l1_update"\n', "There is no option group 'inject-errorx'"),
    ('[ inject-error ]\n', "There is no option group ' inject-error '"),
    ('[inject-error]\nevent = "l1_update"\nfoo = "1"\n', "Invalid parameter 'foo'"),
    ('[inject-error]\n  # c\n', "Invalid parameter '#'"),
    ('[inject-error]\nevent="l1_update"\n', "Invalid parameter 'event=\"l1_update\"'"),
    ('[inject-error]\nevent = "l1_update"\nerrno = "x"\n', "Parameter 'errno' expects a number"),
    ('[inject-error]\nevent = "l1_update"\nonce = "x"\n',
     "Parameter 'once' expects 'on' or 'off'"),
    ('[inject-error]\nevent = "l1_update"\niotype = "x"\n', "invalid parameter value: x"),
    ('[set-state]\nevent = "l1_update"\nerrno = "5"\n', "Invalid parameter 'errno'"),
    ("[inject-error]\nevent = l1_update\n", "invalid parameter value: "),
    ("[inject-error]\nevent\n", "invalid parameter value: "),
    ("[inject-error]\n   \n", "parse error"),
    ('[inject-error "x"]\nevent = "l1_update"\n[inject-error "x"]\nevent = "l1_update"\n',
     "Duplicate ID 'x' for inject-error"),
])
def test_bad_configs(text, message):
    with pytest.raises(BlockError) as exc:
        _rules(text)
    assert exc.value.message == message


@pytest.mark.parametrize("text", [
    "",
    '[inject-error]x\nevent = "l1_update"\n',
    '[inject-error "a"]\nevent = "l1_update"\n',
    '[inject-error]\n  event   =   "l1_update"  trailing\n',
    '[inject-error]\nevent = "l1_update" "x"\n',
    '[inject-error]\nevent = "l1_update"\nsector = "-5"\nerrno = "0x1c"\n',
])
def test_configs_72_accepts(text):
    _rules(text)


def test_inline_options():
    options = {"inject-error.0.event": "read_aio", "inject-error.0.errno": 28,
               "inject-error.1.event": "l1_update", "set-state.event": "none",
               "set-state.new_state": "3", "align": "512"}
    sections = sections_from_options(options)
    assert options == {"align": "512"}
    rules = make_rules(sections)
    assert [(r.event, r.action) for r in rules] == [
        ("read_aio", "inject-error"), ("l1_update", "inject-error"), ("none", "set-state")]
    assert rules[0].error == 28 and rules[2].new_state == 3


@pytest.mark.parametrize("options, message", [
    ({"inject-error.0=": 1, "inject-error.0": "1"},
     "[inject-error] section (index 0) does not consist of keys"),
    ({"inject-error.0.event": "l1_update", "inject-error.0.bogus": "1"},
     "[inject-error] section doesn't support the option 'bogus'"),
    ({"inject-error.0.event": "l1_update", "inject-error.2.event": "l1_update"},
     "Unused option '2.event' for [inject-error]"),
    ({"inject-error.event": "l1_update", "inject-error.0.event": "l1_update"},
     "Unknown option '0.event' for [inject-error]"),
])
def test_bad_inline_options(options, message):
    options.pop("inject-error.0=", None)
    with pytest.raises(BlockError) as exc:
        make_rules(sections_from_options(options))
    assert exc.value.message == message


def _driver(text: str) -> BlkdebugDriver:
    drv = BlkdebugDriver.__new__(BlkdebugDriver)
    BlkdebugDriver.__init__(drv, None)
    for rule in _rules(text):
        drv.rules.setdefault(rule.event, []).insert(0, rule)
    return drv


def _fails(drv: BlkdebugDriver, offset: int, length: int, iotype: int) -> int:
    try:
        drv.rule_check(offset, length, iotype)
    except BlockError as exc:
        return exc.errno
    return 0


def test_rule_armed_by_its_event_and_once():
    drv = _driver('[inject-error]\nevent = "l2_load"\nonce = "on"\nerrno = "28"\n')
    assert _fails(drv, 0, 512, IO_READ) == 0
    drv.event("l1_update")
    assert _fails(drv, 0, 512, IO_READ) == 0
    drv.event("l2_load")
    assert _fails(drv, 0, 512, IO_WRITE) == errno.ENOSPC
    assert _fails(drv, 0, 512, IO_WRITE) == 0
    drv.event("l2_load")  # gone for good
    assert _fails(drv, 0, 512, IO_WRITE) == 0


def test_sector_and_iotype_filters():
    drv = _driver('[inject-error]\nevent = "l2_load"\nsector = "8"\n'
                  '[inject-error]\nevent = "l2_load"\niotype = "flush"\nerrno = "1"\n')
    drv.event("l2_load")
    assert _fails(drv, 0, 4096, IO_WRITE) == 0
    assert _fails(drv, 4096, 512, IO_READ) == errno.EIO
    assert _fails(drv, 4096, 0, IO_READ) == 0  # an empty request covers no sector
    assert _fails(drv, 0, 0, IO_FLUSH) == errno.EPERM


def test_state_machine():
    drv = _driver('[set-state]\nevent = "l2_load"\nstate = "1"\nnew_state = "2"\n'
                  '[set-state]\nevent = "l2_load"\nstate = "2"\nnew_state = "3"\n'
                  '[inject-error]\nevent = "l1_update"\nstate = "3"\n')
    drv.event("l1_update")
    assert _fails(drv, 0, 512, IO_READ) == 0
    drv.event("l2_load")  # rules see the state the event started in: 1 -> 2 only
    assert drv.state == 2
    drv.event("l2_load")
    assert drv.state == 3
    drv.event("l1_update")
    assert _fails(drv, 0, 512, IO_READ) == errno.EIO


def test_a_new_injection_replaces_the_active_rules():
    drv = _driver('[inject-error]\nevent = "l2_load"\niotype = "read"\n'
                  '[inject-error]\nevent = "l1_update"\niotype = "write"\n')
    drv.event("l2_load")
    assert _fails(drv, 0, 512, IO_READ) == errno.EIO
    drv.event("l1_update")
    assert _fails(drv, 0, 512, IO_READ) == 0
    assert _fails(drv, 0, 512, IO_WRITE) == errno.EIO


def test_filename_syntax():
    options: dict = {}
    BlkdebugDriver._parse_filename("blkdebug:cfg:img", options)
    assert options == {"config": "cfg", "x-image": "img"}
    options = {}
    BlkdebugDriver._parse_filename("blkdebug::a:b", options)
    assert options == {"x-image": "a:b"}
    with pytest.raises(BlockError) as exc:
        BlkdebugDriver._parse_filename("blkdebug:img", {})
    assert exc.value.message == "blkdebug requires both config file and image path"
