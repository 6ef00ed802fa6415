"""The asyncio store's read budget: Redis late is a degraded decision, this process late is not.

One ``Watchdog`` per link enforces the deadlines of all its waiting requests with one timer.
"""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from nba.engine.store import StoreUnavailable
from nba.engine.store.redis.async_io import LOOP_LAG_LIMIT, Pending, Watchdog


class Link:
    """What a Watchdog reads of its link: the waiting requests, and when bytes last came from Redis."""

    def __init__(self):
        self.waiting: deque[Pending] = deque()
        self.last_reply_at = float("-inf")


def watched_link() -> tuple[asyncio.AbstractEventLoop, Link, Watchdog]:
    """The running loop, a link with nothing waiting, and the watchdog of its deadlines."""
    loop = asyncio.get_running_loop()
    link = Link()
    return loop, link, Watchdog(loop, link)


def request(loop, link: Link, watchdog: Watchdog, timeout_s: float) -> asyncio.Future:
    pending = Pending(1, loop.create_future(), None, timeout_s, loop.time())
    link.waiting.append(pending)
    watchdog.watch(pending)
    return pending.future


async def replies_flowing(loop, link: Link, seconds: float) -> None:
    """Redis answering the requests written before ours, every 2 ms for ``seconds``."""
    end = loop.time() + seconds
    while loop.time() < end:
        link.last_reply_at = loop.time()
        await asyncio.sleep(0.002)


def test_a_request_fails_once_redis_has_answered_nothing_for_the_budget():
    async def scenario():
        loop, link, watchdog = watched_link()
        future = request(loop, link, watchdog, 0.01)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(future, 1.0)

    asyncio.run(scenario())


def test_a_request_waits_on_while_redis_answers_the_ones_before_it():
    async def scenario():
        loop, link, watchdog = watched_link()
        future = request(loop, link, watchdog, 0.01)
        await replies_flowing(loop, link, 0.08)  # eight budgets: more than the budget, less than the limit
        assert not future.done()
        with pytest.raises(StoreUnavailable):  # then Redis stops: it fails
            await asyncio.wait_for(future, 1.0)

    asyncio.run(scenario())


def test_a_request_fails_at_the_hard_limit_even_while_replies_flow():
    async def scenario():
        loop, link, watchdog = watched_link()
        started = loop.time()
        future = request(loop, link, watchdog, 0.01)
        flowing = asyncio.ensure_future(replies_flowing(loop, link, 5.0))
        try:
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(future, 2.0)
        finally:
            flowing.cancel()
        assert loop.time() - started >= 0.01 * LOOP_LAG_LIMIT

    asyncio.run(scenario())


def test_an_answered_request_is_left_alone():
    async def scenario():
        loop, link, watchdog = watched_link()
        future = request(loop, link, watchdog, 0.01)
        future.set_result(["reply"])
        await asyncio.sleep(0.03)
        assert watchdog.handle is None  # it fired, found nothing to wait for, and stopped
        return future.result()

    assert asyncio.run(scenario()) == ["reply"]


def test_each_request_has_its_own_deadline_under_one_timer():
    async def scenario():
        loop, link, watchdog = watched_link()
        patient = request(loop, link, watchdog, 0.2)
        hasty = request(loop, link, watchdog, 0.01)  # asked later, due sooner: the timer moves up
        answered = request(loop, link, watchdog, 0.01)
        answered.set_result(["reply"])
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(hasty, 1.0)
        assert not patient.done()  # the timer is set again, for the patient one
        assert watchdog.armed_for <= loop.time() + 0.2
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(patient, 1.0)
        assert answered.result() == ["reply"]

    asyncio.run(scenario())


def test_a_cancelled_caller_leaves_the_watchdog_nothing_to_do():
    async def scenario():
        loop, link, watchdog = watched_link()
        future = request(loop, link, watchdog, 0.01)
        future.cancel()
        await asyncio.sleep(0.03)
        assert future.cancelled() and watchdog.handle is None

    asyncio.run(scenario())
