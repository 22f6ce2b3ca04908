"""Finding the number a JSON parser cannot hold, and the field it is in.

simdjson refuses a body holding an integer beyond 64 bits (``BIGINT_ERROR``) or a number beyond
float64's range (``NUMBER_ERROR``, e.g. ``1e400``) without saying where, yet such a number is almost
always one mistyped option (``"temperature": 100000000000000000000``) that the client needs named.
:func:`locate` finds the first such number and the field holding it, only after a parse has failed,
in time linear in the body and independent of its content:

* candidates are found by one regular-expression search (C speed): number tokens with 20 or more
  integer digits or an exponent of three or more digits; only those are converted in Python, at most
  :data:`MAX_CANDIDATES` of them;
* the field is found by walking the body's structure up to the candidate: brackets, braces, colons
  and strings are matched one by one (at most :data:`MAX_TOKENS`), while the numbers and commas
  between them are counted in C (``bytes.count``), so a large tensor costs a few tokens per row.

Beyond either bound, or in a body over :data:`MAX_BODY_BYTES`, the search gives up and the error is
reported without a field: the two expressions run at C speed but cost up to 35 ms per MB (strings
of escaped quotes, bodies of short numbers), several times a parse, and a mistyped option is almost
always in a small body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

#: Candidate tokens converted in Python before giving up (e.g. a tensor full of ``1e-300``).
MAX_CANDIDATES = 1024
#: Structural tokens walked before giving up.
MAX_TOKENS = 1 << 16
#: Characters of a number shown in the error.
MAX_SHOWN = 40
#: Bodies larger than this are not searched.
MAX_BODY_BYTES = 1 << 20

# 19 digits: the first integers beyond int64 (−9223372036854775809) have that many.
_CANDIDATE = re.compile(rb"(?<![0-9A-Za-z_.+\-])-?(?:\d{19,}(?:\.\d+)?(?:[eE][+-]?\d+)?|\d+(?:\.\d+)?[eE][+-]?\d{3,})")
# Possessive quantifiers: a string of escaped quotes would otherwise cost the engine 9× more per byte.
_STRUCTURE = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[\[\]{}:]')
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class OutOfRange:
    """A number that no 64-bit integer or float64 holds, and where it is.

    Attributes:
        field: dotted path of the object member holding it (``terms.0.temperature``).
        index: its position inside that member's nested lists, empty for a scalar.
        token: the number as written, cut to :data:`MAX_SHOWN` characters.
    """

    field: str
    index: tuple[int, ...]
    token: str

    def detail(self) -> str:
        at = f" at {list(self.index)}" if self.index else ""
        return f"{self.field}: the number {self.token}{at} is beyond the range of a 64-bit integer and of float64"


def locate(body: bytes | bytearray) -> OutOfRange | None:
    """The first number in ``body`` beyond 64-bit integers and float64, or None when none is found in bounds."""
    if len(body) > MAX_BODY_BYTES:
        return None
    walker = _Walker(body)
    for checked, match in enumerate(_CANDIDATE.finditer(body)):
        if checked == MAX_CANDIDATES:
            return None
        if not _out_of_range(match.group()):
            continue
        try:
            path = walker.path_at(match.start())
        except _GaveUp:
            return None
        if path is None:  # inside a string
            continue
        if not path or not isinstance(path[0], str):  # not inside a member of an object body
            return None
        keys = list(path)
        while isinstance(keys[-1], int):
            keys.pop()
        index = tuple(step for step in path[len(keys) :] if isinstance(step, int))
        token = match.group().decode("ascii")
        token = token if len(token) <= MAX_SHOWN else token[:MAX_SHOWN] + "…"
        return OutOfRange(".".join(map(str, keys)), index, token)
    return None


def _out_of_range(token: bytes) -> bool:
    if b"." in token or b"e" in token or b"E" in token:
        return float(token) in (float("inf"), float("-inf"))
    if len(token.lstrip(b"-")) > 20:  # JSON integers have no leading zeros; int() refuses 4,300 digits
        return True
    return not _INT64_MIN <= int(token) <= _UINT64_MAX


class _GaveUp(Exception):
    """The structure holds more tokens than :data:`MAX_TOKENS` before the number."""


@dataclass
class _Frame:
    """One open container: an object (its current key) or an array (its current element index)."""

    is_object: bool
    step: str | int = 0
    expecting_key: bool = True


class _Walker:
    """The structure of a body walked forward, one position at a time, tracking the open containers."""

    def __init__(self, body: bytes | bytearray) -> None:
        self.body = body
        self.tokens = _STRUCTURE.finditer(body)
        self.pending: re.Match[bytes] | None = None
        self.position = 0
        self.stack: list[_Frame] = []
        self.walked = 0

    def path_at(self, offset: int) -> list[str | int] | None:
        """The keys and indices leading to ``offset`` (after earlier calls' offsets); None inside a string."""
        while True:
            token = self.pending or next(self.tokens, None)
            self.pending = None
            if token is None or token.start() > offset:
                self.pending = token
                self._gap(offset)
                return [frame.step for frame in self.stack]
            if token.end() > offset:
                self.pending = token
                return None
            self._gap(token.start())
            self._token(token)
            self.walked += 1
            if self.walked > MAX_TOKENS:
                raise _GaveUp

    def _gap(self, until: int) -> None:
        """Scalars, commas and spaces up to ``until``: commas advance the innermost container."""
        if self.stack and until > self.position:
            commas = self.body.count(b",", self.position, until)
            top = self.stack[-1]
            if top.is_object:
                top.expecting_key = top.expecting_key or commas > 0
            elif commas:
                assert isinstance(top.step, int)
                top.step += commas
        self.position = max(self.position, until)

    def _token(self, token: re.Match[bytes]) -> None:
        text = token.group()
        top = self.stack[-1] if self.stack else None
        if text == b"{" or text == b"[":
            self.stack.append(_Frame(is_object=text == b"{"))
        elif text == b"}" or text == b"]":
            if self.stack:
                self.stack.pop()
        elif text == b":":
            if top is not None and top.is_object:
                top.expecting_key = False
        elif top is not None and top.is_object and top.expecting_key:
            top.step = _key(text)
        self.position = token.end()


def _key(text: bytes) -> str:
    try:
        key = json.loads(text)
    except ValueError:
        key = text[1:-1].decode("utf-8", "replace")
    return key if len(key) <= MAX_SHOWN else key[:MAX_SHOWN] + "…"
