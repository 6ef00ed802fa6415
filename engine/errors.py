"""Errors the engine raises to its callers."""

from __future__ import annotations


class EngineError(Exception):
    """Base of the engine's errors. ``code`` is the socket protocol's error code."""

    code = "internal"


class EventError(EngineError, ValueError):
    """An event that fails the checks of DSL.md's decision step 1; nothing was recorded."""

    code = "bad_event"

    def __init__(self, field: str | None, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class RequestError(EngineError, ValueError):
    """A request with a bad argument (limit, customer id, profile)."""

    code = "bad_request"


class StateError(EngineError):
    """What Redis holds for a customer cannot be read (another service wrote it there);
    the message names the key. Decisions for that customer are degraded instead."""

    code = "bad_state"


class StoreError(EngineError):
    """The state store could not be reached for a profile call (a decision is degraded instead)."""

    code = "unavailable"
