"""What a ruleset declares, and where: the index behind hover, go to definition,
completion and document symbols."""

from __future__ import annotations

from dataclasses import dataclass, field

from nba.dsl import nodes as n
from nba.dsl.syntax import RESERVED

# The functions of the rule language, as a marketer reads them (the checker's FUNCTIONS
# table holds their arities and kinds; a test keeps the two in step).
FUNCTION_DOCS: dict[str, tuple[str, str]] = {
    "lower": ("lower(s)", "`s` in lower case."),
    "upper": ("upper(s)", "`s` in upper case."),
    "len": ("len(x)", "The length of a string, list or map."),
    "contains": ("contains(x, y)", "True when the list `x` holds `y`, or the string `x` holds the string `y`."),
    "starts_with": ("starts_with(s, p)", "True when the string `s` starts with `p`."),
    "ends_with": ("ends_with(s, p)", "True when the string `s` ends with `p`."),
    "matches": (
        'matches(s, "regex")',
        "True when the pattern (Python `re` syntax, a literal) matches anywhere in `s`; anchor it with `^`/`$`.",
    ),
    "abs": ("abs(x)", "The absolute value of `x`."),
    "min": ("min(a, b, ...)", "The smallest of its arguments."),
    "max": ("max(a, b, ...)", "The largest of its arguments."),
    "round": ("round(x[, digits])", "`x` rounded to `digits` decimals (default 0); halves away from zero."),
    "floor": ("floor(x)", "The largest whole number not above `x`."),
    "ceil": ("ceil(x)", "The smallest whole number not below `x`."),
    "coalesce": ("coalesce(a, b, ...)", "The first argument that is not null."),
    "time": ("time(x)", "An RFC 3339 string or a number, as a time (seconds since the epoch)."),
    "hour": ("hour(t)", "The hour of the time `t`, 0-23, UTC."),
    "weekday": ("weekday(t)", "The weekday of the time `t`: 1 = Monday ... 7 = Sunday, UTC."),
    "days": ("days(n)", "`n` seconds in days (fractional)."),
}
AGGREGATE_DOCS: dict[str, tuple[str, str]] = {
    "count": (
        "count(TYPE [where CONDITION] within DURATION)",
        "How many events of TYPE the customer had in the window.",
    ),
    "sum": (
        "sum(TYPE.FIELD [where CONDITION] within DURATION)",
        "The sum of FIELD over the window's events of TYPE; 0 when there is none.",
    ),
    "avg": (
        "avg(TYPE.FIELD [where CONDITION] within DURATION)",
        "The mean of FIELD over the window's events of TYPE; null when there is none.",
    ),
    "min": (
        "min(TYPE.FIELD [where CONDITION] within DURATION)",
        "The smallest FIELD over the window's events of TYPE; null when there is none.",
    ),
    "max": (
        "max(TYPE.FIELD [where CONDITION] within DURATION)",
        "The largest FIELD over the window's events of TYPE; null when there is none.",
    ),
    "distinct": (
        "distinct(TYPE.FIELD [where CONDITION] within DURATION)",
        "How many distinct non-null values FIELD takes over the window's events of TYPE.",
    ),
    "since": (
        "since(TYPE [where CONDITION] within DURATION)",
        "Seconds since the latest event of TYPE in the window; null when there is none.",
    ),
}
KEYWORDS = tuple(sorted(RESERVED))
BUILTIN_EVENT_DOCS = {
    "type": "the event's type, always there",
    "customer_id": "the customer the event is about, always there",
    "time": "when the event happened (seconds since the epoch), always there",
}


@dataclass
class Index:
    segments: dict[str, n.Segment] = field(default_factory=dict)
    rules: list[n.Rule] = field(default_factory=list)
    profile_fields: dict[str, n.SchemaField] = field(default_factory=dict)
    event_schemas: dict[str, n.EventSchema] = field(default_factory=dict)
    event_types: set[str] = field(default_factory=set)  # declared, updated on, counted or tested
    channels: set[str] = field(default_factory=set)

    def event_fields(self, types: frozenset[str] | None) -> dict[str, list[tuple[str, n.SchemaField]]]:
        """field name -> [(event type, its declaration)] over the schemas of ``types`` (None: all)."""
        out: dict[str, list[tuple[str, n.SchemaField]]] = {}
        for event_type, schema in self.event_schemas.items():
            if types is not None and event_type not in types:
                continue
            for f in schema.fields:
                out.setdefault(f.name, []).append((event_type, f))
        return out


def build_index(modules: list[n.Module]) -> Index:
    from nba.dsl.checker import walk

    index = Index()
    for module in modules:
        for decl in module.declarations:
            expressions: list[n.Expr | None] = []
            if isinstance(decl, n.Segment):
                index.segments.setdefault(decl.id, decl)
                expressions.append(decl.condition)
            elif isinstance(decl, n.Rule):
                index.rules.append(decl)
                expressions += [decl.priority, decl.when]
                if decl.then is not None:
                    if decl.then.channel:
                        index.channels.add(decl.then.channel)
                    expressions += [value for _name, value, _pos in decl.then.params]
            elif isinstance(decl, n.ProfileSchema):
                for f in decl.fields:
                    index.profile_fields.setdefault(f.name, f)
            elif isinstance(decl, n.EventSchema):
                index.event_schemas.setdefault(decl.event_type, decl)
                index.event_types.add(decl.event_type)
            elif isinstance(decl, n.OnUpdate):
                index.event_types.add(decl.event_type)
                expressions.append(decl.condition)
                expressions += [s.value for s in decl.sets]
            elif isinstance(decl, n.Policy):
                if decl.channel:
                    index.channels.add(decl.channel)
            elif isinstance(decl, n.Default) and decl.then.channel:
                index.channels.add(decl.then.channel)
            for expr in expressions:
                for node in walk(expr):
                    if isinstance(node, n.Aggregate):
                        index.event_types.add(node.event_type)
                    elif (
                        isinstance(node, n.Binary)
                        and node.op in ("==", "in")
                        and isinstance(node.left, n.Field)
                        and node.left.root == "event"
                        and node.left.path == ("type",)
                    ):
                        values = [node.right] if node.op == "==" else list(getattr(node.right, "items", ()))
                        index.event_types.update(
                            v.value for v in values if isinstance(v, n.Literal) and isinstance(v.value, str)
                        )
    return index
