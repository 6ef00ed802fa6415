"""Syntax tree -> checked ruleset: names resolved, kinds checked, every error reported.

Kinds known when rules are loaded are ``null bool number string list map``; ``any`` is
a kind only known at decision time. A time and a duration are numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nba.dsl import nodes as n
from nba.dsl.source import Diagnostics, suggest

ANY = "any"
SCHEMA_KINDS = {"string": "string", "number": "number", "bool": "bool", "time": "number", "list": "list"}


def schema_kind(declared: str) -> str:
    """The kind of a schema type; ``any`` for an unknown type (already reported where it is
    declared, so that the rules using the field are still checked)."""
    return SCHEMA_KINDS.get(declared, ANY)


BUILTIN_EVENT_FIELDS = {"type": "string", "customer_id": "string", "time": "number"}
BUILTIN_SCHEMA_TYPES = {"type": ("string",), "customer_id": ("string",), "time": ("time", "number")}
BUILTIN_PAST_FIELDS = {"type": "string", "time": "number"}
ARTICLE = {
    "null": "null",
    "bool": "a bool",
    "number": "a number",
    "string": "a string",
    "list": "a list",
    "map": "a map",
}

# name -> (min args, max args or None, argument kinds accepted (per position, last repeats), result kind)
FUNCTIONS: dict[str, tuple[int, int | None, tuple[frozenset, ...], str]] = {
    "lower": (1, 1, (frozenset({"string"}),), "string"),
    "upper": (1, 1, (frozenset({"string"}),), "string"),
    "len": (1, 1, (frozenset({"string", "list", "map"}),), "number"),
    "contains": (2, 2, (frozenset({"string", "list"}), frozenset({ANY})), "bool"),
    "starts_with": (2, 2, (frozenset({"string"}),), "bool"),
    "ends_with": (2, 2, (frozenset({"string"}),), "bool"),
    "matches": (2, 2, (frozenset({"string"}),), "bool"),
    "abs": (1, 1, (frozenset({"number"}),), "number"),
    "min": (1, None, (frozenset({"number"}),), "number"),
    "max": (1, None, (frozenset({"number"}),), "number"),
    "round": (1, 2, (frozenset({"number"}),), "number"),
    "floor": (1, 1, (frozenset({"number"}),), "number"),
    "ceil": (1, 1, (frozenset({"number"}),), "number"),
    "coalesce": (1, None, (frozenset({ANY}),), ANY),
    "time": (1, 1, (frozenset({"string", "number"}),), "number"),
    "hour": (1, 1, (frozenset({"number"}),), "number"),
    "weekday": (1, 1, (frozenset({"number"}),), "number"),
    "days": (1, 1, (frozenset({"number"}),), "number"),
}
AGGREGATE_NAMES = ("count", "sum", "avg", "min", "max", "distinct", "since")


def literal_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "map"


def field_hint(name: str, known) -> str:
    """The closest declared field, or (when none is close) the declared fields if they are few."""
    hint = suggest(name, known)
    names = sorted(set(known))
    if hint or not names or len(names) > 8:
        return hint
    return " (declared: " + ", ".join(names) + ")"


def describe(expr: n.Expr) -> str:
    """A short name for an expression in messages."""
    if isinstance(expr, n.Field):
        root = "" if expr.root == "past" else expr.root + "."
        return f"`{root}{'.'.join(expr.path)}`" if expr.path else f"`{expr.root}`"
    if isinstance(expr, n.Literal):
        return f"`{expr.text}`" if expr.text else "the value"
    if isinstance(expr, n.SegmentRef):
        return f"`{expr.name}`"
    if isinstance(expr, (n.Call, n.Aggregate)):
        return f"`{expr.func if isinstance(expr, n.Aggregate) else expr.name}(...)`"
    return "the expression"


@dataclass
class CheckedRuleset:
    """Every declaration of a ruleset, checked, with the kinds the checker worked out."""

    rules: list[n.Rule] = field(default_factory=list)
    segments: dict[str, n.Segment] = field(default_factory=dict)
    policies: list[n.Policy] = field(default_factory=list)
    on_updates: list[n.OnUpdate] = field(default_factory=list)
    default: n.Default | None = None
    profile_schema: dict[str, str] = field(default_factory=dict)  # field -> schema type
    profile_declared: bool = False
    event_schemas: dict[str, dict[str, str]] = field(default_factory=dict)  # type -> field -> type
    rule_event_types: dict[str, frozenset[str] | None] = field(default_factory=dict)  # rule id -> types
    kinds: dict[int, str] = field(default_factory=dict)  # id(expr) -> kind

    def kind(self, expr: n.Expr) -> str:
        return self.kinds.get(id(expr), ANY)


def event_types_of(condition: n.Expr | None) -> frozenset[str] | None:
    """The event types a condition can be true for, from its top-level ``event.type`` tests.

    None when the condition does not restrict the event type.
    """
    if condition is None:
        return None
    if isinstance(condition, n.Binary) and condition.op == "and":
        left = event_types_of(condition.left)
        right = event_types_of(condition.right)
        if left is None:
            return right
        if right is None:
            return left
        return left & right
    if isinstance(condition, n.Binary) and condition.op == "or":
        left = event_types_of(condition.left)
        right = event_types_of(condition.right)
        if left is None or right is None:
            return None
        return left | right
    if isinstance(condition, n.Binary) and condition.op in ("==", "in"):
        field_side, value_side = condition.left, condition.right
        if condition.op == "==" and not _is_event_type(field_side):  # "x" == event.type
            field_side, value_side = value_side, field_side
        if not _is_event_type(field_side):
            return None
        if isinstance(value_side, n.Literal) and isinstance(value_side.value, str) and condition.op == "==":
            return frozenset({value_side.value})
        if condition.op == "in" and isinstance(value_side, n.ListExpr):
            values = [item.value for item in value_side.items if isinstance(item, n.Literal)]
            if len(values) == len(value_side.items) and all(isinstance(v, str) for v in values):
                return frozenset(values)
    return None


def _is_event_type(expr: n.Expr) -> bool:
    return isinstance(expr, n.Field) and expr.root == "event" and expr.path == ("type",)


class Checker:
    def __init__(self, diagnostics: Diagnostics, unparsed: tuple[str, ...] = ()):
        self.diag = diagnostics
        self.out = CheckedRuleset()
        self.unparsed = unparsed  # files with a syntax error: their declarations are unknown

    # -- collecting declarations --

    def check(self, modules: list[n.Module]) -> CheckedRuleset:
        declarations = [decl for module in modules for decl in module.declarations]
        self.collect_schemas(declarations)
        self.collect(declarations)
        self.check_segment_cycles()
        for segment in self.out.segments.values():
            self.check_condition(segment.condition, Scope(None), "a segment")
        for rule in self.out.rules:
            self.check_rule(rule)
        for update in self.out.on_updates:
            self.check_on_update(update)
        if self.out.default is not None:
            self.check_params(self.out.default.then, Scope(None))
        return self.out

    def collect_schemas(self, declarations: list[n.Node]) -> None:
        for decl in declarations:
            if isinstance(decl, n.ProfileSchema):
                if self.out.profile_declared:
                    self.diag.error(decl.pos, "a second `profile` schema; a ruleset has at most one")
                    continue
                self.out.profile_declared = True
                self.out.profile_schema = {f.name: f.type for f in decl.fields}
            elif isinstance(decl, n.EventSchema):
                if decl.event_type in self.out.event_schemas:
                    self.diag.error(decl.pos, f"a second schema for event `{decl.event_type}`")
                    continue
                self.check_builtin_fields(decl)
                self.out.event_schemas[decl.event_type] = {f.name: f.type for f in decl.fields}

    def check_builtin_fields(self, schema: n.EventSchema) -> None:
        """`type`, `customer_id` and `time` are in every event: a schema may only restate them."""
        for item in schema.fields:
            allowed = BUILTIN_SCHEMA_TYPES.get(item.name)
            if allowed is not None and item.type not in allowed:
                self.diag.error(
                    item.pos,
                    f"every event's `{item.name}` is {ARTICLE[BUILTIN_EVENT_FIELDS[item.name]]}; "
                    f"declare it as `{allowed[0]}` or leave it out",
                )

    def collect(self, declarations: list[n.Node]) -> None:
        rule_ids: set[str] = set()
        for decl in declarations:
            if isinstance(decl, n.Rule):
                if decl.id in rule_ids:
                    self.diag.error(decl.pos, f"duplicate rule id `{decl.id}`")
                    continue
                rule_ids.add(decl.id)
                self.out.rules.append(decl)
            elif isinstance(decl, n.Segment):
                if decl.id in self.out.segments:
                    self.diag.error(decl.pos, f"duplicate segment id `{decl.id}`")
                    continue
                self.out.segments[decl.id] = decl
            elif isinstance(decl, n.Policy):
                self.out.policies.append(decl)
            elif isinstance(decl, n.OnUpdate):
                self.out.on_updates.append(decl)
            elif isinstance(decl, n.Default):
                if self.out.default is not None:
                    self.diag.error(decl.pos, "a second `default`; a ruleset has at most one")
                    continue
                self.out.default = decl

    def check_segment_cycles(self) -> None:
        uses = {name: set(segment_refs(seg.condition)) for name, seg in self.out.segments.items()}
        reported: set[str] = set()
        state: dict[str, int] = {}  # 1: on the path, 2: done

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            path.append(name)
            for used in sorted(uses.get(name, ())):
                if used not in uses:
                    continue
                if state.get(used) == 1:
                    cycle = path[path.index(used) :] + [used]
                    if not reported.intersection(cycle):
                        segment = self.out.segments[used]
                        self.diag.error(segment.pos, "segment cycle: " + " -> ".join(cycle))
                        reported.update(cycle)
                elif used not in state:
                    visit(used, path)
            path.pop()
            state[name] = 2

        for name in self.out.segments:
            if name not in state:
                visit(name, [])

    # -- declarations --

    def check_rule(self, rule: n.Rule) -> None:
        types = event_types_of(rule.when)
        self.out.rule_event_types[rule.id] = types
        scope = Scope(types)
        if rule.when is not None:
            self.check_condition(rule.when, scope, "`when`")
        if rule.priority is not None:
            kind = self.kind_of(rule.priority, scope)
            if kind == "null":
                self.diag.error(rule.priority.pos, "`priority` must be a number, but it is always null")
            elif kind not in ("number", ANY):
                self.diag.error(
                    rule.priority.pos, f"`priority` must be a number, but {describe(rule.priority)} is {ARTICLE[kind]}"
                )
        if rule.then is not None:
            self.check_params(rule.then, scope)

    def check_params(self, spec: n.ActionSpec, scope: "Scope") -> None:
        for _name, expr, _pos in spec.params:
            self.kind_of(expr, scope)

    def check_on_update(self, update: n.OnUpdate) -> None:
        scope = Scope(frozenset({update.event_type}))
        if update.condition is not None:
            self.check_condition(update.condition, scope, "`on ... when`")
        for item in update.sets:
            kind = self.kind_of(item.value, scope)
            if not self.out.profile_declared:
                continue
            declared = self.out.profile_schema.get(item.field)
            if declared is None:
                hint = field_hint(item.field, self.out.profile_schema)
                self.diag.error(item.pos, f"unknown profile field `{item.field}`{hint}")
                continue
            expected = schema_kind(declared)
            if expected != ANY and kind not in (ANY, "null", expected):
                self.diag.error(
                    item.value.pos,
                    f"profile field `{item.field}` is {declared}, but {describe(item.value)} is {ARTICLE[kind]}",
                )

    def check_condition(self, expr: n.Expr, scope: "Scope", what: str) -> None:
        kind = self.kind_of(expr, scope)
        if kind not in ("bool", "null", ANY):
            self.diag.error(
                expr.pos, f"{what} needs a condition (true or false), but {describe(expr)} is {ARTICLE[kind]}"
            )

    # -- expressions: kinds and names --

    def kind_of(self, expr: n.Expr, scope: "Scope") -> str:
        kind = getattr(self, f"kind_{type(expr).__name__}")(expr, scope)
        self.out.kinds[id(expr)] = kind
        return kind

    def kind_Literal(self, expr: n.Literal, scope: "Scope") -> str:
        return literal_kind(expr.value)

    def kind_ListExpr(self, expr: n.ListExpr, scope: "Scope") -> str:
        for item in expr.items:
            self.kind_of(item, scope)
        return "list"

    def kind_SegmentRef(self, expr: n.SegmentRef, scope: "Scope") -> str:
        segment = self.out.segments.get(expr.name)
        if segment is None:
            known = list(self.out.segments)
            hint = suggest(expr.name, known)
            what = "unknown segment" if not scope.past_type else "unknown name"
            if not hint and self.unparsed:
                hint = f" (if it is declared in {self.unparsed[0]}, fix the syntax error there first)"
            self.diag.error(expr.pos, f"{what} `{expr.name}`{hint}")
            return ANY
        return "bool"

    def kind_Field(self, expr: n.Field, scope: "Scope") -> str:
        if not expr.path:
            return "map"
        head = expr.path[0]
        if expr.root == "profile":
            kind = self.profile_field_kind(expr, head)
        elif expr.root == "event":
            kind = self.event_field_kind(expr, head, scope.event_types)
        else:
            kind = self.past_field_kind(expr, head, scope.past_type)
        if len(expr.path) > 1 and kind not in (ANY, "map"):
            self.diag.error(
                expr.pos,
                f"{describe(n.Field(expr.pos, expr.root, expr.path[:1]))} is {ARTICLE[kind]} and has no fields",
            )
            return ANY
        return kind if len(expr.path) == 1 else ANY

    def profile_field_kind(self, expr: n.Field, head: str) -> str:
        if not self.out.profile_declared:
            return ANY
        declared = self.out.profile_schema.get(head)
        if declared is None:
            hint = field_hint(head, self.out.profile_schema)
            self.diag.error(expr.pos, f"unknown profile field `{head}`{hint}")
            return ANY
        return schema_kind(declared)

    def event_field_kind(self, expr: n.Field, head: str, types: frozenset[str] | None) -> str:
        if head in BUILTIN_EVENT_FIELDS:
            return BUILTIN_EVENT_FIELDS[head]
        if not types or any(t not in self.out.event_schemas for t in types):
            return ANY
        kinds = {self.out.event_schemas[t].get(head) for t in types}
        if kinds == {None}:
            known = {f for t in types for f in self.out.event_schemas[t]}
            hint = field_hint(head, known)
            names = ", ".join(f"`{t}`" for t in sorted(types))
            self.diag.error(expr.pos, f"unknown field `{head}` of event {names}{hint}")
            return ANY
        if len(kinds) == 1:
            return schema_kind(kinds.pop())
        return ANY

    def past_field_kind(self, expr: n.Field, head: str, past_type: str | None) -> str:
        if head in BUILTIN_PAST_FIELDS:
            return BUILTIN_PAST_FIELDS[head]
        schema = self.out.event_schemas.get(past_type or "")
        if schema is None:
            return ANY
        declared = schema.get(head)
        if declared is None:
            hint = field_hint(head, schema)
            self.diag.error(expr.pos, f"unknown field `{head}` of event `{past_type}`{hint}")
            return ANY
        return schema_kind(declared)

    def kind_Member(self, expr: n.Member, scope: "Scope") -> str:
        kind = self.kind_of(expr.target, scope)
        if kind not in (ANY, "map", "null"):
            self.diag.error(expr.pos, f"{describe(expr.target)} is {ARTICLE[kind]} and has no field `{expr.name}`")
        return ANY

    def kind_Unary(self, expr: n.Unary, scope: "Scope") -> str:
        kind = self.kind_of(expr.operand, scope)
        if expr.op == "not":
            self.expect_condition(expr.operand, kind, "`not`")
            return "bool"
        if kind not in ("number", "null", ANY):
            self.diag.error(expr.pos, f"`-` takes a number, but {describe(expr.operand)} is {ARTICLE[kind]}")
        return "null" if kind == "null" else "number"

    def expect_condition(self, expr: n.Expr, kind: str, what: str) -> None:
        if kind not in ("bool", "null", ANY):
            self.diag.error(expr.pos, f"{what} takes true or false, but {describe(expr)} is {ARTICLE[kind]}")

    def kind_Binary(self, expr: n.Binary, scope: "Scope") -> str:
        left = self.kind_of(expr.left, scope)
        right = self.kind_of(expr.right, scope)
        op = expr.op
        if op in ("and", "or"):
            self.expect_condition(expr.left, left, f"`{op}`")
            self.expect_condition(expr.right, right, f"`{op}`")
            return "bool"
        if op in ("==", "!="):
            return "bool"
        if op in ("<", "<=", ">", ">="):
            self.check_ordering(expr, left, right)
            return "bool"
        if op in ("in", "not in"):
            self.check_membership(expr, left, right)
            return "bool"
        return self.arithmetic_kind(expr, left, right)

    def check_ordering(self, expr: n.Binary, left: str, right: str) -> None:
        for side, kind in ((expr.left, left), (expr.right, right)):
            if kind not in ("number", "string", "null", ANY):
                self.diag.error(
                    side.pos,
                    f"`{expr.op}` compares two numbers or two strings, but {describe(side)} is {ARTICLE[kind]}",
                )
                return
        if {left, right} == {"number", "string"}:
            self.diag.error(
                expr.pos,
                f"`{expr.op}` compares two numbers or two strings, but {describe(expr.left)} is "
                f"{ARTICLE[left]} and {describe(expr.right)} is {ARTICLE[right]}",
            )

    def check_membership(self, expr: n.Binary, left: str, right: str) -> None:
        if right not in ("list", "string", "null", ANY):
            self.diag.error(
                expr.right.pos,
                f"`{expr.op}` needs a list or a string on its right, but {describe(expr.right)} is {ARTICLE[right]}",
            )
        elif right == "string" and left not in ("string", "null", ANY):
            self.diag.error(
                expr.left.pos,
                f"`{expr.op}` a string looks for a substring, but {describe(expr.left)} is {ARTICLE[left]}",
            )

    def arithmetic_kind(self, expr: n.Binary, left: str, right: str) -> str:
        if "null" in (left, right):
            return "null"
        if expr.op == "+" and {left, right} <= {"string", ANY} and "string" in (left, right):
            return "string" if left == right else ANY
        allowed = ("number", ANY, "string") if expr.op == "+" else ("number", ANY)
        for side, kind in ((expr.left, left), (expr.right, right)):
            if kind not in allowed:
                what = "adds two numbers or joins two strings" if expr.op == "+" else "takes numbers"
                self.diag.error(side.pos, f"`{expr.op}` {what}, but {describe(side)} is {ARTICLE[kind]}")
                return ANY
        if {left, right} == {"number", "string"}:
            self.diag.error(expr.pos, "`+` joins two strings or adds two numbers, not a string and a number")
            return ANY
        return "number" if left == right == "number" else ANY

    def kind_IfExpr(self, expr: n.IfExpr, scope: "Scope") -> str:
        cond = self.kind_of(expr.cond, scope)
        self.expect_condition(expr.cond, cond, "`if`")
        then = self.kind_of(expr.then, scope)
        other = self.kind_of(expr.other, scope)
        if then == other:
            return then
        if "null" in (then, other):
            return ANY
        return ANY

    def kind_Call(self, expr: n.Call, scope: "Scope") -> str:
        kinds = [self.kind_of(arg, scope) for arg in expr.args]
        spec = FUNCTIONS.get(expr.name)
        if spec is None:
            hint = suggest(expr.name, list(FUNCTIONS) + list(AGGREGATE_NAMES))
            self.diag.error(expr.pos, f"unknown function `{expr.name}`{hint}")
            return ANY
        low, high, accepted, result = spec
        count = len(expr.args)
        if count < low or (high is not None and count > high):
            if high is None:
                wanted = f"at least {low}"
            elif low == high:
                wanted = str(low)
            else:
                wanted = f"{low} to {high}"
            plural = "" if wanted.endswith(" 1") or wanted == "1" else "s"
            self.diag.error(
                expr.pos,
                f"`{expr.name}` takes {wanted} argument{plural}, but {count} {'is' if count == 1 else 'are'} given",
            )
            return result
        for index, (arg, kind) in enumerate(zip(expr.args, kinds)):
            allowed = accepted[min(index, len(accepted) - 1)]
            if ANY in allowed or kind in ("null", ANY) or kind in allowed:
                continue
            names = " or ".join(sorted(ARTICLE[k] for k in allowed))
            self.diag.error(arg.pos, f"`{expr.name}` takes {names}, but {describe(arg)} is {ARTICLE[kind]}")
        if expr.name == "matches":
            self.check_pattern(expr)
        if expr.name == "coalesce":
            known = {k for k in kinds if k != "null"}
            return known.pop() if len(known) == 1 and ANY not in known else ANY
        return result

    def check_pattern(self, expr: n.Call) -> None:
        pattern = expr.args[1]
        if not (isinstance(pattern, n.Literal) and isinstance(pattern.value, str)):
            self.diag.error(pattern.pos, "the pattern of `matches` must be a string literal")
            return
        try:
            re.compile(pattern.value)
        except re.error as exc:
            self.diag.error(pattern.pos, f"bad regex {pattern.text}: {exc}")

    def kind_Aggregate(self, expr: n.Aggregate, scope: "Scope") -> str:
        if scope.past_type is not None:
            self.diag.error(expr.pos, "aggregates cannot be nested inside another aggregate's `where`")
        schema = self.out.event_schemas.get(expr.event_type)
        if expr.path and schema is not None:
            head = expr.path[0]
            declared = schema.get(head)
            if declared is None and head not in BUILTIN_PAST_FIELDS:
                hint = field_hint(head, schema)
                self.diag.error(expr.pos, f"unknown field `{head}` of event `{expr.event_type}`{hint}")
            elif (
                declared
                and expr.func in ("sum", "avg", "min", "max")
                and schema_kind(declared) not in ("number", ANY)
                and len(expr.path) == 1
            ):
                self.diag.error(
                    expr.pos,
                    f"`{expr.func}` adds up numbers, but `{expr.event_type}.{head}` is {ARTICLE[schema_kind(declared)]}",
                )
        if expr.where is not None:
            inner = Scope(scope.event_types, past_type=expr.event_type)
            self.check_condition(expr.where, inner, "`where`")
        if expr.func in ("avg", "min", "max", "since"):
            return ANY  # a number, or null when there is nothing
        return "number"


@dataclass(frozen=True)
class Scope:
    event_types: frozenset[str] | None  # the event types the expression can see; None: any
    past_type: str | None = None  # inside an aggregate's `where`: the past events' type


def segment_refs(expr: n.Expr):
    """Every segment an expression names (not through other segments)."""
    for node in walk(expr):
        if isinstance(node, n.SegmentRef):
            yield node.name


def and_operands(expr: n.Expr) -> list[n.Expr]:
    """The operands of a top-level ``and`` chain, in source order (one when there is none)."""
    out, stack = [], [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, n.Binary) and node.op == "and":
            stack.append(node.right)
            stack.append(node.left)
        else:
            out.append(node)
    return out


def walk(expr: n.Expr | None):
    """Every expression node under ``expr``, itself included, parents first."""
    if expr is None:
        return
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, n.Binary):
            stack.extend((node.right, node.left))
        elif isinstance(node, n.Unary):
            stack.append(node.operand)
        elif isinstance(node, n.IfExpr):
            stack.extend((node.other, node.then, node.cond))
        elif isinstance(node, n.Call):
            stack.extend(reversed(node.args))
        elif isinstance(node, n.ListExpr):
            stack.extend(reversed(node.items))
        elif isinstance(node, n.Member):
            stack.append(node.target)
        elif isinstance(node, n.Aggregate) and node.where is not None:
            stack.append(node.where)


def check(modules: list[n.Module], diagnostics: Diagnostics, unparsed: tuple[str, ...] = ()) -> CheckedRuleset:
    return Checker(diagnostics, unparsed).check(modules)


__all__ = ["CheckedRuleset", "Checker", "check", "event_types_of", "walk"]
