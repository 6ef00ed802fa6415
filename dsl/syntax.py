"""Rule text -> parse tree (Lark, LALR) -> syntax tree (``dsl.nodes``).

Syntax errors are turned into messages a marketer can act on: what was found, what
was expected in words (never a grammar token name) and, for common slips, what to
type instead.
"""

from __future__ import annotations

import math
import re
import sys
from copy import copy
from functools import lru_cache
from pathlib import Path

import lark
from lark import Token, Tree
from lark.parsers.lalr_parser_state import ParserState

from nba.dsl import nodes as n
from nba.dsl.runtime import parse_time
from nba.dsl.source import Diagnostics, Position, suggest

RESERVED = frozenset(
    "rule segment policy on set when then via with priority cap per holdout active from to end "
    "and or not in within where if else true false null default profile event all".split()
)
AGGREGATES = frozenset({"count", "sum", "avg", "min", "max", "distinct", "since"})
FIELD_AGGREGATES = frozenset({"sum", "avg", "min", "max", "distinct"})
SCHEMA_TYPES = ("string", "number", "bool", "time", "list")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
CLAUSE_KEYWORDS = ("priority", "when", "then", "cap", "holdout", "active")
DECLARATION_KEYWORDS = ("rule", "segment", "policy", "on", "default", "profile", "event")


@lru_cache(maxsize=1)
def parser() -> lark.Lark:
    grammar = (Path(__file__).with_name("grammar.lark")).read_text(encoding="utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=False,
        maybe_placeholders=False,
        cache=False,
    )


def parse_module(path: str, text: str, diagnostics: Diagnostics) -> n.Module | None:
    """Parse one file. On a syntax error, report it and return None (the file is not checked)."""
    try:
        tree = parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        pos, message = describe_syntax_error(exc, text)
        diagnostics.error(Position(path, *pos), message)
        return None
    return TreeBuilder(path, diagnostics).module(tree)


# ---- values of literal tokens ----------------------------------------------------------


# Every number in a ruleset lies within the range of a 64-bit float (about ±1.8e308):
# whole numbers are kept exact, decimals are rounded to the nearest float. A literal or a
# constant expression beyond it is a load error (dsl/folding.py checks the expressions):
# at decision time such a number could not be mixed with a fractional one, and Python
# would not even print a whole number of more than 4,300 digits.
MAX_NUMBER = sys.float_info.max
MAX_WHOLE_DIGITS = len(str(int(MAX_NUMBER)))  # 309: more digits is always out of range
TOO_LARGE = "is too large: numbers in rules lie within ±1.8e308"


def in_number_range(value) -> bool:
    """Whether a number is finite and within ±MAX_NUMBER (ints compared exactly)."""
    if value.__class__ is float:
        return math.isfinite(value)
    return -MAX_NUMBER <= value <= MAX_NUMBER


def duration_seconds(text: str) -> int | None:
    """Seconds of a duration literal; None when it is out of range (see MAX_NUMBER)."""
    digits = text[:-1].lstrip("0")
    if len(digits) > MAX_WHOLE_DIGITS:
        return None
    seconds = int(digits or "0") * DURATION_UNITS[text[-1]]
    return seconds if seconds <= MAX_NUMBER else None


def number_value(text: str) -> int | float | None:
    """The value of a number literal; None when it is out of range (see MAX_NUMBER)."""
    if "." in text:
        value = float(text)
        return value if math.isfinite(value) else None
    digits = text.lstrip("-").lstrip("0")
    if len(digits) > MAX_WHOLE_DIGITS:  # before int(): its time is quadratic, and it stops at 4,300 digits
        return None
    value = int(text)
    return value if in_number_range(value) else None


def time_value(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time literal (no zone: UTC); None if invalid."""
    return parse_time(text)


def _shorten(text: str, limit: int = 40) -> str:
    """A literal as written, shortened for messages."""
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-8:]} ({len(text):,} characters)"


_ESCAPE = re.compile(r"\\(.)")
_ESCAPED = frozenset('"\\nt')


def string_value(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# ---- parse tree -> syntax tree ----------------------------------------------------------


class TreeBuilder:
    """Walks a Lark tree top-down, so that it knows when it is inside an aggregate's ``where``."""

    def __init__(self, path: str, diagnostics: Diagnostics):
        self.path = path
        self.diagnostics = diagnostics

    def pos(self, item: Tree | Token) -> Position:
        """The place of a token, or of a node's first token (every node has one)."""
        while not isinstance(item, Token):
            item = item.children[0]
        return Position(self.path, item.line, item.column)

    def error(self, item: Tree | Token, message: str) -> None:
        self.diagnostics.error(self.pos(item), message)

    def string(self, token: Token) -> str:
        """A string literal's value; an escape other than \\" \\\\ \\n \\t is an error."""
        text = str(token)
        for match in _ESCAPE.finditer(text):
            if match.group(1) in _ESCAPED:
                continue
            pos = Position(self.path, token.line, token.column + match.start())
            self.diagnostics.error(
                pos,
                f'unknown escape `{match.group()}` in a string: write \\\\ for a backslash (escapes: \\" \\\\ \\n \\t)',
            )
        return string_value(text)

    def identifier(self, token: Token, what: str) -> str:
        name = str(token)
        if name in RESERVED:
            self.error(token, f"`{name}` is a reserved word and cannot be used as {what}")
        return name

    # -- declarations --

    def module(self, tree: Tree) -> n.Module:
        module = n.Module(self.path)
        for child in tree.children:
            handler = getattr(self, f"decl_{child.data}")
            node = handler(child)
            if node is not None:
                module.declarations.append(node)
        return module

    def decl_rule(self, tree: Tree) -> n.Rule:
        children = list(tree.children)
        name_token = children.pop(0)
        rule_id = self.identifier(name_token, "a rule id")
        title = None
        if children and isinstance(children[0], Token) and children[0].type == "STRING":
            title = self.string(children.pop(0))
        clauses: dict[str, object] = {}
        for clause in children:
            kind = clause.data.removesuffix("_clause")
            if kind in clauses:
                self.error(clause, f"rule `{rule_id}` has more than one `{kind}` clause")
                continue
            clauses[kind] = getattr(self, f"clause_{kind}")(clause)
        pos = self.pos(name_token)
        for required in ("when", "then"):
            if required not in clauses:
                self.diagnostics.error(pos, f"rule `{rule_id}` has no `{required}` clause")
        active = clauses.get("active") or (None, None)
        return n.Rule(
            pos=pos,
            id=rule_id,
            title=title,
            priority=clauses.get("priority"),
            when=clauses.get("when"),
            then=clauses.get("then"),
            cap=clauses.get("cap"),
            holdout=clauses.get("holdout"),
            active_from=active[0],
            active_to=active[1],
        )

    def clause_priority(self, tree: Tree) -> n.Expr:
        return self.expr(tree.children[0])

    def clause_when(self, tree: Tree) -> n.Expr:
        return self.expr(tree.children[0])

    def clause_then(self, tree: Tree) -> n.ActionSpec:
        return self.action_spec(tree)

    def clause_cap(self, tree: Tree) -> n.Cap:
        limit_token, duration_token = tree.children
        return n.Cap(self.pos(tree), self.cap_limit(limit_token, "cap"), self.window(duration_token, "a cap"))

    def clause_holdout(self, tree: Tree) -> float:
        token = tree.children[0]
        percent = float(str(token)[:-1])
        if not 0 <= percent <= 100:
            self.error(token, f"holdout {_shorten(str(token))} is outside 0-100%")
        return percent

    def clause_active(self, tree: Tree) -> tuple[float | None, float | None]:
        times = [self.time_literal(token) for token in tree.children]
        start = times[0]
        end = times[1] if len(times) > 1 else None
        if start is not None and end is not None and end <= start:
            self.error(tree.children[1], "`active ... to` must be later than `from`")
        return start, (end if end is not None else math.inf)

    def window(self, token: Token, what: str) -> int:
        """A duration that is a window `(t - D, t]`: one of 0 holds nothing, so it is an error."""
        seconds = self.duration(token)
        if seconds <= 0:
            self.error(token, f"the window of {what} is empty: `{token}` holds nothing; give at least 1s")
        return seconds

    def number(self, token: Token) -> int | float:
        """A number literal's value; one out of range is reported, and read as 0."""
        value = number_value(str(token))
        if value is None:
            self.error(token, f"the number `{_shorten(str(token))}` {TOO_LARGE}")
            return 0
        return value

    def duration(self, token: Token) -> int:
        """A duration literal's seconds; one out of range is reported, and read as 1s."""
        seconds = duration_seconds(str(token))
        if seconds is None:
            self.error(token, f"the duration `{_shorten(str(token))}` {TOO_LARGE} seconds")
            return 1
        return seconds

    def cap_limit(self, token: Token, what: str) -> int:
        value = number_value(str(token))
        if value is None:
            self.error(token, f"the limit `{_shorten(str(token))}` {TOO_LARGE}")
            return 1
        if value <= 0:
            self.error(token, f"a {what} must allow at least 1 (found {token})")
        elif value != int(value):
            self.error(token, f"a {what} counts whole contacts (found {token})")
        return int(value)

    def action_spec(self, tree: Tree) -> n.ActionSpec:
        action_tree, *rest = tree.children
        token = action_tree.children[0]
        action = self.string(token) if token.type == "STRING" else self.identifier(token, "an action")
        channel = None
        params: tuple = ()
        for part in rest:
            if part.data == "via":
                channel = self.identifier(part.children[0], "a channel")
            else:
                params = self.params(part)
        return n.ActionSpec(self.pos(tree), action, channel, params)

    def params(self, tree: Tree) -> tuple:
        seen: set[str] = set()
        out = []
        for param in tree.children:
            name_token, value = param.children
            name = self.identifier(name_token, "a parameter name")
            if name in seen:
                self.error(name_token, f"parameter `{name}` is given twice")
            seen.add(name)
            out.append((name, self.expr(value), self.pos(name_token)))
        return tuple(out)

    def decl_segment(self, tree: Tree) -> n.Segment:
        name_token, condition = tree.children
        return n.Segment(self.pos(name_token), self.identifier(name_token, "a segment id"), self.expr(condition))

    def decl_policy(self, tree: Tree) -> n.Policy:
        channel_token, limit_token, duration_token = tree.children
        channel = None if channel_token.type == "ALL" else self.identifier(channel_token, "a channel")
        return n.Policy(
            self.pos(channel_token),
            channel,
            self.cap_limit(limit_token, "policy"),
            self.window(duration_token, "a policy"),
        )

    def decl_on_update(self, tree: Tree) -> n.OnUpdate:
        type_token, *rest = tree.children
        condition = None
        sets = []
        for part in rest:
            if isinstance(part, Tree) and part.data == "set_clause":
                field_tree, value = part.children
                field_token = field_tree.children[0]
                sets.append(n.SetField(self.pos(field_token), str(field_token), self.expr(value)))
            else:
                condition = self.expr(part)
        event_type = self.identifier(type_token, "an event type")
        return n.OnUpdate(self.pos(type_token), event_type, condition, tuple(sets))

    def decl_default(self, tree: Tree) -> n.Default:
        return n.Default(self.pos(tree), self.action_spec(tree))

    def decl_profile_schema(self, tree: Tree) -> n.ProfileSchema:
        return n.ProfileSchema(self.pos(tree), self.schema_fields(tree.children[-1]))

    def decl_event_schema(self, tree: Tree) -> n.EventSchema:
        _event, type_token, fields = tree.children
        event_type = self.identifier(type_token, "an event type")
        return n.EventSchema(self.pos(type_token), event_type, self.schema_fields(fields))

    def schema_fields(self, tree: Tree) -> tuple[n.SchemaField, ...]:
        out = []
        seen: set[str] = set()
        for field_tree in tree.children:
            name_tree, type_token = field_tree.children
            name_token = name_tree.children[0]
            if str(name_token) in seen:
                self.error(name_token, f"field `{name_token}` is declared twice")
            seen.add(str(name_token))
            if str(type_token) not in SCHEMA_TYPES:
                hint = suggest(str(type_token), SCHEMA_TYPES)
                self.error(
                    type_token,
                    f"unknown type `{type_token}`{hint} (types: string, number, bool, time, list)",
                )
            out.append(n.SchemaField(self.pos(name_token), str(name_token), str(type_token)))
        return tuple(out)

    # -- expressions --

    def expr(self, item: Tree | Token, in_where: bool = False) -> n.Expr:
        return getattr(self, f"expr_{item.data}")(item, in_where)

    def time_literal(self, token: Token) -> float | None:
        value = time_value(str(token))
        if value is None:
            self.error(token, f"`{token}` is not a valid time (write 2026-11-27 or 2026-11-27T09:30:00Z)")
        return value

    def expr_number(self, tree: Tree, in_where: bool) -> n.Expr:
        token = tree.children[0]
        return n.Literal(self.pos(tree), self.number(token), _shorten(str(token)))

    def expr_duration(self, tree: Tree, in_where: bool) -> n.Expr:
        token = tree.children[0]
        return n.Literal(self.pos(tree), self.duration(token), _shorten(str(token)))

    def expr_time(self, tree: Tree, in_where: bool) -> n.Expr:
        token = tree.children[0]
        return n.Literal(self.pos(tree), self.time_literal(token), str(token))

    def expr_string(self, tree: Tree, in_where: bool) -> n.Expr:
        token = tree.children[0]
        return n.Literal(self.pos(tree), self.string(token), str(token))

    def expr_true(self, tree: Tree, in_where: bool) -> n.Expr:
        return n.Literal(self.pos(tree), True, "true")

    def expr_false(self, tree: Tree, in_where: bool) -> n.Expr:
        return n.Literal(self.pos(tree), False, "false")

    def expr_null(self, tree: Tree, in_where: bool) -> n.Expr:
        return n.Literal(self.pos(tree), None, "null")

    def expr_event_root(self, tree: Tree, in_where: bool) -> n.Expr:
        return n.Field(self.pos(tree), "event", ())

    def expr_profile_root(self, tree: Tree, in_where: bool) -> n.Expr:
        return n.Field(self.pos(tree), "profile", ())

    def expr_name(self, tree: Tree, in_where: bool) -> n.Expr:
        token = tree.children[0]
        if in_where:
            return n.Field(self.pos(tree), "past", (str(token),))
        return n.SegmentRef(self.pos(tree), self.identifier(token, "a segment name"))

    def expr_list(self, tree: Tree, in_where: bool) -> n.Expr:
        return n.ListExpr(self.pos(tree), tuple(self.expr(item, in_where) for item in tree.children[1:]))

    def expr_member(self, tree: Tree, in_where: bool) -> n.Expr:
        target_tree, name_tree = tree.children
        name = str(name_tree.children[0])
        target = self.expr(target_tree, in_where)
        if isinstance(target, n.Field):
            return n.Field(target.pos, target.root, target.path + (name,))
        return n.Member(self.pos(tree), target, name)

    def expr_negate(self, tree: Tree, in_where: bool) -> n.Expr:
        return n.Unary(self.pos(tree), "-", self.expr(tree.children[1], in_where))

    def expr_not_op(self, tree: Tree, in_where: bool) -> n.Expr:
        return n.Unary(self.pos(tree), "not", self.expr(tree.children[1], in_where))

    def expr_binary(self, tree: Tree, in_where: bool) -> n.Expr:
        left, op, right = tree.children
        return n.Binary(self.pos(op), str(op), self.expr(left, in_where), self.expr(right, in_where))

    def expr_compare(self, tree: Tree, in_where: bool) -> n.Expr:
        return self.expr_binary(tree, in_where)

    def expr_in_op(self, tree: Tree, in_where: bool) -> n.Expr:
        left, right = tree.children
        return n.Binary(self.pos(tree), "in", self.expr(left, in_where), self.expr(right, in_where))

    def expr_not_in_op(self, tree: Tree, in_where: bool) -> n.Expr:
        left, _not, right = tree.children
        return n.Binary(self.pos(tree), "not in", self.expr(left, in_where), self.expr(right, in_where))

    def expr_and_op(self, tree: Tree, in_where: bool) -> n.Expr:
        return self.logic_chain(tree, "and", in_where)

    def expr_or_op(self, tree: Tree, in_where: bool) -> n.Expr:
        return self.logic_chain(tree, "or", in_where)

    def logic_chain(self, tree: Tree, op: str, in_where: bool) -> n.Expr:
        """``a or b or c ...`` as a balanced tree of ``or``s.

        The meaning is the same (operands are tested left to right until one decides) but
        the depth is log2 of the length, so a chain of hundreds of tests still loads (the
        parser's left-nested tree would exhaust Python's recursion on the way down).
        """
        operands = []
        node = tree
        while isinstance(node, Tree) and node.data == f"{op}_op":
            left, right = node.children
            operands.append(right)
            node = left
        operands.append(node)
        operands.reverse()
        return self.balanced(op, [self.expr(item, in_where) for item in operands])

    def balanced(self, op: str, operands: list[n.Expr]) -> n.Expr:
        if len(operands) == 1:
            return operands[0]
        middle = len(operands) // 2
        left = self.balanced(op, operands[:middle])
        return n.Binary(left.pos, op, left, self.balanced(op, operands[middle:]))

    def expr_if_expr(self, tree: Tree, in_where: bool) -> n.Expr:
        cond, then, other = (self.expr(child, in_where) for child in tree.children[1:])
        return n.IfExpr(self.pos(tree), cond, then, other)

    def expr_call(self, tree: Tree, in_where: bool) -> n.Expr:
        name_token, *rest = tree.children
        name = str(name_token)
        pos = self.pos(name_token)
        if not rest:
            if name in AGGREGATES - {"min", "max"}:
                self.error(name_token, f"`{name}` counts past events: write `{self.aggregate_example(name)}`")
                return n.Literal(pos, None, "null")
            return n.Call(pos, name, ())
        args_tree = rest[0]
        if args_tree.data == "args" and not self.is_aggregate_without_window(name, args_tree.children):
            return n.Call(pos, name, tuple(self.expr(arg, in_where) for arg in args_tree.children))
        return self.aggregate(name_token, args_tree)

    @staticmethod
    def is_aggregate_without_window(name: str, args: list) -> bool:
        """``count(purchase)``, ``max(purchase.amount)``: an aggregate missing its ``within``.

        ``min`` and ``max`` are functions too; one argument of the form ``TYPE.FIELD``
        (not a segment's field: segments have none) makes them aggregates.
        """
        if name not in AGGREGATES:
            return False
        if name not in ("min", "max"):
            return True
        if len(args) != 1:
            return False
        node = args[0]
        if not (isinstance(node, Tree) and node.data == "member"):
            return False
        while isinstance(node, Tree) and node.data == "member":
            node = node.children[0]
        return isinstance(node, Tree) and node.data == "name"

    def aggregate(self, name_token: Token, args_tree: Tree) -> n.Expr:
        func = str(name_token)
        pos = self.pos(name_token)
        target, *parts = args_tree.children
        if args_tree.data == "args":  # an aggregate missing its `within`: its only part is the target
            parts = []
        where = None
        window = None
        window_text = ""
        for part in parts:
            if part.data == "where_part":
                where = self.expr(part.children[0], in_where=True)
            else:
                window = self.window(part.children[0], f"`{func}`")
                window_text = str(part.children[0]) if isinstance(part.children[0], Token) else ""
        if func not in AGGREGATES:
            self.error(
                name_token,
                f"`{func}` is not an aggregate; `where` and `within` go only inside "
                "count, sum, avg, min, max, distinct or since",
            )
            return n.Literal(pos, None, "null")
        if window is None:
            self.error(name_token, f"`{func}` needs a window: add `within` and a duration, e.g. `within 7d`")
            window = 0
        event_type, path = self.aggregate_target(func, target)
        return n.Aggregate(pos, func, event_type or "", path, where, window, window_text)

    def aggregate_target(self, func: str, target: Tree) -> tuple[str | None, tuple[str, ...]]:
        chain: list[str] = []
        node = target
        while isinstance(node, Tree) and node.data == "member":
            chain.insert(0, str(node.children[1].children[0]))
            node = node.children[0]
        if not (isinstance(node, Tree) and node.data == "name"):
            self.error(target, f"`{func}` counts past events: write `{self.aggregate_example(func)}`")
            return None, ()
        event_type = str(node.children[0])
        if func in FIELD_AGGREGATES and not chain:
            self.error(target, f"`{func}` needs an event field: write `{self.aggregate_example(func)}`")
        if func not in FIELD_AGGREGATES and chain:
            self.error(target, f"`{func}` takes an event type, not a field: write `{self.aggregate_example(func)}`")
            chain = []
        return event_type, tuple(chain)

    @staticmethod
    def aggregate_example(func: str) -> str:
        if func in FIELD_AGGREGATES:
            return f"{func}(purchase.amount within 30d)"
        return f"{func}(purchase within 30d)"


# ---- friendly syntax errors -------------------------------------------------------------

_PUNCTUATION = {
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "COMMA": "`,`",
    "DOT": "`.`",
    "COLON": "`:`",
    "EQUAL": "`=`",
}
_WORDS = {
    "NAME": "a name",
    "STRING": 'a string in double quotes ("...")',
    "NUMBER": "a number",
    "SIGNED_NUMBER": "a number",
    "DURATION": "a duration such as 30m, 24h or 7d",
    "TIME": "a time such as 2026-11-27 or 2026-11-27T09:30:00Z",
    "PERCENT": "a percentage such as 10%",
    "$END": "the end of the file",
}
_OPERATORS = {"COMPARE", "PLUS", "MINUS", "MUL_OP", "IN", "NOT", "AND", "OR", "DOT", "LPAR"}
_EXPRESSION_STARTS = {
    "NAME",
    "NUMBER",
    "STRING",
    "DURATION",
    "TIME",
    "LPAR",
    "LSQB",
    "MINUS",
    "TRUE",
    "FALSE",
    "NULL",
    "EVENT",
    "PROFILE",
    "NOT",
    "IF",
}
_CHARACTER_HINTS = {
    "'": 'strings use double quotes: "like this"',
    "&": "write `and` instead of `&&`",
    "|": "write `or` instead of `||`",
    "!": "write `not` to negate, or `!=` for not equal",
}


def _keyword(name: str) -> str | None:
    word = name.lower()
    return word if word in RESERVED else None


def _found(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    return f"`{_shorten(str(token))}`"


def _expected_words(expected: set[str]) -> str:
    expected = set(expected)
    keywords = {name for name in expected if _keyword(name)}
    if "NAME" in expected and len(keywords) >= len(RESERVED) - 3:
        expected -= keywords  # a field name, where reserved words are names too: "a name"
    parts: list[str] = []
    if expected & _EXPRESSION_STARTS and len(expected & _EXPRESSION_STARTS) >= 5:
        parts.append("a value or expression")
        expected -= _EXPRESSION_STARTS
    if len(expected & _OPERATORS) >= 3:
        parts.append("an operator")
        expected -= _OPERATORS
    clauses = [k for k in CLAUSE_KEYWORDS if k.upper() in expected]
    if len(clauses) >= 3:
        parts.append("a clause (" + ", ".join(f"`{c}`" for c in clauses) + ")")
        expected -= {c.upper() for c in clauses}
    declarations = [k for k in DECLARATION_KEYWORDS if k.upper() in expected]
    if len(declarations) >= 3:
        parts.append("a declaration (" + ", ".join(f"`{d}`" for d in declarations) + ")")
        expected -= {d.upper() for d in declarations}
    for name in sorted(expected):
        if name in _WORDS:
            word = _WORDS[name]
        elif name in _PUNCTUATION:
            word = _PUNCTUATION[name]
        elif name == "COMPARE":
            word = "a comparison (==, !=, <, <=, >, >=)"
        elif name == "MUL_OP":
            word = "`*`, `/` or `%`"
        elif name == "PLUS":
            word = "`+`"
        elif name == "MINUS":
            word = "`-`"
        elif _keyword(name):
            word = f"`{_keyword(name)}`"
        else:
            word = name.lower()
        if word not in parts:
            parts.append(word)
    if not parts:
        return "something else"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _acceptable(exc: lark.exceptions.UnexpectedInput, text: str) -> set[str]:
    """The tokens that can really come next where the error is.

    Lark reports the parser state after the failing token has already forced some
    reductions, and LALR's lookaheads list tokens that only follow the same phrase
    elsewhere (after an expression: `,`, `)`, `else`, `within`, ...). So the text is parsed
    again up to the failing token, and each token is tried on a copy of the state there.
    """
    token = getattr(exc, "token", None)
    state = _state_before(text, getattr(token, "start_pos", None))
    if state is not None:
        found = _tokens_accepted(state)
        if found:
            return found
    return set(getattr(exc, "expected", None) or ())


def _state_before(text: str, stop: int | None) -> ParserState | None:
    """The parser state just before the token at ``stop`` (None: before the end of the text)."""
    interactive = parser().parse_interactive(text)
    state = interactive.parser_state
    try:
        for token in interactive.lexer_thread.lex(state):
            if stop is not None and token.start_pos >= stop:
                break
            state.feed_token(token)
    except lark.exceptions.UnexpectedInput:
        pass  # the lexer stopped at the failing text: the state is the one before it
    return state if isinstance(state, ParserState) else None


def _tokens_accepted(state: ParserState) -> set[str]:
    conf = copy(state.parse_conf)
    conf.callbacks = {}
    found = set()
    for name in state.parse_conf.states[state.position]:
        if not name.isupper():
            continue
        probe = state.copy(deepcopy_values=False)
        probe.parse_conf = conf
        try:
            probe.feed_token(Token(name, ""), is_end=name == "$END")
        except (lark.exceptions.UnexpectedToken, AssertionError):
            continue
        found.add(name)
    return found


def describe_syntax_error(exc: lark.exceptions.UnexpectedInput, text: str) -> tuple[tuple[int, int], str]:
    """The position and a marketer-readable message for a Lark syntax error."""
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        hint = _CHARACTER_HINTS.get(char)
        if char == '"':
            message = 'this string is not closed: add the closing `"` on the same line'
        elif hint:
            message = f"unexpected `{char}`: {hint}"
        else:
            message = f"unexpected character `{char}`"
            expected = {t for t in exc.allowed or ()}
            if expected:
                message += f"; expected {_expected_words(expected)}"
        return (exc.line, exc.column), message
    token: Token = exc.token  # UnexpectedToken / UnexpectedEOF
    expected = _acceptable(exc, text)
    if token.type == "$END" or not getattr(token, "line", None):
        pos = _end_of_text(text)
        if "END" in expected:
            return pos, "unexpected end of the file: a `rule` or `on` block is missing its `end`"
        return pos, f"unexpected end of the file; expected {_expected_words(expected)}"
    pos = (token.line, token.column)
    return pos, _token_message(token, expected)


def _end_of_text(text: str) -> tuple[int, int]:
    """Just after the last character that is not white space, so the caret has a line to sit under."""
    body = text.rstrip()
    line = body.count("\n") + 1
    column = len(body) - (body.rfind("\n") + 1) + 1
    return line, column


_DECLARATION_TOKENS = frozenset(k.upper() for k in DECLARATION_KEYWORDS)


def _names_only(token: Token, expected: set[str]) -> bool:
    """A reserved word where only a name (a rule id, a channel, ...) can come, not an expression."""
    return bool(_keyword(token.type)) and "NAME" in expected and not expected & (_EXPRESSION_STARTS - {"NAME"})


def _token_message(token: Token, expected: set[str]) -> str:
    found = _found(token)
    if token.type == "EQUAL" and "COMPARE" in expected:
        return "unexpected `=`: to compare, write `==`"
    if _names_only(token, expected):
        return f"`{token}` is a reserved word and cannot be used as a name here"
    if token.type == "WHERE":
        return '`where` only goes inside an aggregate, as in `count(page_view where category == "shoes" within 30m)`'
    if token.type in ("COMPARE", "IN") and not (expected & {"COMPARE", "IN"}) and expected & {"AND", "OR"}:
        return f"unexpected {found}: comparisons do not chain; write `a < b and b < c`"
    if token.type in _DECLARATION_TOKENS and "END" in expected:
        return f"unexpected {found}: the `rule` or `on` block before it is missing its `end`"
    if token.type == "NAME":
        keywords = [kw for kw in map(_keyword, expected) if kw]
        close = suggest(str(token), keywords)
        if close and ("END" in expected or expected & {k.upper() for k in DECLARATION_KEYWORDS}):
            return f"unexpected {found}{close}"
    if token.type in ("NUMBER", "SIGNED_NUMBER") and "DURATION" in expected:
        return f"unexpected {found}: a duration needs a unit, e.g. `{token}m`, `{token}h` or `{token}d`"
    if token.type == "IF" and "IF" not in expected:
        return "an `if` inside an expression needs parentheses: `(if C then A else B)`"
    return f"unexpected {found}; expected {_expected_words(expected)}"
