"""JSON text for people and pipes (`nba decide`, `nba replay`): never invalid JSON.

JSON has no infinity or NaN, which an undeclared event field can carry into a
decision's parameters or trace: they print as null.
"""

from __future__ import annotations

import json
import math


def dumps(value, indent: int | None = None) -> str:
    """JSON text of ``value``; an infinite or NaN number prints as null."""
    try:
        return json.dumps(value, indent=indent, ensure_ascii=False, default=_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(
            plain_numbers(value), indent=indent, ensure_ascii=False, default=_json_default, allow_nan=False
        )


def _json_default(value):
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def plain_numbers(value):
    """JSON has no infinity or NaN: print them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_numbers(v) for v in value]
    return value
