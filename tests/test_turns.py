"""engine/turns.py: one customer's decisions take turns in arrival order; others never wait."""

from __future__ import annotations

import asyncio

import pytest

from nba.engine.turns import CustomerTurns, turns_for


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_first_decision_of_a_customer_goes_at_once_and_leaves_nothing_behind():
    async def scenario():
        turns = CustomerTurns(asyncio.get_running_loop())
        assert turns.take("c1") is None
        assert turns.take("c2") is None  # another customer never waits
        turns.give_back("c1")
        turns.give_back("c2")
        return turns.waiting

    assert run(scenario()) == {}


def test_one_customers_decisions_run_one_at_a_time_in_arrival_order():
    order: list[str] = []

    async def decide(turns: CustomerTurns, name: str, pause: float) -> None:
        turn = turns.take("c1")
        if turn is not None:
            await turns.wait(turn, "c1")
        try:
            order.append(f"{name} starts")
            await asyncio.sleep(pause)
            order.append(f"{name} ends")
        finally:
            turns.give_back("c1")

    async def scenario():
        turns = CustomerTurns(asyncio.get_running_loop())
        await asyncio.gather(decide(turns, "a", 0.02), decide(turns, "b", 0.0), decide(turns, "c", 0.01))
        return turns.waiting

    assert run(scenario()) == {}
    assert order == ["a starts", "a ends", "b starts", "b ends", "c starts", "c ends"]


def test_callers_with_tasks_and_callers_with_callbacks_share_one_line():
    order: list[str] = []

    def awaiting(turns: CustomerTurns, name: str) -> asyncio.Task:
        turn = turns.take("c1")  # in line now, as decide_async takes it before its first await

        async def decide() -> None:
            if turn is not None:
                await turns.wait(turn, "c1")
            order.append(name)
            await asyncio.sleep(0.005)
            turns.give_back("c1")

        return asyncio.ensure_future(decide())

    def called_back(turns: CustomerTurns, name: str) -> None:
        def start() -> None:
            order.append(name)
            asyncio.get_running_loop().call_later(0.005, turns.give_back, "c1")

        turns.take_then("c1", start)

    async def scenario():
        turns = CustomerTurns(asyncio.get_running_loop())
        called_back(turns, "first")  # its turn at once: started before take_then returns
        assert order == ["first"]
        second = awaiting(turns, "second")
        called_back(turns, "third")
        fourth = awaiting(turns, "fourth")
        called_back(turns, "fifth")
        await asyncio.gather(second, fourth)
        while "fifth" not in order:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        return turns.waiting

    assert run(scenario()) == {}
    assert order == ["first", "second", "third", "fourth", "fifth"]


async def three_in_line() -> tuple[CustomerTurns, asyncio.Future, asyncio.Task]:
    """One customer's first decision in flight, a second waiting (as a task), a third in line."""
    turns = CustomerTurns(asyncio.get_running_loop())
    assert turns.take("c1") is None
    second = turns.take("c1")
    third = turns.take("c1")
    waiting_second = asyncio.ensure_future(turns.wait(second, "c1"))
    await asyncio.sleep(0)
    return turns, third, waiting_second


def test_a_waiter_cancelled_before_its_turn_is_skipped():
    async def scenario():
        turns, third, waiting_second = await three_in_line()
        waiting_second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting_second
        turns.give_back("c1")  # the first is done: the turn skips the cancelled second
        await asyncio.wait_for(turns.wait(third, "c1"), 1)
        turns.give_back("c1")
        return turns.waiting

    assert run(scenario()) == {}


def test_a_waiter_cancelled_once_its_turn_was_handed_over_passes_it_on():
    async def scenario():
        turns, third, waiting_second = await three_in_line()
        turns.give_back("c1")  # the turn goes to the second ...
        waiting_second.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiting_second
        await asyncio.wait_for(turns.wait(third, "c1"), 1)  # the third is not stuck
        turns.give_back("c1")
        return turns.waiting

    assert run(scenario()) == {}


def test_each_event_loop_has_its_own_turns():
    by_loop: dict = {}
    first = asyncio.new_event_loop()
    second = asyncio.new_event_loop()
    try:
        a = turns_for(by_loop, first)
        assert turns_for(by_loop, first) is a
        first.close()
        b = turns_for(by_loop, second)
        assert b is not a and list(by_loop) == [second]  # a closed loop's turns are dropped
    finally:
        second.close()
