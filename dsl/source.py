"""Places in rule files, and the load errors that point at them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True, slots=True)
class Position:
    path: str
    line: int  # from 1
    column: int  # from 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    pos: Position
    message: str

    def format(self, source_lines: list[str] | None) -> str:
        head = f"{self.pos}: error: {self.message}"
        if not source_lines or not 1 <= self.pos.line <= len(source_lines):
            return head
        line = source_lines[self.pos.line - 1].rstrip("\r\n")
        # Keep tabs under tabs so the caret lines up in a terminal.
        pad = "".join("\t" if ch == "\t" else " " for ch in line[: self.pos.column - 1])
        return f"{head}\n{line}\n{pad}^"


class LoadError(Exception):
    """A ruleset that does not load: every diagnostic, in file then line order."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, list[str]]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.pos.path, d.pos.line, d.pos.column))
        self.sources = sources
        super().__init__(self.report())

    def report(self) -> str:
        return "\n".join(d.format(self.sources.get(d.pos.path)) for d in self.diagnostics)

    def __str__(self) -> str:
        return self.report()


class Diagnostics:
    """Collects the errors of one load."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, pos: Position, message: str) -> None:
        self.items.append(Diagnostic(pos, message))

    def __bool__(self) -> bool:
        return bool(self.items)


def suggest(name: str, known: Iterable[str]) -> str:
    """``; did you mean `x`?`` for the closest known name, or ``""``."""
    candidates = sorted(set(known) - {name})
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close:
        close = [k for k in candidates if k.lower() == name.lower()]
    return f"; did you mean `{close[0]}`?" if close else ""
