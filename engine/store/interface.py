"""The store interface: where customers' state lives, as the engine sees it.

A store reads one customer's ``CustomerState`` (what the ruleset's ``StateNeeds`` ask for)
in one round trip and commits a decision's ``StateWrite`` in at most one more, checking
its caps atomically (nba.engine.state holds these values). Implementations:
``MemoryStore`` (nba.engine.store.memory) and ``RedisStore`` (nba.engine.store.redis);
``open_store`` picks one.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, Awaitable, Callable

from nba.dsl.needs import StateNeeds
from nba.engine.state import CustomerState, StateWrite


class StoreUnavailable(Exception):
    """The store could not be reached (or answered too late), or what it holds for the
    customer cannot be read; decide without state (a degraded decision)."""


Reply = Callable[[Any, "BaseException | None"], Any]  # then(result, None) or then(None, error)


def run_then(work: Awaitable, then: Reply) -> None:
    """Run ``work`` in a task of the running loop; hand its result or exception to ``then``."""
    task = asyncio.get_running_loop().create_task(work)
    RUNNING.add(task)  # the loop keeps only weak references to tasks
    task.add_done_callback(lambda done: hand_over(done, then))


def hand_over(task: asyncio.Task, then: Reply) -> None:
    RUNNING.discard(task)
    if task.cancelled():
        then(None, asyncio.CancelledError())
        return
    error = task.exception()
    if error is not None:
        then(None, error)
    else:
        then(task.result(), None)


RUNNING: set = set()  # the tasks of run_then, until done


class Store(ABC):
    """Where customers' state lives. Implementations: ``MemoryStore``, ``RedisStore``."""

    # A lock the engine holds from a decision's read to its commit, for a store whose reads
    # hand out structures its commits change in place; None: decisions run side by side.
    decision_lock = None

    @abstractmethod
    def read(self, customer_id: str, needs: StateNeeds, time: float) -> CustomerState:
        """Read the profile, the needed history and the contacts, in one round trip.

        History and contacts may hold entries newer than ``time`` (events arriving out
        of order); the decision filters by window. Raises ``StoreUnavailable``.
        """

    @abstractmethod
    def commit(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        """Record ``write`` atomically; False (and nothing written) when a cap check fails.

        Trims history and contacts older than the retention the needs give.
        Raises ``StoreUnavailable``.
        """

    async def read_async(self, customer_id: str, needs: StateNeeds, time: float) -> CustomerState:
        return self.read(customer_id, needs, time)

    async def commit_async(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        return self.commit(customer_id, needs, write)

    # For an event loop's caller with no task to suspend (the socket server's decisions):
    # the result is handed to ``then(result, None)``, or ``then(None, error)`` (any
    # exception; ``StoreUnavailable`` as the awaited method raises it), exactly once, from
    # the event loop and perhaps before the method returns. A store whose requests can be
    # answered by callbacks (RedisStore) needs no task; these run the awaited methods in one.

    def read_then(self, customer_id: str, needs: StateNeeds, time: float, then: Reply) -> None:
        """``read_async``, its result handed to ``then``."""
        run_then(self.read_async(customer_id, needs, time), then)

    def commit_then(self, customer_id: str, needs: StateNeeds, write: StateWrite, then: Reply) -> None:
        """``commit_async``, its result handed to ``then``."""
        run_then(self.commit_async(customer_id, needs, write), then)

    @abstractmethod
    def get_profile(self, customer_id: str, needs: StateNeeds) -> dict:
        """The customer's profile ({} when unknown), values read through the schema."""

    @abstractmethod
    def put_profile(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        """Replace the customer's profile."""

    async def get_profile_async(self, customer_id: str, needs: StateNeeds) -> dict:
        return self.get_profile(customer_id, needs)

    async def put_profile_async(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        self.put_profile(customer_id, profile, needs)

    def close(self) -> None:  # noqa: B027 - a store with nothing to release keeps this no-op
        """Release connections."""

    async def close_async(self) -> None:
        self.close()
