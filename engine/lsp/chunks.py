"""Parsing one file in pieces, so that a keystroke re-parses one declaration, not the file.

Lark parses a 1,000-rule file in well over the 200 ms a keystroke may take (see
benchmarks/bench_lsp.py), so a file is cut before each line that starts a declaration
(``rule``, ``segment``, ``policy``, ``on``, ``default``, ``profile {``, ``event NAME {`` at
the start of a line) and each piece is parsed on its own and kept while its text is the same.

This gives what parsing the whole file gives (the tests compare the two):
- The grammar is ``start: declaration*`` and every cut is at a line start, where no token
  (strings and comments end at the line's end) is cut. When every piece parses, the file
  is the pieces one after the other, and LALR parses it the same way.
- When a piece fails, the parse of the whole file fails at the same token with the same
  expected tokens (the parser is in the same state at the start of a declaration), unless
  the piece only failed for lack of what follows it (a missing ``end``, or a cut that was
  not really between declarations): an error on a piece's last line is checked again with
  the next piece joined on, until it moves off the last line or the file ends.
- After a syntax error the file has no declarations, as in ``dsl.loader``.

Each piece is parsed under its own name (``PATH\\0N``) with lines counted from the piece's
start, so that a piece whose text stays the same keeps its parse when lines are inserted
above it; ``Pieces.place`` maps such a place back to the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import count

from nba.dsl import nodes as n
from nba.dsl.loader import TOO_DEEP
from nba.dsl.source import Diagnostic, Diagnostics, Position
from nba.dsl.syntax import parse_module

DECLARATION_START = re.compile(
    r"(?:rule|segment|policy|on|default)(?:\s|$)|profile\s*\{|event\s+[A-Za-z_]\w*\s*\{"
)  # at a line start
SEPARATOR = "\0"
_ids = count(1)


@dataclass(slots=True)
class Piece:
    name: str  # PATH\0N: the path its places carry
    module: n.Module | None
    errors: list[Diagnostic]  # places relative to the piece


@dataclass(slots=True)
class FileParse:
    module: n.Module | None  # the whole file's declarations; None after a syntax error
    errors: list[Diagnostic]  # places in the file
    # the declarations of every piece that parses on its own, syntax error or not: what
    # hover, completion and symbols work from while a declaration is being typed
    outline: n.Module
    offsets: dict[str, tuple[str, int]] = field(default_factory=dict)  # piece name -> (path, first line - 1)
    texts: dict[str, str] = field(default_factory=dict)  # piece name -> its text (its places count in it)


# DECLARATION_START at the start of any line but the first, for one search over the text
# (a tenth of the time of matching line by line at 1,000 rules); [^\S\n] is a space or tab
_CUTS = re.compile(
    r"(?<=\n)(?=(?:rule|segment|policy|on|default)(?:[^\S\n]|$)|profile[^\S\n]*\{|event[^\S\n]+[A-Za-z_]\w*[^\S\n]*\{)",
    re.MULTILINE,
)


def cut(text: str) -> list[tuple[int, str]]:
    """The pieces of a file: (index of the first line, text), in order."""
    pieces = []
    start, line = 0, 0
    for match in _CUTS.finditer(text):
        end = match.start()
        pieces.append((line, text[start : end - 1]))  # less the line break before the cut
        line += text.count("\n", start, end)
        start = end
    pieces.append((line, text[start:]))
    return pieces


def last_content_line(text: str) -> int:
    """The number (from 1) of the piece's last line that is not blank or a comment; 0 if none."""
    lines = text.split("\n")
    for number in range(len(lines), 0, -1):
        stripped = lines[number - 1].strip()
        if stripped and not stripped.startswith("#"):
            return number
    return 0


class PieceCache:
    """The parses of one file's pieces, by text (and which copy of that text it is)."""

    def __init__(self, path: str):
        self.path = path
        self.pieces: dict[tuple[str, int], Piece] = {}

    def parse_piece(self, text: str, copy: int) -> Piece:
        key = (text, copy)
        piece = self.pieces.get(key)
        if piece is None:
            piece = _parse(f"{self.path}{SEPARATOR}{next(_ids)}", text)
            self.pieces[key] = piece
        return piece

    def parse(self, text: str) -> FileParse:
        pieces = cut(text)
        seen: dict[str, int] = {}
        used: set[tuple[str, int]] = set()
        declarations: list[n.Node] = []
        errors: list[Diagnostic] = []
        offsets: dict[str, tuple[str, int]] = {}
        texts: dict[str, str] = {}
        failed: int | None = None
        for index, (first, piece_text) in enumerate(pieces):
            copy = seen.get(piece_text, 0)
            seen[piece_text] = copy + 1
            used.add((piece_text, copy))
            piece = self.parse_piece(piece_text, copy)
            if piece.module is None:
                if failed is None:
                    failed = index
                continue
            offsets[piece.name] = (self.path, first)
            texts[piece.name] = piece_text
            declarations.extend(piece.module.declarations)
            errors.extend(_moved(d, self.path, first) for d in piece.errors)
        for key in set(self.pieces) - used:
            del self.pieces[key]
        outline = n.Module(self.path, declarations)
        if failed is not None:
            return FileParse(None, [self._syntax_error(pieces, failed)], outline, offsets, texts)
        return FileParse(outline, errors, outline, offsets, texts)

    def _syntax_error(self, pieces: list[tuple[int, str]], index: int) -> Diagnostic:
        """The error the whole file's parse reports, from the first piece that fails."""
        first = pieces[index][0]
        last = index
        while True:
            text = "\n".join(t for _f, t in pieces[index : last + 1])
            piece = _parse(self.path, text) if last > index else self.parse_piece(pieces[index][1], 0)
            if piece.module is None:
                error = piece.errors[0]
                if last + 1 >= len(pieces) or error.pos.line < last_content_line(text):
                    return _moved(error, self.path, first)
            elif last + 1 >= len(pieces):  # cannot happen: the pieces parsed alone failed
                return Diagnostic(Position(self.path, first + 1, 1), "syntax error")
            last += 1


def _parse(name: str, text: str) -> Piece:
    diagnostics = Diagnostics()
    try:
        module = parse_module(name, text, diagnostics)
    except RecursionError:
        module = None
        diagnostics.error(Position(name, 1, 1), TOO_DEEP)
    return Piece(name, module, diagnostics.items)


def _moved(diagnostic: Diagnostic, path: str, first: int) -> Diagnostic:
    pos = diagnostic.pos
    return Diagnostic(Position(path, pos.line + first, pos.column), diagnostic.message)


def place(pos: Position, offsets: dict[str, tuple[str, int]]) -> Position:
    """A node's place in its file (nodes of a piece carry the piece's name and lines)."""
    moved = offsets.get(pos.path)
    if moved is None:
        return pos
    return Position(moved[0], pos.line + moved[1], pos.column)
