"""The value semantics of the rule language at decision time (DSL.md, "Expressions").

Compiled rules call these helpers wherever the kinds of the operands are only known
at decision time; where the compiler knows a kind it inlines a fast path and calls a
helper only for the unusual case. Every helper follows the same rules:

- values are ``None``, ``bool``, ``int``/``float`` (numbers), ``str``, ``list`` and
  ``dict`` (maps); a ``bool`` is never a number;
- a wrong kind raises ``EvalError`` (the rule does not match; the trace names it);
- ``null`` operands follow DSL.md: comparisons are false, arithmetic and functions
  give ``null`` (``coalesce`` aside).

This module is plain Python so that Cython can compile it unchanged (see setup.py).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Context, Decimal


class EvalError(Exception):
    """A decision-time error in one rule's expression."""


NUMBER_CLASSES = frozenset({int, float})


def kind(value) -> str:
    cls = value.__class__
    if value is None:
        return "null"
    if cls is bool:
        return "bool"
    if cls is int or cls is float:
        return "number"
    if cls is str:
        return "string"
    if cls is list or cls is tuple:
        return "list"
    if cls is dict:
        return "map"
    return cls.__name__


def kind_article(value) -> str:
    """``a string``, ``a number``, ``null``, ...: the kind of a value, for messages."""
    return _article(value)


def _article(value) -> str:
    name = kind(value)
    return {
        "null": "null",
        "bool": "a bool",
        "number": "a number",
        "string": "a string",
        "list": "a list",
        "map": "a map",
    }.get(name, "a " + name)


def is_number(value) -> bool:
    cls = value.__class__
    return cls is int or cls is float


# ---- equality and ordering ------------------------------------------------------------


def eq(a, b) -> bool:
    """``==``: values of different kinds are unequal; ``1 == 1.0``; ``null == null``."""
    ca = a.__class__
    cb = b.__class__
    if ca is cb:
        if ca is list or ca is tuple:
            return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))
        if ca is dict:
            return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)
        return a == b
    if (ca is int or ca is float) and (cb is int or cb is float):
        return a == b
    if (ca is list or ca is tuple) and (cb is list or cb is tuple):
        return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))
    return False


def ne(a, b) -> bool:
    return not eq(a, b)


def _ordered(a, b, op: str) -> bool:
    """True when ``a`` and ``b`` can be ordered; False on a null; EvalError otherwise."""
    if a is None or b is None:
        return False
    ca = a.__class__
    cb = b.__class__
    if (ca is int or ca is float) and (cb is int or cb is float):
        return True
    if ca is str and cb is str:
        return True
    raise EvalError(f"`{op}` compares two numbers or two strings, not {_article(a)} and {_article(b)}")


def lt(a, b) -> bool:
    return _ordered(a, b, "<") and a < b


def le(a, b) -> bool:
    return _ordered(a, b, "<=") and a <= b


def gt(a, b) -> bool:
    return _ordered(a, b, ">") and a > b


def ge(a, b) -> bool:
    return _ordered(a, b, ">=") and a >= b


def member(a, b) -> bool:
    """``a in b``: membership in a list (by ``==``) or a substring in a string."""
    if a is None or b is None:
        return False
    cb = b.__class__
    if cb is list or cb is tuple or cb is frozenset:
        if a.__class__ is str:
            return a in b
        for item in b:
            if eq(a, item):
                return True
        return False
    if cb is str:
        if a.__class__ is str:
            return a in b
        raise EvalError(f"`in` a string looks for a substring, not {_article(a)}")
    raise EvalError(f"`in` needs a list or a string on its right, not {_article(b)}")


def not_member(a, b) -> bool:
    if a is None or b is None:
        return False
    return not member(a, b)


# ---- logic -------------------------------------------------------------------------------


def truth(value, what: str = "a condition") -> bool:
    """A condition's value: booleans as they are, null as false, anything else an error."""
    if value is True:
        return True
    if value is False or value is None:
        return False
    raise EvalError(f"{what} needs true or false, not {_article(value)}")


# ---- arithmetic ---------------------------------------------------------------------------


def _numbers(a, b, op: str) -> None:
    ca = a.__class__
    cb = b.__class__
    if not ((ca is int or ca is float) and (cb is int or cb is float)):
        raise EvalError(f"`{op}` takes numbers, not {_article(a)} and {_article(b)}")


def add(a, b):
    if a is None or b is None:
        return None
    if a.__class__ is str and b.__class__ is str:
        return a + b
    _numbers(a, b, "+")
    return a + b


def sub(a, b):
    if a is None or b is None:
        return None
    _numbers(a, b, "-")
    return a - b


def mul(a, b):
    if a is None or b is None:
        return None
    _numbers(a, b, "*")
    return a * b


def div(a, b):
    if a is None or b is None:
        return None
    _numbers(a, b, "/")
    if b == 0:
        return None
    return a / b


def mod(a, b):
    if a is None or b is None:
        return None
    _numbers(a, b, "%")
    if b == 0:
        return None
    return a % b


def neg(a):
    if a is None:
        return None
    if a.__class__ is int or a.__class__ is float:
        return -a
    raise EvalError(f"`-` takes a number, not {_article(a)}")


_LARGEST_FLOAT = 1.7976931348623157e308


def rank(value):
    """A computed priority, as it is: a whole number beyond the range of a float (from an
    event) could not be ranked among the others, so it is the rule's error."""
    if value.__class__ is int and not -_LARGEST_FLOAT <= value <= _LARGEST_FLOAT:
        raise EvalError("`priority` is too large to rank (numbers lie within ±1.8e308)")
    return value


def get(target, name: str):
    """``target.name``: null when ``target`` is null or not a map."""
    if target.__class__ is dict:
        return target.get(name)
    return None


# ---- functions -----------------------------------------------------------------------------


def _want(value, classes: tuple, function: str, what: str) -> None:
    if value.__class__ not in classes:
        raise EvalError(f"`{function}` takes {what}, not {_article(value)}")


def fn_lower(s):
    if s is None:
        return None
    _want(s, (str,), "lower", "a string")
    return s.lower()


def fn_upper(s):
    if s is None:
        return None
    _want(s, (str,), "upper", "a string")
    return s.upper()


def fn_len(x):
    if x is None:
        return None
    _want(x, (str, list, tuple, dict), "len", "a string, a list or a map")
    return len(x)


def fn_contains(x, y):
    if x is None or y is None:
        return None
    if x.__class__ is str:
        if y.__class__ is not str:
            raise EvalError(f"`contains` looks for a string in a string, not {_article(y)}")
        return y in x
    if x.__class__ is list or x.__class__ is tuple:
        for item in x:
            if eq(item, y):
                return True
        return False
    raise EvalError(f"`contains` takes a list or a string, not {_article(x)}")


def fn_starts_with(s, p):
    if s is None or p is None:
        return None
    _want(s, (str,), "starts_with", "strings")
    _want(p, (str,), "starts_with", "strings")
    return s.startswith(p)


def fn_ends_with(s, p):
    if s is None or p is None:
        return None
    _want(s, (str,), "ends_with", "strings")
    _want(p, (str,), "ends_with", "strings")
    return s.endswith(p)


def fn_matches(s, pattern):
    """``pattern`` is compiled once, when the ruleset loads."""
    if s is None:
        return None
    _want(s, (str,), "matches", "a string")
    return pattern.search(s) is not None


def _number_arg(x, function: str) -> None:
    if not (x.__class__ is int or x.__class__ is float):
        raise EvalError(f"`{function}` takes numbers, not {_article(x)}")


def fn_abs(x):
    if x is None:
        return None
    _number_arg(x, "abs")
    return abs(x)


def fn_min(*args):
    if None in args:
        return None
    for x in args:
        _number_arg(x, "min")
    return min(args)


def fn_max(*args):
    if None in args:
        return None
    for x in args:
        _number_arg(x, "max")
    return max(args)


def fn_round(x, digits=0):
    """Rounds halves away from zero, on the decimal digits the number is written with."""
    if x is None or digits is None:
        return None
    _number_arg(x, "round")
    _number_arg(digits, "round")
    if x.__class__ is float and not math.isfinite(x):
        return x
    # A float has fewer than 400 decimals, so more places change nothing (and would cost).
    places = max(min(int(digits), 400), -100_000)
    value = Decimal(repr(x))
    # Enough significant digits for the result, however large the number or `digits`
    # (the default context's 28 made round(1e30) fail).
    context = Context(prec=max(value.adjusted() + places + 2, 1), rounding=ROUND_HALF_UP)
    rounded = value.quantize(Decimal(1).scaleb(-places), context=context)
    return int(rounded) if places <= 0 else float(rounded)


def fn_floor(x):
    if x is None:
        return None
    _number_arg(x, "floor")
    return math.floor(x) if math.isfinite(x) else x


def fn_ceil(x):
    if x is None:
        return None
    _number_arg(x, "ceil")
    return math.ceil(x) if math.isfinite(x) else x


def fn_coalesce(*args):
    for x in args:
        if x is not None:
            return x
    return None


# RFC 3339: a date, or a date and a time (seconds optional, as in time literals), with
# `T`, `t` or a space between and a zone of `Z`, `z` or `+hh:mm`/`-hh:mm` (none: UTC).
# Python's fromisoformat alone also takes ISO week dates, basic formats and `+hhmm`.
_RFC_3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)


def parse_time(text: str):
    """Seconds since the epoch of an RFC 3339 string (no zone: UTC); None if it is not one."""
    if _RFC_3339.fullmatch(text) is None:
        return None
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    value = moment.timestamp()
    return int(value) if value == int(value) else value


def fn_time(x):
    if x is None:
        return None
    if x.__class__ is int or x.__class__ is float:
        return x
    if x.__class__ is str:
        value = parse_time(x)
        if value is None:
            raise EvalError(f"`time` takes an RFC 3339 time, not {x!r}")
        return value
    raise EvalError(f"`time` takes a string or a number, not {_article(x)}")


def _utc(t, function: str) -> datetime:
    _number_arg(t, function)
    try:
        return datetime.fromtimestamp(t, tz=timezone.utc)
    except (OverflowError, OSError, ValueError) as exc:
        raise EvalError(f"`{function}`: {t} is not a time") from exc


def fn_hour(t):
    if t is None:
        return None
    return _utc(t, "hour").hour


def fn_weekday(t):
    if t is None:
        return None
    return _utc(t, "weekday").isoweekday()


def fn_days(x):
    if x is None:
        return None
    _number_arg(x, "days")
    return x / 86400


FUNCTIONS = {
    "lower": fn_lower,
    "upper": fn_upper,
    "len": fn_len,
    "contains": fn_contains,
    "starts_with": fn_starts_with,
    "ends_with": fn_ends_with,
    "matches": fn_matches,
    "abs": fn_abs,
    "min": fn_min,
    "max": fn_max,
    "round": fn_round,
    "floor": fn_floor,
    "ceil": fn_ceil,
    "coalesce": fn_coalesce,
    "time": fn_time,
    "hour": fn_hour,
    "weekday": fn_weekday,
    "days": fn_days,
}

BINARY = {
    "==": eq,
    "!=": ne,
    "<": lt,
    "<=": le,
    ">": gt,
    ">=": ge,
    "in": member,
    "not in": not_member,
    "+": add,
    "-": sub,
    "*": mul,
    "/": div,
    "%": mod,
}


# ---- aggregates ----------------------------------------------------------------------------


def distinct_key(value):
    """A hashable key under which ``10`` and ``10.0`` are one value and ``true`` is not ``1``."""
    cls = value.__class__
    if cls is bool:
        return ("bool", value)
    if cls is list or cls is tuple:
        return ("list", tuple(distinct_key(v) for v in value))
    if cls is dict:
        return ("map", tuple(sorted((k, distinct_key(v)) for k, v in value.items())))
    return value


def column(columns: dict, name: str, times: list) -> list:
    """A history column; all nulls when past events were kept without that field."""
    values = columns.get(name)
    if values is None or len(values) != len(times):
        return [None] * len(times)
    return values


class EvalContext:
    """What generated code reads for one decision, with its per-decision caches.

    ``event`` and ``profile``: the event and the customer's profile (maps); ``now``: the
    decision's time, the event's ``time`` (seconds since the epoch); ``event_type``: the
    event's type; ``history``: the customer's past events by type (each with ``times`` and
    ``columns``, sorted by time); ``aggregates`` and ``segments``: the values computed so
    far in this decision, by generated aggregate function and by segment name.
    """

    __slots__ = ("event", "profile", "now", "event_type", "history", "aggregates", "segments")

    def __init__(self, event: dict, profile: dict, now, event_type: str, history: dict):
        self.event = event
        self.profile = profile
        self.now = now
        self.event_type = event_type
        self.history = history
        self.aggregates = {}
        self.segments = {}


def new_context(event: dict, profile: dict, now, event_type, history) -> EvalContext:
    """``EvalContext(...)``, made without a generic call in the Cython twin."""
    context = EvalContext.__new__(EvalContext)
    context.event = event
    context.profile = profile
    context.now = now
    context.event_type = event_type
    context.history = history
    context.aggregates = {}
    context.segments = {}
    return context


def compile_pattern(pattern: str):
    return re.compile(pattern)
