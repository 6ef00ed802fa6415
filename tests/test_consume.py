"""`nba consume` against real redis-server processes: exactly-once effects, crashes,
poison and bad entries, trimmed streams, a deleted group, a Redis restart, a cluster.

Most tests drive a ``Consumer`` in this process one round at a time (``step``), so that a
fault can be put exactly between two rounds; the crash tests run consumers as separate
processes (tests/consume_child.py) and kill them with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import redis as redis_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.dsl import load_ruleset
from nba.dsl.needs import HistoryNeed, StateNeeds
from nba.engine import Engine
from nba.engine.decision import Choice, decision_map
from nba.engine.state import CapCheck, Contact, StateWrite
from nba.engine.store.redis import RedisStore
from nba.engine.stream.batch import BatchDecider, Item, decision_json, dumps
from nba.engine.stream.commits import StreamedCommits
from nba.engine.stream.consumer import Consumer, ConsumeSettings

from polling import wait_until
from redis_fixtures import RedisServer, needs_redis

pytestmark = needs_redis

ROOT = Path(__file__).resolve().parent.parent
RULES = str(ROOT / "tests" / "rulefiles" / "consume")
CHILD = str(ROOT / "tests" / "consume_child.py")
CAPS = {"promo_email": 2, "banner_web": 3}  # per customer per day, as consume.rules says
WAIT_S = 60.0


# ---------------------------------------------------------------------------------------
# helpers


def client_for(url: str) -> redis_py.Redis:
    return redis_py.Redis.from_url(url)


def add_events(client, stream: str, events: list) -> list[str]:
    """XADD each event (a dict as JSON, or raw fields); the entry ids."""
    pipe = client.pipeline(transaction=False)
    for event in events:
        fields = event if isinstance(event, tuple) else {"event": json.dumps(event)}
        if isinstance(fields, tuple):
            fields = dict([fields])
        pipe.xadd(stream, fields)
    return [entry_id.decode() for entry_id in pipe.execute()]


RECENT = int(time.time()) - 3600  # the events' time: an hour ago, in every cap's window


def visits(customers: int, per_customer: int) -> list[dict]:
    """Events of ``customers`` customers, interleaved, ``per_customer`` each, all at one time.

    One time for all: a cap counts the contacts in (t - D, t] of each decision's own time t,
    so events at several times decided in another order by several processes could each
    hold their own window and still put more than the cap in some other one.
    """
    return [
        {"customer_id": f"c{n}", "type": "visit", "time": RECENT} for _ in range(per_customer) for n in range(customers)
    ]


def outputs(client, out: str) -> list[tuple[str, dict]]:
    """(entry id, fields) of every output entry, in order."""
    rows = []
    for _out_id, fields in client.xrange(out):
        rows.append((fields[b"entry"].decode(), {k.decode(): v.decode() for k, v in fields.items()}))
    return rows


def decisions_by_entry(rows) -> dict[str, str]:
    """Each entry's output; fails when an entry was answered twice with different outputs."""
    seen: dict[str, str] = {}
    for entry, fields in rows:
        answer = fields.get("decision") or "error:" + fields["error"]
        assert seen.setdefault(entry, answer) == answer, f"entry {entry} answered twice differently"
    return seen


RULESETS: dict = {}  # path -> compiled ruleset, loaded once


def make_consumer(url: str, streams=("in",), rules: str = RULES, **options) -> Consumer:
    options.setdefault("block_ms", 50)
    options.setdefault("count", 50)
    store = RedisStore(url, latency_budget_s=2.0, write_timeout_s=2.0, connect_timeout_s=1.0, retry_interval_s=0.05)
    if rules not in RULESETS:
        RULESETS[rules] = load_ruleset(rules)
    engine = Engine(RULESETS[rules], store, path=rules)
    return Consumer(
        engine, ConsumeSettings(streams=list(streams), consumer=options.pop("consumer", "test"), **options), url
    )


def run_until(consumer: Consumer, done, timeout_s: float = WAIT_S) -> None:
    """Steps ``consumer`` until ``done()``."""

    def stepped_until_done() -> bool:
        if done():
            return True
        consumer.step()
        consumer.after_step()
        return False

    wait_until(
        stepped_until_done,
        lambda: f"the consumer done; stats: {consumer.snapshot()}",
        timeout_s=timeout_s,
        interval_s=0,
    )


def answered(client, out: str, count: int):
    return lambda: len(decisions_by_entry(outputs(client, out))) >= count


def effects(client, customers: list[str]) -> dict[str, dict]:
    """Per customer: kept visits (history), profile visit count, contacts per rule."""
    found = {}
    for customer in customers:
        history = client.zcard(f"nba:{{{customer}}}:h:visit")
        visits_set = client.hget(f"nba:{{{customer}}}:p", "visits")
        rules = Counter()
        import msgpack

        for member in client.zrange(f"nba:{{{customer}}}:c", 0, -1):
            rules[msgpack.unpackb(member)[2]] += 1
        found[customer] = {"history": history, "visits": float(visits_set) if visits_set else 0, "contacts": rules}
    return found


def check_exactly_once(
    client, ids_by_customer: dict[str, list[str]], answers: dict[str, str], one_process: bool = True
) -> None:
    """Every entry answered; history and the profile count each entry once; each decision
    that chose an action is one contact; no cap exceeded.

    With several processes, two decisions for one customer at once may both read the same
    profile and both set `visits` to one more (a profile update is read, then written: the
    store checks caps at the commit, not profiles): the count may then be lower, never higher.
    """
    found = effects(client, list(ids_by_customer))
    for customer, ids in ids_by_customer.items():
        assert all(entry in answers for entry in ids), f"{customer}: an entry has no output"
        chosen = Counter(json.loads(answers[entry])["rule"] for entry in ids)
        chosen.pop(None, None)
        got = found[customer]
        assert got["history"] == len(ids), (customer, got)
        if one_process:
            assert got["visits"] == len(ids), (customer, got)
        else:
            assert 1 <= got["visits"] <= len(ids), (customer, got)
        assert got["contacts"] == chosen, (customer, got, chosen)
        for rule, cap in CAPS.items():
            assert got["contacts"][rule] <= cap


# ---------------------------------------------------------------------------------------
# the store's commit once per key

NEEDS = StateNeeds(
    history={"visit": HistoryNeed((), 86400.0)}, contact_window=86400.0, profile_schema={"visits": "number"}
)
T0 = 1_764_000_000.0


def a_write(time_s: float, contact: bool = True) -> StateWrite:
    contacts = [Contact(time_s, "r1", "a1", "email")] if contact else []
    return StateWrite(
        time_s, "visit", {}, contacts, [CapCheck("rule", "r1", 1, 86400.0)] if contact else [], {"visits": 1}
    )


def test_commit_once_records_a_key_once_and_answers_with_its_record(redis_url):
    store = RedisStore(redis_url, latency_budget_s=2.0, write_timeout_s=2.0)
    client = client_for(redis_url)
    try:
        assert store.commit_once("c1", NEEDS, a_write(T0), "k1", b"first", 60) == (True, None)
        # the same key again: nothing written, the first record answers
        assert store.commit_once("c1", NEEDS, a_write(T0 + 1), "k1", b"second", 60) == (True, b"first")
        assert client.zcard("nba:{c1}:c") == 1 and client.zcard("nba:{c1}:h:visit") == 1
        # another key: the cap refuses, and nothing is kept for the key
        assert store.commit_once("c1", NEEDS, a_write(T0 + 2), "k2", b"third", 60) == (False, None)
        assert client.get("nba:{c1}:x:k2") is None
        # a write with nothing to record still keeps its key
        empty = StateWrite(T0, "other", None, [], [], {})
        assert store.commit_once("c1", NEEDS, empty, "k3", b"none", 60) == (True, None)
        assert store.commit_once("c1", NEEDS, empty, "k3", b"other", 60) == (True, b"none")
        assert 55_000 <= client.pttl("nba:{c1}:x:k1") <= 60_000
    finally:
        store.close()


def test_a_commit_after_another_lands_only_if_that_one_landed_with_the_same_mark(redis_url):
    from nba.engine.store.redis.protocol import COMMIT_ONCE_SCRIPT, NOT_AFTER, commit_once_command

    store = RedisStore(redis_url, latency_budget_s=2.0, write_timeout_s=2.0)
    client = client_for(redis_url)
    client.script_load(COMMIT_ONCE_SCRIPT)
    base = store.keys.base("c1")

    def command(key, time_s, after=None):
        commit = store.codec(NEEDS).commit_command(base, a_write(time_s, contact=False))
        return commit_once_command(commit, f"{base}:x:{key}", b"m1\n" + key.encode(), 60_000, after)

    try:
        [first] = store.call(base, [command("k1", T0)], 2.0)
        assert first == 1
        [refused] = store.call(base, [command("k2", T0 + 1, after=(f"{base}:x:k1", b"m2\n"))], 2.0)
        assert refused == NOT_AFTER and client.get(f"{base}:x:k2") is None
        assert client.zcard("nba:{c1}:h:visit") == 1
        [missing] = store.call(base, [command("k2", T0 + 1, after=(f"{base}:x:k0", b"m1\n"))], 2.0)
        assert missing == NOT_AFTER
        [landed] = store.call(base, [command("k2", T0 + 1, after=(f"{base}:x:k1", b"m1\n"))], 2.0)
        assert landed == 1 and client.zcard("nba:{c1}:h:visit") == 2
    finally:
        store.close()


# ---------------------------------------------------------------------------------------
# one consumer in this process


def test_every_entry_answered_and_bad_entries_get_errors(redis_url):
    client = client_for(redis_url)
    good = add_events(client, "in", visits(5, 2))
    bad = add_events(
        client,
        "in",
        [
            ("other", "no event field"),
            ("event", "{not json"),
            ("event", "[1, 2]"),
            ("event", json.dumps({"type": "visit"})),
            ("event", json.dumps({"customer_id": "c1", "type": "visit", "time": "yesterday"})),
            (
                "event",
                json.dumps({"customer_id": "c1", "type": "visit", "time": time.time() + 86400}),
            ),  # on the wall clock
        ],
    )
    consumer = make_consumer(redis_url)
    consumer.connect()
    consumer.read_group_info()
    assert consumer.snapshot()["lag_entries"] == len(good) + len(bad)
    run_until(consumer, answered(client, "in:decisions", len(good) + len(bad)))
    consumer.read_group_info()
    assert (consumer.snapshot()["lag_entries"], consumer.snapshot()["pending"]) == (0, 0)
    answers = decisions_by_entry(outputs(client, "in:decisions"))
    codes = [json.loads(answers[entry][len("error:") :])["code"] for entry in bad]
    assert codes == ["bad_entry", "bad_event", "bad_event", "bad_event", "bad_event", "bad_event"]
    assert "customer_id" in answers[bad[3]] and "time" in answers[bad[4]] and "ahead" in answers[bad[5]]
    assert all(json.loads(answers[entry])["customer_id"] == f"c{n % 5}" for n, entry in enumerate(good))
    assert client.xpending("in", "nba")["pending"] == 0
    stats = consumer.snapshot()
    assert (stats["decided"], stats["bad"], stats["read"]) == (len(good), len(bad), len(good) + len(bad))
    check_exactly_once(client, {f"c{n}": good[n::5] for n in range(5)}, answers)
    from prometheus_client import CollectorRegistry, generate_latest

    from nba.engine.stream.metrics import ConsumerMetrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsumerMetrics(consumer))
    scraped = generate_latest(registry).decode()
    assert f"nba_consume_decided_total {float(len(good))}" in scraped
    assert f"nba_consume_bad_total {float(len(bad))}" in scraped and "nba_consume_lag_entries 0.0" in scraped
    consumer.engine.close()


def test_with_entries_waiting_a_batch_takes_two_round_trips(redis_url, monkeypatch):
    """The outputs and XACK of a batch ride with the next batch's state reads, and the read
    of the next batch with the commits: two round trips a batch while entries wait."""
    client = client_for(redis_url)
    ids = add_events(client, "in", visits(10, 10))
    consumer = make_consumer(redis_url, count=20)
    exchanges = []  # the commands of each round trip
    real_exchange = consumer.store.exchange
    consumer.store.exchange = lambda *args: exchanges.append(args[2]) or real_exchange(*args)
    real_replies = StreamedCommits.replies

    def replies(streamed, rider=None):
        exchanges.append(streamed.count + (len(rider.commands) if rider else 0))
        return real_replies(streamed, rider)

    monkeypatch.setattr(StreamedCommits, "replies", replies)
    consumer.step()  # the first read (this consumer's pending entries and claims first, on the group's client)
    consumer.step()  # the first batch decided; the commit script loaded; the second batch read
    assert (len(consumer.in_hand), client.xlen("in:decisions")) == (40, 0)
    group_calls = []
    consumer.client.execute_command = lambda *args, **options: group_calls.append(args)
    for batch in range(2, 6):
        exchanges.clear()
        consumer.step()
        assert len(exchanges) == 2, exchanges  # state reads after the outputs; commits before the next read
        assert client.xlen("in:decisions") == 20 * (batch - 1)
    exchanges.clear()
    consumer.step()  # the last outputs, with a blocking read that finds nothing
    assert (len(exchanges), consumer.in_hand, client.xlen("in:decisions")) == (1, [], len(ids))
    assert group_calls == []
    answers = decisions_by_entry(outputs(client, "in:decisions"))
    check_exactly_once(client, {f"c{n}": ids[n::10] for n in range(10)}, answers)
    assert client.xpending("in", "nba")["pending"] == 0
    consumer.engine.close()


def test_redis_runs_a_rounds_first_commits_while_the_rest_are_decided(redis_url, monkeypatch):
    """A round's commits go out in parts as they are made: Redis has committed the first
    entries before the last one of the round is decided."""
    import nba.engine.stream.batch as batch
    import nba.engine.stream.commits as commits

    monkeypatch.setattr(commits, "PART", 4)
    client = client_for(redis_url)
    ids = add_events(client, "in", visits(12, 1))
    consumer = make_consumer(redis_url, count=20)
    consumer.step()  # the batch read
    real_evaluate = batch.evaluate
    seen_committed = []

    def evaluate(ruleset, event, state, limit, explain):
        if event["customer_id"] == "c11":  # the last one: the first part went out long ago
            first_record = f"nba:{{c0}}:x:in:nba:{ids[0]}"
            deadline = time.monotonic() + 10  # Redis has them in a few ms: this only ends the test
            while not client.exists(first_record) and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_committed.append(client.exists(first_record))
        return real_evaluate(ruleset, event, state, limit, explain)

    monkeypatch.setattr(batch, "evaluate", evaluate)
    consumer.step()  # the round
    assert seen_committed == [1]
    run_until(consumer, answered(client, "in:decisions", len(ids)))
    check_exactly_once(
        client, {f"c{n}": [ids[n]] for n in range(12)}, decisions_by_entry(outputs(client, "in:decisions"))
    )
    consumer.engine.close()


def test_connections_killed_half_way_through_a_rounds_commits(redis_url, monkeypatch):
    """Redis drops the connections after a round's first part of commits was sent: the
    round's entries are decided again, and each is recorded once."""
    import nba.engine.stream.batch as batch
    import nba.engine.stream.commits as commits

    monkeypatch.setattr(commits, "PART", 4)
    client = client_for(redis_url)
    ids = add_events(client, "in", visits(6, 4))
    consumer = make_consumer(redis_url, count=24)
    consumer.step()  # the batch read
    real_evaluate = batch.evaluate
    evaluated = []

    def evaluate(ruleset, event, state, limit, explain):
        evaluated.append(event["customer_id"])
        if len(evaluated) == 10:  # two parts (and more) sent
            client.client_kill_filter(_type="normal", skipme=True)
        return real_evaluate(ruleset, event, state, limit, explain)

    monkeypatch.setattr(batch, "evaluate", evaluate)
    assert not consumer.step()  # the round fails: the entries stay in hand
    monkeypatch.setattr(batch, "evaluate", real_evaluate)
    assert consumer.snapshot()["failures"] == 1
    run_until(consumer, answered(client, "in:decisions", len(ids)))
    answers = decisions_by_entry(outputs(client, "in:decisions"))
    check_exactly_once(client, {f"c{n}": ids[n::6] for n in range(6)}, answers)
    assert client.xpending("in", "nba")["pending"] == 0
    consumer.engine.close()


def test_a_redelivered_entry_is_answered_with_the_decision_kept_and_records_nothing(redis_url):
    """A consumer that died after committing, before its output: another claims the
    entries, and answers each with the decision made the first time."""
    client = client_for(redis_url)
    ids = add_events(client, "in", visits(4, 3))
    dying = make_consumer(redis_url, consumer="dying")
    dying.connect()
    items = dying.read_new()
    dying.decider.decide(items)  # committed, then "killed": no output, no XACK
    first = {item.entry_id: item.output.decode() for item in items}
    assert len(first) == len(ids) and client.xpending("in", "nba")["pending"] == len(ids)
    time.sleep(0.05)
    survivor = make_consumer(redis_url, consumer="survivor", claim_idle_ms=20)
    run_until(survivor, answered(client, "in:decisions", len(ids)))
    answers = decisions_by_entry(outputs(client, "in:decisions"))
    assert answers == first
    assert survivor.snapshot()["claimed"] == len(ids) and survivor.snapshot()["redelivered"] == len(ids)
    check_exactly_once(client, {f"c{n}": ids[n::4] for n in range(4)}, answers)
    assert client.xpending("in", "nba")["pending"] == 0
    for consumer in (dying, survivor):
        consumer.engine.close()


def test_pending_entries_trimmed_from_the_stream_are_acknowledged_and_counted(redis_url):
    client = client_for(redis_url)
    add_events(client, "in", visits(3, 2))
    client.xgroup_create("in", "nba", id="0")
    client.xreadgroup("nba", "ghost", {"in": ">"}, count=4)  # 4 pending at a consumer that never comes back
    client.xtrim("in", maxlen=0)
    later = add_events(client, "in", visits(2, 1))
    time.sleep(0.03)
    consumer = make_consumer(redis_url, claim_idle_ms=20)
    run_until(
        consumer,
        lambda: client.xpending("in", "nba")["pending"] == 0 and len(outputs(client, "in:decisions")) == len(later),
    )
    stats = consumer.snapshot()
    assert stats["deleted"] == 4 and stats["claimed"] == 0
    assert set(decisions_by_entry(outputs(client, "in:decisions"))) == set(later)
    consumer.engine.close()


def test_the_group_deleted_under_a_running_consumer_is_created_again(redis_url):
    client = client_for(redis_url)
    first = add_events(client, "in", visits(6, 2))
    consumer = make_consumer(redis_url)
    run_until(consumer, answered(client, "in:decisions", len(first)))
    client.xgroup_destroy("in", "nba")
    second = add_events(client, "in", visits(6, 1))
    run_until(consumer, answered(client, "in:decisions", len(first) + len(second)))
    # created again at the stream's start: the first entries were decided again, and
    # answered with the decisions kept (the same ones), recording nothing twice
    rows = outputs(client, "in:decisions")
    answers = decisions_by_entry(rows)
    run_until(consumer, lambda: len(outputs(client, "in:decisions")) >= 2 * len(first) + len(second))
    answers = decisions_by_entry(outputs(client, "in:decisions"))
    assert consumer.snapshot()["groups_created"] >= 1 and consumer.snapshot()["redelivered"] == len(first)
    ids = first + second
    check_exactly_once(client, {f"c{n}": ids[n::6] for n in range(6)}, answers)
    consumer.engine.close()


def test_a_customer_whose_state_cannot_be_read_does_not_hold_up_the_others(redis_url):
    """State another service garbled (a string where the profile hash should be): that
    customer's entries are left pending, delivered again, then dead-lettered; every other
    entry is decided at once."""
    client = client_for(redis_url)
    client.set("nba:{c0}:p", "not a hash")
    ids = add_events(client, "in", visits(4, 2))
    consumer = make_consumer(redis_url, claim_idle_ms=20, max_deliveries=2)
    run_until(consumer, lambda: client.xlen("in:dead") == 2)
    answers = decisions_by_entry(outputs(client, "in:decisions"))
    assert set(answers) == set(ids) - set(ids[0::4])
    dead = {fields[b"entry"].decode(): int(fields[b"deliveries"]) for _, fields in client.xrange("in:dead")}
    assert dead == {ids[0]: 3, ids[4]: 3}
    assert client.xpending("in", "nba")["pending"] == 0
    consumer.engine.close()


class PersistentRedis(RedisServer):
    """A server that keeps its data across a kill -9 (append-only file, fsync always)."""

    def command_line(self) -> list[str]:
        line = super().command_line()
        at = line.index("--appendonly")
        line[at + 1] = "yes"
        return line + ["--appendfsync", "always"]


def test_a_redis_restart_in_the_middle(tmp_path):
    server = PersistentRedis().start()
    try:
        client = client_for(server.url)
        first = add_events(client, "in", visits(8, 2))
        consumer = make_consumer(server.url)
        run_until(consumer, answered(client, "in:decisions", len(first)))
        server.restart()
        client = client_for(server.url)
        for _ in range(3):  # rounds against the restarted server (the first fail: the links broke)
            consumer.step()
            consumer.after_step()
        second = add_events(client, "in", visits(8, 1))
        run_until(consumer, answered(client, "in:decisions", len(first) + len(second)))
        answers = decisions_by_entry(outputs(client, "in:decisions"))
        ids = first + second
        check_exactly_once(client, {f"c{n}": ids[n::8] for n in range(8)}, answers)
        assert client.xpending("in", "nba")["pending"] == 0
        consumer.engine.close()
    finally:
        server.cleanup()


def test_redis_down_keeps_the_entries_in_hand_until_it_is_back():
    server = PersistentRedis().start()
    try:
        client = client_for(server.url)
        ids = add_events(client, "in", visits(5, 2))
        consumer = make_consumer(server.url)
        consumer.connect()
        consumer.in_hand = consumer.read_new()  # read, then Redis goes away before the decisions
        server.stop()
        assert not consumer.step()
        assert len(consumer.in_hand) == len(ids) and consumer.snapshot()["failures"] == 1
        server.start()
        client = client_for(server.url)
        run_until(consumer, answered(client, "in:decisions", len(ids)))
        answers = decisions_by_entry(outputs(client, "in:decisions"))
        check_exactly_once(client, {f"c{n}": ids[n::5] for n in range(5)}, answers)
        consumer.engine.close()
    finally:
        server.cleanup()


PARAM_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # infinities and NaN too: null, as `nba replay` prints them
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(0, 5), max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.text(min_size=1),
    st.lists(
        st.builds(
            Choice,
            st.text(),
            st.text(),
            st.none() | st.text(),
            st.dictionaries(st.text(max_size=8), PARAM_VALUES, max_size=4),
        ),
        max_size=2,
    ),
)
def test_a_decisions_json_is_what_dumps_writes_of_its_map(customer_id, choices):
    assert decision_json(customer_id, choices) == dumps(decision_map(customer_id, choices, False, None))


def test_a_customers_entries_in_one_batch_read_what_their_decisions_read(redis_url):
    """A chain of one customer's entries reads what the decisions of its event types read
    (the widest window of each), not everything the ruleset keeps."""
    engine = Engine.from_path(str(ROOT / "rules"), redis_url=redis_url)
    ruleset = engine._current[0]
    decider = BatchDecider(engine, 60.0, "nba")

    def chain(*types):
        items = []
        for n, event_type in enumerate(types):
            item = Item("in", f"1-{n}", {})
            item.ruleset, item.event = ruleset, {"customer_id": "c1", "type": event_type, "time": RECENT}
            items.append(item)
        return items

    views = ruleset.needs_for("page_view")
    assert decider.chain_needs(chain("page_view", "page_view")) is views
    assert set(ruleset.needs.history) - set(views.history)  # a page view's read is narrower
    cart, purchase = ruleset.needs_for("cart_abandoned"), ruleset.needs_for("purchase")
    joined = decider.chain_needs(chain("page_view", "cart_abandoned", "purchase", "page_view"))
    assert joined is decider.chain_needs(chain("purchase", "page_view", "cart_abandoned"))  # made once
    assert set(joined.history) == set(views.history) | set(cart.history) | set(purchase.history)
    for needs in (views, cart, purchase):
        assert joined.contact_window >= needs.contact_window
        assert all(joined.history[kind].window >= need.window for kind, need in needs.history.items())
    assert joined.contact_window == max(views.contact_window, cart.contact_window, purchase.contact_window)
    engine.close()


def test_the_same_decisions_as_replay_with_one_consumer(redis_url, tmp_path):
    """The example rules and the demo's events, in order: `nba consume` answers each entry
    with the decision `nba replay` prints for its line."""
    lines = (ROOT / "examples" / "demo" / "events.jsonl").read_text().splitlines()[:1500]
    events_path = tmp_path / "events.jsonl"
    events_path.write_text("\n".join(lines) + "\n")
    profiles = ROOT / "examples" / "demo" / "profiles.jsonl"
    replayed = subprocess.run(
        [
            sys.executable,
            "-m",
            "nba.engine.cli",
            "replay",
            str(ROOT / "rules"),
            str(events_path),
            "--profiles",
            str(profiles),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    expected = [json.loads(line) for line in replayed.stdout.splitlines()]
    assert len(expected) == len(lines)
    consumer = make_consumer(redis_url, rules=str(ROOT / "rules"), count=200)
    for line in profiles.read_text().splitlines():
        profile = json.loads(line)
        consumer.engine.put_profile(profile.pop("customer_id"), profile)
    client = client_for(redis_url)
    pipe = client.pipeline(transaction=False)
    for line in lines:
        pipe.xadd("in", {"event": line})
    ids = [entry_id.decode() for entry_id in pipe.execute()]
    run_until(consumer, answered(client, "in:decisions", len(ids)))
    answers = decisions_by_entry(outputs(client, "in:decisions"))
    got = [json.loads(answers[entry]) for entry in ids]
    assert got == expected
    consumer.engine.close()


# ---------------------------------------------------------------------------------------
# consumers in separate processes


def start_consumer(
    url: str, *, die_on: str = "-", claim_idle_ms: int = 300, max_deliveries: int = 5, name: str | None = None
) -> subprocess.Popen:
    args = [
        sys.executable,
        CHILD,
        die_on,
        RULES,
        "--redis",
        url,
        "--stream",
        "in",
        "--count",
        "50",
        "--block-ms",
        "100",
        "--claim-idle-ms",
        str(claim_idle_ms),
        "--max-deliveries",
        str(max_deliveries),
    ]
    if name:
        args += ["--consumer", name]
    err = tempfile.TemporaryFile(mode="w+")  # not a pipe: nobody reads it until the end
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True)
    process.err = err
    return process


def stop(process: subprocess.Popen) -> str:
    """SIGTERM, then what the consumer wrote on stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.err.seek(0)
    return process.err.read()


def last_stats(err: str) -> dict:
    """The stats line a consumer prints on stderr when it stops ({} if it was stopped
    before it started: a SIGTERM during start-up ends it at once)."""
    lines = [line for line in err.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def wait_for(condition, timeout_s: float = WAIT_S, processes=()) -> None:
    """Until ``condition()``; a failure stops ``processes`` and shows what they said."""

    def what() -> str:
        return f"the consumers; they said: {[stop(process)[-3000:] for process in processes]}"

    wait_until(condition, what, timeout_s=timeout_s, interval_s=0.05)


def kill_one_holding_entries(client, live: list[subprocess.Popen]) -> subprocess.Popen:
    """kill -9 the first of ``live`` seen with entries delivered and not acknowledged."""

    def holding_entries() -> subprocess.Popen | None:
        for process in live:
            name = f"{socket.gethostname()}-{process.pid}"
            if client.xpending_range("in", "nba", "-", "+", 1, consumername=name):
                return process
        return None

    process = wait_until(holding_entries, "a consumer holding entries", timeout_s=WAIT_S, interval_s=0.002)
    process.kill()
    process.wait()
    return process


def test_three_processes_two_killed_mid_stream_and_a_new_one(redis_url):
    """3,000 entries of 300 customers (NBA_CONSUME_FULL=1: the issue's 20,000 of 2,000);
    kill -9 one consumer mid-stream (one that holds entries), then another, start a new
    one: every entry answered (a duplicate only with the same decision), each entry's
    effects recorded once, no cap exceeded."""
    client = client_for(redis_url)
    customers, per_customer = (2000, 10) if os.environ.get("NBA_CONSUME_FULL") == "1" else (300, 10)
    batches = list(range(0, customers * per_customer, 500))
    first_kill, second_kill = batches[len(batches) // 3], batches[2 * len(batches) // 3]
    consumers = [start_consumer(redis_url) for _ in range(3)]
    killed: list[subprocess.Popen] = []
    try:
        ids: list[str] = []
        events = visits(customers, per_customer)
        wait_for(lambda: client.exists("in"), processes=consumers)  # a consumer is up (it made the group)
        for start in batches:
            ids += add_events(client, "in", events[start : start + 500])
            if start in (first_kill, second_kill):  # mid-stream: entries were just added
                killed.append(kill_one_holding_entries(client, [p for p in consumers if p not in killed]))
            if start == second_kill:
                consumers.append(start_consumer(redis_url))
        wait_for(answered(client, "in:decisions", len(ids)), processes=consumers)
        wait_for(lambda: client.xpending("in", "nba")["pending"] == 0, processes=consumers)
        said = [stop(process) for process in consumers if process not in killed]
        claimed = sum(last_stats(err).get("claimed", 0) for err in said)
        assert claimed >= 1  # the entries the killed consumers held were claimed by the others
        answers = decisions_by_entry(outputs(client, "in:decisions"))
        by_customer: dict[str, list[str]] = defaultdict(list)
        for entry, event in zip(ids, events):
            by_customer[event["customer_id"]].append(entry)
        check_exactly_once(client, by_customer, answers, one_process=False)
        assert set(answers) == set(ids)
    finally:
        for process in consumers:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_poison_entry_goes_to_the_dead_letter_stream(redis_url):
    """An entry that kills every consumer given it is delivered again after each death,
    until it has been delivered more than --max-deliveries times: then it is moved to
    in:dead with its delivery count, and acknowledged."""
    client = client_for(redis_url)
    ids = add_events(client, "in", visits(4, 2))
    poison = add_events(client, "in", [{"customer_id": "poison", "type": "visit"}])[0]
    ids += add_events(client, "in", visits(4, 1))
    deaths = 0

    def delivered_again() -> bool:
        """True once the entry is dead-lettered; else one more consumer is given it."""
        nonlocal deaths
        if client.xlen("in:dead"):
            return True
        assert deaths <= 4, f"{deaths} deaths, no dead letter"
        process = start_consumer(redis_url, die_on="poison", claim_idle_ms=100, max_deliveries=2)
        wait_for(lambda: process.poll() is not None or client.xlen("in:dead"), processes=[process])
        if process.returncode == -signal.SIGKILL:
            deaths += 1
        else:
            stop(process)
        time.sleep(0.15)  # the entry idles at the dead consumer past --claim-idle-ms
        return False

    wait_until(
        delivered_again, lambda: f"the poison entry dead-lettered ({deaths} deaths)", timeout_s=WAIT_S, interval_s=0
    )
    assert deaths == 2  # delivered twice (two deaths), then the third delivery is dead-lettered
    [(_, fields)] = client.xrange("in:dead")
    assert fields[b"entry"].decode() == poison and int(fields[b"deliveries"]) == 3
    assert json.loads(fields[b"event"])["customer_id"] == "poison"
    survivor = start_consumer(redis_url)
    try:
        wait_for(answered(client, "in:decisions", len(ids)), processes=[survivor])
        wait_for(lambda: client.xpending("in", "nba")["pending"] == 0, processes=[survivor])
    finally:
        stop(survivor)
    answers = decisions_by_entry(outputs(client, "in:decisions"))
    assert poison not in answers and set(ids) == set(answers)


def test_sigterm_finishes_the_batch_in_hand(redis_url):
    client = client_for(redis_url)
    ids = add_events(client, "in", visits(50, 20))
    process = start_consumer(redis_url)
    wait_for(lambda: client.xlen("in:decisions") > 0, processes=[process])
    err = stop(process)
    assert process.returncode == 0, err
    stats = last_stats(err)
    assert stats["decided"] == client.xlen("in:decisions") and stats["decided"] <= len(ids)
    assert client.xpending("in", "nba")["pending"] == 0  # nothing left in hand unacknowledged


# ---------------------------------------------------------------------------------------
# Redis Cluster


def test_several_streams_on_a_cluster(redis_cluster_url):
    streams = ["{p1}in", "{p2}in", "{p3}in"]
    cluster = redis_py.RedisCluster.from_url(redis_cluster_url)
    nodes = {cluster.get_node_from_key(stream).port for stream in streams}
    ids_by_customer: dict[str, list[str]] = defaultdict(list)
    expected = 0
    for index, stream in enumerate(streams):
        for event in visits(20, 2):
            event["customer_id"] = f"s{index}-{event['customer_id']}"
            entry = cluster.xadd(stream, {"event": json.dumps(event)}).decode()
            ids_by_customer[event["customer_id"]].append(entry)
            expected += 1
    consumer = make_consumer(redis_cluster_url, streams=streams)
    answers: dict[str, str] = {}

    def all_answered():
        answers.clear()
        for stream in streams:
            answers.update(
                {f"{stream}/{k}": v for k, v in decisions_by_entry(outputs(cluster, f"{stream}:decisions")).items()}
            )
        return len(answers) >= expected

    run_until(consumer, all_answered)
    assert len(nodes) >= 2  # the streams are spread over the masters
    for index, stream in enumerate(streams):
        prefixed = {
            customer: [f"{stream}/{entry}" for entry in entries]
            for customer, entries in ids_by_customer.items()
            if customer.startswith(f"s{index}-")
        }
        check_exactly_once(cluster, prefixed, answers)
        assert cluster.xpending(stream, "nba")["pending"] == 0
    consumer.engine.close()


def test_one_stream_on_a_cluster_with_customers_on_every_node(redis_cluster_url):
    """One node holds the stream and its output, so the outputs and reads ride with the
    state reads and commits sent there; the customers' state lives on every node."""
    cluster = redis_py.RedisCluster.from_url(redis_cluster_url)
    stream = "{solo}in"
    ids = [cluster.xadd(stream, {"event": json.dumps(event)}).decode() for event in visits(40, 3)]
    consumer = make_consumer(redis_cluster_url, streams=[stream], count=25)
    assert consumer.home() == consumer.store.topology.address_for(stream)
    customers = [f"c{n}" for n in range(40)]
    assert len({consumer.store.topology.address_for(f"nba:{{{customer}}}") for customer in customers}) >= 2
    run_until(consumer, lambda: len(decisions_by_entry(outputs(cluster, f"{stream}:decisions"))) >= len(ids))
    answers = decisions_by_entry(outputs(cluster, f"{stream}:decisions"))
    check_exactly_once(cluster, {f"c{n}": ids[n::40] for n in range(40)}, answers)
    assert cluster.xpending(stream, "nba")["pending"] == 0
    consumer.engine.close()


# ---------------------------------------------------------------------------------------
# fuzz: whatever the entries hold, each is answered once and acknowledged


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": st.sampled_from(["c1", "c2", ""]) | JSON_VALUES,
        "type": st.sampled_from(["visit", "other"]) | JSON_VALUES,
        "time": st.sampled_from([T0, "2026-12-01T00:00:00Z", "soon", -1e300]) | JSON_VALUES,
    },
)
ENTRY_FIELDS = st.one_of(
    EVENTS.map(lambda event: {"event": json.dumps(event)}),
    st.dictionaries(st.sampled_from(["event", "other", "x"]), st.binary(max_size=20), min_size=1, max_size=2),
)


@settings(derandomize=True, max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=st.lists(ENTRY_FIELDS, min_size=1, max_size=12))
def test_fuzz_any_entries_are_each_answered_once_and_acknowledged(redis_server, entries):
    redis_server.flush()
    client = client_for(redis_server.url)
    pipe = client.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd("in", fields)
    ids = [entry_id.decode() for entry_id in pipe.execute()]
    consumer = make_consumer(redis_server.url, block_ms=1)
    try:
        run_until(consumer, answered(client, "in:decisions", len(ids)), timeout_s=20)
        answers = decisions_by_entry(outputs(client, "in:decisions"))
        assert set(answers) == set(ids) and len(outputs(client, "in:decisions")) == len(ids)
        assert client.xpending("in", "nba")["pending"] == 0
        for entry in ids:
            answer = answers[entry]
            if not answer.startswith("error:"):
                assert json.loads(answer)["customer_id"] in ("c1", "c2")
    finally:
        consumer.engine.close()
