"""The tests' own waiting helpers (tests/polling.py): a wait ends in a value or a failure, never a hang."""

from __future__ import annotations

import asyncio

import pytest

from polling import eventually, wait_until


def test_a_wait_gives_the_conditions_first_true_value():
    values = iter([0, None, [], ["found"], ["later"]])
    assert wait_until(lambda: next(values), "a list", interval_s=0) == ["found"]


def test_a_wait_that_never_ends_fails_the_test_saying_what_it_waited_for():
    with pytest.raises(AssertionError, match=r"waited 0.05 s for the moon; last seen: \[\]"):
        wait_until(lambda: [], "the moon", timeout_s=0.05, interval_s=0.01)


def test_exceptions_a_wait_ignores_count_as_not_yet_and_others_end_it():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return "up"

    assert wait_until(flaky, "the server", interval_s=0, ignoring=(ConnectionError,)) == "up"
    with pytest.raises(AssertionError) as failure:
        wait_until(down, "the server", timeout_s=0.05, ignoring=(OSError,))
    assert isinstance(failure.value.__cause__, OSError)  # the last ignored error is kept
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, "a number", ignoring=(OSError,))


def down():
    raise OSError("down")


def test_an_async_wait_lets_the_loop_run_and_awaits_coroutine_conditions():
    async def scenario():
        box = []
        asyncio.get_running_loop().call_later(0.01, box.append, "set")
        assert await eventually(lambda: box, "the callback") == ["set"]

        async def ping():
            return "pong"

        assert await eventually(ping, "a pong") == "pong"
        with pytest.raises(AssertionError, match="the callback saying so"):
            await eventually(lambda: False, lambda: "the callback saying so", timeout_s=0.05)

    asyncio.run(scenario())
