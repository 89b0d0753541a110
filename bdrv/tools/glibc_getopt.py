"""glibc's getopt_long(), state and quirks included, for tools that report errors themselves.

qemu-img calls getopt_long() with an option string starting with ':' (glibc stays
silent) and then prints "unrecognized option '%s'" or "missing argument for option
'%s'" naming argv[optind - 1]. That element depends on glibc's exact bookkeeping:
`optind` only moves past a cluster like "-xU" once its last letter is read, and
operands are permuted behind the options lazily. So the scan below follows glibc's
algorithm step by step instead of approximating it; `argv` is permuted in place,
as glibc does, and `optind` ends up at the first operand.
"""

from __future__ import annotations

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
    """One getopt_long() scan over `argv` (argv[0] is skipped, as in C).

    `optstring` is glibc's: a leading '+' stops at the first operand, a leading ':'
    reports a missing argument as MISSING rather than UNKNOWN. Nothing is printed.
    """

    def __init__(self, argv: list[str], optstring: str, longopts: tuple[LongOpt, ...] = ()):
        self.argv = argv
        self.permute = not optstring.startswith("+")
        self.shortopts = optstring.lstrip("+")
        self.colon = self.shortopts.startswith(":")
        self.longopts = longopts
        self.optind = 1
        self.optarg: str | None = None
        self._next_char = ""
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

    def operands(self) -> list[str]:
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
            self._next_char = arg[1:]
        return self._short_option()

    def _short_option(self) -> str:
        char, self._next_char = self._next_char[0], self._next_char[1:]
        if not self._next_char:
            self.optind += 1
        spec = self.shortopts.find(char)
        if spec < 0 or char in ":;":
            return UNKNOWN
        if self.shortopts[spec + 1 : spec + 2] != ":":
            return char
        if self._next_char:
            self.optarg = self._next_char
            self.optind += 1
        elif self.optind == len(self.argv):
            self._next_char = ""
            return MISSING if self.colon else UNKNOWN
        else:
            self.optarg = self.argv[self.optind]
            self.optind += 1
        self._next_char = ""
        return char

    def _long_option(self, body: str) -> str:
        name, eq, value = body.partition("=")
        found = next((o for o in self.longopts if o.name == name), None)
        if found is None:
            prefixed = [o for o in self.longopts if o.name.startswith(name)]
            if prefixed and any((o.has_arg, o.key) != (prefixed[0].has_arg, prefixed[0].key)
                                for o in prefixed[1:]):
                self.optind += 1
                return UNKNOWN  # ambiguous abbreviation
            found = prefixed[0] if prefixed else None
        self.optind += 1
        if found is None:
            return UNKNOWN
        if eq:
            if not found.has_arg:
                return UNKNOWN
            self.optarg = value
        elif found.has_arg:
            if self.optind < len(self.argv):
                self.optarg = self.argv[self.optind]
                self.optind += 1
            else:
                return MISSING if self.colon else UNKNOWN
        return found.key
