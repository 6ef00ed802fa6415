"""``RedisStore``: the Store interface on the sync and asyncio transports."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, NoReturn


from nba.engine.state import CustomerState, StateNeeds, StateWrite, Store, StoreUnavailable

from nba.engine.store.redis.encoding import decode_profile
from nba.engine.store.redis.protocol import (
    CLUSTER_SLOTS,
    CONNECTION_ERRORS,
    Codec,
    Endpoint,
    KeyLayout,
    Retention,
    Topology,
    as_redirect,
    checked,
    connection_options,
    decoded_state,
    eval_instead,
    follow_redirects,
    has_error,
    is_noscript,
    log,
    pack_command,
    pack_commands,
    plan_put_profile,
    store_options_in,
)
from nba.engine.store.redis.sync_io import SyncLink, SyncNode, round_trip, send_only
from nba.engine.store.redis.async_io import AsyncNode

MAX_CODECS = 4096  # a ruleset has one per event type its rules name, and one more; then they start over
SYNC_SETUP_TIMEOUT_S = 0.1  # a sync caller waits this long at most for a new connection's handshake


class RedisStore(Store):
    """Customers' state in Redis; a Redis Cluster is found out and used by itself.

    ``latency_budget_s`` bounds the state read: past it (or with Redis down) ``read``
    raises ``StoreUnavailable`` and the engine decides without state. ``write_timeout_s``
    bounds a commit, ``io_timeout_s`` the profile calls, ``connect_timeout_s`` a connect;
    after a failed connect, calls fail fast for ``retry_interval_s`` before trying again.

    A write that no cap or policy checks cannot be refused, so unless
    ``wait_for_writes`` it is sent without waiting for its reply (read on the connection's
    next round trip, which sees the write: Redis answers one connection in order). A
    decision then costs one round trip; a write that Redis turns down later is retried
    where it can be (script not loaded, slot moved) and else counted in ``lost_writes``.

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
    ):
        self.url = url
        url, from_url = store_options_in(url)
        latency_budget_s = from_url.get("latency_budget_s", latency_budget_s)
        write_timeout_s = from_url.get("write_timeout_s", write_timeout_s)
        key_prefix = from_url.get("key_prefix", key_prefix)
        self.wait_for_writes = from_url.get("wait_for_writes", wait_for_writes)
        self.lost_writes = 0  # writes sent without waiting that Redis did not apply
        self.resending: set[asyncio.Task] = set()
        self.codecs: dict[int, Codec] = {}  # id(needs) -> its codec
        self.last_base: tuple[str | None, str, bytes] = (None, "", b"")  # customer id, its key base (text, bytes)
        self.latency_budget_s = latency_budget_s
        self.write_timeout_s = write_timeout_s
        self.io_timeout_s = io_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry_interval_s = retry_interval_s
        self.keys = KeyLayout(key_prefix)
        self.retention = Retention(ttl_grace_s, profile_ttl_s, max_events_per_type, max_contacts)
        host, port, self.options, self.async_options = connection_options(url)
        self.topology = Topology(Endpoint(host, port, self.options, self.async_options))
        self.sync_nodes: dict[tuple[str, int], SyncNode] = {}
        self.async_nodes: dict[tuple[str, int], AsyncNode] = {}
        if connect_now:
            self.try_discover()

    # -- topology and nodes

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
            try:
                [reply] = await self.exchange_async(address, CLUSTER_SLOTS, 1, timeout_s or self.io_timeout_s)
            except StoreUnavailable as error:
                self.topology.lost(address)
                failure = error
                continue
            self.topology.learn(reply)
            return
        raise failure or StoreUnavailable("redis: no node to ask")

    def endpoint(self, address: tuple[str, int]) -> Endpoint:
        return Endpoint(address[0], address[1], self.options, self.async_options)

    def sync_node(self, address: tuple[str, int]) -> SyncNode:
        node = self.sync_nodes.get(address)
        if node is None:
            node = SyncNode(self.endpoint(address), self.connect_timeout_s,
                            max(self.connect_timeout_s, SYNC_SETUP_TIMEOUT_S), self.retry_interval_s)
            self.sync_nodes[address] = node
        return node

    def async_node(self, address: tuple[str, int]) -> AsyncNode:
        node = self.async_nodes.get(address)
        if node is None:
            node = AsyncNode(self.endpoint(address), max(self.connect_timeout_s, self.io_timeout_s),
                             self.io_timeout_s, self.retry_interval_s, self.late_reply_async)
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
        self.topology.lost(address)
        raise StoreUnavailable(f"redis {address[0]}:{address[1]}: {error}") from error

    def exchange_async(self, address: tuple[str, int], packed: bytes, count: int, timeout_s: float) -> Awaitable[list]:
        """The replies of ``packed`` at ``address``, to await: a future on the node's open
        link (no coroutine of the store's own between the caller and the reply)."""
        node = self.async_nodes.get(address) or self.async_node(address)
        return node.request(packed, count, timeout_s)

    async def send_to_async(self, address: tuple[str, int], packed: bytes, commands: list[tuple],
                            timeout_s: float) -> None:
        node = self.async_nodes.get(address) or self.async_node(address)
        try:
            await node.send_only(packed, commands, timeout_s)
        except StoreUnavailable:
            self.topology.lost(address)
            raise

    # -- writes sent without waiting: their replies arrive later

    def late_reply(self, command: tuple, reply: Any) -> None:
        """A write sent without waiting was answered: resend it where it must go, or count it lost."""
        if reply == 1:
            return
        if is_noscript(reply) or as_redirect(reply) is not None:
            try:
                self.call(command[3], [eval_instead(command)], self.write_timeout_s)
                return
            except StoreUnavailable:
                pass
        self.write_lost(reply)

    def late_reply_async(self, command: tuple, reply: Any) -> None:
        if reply == 1:
            return
        if is_noscript(reply) or as_redirect(reply) is not None:
            task = asyncio.get_running_loop().create_task(self.resend_async(command))
            self.resending.add(task)
            task.add_done_callback(self.resending.discard)
            return
        self.write_lost(reply)

    async def resend_async(self, command: tuple) -> None:
        try:
            await self.call_async(command[3], [eval_instead(command)], self.write_timeout_s)
        except StoreUnavailable as error:
            self.write_lost(error)

    def write_lost(self, why: Any) -> None:
        self.lost_writes += 1
        log.warning("a state write sent without waiting was lost: %s", why)

    def call(self, key: str, commands: list[tuple], timeout_s: float) -> list:
        """``commands`` (all on ``key``'s slot) in one round trip, following cluster redirects."""
        return self.call_packed(key, pack_commands(commands), len(commands), timeout_s, commands)

    def call_packed(self, key: str, packed: bytes, count: int, timeout_s: float,
                    commands: list[tuple] | Callable[[], list[tuple]]) -> list:
        """``packed`` (``count`` commands, all on ``key``'s slot) in one round trip.

        ``commands`` are the same commands as tuples (or a function making them), for the
        rare round trips that cannot resend the packed bytes as they are: cluster
        redirects are followed by ``protocol.follow_redirects``.
        """
        topology = self.topology
        if topology.cluster is None:
            self.discover(timeout_s)
        replies = self.exchange(topology.address_for(key), packed, count, timeout_s)
        if not has_error(replies):
            return replies
        steps = follow_redirects(topology, packed, count, commands, replies)
        try:
            request = next(steps)
            while True:
                request = steps.send(self.exchange(*request, timeout_s))
        except StopIteration as done:
            return done.value

    async def call_async(self, key: str, commands: list[tuple], timeout_s: float) -> list:
        return await self.call_packed_async(key, pack_commands(commands), len(commands), timeout_s, commands)

    async def call_packed_async(self, key: str, packed: bytes, count: int, timeout_s: float,
                                commands: list[tuple] | Callable[[], list[tuple]]) -> list:
        topology = self.topology
        if topology.cluster is None:
            await self.discover_async(timeout_s)
        address = topology.address_for(key)
        try:
            replies = await self.exchange_async(address, packed, count, timeout_s)
            if not has_error(replies):
                return replies
            steps = follow_redirects(topology, packed, count, commands, replies)
            request = next(steps)
            while True:
                address = request[0]
                request = steps.send(await self.exchange_async(*request, timeout_s))
        except StopIteration as done:
            return done.value
        except StoreUnavailable:
            topology.lost(address)
            raise

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
        replies = self.call_packed(base, codec.read_request(base_bytes, time), codec.count, self.latency_budget_s,
                                   lambda: codec.read_commands(base, time))
        return decoded_state(codec, replies, customer_id)

    async def read_async(self, customer_id: str, needs: StateNeeds, time: float) -> CustomerState:
        codec = self.codec(needs)
        _, base, base_bytes = self.base(customer_id)
        replies = await self.call_packed_async(base, codec.read_request(base_bytes, time), codec.count,
                                               self.latency_budget_s, lambda: codec.read_commands(base, time))
        return decoded_state(codec, replies, customer_id)

    def commit(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        base, command, wait = self.commit_plan(customer_id, needs, write)
        if command is None:
            return wait  # True: nothing to write; False: refused by its own contacts
        if not wait:
            self.send_only(base, command)
            return True
        [reply] = self.call(base, [command], self.write_timeout_s)
        if is_noscript(reply):
            [reply] = self.call(base, [eval_instead(command)], self.write_timeout_s)
        return checked([reply])[0] == 1

    async def commit_async(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        base, command, wait = self.commit_plan(customer_id, needs, write)
        if command is None:
            return wait
        if not wait:
            if not self.sent_at_once(base, command):
                await self.send_only_async(base, command)
            return True
        [reply] = await self.call_async(base, [command], self.write_timeout_s)
        if is_noscript(reply):
            [reply] = await self.call_async(base, [eval_instead(command)], self.write_timeout_s)
        return checked([reply])[0] == 1

    def commit_plan(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> tuple[str, tuple | None, bool]:
        """(key base, the EVALSHA command, whether to wait for its reply); without a
        command, the third is the commit's result: True for an empty write, False for one
        whose own contacts exceed a cap."""
        if write.is_empty:
            return "", None, True
        base = self.base(customer_id)[1]
        command = self.codec(needs).commit_command(base, write)
        if command is None:
            return base, None, False
        return base, command, not self.may_send_only(write)

    def may_send_only(self, write: StateWrite) -> bool:
        """A write no cap can refuse: unless told to wait, send it and go on."""
        return not self.wait_for_writes and not (write.contacts and write.cap_checks)

    def send_only(self, key: str, command: tuple) -> None:
        if self.topology.cluster is None:
            self.discover(self.write_timeout_s)
        self.send_to(self.topology.address_for(key), pack_command(command), [command], self.write_timeout_s)

    def sent_at_once(self, key: str, command: tuple) -> bool:
        """Send a write without waiting on its node's open link, if it has one (no coroutine)."""
        topology = self.topology
        if topology.cluster is None:
            return False
        node = self.async_nodes.get(topology.address_for(key))
        link = node.ready_link() if node is not None else None
        if link is None:
            return False
        link.send_only(pack_command(command), [command])
        return True

    async def send_only_async(self, key: str, command: tuple) -> None:
        if self.topology.cluster is None:
            await self.discover_async(self.write_timeout_s)
        await self.send_to_async(self.topology.address_for(key), pack_command(command), [command],
                                 self.write_timeout_s)

    def get_profile(self, customer_id: str, needs: StateNeeds) -> dict:
        key = self.keys.profile(customer_id)
        [raw] = checked(self.call(key, [("HGETALL", key)], self.io_timeout_s))
        return decode_profile(raw, needs.profile_schema)

    async def get_profile_async(self, customer_id: str, needs: StateNeeds) -> dict:
        key = self.keys.profile(customer_id)
        [raw] = checked(await self.call_async(key, [("HGETALL", key)], self.io_timeout_s))
        return decode_profile(raw, needs.profile_schema)

    def put_profile(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        commands = plan_put_profile(self.keys, customer_id, profile, needs, self.retention)
        checked(self.call(self.keys.profile(customer_id), commands, self.io_timeout_s))

    async def put_profile_async(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        commands = plan_put_profile(self.keys, customer_id, profile, needs, self.retention)
        checked(await self.call_async(self.keys.profile(customer_id), commands, self.io_timeout_s))

    def close(self) -> None:
        """Read the replies still owed to writes sent without waiting, and disconnect."""
        for node in list(self.sync_nodes.values()):
            node.close(self.late_reply, self.write_timeout_s)

    async def close_async(self) -> None:
        self.close()
        for node in list(self.async_nodes.values()):
            await node.close(self.write_timeout_s)
