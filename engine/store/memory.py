"""The embedded store: customers' state in this process's memory, no server needed.

Bounded per customer: history keeps only the event types and fields the ruleset's
aggregates read, within the longest window of each type (and at most
``max_events_per_type`` events per type); contacts for twice the longest cap or policy
window and the late events' slack (``StateNeeds.contact_keep``; at most ``max_contacts``).
Each write trims a history from its own event's time, never from a newer time another
event brought, and the contacts from the newest contact's time (which is the same but
for a write of an event older than the newest: the Redis store can then trim contacts
written by plain commands later, in its commit script, to the same set). The newest
contact ever trimmed is remembered (``kept_from``): a cap whose window reaches back
before it is not checked but passed over. ``sweep()`` forgets customers who went quiet
for longer than the retention (their profile is kept).

A read hands out the customer's record itself (a ``CustomerState``), not a copy: commits
change its lists in place, so the engine holds ``decision_lock`` from a decision's read to
its commit.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass

from nba.dsl.needs import HistoryNeed, StateNeeds
from nba.engine.state import Contact, CustomerState, History, StateWrite
from nba.engine.store.interface import Store

DEFAULT_MAX_EVENTS_PER_TYPE = 10_000
DEFAULT_MAX_CONTACTS = 10_000
SWEEP_EVERY_COMMITS = 50_000


@dataclass(slots=True)
class _Customer(CustomerState):
    """A customer's record: read as its ``CustomerState``, with no copy."""

    newest: float = float("-inf")


def _new_customer() -> _Customer:
    return _Customer({}, {}, [])


class MemoryStore(Store):
    def __init__(
        self,
        max_events_per_type: int = DEFAULT_MAX_EVENTS_PER_TYPE,
        max_contacts: int = DEFAULT_MAX_CONTACTS,
    ):
        self.max_events_per_type = max_events_per_type
        self.max_contacts = max_contacts
        self._customers: dict[str, _Customer] = {}
        self._lock = threading.RLock()
        self.decision_lock = self._lock
        self._commits = 0
        self._newest = float("-inf")  # the newest event time written for any customer

    # -- the decision's read and write --

    def read(self, customer_id: str, needs: StateNeeds, time: float) -> CustomerState:
        customer = self._customers.get(customer_id)
        if customer is None:
            return CustomerState({}, {}, [])
        return customer  # only the needed types are ever stored

    def commit(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        lock = self._lock
        lock.acquire()  # not `with`: measurably slower, and this runs for most decisions
        try:
            customer = self._customers.get(customer_id)
            if customer is None:
                if write.is_empty:
                    return True
                customer = self._customers[customer_id] = _new_customer()
            contacts = write.contacts
            time = write.time
            if contacts and write.cap_checks:
                for check in write.cap_checks:
                    if not check.holds(customer.contacts, contacts, time, customer.kept_from):
                        return False
            if time > customer.newest:
                customer.newest = time
            if time > self._newest:
                self._newest = time
            self._commits += 1
            if self._commits % SWEEP_EVERY_COMMITS == 0:
                self._sweep(self._newest, needs)
            if contacts:
                add_contacts(customer, contacts, time, needs.contact_keep, self.max_contacts)
            if write.event_record is not None:
                need = needs.history.get(write.event_type)
                if need is not None:
                    add_event(customer, write.event_type, need, time, write.event_record, self.max_events_per_type)
            if write.profile_set:
                customer.profile.update(write.profile_set)
            return True
        finally:
            lock.release()

    # -- profiles --

    def get_profile(self, customer_id: str, needs: StateNeeds) -> dict:
        customer = self._customers.get(customer_id)
        return dict(customer.profile) if customer else {}

    def put_profile(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        with self._lock:
            customer = self._customers.get(customer_id)
            if customer is None:
                customer = self._customers[customer_id] = _new_customer()
            customer.profile = dict(profile)

    # -- housekeeping --

    def sweep(self, now: float, needs: StateNeeds) -> int:
        """Forget the history and contacts of customers quiet for longer than the retention.

        Commits call it every ``SWEEP_EVERY_COMMITS`` writes, with the newest event time seen.
        """
        with self._lock:
            return self._sweep(now, needs)

    def _sweep(self, now: float, needs: StateNeeds) -> int:
        forgotten = 0
        for customer_id in list(self._customers):
            customer = self._customers[customer_id]
            if customer.newest > now - needs.retention or (not customer.history and not customer.contacts):
                continue
            if customer.profile:
                if customer.contacts:
                    customer.kept_from = max(customer.kept_from, customer.contacts[-1].time)
                customer.history = {}
                customer.contacts = []
            else:
                del self._customers[customer_id]
            forgotten += 1
        return forgotten

    def customer_count(self) -> int:
        return len(self._customers)

    def history_sizes(self, customer_id: str) -> dict[str, int]:
        customer = self._customers.get(customer_id)
        return {t: len(h) for t, h in customer.history.items()} if customer else {}


def add_contacts(state: CustomerState, new: list[Contact], time: float, keep: float, max_contacts: int) -> None:
    """Add ``new`` contacts (recorded at ``time``) to ``state`` and trim them, in place
    (``trim_contacts``). (The near cache of the Redis store keeps its copy of a customer's
    state by the same rules: engine/store/redis/near_cache.py.)"""
    contacts = state.contacts
    in_order = not contacts or new[0].time >= contacts[-1].time  # a decision's contacts share its time
    contacts += new
    if not in_order:
        contacts.sort(key=contact_time)  # stable, and nearly sorted: linear (a late event's)
    trim_contacts(state, keep, max_contacts)


def trim_contacts(state: CustomerState, keep: float, max_contacts: int) -> None:
    """Trim ``state``'s contacts (in time order) in place: those not after the newest
    one's time minus ``keep`` (a late event's write trims no less than the newest did),
    and all but the newest ``max_contacts``; the newest trimmed contact's time raises
    ``kept_from``. The Redis store reads its contacts through this too: writes of
    contacts no cap counts leave their trimming to the next commit script."""
    contacts = state.contacts
    if not contacts:
        return
    cutoff = contacts[-1].time - keep
    start = bisect_right(contacts, cutoff, key=contact_time) if contacts[0].time <= cutoff else 0
    start = max(start, len(contacts) - max_contacts)
    if start:
        trimmed = contacts[start - 1].time
        if trimmed > state.kept_from:
            state.kept_from = trimmed
        del contacts[:start]


def add_event(
    state: CustomerState, event_type: str, need: HistoryNeed, time: float, record: dict, max_events: int
) -> None:
    """Insert an event of ``event_type`` at its time (at the end, O(1), in the usual case)
    into ``state`` and trim its type's history from that time, in place."""
    fields = need.fields
    history = state.history.get(event_type)
    if history is None or not _has_columns(history.columns, fields):
        history = _with_fields(history, fields)
        state.history = {**state.history, event_type: history}
    times = history.times
    columns = history.columns
    if not times or time >= times[-1]:
        times.append(time)
        if columns:
            for name, column in columns.items():
                column.append(record.get(name))
    else:
        position = bisect_right(times, time)
        times.insert(position, time)
        for name, column in columns.items():
            column.insert(position, record.get(name))
    cutoff = time - need.keep  # from this event's time: never from a newer one (DSL.md step 1)
    start = bisect_right(times, cutoff) if times[0] <= cutoff else 0
    excess = len(times) - max_events
    if excess > start:
        start = excess
    if start:
        drop_oldest(history, start)


def drop_oldest(history: History, count: int) -> None:
    """Drop the ``count`` oldest events of ``history``, in place."""
    del history.times[:count]
    for column in history.columns.values():
        del column[:count]


def _has_columns(columns: dict, fields: tuple[str, ...]) -> bool:
    """Whether ``columns`` has exactly the (distinct) ``fields``, without building sets."""
    if len(columns) != len(fields):
        return False
    if len(fields) == 1:
        return fields[0] in columns
    for name in fields:
        if name not in columns:
            return False
    return True


def _with_fields(history: History | None, fields: tuple[str, ...]) -> History:
    """A copy of ``history`` (or a new one) with exactly ``fields`` as columns (after a reload)."""
    if history is None:
        return History([], {name: [] for name in fields})
    size = len(history.times)
    columns = {name: list(history.columns.get(name) or [None] * size) for name in fields}
    return History(list(history.times), columns)


def contact_time(contact: Contact) -> float:
    return contact.time


__all__ = ["MemoryStore"]
