"""RedisStore against a real Redis Cluster (3 masters, 3 replicas), found out from the URL of one node."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
import redis as redis_py

from nba.dsl.needs import HistoryNeed, StateNeeds
from nba.engine import Engine
from nba.engine.state import CapCheck, Contact, StateWrite
from nba.engine.store import StoreUnavailable
from nba.engine.store.redis import KeyLayout, RedisStore

from polling import wait_until
from redis_fixtures import REDIS_CLI, needs_redis

pytestmark = needs_redis

T0 = 1_764_000_000.5
DAY = 86400.0
NEEDS = StateNeeds(
    history={"page_view": HistoryNeed(("category",), 1800.0)},
    contact_window=DAY,
    profile_schema={"ltv": "number"},
)
CAP = CapCheck("rule", "r1", 1, DAY)
CUSTOMERS = [f"customer-{n}" for n in range(40)]  # spread over the three nodes' slots


def write(time, profile_set=None, with_contact=False) -> StateWrite:
    contacts = [Contact(time, "r1", "a1", "email")] if with_contact else []
    return StateWrite(
        time=time,
        event_type="page_view",
        event_record={"category": "shoes"},
        contacts=contacts,
        cap_checks=[CAP] if with_contact else [],
        profile_set=profile_set or {},
    )


@pytest.fixture
def store(redis_cluster_url):
    store = RedisStore(redis_cluster_url, latency_budget_s=2.0, write_timeout_s=2.0, connect_timeout_s=1.0)
    yield store
    store.close()


def test_any_node_url_is_found_to_be_a_cluster(redis_cluster):
    for node in redis_cluster.nodes:
        store = RedisStore(node.url, latency_budget_s=2.0)
        assert store.topology.cluster is True
        assert len(store.topology.masters()) == 3
        store.close()


def test_customers_on_every_node_round_trip(store, redis_cluster):
    for n, customer in enumerate(CUSTOMERS):
        store.put_profile(customer, {"ltv": n}, NEEDS)
        assert store.commit(customer, NEEDS, write(T0, {"ltv": n + 0.5}, with_contact=True))
        assert not store.commit(customer, NEEDS, write(T0 + 1, with_contact=True))
    for n, customer in enumerate(CUSTOMERS):
        state = store.read(customer, NEEDS, T0 + 1)
        assert state.profile == {"ltv": n + 0.5}
        assert state.history["page_view"].times == [T0]
        assert len(state.contacts) == 1
    used = {store.topology.address_for(KeyLayout().profile(customer)) for customer in CUSTOMERS}
    assert len(used) == 3


def test_async_paths_on_the_cluster(store):
    async def scenario():
        for customer in CUSTOMERS[:10]:
            assert await store.commit_async(customer, NEEDS, write(T0, {"ltv": 1}, with_contact=True))
            assert not await store.commit_async(customer, NEEDS, write(T0, with_contact=True))
        states = [await store.read_async(customer, NEEDS, T0) for customer in CUSTOMERS[:10]]
        await store.close_async()
        return states

    for state in asyncio.run(scenario()):
        assert state.profile == {"ltv": 1} and len(state.contacts) == 1


def answer_of(start) -> asyncio.Future:
    """What ``start(then)`` hands its callback, as a future (``read_then``/``commit_then``)."""
    future = asyncio.get_running_loop().create_future()
    start(lambda result, error: future.set_result(result) if error is None else future.set_exception(error))
    return future


def test_callback_paths_on_the_cluster_follow_moved(store):
    """By callback on each node's open link; a slot pointed at the wrong node is answered
    MOVED, followed on the awaited path, and learnt."""

    async def scenario():
        for customer in CUSTOMERS[:10]:  # every node's link opened
            await store.read_async(customer, NEEDS, T0)
        for customer in CUSTOMERS[:10]:
            gave = write(T0, {"ltv": 1}, with_contact=True)
            assert await answer_of(lambda then, c=customer, w=gave: store.commit_then(c, NEEDS, w, then))
            refused = write(T0, with_contact=True)
            assert not await answer_of(lambda then, c=customer, w=refused: store.commit_then(c, NEEDS, w, then))
        moved = []
        for customer in CUSTOMERS[10:12]:
            key, right = point_slot_elsewhere(store, customer)
            moved.append((key, right))
        states = [
            await answer_of(lambda then, c=customer: store.read_then(c, NEEDS, T0, then)) for customer in CUSTOMERS[:12]
        ]
        await store.close_async()
        return states, moved

    states, moved = asyncio.run(scenario())
    for state in states[:10]:
        assert state.profile == {"ltv": 1} and len(state.contacts) == 1
    assert all(store.topology.address_for(key) == right for key, right in moved)


def point_slot_elsewhere(store: RedisStore, customer: str) -> tuple:
    key = KeyLayout().profile(customer)
    right = store.topology.address_for(key)
    wrong = next(address for address in store.topology.masters() if address != right)
    store.topology.slots[redis_py.cluster.key_slot(key.encode())] = wrong
    return key, right


@pytest.mark.parametrize("with_contact", [False, True], ids=["sent-without-waiting", "awaited"])
def test_a_stale_slot_table_follows_moved(store, with_contact):
    customer = CUSTOMERS[0]
    key, right = point_slot_elsewhere(store, customer)
    assert store.commit(customer, NEEDS, write(T0, {"ltv": 7}, with_contact=with_contact))
    assert store.get_profile(customer, NEEDS) == {"ltv": 7}
    assert store.topology.address_for(key) == right
    assert store.lost_writes == 0


def test_a_slot_being_migrated_is_followed_by_ask(store, redis_cluster):
    customer = "migrating-customer"
    layout = KeyLayout()
    assert store.commit(customer, NEEDS, write(T0, {"ltv": 1}, with_contact=True))  # every key exists
    keys = [
        layout.meta(customer),
        layout.contacts(customer),
        layout.profile(customer),
        layout.history(customer, "page_view"),
    ]
    slot = redis_py.cluster.key_slot(keys[0].encode())
    source_host, source_port = store.topology.address_for(keys[0])
    nodes = {node.port: redis_py.Redis(host="127.0.0.1", port=node.port) for node in redis_cluster.masters}
    source = nodes.pop(source_port)
    target_port, target = next(iter(nodes.items()))
    source_id, target_id = source.execute_command("CLUSTER", "MYID"), target.execute_command("CLUSTER", "MYID")
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    try:
        source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", *keys)
        state = store.read(customer, NEEDS, T0)  # the source answers ASK: asked again on the target
        assert state.profile == {"ltv": 1} and len(state.contacts) == 1
        assert not store.commit(customer, NEEDS, write(T0 + 1, with_contact=True))  # the cap, checked there
        assert store.commit(customer, NEEDS, write(T0 + 1, {"ltv": 2}))
        assert store.get_profile(customer, NEEDS) == {"ltv": 2}
        assert target.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 4
        assert source.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert store.lost_writes == 0
    finally:
        for node in (source, target):
            node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            node.close()
        for node in nodes.values():
            node.close()


# -- a failing node never makes the request path fetch the slot table


def dead_address() -> tuple[str, int]:
    """A loopback port nobody listens on: connecting is refused, like a killed node."""
    from redis_fixtures import free_port

    return ("127.0.0.1", free_port())


def slot_table_fetches(cluster) -> int:
    """CLUSTER SLOTS answered by the cluster's running nodes so far (counted by Redis itself)."""
    total = 0
    for node in cluster.nodes:
        if node.running:
            stats = node.info("commandstats").get("cmdstat_cluster|slots", "calls=0")
            total += int(stats.split(",")[0].split("=")[1])
    return total


def test_a_slot_pointing_at_a_dead_node_is_put_right_in_the_background(store):
    customer = "dead-slot"
    key = KeyLayout().profile(customer)
    slot = redis_py.cluster.key_slot(key.encode())
    store.read(customer, NEEDS, T0)  # the table is known
    dead = store.topology.slots[slot] = dead_address()
    with pytest.raises(StoreUnavailable):
        store.read(customer, NEEDS, T0)  # fails at once: no fetch of the table inside it
    assert store.topology.cluster is True  # before: the table was dropped, fetched again by the next request
    # fetched again in a thread of its own
    wait_until(lambda: store.topology.address_for(key) != dead, "the slot's new address", interval_s=0.01)
    assert store.read(customer, NEEDS, T0).profile == {}
    assert store.counters()["node_down_events"] == 1 and store.counters()["nodes_down"] == 0


@pytest.mark.cluster_faults
def test_a_master_killed_under_sync_reads(own_redis_cluster):
    store = RedisStore(own_redis_cluster.url, **LOAD_OPTIONS)
    victim = own_redis_cluster.masters[0]
    victim_address = ("127.0.0.1", victim.port)
    meta = KeyLayout().meta
    for customer in CUSTOMERS:
        store.read(customer, NEEDS, T0)  # connected to every master
    on_victim = {customer for customer in CUSTOMERS if store.topology.address_for(meta(customer)) == victim_address}
    victim.stop()  # SIGKILL
    fetches, killed_at = slot_table_fetches(own_redis_cluster), time.monotonic()
    failed = {True: 0, False: 0}  # on the victim or not -> reads that failed
    tried = {True: 0, False: 0}  # on the victim or not -> reads made

    def replica_promoted() -> bool:
        """True once the victim's slots point elsewhere; else one round of reads."""
        if store.topology.address_for(meta(next(iter(on_victim)))) != victim_address:
            return True
        for customer in CUSTOMERS:
            tried[customer in on_victim] += 1
            try:
                store.read(customer, NEEDS, T0)
            except StoreUnavailable:
                failed[customer in on_victim] += 1
        return False

    wait_until(replica_promoted, "the replica promoted", interval_s=0)
    replaced_at = time.monotonic()
    wait_until(lambda: all(read_or_none(store, customer) for customer in on_victim), "reads on the new master")
    fetched = slot_table_fetches(own_redis_cluster) - fetches
    store.close()
    # the healthy shards' reads fail no more than a busy machine's missed budgets (a share of
    # the reads made to them, as the decision tests below count it)
    assert failed[True] >= 10 and failed[False] <= BUSY_MACHINE_SHARE * tried[False] + 2, (failed, tried)
    # before: every failed read fetched the table inside the request, one per failure
    assert fetched <= 2 * (replaced_at - killed_at) / store.topology.refresh_interval_s + 4


def read_or_none(store: RedisStore, customer: str):
    try:
        return store.read(customer, NEEDS, T0)
    except StoreUnavailable:
        return None


# -- writes while a slot migrates: TRYAGAIN is tried again, not lost


class Migration:
    """A slot half moved: some of the customer's keys on the target, the rest still on the source."""

    def __init__(self, cluster, store: RedisStore, customer: str):
        layout = KeyLayout()
        self.keys = [
            layout.meta(customer),
            layout.contacts(customer),
            layout.profile(customer),
            layout.history(customer, "page_view"),
        ]
        self.slot = redis_py.cluster.key_slot(self.keys[0].encode())
        _, source_port = store.topology.address_for(self.keys[0])
        clients = {node.port: redis_py.Redis(host="127.0.0.1", port=node.port) for node in cluster.masters}
        self.source = clients.pop(source_port)
        self.target_port, self.target = next(iter(clients.items()))
        self.others = list(clients.values())
        self.source_id = self.source.execute_command("CLUSTER", "MYID")
        self.target_id = self.target.execute_command("CLUSTER", "MYID")

    def start(self, keys_moved: int) -> None:
        self.target.execute_command("CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.source_id)
        self.source.execute_command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.target_id)
        self.migrate(self.keys[:keys_moved])

    def migrate(self, keys: list[str]) -> None:
        present = [key for key in keys if self.on_source(key)]
        if present:
            self.source.execute_command("MIGRATE", "127.0.0.1", self.target_port, "", 0, 5000, "KEYS", *present)

    def on_source(self, key: str) -> bool:
        try:
            return bool(self.source.exists(key))
        except redis_py.exceptions.AskError:  # moved already
            return False

    def finish(self) -> None:
        self.migrate(self.keys)
        for client in (self.target, self.source, *self.others):
            client.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.target_id)

    def finish_later(self, delay_s: float) -> threading.Timer:
        timer = threading.Timer(delay_s, self.finish)
        timer.start()
        return timer

    def close(self) -> None:
        for client in (self.source, self.target, *self.others):
            client.close()


@pytest.mark.parametrize("with_contact", [False, True], ids=["sent-without-waiting", "awaited"])
def test_a_write_told_to_try_again_is_tried_again(redis_cluster, redis_cluster_url, with_contact):
    store = RedisStore(redis_cluster_url, latency_budget_s=2.0, write_timeout_s=2.0, connect_timeout_s=1.0)
    customer = "migrating-customer"
    assert store.commit(customer, NEEDS, write(T0, {"ltv": 1}, with_contact=True))  # every key exists
    migration = Migration(redis_cluster, store, customer)
    # With a contact, the commit script: meta and contacts moved, profile and history not,
    # TRYAGAIN. Without, plain commands, each on one key: every key moved, each is asked
    # elsewhere (ASK), and sent again there.
    migration.start(keys_moved=2 if with_contact else 4)
    timer = migration.finish_later(0.2)
    try:
        contacts = [Contact(T0 + 1, "r2", "a2", "email")] if with_contact else []
        second = StateWrite(
            time=T0 + 1,
            event_type="page_view",
            event_record={"category": "hats"},
            contacts=contacts,
            cap_checks=[CapCheck("rule", "r2", 1, DAY)] if with_contact else [],
            profile_set={"ltv": 2},
        )
        assert store.commit(customer, NEEDS, second)  # before, awaited: StoreUnavailable (a degraded decision)
        timer.join()
        state = store.read(customer, NEEDS, T0 + 1)
        assert state.profile == {"ltv": 2}  # before, sent without waiting: lost
        assert len(state.contacts) == 1 + with_contact and len(state.history["page_view"]) == 2
        assert store.lost_writes == 0
        assert store.counters()["resent_writes" if not with_contact else "retried_writes"] >= 1
    finally:
        timer.cancel()
        migration.close()
        store.close()


def test_a_write_whose_contacts_a_cap_counts_is_awaited_and_one_no_cap_counts_is_not(store):
    """No cap or policy counts the contacts of an uncapped rule: the answer does not depend
    on their write, which goes like the event's, without waiting. A counted contact is
    recorded before the answer."""
    contact = Contact(T0, "r1", "a1", "email")
    for customer, checks, waited in (("uncapped", [], False), ("capped", [CAP], True)):
        write = StateWrite(
            time=T0,
            event_type="page_view",
            event_record={"category": "x"},
            contacts=[contact],
            cap_checks=checks,
            profile_set={},
        )
        assert store.commit(customer, NEEDS, write)
        address = store.topology.address_for(KeyLayout().meta(customer))
        assert bool(store.sync_nodes[address].free[-1].unread) is not waited
        assert len(store.read(customer, NEEDS, T0).contacts) == 1  # read after the write, on its connection


# -- faults under load: a master killed, slots moved (a few seconds of traffic each)

LOAD_RULES = """
rule one_offer
  when event.type == "visit" and count(visit within 1d) >= 0
  then offer via email
  cap 1 per 1d
end
"""
LOAD_CUSTOMERS = [f"load-{n}" for n in range(3000)]  # spread over all the slots
RATE = 1000  # decisions a second
LOAD_BUDGET_S = 0.05  # generous: a busy 2-core machine is no outage (no timing is asserted)
# Decisions degraded by a missed budget that no fault caused: on a 2-core machine that runs
# six redis-servers, the load and the engine, a few percent miss 50 ms now and then. The
# faults' own effect is far above it (before the background refresh, 69% of the healthy
# shards' decisions were degraded during a failover).
BUSY_MACHINE_SHARE = 0.05
LOAD_OPTIONS = {
    "latency_budget_s": LOAD_BUDGET_S,
    "write_timeout_s": 0.5,
    "connect_timeout_s": 0.05,
    "retry_interval_s": 0.05,
}


class Load:
    """``RATE`` decisions a second from one asyncio loop, each customer's in turn, each recorded."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.results: list[tuple] = []  # (customer, sent at, latency, rule or None, degraded)
        self.errors: list[BaseException] = []
        self.started_at = 0.0

    async def decide(self, number: int) -> None:
        customer = LOAD_CUSTOMERS[number % len(LOAD_CUSTOMERS)]
        event = {"customer_id": customer, "type": "visit", "time": 1_795_000_000 + number / RATE}
        sent = time.perf_counter()
        try:
            decision = await self.engine.decide_async(event)
        except Exception as error:  # noqa: BLE001 - the test asserts there are none
            self.errors.append(error)
            return
        self.results.append(
            (customer, sent - self.started_at, time.perf_counter() - sent, decision.rule, decision.degraded)
        )

    async def run(self, until) -> None:
        """Until ``until(seconds elapsed)`` (a coroutine function) says stop; every decision awaited.

        First connected to every master (patiently, as a server warms up), so that the
        first decisions do not count a connect on a busy machine as a fault's."""
        for customer in LOAD_CUSTOMERS[:60]:
            await self.engine.get_profile_async(customer)
        self.started_at = time.perf_counter()
        pending, sent = set(), 0
        while True:
            elapsed = time.perf_counter() - self.started_at
            if await until(elapsed):
                break
            while sent < elapsed * RATE:
                task = asyncio.get_running_loop().create_task(self.decide(sent))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)


def p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return 1000 * ordered[int(len(ordered) * 0.99)] if ordered else float("nan")


def contacts_recorded(url: str) -> dict[str, int]:
    """Each load customer's contacts in Redis, read with a fresh, patient store."""
    reader = RedisStore(url, latency_budget_s=2.0, write_timeout_s=2.0, connect_timeout_s=1.0)
    needs = StateNeeds(history={}, contact_window=DAY, profile_schema={})
    counts = {customer: len(reader.read(customer, needs, 1_795_000_100).contacts) for customer in LOAD_CUSTOMERS}
    reader.close()
    return counts


def assert_caps_held_and_nothing_acknowledged_lost(load: Load, url: str) -> None:
    given = {}
    for customer, _sent, _latency, rule, degraded in load.results:
        if rule == "one_offer" and not degraded:
            given[customer] = given.get(customer, 0) + 1
    assert max(given.values()) == 1  # the cap: once per customer, whatever failed
    recorded = contacts_recorded(url)
    assert max(recorded.values()) <= 1
    lost = [customer for customer in given if recorded[customer] != 1]
    assert lost == []  # every offer told (not degraded) is recorded


def engine_on(cluster, write_rules) -> Engine:
    return Engine.from_path(write_rules(LOAD_RULES), redis_url=cluster.url, **LOAD_OPTIONS)


@pytest.mark.cluster_faults
def test_a_master_killed_under_load(own_redis_cluster, write_rules, caplog):
    engine = engine_on(own_redis_cluster, write_rules)
    store: RedisStore = engine.store
    victim = own_redis_cluster.masters[1]
    layout = KeyLayout()
    on_victim = {
        customer
        for customer in LOAD_CUSTOMERS
        if store.topology.address_for(layout.meta(customer)) == ("127.0.0.1", victim.port)
    }
    load = Load(engine)
    marks: dict[str, float] = {}
    fetches: dict[str, int] = {}

    async def until(elapsed: float) -> bool:
        if "killed" not in marks and elapsed >= 1.0:
            victim.stop()  # SIGKILL
            fetches["before"] = slot_table_fetches(own_redis_cluster)
            marks["killed"] = elapsed
        if "killed" in marks and "replaced" not in marks:
            if store.topology.address_for(layout.meta(next(iter(on_victim)))) != ("127.0.0.1", victim.port):
                marks["replaced"] = elapsed  # the slot table names the promoted replica
        if "replaced" in marks and "clean" not in marks and elapsed > marks["replaced"] + 0.5:
            recent = [r[4] for r in load.results[-200:] if r[0] in on_victim]
            if len(recent) >= 20 and not any(recent):
                marks["clean"] = elapsed  # the failed shard's decisions have state again
        return elapsed > 25 or ("clean" in marks and elapsed > marks["clean"] + 0.5)

    async def scenario():
        await load.run(until)
        fetches["after"] = slot_table_fetches(own_redis_cluster)
        await engine.close_async()

    with caplog.at_level(logging.WARNING, logger="nba.store.redis"):
        asyncio.run(scenario())
    assert "replaced" in marks, "the replica was never promoted"
    assert "clean" in marks, "the failed shard never had state again"
    assert load.errors == []
    killed, replaced, clean = marks["killed"], marks["replaced"], marks["clean"]
    healthy = [r for r in load.results if r[0] not in on_victim]
    failed_shard = [r for r in load.results if r[0] in on_victim]
    during = [r for r in failed_shard if killed + 0.05 < r[1] < replaced - 0.2]  # (noticed here a little late)
    after = [r for r in failed_shard if r[1] > clean]
    # healthy shards: served all along (a budget missed now and then on a busy machine is no fault's)
    assert sum(r[4] for r in healthy) <= BUSY_MACHINE_SHARE * len(healthy)
    assert during and all(r[4] for r in during)  # the failed shard: degraded, not stuck
    assert after and sum(r[4] for r in after) <= BUSY_MACHINE_SHARE * len(after)  # state again once promoted
    fetched = fetches["after"] - fetches["before"]
    assert fetched <= 2 * (clean - killed) / store.topology.refresh_interval_s + 4  # before: one per failed call
    down_logs = [record for record in caplog.records if "is down" in record.getMessage()]
    assert len(down_logs) == 1  # once per transition, not per request
    assert engine.stats.snapshot()["store_counters"]["node_down_events"] == 1
    assert_caps_held_and_nothing_acknowledged_lost(load, own_redis_cluster.url)
    before_kill = [r[2] for r in load.results if 0.3 < r[1] < killed]
    healthy_during = [r[2] for r in healthy if killed < r[1] < clean]
    print(
        f"\nkill->promoted {replaced - killed:.2f}s, promoted->clean {clean - replaced:.2f}s, "
        f"{len(load.results)} decisions, {fetched} slot table fetches; p99: before the kill {p99_ms(before_kill):.2f} ms, "
        f"healthy shards during the failover {p99_ms(healthy_during):.2f} ms, failed shard during it "
        f"{p99_ms([r[2] for r in during]):.2f} ms ({len(during)} degraded); store {store.counters()}"
    )


@pytest.mark.cluster_faults
def test_slots_resharded_under_load(redis_cluster, redis_cluster_url, write_rules):
    engine = engine_on(redis_cluster, write_rules)
    store: RedisStore = engine.store
    source, target = redis_cluster.masters[0], redis_cluster.masters[1]
    ids = {node.port: send_id(node.port) for node in (source, target)}
    owned_before = owned_by(redis_cluster.url, target.port)
    load = Load(engine)
    marks: dict = {}

    async def until(elapsed: float) -> bool:
        if "reshard" not in marks and elapsed >= 0.5:
            marks["reshard"] = await asyncio.create_subprocess_exec(
                REDIS_CLI,
                "--cluster",
                "reshard",
                source.address,
                "--cluster-from",
                ids[source.port],
                "--cluster-to",
                ids[target.port],
                "--cluster-slots",
                "1000",
                "--cluster-yes",
                "--cluster-pipeline",
                "50",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        process = marks.get("reshard")
        if process is not None and process.returncode is not None and "done" not in marks:
            marks["done"] = elapsed
        return elapsed > 30 or ("done" in marks and elapsed > marks["done"] + 0.5)

    async def scenario():
        await load.run(until)
        await marks["reshard"].wait()
        await engine.close_async()

    asyncio.run(scenario())
    assert marks["reshard"].returncode == 0
    assert load.errors == []
    assert owned_by(redis_cluster.url, target.port) == owned_before + 1000  # they did move, under load
    degraded = sum(r[4] for r in load.results)
    assert store.lost_writes == 0
    # no decision degraded by the move (a budget missed now and then on a busy machine is not the move's)
    assert degraded <= BUSY_MACHINE_SHARE * len(load.results), (
        degraded,
        engine.stats.snapshot()["store_failures"],
        store.counters(),
    )
    assert_caps_held_and_nothing_acknowledged_lost(load, redis_cluster.url)
    print(
        f"\nreshard of 1000 slots in {marks['done'] - 0.5:.2f}s, {len(load.results)} decisions, "
        f"p99 {p99_ms([r[2] for r in load.results]):.2f} ms, {degraded} degraded, store {store.counters()}"
    )


def owned_by(url: str, port: int) -> int:
    """How many slots the node on ``port`` holds, as a fresh store learns the table."""
    fresh = RedisStore(url, latency_budget_s=2.0, connect_timeout_s=1.0)
    fresh.close()
    return sum(1 for owner in fresh.topology.slots if owner == ("127.0.0.1", port))


def send_id(port: int) -> str:
    client = redis_py.Redis(host="127.0.0.1", port=port)
    try:
        return client.execute_command("CLUSTER", "MYID").decode()
    finally:
        client.close()
