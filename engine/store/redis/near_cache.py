"""The near cache: customers' state kept in the serving process from one decision to the
next, kept true by Redis itself (server-assisted client-side caching).

Why: a decision on Redis costs a read round trip, and that read is most of what the
process and Redis spend per decision (issue 19: at 10,000 decisions a second the server
spent 78 µs of CPU per decision and redis-server 47, against 42 and 31 for a bare server
doing only that read). A customer who acts several times a minute is read again and
again, and nothing but this process wrote their keys in between.

How it stays exact:

- **Redis says when a key changes.** Each link of a node turns tracking on
  (``CLIENT TRACKING ON REDIRECT <id> NOLOOP``): Redis remembers the keys the link read
  and, when any other connection writes, expires, evicts or flushes one, sends its name
  to the node's invalidation connection (``tracking.InvalidationListener``, subscribed
  to ``__redis__:invalidate``). The customer's entry is dropped; the next decision reads
  Redis. Redis stops tracking a key at its first change, the link's own included, so
  each of the link's writes is followed in its pipeline by an ``EXISTS`` of the keys it
  wrote, which tracks them again. ``NOLOOP``: the link's own writes are not announced
  back...
- **...because this process applies them itself** (``wrote``): the event kept, the
  contacts recorded, the ``on`` updates, each passed through the bytes Redis stores and
  read back as a Redis read would (so an int stays an int, a tuple becomes a list), and
  trimmed by the same rules as the in-memory store (``memory.add_event``,
  ``memory.add_contacts``), which are the Redis store's.
- **What may not have landed is forgotten.** A commit refused by its cap check, an
  awaited write that failed, a write sent without waiting that Redis turned down or that
  was lost with its connection, a profile replaced, anything written by a path that does
  not apply it here: the customer's entry is dropped (``forget``).
- **A read races no invalidation.** An invalidation arriving while a read of the same
  customer is in flight (it may have been answered before the write) keeps that read's
  reply out of the cache (``started``/``filled``).
- **No stale entry outlives its tracking.** The cache is emptied when a link or an
  invalidation connection is lost (Redis forgets a closed connection's tracking), when
  Redis flushes a database, and when a cluster's slot table changes; the node's reads
  are not cached until tracking is on again.
- **News in the same loop turn.** The invalidation connection is read by the event
  loop as soon as bytes arrive, like the clients' sockets. Redis sends an invalidation in
  the same moment as its reply to the writer (the write's command runs, then both are
  written out), so a decision may meet an entry an instant before its invalidation is
  read: it then decides as on a read sent that instant earlier.
- **Caps are never decided by the cache.** A commit that records contacts is the commit
  script, which counts the contacts in Redis atomically, whatever this process believed;
  a refused commit drops the entry and the decision reads Redis again (DSL.md step 6).

What it cannot see sooner than its invalidation arrives: a write by another process in
the microseconds before this decision, which a read sent at that moment would have missed
too. Bounded by ``size`` customers; the one cached longest ago leaves first.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from nba.engine.state import NEVER_TRIMMED, CustomerState, History, StateWrite
from nba.engine.store.memory import add_contacts, add_event, contact_time, drop_oldest
from nba.engine.store.redis.encoding import (
    contact_parts,
    decode_contacts,
    decode_profile_value,
    encode_profile_value,
    event_parts,
    unpack_member,
)
from nba.engine.store.redis.protocol import Codec, Retention, base_of

NOT_READ = float("inf")  # an entry's contacts_from when its contacts were never read
READ_SLACK_S = 1.0  # held beyond the reads' windows, so that an event a little out of order is still answered here
ANY_NUMBER = b"\xcf" + bytes(8)  # a member's number, for members read back here (the number is not read)


@dataclass(slots=True)
class CachedCustomer(CustomerState):
    """A customer's state as the Redis store would read it, and how much of it is held.

    ``history_from[t]``: every event of type ``t`` after this time is held (newest
    ``max_events_per_type``); ``contacts_from``: every contact after this time is held.
    A read at ``time`` of a window ``w`` is answered here when ``time - w`` is not before
    them. What the reads' windows no longer reach (``READ_SLACK_S`` aside) is let go as
    events are written, as a Redis read would not return it: the store keeps history for
    late events (``HistoryNeed.keep``), a decision scans only what it reads. Handed to a
    decision as its ``CustomerState``, as the in-memory store hands its own record (a
    customer's decisions take turns, so none reads it while it changes).
    """

    schema: dict | None = None  # the profile schema the profile was read with
    history_from: dict = field(default_factory=dict)  # event type -> time
    fields: dict = field(default_factory=dict)  # event type -> the fields its columns hold
    windows: dict = field(default_factory=dict)  # event type -> the longest window a read of it asked for
    contacts_from: float = NOT_READ
    contact_window: float = 0.0  # the longest window a read of the contacts asked for


class NearCache:
    """Customers' state by key base (``KeyLayout.base``), at most ``size`` of them.

    Used on the event loop's thread only (the asyncio path of ``RedisStore``), except
    ``forget``/``flush``, which any thread may call (dict operations)."""

    __slots__ = (
        "entries",
        "reading",
        "dirty",
        "size",
        "max_events",
        "max_contacts",
        "hits",
        "misses",
        "fills",
        "invalidations",
        "flushes",
        "topology_changes",
        "kept_codec",
        "wider",
    )

    def __init__(self, size: int, retention: Retention):
        self.entries: dict[str, CachedCustomer] = {}
        self.reading: dict[str, int] = {}  # base -> reads in flight
        self.dirty: set[str] = set()  # bases invalidated while a read was in flight
        self.size = size
        self.max_events = retention.max_events_per_type
        self.max_contacts = retention.max_contacts
        self.hits = 0
        self.misses = 0
        self.fills = 0
        self.invalidations = 0  # entries dropped because Redis said a key changed
        self.flushes = 0
        self.topology_changes = 0  # the store's slot table changes seen (a change empties the cache)
        self.kept_codec: Codec | None = None  # the ruleset's (what is kept), as the last write said
        self.wider: dict[int, tuple] = {}  # id(a read's codec) -> (it, the kept codec, whether that reads all it does)

    # -- reads

    def lookup(self, base: str, codec: Codec, time: float) -> CachedCustomer | None:
        """The customer's entry when it holds all that ``codec`` reads at ``time``."""
        entry = self.entries.get(base)
        if entry is not None and holds(entry, codec, time):
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def read_codec(self, codec: Codec) -> Codec:
        """What to read of a customer the cache does not hold, for a decision that reads
        ``codec``: all the ruleset keeps (its longest windows of every type, the contacts),
        when it is known and reads all ``codec`` does, so that the customer's next events of
        other types are answered here too; else ``codec``."""
        kept = self.kept_codec
        if kept is None or kept is codec:
            return codec
        known = self.wider.get(id(codec))
        if known is None or known[0] is not codec or known[1] is not kept:
            if len(self.wider) > 1024:
                self.wider.clear()
            known = self.wider[id(codec)] = (codec, kept, reads_all_of(kept, codec))
        return kept if known[2] else codec

    def started(self, base: str) -> None:
        """A read of the customer goes to Redis (on a tracked link); ``filled`` or ``abandoned`` follows."""
        self.reading[base] = self.reading.get(base, 0) + 1

    def abandoned(self, base: str) -> bool:
        """A read ``started`` is over; whether it may be cached (no invalidation meanwhile)."""
        left = self.reading.get(base, 0) - 1
        clean = base not in self.dirty
        if left > 0:
            self.reading[base] = left
        else:
            self.reading.pop(base, None)
            self.dirty.discard(base)
        return clean

    def filled(self, base: str, codec: Codec, time: float, state: CustomerState) -> None:
        """A read ``started`` was answered with ``state``: kept, unless its customer was
        invalidated meanwhile. The entry takes over the state's lists."""
        if not self.abandoned(base):
            return
        entries = self.entries
        entry = entries.get(base)
        schema = codec.schema
        if entry is None or (entry.schema is not schema and entry.schema != schema):
            if entry is None and len(entries) >= self.size:
                del entries[next(iter(entries))]  # the one cached longest ago
            entry = entries[base] = CachedCustomer(state.profile, {}, [], NEVER_TRIMMED, schema)
        else:
            entry.profile = state.profile
        history = dict(entry.history)
        history_from = entry.history_from
        kept_fields = entry.fields
        kept_windows = entry.windows
        windows = codec.windows
        position = 0
        for event_type, fields in codec.history:
            read = state.history.get(event_type)
            history[event_type] = read if read is not None else History([], {name: [] for name in fields})
            window = windows[position]
            history_from[event_type] = time - window
            kept_fields[event_type] = fields
            if window > kept_windows.get(event_type, 0.0):
                kept_windows[event_type] = window
            position += 1
        entry.history = history
        if codec.with_contacts:
            entry.contacts = state.contacts
            entry.kept_from = state.kept_from
            window = windows[position]
            entry.contacts_from = time - window
            if window > entry.contact_window:
                entry.contact_window = window
        self.fills += 1

    # -- this process's own writes

    def wrote(self, base: str, codec: Codec, write: StateWrite) -> None:
        """``write`` was sent on a tracked link (``NOLOOP``: Redis will not say): apply it
        to the customer's entry as Redis applies it. ``codec`` is the ruleset's (what is
        kept), not a decision's read."""
        self.kept_codec = codec
        entry = self.entries.get(base)
        if entry is None:
            return
        try:
            apply_write(entry, codec, write, self.max_events, self.max_contacts)
        except Exception:  # noqa: BLE001 - a value the cache cannot mirror: Redis has it, the entry goes
            self.entries.pop(base, None)

    # -- forgetting

    def forget(self, base: str) -> None:
        """Drop the customer's entry (a write that may not have landed, or was not applied here)."""
        if self.entries.pop(base, None) is not None:
            self.invalidations += 1
        if base in self.reading:
            self.dirty.add(base)

    def invalidated(self, keys: list | None) -> None:
        """Redis's invalidation message: these keys changed (None: every key, a flush)."""
        if keys is None:
            self.flush()
            return
        for key in keys:
            if key.__class__ is bytes:
                key = key.decode("utf-8", "replace")
            base = base_of(key)
            if base:
                self.forget(base)

    def flush(self) -> None:
        """Drop every entry (tracking lost, a database flushed, the slot table changed)."""
        self.entries.clear()
        self.dirty.update(self.reading)
        self.flushes += 1

    def counters(self) -> dict:
        return {
            "near_cache_hits": self.hits,
            "near_cache_misses": self.misses,
            "near_cache_customers": len(self.entries),
            "near_cache_invalidations": self.invalidations,
            "near_cache_flushes": self.flushes,
        }


def reads_all_of(wide: Codec, narrow: Codec) -> bool:
    """Whether a read with ``wide`` returns all that one with ``narrow`` does."""
    if wide.schema is not narrow.schema and wide.schema != narrow.schema:
        return False
    windows = dict(zip((event_type for event_type, _ in wide.history), wide.windows))
    fields = dict(wide.history)
    for (event_type, needed), window in zip(narrow.history, narrow.windows):
        if fields.get(event_type) != needed or windows[event_type] < window:
            return False
    if narrow.with_contacts:
        return wide.with_contacts and wide.windows[-1] >= narrow.windows[-1]
    return True


def holds(entry: CachedCustomer, codec: Codec, time: float) -> bool:
    """Whether ``entry`` holds all that ``codec`` reads at ``time``."""
    schema = codec.schema
    if entry.schema is not schema and entry.schema != schema:
        return False
    history_from = entry.history_from
    kept_fields = entry.fields
    windows = codec.windows
    position = 0
    for event_type, fields in codec.history:
        start = history_from.get(event_type)
        if start is None or time - windows[position] < start:
            return False
        kept = kept_fields[event_type]
        if kept is not fields and kept != fields:  # a reload changed what is kept
            return False
        position += 1
    return not codec.with_contacts or time - windows[position] >= entry.contacts_from


def apply_write(entry: CachedCustomer, codec: Codec, write: StateWrite, max_events: int, max_contacts: int) -> None:
    """``write`` applied to ``entry`` as the Redis store applies it; each value goes through
    the bytes Redis keeps and back, as a read would give it."""
    profile_set = write.profile_set
    if profile_set:
        schema = codec.schema
        if entry.schema is not schema and entry.schema != schema:
            raise ValueError("the profile was read with another schema")
        profile = entry.profile
        for name, value in profile_set.items():
            kind = schema.get(name)
            profile[name] = decode_profile_value(encode_profile_value(value, kind), kind)
    record = write.event_record
    event_type = write.event_type
    if record is not None and event_type in entry.history_from:
        need = codec.needs.history.get(event_type)
        if need is not None and need.keep > 0:
            if entry.fields[event_type] != need.fields:
                raise ValueError("the history was read with other fields")
            time = write.time
            if time.__class__ is not float or not as_read_back(record):
                head, tail = event_parts(time, record)
                time, _number, record = unpack_member(head + ANY_NUMBER + tail)
            add_event(entry, event_type, need, time, record, max_events)
            cutoff = time - entry.windows[event_type] - READ_SLACK_S
            if cutoff > entry.history_from[event_type]:
                entry.history_from[event_type] = cutoff
                let_go(entry.history[event_type], cutoff)
    contacts = write.contacts
    if contacts and codec.with_contacts and entry.contacts_from != NOT_READ:
        if write.time.__class__ is not float:  # an int time: read back as msgpack keeps it
            members = []
            for contact in contacts:
                head, tail = contact_parts(contact)
                members.append(head + ANY_NUMBER + tail)
            contacts = decode_contacts(members)
        # else a float time and the names (str, or None for the channel) read back as they are
        add_contacts(entry, contacts, write.time, codec.contact_keep, max_contacts)
        cutoff = write.time - entry.contact_window - READ_SLACK_S
        if cutoff > entry.contacts_from:  # not a trim: kept_from stays what Redis's trims made it
            entry.contacts_from = cutoff
            contacts = entry.contacts
            start = bisect_right(contacts, cutoff, key=contact_time)
            if start:
                del contacts[:start]


PLAIN = frozenset({str, float, bool, type(None)})  # read back from msgpack as they are written
INT_RANGE = (-(2**63), 2**64)  # an int msgpack keeps as an int (beyond: an ext this store reads back too)


def as_read_back(record: dict) -> bool:
    """Whether every value of ``record`` reads back from its msgpack bytes unchanged (the
    usual event: strings, numbers, flags), so that the cache can keep the record as it is."""
    for value in record.values():
        kind = value.__class__
        if kind is int:
            if not INT_RANGE[0] <= value < INT_RANGE[1]:
                return False
        elif kind not in PLAIN:
            return False
    return True


def let_go(history: History, cutoff: float) -> None:
    """Drop the events at or before ``cutoff`` from the cached ``history`` (no read reaches them)."""
    times = history.times
    if times and times[0] <= cutoff:
        drop_oldest(history, bisect_right(times, cutoff))
