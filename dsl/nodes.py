"""The syntax tree of a ruleset: small frozen records, each with the place it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nba.dsl.source import Position


@dataclass(frozen=True, slots=True)
class Node:
    pos: Position


# ---- expressions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expr(Node):
    pass


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    """A constant: null, a bool, a number (durations and times included) or a string."""

    value: Any
    text: str = ""  # how it was written, for messages


@dataclass(frozen=True, slots=True)
class ListExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Field(Expr):
    """``event.a.b``, ``profile.a``, or (inside ``where``) the past event's ``a.b``."""

    root: str  # "event" | "profile" | "past"
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SegmentRef(Expr):
    name: str


@dataclass(frozen=True, slots=True)
class Member(Expr):
    """``x.name`` on anything that is not a field path (a call's result, a list, ...)."""

    target: Expr
    name: str


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    op: str  # "-" | "not"
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    """Arithmetic, comparisons, ``in`` / ``not in`` and the logical ``and`` / ``or``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class IfExpr(Expr):
    cond: Expr
    then: Expr
    other: Expr


@dataclass(frozen=True, slots=True)
class Call(Expr):
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Aggregate(Expr):
    """``count|sum|avg|min|max|distinct|since(TYPE[.FIELD] [where C] within D)``."""

    func: str
    event_type: str
    path: tuple[str, ...]  # the field path after TYPE; () for count and since
    where: Expr | None
    window: float
    window_text: str = ""  # how the window was written (`24h`), for messages and explanations


# ---- declarations --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionSpec(Node):
    action: str
    channel: str | None
    params: tuple[tuple[str, Expr, Position], ...]


@dataclass(frozen=True, slots=True)
class Cap(Node):
    limit: int
    window: float


@dataclass(frozen=True, slots=True)
class Rule(Node):
    id: str
    title: str | None
    priority: Expr | None
    when: Expr | None
    then: ActionSpec | None
    cap: Cap | None
    holdout: float | None  # percent, 0-100
    active_from: float | None
    active_to: float | None


@dataclass(frozen=True, slots=True)
class Segment(Node):
    id: str
    condition: Expr


@dataclass(frozen=True, slots=True)
class Policy(Node):
    channel: str | None  # None: `policy all`
    limit: int
    window: float

    @property
    def label(self) -> str:
        return f"policy {self.channel or 'all'}"


@dataclass(frozen=True, slots=True)
class SetField(Node):
    field: str
    value: Expr


@dataclass(frozen=True, slots=True)
class OnUpdate(Node):
    event_type: str
    condition: Expr | None
    sets: tuple[SetField, ...]


@dataclass(frozen=True, slots=True)
class Default(Node):
    then: ActionSpec


@dataclass(frozen=True, slots=True)
class SchemaField(Node):
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class ProfileSchema(Node):
    fields: tuple[SchemaField, ...]


@dataclass(frozen=True, slots=True)
class EventSchema(Node):
    event_type: str
    fields: tuple[SchemaField, ...]


@dataclass(slots=True)
class Module:
    """The declarations of one rule file, in order."""

    path: str
    declarations: list[Node] = field(default_factory=list)
