"""JSON as QEMU 7.2 reads it, for `json:{...}` filenames.

QEMU's reader differs from RFC 8259 and from Python's json module in ways that show
in qemu-img's output: strings may be single-quoted, `\\'` is an escape, integers may be
as large as 2^64-1 before becoming floats, duplicate keys are errors, and every failure
has its own text ("JSON parse error, premature EOI", "JSON parse error, stray '@'",
"Expecting at most one JSON value", ...). `parse_json` reproduces the reader: a byte
lexer with error recovery, a streamer that cuts top-level values, and a parser.

Strings come back as Python str; a byte sequence QEMU keeps but that is not UTF-8
(U+0000 becomes C0 80, as in QEMU) is carried as surrogate escapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from bdrv.errors import BlockError

JSONValue = dict[str, "JSONValue"] | list["JSONValue"] | str | int | float | bool | None

MAX_NESTING = 1024
_PUNCT = frozenset(b"{}[],:")
_WS = frozenset(b" \t\r\n")
_DIGITS = frozenset(b"0123456789")
_LOWER = frozenset(b"abcdefghijklmnopqrstuvwxyz")
_ESCAPES = dict(zip(b"\"'\\/bfnrt", "\"'\\/\b\f\n\r\t", strict=True))


@dataclass
class _Token:
    kind: str  # one of "{}[],:" or "int", "float", "keyword", "string"
    text: bytes


class _Fail(Exception):
    """Internal: one JSON value failed to parse (message without 'JSON parse error')."""


def _lex(data: bytes) -> list[_Token | bytes]:
    """Split into tokens; a bytes item stands for a lexer error (the stray text)."""
    out: list[_Token | bytes] = []
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c in _WS:
            i += 1
        elif c in _PUNCT:
            out.append(_Token(chr(c), data[i : i + 1]))
            i += 1
        elif c in (0x22, 0x27):
            i = _lex_string(out, data, i)
        elif c in _LOWER:
            j = i
            while j < n and data[j] in _LOWER:
                j += 1
            out.append(_Token("keyword", data[i:j]))
            i = j
        elif c in _DIGITS or c == 0x2D:
            i = _lex_number(out, data, i)
        else:
            i = _error(out, data, i, i + 1)
    return out


def _lex_string(out: list[_Token | bytes], data: bytes, i: int) -> int:
    """Lex a quoted string: any byte 0x20..0xFD, backslash escapes checked later."""
    n, j = len(data), i + 1
    while j < n:
        b = data[j]
        if b == 0x5C:
            if j + 1 < n and 0x20 <= data[j + 1] <= 0xFD:
                j += 2
                continue
            return _error(out, data, i, min(j + 2, n))
        if b < 0x20 or b > 0xFD:
            return _error(out, data, i, j + 1)
        if b == data[i]:
            out.append(_Token("string", data[i : j + 1]))
            return j + 1
        j += 1
    return _error(out, data, i, n)


def _lex_number(out: list[_Token | bytes], data: bytes, i: int) -> int:
    """Lex -?(0|[1-9]digits)(.digits)?([eE][+-]?digits)? the way QEMU's lexer does."""
    n, j = len(data), i
    if data[j] == 0x2D:
        j += 1
        if j >= n or data[j] not in _DIGITS:
            return _error(out, data, i, min(j + 1, n))
    if data[j] == 0x30:
        j += 1
        if j < n and data[j] in _DIGITS:
            return _error(out, data, i, j + 1)
        if j >= n or data[j] != 0x2E:
            out.append(_Token("int", data[i:j]))
            return j
    else:
        while j < n and data[j] in _DIGITS:
            j += 1
        if j >= n or data[j] not in b".eE":
            out.append(_Token("int", data[i:j]))
            return j
    if data[j] == 0x2E:
        j += 1
        if j >= n or data[j] not in _DIGITS:
            return _error(out, data, i, min(j + 1, n))
        while j < n and data[j] in _DIGITS:
            j += 1
        if j >= n or data[j] not in b"eE":
            out.append(_Token("float", data[i:j]))
            return j
    j += 1  # the exponent's 'e'
    if j < n and data[j] in b"+-":
        j += 1
    if j >= n or data[j] not in _DIGITS:
        return _error(out, data, i, min(j + 1, n))
    while j < n and data[j] in _DIGITS:
        j += 1
    out.append(_Token("float", data[i:j]))
    return j


def _error(out: list[_Token | bytes], data: bytes, start: int, end: int) -> int:
    """Record a stray token data[start:end], then skip as QEMU's error recovery does."""
    out.append(data[start:end])
    i = end
    while i < len(data):
        b = data[i]
        if (b < 0x20 and b != 0x09) or b >= 0xFE or b in _PUNCT:
            break
        i += 1
    return i


class _Frame:
    """An object or array being parsed; `key` is set while its value is awaited."""

    def __init__(self, container: dict[str, JSONValue] | list[JSONValue]) -> None:
        self.container = container
        self.key: str | None = None


class _Parser:
    """QEMU's recursive-descent parser, run with an explicit stack (nesting <= 1024)."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> _Token:
        if self.pos >= len(self.tokens):
            raise _Fail("premature EOI")
        return self.tokens[self.pos]

    def pop(self) -> _Token:
        token = self.peek()
        self.pos += 1
        return token

    def value(self) -> JSONValue:
        stack: list[_Frame] = []
        while True:
            token = self.pop()
            value: JSONValue
            if token.kind in "{[" and self.peek().kind != ("}" if token.kind == "{" else "]"):
                stack.append(_Frame({} if token.kind == "{" else []))
                continue
            if token.kind in "{[":
                self.pop()
                value = {} if token.kind == "{" else []
            else:
                value = _scalar(token)
            while stack and self._deliver(stack[-1], value):
                value = stack.pop().container
            if not stack:
                return value

    def _deliver(self, frame: _Frame, value: JSONValue) -> bool:
        """Hand a parsed value to its container; True when the container is complete."""
        if isinstance(frame.container, list):
            frame.container.append(value)
            token = self.pop()
            if token.kind == "]":
                return True
            if token.kind != ",":
                raise _Fail("expected separator in list")
            return False
        if frame.key is None:
            if not isinstance(value, str):
                raise _Fail("key is not a string in object")
            if self.pop().kind != ":":
                raise _Fail("missing : in object pair")
            frame.key = value
            return False
        if frame.key in frame.container:
            raise _Fail("duplicate key")
        frame.container[frame.key] = value
        frame.key = None
        token = self.pop()
        if token.kind == "}":
            return True
        if token.kind != ",":
            raise _Fail("expected separator in dict")
        return False


def _scalar(token: _Token) -> JSONValue:
    if token.kind == "string":
        return _string(token.text)
    if token.kind == "int":
        number = int(token.text)
        return number if -(1 << 63) <= number < (1 << 64) else float(token.text)
    if token.kind == "float":
        return float(token.text)
    if token.kind == "keyword":
        words: dict[bytes, JSONValue] = {b"true": True, b"false": False, b"null": None}
        if token.text in words:
            return words[token.text]
        raise _Fail(f"invalid keyword '{_text(token.text)}'")
    raise _Fail("expecting value")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _hex4(raw: bytes, pos: int) -> int:
    digits = raw[pos : pos + 4]
    if len(digits) < 4 or any(b not in b"0123456789abcdefABCDEF" for b in digits):
        return -1
    return int(digits, 16)


def _valid_codepoint(cp: int) -> bool:
    return (
        0 <= cp <= 0x10FFFF
        and not 0xD800 <= cp <= 0xDFFF
        and not 0xFDD0 <= cp <= 0xFDEF
        and (cp & 0xFFFE) != 0xFFFE
    )


def _utf8(cp: int) -> bytes:
    return b"\xc0\x80" if cp == 0 else chr(cp).encode()


def _string(raw: bytes) -> str:
    """Decode a string token (quotes included), escapes and UTF-8 checked as QEMU does."""
    out = bytearray()
    quote, i = raw[0], 1
    while raw[i] != quote:
        if raw[i] == 0x5C:
            begin, kind = i, raw[i + 1]
            i += 2
            if kind in _ESCAPES:
                out += _ESCAPES[kind].encode()
            elif kind == ord("u"):
                cp = _hex4(raw, i)
                i += 4
                if 0xD800 <= cp <= 0xDBFF and raw[i : i + 2] == b"\\u":
                    low = _hex4(raw, i + 2)
                    if 0xDC00 <= low <= 0xDFFF:
                        cp = 0x10000 + ((cp & 0x3FF) << 10) | (low & 0x3FF)
                        i += 6
                    else:
                        cp = -1
                if not _valid_codepoint(cp):
                    raise _Fail(f"{_text(raw[begin:i])} is not a valid Unicode character")
                out += _utf8(cp)
            else:
                raise _Fail("invalid escape sequence in string")
            continue
        cp, i = _utf8_codepoint(raw, i)
        if cp < 0:
            raise _Fail("invalid UTF-8 sequence in string")
        out += _utf8(cp)
    return _text(bytes(out))


def _utf8_codepoint(raw: bytes, i: int) -> tuple[int, int]:
    """Decode one (modified) UTF-8 sequence: (code point or -1, next index)."""
    lead = raw[i]
    if lead < 0x80:
        return lead, i + 1
    if lead >= 0xFE or not lead & 0x40:
        return -1, i + 1
    length = 8 - (lead ^ 0xFF).bit_length()
    cp = lead & (0x7F >> length)
    for k in range(1, length):
        byte = raw[i + k] if i + k < len(raw) else 0
        if byte & 0xC0 != 0x80:
            return -1, i + k
        cp = (cp << 6) | (byte & 0x3F)
    overlong = cp < (0x80, 0x800, 0x10000, 0x200000, 0x4000000)[length - 2]
    if not _valid_codepoint(cp) or (overlong and not (cp == 0 and length == 2)):
        return -1, i + length
    return cp, i + length


def parse_json(text: str) -> JSONValue:
    """Parse one JSON value as qobject_from_json() does; BlockError with QEMU's text."""
    results: list[JSONValue] = []
    error: str | None = None

    def emit(value: JSONValue, failure: str | None) -> None:
        nonlocal error
        if error is not None:
            return
        if results:
            results.clear()
            error = "Expecting at most one JSON value"
        elif failure is not None:
            error = failure
        else:
            results.append(value)

    pending: list[_Token] = []
    braces = brackets = 0
    for item in _lex(text.encode("utf-8", "surrogateescape")):
        if isinstance(item, bytes):
            pending, braces, brackets = [], 0, 0
            emit(None, f"JSON parse error, stray '{_text(item)}'")
            continue
        braces += (item.kind == "{") - (item.kind == "}")
        brackets += (item.kind == "[") - (item.kind == "]")
        if braces + brackets > MAX_NESTING:
            pending, braces, brackets = [], 0, 0
            emit(None, "JSON nesting depth limit exceeded")
            continue
        pending.append(item)
        if (braces > 0 or brackets > 0) and braces >= 0 and brackets >= 0:
            continue
        emit(*_parse_tokens(pending))
        pending, braces, brackets = [], 0, 0
    if pending:
        emit(*_parse_tokens(pending))
    if error is not None:
        raise BlockError(error)
    if not results:
        raise BlockError("Expecting a JSON value")
    return results[0]


def _parse_tokens(tokens: list[_Token]) -> tuple[JSONValue, str | None]:
    parser = _Parser(tokens)
    try:
        return parser.value(), None
    except _Fail as exc:
        return None, f"JSON parse error, {exc}"
