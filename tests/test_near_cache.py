"""The near cache (engine/store/redis/near_cache.py): decisions from memory are the decisions
a read of Redis gives, whoever else writes; a cap is never decided by it; losing tracking
empties it."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from nba.engine import Engine
from nba.engine.store.redis import RedisStore
from nba.engine.store.redis.protocol import store_options_in

from polling import eventually

RULES = """\
profile {
  tier: string
  lifetime_value: number
  email_opt_in: bool
}
event page_view { category: string }
event cart_abandoned { cart_value: number }
event purchase { amount: number }

policy email: cap 2 per 1m

rule browsing_offer
  priority 30
  when event.type == "page_view" and count(page_view within 20s) >= 2
  then category_banner via web with category = event.category, seen = count(page_view within 20s)
  cap 2 per 30s
end

rule cart_rescue
  priority 80
  when event.type == "cart_abandoned"
   and event.cart_value > 50
   and profile.email_opt_in
   and count(cart_abandoned within 60s) >= 2
   and count(purchase within 60s) == 0
  then cart_reminder via email with value = event.cart_value, carts = count(cart_abandoned within 60s)
  cap 1 per 1m
end

# no cap or policy counts its contacts: written by plain commands, trimmed by the script later
rule app_nudge
  priority 10
  when event.type == "page_view"
  then app_nudge via app with value = coalesce(profile.lifetime_value, 0), tier = profile.tier
end

rule big_spender
  priority 60
  when event.type == "purchase" and sum(purchase.amount within 60s) > 100
  then vip_upgrade via email with spent = sum(purchase.amount within 60s), tier = profile.tier
end

on purchase
  set lifetime_value = coalesce(profile.lifetime_value, 0) + event.amount
end

default browse_recommendations via web with value = coalesce(profile.lifetime_value, 0), tier = profile.tier
"""

CUSTOMERS = 3
TYPES = ("page_view", "cart_abandoned", "purchase")


@pytest.fixture
def rules_path(write_rules):
    return write_rules(RULES)


def event(customer: int, event_type: str, at: float, value: float) -> dict:
    record = {"customer_id": f"c{customer}", "type": event_type, "time": at}
    if event_type == "page_view":
        record["category"] = ("shoes", "bags")[int(value) % 2]
    elif event_type == "cart_abandoned":
        record["cart_value"] = value
    else:
        record["amount"] = value
    return record


def decide_then(engine: Engine, record: dict) -> asyncio.Future:
    """``decide_map_then`` (the socket server's path) as a future."""
    future = asyncio.get_running_loop().create_future()

    def then(result, error):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    engine.decide_map_then(record, then)
    return future


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(("event", "event", "event", "foreign event", "profile")),
        st.integers(0, CUSTOMERS - 1),
        st.sampled_from(TYPES),
        st.floats(-8.0, 12.0),  # seconds after the previous event (a late one: before it)
        st.sampled_from((20.0, 60.0, 75.5, 120.0)),
    ),
    min_size=1,
    max_size=40,
)


@seed(20261207)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_decisions_from_the_near_cache_are_those_a_redis_read_gives(redis_url, rules_path, operations):
    """Two worlds on one Redis, by key prefix: in one the engine keeps a near cache, in the
    other it reads Redis at every decision. The same events, and the same writes of
    another process (decisions of an engine without a cache) and of another service (a
    profile field set with HSET), go to both; every decision must be the same."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()

    async def scenario():
        worlds = {}
        for prefix, query in (("near", "&near_cache=100"), ("read", "")):
            # a generous read budget: what differs must be the state, not a busy machine's timing
            url = f"{redis_url}?key_prefix={prefix}&latency_budget_ms=2000{query}"
            worlds[prefix] = (Engine.from_path(rules_path, redis_url=url), Engine.from_path(rules_path, redis_url=url))
        near_engine = worlds["near"][0]
        try:
            at = time.time() - 600
            for customer in range(CUSTOMERS):
                for engine, _ in worlds.values():
                    engine.put_profile(f"c{customer}", {"tier": "gold", "email_opt_in": True, "lifetime_value": 10})
            for kind, customer, event_type, step, value in operations:
                at += step
                record = event(customer, event_type, at, value)
                if kind == "event":
                    made = {prefix: await decide_then(engine, record) for prefix, (engine, _) in worlds.items()}
                    assert made["near"] == made["read"], (record, made)
                elif kind == "foreign event":
                    made = {prefix: other.decide_map(record) for prefix, (_, other) in worlds.items()}
                    assert made["near"] == made["read"], (record, made)
                else:
                    for prefix in worlds:
                        client.hset(f"{prefix}:{{c{customer}}}:p", "tier", f"t{value:g}")
                # the other writer's invalidation is in flight as its writer is answered; what
                # is tested here is what the cache holds, so let it arrive
                await asyncio.sleep(0.002)
            counters = near_engine.store.counters()
            decided = sum(1 for operation in operations if operation[0] == "event")
            # every decision but the first (which opens the link) looked in the cache
            assert counters["near_cache_hits"] + counters["near_cache_misses"] >= decided - 1
        finally:
            for pair in worlds.values():
                for engine in pair:
                    await engine.store.close_async()

    asyncio.run(scenario())


def near_engine(rules_path, url: str, size: int = 100) -> Engine:
    separator = "&" if "?" in url else "?"
    return Engine.from_path(rules_path, redis_url=f"{url}{separator}near_cache={size}&latency_budget_ms=2000")


def with_near_engine(rules_path, url: str, body) -> None:
    """``await body(engine)`` on a near-cached engine whose link is open; the engine closed after."""

    async def scenario():
        engine = await opened(near_engine(rules_path, url))
        try:
            await body(engine)
        finally:
            await engine.store.close_async()

    asyncio.run(scenario())


async def opened(engine: Engine) -> Engine:
    """The engine once its link is open (a first decision, of another customer, opens it:
    decisions before that take the awaited path, which does not cache)."""
    await decide_then(engine, event(99, "page_view", time.time(), 1))
    return engine


def test_decisions_are_answered_from_memory_after_the_first_read(redis_url, rules_path):
    async def body(engine):
        at = time.time()
        for step in range(10):
            await decide_then(engine, event(0, "page_view", at + step, 1))
        counters = engine.store.counters()
        assert counters["near_cache_hits"] >= 8
        assert counters["near_cache_customers"] == 1

    with_near_engine(rules_path, redis_url, body)


def test_a_cap_reached_by_another_process_is_never_exceeded_by_a_stale_entry(redis_url, rules_path):
    """The invalidation is held back (the event loop stops reading the invalidation
    connection): the entry says the cap is free; the commit script, which counts in Redis,
    refuses; the entry is dropped and the decision, made again on a fresh read, passes
    the capped rule over."""

    async def scenario():
        engine = await opened(near_engine(rules_path, redis_url))
        other = Engine.from_path(rules_path, redis_url=redis_url)
        try:
            at = time.time()
            engine.put_profile("c0", {"email_opt_in": True})
            assert (await decide_then(engine, event(0, "cart_abandoned", at, 60)))["rule"] == "default"
            await asyncio.sleep(0.01)  # its write (the event kept) goes out within a millisecond
            store = engine.store
            node = next(iter(store.async_nodes.values()))
            listener = node.listener
            asyncio.get_running_loop().remove_reader(listener.sock.fileno())  # nothing arrives
            assert other.decide_map(event(0, "cart_abandoned", at + 1, 60))["rule"] == "cart_rescue"
            made = await decide_then(engine, event(0, "cart_abandoned", at + 2, 60))
            assert made["rule"] != "cart_rescue", made
            assert not made["degraded"]
            client = redis.Redis.from_url(redis_url)
            assert client.zcard("nba:{c0}:c") == 1  # one contact: the cap of 1 held
        finally:
            await engine.store.close_async()
            other.close()

    asyncio.run(scenario())


def test_another_writer_is_seen_at_the_next_decision(redis_url, rules_path):
    async def body(engine):
        at = time.time()
        made = await decide_then(engine, event(0, "purchase", at, 20))
        assert made["rule"] == "default"
        client = redis.Redis.from_url(redis_url)
        client.hset("nba:{c0}:p", "tier", "platinum")
        await eventually(lambda: engine.store.counters()["near_cache_invalidations"] >= 1, "the invalidation")
        made = await decide_then(engine, event(0, "page_view", at + 1, 1))
        assert made["params"]["tier"] == "platinum"

    with_near_engine(rules_path, redis_url, body)


def test_a_flushed_database_empties_the_cache(redis_url, rules_path):
    async def body(engine):
        at = time.time()
        await decide_then(engine, event(0, "purchase", at, 20))
        assert engine.store.counters()["near_cache_customers"] == 1
        await asyncio.sleep(0.01)  # its writes go out within a millisecond
        redis.Redis.from_url(redis_url).flushdb()
        await eventually(lambda: engine.store.counters()["near_cache_customers"] == 0, "the cache emptied")
        made = await decide_then(engine, event(0, "page_view", at + 1, 1))
        assert made["params"]["value"] == 0  # the lifetime value written before is gone

    with_near_engine(rules_path, redis_url, body)


def client_ids(url: str) -> dict[str, list[int]]:
    """Client ids by what they are: the invalidation connection is subscribed."""
    found: dict[str, list[int]] = {"subscriber": [], "other": []}
    for client in redis.Redis.from_url(url).client_list():
        found["subscriber" if client["sub"] != "0" else "other"].append(int(client["id"]))
    return found


def test_a_lost_invalidation_connection_empties_the_cache_and_tracking_comes_back(redis_url, rules_path, caplog):
    async def scenario():
        engine = await opened(near_engine(rules_path, redis_url))
        try:
            at = time.time()
            await decide_then(engine, event(0, "purchase", at, 20))
            assert engine.store.counters()["near_cache_customers"] == 1
            [listener_id] = client_ids(redis_url)["subscriber"]
            redis.Redis.from_url(redis_url).client_kill_filter(_id=listener_id)
            await eventually(lambda: engine.store.counters()["near_cache_customers"] == 0, "the cache emptied")
            node = next(iter(engine.store.async_nodes.values()))
            await eventually(lambda: node.link.tracking != 0, "tracking on again")
            await decide_then(engine, event(0, "purchase", at + 1, 20))  # read, cached again
            await decide_then(engine, event(0, "page_view", at + 2, 1))
            assert engine.store.counters()["near_cache_customers"] == 1
            redis.Redis.from_url(redis_url).hset("nba:{c0}:p", "tier", "silver")  # told to the new connection
            await eventually(lambda: engine.store.counters()["near_cache_customers"] == 0, "the invalidation")
            made = await decide_then(engine, event(0, "purchase", at + 3, 1))
            assert made["rule"] == "default" and made["params"]["tier"] == "silver"
        finally:
            await engine.store.close_async()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert "invalidation connection lost" in caplog.text


def test_a_lost_link_empties_the_cache(redis_url, rules_path):
    async def body(engine):
        at = time.time()
        await decide_then(engine, event(0, "purchase", at, 20))
        await asyncio.sleep(0.01)  # its writes go out within a millisecond
        before = engine.store.counters()["near_cache_flushes"]
        client = redis.Redis.from_url(redis_url)
        for client_id in client_ids(redis_url)["other"]:
            if client_id != client.client_id():
                client.client_kill_filter(_id=client_id)
        await eventually(lambda: engine.store.counters()["near_cache_flushes"] > before, "the cache emptied")
        assert engine.store.counters()["near_cache_customers"] == 0
        made = None
        for step in range(20):  # the first decisions after may be degraded while it reconnects
            made = await decide_then(engine, event(0, "page_view", at + 1 + step, 1))
            if not made["degraded"]:
                break
        assert made["params"]["value"] == 20  # the purchase's update, read from Redis again

    with_near_engine(rules_path, redis_url, body)


def test_a_node_that_refuses_tracking_is_read_at_every_decision(redis_server, rules_path, caplog):
    """An ACL without CLIENT TRACKING: logged once, decisions made as without the cache."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.flushdb()
    admin.acl_setuser(
        "notrack",
        enabled=True,
        passwords=["+secret"],
        keys=["nba:*"],
        channels=["*"],
        commands=["+@all", "-client|tracking"],
    )
    url = redis_server.url_for(user="notrack", password="secret")

    async def scenario():
        engine = await opened(near_engine(rules_path, url))
        try:
            at = time.time()
            for step in range(3):
                made = await decide_then(engine, event(0, "page_view", at + step, 1))
                assert not made["degraded"]
            counters = engine.store.counters()
            assert counters["near_cache_hits"] == 0 and counters["near_cache_customers"] == 0
        finally:
            await engine.store.close_async()

    try:
        with caplog.at_level(logging.WARNING):
            asyncio.run(scenario())
    finally:
        admin.acl_deluser("notrack")
    assert caplog.text.count("does not track keys for the near cache") == 1


FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), max_size=3),
)


@seed(20261207)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(
        st.tuples(
            st.one_of(st.floats(0, 30), st.integers(0, 30)),  # seconds after the start: a float or an int time
            st.dictionaries(st.sampled_from(("a", "b")), FIELD_VALUES, max_size=2),
            st.booleans(),  # with a contact
            st.one_of(st.none(), FIELD_VALUES),  # a profile field set
        ),
        min_size=1,
        max_size=12,
    )
)
def test_what_the_cache_holds_is_what_redis_reads_back(redis_url, writes):
    """Whatever values a write holds (an int time, lists, ints beyond 64 bits, ...), the
    entry the cache made of them is the state a read of Redis gives."""
    from nba.dsl.needs import HistoryNeed, StateNeeds
    from nba.engine.state import Contact, History, StateWrite

    needs = StateNeeds({"view": HistoryNeed(("a", "b"), 60.0, 0.0)}, 60.0, {"score": "number"})
    redis.Redis.from_url(redis_url).flushdb()
    start = int(time.time()) - 100

    async def scenario():
        cached = RedisStore(redis_url, near_cache=10, latency_budget_s=2.0)
        plain = RedisStore(redis_url, latency_budget_s=2.0)
        try:
            await cached.read_async("c0", needs, start)  # opens the link
            await cached.read_async("c0", needs, start)  # read, and kept
            for offset, record, with_contact, value in writes:
                at = start + offset
                contacts = [Contact(at, "r", "a", "web")] if with_contact else []
                profile_set = {"score": value} if value is not None else {}
                write = StateWrite(at, "view", record, contacts, [], profile_set)
                assert await cached.commit_async("c0", needs, write)
            read_at = start + 30
            from_cache = await cached.read_async("c0", needs, read_at)
            assert cached.counters()["near_cache_hits"] >= 1
            await asyncio.sleep(0.01)  # the writes sent without waiting go out within a millisecond
            from_redis = await plain.read_async("c0", needs, read_at)

            def window(history: History | None) -> list:
                if history is None:
                    return []
                rows = zip(history.times, *(history.columns[name] for name in ("a", "b")))
                return [row for row in rows if row[0] > read_at - 60.0]

            assert window(from_cache.history.get("view")) == window(from_redis.history.get("view"))
            assert [c for c in from_cache.contacts if c.time > read_at - 60.0] == from_redis.contacts
            assert from_cache.kept_from == from_redis.kept_from
            assert from_cache.profile == from_redis.profile
        finally:
            await cached.close_async()
            await plain.close_async()

    asyncio.run(scenario())


def test_the_url_option_says_how_many_customers():
    assert store_options_in("redis://h:1/0?near_cache=5000")[1] == {"near_cache": 5000}
    with pytest.raises(ValueError, match="near_cache must be a whole number"):
        store_options_in("redis://h:1/0?near_cache=lots")


def test_without_the_option_there_is_no_near_cache(redis_url):
    store = RedisStore(redis_url)
    try:
        assert store.near is None and "near_cache_hits" not in store.counters()
    finally:
        store.close()
