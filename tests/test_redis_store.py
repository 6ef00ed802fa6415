"""RedisStore through the Store interface: encodings, windows, caps, trimming, TTLs, faults."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import threading

import hiredis
import pytest
import redis as redis_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.dsl.needs import HistoryNeed, StateNeeds
from nba.engine.state import CapCheck, Contact, CustomerState, StateWrite
from nba.engine.store import StoreUnavailable, open_store
from nba.engine.store.redis import (
    Codec,
    KeyLayout,
    RedisStore,
    Retention,
    decode_profile,
    decode_profile_value,
    encode_profile_value,
    pack_member,
    unpack_member,
)
from nba.engine.store.redis.encoding import unpack_members
from nba.engine.store.redis.protocol import Expiries, with_slack

from redis_fixtures import needs_redis

pytestmark = needs_redis

T0 = 1_764_000_000.125
DAY = 86400.0
SCHEMA = {"tier": "string", "ltv": "number", "opt_in": "bool", "last_at": "time", "tags": "list"}
NEEDS = StateNeeds(
    history={"page_view": HistoryNeed(("category", "price"), 1800.0), "purchase": HistoryNeed(("amount",), DAY)},
    contact_window=7 * DAY,
    profile_schema=SCHEMA,
)
RELAXED = {"latency_budget_s": 2.0, "write_timeout_s": 2.0, "connect_timeout_s": 1.0}  # a busy machine is no outage


@pytest.fixture
def store(redis_url):
    store = RedisStore(redis_url, **RELAXED)
    yield store
    store.close()


@pytest.fixture
def client(redis_url):
    client = redis_py.Redis.from_url(redis_url)
    yield client
    client.close()


def event(time, event_type="page_view", record=None, contacts=(), caps=(), profile_set=None) -> StateWrite:
    return StateWrite(
        time=time,
        event_type=event_type,
        event_record=record,
        contacts=list(contacts),
        cap_checks=list(caps),
        profile_set=profile_set or {},
    )


def contact(time, rule="r1", action="a1", channel="email") -> Contact:
    return Contact(time=time, rule=rule, action=action, channel=channel)


# -- profile encodings


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=5),  # bytes: from msgpack requests, not JSON
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5) | st.integers(0, 9), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(value=st.floats() | st.integers() | st.text() | st.booleans() | st.none() | st.lists(st.floats(), max_size=3))
def test_json_text_writes_what_json_dumps_writes(value):
    """Numbers and strings take a short way (an encoder per call was most of a profile
    update's cost): the same text, and the same refusal of NaN and the infinities."""
    import json

    from nba.engine.store.redis.encoding import json_text

    try:
        expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        with pytest.raises(ValueError):
            json_text(value)
        return
    assert json_text(value) == expected


@given(value=JSON_VALUES, kind=st.sampled_from([None, "string", "number", "bool", "time", "list"]))
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_profile_value_round_trips_exactly(value, kind):
    decoded = decode_profile_value(encode_profile_value(value, kind).encode(), kind)
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("gold", "string", "gold"),
        ("12", "string", "12"),
        ("12.5", "number", 12.5),
        ("12", "number", 12),
        ("-3e2", "number", -300.0),
        ("true", "bool", True),
        ("false", "bool", False),
        ("1764000000", "time", 1764000000),
        ("2026-11-27T09:30:00Z", "time", 1795771800),
        ("2026-11-27", "time", 1795737600),
        ('["a", 1]', "list", ["a", 1]),
        ("12.5", None, 12.5),
        ('{"a": [1, 2]}', None, {"a": [1, 2]}),
        ("hello", None, "hello"),
        ("not a number", "number", "not a number"),
        ("NaN", None, "NaN"),
        ("Infinity", "number", "Infinity"),
        ("[1, -Infinity]", None, "[1, -Infinity]"),
    ],
)
def test_plain_hset_values_are_read_through_the_schema(text, kind, value):
    decoded = decode_profile_value(text.encode(), kind)
    assert decoded == value and type(decoded) is type(value)


@given(
    value=JSON_VALUES,
    kind=st.sampled_from([None, "string", "number", "bool", "time", "list"]),
    text=st.text(max_size=12),
)
@settings(max_examples=300)
def test_a_whole_hgetall_reply_decodes_as_each_value_does(value, kind, text):
    """``decode_profile`` (the hot path, on bytes) agrees with ``decode_profile_value``."""
    schema = {} if kind is None else {"f": kind}
    for stored in (encode_profile_value(value, kind), text):
        raw = stored.encode()
        try:
            expected = decode_profile_value(raw, kind)
        except ValueError:  # a NUL and no JSON after it: unreadable either way
            with pytest.raises(ValueError):
                decode_profile({b"f": raw}, schema)
            continue
        for reply in ({b"f": raw}, [b"f", raw]):  # RESP3 map, RESP2 flat list
            decoded = decode_profile(reply, schema)["f"]
            assert decoded == expected and type(decoded) is type(expected)


KEY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)


@given(
    customer=KEY_TEXT,
    types=st.lists(KEY_TEXT, max_size=3, unique=True),
    windows=st.lists(st.floats(0.001, 1e9) | st.integers(1, 10**8), min_size=4, max_size=4),
    contact_window=st.sampled_from([0.0, 60.0, 86400.0 * 365]),
    time=st.floats(0, 4e9) | st.integers(0, 4 * 10**9),
)
@settings(max_examples=200)
def test_the_read_template_packs_the_same_bytes_as_the_commands(customer, types, windows, contact_window, time):
    needs = StateNeeds(
        history={name: HistoryNeed(("x",), window) for name, window in zip(types, windows)},
        contact_window=contact_window,
        profile_schema={},
    )
    codec = Codec(needs, Retention())
    base = KeyLayout("p%").base(customer)
    commands = codec.read_commands(base, time)
    assert codec.read_request(base.encode(), time) == b"".join(hiredis.pack_command(c) for c in commands)
    assert codec.count == len(commands) == 1 + len(types) + 2 * (contact_window > 0)  # contacts: ZRANGE, HGET k


def test_members_unpack_together_as_one_by_one():
    members = [pack_member([T0 + n, n, {"category": str(n % 3), "price": n / 2}]) for n in range(50)]
    members.append(pack_member([T0, 50, {"big": 3 * 10**30}]))  # an ext-coded int beyond 64 bits
    fresh = [unpack_member(member) for member in members]
    assert unpack_members(members) == fresh
    assert unpack_members(members[10:11]) == fresh[10:11]
    assert unpack_members([]) == []


def test_profile_written_with_plain_hset(store, client):
    client.hset(
        KeyLayout().profile("c1"),
        mapping={
            "tier": "gold",
            "ltv": "1200.5",
            "opt_in": "true",
            "last_at": "2026-11-27T09:30:00Z",
            "tags": '["x"]',
            "visits": "3",
            "note": "hi",
        },
    )
    assert store.get_profile("c1", NEEDS) == {
        "tier": "gold",
        "ltv": 1200.5,
        "opt_in": True,
        "last_at": 1795771800,
        "tags": ["x"],
        "visits": 3,
        "note": "hi",
    }


@pytest.mark.parametrize("protocol", [2, 3])
def test_both_protocols_read_the_same_state(redis_url, protocol):
    """RESP2 by default (a flat HGETALL reply, cheaper for hiredis); RESP3 when the URL asks."""
    store = RedisStore(f"{redis_url}?protocol={protocol}", **RELAXED)
    try:
        store.put_profile("c1", {"tier": "gold", "ltv": 12.5, "opt_in": True}, NEEDS)
        assert store.commit("c1", NEEDS, event(T0, record={"category": "x"}, contacts=[contact(T0)]))
        expected = CustomerState(
            {"tier": "gold", "ltv": 12.5, "opt_in": True}, store.read("c1", NEEDS, T0).history, [contact(T0)]
        )
        assert store.read("c1", NEEDS, T0) == expected
        assert "page_view" in expected.history

        async def scenario():
            state = await store.read_async("c1", NEEDS, T0)
            await store.close_async()
            return state

        assert asyncio.run(scenario()) == expected
    finally:
        store.close()


def test_put_profile_replaces_the_profile(store):
    store.put_profile("c1", {"tier": "gold", "extra": {"nested": [1, 2.5, None]}}, NEEDS)
    store.put_profile("c1", {"ltv": 10}, NEEDS)
    assert store.get_profile("c1", NEEDS) == {"ltv": 10}
    store.put_profile("c1", {}, NEEDS)
    assert store.get_profile("c1", NEEDS) == {}


# -- read and commit


def test_history_and_contacts_round_trip_exactly(store):
    records = [
        {"category": "shoes", "price": 10},
        {"category": "shoes", "price": 10.0},
        {"category": None, "price": [1, {"a": True}]},
    ]
    for offset, record in enumerate(records):
        assert store.commit("c1", NEEDS, event(T0 + offset / 3, record=record, contacts=[contact(T0 + offset / 3)]))
    state = store.read("c1", NEEDS, T0 + 1)
    history = state.history["page_view"]
    assert history.times == [T0, T0 + 1 / 3, T0 + 2 / 3]
    assert history.columns["category"] == ["shoes", "shoes", None]
    assert history.columns["price"] == [10, 10.0, [1, {"a": True}]]
    assert [type(price) for price in history.columns["price"][:2]] == [int, float]
    assert state.contacts == [contact(T0), contact(T0 + 1 / 3), contact(T0 + 2 / 3)]


def test_identical_events_at_one_instant_are_all_kept_in_order(store):
    for price in (1, 1, 0.5, 1):
        assert store.commit(
            "c1", NEEDS, event(T0, record={"category": "shoes", "price": price}, contacts=[contact(T0)])
        )
    state = store.read("c1", NEEDS, T0)
    assert state.history["page_view"].columns["price"] == [1, 1, 0.5, 1]
    assert len(state.contacts) == 4


def test_read_returns_only_the_windows_the_needs_give(store):
    store.commit("c1", NEEDS, event(T0 - 1800.0, record={"category": "old"}))
    store.commit("c1", NEEDS, event(T0 - 1799.0, record={"category": "in"}))
    store.commit("c1", NEEDS, event(T0 + 0.5, record={"category": "later"}))
    history = store.read("c1", NEEDS, T0).history["page_view"]
    assert history.columns["category"] == ["in", "later"]


def test_only_the_needed_types_are_read(store):
    store.commit("c1", NEEDS, event(T0, "purchase", record={"amount": 5}))
    only_views = StateNeeds(history={"page_view": NEEDS.history["page_view"]}, contact_window=0.0, profile_schema={})
    state = store.read("c1", only_views, T0)
    assert state.history == {} and state.contacts == []


def test_profile_updates_are_written_through_the_schema(store, client):
    store.commit(
        "c1", NEEDS, event(T0, "purchase", record={"amount": 5}, profile_set={"ltv": 5.5, "opt_in": True, "tier": None})
    )
    raw = client.hgetall(KeyLayout().profile("c1"))
    assert raw == {b"ltv": b"5.5", b"opt_in": b"true", b"tier": b"\x00null"}
    assert store.get_profile("c1", NEEDS) == {"ltv": 5.5, "opt_in": True, "tier": None}


def test_an_empty_write_sends_nothing(store, client):
    assert store.commit("c1", NEEDS, event(T0))
    assert client.keys("*") == []


# -- caps


def test_a_cap_refuses_the_write_and_records_nothing(store):
    cap = CapCheck("rule", "r1", 1, DAY)
    assert store.commit("c1", NEEDS, event(T0, record={"category": "a"}, contacts=[contact(T0)], caps=[cap]))
    refused = event(T0 + 1, record={"category": "b"}, contacts=[contact(T0 + 1)], caps=[cap], profile_set={"ltv": 1})
    assert not store.commit("c1", NEEDS, refused)
    state = store.read("c1", NEEDS, T0 + 1)
    assert state.history["page_view"].columns["category"] == ["a"]
    assert len(state.contacts) == 1 and state.profile == {}


def test_a_cap_counts_only_its_window(store):
    cap = CapCheck("rule", "r1", 1, DAY)
    assert store.commit("c1", NEEDS, event(T0, contacts=[contact(T0)], caps=[cap]))
    assert not store.commit("c1", NEEDS, event(T0 + DAY - 0.001, contacts=[contact(T0 + DAY - 0.001)], caps=[cap]))
    assert store.commit("c1", NEEDS, event(T0 + DAY, contacts=[contact(T0 + DAY)], caps=[cap]))


@pytest.mark.parametrize(
    "cap, blocked, allowed",
    [
        (CapCheck("rule", "r1", 1, DAY), contact(T0 + 1, rule="r1", channel="web"), contact(T0 + 1, rule="r2")),
        (CapCheck("channel", "email", 1, DAY), contact(T0 + 1, rule="r2"), contact(T0 + 1, rule="r1", channel="web")),
        (CapCheck("channel", "email", 1, DAY), contact(T0 + 1, rule="r2"), contact(T0 + 1, rule="r1", channel=None)),
        (CapCheck("all", None, 1, DAY), contact(T0 + 1, rule="r2", channel=None), None),
    ],
)
def test_cap_scopes(store, cap, blocked, allowed):
    assert store.commit("c1", NEEDS, event(T0, contacts=[contact(T0)], caps=[cap]))
    assert not store.commit("c1", NEEDS, event(T0 + 1, contacts=[blocked], caps=[cap]))
    if allowed is not None:
        assert store.commit("c1", NEEDS, event(T0 + 1, contacts=[allowed], caps=[cap]))


def test_new_contacts_count_against_their_caps(store):
    cap = CapCheck("all", None, 1, DAY)
    two = [contact(T0, rule="r1"), contact(T0, rule="r2", action="a2")]
    assert not store.commit("c1", NEEDS, event(T0, contacts=two, caps=[cap]))
    assert store.read("c1", NEEDS, T0).contacts == []


def race_for_the_cap(url: str, customer_id: str, barrier, results) -> None:
    store = RedisStore(url, **RELAXED)
    cap = CapCheck("rule", "r1", 1, DAY)
    write = event(T0, contacts=[contact(T0)], caps=[cap])
    barrier.wait()
    results.put(store.commit(customer_id, NEEDS, write))
    store.close()


NAMES = st.sampled_from(["r", "r1", "r10", "x" * 40, "y" * 300, "z" * 70_000, "é"])
CHANNELS = st.sampled_from([None, "email", "e", "x" * 40, "y" * 300])


@given(
    past=st.lists(
        st.tuples(st.integers(-3000, 3000), st.booleans(), NAMES, CHANNELS, st.booleans()), min_size=1, max_size=12
    ),
    checks=st.lists(
        st.tuples(
            st.sampled_from(["rule", "channel", "all"]), NAMES, CHANNELS, st.integers(0, 4), st.integers(1, 4000)
        ),
        min_size=1,
        max_size=4,
    ),
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_caps_count_as_memory_does_whatever_the_names_times_and_member_numbers(redis_server, past, checks):
    """The commit script counts a contact by its rule or channel: names of every length,
    int and float times, members numbered by this version or an older one."""
    from nba.engine.store.memory import MemoryStore

    redis_server.flush()
    memory, store = MemoryStore(), RedisStore(redis_server.url, **RELAXED)
    client = redis_py.Redis.from_url(redis_server.url)
    for number, (offset, as_int, rule, channel, older) in enumerate(past):
        time = int(T0) + offset if as_int else T0 + offset
        given = contact(time, rule=rule, channel=channel)
        assert memory.commit("c1", NEEDS, event(time, contacts=[given]))
        if older:  # as an earlier version wrote it: a small member number, no script
            member = pack_member([time, number, rule, "a1", channel])
            client.zadd(KeyLayout().contacts("c1"), {member: float(time)})
        else:
            assert store.commit("c1", NEEDS, event(time, contacts=[given]))
    caps = [
        CapCheck(scope, None if scope == "all" else (rule if scope == "rule" else channel or "email"), limit, window)
        for scope, rule, channel, limit, window in checks
    ]
    new = event(T0 + 1, contacts=[contact(T0 + 1, rule=checks[0][1], channel=checks[0][2])], caps=caps)
    assert store.commit("c1", NEEDS, new) == memory.commit("c1", NEEDS, new)
    client.close()
    store.close()


def test_processes_racing_for_a_cap_of_one_get_it_once(redis_url):
    racers, customers = 6, 5
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    for customer in range(customers):
        barrier = context.Barrier(racers)
        processes = [
            context.Process(target=race_for_the_cap, args=(redis_url, f"race{customer}", barrier, results))
            for _ in range(racers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=30)
        outcomes = [results.get(timeout=10) for _ in processes]
        assert outcomes.count(True) == 1, outcomes


def read_in_child(store, results) -> None:
    results.put(store.read("c1", NEEDS, T0).profile)
    store.close()


def test_a_forked_child_opens_its_own_connections(store):
    store.commit("c1", NEEDS, event(T0, profile_set={"ltv": 1}))  # a connection, a reply still owed on it
    parents_link = store.sync_nodes[store.topology.seed.address].free[-1]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=read_in_child, args=(store, results))
    child.start()
    child.join(timeout=30)
    assert results.get(timeout=10) == {"ltv": 1}
    assert child.exitcode == 0
    assert store.read("c1", NEEDS, T0).profile == {"ltv": 1}  # the parent's link is intact
    assert store.sync_nodes[store.topology.seed.address].free == [parents_link]
    assert store.lost_writes == 0


# -- retention


def test_history_is_trimmed_to_its_window_of_the_newest_time(store, client):
    for offset in (0, 1000, 2000, 4000):
        store.commit("c1", NEEDS, event(T0 + offset, record={"category": str(offset)}))
    key = KeyLayout().history("c1", "page_view")
    kept = [score for _, score in client.zrange(key, 0, -1, withscores=True)]
    assert kept == [T0 + 4000]  # 1800 s window: the others are out of every window


def test_a_read_fetches_its_window_and_the_late_events_slack_is_only_kept(store, client):
    slack = StateNeeds(
        history={"page_view": HistoryNeed(("category",), 1800.0, late_s=300.0)}, contact_window=0.0, profile_schema={}
    )
    for offset, category in ((0, "old"), (1700, "in both"), (2000, "new")):
        store.commit("c1", slack, event(T0 + offset, record={"category": category}))
    # written at T0 + 2000: kept from T0 - 100 (window and slack), so "old" is still in Redis
    key = KeyLayout().history("c1", "page_view")
    assert [score for _, score in client.zrange(key, 0, -1, withscores=True)] == [T0, T0 + 1700, T0 + 2000]
    # ... but a decision at T0 + 2000 reads (T0 + 200, ...): its window only
    assert store.read("c1", slack, T0 + 2000).history["page_view"].columns["category"] == ["in both", "new"]
    # a late event at T0 + 100 still finds "old" in its own window
    assert store.read("c1", slack, T0 + 100).history["page_view"].columns["category"] == ["old", "in both", "new"]


def test_trimming_runs_from_each_writes_own_time_never_from_a_newer_one(store):
    store.commit("c1", NEEDS, event(T0, record={"category": "a"}))
    store.commit("c1", NEEDS, event(T0 + 3600, "purchase", record={"amount": 1}))
    store.commit("c1", NEEDS, event(T0 + 1, record={"category": "late"}))  # older than the newest - 1800: kept
    assert store.read("c1", NEEDS, T0 + 1).history["page_view"].columns["category"] == ["a", "late"]
    store.commit("c1", NEEDS, event(T0 + 4000, record={"category": "new"}))  # trims both
    assert store.read("c1", NEEDS, T0 + 1).history["page_view"].columns["category"] == ["new"]


def test_history_keeps_at_most_max_events_per_type(redis_url):
    store = RedisStore(redis_url, max_events_per_type=3, **RELAXED)
    for offset in range(5):
        store.commit("c1", NEEDS, event(T0 + offset, record={"category": str(offset)}))
    assert store.read("c1", NEEDS, T0).history["page_view"].columns["category"] == ["2", "3", "4"]
    store.close()


@pytest.mark.parametrize("with_contact", [False, True], ids=["plain", "script"])
def test_a_history_trimmed_by_count_only_now_and_then_reads_as_if_trimmed_at_every_write(
    redis_url, client, monkeypatch, with_contact
):
    from nba.engine.store.redis import protocol

    store = RedisStore(redis_url, max_events_per_type=3, **RELAXED)
    key = KeyLayout().history("c1", "page_view")
    monkeypatch.setattr(protocol, "getrandbits", lambda bits: 1)  # never this time
    late = [T0 + 9, T0 + 1, T0 + 2, T0 + 8, T0 + 3, T0 + 7]  # out of order: late ones drop out at once
    for number, time in enumerate(late):
        contacts = [contact(time, rule=f"r{number}")] if with_contact else []
        store.commit("c1", NEEDS, event(time, record={"category": str(time - T0)}, contacts=contacts))
    assert client.zcard(key) == 6
    assert store.read("c1", NEEDS, T0).history["page_view"].columns["category"] == ["7.0", "8.0", "9.0"]
    monkeypatch.setattr(protocol, "getrandbits", lambda bits: 0)  # this time
    store.commit("c1", NEEDS, event(T0 + 4, record={"category": "4.0"}))
    assert client.zcard(key) == 3
    assert store.read("c1", NEEDS, T0).history["page_view"].columns["category"] == ["7.0", "8.0", "9.0"]
    store.close()


def test_an_out_of_order_event_inside_the_window_is_kept(store):
    store.commit("c1", NEEDS, event(T0 + 1000, record={"category": "new"}))
    store.commit("c1", NEEDS, event(T0, record={"category": "late"}))
    history = store.read("c1", NEEDS, T0).history["page_view"]
    assert history.columns["category"] == ["late", "new"]


COUNTED = [CapCheck("rule", "r1", 5, DAY)]  # a cap counts the contact: the commit script records it


@pytest.fixture
def plain_contacts(monkeypatch):
    """Writes of contacts no cap counts never run the script (it trims them once in 16 at random)."""
    from nba.engine.store.redis import protocol

    monkeypatch.setattr(protocol, "getrandbits", lambda bits: 1)


def test_keys_expire_after_the_retention(store, client):
    store.put_profile("c1", {"tier": "gold"}, NEEDS)
    write = event(T0, record={"category": "x"}, contacts=[contact(T0)], caps=COUNTED, profile_set={"ltv": 1})
    store.commit("c1", NEEDS, write)
    layout = KeyLayout()
    retention_ms = (NEEDS.retention + 60) * 1000
    assert client.hgetall(layout.meta("c1")) == {b"k": b"-inf"}  # no contact trimmed yet
    for key in (layout.history("c1", "page_view"), layout.contacts("c1"), layout.meta("c1")):
        assert retention_ms - 60_000 < client.pttl(key) <= with_slack(retention_ms)
    assert client.pttl(layout.profile("c1")) == -1  # profiles are kept unless profile_ttl_s is set


def test_contacts_no_cap_counts_expire_with_the_trim_mark(store, client, plain_contacts):
    store.commit("c1", NEEDS, event(T0, contacts=[contact(T0)], caps=COUNTED))  # makes the mark
    store.expiries.forget()  # as a process that did not set the TTLs
    client.persist(KeyLayout().meta("c1"))
    client.config_resetstat()
    store.commit("c1", NEEDS, event(T0 + 1, contacts=[contact(T0 + 1)]))
    store.read("c1", NEEDS, T0 + 1)  # the write was applied
    assert "cmdstat_evalsha" not in client.info("commandstats")  # plain commands
    retention_ms = (NEEDS.retention + 60) * 1000
    for key in (KeyLayout().contacts("c1"), KeyLayout().meta("c1")):
        assert retention_ms - 60_000 < client.pttl(key) <= with_slack(retention_ms)


def test_a_ttl_is_set_again_only_when_the_one_set_before_runs_short(store, client):
    key = KeyLayout().history("c1", "page_view")
    needed = Retention().ttls(NEEDS)[0]
    store.commit("c1", NEEDS, event(T0, record={"category": "a"}))
    store.read("c1", NEEDS, T0)  # the write was applied
    assert needed < client.pttl(key) <= with_slack(needed)
    client.pexpire(key, 600_000)  # shorter than this process set: it does not know
    store.commit("c1", NEEDS, event(T0 + 1, record={"category": "b"}))
    store.read("c1", NEEDS, T0)
    assert client.pttl(key) <= 600_000  # the TTL set before covers the retention from now: not set again
    store.expiries.until[key] -= with_slack(needed) - needed + 1  # as if a while went by
    store.commit("c1", NEEDS, event(T0 + 2, record={"category": "c"}))
    store.read("c1", NEEDS, T0)
    assert needed < client.pttl(key) <= with_slack(needed)


def test_every_ttl_set_covers_the_retention_from_the_write():
    expiries = Expiries()
    needed = 3_600_000
    assert expiries.due("k", needed, 0.0) == with_slack(needed)
    for now in range(0, with_slack(needed) - needed + 1, 60_000):
        assert expiries.due("k", needed, float(now)) == 0  # set at 0: still covers now + needed
    assert expiries.due("k", needed, float(with_slack(needed) - needed + 1)) == with_slack(needed)
    assert with_slack(10**12) - 10**12 == 300_000  # at most 5 minutes more than needed


def test_profile_ttl_when_asked(redis_url, client):
    store = RedisStore(redis_url, profile_ttl_s=3600, **RELAXED)
    store.put_profile("c1", {"tier": "gold"}, NEEDS)
    assert 3_500_000 < client.pttl(KeyLayout().profile("c1")) <= with_slack(3600_000)
    store.put_profile("c2", {"tier": "gold"}, NEEDS)
    client.persist(KeyLayout().profile("c2"))
    store.commit("c2", NEEDS, event(T0, profile_set={"ltv": 1}))  # an update sets it too
    assert store.get_profile("c2", NEEDS) == {"tier": "gold", "ltv": 1}
    assert 3_500_000 < client.pttl(KeyLayout().profile("c2")) <= with_slack(3600_000)
    store.close()


def test_all_keys_of_a_customer_share_one_slot(store, client):
    customer = "we{ird}:id"
    write = event(T0, record={"category": "x"}, contacts=[contact(T0)], caps=COUNTED, profile_set={"ltv": 1})
    store.commit(customer, NEEDS, write)
    store.commit(customer, NEEDS, event(T0, "purchase", record={"amount": 1}))
    keys = client.keys("*")
    assert len(keys) == 5  # profile, contacts, two history types, meta
    assert len({redis_py.cluster.key_slot(key) for key in keys}) == 1
    assert store.read(customer, NEEDS, T0).profile == {"ltv": 1}


# -- asyncio


def test_async_paths_match_the_sync_ones(store):
    async def scenario():
        cap = CapCheck("rule", "r1", 1, DAY)
        await store.put_profile_async("c1", {"tier": "gold"}, NEEDS)
        assert await store.commit_async(
            "c1", NEEDS, event(T0, record={"category": "x"}, contacts=[contact(T0)], caps=[cap])
        )
        assert not await store.commit_async("c1", NEEDS, event(T0, contacts=[contact(T0)], caps=[cap]))
        state = await store.read_async("c1", NEEDS, T0)
        assert await store.get_profile_async("c1", NEEDS) == {"tier": "gold"}
        await store.close_async()
        return state

    assert asyncio.run(scenario()) == store.read("c1", NEEDS, T0)


def answer_of(start) -> asyncio.Future:
    """What ``start(then)`` hands its callback, as a future (``read_then``/``commit_then``)."""
    future = asyncio.get_running_loop().create_future()

    def then(result, error) -> None:
        assert not future.done(), "told twice"
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    start(then)
    return future


def test_callback_paths_match_the_awaited_ones(store, client):
    """``read_then``/``commit_then`` (the socket server's, with no task): through the
    awaited path until the link is open, by callback on it after; an awaited commit, one
    sent without waiting, one refused by its cap, and one sent after a script flush."""
    cap = CapCheck("rule", "r1", 1, DAY)

    async def scenario():
        first = await answer_of(lambda then: store.read_then("c1", NEEDS, T0, then))  # no link yet
        assert first.profile == {} and store.async_nodes[store.topology.seed.address].ready_link() is not None
        gave = event(T0, record={"category": "x"}, contacts=[contact(T0)], caps=[cap], profile_set={"ltv": 2})
        assert await answer_of(lambda then: store.commit_then("c1", NEEDS, gave, then))
        refused = event(T0, contacts=[contact(T0)], caps=[cap])
        assert not await answer_of(lambda then: store.commit_then("c1", NEEDS, refused, then))
        unwaited = event(T0 + 1, record={"category": "y"})
        assert await answer_of(lambda then: store.commit_then("c1", NEEDS, unwaited, then))  # at once
        client.script_flush()  # the next awaited commit is told NOSCRIPT, then sent as EVAL
        other = event(T0, contacts=[contact(T0, rule="r2")], caps=[CapCheck("rule", "r2", 1, DAY)])
        assert await answer_of(lambda then: store.commit_then("c2", NEEDS, other, then))
        states = [await answer_of(lambda then, c=c: store.read_then(c, NEEDS, T0 + 1, then)) for c in ("c1", "c2")]
        await store.close_async()
        return states

    assert asyncio.run(scenario()) == [store.read("c1", NEEDS, T0 + 1), store.read("c2", NEEDS, T0 + 1)]
    assert store.lost_writes == 0


def test_each_event_loop_gets_a_link_of_its_own(store):
    """A link is handed out only to callers of the loop it was opened on, running in its
    thread: one event loop after another, or in another thread, each opens its own."""

    async def read_twice():
        await store.read_async("c1", NEEDS, T0)
        link = store.async_nodes[store.topology.seed.address].ready_link()
        state = await answer_of(lambda then: store.read_then("c1", NEEDS, T0, then))
        return link, state

    first, _ = asyncio.run(read_twice())
    second, _ = asyncio.run(read_twice())  # the first loop is closed: its link is not used
    assert first is not None and second is not None and second is not first
    links = []
    thread = threading.Thread(target=lambda: links.append(asyncio.run(read_twice())[0]))
    thread.start()
    thread.join(60)
    assert links and links[0] not in (first, second)
    assert store.async_nodes[store.topology.seed.address].ready_link() is None  # no loop runs here


def test_callback_reads_of_unreadable_state_or_a_lost_redis_tell_unavailable(own_redis_server):
    store = RedisStore(own_redis_server.url, retry_interval_s=0.0, **RELAXED)
    client = redis_py.Redis.from_url(own_redis_server.url)
    client.set(KeyLayout().contacts("c2"), "a string, not a sorted set")

    async def scenario():
        await store.read_async("c1", NEEDS, T0)  # the link is open
        with pytest.raises(StoreUnavailable):
            await answer_of(lambda then: store.read_then("c2", NEEDS, T0, then))
        assert (await answer_of(lambda then: store.read_then("c1", NEEDS, T0, then))).profile == {}
        client.execute_command("CLIENT", "PAUSE", 10000, "ALL")  # the next read stays unanswered ...
        client.close()
        reading = answer_of(lambda then: store.read_then("c1", NEEDS, T0, then))
        await asyncio.sleep(0.05)
        own_redis_server.stop()  # ... until the connection is lost
        with pytest.raises(StoreUnavailable):
            await reading
        with pytest.raises(StoreUnavailable):
            await answer_of(lambda then: store.read_then("c1", NEEDS, T0, then))
        own_redis_server.start()
        assert (await answer_of(lambda then: store.read_then("c1", NEEDS, T0, then))).profile == {}
        await store.close_async()

    asyncio.run(scenario())


# -- faults


def test_redis_down_then_back(own_redis_server):
    store = RedisStore(own_redis_server.url, retry_interval_s=0.0, **RELAXED)
    store.commit("c1", NEEDS, event(T0, record={"category": "x"}, profile_set={"ltv": 1}))
    own_redis_server.stop()
    with pytest.raises(StoreUnavailable):
        store.read("c1", NEEDS, T0)
    with pytest.raises(StoreUnavailable):
        store.commit("c1", NEEDS, event(T0, profile_set={"ltv": 2}))
    own_redis_server.start()  # an empty server: nothing was kept
    assert store.read("c1", NEEDS, T0).profile == {}
    assert store.commit("c1", NEEDS, event(T0, record={"category": "x"}, profile_set={"ltv": 3}))
    assert store.get_profile("c1", NEEDS) == {"ltv": 3}
    # the TTL set before the restart went with the keys: set again, not taken as still there
    assert int(own_redis_server.command("PTTL", KeyLayout().history("c1", "page_view"))[1:]) > 0
    store.close()


def test_redis_down_then_back_async(own_redis_server):
    store = RedisStore(own_redis_server.url, retry_interval_s=0.0, **RELAXED)

    async def scenario():
        await store.commit_async("c1", NEEDS, event(T0, profile_set={"ltv": 1}))
        own_redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.read_async("c1", NEEDS, T0)
        own_redis_server.start()
        assert await store.commit_async("c1", NEEDS, event(T0, profile_set={"ltv": 3}))
        profile = (await store.read_async("c1", NEEDS, T0)).profile
        await store.close_async()
        return profile

    assert asyncio.run(scenario()) == {"ltv": 3}


def test_a_slow_redis_times_out_and_the_connection_is_not_reused(store, client):
    store.commit("c1", NEEDS, event(T0, profile_set={"ltv": 1}))
    store.commit("c2", NEEDS, event(T0, profile_set={"ltv": 2}))
    impatient = RedisStore(store.url, latency_budget_s=0.005)
    assert impatient.read("c1", NEEDS, T0).profile == {"ltv": 1}
    client.execute_command("CLIENT", "PAUSE", 300, "ALL")
    with pytest.raises(StoreUnavailable):
        impatient.read("c1", NEEDS, T0)
    client.execute_command("CLIENT", "UNPAUSE")
    assert impatient.read("c2", NEEDS, T0).profile == {"ltv": 2}  # not c1's late reply
    impatient.close()


def test_a_store_made_while_redis_is_down_connects_later(own_redis_server):
    url = own_redis_server.url
    own_redis_server.stop()
    store = RedisStore(url, retry_interval_s=0.0, **RELAXED)
    with pytest.raises(StoreUnavailable):
        store.read("c1", NEEDS, T0)
    own_redis_server.start()
    assert store.read("c1", NEEDS, T0).profile == {}
    assert store.topology.cluster is False
    store.close()


def test_open_store_picks_redis_for_a_url(redis_url):
    store = open_store(redis_url, latency_budget_s=0.5)
    assert isinstance(store, RedisStore) and store.latency_budget_s == 0.5
    store.close()


def test_floats_survive_as_scores():
    assert all(float(repr(x)) == x for x in (T0, math.pi * 1e9, 1e-300))


# -- the same state as MemoryStore, the reference


def windowed(state, needs: StateNeeds, time: float) -> dict:
    """What a decision at ``time`` can see of ``state``: entries inside the read windows,
    and the newest contact time trimmed away."""
    history = {}
    for event_type, need in needs.history.items():
        kept = state.history.get(event_type)
        rows = (
            []
            if kept is None
            else [
                (t, tuple(kept.columns[name][i] for name in need.fields))
                for i, t in enumerate(kept.times)
                if t > time - need.window
            ]
        )
        if rows:
            history[event_type] = rows
    contacts = [c for c in state.contacts if c.time > time - needs.contact_window]
    # a mark before the window refuses no check of a decision at ``time`` (its windows are
    # inside): a Redis read sees only the trims the window holds of what plain writes left
    kept_from = max(state.kept_from, time - needs.contact_window)
    return {"profile": state.profile, "history": history, "contacts": contacts, "kept_from": kept_from}


WRITES = st.lists(
    st.tuples(
        st.integers(0, 4000),  # time offset, often out of order
        st.sampled_from(["page_view", "purchase", "login"]),
        st.sampled_from([None, 1, 2.5, "x"]),  # a field value
        st.booleans(),  # with a contact
        st.booleans(),  # a cap counts it (else plain commands, or the script once in 16)
        st.sampled_from(["r1", "r2"]),
        st.sampled_from(["email", "web", None]),
        st.sampled_from([{}, {"ltv": 3}, {"tier": "gold", "ltv": 0.5}]),
    ),
    max_size=25,
)


@pytest.mark.parametrize("path", ["sync", "async", "once"])
@pytest.mark.parametrize("limit", [10_000, 3], ids=["by-time", "by-count"])
@given(writes=WRITES, trims=st.integers(0, 2**32))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_redis_keeps_the_same_state_as_memory(redis_server, monkeypatch, path, limit, writes, trims):
    """Every way a write goes (plain commands without contacts or with contacts no cap
    counts, the commit script with contacts a cap counts, and once in 16 with others; the
    streams' once script around it), trimmed by time and by count, reads back as memory's;
    and the caps the script checks after plain writes left contacts untrimmed decide as
    memory's. ``trims`` seeds when a write of contacts no cap counts runs the script."""
    import random

    from nba.engine.store.memory import MemoryStore
    from nba.engine.store.redis import protocol

    monkeypatch.setattr(protocol, "getrandbits", random.Random(trims).getrandbits)
    redis_server.flush()
    needs = StateNeeds(
        history={"page_view": HistoryNeed(("category", "price"), 1800.0), "purchase": HistoryNeed(("amount",), 3000.0)},
        contact_window=2400.0,
        profile_schema=SCHEMA,
        contact_keep=3000.0,  # shorter than the offsets: contacts are trimmed by time too
    )
    caps = [CapCheck("rule", "r1", 2, 600.0), CapCheck("channel", "email", 3, 2400.0), CapCheck("all", None, 4, 1200.0)]
    memory = MemoryStore(max_events_per_type=limit, max_contacts=limit)
    store = RedisStore(redis_server.url, max_events_per_type=limit, max_contacts=limit, **RELAXED)
    commit, read, close = store_calls(store, path)
    for number, (offset, event_type, value, with_contact, counted, rule, channel, updates) in enumerate(writes):
        time = T0 + offset
        need = needs.history.get(event_type)
        record = None if need is None else {name: value for name in need.fields}
        contacts = [contact(time, rule=rule, channel=channel)] if with_contact else []
        write = event(
            time, event_type, record=record, contacts=contacts, caps=caps if counted else [], profile_set=updates
        )
        if write.is_empty:
            continue
        assert commit("c1", needs, write, number) == memory.commit("c1", needs, write)
        for probe in (time, T0 + 2000):
            assert windowed(read("c1", needs, probe), needs, probe) == windowed(
                memory.read("c1", needs, probe), needs, probe
            )
    close()


def store_calls(store: RedisStore, path: str) -> tuple:
    """(commit, read, close) of ``store`` as ``path`` makes them: sync, asyncio (one loop
    throughout, so that a read follows the writes sent before it on one link), or once per key."""
    if path != "async":
        if path == "sync":
            commit = lambda customer_id, needs, write, _number: store.commit(customer_id, needs, write)  # noqa: E731
        else:
            commit = lambda customer_id, needs, write, number: store.commit_once(  # noqa: E731
                customer_id, needs, write, f"entry-{number}", b"record", 60
            )[0]
        return commit, store.read, store.close
    loop = asyncio.new_event_loop()

    def commit_async(customer_id, needs, write, _number):
        return loop.run_until_complete(store.commit_async(customer_id, needs, write))

    def read_async(customer_id, needs, time):
        return loop.run_until_complete(store.read_async(customer_id, needs, time))

    def close():
        loop.run_until_complete(store.close_async())
        loop.close()

    return commit_async, read_async, close


def test_a_write_without_contacts_a_cap_counts_runs_no_script(store, client, plain_contacts):
    client.config_resetstat()
    assert store.commit("c1", NEEDS, event(T0, record={"category": "x"}, profile_set={"ltv": 1}))
    assert store.commit("c1", NEEDS, event(T0 + 1, record={"category": "y"}, contacts=[contact(T0 + 1)]))
    state = store.read("c1", NEEDS, T0 + 1)
    assert state.profile == {"ltv": 1} and state.contacts == [contact(T0 + 1)]
    commands = {name.removeprefix("cmdstat_") for name in client.info("commandstats")}
    assert "evalsha" not in commands and "eval" not in commands
    assert {"zadd", "zremrangebyscore", "pexpire", "hset"} <= commands
    assert store.commit("c1", NEEDS, event(T0 + 2, record={"category": "y"}, contacts=[contact(T0 + 2)], caps=COUNTED))
    assert "cmdstat_evalsha" in client.info("commandstats")  # a contact a cap counts: the commit script


@pytest.mark.parametrize("time", [T0, int(T0)], ids=["float", "int"])
def test_two_processes_numbering_two_equal_contacts_alike_keep_both(store, monkeypatch, time):
    from nba.engine.store.redis import encoding

    same = encoding.UINT64 + (12345 << encoding.TAG_BITS).to_bytes(8, "big")
    monkeypatch.setattr(encoding.MEMBER_NUMBERS.__class__, "next_packed", lambda self: same)
    twin = event(time, record={"category": "x"}, contacts=[contact(time)], caps=COUNTED)
    assert store.commit("c1", NEEDS, twin) and store.commit("c1", NEEDS, twin)  # as if from two processes
    state = store.read("c1", NEEDS, time)
    assert len(state.contacts) == 2  # the script made the second unique: a cap counts both
    assert len(state.history["page_view"]) == 2


def test_a_contact_no_cap_counts_written_twice_alike_is_a_lost_write(store, monkeypatch, plain_contacts):
    """Plain commands cannot renumber: the second ``ZADD`` finds the member there (another
    process's, the same microsecond and tag) and the write is counted lost, not applied."""
    from nba.engine.store.redis import encoding

    same = encoding.UINT64 + (12345 << encoding.TAG_BITS).to_bytes(8, "big")
    monkeypatch.setattr(encoding.MEMBER_NUMBERS.__class__, "next_packed", lambda self: same)
    twin = event(T0, contacts=[contact(T0)])
    assert store.commit("c1", NEEDS, twin) and store.commit("c1", NEEDS, twin)
    assert len(store.read("c1", NEEDS, T0).contacts) == 1  # the read answers the second write first
    assert store.lost_writes == 1


def test_a_member_the_script_cannot_renumber_writes_nothing(store, client, monkeypatch):
    from nba.engine.store.redis import encoding

    same = encoding.UINT64 + (12345 << encoding.TAG_BITS).to_bytes(8, "big")
    monkeypatch.setattr(encoding.MEMBER_NUMBERS.__class__, "next_packed", lambda self: same)
    huge = 2**70  # a time of more than 64 bits: msgpack ext, where no number can be found after it
    # a cap at stake, so the write is awaited (one no cap counts would be sent without waiting)
    twin = event(T0, contacts=[contact(huge)], caps=[CapCheck("all", None, 100, DAY)])
    assert store.commit("c1", NEEDS, twin)
    with pytest.raises(StoreUnavailable):
        store.commit("c1", NEEDS, twin)
    assert client.zcard(KeyLayout().contacts("c1")) == 1


# -- writes sent without waiting


def test_a_write_without_contacts_is_seen_by_the_next_read(store):
    assert store.commit("c1", NEEDS, event(T0, record={"category": "x"}, profile_set={"ltv": 1}))
    assert store.sync_nodes[store.topology.seed.address].free[-1].unread  # not waited for
    assert store.read("c1", NEEDS, T0).profile == {"ltv": 1}


def test_close_reads_what_is_owed(redis_url):
    store = RedisStore(redis_url, **RELAXED)
    store.commit("c1", NEEDS, event(T0, profile_set={"ltv": 1}))
    store.close()
    assert RedisStore(redis_url, **RELAXED).get_profile("c1", NEEDS) == {"ltv": 1}
    assert store.lost_writes == 0


def test_a_write_sent_without_waiting_survives_a_script_flush(store, client):
    store.read("c1", NEEDS, T0)  # connected, script loaded
    client.script_flush()
    store.commit("c1", NEEDS, event(T0, profile_set={"ltv": 1}))
    store.get_profile("c1", NEEDS)  # reads the NOSCRIPT answer: the write is sent again with EVAL
    assert store.get_profile("c1", NEEDS) == {"ltv": 1}
    assert store.lost_writes == 0


def test_an_async_write_sent_without_waiting_goes_out_with_the_next_request_or_soon_after(store, client):
    from nba.engine.store.redis.async_io import UNWAITED_DELAY_S

    async def scenario():
        loop = asyncio.get_running_loop()
        await store.read_async("c1", NEEDS, T0)  # the link is open
        link = store.async_nodes[store.topology.seed.address].ready_link()
        assert await store.commit_async("c1", NEEDS, event(T0, profile_set={"ltv": 1}))
        assert link.outgoing  # not written yet: it waits for a request to go with
        assert (await store.read_async("c1", NEEDS, T0)).profile == {"ltv": 1}  # it went first, in one write
        assert await store.commit_async("c1", NEEDS, event(T0, profile_set={"ltv": 2}))
        queued = loop.time()
        while client.hget(KeyLayout().profile("c1"), "ltv") != b"2":  # nothing else to go with: written soon
            assert loop.time() - queued < 5.0
            await asyncio.sleep(UNWAITED_DELAY_S / 4)
        await store.close_async()

    asyncio.run(scenario())
    assert store.lost_writes == 0


def test_waiting_for_every_write_when_asked(redis_url):
    store = RedisStore(redis_url + "?wait_for_writes=true&latency_budget_ms=2000&write_timeout_ms=2000")
    assert store.wait_for_writes and store.latency_budget_s == 2.0
    store.commit("c1", NEEDS, event(T0, profile_set={"ltv": 1}))
    assert not store.sync_nodes[store.topology.seed.address].free[-1].unread
    store.close()


def test_a_customer_with_unreadable_state_is_unavailable_not_a_crash(store, client):
    client.zadd(KeyLayout().history("c1", "page_view"), {b"\xc1 not msgpack": T0})
    with pytest.raises(StoreUnavailable):
        store.read("c1", NEEDS, T0)
    client.set(KeyLayout().contacts("c2"), "a string, not a sorted set")
    with pytest.raises(StoreUnavailable):
        store.read("c2", NEEDS, T0)
    assert store.read("c3", NEEDS, T0).profile == {}


def test_a_quiet_customer_costs_nothing_after_the_retention(redis_url, client):
    short = StateNeeds(history={"page_view": HistoryNeed(("category",), 0.2)}, contact_window=0.2, profile_schema={})
    store = RedisStore(redis_url, ttl_grace_s=0.0, **RELAXED)
    store.commit("c1", short, event(T0, record={"category": "x"}, contacts=[contact(T0)], caps=COUNTED))
    assert len(client.keys("*")) == 3  # history, contacts, meta
    for _ in range(300):  # Redis expires keys on its own clock; wait for it, a bounded while
        if not client.keys("*"):
            break
        threading.Event().wait(0.01)
    assert client.keys("*") == []
    store.close()


def test_ints_beyond_64_bits_round_trip(store):
    huge = 10**30
    store.commit("c1", NEEDS, event(T0, record={"category": [huge, -huge], "price": huge}))
    history = store.read("c1", NEEDS, T0).history["page_view"]
    assert history.columns == {"category": [[huge, -huge]], "price": [huge]}


def child_numbers(results) -> None:
    from nba.engine.store.redis.encoding import MEMBER_NUMBERS, TAG_MASK

    results.put([int.from_bytes(MEMBER_NUMBERS.next_packed()[1:], "big") & TAG_MASK for _ in range(3)])


def test_member_numbers_increase_and_a_forked_child_tags_its_own():
    from nba.engine.store.redis.encoding import MEMBER_NUMBERS, TAG_MASK

    numbers = [MEMBER_NUMBERS.next_packed() for _ in range(1000)]
    assert all(len(number) == 9 and number[:1] == b"\xcf" for number in numbers)
    assert numbers == sorted(set(numbers))  # strictly increasing: bytes sort as the numbers
    assert len({int.from_bytes(number[1:], "big") & TAG_MASK for number in numbers}) == 1
    context = multiprocessing.get_context("fork")
    tags = set()
    for _ in range(4):
        results = context.Queue()
        child = context.Process(target=child_numbers, args=(results,))
        child.start()
        tags.update(results.get(timeout=30))
        child.join(timeout=30)
    assert len(tags) > 1  # 4 children with 4,096 tags each drawn at random: all equal once in 10**10
