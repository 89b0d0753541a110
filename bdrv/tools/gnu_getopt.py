"""Command-line scanning the way glibc's getopt_long() does it, messages included.

QEMU's tools parse both their command lines and (qemu-io) each interactive command with
glibc's getopt. Matching QEMU byte for byte means matching getopt too: arguments are
permuted (options may follow operands), "--" ends the options, a lone "-" is an
operand, long options may be abbreviated to any unique prefix, and errors are
printed to stderr in glibc's words at the moment the scan reaches them.

`GetOpt` is an iterator of (option, argument) pairs; "?" stands for an error that was
already reported. After the scan, `operands` holds the non-option arguments in order.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

# The value `GetOpt` yields for a bad option, as getopt() returns '?'.
BAD_OPTION = "?"


@dataclass(frozen=True)
class LongOption:
    """One entry of getopt_long()'s table: name, whether it takes an argument, its key."""

    name: str
    has_arg: bool
    key: str


class GetOpt:
    """Scan `args` (without the program name) for options; `prog` prefixes messages."""

    def __init__(
        self,
        prog: str,
        args: list[str],
        shortopts: str,
        longopts: tuple[LongOption, ...] = (),
    ) -> None:
        self.prog = prog
        self.args = list(args)
        self.shortopts = shortopts
        self.longopts = longopts
        self.operands: list[str] = []

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        args = self.args
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                self.operands.extend(args[i:])
                return
            if arg.startswith("--") and self.longopts:
                result, i = self._long(arg[2:], args, i)
                yield result
            elif arg.startswith("-") and arg != "-":
                pos = 1
                while pos < len(arg):
                    ch = arg[pos]
                    pos += 1
                    spec = self.shortopts.find(ch)
                    if ch == ":" or spec < 0:
                        # glibc scans bytes: a multi-byte character shows its first byte.
                        raw = ch.encode("utf-8", "surrogateescape")[:1]
                        first = raw.decode("utf-8", "surrogateescape")
                        self._error(f"invalid option -- '{first}'")
                        yield BAD_OPTION, None
                        continue
                    if not self.shortopts[spec + 1 : spec + 2] == ":":
                        yield ch, None
                        continue
                    if pos < len(arg):
                        value = arg[pos:]
                    elif i < len(args):
                        value = args[i]
                        i += 1
                    else:
                        self._error(f"option requires an argument -- '{ch}'")
                        yield BAD_OPTION, None
                        break
                    yield ch, value
                    break
            else:
                self.operands.append(arg)

    def _long(self, body: str, args: list[str], i: int) -> tuple[tuple[str, str | None], int]:
        name, eq, value = body.partition("=")
        exact = [o for o in self.longopts if o.name == name]
        matches = exact or [o for o in self.longopts if o.name.startswith(name)]
        if not matches:
            self._error(f"unrecognized option '--{name}'")
            return (BAD_OPTION, None), i
        if len(matches) > 1 and len({(o.has_arg, o.key) for o in matches}) > 1:
            choices = "".join(f" '--{o.name}'" for o in matches)
            self._error(f"option '--{name}' is ambiguous; possibilities:{choices}")
            return (BAD_OPTION, None), i
        opt = matches[0]
        if eq and not opt.has_arg:
            self._error(f"option '--{opt.name}' doesn't allow an argument")
            return (BAD_OPTION, None), i
        if opt.has_arg and not eq:
            if i >= len(args):
                self._error(f"option '--{opt.name}' requires an argument")
                return (BAD_OPTION, None), i
            value = args[i]
            i += 1
        return (opt.key, value if opt.has_arg else None), i

    def _error(self, message: str) -> None:
        text = f"{self.prog}: {message}\n"
        stream = sys.stderr
        raw = getattr(stream, "buffer", None)
        if raw is None:
            stream.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        else:
            # Arguments may hold undecodable bytes (surrogate escapes): write them back.
            stream.flush()
            raw.write(text.encode("utf-8", "surrogateescape"))
        stream.flush()
