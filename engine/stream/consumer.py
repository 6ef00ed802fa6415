"""`nba consume`: decide the events of Redis streams as a member of a consumer group.

Loop: (entries in hand from a failed round, or pending at a stopped consumer and claimed
with XAUTOCLAIM, or new ones from XREADGROUP) -> poison check -> decide the batch
(``batch.BatchDecider``: effects once per entry) -> XADD each entry's output -> XACK.

Round trips: when one node holds the input and output streams (a single Redis, always),
the consumer's own commands ride in the writes the batch makes anyway: the outputs and
XACK of the entries decided go before the next state reads (or before the next blocking
XREADGROUP), and a read of the next entries (without BLOCK) goes after the commits. Under
load a batch then takes two round trips (state reads, commits) instead of four, and each
saved one is a wake-up that may wait for a core.

Failures: a Redis that does not answer, restarts or loses the group is waited for (with a
growing pause), the group is created again, and the entries in hand are decided again
(their idempotency keys make that safe). Entries of a consumer that died are claimed after
``claim_idle_ms``; an entry delivered more than ``max_deliveries`` times goes to the
dead-letter stream. SIGTERM/SIGINT: the batch in hand is finished and acknowledged first.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import redis as redis_py
from redis.exceptions import ResponseError

from nba.engine.store import StoreUnavailable
from nba.engine.store.redis.protocol import CONNECTION_ERRORS, as_redirect, has_error, pack_commands, store_options_in
from nba.engine.stream.batch import DECIDED, PENDING, BatchDecider, Item, Rider
from nba.engine.stream.metrics import ConsumerStats, start_metrics

log = logging.getLogger("nba.consume")

RETRY_PAUSES_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # after the n-th failure in a row
DEAD_LETTERED = -1  # an Item's status once moved to the dead-letter stream
INFO_EVERY_S = 1.0  # lag and pending read from XINFO GROUPS this often
GC_YOUNG_THRESHOLD = 10_000  # allocations between collections of the youngest generation


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ConsumeSettings:
    streams: list[str]
    group: str = "nba"
    consumer: str = field(default_factory=default_consumer_name)
    outs: list[str] | None = None  # one per stream, or one for all; default STREAM:decisions
    count: int = 200  # entries per XREADGROUP / XAUTOCLAIM
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    record_ttl_s: float = 86_400.0  # how long an entry's idempotency record (and decision) is kept
    out_maxlen: int | None = None  # XADD MAXLEN ~ on the output stream
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    stats_every_s: float = 0.0  # 0: stats on stderr only at the end

    def out_for(self, stream: str) -> str:
        if not self.outs:
            return f"{stream}:decisions"
        if len(self.outs) == 1:
            return self.outs[0]
        return self.outs[self.streams.index(stream)]

    def dead_for(self, stream: str) -> str:
        return f"{stream}:dead"


class Consumer:
    """One member of the consumer group, deciding with ``engine`` (on a ``RedisStore``)."""

    def __init__(self, engine, settings: ConsumeSettings, url: str):
        self.engine = engine
        self.store = engine.store
        self.settings = settings
        self.url, _options = store_options_in(url)
        self.stats = ConsumerStats()
        self.decider = BatchDecider(engine, settings.record_ttl_s, settings.group)
        self.client = None  # redis-py, for the group's own commands
        self.in_hand: list[Item] = []  # read, not yet acknowledged
        self.claim_cursor = {stream: "0-0" for stream in settings.streams}
        self.next_claim = 0.0
        self.next_info = 0.0
        self.next_stats = time.monotonic() + settings.stats_every_s if settings.stats_every_s else float("inf")
        self.failures = 0
        self.stopping = False
        self.read_own_pending = True  # at start: entries this consumer name left pending
        self.shared_out = len(set(settings.out_for(s) for s in settings.streams)) < len(settings.streams)

    # -- running

    def request_stop(self, *_args) -> None:
        self.stopping = True

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)
        metrics = start_metrics(self, self.settings.metrics_host, self.settings.metrics_port)
        log.info(
            "consuming %s as %s of group %s%s",
            ", ".join(self.settings.streams),
            self.settings.consumer,
            self.settings.group,
            f", metrics on {metrics.server_address[0]}:{metrics.server_address[1]}" if metrics else "",
        )
        frozen = False
        gc.collect()
        gc.freeze()  # the loaded engine is not garbage: keep the cycle collector from scanning it again and again
        # A batch makes thousands of objects that live until it is answered: at the default 700
        # the young generation was collected every few entries (3% of the instructions per entry)
        gc.set_threshold(GC_YOUNG_THRESHOLD)
        try:
            while not self.stopping or self.in_hand:
                if not self.step() and self.stopping:
                    break
                if not frozen and self.stats.decided:  # connections, codecs and scripts made by the first batch too
                    gc.collect()
                    gc.freeze()
                    frozen = True
                self.after_step()
        finally:
            self.leave()
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()
            self.print_stats()
        return 0

    def step(self) -> bool:
        """One round; False when a failure left the entries in hand for later."""
        try:
            if self.client is None:
                self.connect()
            if any(item.status == PENDING for item in self.in_hand):  # read, or left by a failure
                self.handle()
            else:  # only decided ones (or none) in hand
                self.answer_and_read()
            if self.in_hand and self.stats.cpu_started is None:
                self.stats.cpu_started = time.process_time()
            self.failures = 0
            return True
        except ResponseError as error:
            if str(error).startswith("NOGROUP"):
                log.warning("the group %s is gone: creating it again", self.settings.group)
                self.stats.groups_created += 1
                self.client = None  # connect() creates it
            else:
                log.warning("redis: %s", error)
            self.failed()
        except (StoreUnavailable, *CONNECTION_ERRORS) as error:
            log.warning("redis is unavailable (%s); the %d entries in hand wait", error, len(self.in_hand))
            self.client = None
            self.failed()
        return False

    def failed(self) -> None:
        self.failures += 1
        self.stats.failures += 1
        self.read_own_pending = True

    def pause_after_failure(self) -> None:
        if self.failures:
            pause = RETRY_PAUSES_S[min(self.failures, len(RETRY_PAUSES_S)) - 1]
            deadline = time.monotonic() + pause
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(min(0.05, pause))

    def after_step(self) -> None:
        now = time.monotonic()
        if self.failures:
            self.pause_after_failure()
            return
        if now >= self.next_info:
            self.next_info = now + INFO_EVERY_S
            try:
                self.read_group_info()
            except (ResponseError, StoreUnavailable, *CONNECTION_ERRORS):
                pass
        if now >= self.next_stats:
            self.next_stats = now + self.settings.stats_every_s
            self.print_stats()

    def connect(self) -> None:
        client = make_client(self.url, self.store)
        for stream in self.settings.streams:
            try:
                client.xgroup_create(stream, self.settings.group, id="0", mkstream=True)
                log.info("created the group %s on %s", self.settings.group, stream)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self.client = client

    # -- reading

    def next_entries(self) -> list[Item]:
        if self.read_own_pending:
            items = self.own_pending()
            self.read_own_pending = False
            if items:
                return items
        now = time.monotonic()
        if now >= self.next_claim:
            items = self.claim()
            if items:
                self.next_claim = 0.0  # more may wait: claim again at once
                return items
            self.next_claim = now + max(0.05, min(self.settings.claim_idle_ms / 2000, 5.0))
        return self.read_new()

    def read_new(self) -> list[Item]:
        settings = self.settings
        streams = settings.streams
        block = settings.block_ms if not self.stopping else None
        if len(streams) > 1 and is_cluster(self.client):
            replies = []  # one read per stream (they live on several nodes): block only on the last
            for index, stream in enumerate(streams):
                replies += self.client.xreadgroup(
                    settings.group,
                    settings.consumer,
                    {stream: ">"},
                    count=settings.count,
                    block=block if index == len(streams) - 1 and not replies else None,
                )
        else:
            replies = self.client.xreadgroup(
                settings.group, settings.consumer, {s: ">" for s in streams}, count=settings.count, block=block
            )
        items = self.items_of(replies or [], 1)
        if items:
            self.stats.read += len(items)
            self.stats.lag_seconds = max(0.0, time.time() - entry_time(items[-1].entry_id))
        return items

    def home(self) -> tuple[str, int] | None:
        """The node that holds every input and output stream (a single Redis; on a cluster,
        when their slots live on one node): the consumer's own commands can ride there."""
        store = self.store
        topology = store.topology
        if topology.cluster is None:
            store.discover(store.io_timeout_s)
        if not topology.cluster:
            return topology.seed.address
        streams = self.settings.streams
        addresses = {topology.address_for(name) for name in [*streams, *map(self.settings.out_for, streams)]}
        return addresses.pop() if len(addresses) == 1 else None

    def read_command(self, block_ms: int | None) -> tuple:
        """XREADGROUP of new entries from every input stream (one node holds them all)."""
        settings = self.settings
        block = ("BLOCK", block_ms) if block_ms is not None else ()
        streams = settings.streams
        return (
            "XREADGROUP",
            "GROUP",
            settings.group,
            settings.consumer,
            "COUNT",
            settings.count,
            *block,
            "STREAMS",
            *streams,
            *[">"] * len(streams),
        )

    def entries_in(self, reply) -> tuple[list[Item], Exception | None]:
        """The items of an XREADGROUP's reply as read on a store link, or its error (a
        MOVED one is no error: the slot table is fetched again, and nothing was read)."""
        if isinstance(reply, Exception):
            redirect = as_redirect(reply)
            if redirect is None:
                return [], reply
            self.store.topology.moved(redirect)
            self.store.refresh_soon()
            return [], None
        items = []
        for stream, entries in reply or ():
            stream = as_text(stream)
            for entry_id, flat in entries:
                fields = None if flat is None else dict(zip(flat[::2], flat[1::2]))
                items.append(Item(stream, as_text(entry_id), fields, 1))
        if items:
            self.stats.read += len(items)
            self.stats.lag_seconds = max(0.0, time.time() - entry_time(items[-1].entry_id))
        return self.without_deleted(items), None

    def may_read_ahead(self, undecided: int) -> bool:
        """Whether this round's commits take a read of the next entries along: not when
        stopping, nor while a read of this consumer's pending entries or a claim is due
        (they come first), nor with more than a batch still to decide."""
        return (
            not self.stopping
            and not self.read_own_pending
            and time.monotonic() < self.next_claim
            and undecided <= self.settings.count
        )

    def own_pending(self) -> list[Item]:
        """The entries this consumer name was given and never acknowledged (a restart with
        ``--consumer`` of the same name)."""
        settings = self.settings
        items = []
        for stream in settings.streams:
            replies = self.client.xreadgroup(settings.group, settings.consumer, {stream: "0"}, count=settings.count)
            found = self.items_of(replies or [], 2)
            self.set_deliveries(stream, [item for item in found if item.fields is not None])
            items += found
        self.stats.read += len(items)
        return self.without_deleted(items)

    def claim(self) -> list[Item]:
        """Entries idle at any consumer (a dead one, or this one before a failure) for
        ``claim_idle_ms``; the ones deleted from the stream meanwhile are acknowledged."""
        settings = self.settings
        items = []
        for stream in settings.streams:
            # One at a time: an entry that kills its consumers (it is why it is pending) must not
            # take the entries beside it along until they too are delivered too often.
            reply = self.client.xautoclaim(
                stream,
                settings.group,
                settings.consumer,
                settings.claim_idle_ms,
                start_id=self.claim_cursor[stream],
                count=1,
            )
            cursor, claimed = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            self.claim_cursor[stream] = as_text(cursor)
            found = [Item(stream, as_text(entry_id), fields, 2) for entry_id, fields in claimed if entry_id]
            if deleted:
                found += [Item(stream, as_text(entry_id), None, 2) for entry_id in deleted]
            self.set_deliveries(stream, [item for item in found if item.fields is not None])
            items += found
        claimed_count = sum(1 for item in items if item.fields is not None)
        self.stats.claimed += claimed_count
        self.stats.read += claimed_count
        if claimed_count:
            log.debug("claimed %d entries idle for %d ms", claimed_count, settings.claim_idle_ms)
        return self.without_deleted(items)

    def set_deliveries(self, stream: str, items: list[Item]) -> None:
        """Each item's delivery count, from XPENDING."""
        if not items:
            return
        ids = sorted((item.entry_id for item in items), key=id_key)
        pending = self.client.xpending_range(
            stream,
            self.settings.group,
            min=ids[0],
            max=ids[-1],
            count=max(len(items) * 4, 100),
            consumername=self.settings.consumer,
        )
        counts = {as_text(row["message_id"]): row["times_delivered"] for row in pending}
        for item in items:
            item.deliveries = counts.get(item.entry_id, item.deliveries)

    def without_deleted(self, items: list[Item]) -> list[Item]:
        """Acknowledge (and count) the pending entries no longer in the stream (trimmed or deleted)."""
        gone = [item for item in items if item.fields is None]
        if not gone:
            return items
        for stream in {item.stream for item in gone}:
            ids = [item.entry_id for item in gone if item.stream == stream]
            self.client.xack(stream, self.settings.group, *ids)
        self.stats.deleted += len(gone)
        log.warning("%d pending entries were no longer in their stream: acknowledged", len(gone))
        return [item for item in items if item.fields is not None]

    def items_of(self, replies: list, deliveries: int) -> list[Item]:
        items = []
        for stream, entries in replies:
            stream = as_text(stream)
            for entry_id, fields in entries:
                items.append(Item(stream, as_text(entry_id), fields, deliveries))
        return items

    # -- deciding and answering

    def answer_and_read(self) -> None:
        """Answer the items in hand (all decided) and read the next entries: in one write,
        ``[XADD..., XACK, XREADGROUP BLOCK]``, when one node holds the streams and a plain
        read is next (Redis writes the outputs at once, then waits for entries)."""
        settings = self.settings
        finished = self.in_hand
        home = None
        if not self.stopping and not self.read_own_pending and time.monotonic() < self.next_claim:
            home = self.home() if settings.block_ms > 0 else None  # BLOCK 0 waits forever: redis-py's read
        if home is None:
            if finished:
                self.answer(finished)
            self.in_hand = []
            if not self.stopping:
                self.in_hand = self.next_entries()
            return
        store = self.store
        commands = [*self.answer_commands(finished), self.read_command(settings.block_ms)]
        timeout = settings.block_ms / 1000 + store.io_timeout_s
        replies = store.exchange(home, pack_commands(commands), len(commands), timeout)
        if finished:
            self.answered(finished, commands[:-1], replies[:-1])
        self.in_hand = []
        items, error = self.entries_in(replies[-1])
        if error is not None:
            raise error
        self.in_hand = items

    def handle(self) -> None:
        """Decide the items in hand that are not decided yet. The outputs and XACK of those
        decided before ride with the state reads, a read of the next entries with the
        commits. Raises (with the items still in hand) when Redis fails; the ones
        acknowledged are gone from it."""
        limit = self.settings.max_deliveries
        poison = [item for item in self.in_hand if item.status == PENDING and item.deliveries > limit]
        if poison:
            try:
                self.dead_letter(poison)
            finally:
                self.in_hand = [item for item in self.in_hand if item.status != DEAD_LETTERED]
        finished = [item for item in self.in_hand if item.status != PENDING]
        pending = [item for item in self.in_hand if item.status == PENDING]
        home = self.home()
        outputs = Rider(home, self.answer_commands(finished)) if home is not None and finished else None
        ahead = (
            Rider(home, [self.read_command(None)]) if home is not None and self.may_read_ahead(len(pending)) else None
        )
        self.decider.decide(pending, outputs, ahead)
        read, read_error = self.entries_in(ahead.replies[0]) if ahead is not None and ahead.replies else ([], None)
        self.in_hand += read
        if finished:
            if outputs is None or not outputs.sent:  # no state read on their node this round
                self.answer(finished)
            elif outputs.error is not None:
                raise outputs.error
            else:
                self.answered(finished, outputs.commands, outputs.replies)
        if read_error is not None:
            raise read_error
        unresolved = [item for item in pending if item.status == PENDING]
        alone = [item for item in unresolved if item.failed_alone]
        if alone:
            # Redis answered, with an error for these customers' state (another service
            # garbled it, a slot that cannot be reached): left pending, not held, so that
            # they hold up nothing; claimed again after --claim-idle-ms, and dead-lettered
            # after --max-deliveries.
            log.warning("%d entries could not be decided: left pending", len(alone))
            self.stats.left_pending += len(alone)
            self.in_hand = [item for item in self.in_hand if not item.failed_alone]
        if any(not item.failed_alone for item in unresolved):
            decided = [item for item in self.in_hand if item.status != PENDING]
            if decided:  # not held up by the pause after the failure
                self.answer(decided)
            raise StoreUnavailable(f"{len(unresolved) - len(alone)} entries could not be decided now")

    def dead_letter(self, items: list[Item]) -> None:
        settings = self.settings
        for item in items:
            fields = {
                b"entry": item.entry_id,
                b"stream": item.stream,
                b"group": settings.group,
                b"deliveries": str(item.deliveries),
            }
            for name, value in (item.fields or {}).items():
                fields.setdefault(name, value)
            self.client.xadd(settings.dead_for(item.stream), fields)
            self.client.xack(item.stream, settings.group, item.entry_id)
            item.status = DEAD_LETTERED
            log.warning(
                "entry %s of %s was delivered %d times: moved to %s",
                item.entry_id,
                item.stream,
                item.deliveries,
                settings.dead_for(item.stream),
            )
        self.stats.dead_lettered += len(items)

    def answer_commands(self, items: list[Item]) -> list[tuple]:
        """For each input stream: XADD each item's output, then one XACK of them all."""
        settings = self.settings
        trim = ("MAXLEN", "~", settings.out_maxlen) if settings.out_maxlen else ()
        by_stream: dict[str, list[Item]] = {}
        for item in items:
            by_stream.setdefault(item.stream, []).append(item)
        commands: list[tuple] = []
        for stream, done in by_stream.items():
            out = settings.out_for(stream)
            extra = ("stream", stream) if self.shared_out else ()
            commands += [
                (
                    "XADD",
                    out,
                    *trim,
                    "*",
                    "entry",
                    item.entry_id,
                    *extra,
                    "decision" if item.status == DECIDED else "error",
                    item.output,
                )
                for item in done
            ]
            commands.append(("XACK", stream, settings.group, *[item.entry_id for item in done]))
        return commands

    def answer(self, items: list[Item]) -> None:
        """XADD each item's output, then XACK them, in their own round trips (one pipeline
        per node: Redis runs them in order); the items leave the hand."""
        for stream in dict.fromkeys(item.stream for item in items):
            done = [item for item in items if item.stream == stream]
            commands = self.answer_commands(done)
            replies = self.send_in_order(self.settings.out_for(stream), commands[:-1], stream, commands[-1])
            self.answered(done, commands, replies)

    def answered(self, items: list[Item], commands: list[tuple], replies: list) -> None:
        """Check the replies to ``answer_commands(items)`` (sent in order on one node, or
        after redirects on a cluster); the items leave the hand and are counted."""
        if has_error(replies):  # a slot that moved: redis-py follows it
            error = next(reply for reply in replies if isinstance(reply, Exception))
            if not str(error).startswith(("MOVED", "ASK")):
                raise error
            for command in commands:  # in order: each XACK after its stream's outputs
                self.client.execute_command(*command)
        gone = set(map(id, items))
        self.in_hand = [item for item in self.in_hand if id(item) not in gone]
        decided = sum(1 for item in items if item.status == DECIDED)
        self.stats.decided += decided
        self.stats.bad += len(items) - decided
        self.stats.redelivered += sum(1 for item in items if item.redelivered)

    def send_in_order(self, out: str, writes: list[tuple], stream: str, ack: tuple) -> list:
        """The outputs on their node, then the XACK on the input stream's: the replies."""
        store = self.store
        topology = store.topology
        if topology.cluster is None:
            store.discover(store.io_timeout_s)
        out_node, in_node = topology.address_for(out), topology.address_for(stream)
        if out_node == in_node:
            return store.exchange(out_node, pack_commands([*writes, ack]), len(writes) + 1, store.io_timeout_s)
        replies = store.exchange(out_node, pack_commands(writes), len(writes), store.io_timeout_s)
        if not has_error(replies):
            replies += store.exchange(in_node, pack_commands([ack]), 1, store.io_timeout_s)
        return replies

    # -- observing

    def read_group_info(self) -> None:
        pending = lag = 0
        lag_known = True
        for stream in self.settings.streams:
            for group in self.client.xinfo_groups(stream):
                if as_text(group.get("name")) == self.settings.group:
                    pending += group.get("pending") or 0
                    if group.get("lag") is None:
                        lag_known = False
                    else:
                        lag += group["lag"]
        self.stats.pending = pending
        self.stats.lag_entries = lag if lag_known else None
        if lag == 0 and lag_known and not self.in_hand:
            self.stats.lag_seconds = 0.0

    def print_stats(self) -> None:
        print(json.dumps(self.snapshot()), file=sys.stderr, flush=True)

    def snapshot(self) -> dict:
        out = self.stats.snapshot()
        out["consumer"] = self.settings.consumer
        out["group"] = self.settings.group
        out["streams"] = list(self.settings.streams)
        engine_stats = self.engine.stats.snapshot()
        out["first_choices"] = engine_stats["first_choices"]
        out["passed_over"] = engine_stats["passed_over"]
        return out

    def leave(self) -> None:
        """On a clean stop: leave the group if nothing is pending at this consumer."""
        if self.client is None:
            return
        try:
            for stream in self.settings.streams:
                mine = self.client.xpending_range(
                    stream, self.settings.group, min="-", max="+", count=1, consumername=self.settings.consumer
                )
                if not mine:
                    self.client.xgroup_delconsumer(stream, self.settings.group, self.settings.consumer)
        except (ResponseError, *CONNECTION_ERRORS):
            pass


def make_client(url: str, store):
    """A redis-py client for the group's commands: a cluster client on a Redis Cluster."""
    if store.topology.cluster is None:
        store.discover(store.io_timeout_s)
    if store.topology.cluster:
        return redis_py.RedisCluster.from_url(url, socket_timeout=30, socket_connect_timeout=1)
    return redis_py.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=1)


def is_cluster(client) -> bool:
    return isinstance(client, redis_py.RedisCluster)


def as_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def entry_time(entry_id: str) -> float:
    """Seconds since the epoch when Redis added the entry (its id's first part)."""
    return int(entry_id.partition("-")[0]) / 1000
