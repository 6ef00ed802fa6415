"""``RedisStore``: the Store interface on the sync and asyncio transports."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time as clock
from typing import Any, Awaitable, Callable, NoReturn

from redis.exceptions import NoPermissionError, RedisError, ResponseError

from nba.dsl.needs import StateNeeds
from nba.engine.errors import StateError
from nba.engine.state import CustomerState, StateWrite
from nba.engine.store.interface import Reply, Store, StoreUnavailable, run_then
from nba.engine.store.redis.async_io import AsyncLink, AsyncNode
from nba.engine.store.redis.encoding import decode_profile
from nba.engine.store.redis.near_cache import NearCache
from nba.engine.store.redis.protocol import (
    BAD_STATE_ERRORS,
    CLUSTER_SLOTS,
    CONNECTION_ERRORS,
    Codec,
    Endpoint,
    Expiries,
    KeyLayout,
    NodeDown,
    RedisAccessDenied,
    Retention,
    Topology,
    base_of,
    checked,
    cluster_is_changing,
    commit_once_command,
    connection_options,
    decoded_state,
    describe,
    eval_instead,
    follow_redirects,
    has_error,
    is_noscript,
    is_try_again,
    log,
    once_reply,
    pack_commands,
    plan_put_profile,
    store_options_in,
    worth_resending,
)
from nba.engine.store.redis.sync_io import SyncLink, SyncNode, round_trip, send_only

MAX_CODECS = 4096  # a ruleset has one per event type its rules name, and one more; then they start over
SYNC_SETUP_TIMEOUT_S = 0.1  # a sync caller waits this long at most for a new connection's handshake
REFRESH_TIMEOUT_S = 0.5  # a slot table fetch (in the background) waits this long at most per node
RETRY_PAUSE_S = 0.005  # between the tries of a write the cluster asked to try again (TRYAGAIN, ...)
LOST_WRITE_LOG_INTERVAL_S = 1.0  # a lost write is logged at most once a second (with the count since)


class RedisStore(Store):
    """Customers' state in Redis; a Redis Cluster is found out and used by itself.

    ``latency_budget_s`` bounds the state read: past it (or with Redis down) ``read``
    raises ``StoreUnavailable`` and the engine decides without state. ``write_timeout_s``
    bounds a commit, ``io_timeout_s`` the profile calls, ``connect_timeout_s`` a connect;
    after a failed connect, calls fail fast for ``retry_interval_s`` before trying again.

    A write whose contacts a cap or policy counts is always awaited: a decision whose
    counted contacts could not be recorded is degraded (the engine decides again without
    state), never told as given. Any other write (the event kept for history, profile
    updates, contacts no cap or policy counts) cannot be refused, so unless
    ``wait_for_writes`` it is sent without waiting
    for its reply on a node's open connection (read on the connection's next round trip,
    which sees the write: Redis answers one connection in order); with no open connection
    to the node it is awaited. A write sent without waiting that Redis turns down later
    is sent again where that can help (script not loaded, slot moved or migrating, a
    failover) within ``write_timeout_s``, and else counted in ``lost_writes`` and logged.

    In a Redis Cluster the slot table is fetched again in the background, never inside a
    request once it is known (``protocol.Topology``): at most once per
    ``slot_refresh_interval_s``, one fetch at a time. A node that refuses or loses the
    connection is marked down (logged once when it goes down, once when it is back);
    requests for its slots fail at once (``StoreUnavailable``: degraded decisions) until
    it is back or its replica is promoted. ``counters()`` returns what the metrics show.

    Retention is MemoryStore's: each history type keeps its longest window, contacts the
    longest cap or policy window, relative to the newest time recorded for the customer,
    and at most ``max_events_per_type`` / ``max_contacts`` entries. History, contacts and
    the meta key expire ``retention + ttl_grace_s`` after the customer's last write;
    profiles only with ``profile_ttl_s``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        latency_budget_s: float = 0.001,
        write_timeout_s: float = 0.05,
        io_timeout_s: float = 1.0,
        connect_timeout_s: float = 0.01,
        retry_interval_s: float = 0.1,
        key_prefix: str = "nba",
        ttl_grace_s: float = 60.0,
        profile_ttl_s: float | None = None,
        max_events_per_type: int = 10_000,
        max_contacts: int = 10_000,
        wait_for_writes: bool = False,
        connect_now: bool = True,
        slot_refresh_interval_s: float = 0.25,
        near_cache: int = 0,
    ):
        self.url = url
        url, from_url = store_options_in(url)
        latency_budget_s = from_url.get("latency_budget_s", latency_budget_s)
        write_timeout_s = from_url.get("write_timeout_s", write_timeout_s)
        key_prefix = from_url.get("key_prefix", key_prefix)
        self.wait_for_writes = from_url.get("wait_for_writes", wait_for_writes)
        self.lost_writes = 0  # writes sent without waiting that Redis did not apply
        self.resent_writes = 0  # writes sent without waiting that were sent again and applied
        self.retried_writes = 0  # tries of an awaited write again after TRYAGAIN
        self.node_down_events = 0  # nodes that went down (a node counted once until it is back)
        self.lost_since_logged = 0
        self.lost_logged_at = float("-inf")
        self.resending: set[asyncio.Task] = set()  # background tasks: resends, slot table fetches
        self.codecs: dict[int, Codec] = {}  # id(needs) -> its codec
        self.expiries = Expiries()  # the TTLs this process set, and until when
        self.last_base: tuple[str | None, str, bytes] = (None, "", b"")  # customer id, its key base (text, bytes)
        self.latency_budget_s = latency_budget_s
        self.write_timeout_s = write_timeout_s
        self.io_timeout_s = io_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry_interval_s = retry_interval_s
        self.keys = KeyLayout(key_prefix)
        self.retention = Retention(ttl_grace_s, profile_ttl_s, max_events_per_type, max_contacts)
        near_cache = from_url.get("near_cache", near_cache)
        # customers' state kept between their decisions, true by Redis's invalidations (near_cache.py)
        self.near: NearCache | None = NearCache(near_cache, self.retention) if near_cache > 0 else None
        host, port, self.options, self.async_options = connection_options(url)
        self.topology = Topology(Endpoint(host, port, self.options, self.async_options), slot_refresh_interval_s)
        self.sync_nodes: dict[tuple[str, int], SyncNode] = {}
        self.async_nodes: dict[tuple[str, int], AsyncNode] = {}
        if connect_now:
            self.check_access()
            self.try_discover()

    # -- topology and nodes

    def check_access(self) -> None:
        """At start: raise ``RedisAccessDenied`` when the URL's node refuses the engine (a
        wrong password or user, TLS not trusted, an ACL without ``SCRIPT LOAD`` or
        ``CLUSTER SLOTS``), so that a wrong URL stops the start with one clear error. A
        node that cannot be reached is not an error here: decisions are made without state
        until it is back."""
        try:
            [reply] = self.exchange(self.topology.seed.address, CLUSTER_SLOTS, 1, self.io_timeout_s)
        except RedisAccessDenied:
            raise
        except StoreUnavailable:
            return
        if isinstance(reply, NoPermissionError):
            raise RedisAccessDenied(
                f"redis {self.topology.seed.address[0]}:{self.topology.seed.address[1]} "
                f"refused this engine: {reply} (see the ACL the engine needs)"
            )

    def try_discover(self) -> bool:
        """Find out whether the URL names a cluster (and its slots); False if unreachable."""
        try:
            self.discover()
        except StoreUnavailable:
            return False
        return True

    def discover(self, timeout_s: float | None = None) -> None:
        """Ask the seed node (or any node known before) for ``CLUSTER SLOTS``."""
        failure: StoreUnavailable | None = None
        for address in self.topology.candidates():
            self.topology.fetches += 1
            try:
                [reply] = self.exchange(address, CLUSTER_SLOTS, 1, timeout_s or self.io_timeout_s)
            except StoreUnavailable as error:
                failure = error
                continue
            self.topology.learn(reply)
            return
        raise failure or StoreUnavailable("redis: no node to ask")

    async def discover_async(self, timeout_s: float | None = None) -> None:
        failure: StoreUnavailable | None = None
        for address in self.topology.candidates():
            self.topology.fetches += 1
            try:
                [reply] = await self.exchange_async(address, CLUSTER_SLOTS, 1, timeout_s or self.io_timeout_s)
            except StoreUnavailable as error:
                failure = error
                continue
            self.topology.learn(reply)
            return
        raise failure or StoreUnavailable("redis: no node to ask")

    # -- the slot table, fetched again off the request path

    def refresh_soon(self) -> None:
        """Fetch the slot table again in a thread of its own, if the policy says it is time."""
        if self.topology.refresh_due(clock.monotonic()):
            threading.Thread(target=self.refresh, name="nba-redis-slots", daemon=True).start()

    def refresh(self) -> None:
        topology = self.topology
        reply: Any = None
        try:
            for address in topology.refresh_candidates():
                topology.fetches += 1
                try:
                    [reply] = self.exchange(address, CLUSTER_SLOTS, 1, min(self.io_timeout_s, REFRESH_TIMEOUT_S))
                except StoreUnavailable:
                    continue
                if has_error([reply]):  # a node loading or failing: ask another
                    continue
                topology.refreshed(reply, clock.monotonic())
                return
        finally:
            if topology.refreshing:
                topology.refresh_failed(clock.monotonic())

    def refresh_soon_async(self) -> None:
        """Fetch the slot table again in a task of its own, if the policy says it is time."""
        if self.topology.refresh_due(clock.monotonic()):
            self.in_background(self.refresh_async())

    async def refresh_async(self) -> None:
        topology = self.topology
        try:
            for address in topology.refresh_candidates():
                topology.fetches += 1
                try:
                    [reply] = await self.exchange_async(
                        address, CLUSTER_SLOTS, 1, min(self.io_timeout_s, REFRESH_TIMEOUT_S)
                    )
                except StoreUnavailable:
                    continue
                if has_error([reply]):
                    continue
                topology.refreshed(reply, clock.monotonic())
                return
        finally:
            if topology.refreshing:
                topology.refresh_failed(clock.monotonic())

    def in_background(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.resending.add(task)
        task.add_done_callback(self.resending.discard)

    def node_state(self, address: tuple[str, int], up: bool, why: str) -> None:
        """A node connected, or failed to: logged once per change, not per request.

        A connect forgets the TTLs set (``Expiries``): the connection may be new because
        Redis restarted, and a restarted Redis may have lost the keys they were set on."""
        topology = self.topology
        if up:
            self.expiries.forget()
            if topology.node_up(address):
                log.warning("redis node %s:%d is back", *address)
        elif topology.node_down(address):
            self.node_down_events += 1
            log.warning(
                "redis node %s:%d is down (%s): requests for its slots are degraded until it is back or replaced",
                address[0],
                address[1],
                why,
            )

    def in_a_cluster(self) -> bool:
        return self.topology.cluster is True

    def counters(self) -> dict:
        """What went wrong so far, for ``stats`` and the metrics (monotonic counts, and nodes down now)."""
        topology = self.topology
        return {
            "lost_writes": self.lost_writes,
            "resent_writes": self.resent_writes,
            "retried_writes": self.retried_writes,
            "slot_table_fetches": topology.fetches,
            "node_down_events": self.node_down_events,
            "nodes_down": len(topology.down),
            **(self.near.counters() if self.near is not None else {}),
        }

    def endpoint(self, address: tuple[str, int]) -> Endpoint:
        return Endpoint(address[0], address[1], self.options, self.async_options)

    def sync_node(self, address: tuple[str, int]) -> SyncNode:
        node = self.sync_nodes.get(address)
        if node is None:
            node = SyncNode(
                self.endpoint(address),
                self.connect_timeout_s,
                max(self.connect_timeout_s, SYNC_SETUP_TIMEOUT_S),
                self.retry_interval_s,
                self.node_state,
            )
            self.sync_nodes[address] = node
        return node

    def async_node(self, address: tuple[str, int]) -> AsyncNode:
        node = self.async_nodes.get(address)
        if node is None:
            node = AsyncNode(
                self.endpoint(address),
                max(self.connect_timeout_s, self.io_timeout_s),
                self.io_timeout_s,
                self.retry_interval_s,
                self.late_reply_async,
                self.node_state,
                self.near,
            )
            node.fail_fast_when_down = self.in_a_cluster
            self.async_nodes[address] = node
        return node

    # -- round trips

    def exchange(self, address: tuple[str, int], packed: bytes, count: int, timeout_s: float) -> list:
        """One round trip to one node: ``packed`` holds ``count`` commands.

        A connection that fails half-way is dropped, never reused.
        """
        node = self.sync_nodes.get(address) or self.sync_node(address)
        link = node.acquire()
        try:
            replies = round_trip(link, packed, count, timeout_s, self.late_reply)
        except CONNECTION_ERRORS as error:  # writes still unanswered on it were sent: most likely applied
            self.link_failed(link, address, error)
        node.release(link)
        return replies

    def send_to(self, address: tuple[str, int], packed: bytes, commands: list[tuple], timeout_s: float) -> None:
        """Send ``commands`` (packed) to one node without waiting for their replies."""
        node = self.sync_nodes.get(address) or self.sync_node(address)
        link = node.acquire()
        try:
            send_only(link, packed, commands, timeout_s)
        except CONNECTION_ERRORS as error:
            self.link_failed(link, address, error)
        node.release(link)

    def link_failed(self, link: SyncLink, address: tuple[str, int], error: BaseException) -> NoReturn:
        link.close()
        if isinstance(error, (TimeoutError, socket.timeout)):  # slow, not gone
            raise StoreUnavailable(f"redis {address[0]}:{address[1]}: {error}") from error
        self.node_state(address, False, f"connection lost: {error!r}")
        self.topology.lost(address)
        raise NodeDown(f"redis {address[0]}:{address[1]}: {error}") from error

    def exchange_async(self, address: tuple[str, int], packed: bytes, count: int, timeout_s: float) -> Awaitable[list]:
        """The replies of ``packed`` at ``address``, to await: a future on the node's open
        link (no coroutine of the store's own between the caller and the reply)."""
        node = self.async_nodes.get(address) or self.async_node(address)
        return node.request(packed, count, timeout_s)

    # -- writes sent without waiting: their replies arrive later

    def late_reply(self, command: tuple, reply: Any) -> None:
        """A write sent without waiting was answered: resend it where it must go, or count it lost."""
        if applied(command, reply):
            return
        if worth_resending(reply):
            reply = self.resend(command, reply)
            if applied(command, reply):
                return
        self.write_lost(reply)

    def resend(self, command: tuple, reply: Any) -> Any:
        """Send a write again (as EVAL) until applied or ``write_timeout_s`` is over; its last reply."""
        deadline = clock.monotonic() + self.write_timeout_s
        while True:
            if cluster_is_changing(reply) or is_try_again(reply) or isinstance(reply, NodeDown):
                if clock.monotonic() + RETRY_PAUSE_S >= deadline:
                    return reply
                clock.sleep(RETRY_PAUSE_S)
            try:
                [reply] = self.call(
                    command_key(command), [eval_instead(command)], max(deadline - clock.monotonic(), 0.001)
                )
            except StoreUnavailable as error:
                reply = error
            if applied(command, reply):
                self.resent_writes += 1
                return reply
            if not worth_resending(reply) or clock.monotonic() >= deadline:
                return reply

    def late_reply_async(self, command: tuple, reply: Any) -> None:
        if applied(command, reply):
            return
        if command[0] == "EXISTS":  # the near cache's read after a write failed: the keys are not tracked
            self.near.forget(base_of(command[1]))
            return
        if self.near is not None:  # it was applied to the near cache when sent
            self.near.forget(base_of(command_key(command)))
        if worth_resending(reply):
            self.in_background(self.resend_async(command, reply))
            return
        self.write_lost(reply)

    async def resend_async(self, command: tuple, reply: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_timeout_s
        while True:
            if cluster_is_changing(reply) or is_try_again(reply) or isinstance(reply, NodeDown):
                if loop.time() + RETRY_PAUSE_S >= deadline:
                    break
                await asyncio.sleep(RETRY_PAUSE_S)
            try:
                [reply] = await self.call_async(
                    command_key(command), [eval_instead(command)], max(deadline - loop.time(), 0.001)
                )
            except StoreUnavailable as error:
                reply = error
            if applied(command, reply):
                self.resent_writes += 1
                return
            if not worth_resending(reply) or loop.time() >= deadline:
                break
        self.write_lost(reply)

    def write_lost(self, why: Any) -> None:
        """Counted each time; logged at most once a second (a failover can lose many at once).

        The TTLs set are forgotten: the lost write may have been one that set one."""
        self.expiries.forget()
        self.lost_writes += 1
        self.lost_since_logged += 1
        now = clock.monotonic()
        if now - self.lost_logged_at >= LOST_WRITE_LOG_INTERVAL_S:
            log.warning("%d state write(s) sent without waiting were lost; the last: %s", self.lost_since_logged, why)
            self.lost_since_logged, self.lost_logged_at = 0, now

    def call(self, key: str, commands: list[tuple], timeout_s: float) -> list:
        """``commands`` (all on ``key``'s slot) in one round trip, following cluster redirects."""
        return self.call_packed(key, pack_commands(commands), len(commands), timeout_s, commands)

    def call_packed(
        self, key: str, packed: bytes, count: int, timeout_s: float, commands: list[tuple] | Callable[[], list[tuple]]
    ) -> list:
        """``packed`` (``count`` commands, all on ``key``'s slot) in one round trip.

        ``commands`` are the same commands as tuples (or a function making them), for the
        rare round trips that cannot resend the packed bytes as they are: cluster
        redirects are followed by ``protocol.follow_redirects``.
        """
        topology = self.topology
        if topology.cluster is None:  # not found out yet (Redis was down when the store started)
            self.discover(timeout_s)
        elif topology.stale:
            self.refresh_soon()
        address = topology.address_for(key)
        try:
            replies = self.exchange(address, packed, count, timeout_s)
            if not has_error(replies):
                return replies
            steps = follow_redirects(topology, packed, count, commands, replies)
            request = next(steps)
            while True:
                address = request[0]
                request = steps.send(self.exchange(*request, timeout_s))
        except StopIteration as done:
            return self.seen_errors(done.value)
        except NodeDown:
            topology.lost(address)
            self.refresh_soon()
            raise

    async def call_async(self, key: str, commands: list[tuple], timeout_s: float) -> list:
        return await self.call_packed_async(key, pack_commands(commands), len(commands), timeout_s, commands)

    async def call_packed_async(
        self, key: str, packed: bytes, count: int, timeout_s: float, commands: list[tuple] | Callable[[], list[tuple]]
    ) -> list:
        topology = self.topology
        if topology.cluster is None:  # not found out yet (Redis was down when the store started)
            await self.discover_async(timeout_s)
        elif topology.stale:
            self.refresh_soon_async()
        address = topology.address_for(key)
        try:
            replies = await self.exchange_async(address, packed, count, timeout_s)
        except NodeDown:  # not a timeout: a slow node keeps its slots
            self.node_lost(address)
            raise
        if not has_error(replies):
            return replies
        return await self.follow_async(address, packed, count, timeout_s, commands, replies)

    async def follow_async(
        self,
        address: tuple[str, int],
        packed: bytes,
        count: int,
        timeout_s: float,
        commands: list[tuple] | Callable[[], list[tuple]],
        replies: list,
    ) -> list:
        """The replies of ``packed``, sent to ``address``, whose first ``replies`` hold an
        error: cluster redirects followed (``protocol.follow_redirects``)."""
        steps = follow_redirects(self.topology, packed, count, commands, replies)
        try:
            request = next(steps)
            while True:
                address = request[0]
                request = steps.send(await self.exchange_async(*request, timeout_s))
        except StopIteration as done:
            return self.seen_errors(done.value)
        except NodeDown:
            self.node_lost(address)
            raise

    def node_lost(self, address: tuple[str, int]) -> None:
        """A node lost the connection: in a cluster, its slot table is fetched again soon."""
        self.topology.lost(address)
        self.refresh_soon_async()

    def open_link(self, key: str) -> tuple[tuple[str, int], AsyncLink | None]:
        """The node of ``key`` and its open link on the running loop; no link when there
        is none, or while the slot table is not known or being fetched again (the
        awaited path handles those)."""
        topology = self.topology
        if topology.cluster is None or topology.stale:
            return ("", 0), None
        address = topology.address_for(key)
        node = self.async_nodes.get(address)
        return address, node.ready_link() if node is not None else None

    def seen_errors(self, replies: list) -> list:
        """``replies`` (after redirects); an answer saying the cluster is changing marks the table stale."""
        if self.topology.cluster:
            for reply in replies:
                if cluster_is_changing(reply):
                    self.topology.stale = True
        return replies

    # -- the Store interface

    def codec(self, needs: StateNeeds) -> Codec:
        """The needs' codec, made once per needs (the ruleset's, and what each event type reads)."""
        codec = self.codecs.get(id(needs))
        if codec is None or codec.needs is not needs:
            if len(self.codecs) > MAX_CODECS:
                self.codecs.clear()
            codec = self.codecs[id(needs)] = Codec(needs, self.retention)
        return codec

    def base(self, customer_id: str) -> tuple[str | None, str, bytes]:
        """(customer id, the start of its keys as text and as bytes); the last one is kept."""
        last = self.last_base
        if last[0] == customer_id:
            return last
        text = self.keys.base(customer_id)
        last = self.last_base = (customer_id, text, text.encode())
        return last

    def ttls(self, needs: StateNeeds) -> tuple[int, int]:
        """``retention.ttls(needs)``, computed once per ruleset's needs."""
        return self.codec(needs).ttls

    def read(self, customer_id: str, needs: StateNeeds, time: float) -> CustomerState:
        codec = self.codec(needs)
        _, base, base_bytes = self.base(customer_id)
        replies = self.call_packed(
            base,
            codec.read_request(base_bytes, time),
            codec.count,
            self.latency_budget_s,
            lambda: codec.read_commands(base, time),
        )
        return decoded_state(codec, replies, base)

    async def read_async(self, customer_id: str, needs: StateNeeds, time: float) -> CustomerState:
        codec = self.codec(needs)
        _, base, base_bytes = self.base(customer_id)
        near = self.near
        if near is not None:
            address, link = self.open_link(base)
            if link is not None and link.tracking:
                return await self.read_tracked(near, link, address, codec, base, base_bytes, time)
        replies = await self.call_packed_async(
            base,
            codec.read_request(base_bytes, time),
            codec.count,
            self.latency_budget_s,
            lambda: codec.read_commands(base, time),
        )
        return decoded_state(codec, replies, base)

    async def read_tracked(
        self, near: NearCache, link: AsyncLink, address, codec: Codec, base: str, base_bytes: bytes, time: float
    ) -> CustomerState:
        """``read_async`` on a tracked link: from the near cache, or read and kept there."""
        state = self.cached(near, link, base, codec, time)
        if state is not None:
            return state
        tracking = link.tracking
        codec = near.read_codec(codec)
        packed = codec.read_request(base_bytes, time)
        future = link.request(packed, codec.count, self.latency_budget_s)
        near.started(base)
        try:
            replies = await future
            if has_error(replies):
                replies = await self.follow_async(
                    address,
                    packed,
                    codec.count,
                    self.latency_budget_s,
                    lambda: codec.read_commands(base, time),
                    replies,
                )
                tracking = 0  # answered elsewhere: not kept
            state = decoded_state(codec, replies, base)
        except BaseException:
            near.abandoned(base)
            raise
        if tracking and link.tracking == tracking:
            near.filled(base, codec, time, state)
        else:
            near.abandoned(base)
        return state

    def read_then(self, customer_id: str, needs: StateNeeds, time: float, then: Reply) -> None:
        """``read_async`` answered by a callback on the key's open link: no task, no future.
        Without an open link, or once Redis answers with an error (a redirect), the
        awaited path takes over."""
        state = None
        try:
            codec = self.codec(needs)
            _, base, base_bytes = self.base(customer_id)
            address, link = self.open_link(base)
            if link is not None:
                near = self.near
                tracking = link.tracking if near is not None else 0
                if tracking:
                    state = self.cached(near, link, base, codec, time)
                if state is None:
                    if tracking:
                        codec = near.read_codec(codec)
                    packed = codec.read_request(base_bytes, time)
                    link.request_then(
                        packed,
                        codec.count,
                        self.latency_budget_s,
                        ReadReplies(self, address, packed, codec, base, time, then, link, tracking),
                    )
                    if tracking:
                        near.started(base)
                    return
        except Exception as error:  # noqa: BLE001 - the caller is told whatever failed (NodeDown: the link just closed)
            failure = error
        else:
            failure = None
        if state is not None:  # from the near cache
            then(state, None)
        elif failure is None:
            run_then(self.read_async(customer_id, needs, time), then)
        else:
            then(None, failure)

    def cached(self, near: NearCache, link: AsyncLink, base: str, codec: Codec, time: float) -> CustomerState | None:
        """The near cache's state of the customer.

        The invalidations that arrived are read by the event loop (``InvalidationListener``)
        in the turn they arrive, not here: an event read in the same turn before them may be
        decided on the entry they drop, as on a read sent a moment earlier. (Reading the
        socket at every decision cost more than the rest of the hit: a system call.)"""
        changes = self.topology.changes
        if near.topology_changes != changes:  # keys may live on another node now
            near.topology_changes = changes
            near.flush()
        return near.lookup(base, codec, time)

    def forget(self, customer_id: str) -> None:
        """The near cache drops the customer (written by a path that does not apply it there)."""
        if self.near is not None:
            self.near.forget(self.keys.base(customer_id))

    def commit(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        self.forget(customer_id)  # not applied to the near cache: nothing to track again
        base, commands, wait = self.commit_plan(customer_id, needs, write, retrack=False)
        if commands is None:
            return wait  # True: nothing to write; False: refused by its own contacts
        if not wait and not self.topology.stale:  # stale: a node is down or a slot moved; await it
            self.send_only(base, commands)
            return True
        deadline = clock.monotonic() + self.write_timeout_s
        while True:
            replies = self.call(base, commands, max(deadline - clock.monotonic(), 0.001))
            if is_noscript(replies[0]):
                replies = self.call(
                    base, [eval_instead(commands[0]), *commands[1:]], max(deadline - clock.monotonic(), 0.001)
                )
            if not is_try_again(replies[0]) or clock.monotonic() + RETRY_PAUSE_S >= deadline:
                return committed(commands, replies)
            self.retried_writes += 1  # the slot is migrating, its keys split between two nodes
            clock.sleep(RETRY_PAUSE_S)

    async def commit_async(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        base, commands, wait = self.commit_plan(customer_id, needs, write)
        if commands is None:
            return wait
        if not wait and self.sent_at_once(base, commands):
            self.committed_near(base, needs, write, True)
            return True
        if self.near is None:
            return await self.commit_tries_async(base, commands)
        replies: list = []
        try:
            made = await self.commit_tries_async(base, commands, replies_to=replies)
        except BaseException:
            self.near.forget(base)
            raise
        # landed, on whichever connection (another of this process's would be announced);
        # applied only if its keys are tracked again (the EXISTS after it)
        self.committed_near(base, needs, write, made and not isinstance(replies[-1], RedisError))
        return made

    def committed_near(self, base: str, needs: StateNeeds, write: StateWrite, made: bool) -> None:
        """The near cache after a commit: the write applied to the customer's entry when it
        landed (``made``), else the customer dropped (refused by a cap: the decision reads
        again)."""
        near = self.near
        if near is None:
            return
        if made:
            near.wrote(base, self.codec(needs), write)
        else:
            near.forget(base)

    async def commit_tries_async(
        self,
        base: str,
        commands: list[tuple],
        first: tuple[tuple[str, int], list] | None = None,
        replies_to: list | None = None,
    ) -> bool:
        """An awaited commit, the script sent as EVAL when it is not loaded, tried again
        while its slot is migrating. ``first``: (the address, the replies) of a first try
        sent already, which hold an error; ``replies_to``: a list given the last try's replies."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_timeout_s
        while True:
            if first is not None:
                address, replies = first
                first = None
                replies = await self.follow_async(
                    address,
                    pack_commands(commands),
                    len(commands),
                    max(deadline - loop.time(), 0.001),
                    commands,
                    replies,
                )
            else:
                replies = await self.call_async(base, commands, max(deadline - loop.time(), 0.001))
            if is_noscript(replies[0]):
                replies = await self.call_async(
                    base, [eval_instead(commands[0]), *commands[1:]], max(deadline - loop.time(), 0.001)
                )
            if not is_try_again(replies[0]) or loop.time() + RETRY_PAUSE_S >= deadline:
                if replies_to is not None:
                    replies_to[:] = replies
                return committed(commands, replies)
            self.retried_writes += 1  # the slot is migrating, its keys split between two nodes
            await asyncio.sleep(RETRY_PAUSE_S)

    def commit_then(self, customer_id: str, needs: StateNeeds, write: StateWrite, then: Reply) -> None:
        """``commit_async`` answered by a callback on the key's open link (or at once, for a
        write sent without waiting); the awaited path for anything else."""
        result: Any = None
        near = self.near
        try:
            base, commands, wait = self.commit_plan(customer_id, needs, write)
            if commands is None:
                result = wait
            elif not wait and self.sent_at_once(base, commands):
                result = True
                self.committed_near(base, needs, write, True)
            else:
                address, link = self.open_link(base)
                if link is not None:
                    link.request_then(
                        pack_commands(commands),
                        len(commands),
                        self.write_timeout_s,
                        CommitReply(self, address, base, commands, then, needs, write),
                    )
                    return
        except Exception as error:  # noqa: BLE001 - the caller is told whatever failed (NodeDown: the link just closed)
            self.forget(customer_id)
            then(None, error)
            return
        if result is None:
            if near is not None:
                near.forget(base)
            run_then(self.commit_tries_async(base, commands), then)
        else:
            then(result, None)

    def commit_once(
        self, customer_id: str, needs: StateNeeds, write: StateWrite, key: str, record: bytes, record_ttl_s: float
    ) -> tuple[bool, bytes | None]:
        """``commit``, once per idempotency ``key`` of the customer: the check of the key,
        the write and the keeping of ``record`` (for ``record_ttl_s``) are one script.

        (True, None): committed now, record kept (an empty write records only the key);
        (False, None): refused by a cap, nothing written; (True, the record kept then):
        the key was committed before, nothing written now.
        """
        self.forget(customer_id)
        command = self.commit_once_command(customer_id, needs, write, key, record, record_ttl_s)
        if command is None:
            return False, None
        [reply] = self.call(self.base(customer_id)[1], [command], self.write_timeout_s)
        if is_noscript(reply):
            [reply] = self.call(self.base(customer_id)[1], [eval_instead(command)], self.write_timeout_s)
        status, kept = once_reply(checked([reply])[0])
        return status != 0, kept

    def commit_once_command(
        self, customer_id: str, needs: StateNeeds, write: StateWrite, key: str, record: bytes, record_ttl_s: float
    ) -> tuple | None:
        """The EVALSHA of ``commit_once``; None when the write's own contacts exceed a cap."""
        base = self.base(customer_id)[1]
        commit = None
        if not write.is_empty:
            commit = self.codec(needs).commit_command(base, write)
            if commit is None:
                return None
        return commit_once_command(commit, f"{base}:x:{key}", record, max(1, math.ceil(record_ttl_s * 1000)))

    def commit_plan(
        self, customer_id: str, needs: StateNeeds, write: StateWrite, retrack: bool = True
    ) -> tuple[str, list[tuple] | None, bool]:
        """(key base, the commands, whether to wait for their replies): the commit script's
        EVALSHA for a write that records contacts a cap counts, plain commands for any other
        (``Codec.commit_commands``), and with a near cache that the write is applied to
        (``retrack``: the asyncio paths) the ``EXISTS`` that tracks its keys again. Without
        commands, the third is the commit's result: True for a write with nothing to keep,
        False for one whose own contacts exceed a cap."""
        if write.is_empty:
            return "", None, True
        base = self.base(customer_id)[1]
        codec = self.codec(needs)
        commands = codec.commit_commands(base, write, self.expiries, clock.monotonic() * 1000.0)
        if not commands:
            return base, None, commands is not None
        if retrack and self.near is not None:  # Redis stops tracking a key once written: read again, tracked again
            commands.append(keys_read_again(commands))
        return base, commands, not self.may_send_only(write, codec)

    def may_send_only(self, write: StateWrite, codec: Codec) -> bool:
        """A write no cap or policy is at stake in (no contact, or contacts that no cap or
        policy of the ruleset counts: no check can refuse it, and the answer does not
        depend on it): unless told to wait, send it and go on. A write whose contacts a
        cap or policy counts is awaited, so that such a decision is never told given and
        not recorded (its caps are checked atomically in Redis)."""
        return not self.wait_for_writes and not (write.contacts and codec.with_contacts and write.cap_checks)

    def send_only(self, key: str, commands: list[tuple]) -> None:
        if self.topology.cluster is None:
            self.discover(self.write_timeout_s)
        self.send_to(self.topology.address_for(key), pack_commands(commands), commands, self.write_timeout_s)

    def sent_at_once(self, key: str, commands: list[tuple]) -> bool:
        """Send a write without waiting on its node's open link, if it has one (no coroutine).

        Not while the table is being fetched again or its node is down: then the write is
        awaited, and a failure is the decision's to report (degraded), not a lost write."""
        topology = self.topology
        if topology.cluster is None or topology.stale:
            return False
        node = self.async_nodes.get(topology.address_for(key))
        link = node.ready_link() if node is not None else None
        if link is None:
            return False
        link.send_only(pack_commands(commands), commands)
        return True

    def get_profile(self, customer_id: str, needs: StateNeeds) -> dict:
        key = self.keys.profile(customer_id)
        return profile_from(key, self.call(key, [("HGETALL", key)], self.io_timeout_s), needs)

    async def get_profile_async(self, customer_id: str, needs: StateNeeds) -> dict:
        key = self.keys.profile(customer_id)
        return profile_from(key, await self.call_async(key, [("HGETALL", key)], self.io_timeout_s), needs)

    def put_profile(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        commands = plan_put_profile(self.keys, customer_id, profile, needs, self.retention)
        self.forget(customer_id)
        self.expiries.forget_key(self.keys.profile(customer_id))  # replaced: its TTL too
        checked(self.call(self.keys.profile(customer_id), commands, self.io_timeout_s))

    async def put_profile_async(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        commands = plan_put_profile(self.keys, customer_id, profile, needs, self.retention)
        self.forget(customer_id)
        self.expiries.forget_key(self.keys.profile(customer_id))
        checked(await self.call_async(self.keys.profile(customer_id), commands, self.io_timeout_s))

    def close(self) -> None:
        """Read the replies still owed to writes sent without waiting, and disconnect."""
        for node in list(self.sync_nodes.values()):
            node.close(self.late_reply, self.write_timeout_s)

    async def close_async(self) -> None:
        self.close()
        for node in list(self.async_nodes.values()):
            await node.close(self.write_timeout_s)


def committed(commands: list[tuple], replies: list) -> bool:
    """The replies of a commit: the commit script's (recorded, or refused by a cap), or
    plain commands' (recorded); StoreUnavailable on an error (a key of the wrong type,
    ``BADSTATE`` or ``WRONGTYPE``, is logged: another service wrote it)."""
    for command, reply in zip(commands, replies):
        if command[0] == "EXISTS":  # the near cache's read after the write (CommitReply sees to it)
            continue
        if isinstance(reply, RedisError):  # LOADING is a ConnectionError, not a ResponseError
            if str(reply).startswith(("BADSTATE", "WRONGTYPE")):
                log.warning("state write refused: %s", reply)
            raise StoreUnavailable(f"redis: {reply}")
        if command[0] == "ZADD" and reply != (len(command) - 2) // 2:
            raise StoreUnavailable(f"redis: {command[1]} held a member this write adds")
    return replies[0] == 1 if commands[0][0] == "EVALSHA" else True


def applied(command: tuple, reply: Any) -> bool:
    """Whether a write sent without waiting was applied, by its reply: the commit script
    answers 1; a ZADD the number of its members (each is new: another that was there
    already, from another process in the same microsecond, leaves one fewer); any other
    plain command anything but an error."""
    name = command[0]
    if name == "EVALSHA":
        return reply == 1
    if name == "ZADD":
        return reply == (len(command) - 2) // 2
    return not isinstance(reply, BaseException)


def keys_read_again(commands: list[tuple]) -> tuple:
    """An ``EXISTS`` of every key ``commands`` write, to follow them in their pipeline (a
    read tracks the keys again for the near cache; Redis runs one connection's pipeline
    without another's commands in between)."""
    keys: dict = {}
    for command in commands:
        if command[0] in ("EVALSHA", "EVAL"):
            for key in command[3 : 3 + command[2]]:
                keys[key] = None
        else:
            keys[command[1]] = None
    return ("EXISTS", *keys)


def command_key(command: tuple) -> str:
    """The key a write is sent for (the first of a script's keys)."""
    return command[3] if command[0] in ("EVALSHA", "EVAL") else command[1]


def profile_from(key: str, replies: list, needs: StateNeeds) -> dict:
    """The profile of an HGETALL reply; ``StateError`` (``bad_state``, naming the key) when
    the key holds what no profile is (another service wrote it)."""
    [raw] = replies
    if isinstance(raw, ResponseError):
        if str(raw).startswith("WRONGTYPE"):
            raise StateError(f"{key} is not a hash of profile fields: {raw}")
        checked(replies)
    try:
        return decode_profile(raw, needs.profile_schema)
    except BAD_STATE_ERRORS as error:
        raise StateError(f"{key} holds a value that cannot be read: {describe(error)}") from None


class LinkReply:
    """The callback of a request sent on a link by ``read_then`` or ``commit_then``: a lost
    node is reported and the error passed on; replies holding an error (a cluster redirect,
    script not loaded, try again) go the awaited path (``awaited``); others are ``answered``."""

    __slots__ = ("store", "address", "then")

    def __call__(self, replies: list | None, error: BaseException | None) -> None:
        if error is not None:
            if isinstance(error, NodeDown):
                self.store.node_lost(self.address)
            self.then(None, error)
            return
        if has_error(replies):
            run_then(self.awaited(replies), self.then)
            return
        self.answered(replies)


class ReadReplies(LinkReply):
    """A read's replies decoded as state; with ``tracking`` (the link's tracking number
    when it was sent), kept by the near cache if the link is still tracked the same way
    and no invalidation of the customer arrived meanwhile."""

    __slots__ = ("packed", "codec", "base", "time", "link", "tracking")

    def __init__(
        self,
        store: RedisStore,
        address,
        packed: bytes,
        codec: Codec,
        base: str,
        time: float,
        then: Reply,
        link: AsyncLink | None = None,
        tracking: int = 0,
    ):
        self.store = store
        self.address = address
        self.packed = packed
        self.codec = codec
        self.base = base
        self.time = time
        self.then = then
        self.link = link
        self.tracking = tracking

    def __call__(self, replies: list | None, error: BaseException | None) -> None:
        if self.tracking and (error is not None or has_error(replies)):
            self.tracking = 0  # not cached: the read failed, or goes on elsewhere
            self.store.near.abandoned(self.base)
        LinkReply.__call__(self, replies, error)

    def answered(self, replies: list) -> None:
        try:
            state = decoded_state(self.codec, replies, self.base)
        except Exception as failure:  # noqa: BLE001 - StoreUnavailable (state another service wrote), or a bug
            if self.tracking:
                self.store.near.abandoned(self.base)
            self.then(None, failure)
            return
        if self.tracking:
            if self.link.tracking == self.tracking:
                self.store.near.filled(self.base, self.codec, self.time, state)
            else:
                self.store.near.abandoned(self.base)
        self.then(state, None)

    async def awaited(self, replies: list) -> CustomerState:
        codec, base, time = self.codec, self.base, self.time
        replies = await self.store.follow_async(
            self.address,
            self.packed,
            codec.count,
            self.store.latency_budget_s,
            lambda: codec.read_commands(base, time),
            replies,
        )
        return decoded_state(codec, replies, base)


class CommitReply(LinkReply):
    """An awaited commit's replies: recorded (and applied to the near cache), or refused
    by a cap (the near cache forgets the customer: the decision reads Redis again)."""

    __slots__ = ("base", "commands", "needs", "write")

    def __init__(
        self,
        store: RedisStore,
        address,
        base: str,
        commands: list[tuple],
        then: Reply,
        needs: StateNeeds | None = None,
        write: StateWrite | None = None,
    ):
        self.store = store
        self.address = address
        self.base = base
        self.commands = commands
        self.then = then
        self.needs = needs
        self.write = write

    def __call__(self, replies: list | None, error: BaseException | None) -> None:
        near = self.store.near
        if near is not None and (error is not None or has_error(replies)):
            near.forget(self.base)
        LinkReply.__call__(self, replies, error)

    def answered(self, replies: list) -> None:
        try:
            made = committed(self.commands, replies)
        except Exception as failure:  # noqa: BLE001 - StoreUnavailable: Redis refused the write
            near = self.store.near
            if near is not None:
                near.forget(self.base)
            self.then(None, failure)
            return
        # applied to the near cache only if its keys are tracked again (the EXISTS after it)
        self.store.committed_near(self.base, self.needs, self.write, made and not isinstance(replies[-1], RedisError))
        self.then(made, None)

    def awaited(self, replies: list):
        return self.store.commit_tries_async(self.base, self.commands, (self.address, replies))
