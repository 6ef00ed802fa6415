"""The store interface: where customers' state lives, as the engine sees it.

A store reads one customer's ``CustomerState`` (what the ruleset's ``StateNeeds`` ask for)
in one round trip and commits a decision's ``StateWrite`` in at most one more, checking
its caps atomically (nba.engine.state holds these values). Implementations:
``MemoryStore`` (nba.engine.store.memory) and ``RedisStore`` (nba.engine.store.redis);
``open_store`` picks one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from nba.dsl.needs import StateNeeds
from nba.engine.state import CustomerState, StateWrite


class StoreUnavailable(Exception):
    """The store could not be reached (or answered too late), or what it holds for the
    customer cannot be read; decide without state (a degraded decision)."""


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
