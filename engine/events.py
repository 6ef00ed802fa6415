"""Step 1 of the decision: check an incoming event and read its declared fields as their kinds.

Plain, fast code (this runs for every event); the errors name the field and the reason.
The checked event is a new dict: the caller's map is never changed.
"""

from __future__ import annotations

import math
import re
import time as _time
from typing import Any, Callable, Mapping

from nba.dsl.twins import runtime as _runtime
from nba.engine.errors import EventError

parse_time = _runtime.parse_time

_BOOL_TEXT = {"true": True, "false": False}

# Where the engine runs on the wall clock, an event may be at most this far ahead of it
# (DSL.md, "The decision", step 1): a time from the far future would move its customer's
# windows (caps, trimming) for every later event.
DEFAULT_MAX_EVENT_AHEAD_S = 300.0


def check_event(raw, event_schemas: Mapping[str, Mapping[str, str]], now: float | None = None) -> dict:
    """The event with ``time`` as epoch seconds (``now``, or the clock's, when it has none)
    and declared fields read as their kinds. The engine checks through ``event_checker``,
    made once per ruleset."""
    return event_checker(event_schemas, now)(raw)


def event_checker(
    event_schemas: Mapping[str, Mapping[str, str]], now: float | None = None, max_ahead_s: float | None = None
) -> Callable[[Any], dict]:
    """The check of step 1 as a function of the raw event alone, with each event type's
    declared fields listed once instead of at every event. An event without a time is
    given ``now``, or the clock's time when the event is checked. With ``max_ahead_s``
    (the engine on the wall clock), a time later than the clock plus it is refused."""
    fields_of = {
        event_type: tuple((name, _AS_IS.get(declared), declared) for name, declared in schema.items())
        for event_type, schema in event_schemas.items()
        if schema
    }
    clock = _time.time if now is None else (lambda: now)
    # The latest time accepted: the clock plus ``max_ahead_s`` when last read. The clock only
    # moves on, so a time at or before it is accepted without reading the clock again.
    horizon = float("-inf")
    lowest, highest = -MAX_TIME, MAX_TIME  # locals of the closure: no global lookups per event

    def check(raw) -> dict:
        nonlocal horizon
        if raw.__class__ is dict:
            event = raw.copy()
        elif isinstance(raw, Mapping):
            event = dict(raw)
        else:
            raise EventError(None, f"an event is a map of fields, not {type(raw).__name__}")
        customer_id = event.get("customer_id")
        event_type = event.get("type")
        if customer_id.__class__ is not str or not customer_id:
            _refuse_id("customer_id", customer_id)
        if event_type.__class__ is not str or not event_type:
            _refuse_id("type", event_type)
        when = event.get("time")
        if when is None:
            event["time"] = clock()
        else:
            if when.__class__ is int:
                if not lowest < when < highest:
                    raise EventError("time", "must be a number of seconds within ±2^62")
            elif when.__class__ is not float or when != when or when in _INFINITE:
                when = event["time"] = event_time(when)
            if max_ahead_s is not None and when > horizon:
                horizon = clock() + max_ahead_s
                if when > horizon:
                    _refuse_ahead(when, clock(), max_ahead_s)
        fields = fields_of.get(event_type)
        if fields is not None:
            for name, as_is, declared in fields:
                value = event.get(name)
                if value is not None and value.__class__ is not as_is:
                    if value.__class__ is float and as_is is int and value - value == 0.0:
                        continue  # a finite float for a number or a time: kept as it is
                    event[name] = read_as(value, declared, name)
        return event

    return check


_INFINITE = (float("inf"), float("-inf"))
MAX_TIME = 1 << 62  # an int time beyond it is no time (and no C double compares it exactly)
# The class whose values ``read_as`` returns unchanged for each declared kind (the common case,
# checked without calling it); any other value goes through ``read_as``.
_AS_IS = {"string": str, "number": int, "bool": bool, "time": int, "list": list}


def _refuse_ahead(when: float, now: float, max_ahead_s: float) -> None:
    raise EventError(
        "time",
        f"is {when - now:.0f} s after the engine's clock; an event may be at most "
        f"{max_ahead_s:g} s ahead of it (max_event_ahead_s)",
    )


def _refuse_id(key: str, value) -> None:
    if value is None:
        raise EventError(key, "is required")
    if value.__class__ is not str:
        raise EventError(key, f"must be a string, not {_kind(value)}")
    raise EventError(key, "must not be empty")


_SECONDS = {f"{n:02d}": n for n in range(60)}
_MINUTES: dict[str, int | float] = {}  # "YYYY-MM-DDTHH:MM:" -> parse_time of it at second 00
_MINUTES_KEPT = 4096


def parse_event_time(text: str):
    """``parse_time(text)``, with the usual form ``YYYY-MM-DDTHH:MM:SSZ`` read from a cache of
    the minutes seen (``parse_time`` takes several microseconds; events of a stream share
    their minutes). The minute is still read, and checked, by ``parse_time``, once."""
    if len(text) == 20 and text[19] == "Z":
        seconds = _SECONDS.get(text[17:19])
        if seconds is not None:
            minute = text[:17]
            base = _MINUTES.get(minute)
            if base is None:
                base = parse_time(minute + "00Z")
                if base is None:
                    return parse_time(text)
                if len(_MINUTES) >= _MINUTES_KEPT:
                    _MINUTES.clear()
                _MINUTES[minute] = base
            return base + seconds
    return parse_time(text)


def event_time(value, now: float | None = None) -> float:
    if value is None:
        return _time.time() if now is None else now
    if value.__class__ is str:
        parsed = parse_event_time(value)
        if parsed is None:
            raise EventError("time", f"must be an RFC 3339 time or a number of seconds, not {value!r}")
        return parsed
    if value.__class__ in (int, float):
        if not math.isfinite(value):
            raise EventError("time", "must be a finite number of seconds")
        if value.__class__ is int and not -MAX_TIME < value < MAX_TIME:
            raise EventError("time", "must be a number of seconds within ±2^62")
        return value
    raise EventError("time", f"must be an RFC 3339 time or a number of seconds, not {_kind(value)}")


def read_as(value, declared: str, name: str):
    """``value`` as the schema type ``declared``; EventError naming ``name`` when it cannot be."""
    cls = value.__class__
    if declared == "string":
        if cls is str:
            return value
    elif declared == "number":
        if cls is int or (cls is float and math.isfinite(value)):
            return value
        if cls is str:
            number = _number_text(value)
            if number is not None:
                return number
    elif declared == "bool":
        if cls is bool:
            return value
        if cls is str and value in _BOOL_TEXT:
            return _BOOL_TEXT[value]
    elif declared == "time":
        if cls is int or (cls is float and math.isfinite(value)):
            return value
        if cls is str:
            parsed = parse_time(value)
            if parsed is not None:
                return parsed
    elif declared == "list":
        if cls is list:
            return value
        if cls is tuple:
            return list(value)
    if cls is float and declared in ("number", "time"):
        raise EventError(name, f"must be a finite number, not {value!r}")
    raise EventError(name, f"must be {_ARTICLE[declared]}, not {_kind(value)} ({value!r})")


# A number written in decimal with ASCII digits (float() also reads "1_000", "inf" and
# other scripts' digits, which no event means as a number).
_NUMBER_TEXT = re.compile(
    r"\s*([+-]?)(?:([0-9]+)|[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?:\.[0-9]*)?[eE][+-]?[0-9]+|\.[0-9]+[eE][+-]?[0-9]+)\s*"
)


def _number_text(text: str):
    match = _NUMBER_TEXT.fullmatch(text)
    if match is None:
        return None
    if match.group(2) is not None:
        return int(match.group(1) + match.group(2))
    number = float(text)
    return number if math.isfinite(number) else None


_ARTICLE = {
    "string": "a string",
    "number": "a number",
    "bool": "a bool (true or false)",
    "time": "a time (RFC 3339 or seconds since the epoch)",
    "list": "a list",
}


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a map"
    return type(value).__name__
