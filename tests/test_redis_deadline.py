"""The asyncio store's read budget: Redis late is a degraded decision, this process late is not."""

from __future__ import annotations

import asyncio

import pytest

from engine.state import StoreUnavailable
from engine.store.redis.async_io import LOOP_LAG_LIMIT, Deadline


class Link:
    """What a Deadline reads of its link: when bytes last came from Redis."""

    def __init__(self):
        self.last_reply_at = float("-inf")


async def replies_flowing(loop, link: Link, seconds: float) -> None:
    """Redis answering the requests written before ours, every 2 ms for ``seconds``."""
    end = loop.time() + seconds
    while loop.time() < end:
        link.last_reply_at = loop.time()
        await asyncio.sleep(0.002)


def test_a_request_fails_once_redis_has_answered_nothing_for_the_budget():
    async def scenario():
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        Deadline(loop, future, 0.01, Link())
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(future, 1.0)

    asyncio.run(scenario())


def test_a_request_waits_on_while_redis_answers_the_ones_before_it():
    async def scenario():
        loop = asyncio.get_running_loop()
        link = Link()
        future = loop.create_future()
        Deadline(loop, future, 0.01, link)
        await replies_flowing(loop, link, 0.08)  # eight budgets: more than the budget, less than the limit
        assert not future.done()
        with pytest.raises(StoreUnavailable):  # then Redis stops: it fails
            await asyncio.wait_for(future, 1.0)

    asyncio.run(scenario())


def test_a_request_fails_at_the_hard_limit_even_while_replies_flow():
    async def scenario():
        loop = asyncio.get_running_loop()
        link = Link()
        future = loop.create_future()
        started = loop.time()
        Deadline(loop, future, 0.01, link)
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
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        deadline = Deadline(loop, future, 0.01, Link())
        future.set_result(["reply"])
        await asyncio.sleep(0.03)
        deadline.cancel()
        return future.result()

    assert asyncio.run(scenario()) == ["reply"]
