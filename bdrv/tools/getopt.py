"""glibc's getopt_long(), state, quirks and messages included, for both tools.

QEMU's tools parse their command lines (and qemu-io each interactive command) with
glibc's getopt. Matching them byte for byte means following glibc's algorithm step by
step instead of approximating it:

- operands are permuted behind the options lazily and `argv` is permuted in place;
  after the scan `optind` is the first operand (a leading '+' in the option string
  stops at the first operand instead);
- "--" ends the options, a lone "-" is an operand, clusters ("-xU") and attached
  arguments ("-fraw") are split byte by byte (a multi-byte character is several
  letters), long options may be abbreviated to a unique prefix;
- `optind` only moves past a cluster once its last letter is read, so
  argv[optind - 1] (`failed_arg`) is exactly what qemu-img names in its own
  "unrecognized option" and "missing argument" messages.

Two modes, chosen as in C by the option string: with a leading ':' (after any '+')
nothing is printed and a missing argument is reported as MISSING (qemu-img); without
it, errors are printed to stderr in glibc's words, prefixed with argv[0], when the scan
reaches them, and every error is UNKNOWN (qemu-io).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

# What `next_option` returns besides an option's key.
END = None
UNKNOWN = "?"
MISSING = ":"


@dataclass(frozen=True)
class LongOpt:
    """One getopt_long() table entry: name, whether it needs an argument, and its key."""

    name: str
    has_arg: bool
    key: str


class Getopt:
    """One getopt_long() scan over `argv`; argv[0] is the program name, as in C.

    Iterating yields (key, optarg) pairs, errors as (UNKNOWN or MISSING, None), until
    the options end; `operands` then holds the rest of the (permuted) argv.
    """

    def __init__(self, argv: list[str], optstring: str, longopts: tuple[LongOpt, ...] = ()):
        self.argv = argv
        self.permute = not optstring.startswith("+")
        self.shortopts = optstring.lstrip("+")
        self.silent = self.shortopts.startswith(":")
        self.longopts = longopts
        self.optind = 1
        self.optarg: str | None = None
        self._next_char = b""  # the rest of a cluster, as bytes (glibc's nextchar)
        self._first_nonopt = 1
        self._last_nonopt = 1

    def __iter__(self) -> Getopt:
        return self

    def __next__(self) -> tuple[str, str | None]:
        key = self.next_option()
        if key is END:
            raise StopIteration
        return key, self.optarg

    @property
    def failed_arg(self) -> str:
        """argv[optind - 1], the element qemu-img names in its error messages."""
        return self.argv[self.optind - 1]

    @property
    def operands(self) -> list[str]:
        """The arguments from `optind` on: after the scan, the operands in order."""
        return self.argv[self.optind :]

    def _is_nonoption(self, index: int) -> bool:
        arg = self.argv[index]
        return not arg.startswith("-") or arg == "-"

    def _exchange(self) -> None:
        # Move the skipped operands [first, last) behind the options [last, optind).
        first, last, top = self._first_nonopt, self._last_nonopt, self.optind
        self.argv[first:top] = self.argv[last:top] + self.argv[first:last]
        self._first_nonopt += top - last
        self._last_nonopt = top

    def next_option(self) -> str | None:
        """The next option's key, UNKNOWN, MISSING, or END; `optarg` holds its argument."""
        self.optarg = None
        argc = len(self.argv)
        if not self._next_char:
            self._last_nonopt = min(self._last_nonopt, self.optind)
            self._first_nonopt = min(self._first_nonopt, self.optind)
            if self.permute:
                if self._first_nonopt != self._last_nonopt and self._last_nonopt != self.optind:
                    self._exchange()
                elif self._last_nonopt != self.optind:
                    self._first_nonopt = self.optind
                while self.optind < argc and self._is_nonoption(self.optind):
                    self.optind += 1
                self._last_nonopt = self.optind
            if self.optind != argc and self.argv[self.optind] == "--":
                self.optind += 1
                if self._first_nonopt != self._last_nonopt and self._last_nonopt != self.optind:
                    self._exchange()
                elif self._first_nonopt == self._last_nonopt:
                    self._first_nonopt = self.optind
                self._last_nonopt = argc
                self.optind = argc
            if self.optind == argc:
                if self._first_nonopt != self._last_nonopt:
                    self.optind = self._first_nonopt
                return END
            if self._is_nonoption(self.optind):
                # Only reached without permutation ('+'): stop at the first operand.
                return END
            arg = self.argv[self.optind]
            if self.longopts and arg.startswith("--"):
                return self._long_option(arg[2:])
            self._next_char = arg[1:].encode("utf-8", "surrogateescape")
        return self._short_option()

    def _short_option(self) -> str:
        byte, self._next_char = self._next_char[:1], self._next_char[1:]
        char = byte.decode("utf-8", "surrogateescape")
        if not self._next_char:
            self.optind += 1
        spec = self.shortopts.find(char)
        if spec < 0 or char in ":;":
            self._error(f"invalid option -- '{char}'")
            return UNKNOWN
        if self.shortopts[spec + 1 : spec + 2] != ":":
            return char
        if self._next_char:
            self.optarg = self._next_char.decode("utf-8", "surrogateescape")
            self.optind += 1
        elif self.optind == len(self.argv):
            self._next_char = b""
            self._error(f"option requires an argument -- '{char}'")
            return MISSING if self.silent else UNKNOWN
        else:
            self.optarg = self.argv[self.optind]
            self.optind += 1
        self._next_char = b""
        return char

    def _long_option(self, body: str) -> str:
        name, eq, value = body.partition("=")
        self.optind += 1
        found = next((o for o in self.longopts if o.name == name), None)
        if found is None:
            prefixed = [o for o in self.longopts if o.name.startswith(name)]
            if not prefixed:
                self._error(f"unrecognized option '--{body}'")
                return UNKNOWN
            found = prefixed[0]
            # Matches that would act differently from the first make it ambiguous.
            others = [o for o in prefixed[1:] if (o.has_arg, o.key) != (found.has_arg, found.key)]
            if others:
                choices = "".join(f" '--{o.name}'" for o in [found, *others])
                self._error(f"option '--{body}' is ambiguous; possibilities:{choices}")
                return UNKNOWN
        if eq:
            if not found.has_arg:
                self._error(f"option '--{found.name}' doesn't allow an argument")
                return UNKNOWN
            self.optarg = value
        elif found.has_arg:
            if self.optind < len(self.argv):
                self.optarg = self.argv[self.optind]
                self.optind += 1
            else:
                self._error(f"option '--{found.name}' requires an argument")
                return MISSING if self.silent else UNKNOWN
        return found.key

    def _error(self, message: str) -> None:
        """glibc's message on stderr, "<argv[0]>: <message>"; nothing when silent."""
        if self.silent:
            return
        text = f"{self.argv[0]}: {message}\n"
        stream = sys.stderr
        raw = getattr(stream, "buffer", None)
        if raw is None:
            stream.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        else:
            # Arguments may hold undecodable bytes (surrogate escapes): write them back.
            stream.flush()
            raw.write(text.encode("utf-8", "surrogateescape"))
        stream.flush()
