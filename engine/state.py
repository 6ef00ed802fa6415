"""What a decision reads from and writes to a customer's state: the values a store hands over.

Data flow: the compiled ruleset says what it needs (``StateNeeds``, from nba.dsl.needs); a store
(``nba.engine.store.Store``) reads one ``CustomerState`` for a customer in one round trip;
the decision procedure computes a ``StateWrite``; the store commits it in at most one more
round trip, checking the caps atomically (``CapCheck``) so that no cap or policy is exceeded
when several processes decide for one customer at once.

Times are floats: seconds since the Unix epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
