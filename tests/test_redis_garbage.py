"""State another service wrote into Redis is hostile: every key of the documented layout
(engine/store/redis/__init__.py) written with garbage of every Redis type and shape gives
its customer a clear error or a degraded decision that gives no capped action, never a
crash; a cap is never exceeded; every other customer decides as before.
"""

from __future__ import annotations

import time as clock

import msgpack
import pytest
import redis as redis_py
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nba.dsl import load_text
from nba.engine import Engine
from nba.engine.errors import EngineError, StateError
from nba.engine.store.memory import MemoryStore
from nba.engine.store.redis import RedisStore

from redis_fixtures import needs_redis

pytestmark = needs_redis

NOW = int(clock.time())
RULES = """
profile { tier: string, score: number, tags: list, since: time }
policy web: cap 3 per 1d
rule capped
  when event.type == "visit"
  then offer via email
  cap 1 per 1d
  priority 3
end
rule loyal
  when event.type == "visit" and count(purchase within 7d) >= 1 and "vip" in profile.tags
  then thanks via web
  priority 2
end
rule open
  when event.type == "visit"
  then tip
end
on purchase
  set score = coalesce(profile.score, 0) + 1
end
"""
RELAXED = {"latency_budget_s": 2.0, "write_timeout_s": 2.0, "connect_timeout_s": 1.0}
VICTIM = "victim"
BYSTANDER = "bystander"


def engine_on(url: str) -> Engine:
    return Engine(load_text(RULES, "t.rules"), RedisStore(url, **RELAXED))


def traffic(customer: str) -> list[dict]:
    """A customer's events: visits and purchases, a few in the past."""
    kinds = ["visit", "purchase", "visit", "visit", "purchase", "visit"]
    return [{"customer_id": customer, "type": kind, "time": NOW - 100 + n, "amount": n} for n, kind in enumerate(kinds)]


def keys_of(customer: str) -> dict[str, str]:
    base = f"nba:{{{customer}}}"
    return {"profile": base + ":p", "history": base + ":h:purchase", "contacts": base + ":c", "meta": base + ":m"}


def outcomes(engine: Engine, customer: str) -> list:
    """What each event of ``customer`` gets: (rule, degraded), or the error's code."""
    seen = []
    for event in traffic(customer):
        try:
            decision = engine.decide(event)
        except EngineError as error:
            assert error.code != "internal", error
            seen.append(error.code)
            continue
        seen.append((decision.rule, decision.degraded))
    return seen


def capped_given(seen: list) -> int:
    return sum(1 for outcome in seen if isinstance(outcome, tuple) and outcome[0] == "capped")


# -- the cases of the issue, each alone --

DEEP_LIST = "[" * 100_000 + "]" * 100_000


def reference(customer: str) -> list:
    engine = Engine(load_text(RULES, "t.rules"), MemoryStore())
    engine.put_profile(customer, {"tags": ["vip"]})
    return outcomes(engine, customer)


@pytest.fixture
def admin(redis_url):
    client = redis_py.Redis.from_url(redis_url)
    yield client
    client.close()


def test_a_100000_deep_list_in_a_profile_field_degrades_that_customer_only(redis_url, admin):
    engine = engine_on(redis_url)
    engine.put_profile(BYSTANDER, {"tags": ["vip"]})
    admin.hset(keys_of(VICTIM)["profile"], mapping={"tags": DEEP_LIST, "other": DEEP_LIST})
    seen = outcomes(engine, VICTIM)
    assert seen == [("open", True), (None, True), ("open", True), ("open", True), (None, True), ("open", True)]
    with pytest.raises(StateError) as bad:
        engine.get_profile(VICTIM)
    assert bad.value.code == "bad_state" and keys_of(VICTIM)["profile"] in str(bad.value)
    assert outcomes(engine, BYSTANDER) == reference(BYSTANDER)
    engine.close()


def test_a_contact_of_the_wrong_shape_gives_a_degraded_decision_not_a_crash(redis_url, admin):
    engine = engine_on(redis_url)
    admin.zadd(keys_of(VICTIM)["contacts"], {msgpack.packb(["yesterday", 1, 2, 3, 4]): NOW - 10})
    seen = outcomes(engine, VICTIM)
    # a purchase's decision reads no contacts (no rule for it has a cap): it is not degraded
    assert seen == [("open", True), (None, False), ("open", True), ("open", True), (None, False), ("open", True)]
    engine.close()


def test_get_profile_of_a_key_of_the_wrong_type_is_a_bad_state_error(redis_url, admin):
    engine = engine_on(redis_url)
    admin.set(keys_of(VICTIM)["profile"], "not a hash")
    with pytest.raises(StateError) as bad:
        engine.get_profile(VICTIM)
    assert bad.value.code == "bad_state" and keys_of(VICTIM)["profile"] in str(bad.value)
    engine.close()


@pytest.mark.parametrize(
    "field,value",
    [("t", "soon"), ("n", "many"), ("t", "1e308"), ("n", "1e308"), ("t", "nan"), ("n", "-5"), ("n", "2.5")],
)
def test_garbage_in_the_meta_hash_loses_no_write_and_trims_nothing(redis_url, admin, field, value):
    engine = engine_on(redis_url)
    admin.hset(keys_of(VICTIM)["meta"], field, value)
    given = [engine.decide({"customer_id": VICTIM, "type": "visit", "time": NOW - 10 + n}) for n in range(4)]
    assert not any(decision.degraded for decision in given)
    assert [decision.rule for decision in given] == ["capped", "open", "open", "open"]
    assert admin.zcard(keys_of(VICTIM)["contacts"]) == 4  # every contact was written, and kept
    engine.close()


@pytest.mark.parametrize("value", ["garbage", "nan", "inf", "1e999", " 5", "0x10"])
def test_garbage_as_the_trim_mark_passes_capped_rules_over(redis_url, admin, value):
    engine = engine_on(redis_url)
    admin.hset(keys_of(VICTIM)["meta"], "k", value)
    seen = outcomes(engine, VICTIM)
    assert capped_given(seen) == 0
    engine.close()


def test_a_trim_mark_written_by_the_engine_reads_back(redis_url, admin):
    engine = Engine(load_text(RULES, "t.rules"), RedisStore(redis_url, **RELAXED), max_event_ahead_s=None)
    visit = {"customer_id": VICTIM, "type": "visit"}
    assert engine.decide({**visit, "time": NOW - 20 * 86400}).rule == "capped"
    assert engine.decide({**visit, "time": NOW}).rule == "capped"  # trims the contact of 20 days ago
    assert float(admin.hget(keys_of(VICTIM)["meta"], "k")) == NOW - 20 * 86400
    assert engine.decide({**visit, "time": NOW - 20 * 86400 + 5}).rule == "open"  # cannot be checked
    engine.close()


# -- the fuzzer: every key, every type, every shape --

TEXT = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b"nan",
            b"inf",
            b"-inf",
            b"1e308",
            b"-1e308",
            b"1e999",
            b"NaN",
            b"true",
            b"null",
            b"\x00",
            b"\x00{",
            b"\x00b64:!!",
            b"\xff\xfe",
            b"[1,",
            b"{}",
            b"[]",
            b"0x10",
            b"1_000",
            DEEP_LIST[:4000].encode() + DEEP_LIST[-4000:].encode(),
        ]
    ),
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    st.floats(allow_nan=True).map(lambda f: repr(f).encode()),
)
PACKABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
MEMBER = st.one_of(
    TEXT,
    PACKABLE.map(lambda value: msgpack.packb(value, use_bin_type=True)),
    st.tuples(
        st.integers(NOW - 86400, NOW + 86400) | st.floats() | st.text(max_size=3),
        st.integers(0, 5),
        PACKABLE,
        PACKABLE,
        PACKABLE,
    ).map(lambda parts: msgpack.packb(list(parts), use_bin_type=True)),
    st.tuples(
        st.integers(NOW - 86400, NOW),
        st.integers(0, 5),
        st.dictionaries(st.sampled_from(["amount", "x"]), PACKABLE, max_size=2) | PACKABLE,
    ).map(lambda parts: msgpack.packb(list(parts), use_bin_type=True)),
)
SCORE = st.floats(allow_nan=False) | st.integers(NOW - 3 * 86400, NOW + 86400)
FIELD = st.sampled_from([b"t", b"n", b"k", b"tier", b"score", b"tags", b"since", b"other"]) | st.binary(max_size=6)
GARBAGE = st.one_of(
    st.tuples(st.just("string"), TEXT),
    st.tuples(st.just("hash"), st.dictionaries(FIELD, TEXT, min_size=1, max_size=5)),
    st.tuples(st.just("zset"), st.dictionaries(MEMBER, SCORE, min_size=1, max_size=5)),
    st.tuples(st.just("list"), st.lists(TEXT, min_size=1, max_size=4)),
    st.tuples(st.just("set"), st.sets(TEXT, min_size=1, max_size=4)),
    st.tuples(st.just("stream"), st.dictionaries(st.binary(min_size=1, max_size=4), TEXT, min_size=1, max_size=3)),
)


def write_garbage(admin, key: str, garbage) -> None:
    kind, value = garbage
    admin.delete(key)
    if kind == "string":
        admin.set(key, value)
    elif kind == "hash":
        admin.hset(key, mapping=value)
    elif kind == "zset":
        admin.zadd(key, value)
    elif kind == "list":
        admin.rpush(key, *value)
    elif kind == "set":
        admin.sadd(key, *value)
    else:
        admin.xadd(key, value)


@settings(max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(["profile", "history", "contacts", "meta"]), garbage=GARBAGE)
# members shorter than their shape (an empty msgpack array, one of one item): the compiled
# twin read past such a list's end (a segfault) until bounds were checked (a longer run of
# this test found it)
@example(key="history", garbage=("zset", {b"\x90": NOW - 50}))
@example(key="history", garbage=("zset", {b"\x91\x01": NOW - 50}))
@example(key="contacts", garbage=("zset", {b"\x90": NOW - 50}))
def test_fuzz_garbage_in_any_key_costs_no_crash_no_cap_and_no_other_customer(redis_url, admin, key, garbage):
    admin.flushdb()
    engine = engine_on(redis_url)
    try:
        engine.put_profile(BYSTANDER, {"tags": ["vip"]})
        write_garbage(admin, keys_of(VICTIM)[key], garbage)
        seen = outcomes(engine, VICTIM)
        assert capped_given(seen) <= 1  # the cap: 1 per day, and all of these are within one
        for outcome in seen:
            if isinstance(outcome, tuple) and outcome[1]:  # degraded: nothing capped or under a policy
                assert outcome[0] in ("open", None)  # a visit's uncapped rule; a purchase gets nothing
        try:
            engine.get_profile(VICTIM)
        except EngineError as error:
            assert error.code in ("bad_state", "unavailable"), error
        assert outcomes(engine, BYSTANDER) == reference(BYSTANDER)
    finally:
        engine.close()


# -- events: every field with every wrong type --

WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(DEEP_LIST[:2000]),
    st.sampled_from([10**400, -(10**400), 2**62, -(2**62), 1e308, -1e308, float("nan"), "nan"]),
)
EVENT_SCHEMA = """
event purchase { amount: number, at: time, paid: bool, sku: string, items: list }
rule capped
  when event.type == "purchase"
  then offer via email
  cap 1 per 1d
end
"""


@pytest.mark.parametrize("store_kind", ["memory", "redis"])
@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(["customer_id", "type", "time", "amount", "at", "paid", "sku", "items"]), value=WRONG)
def test_fuzz_every_event_field_with_every_wrong_type(request, store_kind, field, value):
    if store_kind == "memory":
        store = MemoryStore()
    else:
        server = request.getfixturevalue("redis_server")
        server.flush()
        store = RedisStore(server.url, **RELAXED)
    engine = Engine(load_text(EVENT_SCHEMA, "t.rules"), store)
    try:
        event = {
            "customer_id": "c1",
            "type": "purchase",
            "time": NOW,
            "amount": 5,
            "at": NOW,
            "paid": True,
            "sku": "a",
            "items": [],
        }
        event[field] = value
        try:
            decision = engine.decide(event)
        except EngineError as error:
            assert error.code == "bad_event", error
            assert str(error).startswith(field), error  # names the field
            # nothing recorded: the next good event still gets the capped action
            assert engine.decide({"customer_id": "c1", "type": "purchase", "time": NOW}).rule == "capped"
            return
        # a value that reads as its kind is fine (another type is decided by that type's rules: none)
        assert decision.rule == ("capped" if event["type"] == "purchase" else None)
    finally:
        engine.close()


# -- the commit script writes all or nothing, whatever it finds --


@pytest.mark.parametrize("wrong", ["profile", "history", "meta", "contacts"])
def test_a_commit_finding_a_key_of_the_wrong_type_writes_nothing(redis_url, admin, wrong):
    from nba.dsl.needs import HistoryNeed, StateNeeds
    from nba.engine.state import CapCheck, Contact, StateWrite
    from nba.engine.store import StoreUnavailable

    needs = StateNeeds(
        history={"purchase": HistoryNeed(("amount",), 86400.0)}, contact_window=86400.0, profile_schema={}
    )
    store = RedisStore(redis_url, **RELAXED)
    keys = keys_of(VICTIM)
    admin.set(keys[wrong], "another service's")
    write = StateWrite(
        time=NOW,
        event_type="purchase",
        event_record={"amount": 1},
        contacts=[Contact(NOW, "r", "a", "email")],
        cap_checks=[CapCheck("rule", "r", 1, 86400.0)],
        profile_set={"score": 2},
    )
    with pytest.raises(StoreUnavailable):
        store.commit(VICTIM, needs, write)  # waited for: a cap checks it
    store.close()
    for name, key in keys.items():
        if name != wrong:
            assert not admin.exists(key), name  # nothing half-written


def test_a_write_without_contacts_to_a_key_of_the_wrong_type_loses_that_part_only(redis_url, admin):
    """Plain commands (no contact, no script): the one on the key of the wrong type is
    refused and counted lost; the others apply; nothing crashes, no cap is involved."""
    engine = engine_on(redis_url)
    admin.set(keys_of(VICTIM)["history"], "another service's")  # purchase history: a string
    decision = engine.decide({"customer_id": VICTIM, "type": "purchase", "time": NOW, "amount": 5})
    assert not decision.degraded  # a purchase reads no purchase history; its write is sent without waiting
    assert engine.get_profile(VICTIM) == {"score": 1}  # the update applied; the replies owed are read here
    assert engine.store.lost_writes >= 1  # the event was not kept: refused by the key (and logged)
    assert admin.get(keys_of(VICTIM)["history"]) == b"another service's"
    engine.close()

    waiting = Engine(load_text(RULES, "t.rules"), RedisStore(redis_url, wait_for_writes=True, **RELAXED))
    decision = waiting.decide({"customer_id": VICTIM, "type": "purchase", "time": NOW + 1, "amount": 5})
    assert decision.degraded  # awaited: the refusal is the decision's to report
    waiting.close()
