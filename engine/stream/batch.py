"""Decide a batch of stream entries on Redis: reads and commits pipelined per node, each
decision committed once per input entry.

event -> check -> (per round) pipelined state reads -> evaluate -> pipelined commits
-> the decision JSON of each entry (or its error, or left for a retry)

A batch holds entries of many customers. One customer's entries are decided in input
order, one per *round*: a round reads the state of every customer it holds in one
pipeline per Redis node, evaluates each, and commits them all in one more pipeline per
node. Most batches take one round; a customer with three entries in the batch takes three.

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
from typing import Any

from engine.decision import decision_map
from engine.errors import EngineError
from engine.procedure import evaluate
from engine.state import StoreUnavailable
from engine.store.redis.protocol import (
    ALREADY_COMMITTED,
    COMMIT_ONCE_SCRIPT,
    commit_once_command,
    eval_instead,
    has_error,
    is_noscript,
    once_reply,
    pack_commands,
)

log = logging.getLogger("nba.consume")

MAX_ATTEMPTS = 8  # rounds one entry may be refused by a cap that another process filled meanwhile

# What became of an item.
PENDING = 0  # not decided yet (or left for a retry)
DECIDED = 1  # ``output`` is the decision's JSON
BAD = 2  # ``output`` is the error's JSON


class Item:
    """One stream entry on its way to a decision."""

    __slots__ = ("stream", "entry_id", "fields", "deliveries", "event", "customer_id", "ruleset", "status",
                 "output", "attempts", "redelivered", "failed_alone")

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
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                          default=_json_default).encode()
    except ValueError:
        from engine.cli import plain_numbers

        return json.dumps(plain_numbers(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                          default=_json_default).encode()


def _json_default(value):
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class BatchDecider:
    """Decides batches of items with an engine on a ``RedisStore``."""

    def __init__(self, engine, record_ttl_s: float, group: str, timeout_s: float | None = None):
        self.engine = engine
        self.store = engine.store
        self.group = group
        self.record_ttl_ms = max(1, math.ceil(record_ttl_s * 1000))
        self.timeout_s = timeout_s
        self.loaded: set = set()  # nodes known to hold the once script

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

    def decide(self, items: list[Item]) -> None:
        """Decide every checkable item; on return each is DECIDED, BAD, or PENDING (retry later)."""
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
            round_items = [queue[0] for queue in queues.values()]
            self.decide_round(round_items)
            for item in round_items:
                queue = queues[item.customer_id]
                if item.status != PENDING:
                    queue.pop(0)
                    if not queue:
                        del queues[item.customer_id]
                elif item.attempts >= MAX_ATTEMPTS:
                    item.fail("internal", f"customer {item.customer_id!r}: state kept changing under "
                                          f"{MAX_ATTEMPTS} attempts to decide")
                    queue.pop(0)
                    if not queue:
                        del queues[item.customer_id]
                elif item.attempts == 0:
                    del queues[item.customer_id]  # left for a retry, with the customer's later entries

    def decide_round(self, items: list[Item]) -> None:
        """One entry per customer: read all, evaluate, commit all. An item still PENDING
        afterwards with ``attempts`` > 0 was refused by a cap (read again next round);
        with ``attempts`` == 0 its state could not be read or committed."""
        store = self.store
        states = self.read_states(items)
        commands: list[tuple | None] = []
        outcomes = []
        for item, state in zip(items, states):
            if state is None:
                item.attempts = 0  # not readable: retry later
                commands.append(None)
                outcomes.append(None)
                continue
            event = item.event
            ruleset = item.ruleset
            outcome = evaluate(ruleset, event, state, 1, False)
            record = dumps(decision_map(item.customer_id, outcome.choices, False, None))
            base = store.keys.base(item.customer_id)
            write = outcome.write
            commit = None
            if write is not None and not write.is_empty:
                commit = store.codec(ruleset.needs).commit_command(base, write)
                if commit is None:  # its own contacts exceed a cap: as a refused commit
                    commands.append(None)
                    outcomes.append(None)
                    item.attempts += 1
                    continue
            key = f"{base}:x:{item.stream}:{self.group}:{item.entry_id}"
            commands.append(commit_once_command(commit, key, record, self.record_ttl_ms))
            outcomes.append((outcome, record))
        replies = self.commit_all(items, commands)
        for item, command, outcome, reply in zip(items, commands, outcomes, replies):
            if command is None or reply is None:
                if command is not None:
                    item.attempts = 0  # not committed: retry later
                continue
            try:
                done, kept = once_reply(reply)
            except StoreUnavailable as exc:
                log.warning("entry %s: the commit failed: %s", item.entry_id, exc)
                item.attempts = 0
                item.failed_alone = True
                continue
            if kept is not None:
                item.status, item.output, item.redelivered = DECIDED, kept, True
            elif done:
                item.status, item.output = DECIDED, outcome[1]
                self.engine._record(outcome[0], False)
            else:
                item.attempts += 1  # a cap filled meanwhile by another process: decide again

    # -- the pipelines

    def read_states(self, items: list[Item]) -> list:
        """The state of each item's customer (None: not readable now), one pipeline per node."""
        store = self.store
        by_node: dict[Any, list[int]] = {}
        requests = []
        for index, item in enumerate(items):
            ruleset = item.ruleset
            codec = store.codec(ruleset.needs_for(item.event["type"]))
            base = store.keys.base(item.customer_id)
            requests.append((codec, base, codec.read_request(base.encode(), item.event["time"])))
            by_node.setdefault(store.topology.address_for(base), []).append(index)
        states: list = [None] * len(items)
        timeout = self.timeout_s or store.latency_budget_s
        for address, indexes in by_node.items():
            packed = b"".join([requests[i][2] for i in indexes])
            count = sum(requests[i][0].count for i in indexes)
            try:
                replies = store.exchange(address, packed, count, timeout)
            except StoreUnavailable as exc:
                log.warning("redis %s:%s: reading state failed: %s", address[0], address[1], exc)
                continue
            position = 0
            for i in indexes:
                codec, base, _packed = requests[i]
                own = replies[position:position + codec.count]
                position += codec.count
                states[i] = self.state_of(items[i], codec, own)
        return states

    def state_of(self, item: Item, codec, replies: list):
        if not has_error(replies):
            try:
                return codec.decode_read(replies)
            except Exception:  # noqa: BLE001 - unreadable state: the store's own read reports it
                pass
        try:  # a cluster redirect, or state the store reads (and reports) on its own path
            return self.store.read(item.customer_id, item.ruleset.needs_for(item.event["type"]), item.event["time"])
        except StoreUnavailable as exc:
            log.warning("customer %r: reading state failed: %s", item.customer_id, exc)
            item.failed_alone = True
            return None

    def commit_all(self, items: list[Item], commands: list[tuple | None]) -> list:
        """The reply of each command (None: none sent, or none known), one pipeline per node."""
        store = self.store
        by_node: dict[Any, list[int]] = {}
        for index, command in enumerate(commands):
            if command is not None:
                base = store.keys.base(items[index].customer_id)
                by_node.setdefault(store.topology.address_for(base), []).append(index)
        replies: list = [None] * len(commands)
        timeout = self.timeout_s or store.write_timeout_s
        for address, indexes in by_node.items():
            if address not in self.loaded:
                try:
                    store.exchange(address, pack_commands([("SCRIPT", "LOAD", COMMIT_ONCE_SCRIPT)]), 1, timeout)
                    self.loaded.add(address)
                except StoreUnavailable as exc:
                    log.warning("redis %s:%s: %s", address[0], address[1], exc)
                    continue
            try:
                answers = store.exchange(address, pack_commands([commands[i] for i in indexes]), len(indexes),
                                         timeout)
            except StoreUnavailable as exc:  # some may have been applied: their retry finds their keys
                log.warning("redis %s:%s: committing failed: %s", address[0], address[1], exc)
                self.loaded.discard(address)
                continue
            for i, answer in zip(indexes, answers):
                if is_noscript(answer) or isinstance(answer, Exception):
                    self.loaded.discard(address)  # restarted, flushed, or the slot moved: one by one
                    answer = self.commit_alone(items[i], commands[i])
                replies[i] = answer
        return replies

    def commit_alone(self, item: Item, command: tuple):
        """One commit through the store's own path (redirects followed, the script sent)."""
        store = self.store
        try:
            [answer] = store.call(store.keys.base(item.customer_id), [eval_instead(command)],
                                  self.timeout_s or store.write_timeout_s)
        except StoreUnavailable as exc:
            log.warning("customer %r: committing failed: %s", item.customer_id, exc)
            item.failed_alone = True
            return None
        if isinstance(answer, Exception):
            log.warning("customer %r: committing failed: %s", item.customer_id, answer)
            item.failed_alone = True
            return None
        return answer


__all__ = ["ALREADY_COMMITTED", "BAD", "DECIDED", "PENDING", "BatchDecider", "Item", "dumps"]
