"""What a decision reads from and writes to a customer's state, and the store interface.

Data flow: the compiled ruleset says what it needs (``StateNeeds``, from nba.dsl.needs); a store reads
one ``CustomerState`` for a customer in one round trip; the decision procedure
computes a ``StateWrite``; the store commits it in at most one more round trip,
checking the caps atomically (``CapCheck``) so that no cap or policy is exceeded
when several processes decide for one customer at once.

Times are floats: seconds since the Unix epoch.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from nba.dsl.needs import StateNeeds  # what a ruleset needs is the language's to say


class StoreUnavailable(Exception):
    """The store could not be reached (or answered too late), or what it holds for the
    customer cannot be read; decide without state (a degraded decision)."""


@dataclass(slots=True)
class History:
    """One event type's past events, sorted by time, stored column-wise.

    ``columns[f][i]`` is field ``f`` of the event at ``times[i]`` (``None`` when missing).
    """

    times: list[float] = field(default_factory=list)
    columns: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)


@dataclass(slots=True, unsafe_hash=True)  # built per decision: not frozen (see engine/decision.py)
class Contact:
    """An action given to a customer and recorded for caps and policies."""

    time: float
    rule: str
    action: str
    channel: str | None


NEVER_TRIMMED = float("-inf")


@dataclass(slots=True)
class CustomerState:
    """One customer's state as a decision reads it.

    ``kept_from``: the time of the newest contact ever trimmed away (``-inf``: none was).
    A cap or policy whose window starts before it cannot be checked (a contact it counts
    may be gone), so its rule is passed over.
    """

    profile: dict
    history: dict[str, History]  # event type -> history (missing type: none)
    contacts: list[Contact]  # sorted by time
    kept_from: float = NEVER_TRIMMED


def empty_state() -> CustomerState:
    return CustomerState(profile={}, history={}, contacts=[])


@dataclass(slots=True, unsafe_hash=True)
class CapCheck:
    """A limit that must still hold once a write's contacts are added.

    Counts the customer's contacts in ``(time - window, time + window)`` that match the scope
    (``"rule"``: contacts of rule ``key``; ``"channel"``: contacts via channel ``key``;
    ``"all"``: every contact), the new ones included; the write is refused when the
    count exceeds ``limit``.
    """

    scope: str
    key: str | None
    limit: int
    window: float

    def matches(self, contact: Contact) -> bool:
        if self.scope == "all":
            return True
        if self.scope == "rule":
            return contact.rule == self.key
        return contact.channel == self.key

    def holds(self, existing: list[Contact], new: list[Contact], time: float, kept_from: float = NEVER_TRIMMED) -> bool:
        start = time - self.window
        if start < kept_from:  # a contact this window counts may have been trimmed
            return False
        stop = time + self.window
        count = 0
        for contact in existing:
            if start < contact.time < stop and self.matches(contact):
                count += 1
        for contact in new:
            if self.matches(contact):
                count += 1
        return count <= self.limit


@dataclass(slots=True)
class StateWrite:
    """What one decision records for its customer."""

    time: float  # the event's time
    event_type: str
    event_record: dict | None  # the needed fields of the event; None: its type is not kept
    contacts: list[Contact]  # recorded contacts (never the default)
    cap_checks: list[CapCheck]  # checked atomically with the contacts
    profile_set: dict  # profile field -> new value (the `on` updates)

    @property
    def is_empty(self) -> bool:
        return self.event_record is None and not self.contacts and not self.profile_set


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
