"""Places in a buffer: what word is under the cursor, where a token ends, and the columns
the Language Server Protocol counts (UTF-16 code units) against the characters the rule
language counts (from 1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A token that starts at a diagnostic's column, to give the diagnostic a range: a string, a
# time, a duration or number (a percentage too), a name or field path (`event.cart_value`),
# or an operator; else one character.
_TOKEN = re.compile(
    r'"(?:[^"\\\n]|\\.)*"?'
    r"|\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?"
    r"|-?\d+(?:\.\d+)?[smhdw%]?"
    r"|[A-Za-z_][A-Za-z0-9_]*(?:[ \t]*\.[ \t]*[A-Za-z_][A-Za-z0-9_]*)*"  # a name, or a field path
    r"|==|!=|<=|>=|\S"
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def utf16_column(line: str, index: int) -> int:
    """The UTF-16 offset of character ``index`` of ``line``."""
    prefix = line[:index]
    return len(prefix) + sum(1 for ch in prefix if ord(ch) > 0xFFFF)


def char_index(line: str, utf16: int) -> int:
    """The character index of UTF-16 offset ``utf16`` in ``line`` (clamped to the line)."""
    units = 0
    for index, ch in enumerate(line):
        if units >= utf16:
            return index
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(line)


def token_span(line: str, index: int) -> tuple[int, int]:
    """The character span of the token that starts at ``index`` (at least one character,
    unless the line ends there)."""
    if index >= len(line):
        return len(line), len(line)
    match = _TOKEN.match(line, index)
    if match is None or match.end() == index:  # white space: mark the one character
        return index, index + 1
    return index, match.end()


@dataclass(frozen=True, slots=True)
class Word:
    """The identifier under (or just before) the cursor, and the dotted names before it."""

    text: str
    start: int  # character indexes in the line
    end: int
    qualifiers: tuple[str, ...]  # `event.a.b` with the cursor on b: ("event", "a")
    called: bool  # followed by `(`


def word_at(line: str, index: int) -> Word | None:
    for match in _WORD.finditer(line):
        if match.start() <= index <= match.end():
            if match.start() > 0 and line[match.start() - 1].isdigit():
                return None  # the unit of a duration (`30m`) or a time
            return Word(
                match.group(),
                match.start(),
                match.end(),
                qualifiers_before(line, match.start()),
                line[match.end() :].lstrip().startswith("("),
            )
        if match.start() > index:
            break
    return None


def qualifiers_before(line: str, start: int) -> tuple[str, ...]:
    """The chain `a.b.` that ends just before ``start``, as ("a", "b")."""
    names: list[str] = []
    position = start
    while True:
        before = line[:position].rstrip()
        if not before.endswith("."):
            break
        before = before[:-1].rstrip()
        match = re.search(r"[A-Za-z_][A-Za-z0-9_]*$", before)
        if match is None:
            break
        names.append(match.group())
        position = match.start()
    return tuple(reversed(names))


def in_string_or_comment(line: str, index: int) -> str | None:
    """ "string" or "comment" when character ``index`` of ``line`` is inside one, else None."""
    quoted = False
    escaped = False
    for ch in line[:index]:
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "#":
            return "comment"
    return "string" if quoted else None
