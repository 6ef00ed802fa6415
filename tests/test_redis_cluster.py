"""RedisStore against a real 3-node Redis Cluster, found out from the URL of one node."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_py

from nba.engine.state import CapCheck, Contact, HistoryNeed, StateNeeds, StateWrite
from nba.engine.store.redis import KeyLayout, RedisStore
from redis_fixtures import needs_redis, redis_cluster, redis_cluster_url  # noqa: F401

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
    return StateWrite(time=time, event_type="page_view", event_record={"category": "shoes"}, contacts=contacts,
                      cap_checks=[CAP] if with_contact else [], profile_set=profile_set or {})


@pytest.fixture
def store(redis_cluster_url):  # noqa: F811
    store = RedisStore(redis_cluster_url, latency_budget_s=2.0, write_timeout_s=2.0, connect_timeout_s=1.0)
    yield store
    store.close()


def test_any_node_url_is_found_to_be_a_cluster(redis_cluster):  # noqa: F811
    for node in redis_cluster.nodes:
        store = RedisStore(node.url, latency_budget_s=2.0)
        assert store.topology.cluster is True
        assert len(set(store.topology.slots.values())) == 3
        store.close()


def test_customers_on_every_node_round_trip(store, redis_cluster):  # noqa: F811
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


def point_slot_elsewhere(store: RedisStore, customer: str) -> tuple:
    key = KeyLayout().profile(customer)
    right = store.topology.address_for(key)
    wrong = next(address for address in set(store.topology.slots.values()) if address != right)
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


def test_a_slot_being_migrated_is_followed_by_ask(store, redis_cluster):  # noqa: F811
    customer = "migrating-customer"
    layout = KeyLayout()
    assert store.commit(customer, NEEDS, write(T0, {"ltv": 1}, with_contact=True))  # every key exists
    keys = [layout.meta(customer), layout.contacts(customer), layout.profile(customer), layout.history(customer, "page_view")]
    slot = redis_py.cluster.key_slot(keys[0].encode())
    source_host, source_port = store.topology.address_for(keys[0])
    nodes = {node.port: redis_py.Redis(host="127.0.0.1", port=node.port) for node in redis_cluster.nodes}
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
