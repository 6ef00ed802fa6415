"""Decide a batch of stream entries on Redis: reads and commits pipelined per node, each
decision committed once per input entry.

event -> check -> (per round) pipelined state reads -> evaluate -> commits streamed out
-> the decision JSON of each entry (or its error, or left for a retry)

A batch holds entries of many customers. A *round* reads the state of every customer it
holds in one pipeline per Redis node (for a customer with several entries, what all their
decisions read), decides each customer's entries in input order (the later ones on the
state the earlier ones leave, kept here), and sends the commits to their nodes in parts
as they are made (``commits``: Redis runs the first ones while the rest are decided).
Most batches take one round; an entry refused by a cap that another process filled
meanwhile is decided again in the next.

Each commit is ``COMMIT_ONCE_SCRIPT``: the entry's idempotency key is checked and kept,
with the decision made, atomically with the state write, in the customer's slot. A
redelivered entry (a consumer died after the commit) finds its key: nothing is written
and the decision kept then is the answer, so the output holds the same decision.

A decision never goes out degraded: an entry whose state cannot be read or committed (Redis
down, a timeout) is left unresolved, and the caller retries it later.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import fields
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from nba.dsl.needs import HistoryNeed, StateNeeds
from nba.engine.decision import decision_map
from nba.engine.errors import EngineError
from nba.engine.jsontext import _json_default, plain_numbers
from nba.engine.procedure import evaluate
from nba.engine.state import CustomerState, StateWrite
from nba.engine.store import StoreUnavailable
from nba.engine.store.memory import MemoryStore
from nba.engine.store.redis.encoding import decode_profile_value, encode_profile_value
from nba.engine.store.redis.protocol import (
    ALREADY_COMMITTED,
    NOT_AFTER,
    commit_once_command,
    eval_instead,
    has_error,
    is_noscript,
    once_reply,
    pack_commands,
)
from nba.engine.stream.commits import StreamedCommits

log = logging.getLogger("nba.consume")

MAX_ATTEMPTS = 8  # rounds one entry may be refused by a cap that another process filled meanwhile

# What became of an item.
PENDING = 0  # not decided yet (or left for a retry)
DECIDED = 1  # ``output`` is the decision's JSON
BAD = 2  # ``output`` is the error's JSON


class Item:
    """One stream entry on its way to a decision."""

    __slots__ = (
        "stream",
        "entry_id",
        "fields",
        "deliveries",
        "event",
        "customer_id",
        "ruleset",
        "status",
        "output",
        "attempts",
        "redelivered",
        "failed_alone",
    )

    def __init__(self, stream: str, entry_id: str, fields: dict | None, deliveries: int = 1):
        self.stream = stream
        self.entry_id = entry_id
        self.fields = fields
        self.deliveries = deliveries
        self.event: dict | None = None  # checked
        self.customer_id: str | None = None
        self.ruleset = None
        self.status = PENDING
        self.output: bytes | None = None
        self.attempts = 0
        self.redelivered = False  # its decision was the one kept by an earlier delivery
        self.failed_alone = False  # not decided for a reason of its own (Redis answered the others)

    def fail(self, code: str, message: str) -> None:
        self.status = BAD
        self.output = dumps({"code": code, "message": message})


def dumps(value: Any) -> bytes:
    """Compact JSON (UTF-8); infinite and NaN numbers as null, as ``nba replay`` prints them."""
    try:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
        ).encode()
    except ValueError:
        return json.dumps(
            finite(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
        ).encode()


def finite(value: Any) -> Any:
    """``plain_numbers``, inside tuples and sets too (written as lists): an infinite or NaN
    number anywhere is null, and a decision's JSON never fails."""
    if isinstance(value, (tuple, set, frozenset)):
        return [finite(item) for item in value]
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return plain_numbers(value)


# The params of a decision as JSON, by the C encoder made once (json.dumps makes one a call):
# as ``dumps`` writes them, except that infinite and NaN numbers raise ValueError.
_encode_value = (
    c_make_encoder(None, _json_default, encode_basestring, None, ":", ",", False, False, False)
    if c_make_encoder is not None
    else None
)


def decision_json(customer_id: str, choices) -> bytes:
    """``dumps(decision_map(customer_id, choices, False, None))``, written straight from
    the first choice: the decision's JSON was a tenth of this process's work per entry
    (the map and the generic encoder made for each), and a consumer decides with limit 1."""
    if len(choices) != 1 or _encode_value is None:
        return dumps(decision_map(customer_id, choices, False, None))
    choice = choices[0]
    rule, action, channel = choice.rule, choice.action, choice.channel
    try:
        return (
            '{"customer_id":'
            + encode_basestring(customer_id)
            + ',"rule":'
            + (encode_basestring(rule) if rule.__class__ is str else "".join(_encode_value(rule, 0)))
            + ',"action":'
            + (encode_basestring(action) if action.__class__ is str else "".join(_encode_value(action, 0)))
            + ',"channel":'
            + (encode_basestring(channel) if channel.__class__ is str else "".join(_encode_value(channel, 0)))
            + ',"params":'
            + "".join(_encode_value(choice.params, 0))
            + ',"alternatives":[],"degraded":false}'
        ).encode()
    except ValueError:  # an infinite or NaN number: null, as dumps writes it
        return dumps(decision_map(customer_id, choices, False, None))


class Rider:
    """Commands of the consumer's own that ride in one write with a round's state reads
    (before them) or commits (after them) to the node at ``address``, so that a batch takes
    fewer round trips: the outputs and acknowledgement of the entries decided before, the
    read of the next entries. After the round: ``replies`` (None: not sent, as the round had
    nothing for that node) or ``error`` (the round trip failed: they may have run or not)."""

    __slots__ = ("address", "commands", "packed", "replies", "error")

    def __init__(self, address, commands: list[tuple]):
        self.address = address
        self.commands = commands
        self.packed = pack_commands(commands)
        self.replies: list | None = None
        self.error: Exception | None = None

    @property
    def sent(self) -> bool:
        return self.replies is not None or self.error is not None


class BatchDecider:
    """Decides batches of items with an engine on a ``RedisStore``."""

    def __init__(self, engine, record_ttl_s: float, group: str, timeout_s: float | None = None):
        self.engine = engine
        self.store = engine.store
        self.group = group
        self.record_ttl_ms = max(1, math.ceil(record_ttl_s * 1000))
        self.timeout_s = timeout_s
        self.loaded: set = set()  # nodes known to hold the once script
        # (ruleset id, its read needs' ids) -> (the ruleset, kept alive so the ids stay its own; their union)
        self.joined_needs: dict[tuple, tuple] = {}

    # -- checking

    def check(self, item: Item) -> None:
        """Step 1 of the decision: the entry's ``event`` field as a checked event, or BAD."""
        fields = item.fields
        raw = fields.get(b"event") if fields else None
        if raw is None:
            item.fail("bad_entry", "the entry has no field `event` (the event as a JSON object)")
            return
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            item.fail("bad_event", f"the field `event` is not valid JSON: {exc}")
            return
        try:
            item.ruleset, item.event = self.engine._prepare(event, 1)
        except EngineError as exc:
            item.fail(exc.code, str(exc))
            return
        item.customer_id = item.event["customer_id"]

    # -- deciding

    def decide(self, items: list[Item], before_read: Rider | None = None, after_commit: Rider | None = None) -> None:
        """Decide every checkable item; on return each is DECIDED, BAD, or PENDING (retry later).
        The riders go with the first round's state reads and commits on their node."""
        queues: dict[str, list[Item]] = {}
        for item in items:
            if item.status == PENDING and item.event is None:
                self.check(item)
            if item.status == PENDING:
                queues.setdefault(item.customer_id, []).append(item)
        store = self.store
        if queues and store.topology.cluster is None:
            store.discover(self.timeout_s or store.io_timeout_s)
        while queues:
            chains = list(queues.values())
            self.decide_round(chains, before_read, after_commit)
            before_read = after_commit = None
            for chain in chains:
                customer_id = chain[0].customer_id
                head = chain[0]
                left = [item for item in chain if item.status == PENDING]
                if head.status == PENDING and head.attempts >= MAX_ATTEMPTS:
                    head.fail(
                        "internal",
                        f"customer {customer_id!r}: state kept changing under {MAX_ATTEMPTS} attempts to decide",
                    )
                    left.pop(0)
                elif head.status == PENDING and head.attempts == 0:
                    left = []  # not readable or not committed: left for a retry, with the customer's later entries
                if left:
                    queues[customer_id] = left
                else:
                    del queues[customer_id]

    def decide_round(
        self, chains: list[list[Item]], before_read: Rider | None = None, after_commit: Rider | None = None
    ) -> None:
        """Each customer's entries in order, on the state read once for all of them: one
        pipelined read, the decisions (each on the state the ones before it leave, kept
        here), the commits streamed to their nodes as they are made. A commit after the
        first of its customer lands only if the one before it landed in this round (the
        once script's ``after``).

        Afterwards a chain's first item still PENDING with ``attempts`` > 0 was refused by a
        cap (decided again next round, on a new read); with ``attempts`` == 0 its state
        could not be read or committed (retry later); later items still PENDING follow it.
        """
        store = self.store
        states = self.read_states(chains, before_read)
        mark = os.urandom(8).hex().encode() + b"\n"  # this round's records start with it
        streamed = StreamedCommits(store, self.timeout_s or store.write_timeout_s, self.loaded)
        commands: list[tuple | None] = []
        planned: list[tuple] = []  # (item, outcome, record) per command
        for chain, state in zip(chains, states):
            if state is None:
                chain[0].attempts = 0  # not readable: retry later
                continue
            scratch = None if len(chain) == 1 else scratch_store(store, chain[0].customer_id, state)
            after = None
            for item in chain:
                ruleset = item.ruleset
                if scratch is not None and item is not chain[0]:
                    state = scratch.read(item.customer_id, ruleset.needs, item.event["time"])
                outcome = evaluate(ruleset, item.event, state, 1, False)
                record = mark + decision_json(item.customer_id, outcome.choices)
                base = store.keys.base(item.customer_id)
                write = outcome.write
                commit = None
                if write is not None and not write.is_empty:
                    commit = store.codec(ruleset.needs).commit_command(base, write)
                    if commit is None or (
                        scratch is not None
                        and not scratch.commit(
                            item.customer_id, ruleset.needs, as_read_back(write, ruleset.profile_schema)
                        )
                    ):
                        if item is chain[0]:
                            item.attempts += 1  # its own contacts exceed a cap: as a refused commit
                        break  # the later ones are decided again next round
                key = f"{base}:x:{item.stream}:{self.group}:{item.entry_id}"
                command = commit_once_command(commit, key, record, self.record_ttl_ms, after)
                streamed.add(store.topology.address_for(base), command)  # Redis starts on it while the next are decided
                commands.append(command)
                planned.append((item, outcome, record))
                after = (key, mark)
        replies = self.commit_replies([item for item, _outcome, _record in planned], commands, streamed, after_commit)
        for (item, outcome, record), reply in zip(planned, replies):
            if reply is None:
                item.attempts = 0  # not committed: retry later
                continue
            try:
                status, kept = once_reply(reply)
            except StoreUnavailable as exc:
                log.warning("entry %s: the commit failed: %s", item.entry_id, exc)
                item.attempts = 0
                item.failed_alone = True
                continue
            if status == ALREADY_COMMITTED:
                item.status, item.output, item.redelivered = DECIDED, without_mark(kept), True
            elif status == 1:
                item.status, item.output = DECIDED, without_mark(record)
                self.engine._record(outcome, False)
            elif status == 0:
                item.attempts += 1  # a cap filled meanwhile by another process: decide again
            # NOT_AFTER: the commit before it did not land; decided again next round

    # -- the pipelines

    def read_states(self, chains: list[list[Item]], rider: Rider | None = None) -> list:
        """The state of each chain's customer (None: not readable now), one pipeline per
        node (``rider`` first on its node): what the decisions of the chain's entries read,
        from the earliest of their times on."""
        store = self.store
        by_node: dict[Any, list[int]] = {}
        requests = []
        for index, chain in enumerate(chains):
            first = chain[0]
            ruleset = first.ruleset
            if len(chain) == 1:
                needs, time_s = ruleset.needs_for(first.event["type"]), first.event["time"]
            else:
                needs, time_s = self.chain_needs(chain), min(item.event["time"] for item in chain)
            codec = store.codec(needs)
            base = store.keys.base(first.customer_id)
            requests.append((codec, needs, time_s, codec.read_request(base.encode(), time_s)))
            by_node.setdefault(store.topology.address_for(base), []).append(index)
        states: list = [None] * len(chains)
        timeout = self.timeout_s or store.latency_budget_s
        for address, indexes in by_node.items():
            packed = b"".join([requests[i][3] for i in indexes])
            count = sum(requests[i][0].count for i in indexes)
            riding = rider is not None and rider.address == address
            if riding:
                packed, count = rider.packed + packed, count + len(rider.commands)
            try:
                replies = store.exchange(address, packed, count, timeout)
            except StoreUnavailable as exc:
                log.warning("redis %s:%s: reading state failed: %s", address[0], address[1], exc)
                if riding:
                    rider.error = exc
                continue
            if riding:
                rider.replies, replies = replies[: len(rider.commands)], replies[len(rider.commands) :]
            position = 0
            for i in indexes:
                codec, needs, time_s, _packed = requests[i]
                own = replies[position : position + codec.count]
                position += codec.count
                states[i] = self.state_of(chains[i][0], codec, needs, time_s, own)
        return states

    def chain_needs(self, chain: list[Item]) -> StateNeeds:
        """What the decisions of a chain's entries read, together: a page view's session
        reads what page views read, not all that the ruleset keeps."""
        ruleset = chain[0].ruleset
        reads = list({id(needs): needs for needs in (ruleset.needs_for(item.event["type"]) for item in chain)}.values())
        if len(reads) == 1:
            return reads[0]
        key = (id(ruleset), *sorted(map(id, reads)))
        found = self.joined_needs.get(key)
        if found is None:
            if len(self.joined_needs) > 64:  # rulesets reloaded: their entries go
                self.joined_needs.clear()
            found = self.joined_needs[key] = (ruleset, union_of(reads))
        return found[1]

    def state_of(self, item: Item, codec, needs, time_s: float, replies: list):
        if not has_error(replies):
            try:
                return codec.decode_read(replies)
            except Exception:  # noqa: BLE001 - unreadable state: the store's own read reports it
                pass
        try:  # a cluster redirect, or state the store reads (and reports) on its own path
            return self.store.read(item.customer_id, needs, time_s)
        except StoreUnavailable as exc:
            log.warning("customer %r: reading state failed: %s", item.customer_id, exc)
            item.failed_alone = True
            return None

    def commit_replies(
        self, items: list[Item], commands: list[tuple], streamed: StreamedCommits, rider: Rider | None = None
    ) -> list:
        """The reply of each command (None: none known), ``rider`` last on its node; a
        commit refused for want of the script (a restarted Redis) or by a cluster redirect
        is sent again on its own."""
        replies = streamed.replies(rider)
        for i, answer in enumerate(replies):
            if is_noscript(answer) or isinstance(answer, Exception):
                self.loaded.clear()  # restarted, flushed, or the slot moved: one by one
                replies[i] = self.commit_alone(items[i], commands[i])
        return replies

    def commit_alone(self, item: Item, command: tuple):
        """One commit through the store's own path (redirects followed, the script sent)."""
        store = self.store
        try:
            [answer] = store.call(
                store.keys.base(item.customer_id), [eval_instead(command)], self.timeout_s or store.write_timeout_s
            )
        except StoreUnavailable as exc:
            log.warning("customer %r: committing failed: %s", item.customer_id, exc)
            item.failed_alone = True
            return None
        if isinstance(answer, Exception):
            log.warning("customer %r: committing failed: %s", item.customer_id, answer)
            item.failed_alone = True
            return None
        return answer


def union_of(reads: list[StateNeeds]) -> StateNeeds:
    """One read of what each of ``reads`` reads (one ruleset's: the same fields and schema)."""
    history: dict[str, HistoryNeed] = {}
    for needs in reads:
        for event_type, need in needs.history.items():
            kept = history.get(event_type)
            if kept is None or need.window > kept.window:
                history[event_type] = need
    return StateNeeds(
        history=history,
        contact_window=max(needs.contact_window for needs in reads),
        profile_schema=reads[0].profile_schema,
        contact_keep=max(needs.contact_keep for needs in reads),
    )


def without_mark(record: bytes) -> bytes:
    """The decision in a kept record (after its round's mark)."""
    return record.partition(b"\n")[2] if b"\n" in record else record


def scratch_store(store, customer_id: str, state: CustomerState) -> MemoryStore:
    """The customer's state as read, in a store of this process that a chain's decisions
    commit to one after the other (each sees the ones before it, as it will in Redis).
    MemoryStore's trimming and cap checks are the commit script's."""
    scratch = MemoryStore(store.retention.max_events_per_type, store.retention.max_contacts)
    customer = scratch_customer(state)
    scratch._customers[customer_id] = customer
    return scratch


def scratch_customer(state: CustomerState):
    from nba.engine.store.memory import _Customer

    copied = {item.name: getattr(state, item.name) for item in fields(CustomerState)}  # every field the read gave
    copied.update(profile=dict(state.profile), history=dict(state.history), contacts=list(state.contacts))
    return _Customer(**copied)


def as_read_back(write: StateWrite, schema: dict) -> StateWrite:
    """``write`` with its profile values as Redis gives them back (stored as text)."""
    if not write.profile_set:
        return write
    profile_set = {
        name: decode_profile_value(encode_profile_value(value, schema.get(name)), schema.get(name))
        for name, value in write.profile_set.items()
    }
    return StateWrite(write.time, write.event_type, write.event_record, write.contacts, write.cap_checks, profile_set)


__all__ = ["ALREADY_COMMITTED", "BAD", "DECIDED", "NOT_AFTER", "PENDING", "BatchDecider", "Item", "Rider", "dumps"]
