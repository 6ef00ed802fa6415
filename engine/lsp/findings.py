"""What the editor shows: a finding (an error of the checker or a warning of lint) at its place."""

from __future__ import annotations

from dataclasses import dataclass

from nba.dsl.source import Position

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something to show in the editor: an error of the checker or a warning of lint."""

    pos: Position
    message: str
    severity: str = ERROR
    code: str | None = None
    source: str = "nba"
