"""The asyncio store's read budget: Redis late is a degraded decision, this process late is not.

One ``Watchdog`` per link enforces the deadlines of all its waiting requests with one timer.
The watchdog reads the time and sets its timer through the loop it is given; here that
loop is a ``ManualLoop`` whose clock moves only when the test moves it, and Redis answers
(``link.last_reply_at``) only when the test says so. So what each test sees is the same on
an idle machine and on a loaded one: nothing depends on how the test is scheduled.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import count
from typing import Callable

import pytest

from nba.engine.store import StoreUnavailable
from nba.engine.store.redis import async_io
from nba.engine.store.redis.async_io import LOOP_LAG_LIMIT, LOOP_TURNS, Pending, Watchdog

BUDGET_S = 0.01


@dataclass(order=True)
class Timer:
    at: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """The event loop as a Watchdog uses it (``time``, ``call_at``, ``call_soon``), on a
    clock that moves only when the test moves it."""

    MAX_TURNS = 10_000  # a watchdog that never settles fails the test instead of hanging it

    def __init__(self):
        self.now = 0.0
        self.timers: list[Timer] = []
        self.order = count()

    def time(self) -> float:
        return self.now

    def call_at(self, at: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(at, next(self.order), callback)
        heapq.heappush(self.timers, timer)
        return timer

    def call_soon(self, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.now, callback)  # on the next turn

    def turn(self) -> None:
        """One turn of the loop: the callbacks due by now, as they stood when it began."""
        due = []
        while self.timers and self.timers[0].at <= self.now:
            due.append(heapq.heappop(self.timers))
        for timer in due:
            if not timer.cancelled:
                timer.callback()

    def advance_to(self, at: float) -> None:
        """Moves the clock to ``at``, each callback run at its own time, and as many turns
        at each time as the callbacks ask for (an idle loop: turns take no time)."""
        for _ in range(self.MAX_TURNS):
            if not self.timers or self.timers[0].at > at:
                self.now = at
                return
            self.now = max(self.now, self.timers[0].at)
            self.turn()
        raise AssertionError(f"the loop never settled in {self.MAX_TURNS} turns")


class Link:
    """What a Watchdog reads of its link: the waiting requests, and when bytes last came from Redis."""

    def __init__(self):
        self.waiting: deque[Pending] = deque()
        self.last_reply_at = float("-inf")


def watched_link() -> tuple[ManualLoop, Link, Watchdog]:
    """A loop at time 0, a link with nothing waiting, and the watchdog of its deadlines."""
    loop = ManualLoop()
    link = Link()
    return loop, link, Watchdog(loop, link)


def request(loop: ManualLoop, link: Link, watchdog: Watchdog, timeout_s: float = BUDGET_S) -> Future:
    """A caller's request, written now, that waits at most ``timeout_s`` for Redis."""
    pending = Pending(1, Future(), None, timeout_s, loop.time())
    link.waiting.append(pending)
    watchdog.watch(pending)
    return pending.future


def failed_late(future: Future) -> bool:
    return future.done() and isinstance(future.exception(), StoreUnavailable)


def test_a_request_fails_once_redis_has_answered_nothing_for_the_budget():
    loop, link, watchdog = watched_link()
    future = request(loop, link, watchdog)
    loop.advance_to(BUDGET_S * 0.99)
    assert not future.done()
    loop.advance_to(BUDGET_S)
    assert failed_late(future)
    assert watchdog.handle is None  # nothing left to wait for


def test_past_its_deadline_a_request_waits_some_turns_of_the_loop_for_a_reply_in_the_socket():
    loop, link, watchdog = watched_link()
    future = request(loop, link, watchdog)
    loop.now = BUDGET_S
    loop.turn()  # the deadline's check
    for _ in range(LOOP_TURNS - 1):  # then a look on each next turn of the loop
        assert not future.done()
        loop.turn()
    assert not future.done()
    loop.turn()  # the LOOP_TURNS-th turn after the deadline without a reply: it fails
    assert failed_late(future)


def test_a_reply_read_in_those_turns_keeps_the_request_waiting():
    loop, link, watchdog = watched_link()
    future = request(loop, link, watchdog)
    loop.now = BUDGET_S
    loop.turn()  # the deadline passed: the watchdog looks again on the next turn
    link.last_reply_at = loop.now  # meanwhile the reader read a reply to an earlier request
    loop.advance_to(2 * BUDGET_S * 0.99)
    assert not future.done()  # Redis answers: the budget counts from its last reply
    loop.advance_to(2 * BUDGET_S)
    assert failed_late(future)


def test_a_request_waits_on_while_redis_answers_the_ones_before_it():
    loop, link, watchdog = watched_link()
    future = request(loop, link, watchdog)
    for step in range(1, 17):  # a reply every half budget, for eight budgets
        loop.advance_to(step * BUDGET_S / 2)
        assert not future.done()
        link.last_reply_at = loop.now
    loop.advance_to(8 * BUDGET_S + BUDGET_S * 0.99)  # then Redis stops answering
    assert not future.done()
    loop.advance_to(9 * BUDGET_S)  # a budget after its last reply (and the loop's turns): it fails
    assert failed_late(future)


def test_a_request_fails_at_the_hard_limit_even_while_replies_flow():
    loop, link, watchdog = watched_link()
    future = request(loop, link, watchdog)
    failed_at = []
    future.add_done_callback(lambda _future: failed_at.append(loop.now))
    step = 0
    while not future.done():
        assert step < 10 * LOOP_LAG_LIMIT, "the request never failed"
        step += 1
        loop.advance_to(step * BUDGET_S / 2)
        link.last_reply_at = loop.now  # Redis never stops answering the requests before it
    assert failed_late(future)
    assert failed_at == [pytest.approx(BUDGET_S * LOOP_LAG_LIMIT)]


def test_an_answered_request_is_left_alone():
    loop, link, watchdog = watched_link()
    future = request(loop, link, watchdog)
    future.set_result(["reply"])
    loop.advance_to(3 * BUDGET_S)
    assert watchdog.handle is None  # it fired, found nothing to wait for, and stopped
    assert future.result() == ["reply"]


def test_each_request_has_its_own_deadline_under_one_timer():
    loop, link, watchdog = watched_link()
    patient = request(loop, link, watchdog, 20 * BUDGET_S)
    hasty = request(loop, link, watchdog)  # asked later, due sooner: the timer moves up
    answered = request(loop, link, watchdog)
    answered.set_result(["reply"])
    assert watchdog.armed_for == BUDGET_S
    loop.advance_to(BUDGET_S)
    assert failed_late(hasty)
    assert not patient.done()
    assert watchdog.armed_for == 20 * BUDGET_S  # the timer is set again, for the patient one
    loop.advance_to(20 * BUDGET_S * 0.99)
    assert not patient.done()
    loop.advance_to(20 * BUDGET_S)
    assert failed_late(patient)
    assert answered.result() == ["reply"]


def test_a_cancelled_caller_leaves_the_watchdog_nothing_to_do():
    loop, link, watchdog = watched_link()
    future = request(loop, link, watchdog)
    future.cancel()
    loop.advance_to(3 * BUDGET_S)
    assert future.cancelled() and watchdog.handle is None


def test_on_a_real_event_loop_an_unanswered_request_fails():
    """The same watchdog on asyncio's loop (its timer and turns are the loop's own)."""

    async def scenario():
        loop = asyncio.get_running_loop()
        link = Link()
        watchdog = Watchdog(loop, link)
        pending = Pending(1, loop.create_future(), None, BUDGET_S, loop.time())
        link.waiting.append(pending)
        watchdog.watch(pending)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(pending.future, 30)  # a bound on a broken test, not a timing

    asyncio.run(scenario())


def test_the_timer_fires_at_most_once_per_check_interval(monkeypatch):
    """Deadlines closer together than the interval share one firing: a busy link is not
    checked at every loop turn."""
    monkeypatch.setattr(async_io, "CHECK_INTERVAL_S", 50 * BUDGET_S)
    loop, link, watchdog = watched_link()
    first = request(loop, link, watchdog, 5 * BUDGET_S)
    assert watchdog.armed_for == 5 * BUDGET_S  # nothing armed: the first deadline
    request(loop, link, watchdog, 6 * BUDGET_S)
    request(loop, link, watchdog, 7 * BUDGET_S)
    assert watchdog.armed_for == 5 * BUDGET_S  # later deadlines wait for that firing
    first.set_result(["reply"])
    loop.advance_to(5 * BUDGET_S)  # the others are not due: the next firing one interval on, not at their deadlines
    assert watchdog.armed_for == 55 * BUDGET_S
