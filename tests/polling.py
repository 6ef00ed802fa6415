"""Waiting in a test for something that happens elsewhere (a thread, a process, the event loop).

Every wait polls a condition until it holds and fails the test, naming what it waited for,
when it does not hold within a deadline: a broken test fails, it never hangs. The deadline
is generous (``PATIENCE_S``): it bounds a broken test's time on a loaded machine, it is not
a timing assertion.

    wait_until(lambda: srv.stats()["connections"] == 0, "the server closing the connection")
    responses = await eventually(transport.responses, "a response")
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

PATIENCE_S = 30.0

What = str | Callable[[], str]  # what the test waits for, or a function that says it (and what it saw)


def wait_until(
    condition: Callable[[], Any],
    what: What,
    *,
    timeout_s: float = PATIENCE_S,
    interval_s: float = 0.02,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """The first true value of ``condition()``, called every ``interval_s``, blocking.

    An exception of ``ignoring`` raised by ``condition`` counts as not yet (the last one is
    chained to the failure); any other fails the test at once. After ``timeout_s`` without
    a true value: AssertionError naming ``what``.
    """
    deadline = _Deadline(what, timeout_s)
    while True:
        value = deadline.poll(condition, ignoring)
        if value:
            return value
        deadline.check()
        time.sleep(interval_s)


async def eventually(
    condition: Callable[[], Any],
    what: What,
    *,
    timeout_s: float = PATIENCE_S,
    interval_s: float = 0.005,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """``wait_until`` on the running event loop: the loop runs other tasks between polls.

    ``condition`` may be a coroutine function (its result is awaited).
    """
    deadline = _Deadline(what, timeout_s)
    while True:
        value = deadline.poll(condition, ignoring)
        if asyncio.iscoroutine(value):
            value = await deadline.poll_awaited(value, ignoring)
        if value:
            return value
        deadline.check()
        await asyncio.sleep(interval_s)


class _Deadline:
    """One wait's deadline, and what its condition last gave (for the failure's message)."""

    def __init__(self, what: What, timeout_s: float):
        self.what = what
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s
        self.last: Any = None
        self.error: BaseException | None = None

    def poll(self, condition: Callable[[], Any], ignoring: tuple) -> Any:
        try:
            self.last = condition()
        except ignoring as error:
            self.last, self.error = None, error
        return self.last

    async def poll_awaited(self, awaitable, ignoring: tuple) -> Any:
        try:
            self.last = await awaitable
        except ignoring as error:
            self.last, self.error = None, error
        return self.last

    def check(self) -> None:
        if time.monotonic() < self.at:
            return
        what = self.what() if callable(self.what) else self.what
        last = repr(self.last)
        if len(last) > 500:
            last = last[:500] + "..."
        raise AssertionError(f"waited {self.timeout_s:g} s for {what}; last seen: {last}") from self.error
