"""A cap is never exceeded: not by a degraded decision, not by events out of time order,
not by an event from the far future (DSL.md "The decision" and the `cap` clause).

Each scenario runs on the in-memory store and on Redis (a server the tests start).
"""

from __future__ import annotations

import os
import signal
import time as clock
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.dsl import load_text
from nba.engine import Engine
from nba.engine.errors import EventError
from nba.engine.procedure import DEGRADED
from nba.engine.store import StoreUnavailable
from nba.engine.store.memory import MemoryStore

from redis_fixtures import REDIS_SERVER, needs_redis

DAY = 86400
T0 = 1_790_000_000  # fixed times for the engines that run on the events' own times


@pytest.fixture
def now() -> int:
    """The wall clock when the test starts (read per test: a time read at import is stale by
    the time a long run reaches the tests that need events near the engine's clock)."""
    return int(clock.time())


CAPPED = """
rule one_offer
  when event.type == "visit"
  then offer via email
  cap 1 per 1d
end
rule free_tip
  when event.type == "visit"
  then tip via web
end
default nothing
"""

POLICY = """
policy email: cap 2 per 1d
rule first
  when true
  then a via email
  priority 2
end
rule second
  when true
  then b via email
  priority 1
end
rule open
  when true
  then c via web
end
"""

RELAXED = {"latency_budget_s": 2.0, "write_timeout_s": 2.0, "connect_timeout_s": 1.0}


@pytest.fixture(params=["memory", "redis"])
def store_kind(request):
    if request.param == "redis" and REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    return request.param


@pytest.fixture
def make_engine(store_kind, request):
    """``make(rules_text, **engine_options)``: an engine on a fresh store of the kind."""
    engines = []

    def make(text: str, **options) -> Engine:
        if store_kind == "memory":
            store = MemoryStore()
        else:
            from nba.engine.store.redis import RedisStore

            url = request.getfixturevalue("redis_url")
            store = RedisStore(url, **RELAXED)
        engine = Engine(load_text(text, "t.rules"), store, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def visit(customer: str, time: float) -> dict:
    return {"customer_id": customer, "type": "visit", "time": time}


# -- degraded decisions (item 9, DSL.md: a degraded decision passes over capped rules) --


class FailingStore(MemoryStore):
    """A memory store whose reads (or commits) fail, as a store past its budget does."""

    def __init__(self, fail_reads: bool = True, fail_commits: bool = False):
        super().__init__()
        self.fail_reads = fail_reads
        self.fail_commits = fail_commits

    def read(self, customer_id, needs, time):
        if self.fail_reads:
            raise StoreUnavailable("too slow")
        return super().read(customer_id, needs, time)

    def commit(self, customer_id, needs, write):
        if self.fail_commits:
            super().commit(customer_id, needs, write)  # it landed, but the answer was lost
            raise StoreUnavailable("no answer")
        return super().commit(customer_id, needs, write)


def test_a_degraded_decision_passes_over_capped_and_policy_rules_and_records_nothing():
    store = FailingStore()
    engine = Engine(load_text(CAPPED, "t.rules"), store, max_event_ahead_s=None)
    decisions = [engine.decide(visit("c1", T0 + n), explain=True) for n in range(5)]
    assert all(d.degraded for d in decisions)
    assert [d.rule for d in decisions] == ["free_tip"] * 5  # never the capped one
    reasons = {entry.rule: entry.reason for entry in decisions[0].trace}
    assert reasons["one_offer"] == DEGRADED
    assert store.customer_count() == 0  # nothing recorded
    assert engine.stats.degraded == 5

    store.fail_reads = False
    assert [engine.decide(visit("c1", T0 + 10)).rule, engine.decide(visit("c1", T0 + 11)).rule] == [
        "one_offer",
        "free_tip",
    ]


def test_a_degraded_decision_under_a_policy_gives_only_uncovered_rules():
    engine = Engine(load_text(POLICY, "t.rules"), FailingStore(), max_event_ahead_s=None)
    decision = engine.decide(visit("c1", T0), limit=3)
    assert decision.degraded and [c.rule for c in decision.choices] == ["open"]


def test_a_commit_that_fails_after_landing_answers_degraded_without_the_capped_action():
    store = FailingStore(fail_reads=False, fail_commits=True)
    engine = Engine(load_text(CAPPED, "t.rules"), store, max_event_ahead_s=None)
    first = engine.decide(visit("c1", T0))
    assert first.degraded and first.rule == "free_tip"  # the caller is never told a capped action it may not get
    store.fail_commits = False
    assert engine.decide(visit("c1", T0 + 1)).rule == "free_tip"  # the contact that landed counts: still capped


def test_a_degraded_async_decision_passes_over_capped_rules():
    import asyncio

    engine = Engine(load_text(CAPPED, "t.rules"), FailingStore(), max_event_ahead_s=None)
    decision = asyncio.run(engine.decide_async(visit("c1", T0)))
    assert decision.degraded and decision.rule == "free_tip"


@contextmanager
def stopped(server):
    """The redis-server process stopped (SIGSTOP): it accepts nothing and answers nothing."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


@needs_redis
def test_a_paused_redis_never_lets_a_cap_be_exceeded(own_redis_server, now):
    from nba.engine.store.redis import RedisStore

    store = RedisStore(
        own_redis_server.url, latency_budget_s=0.002, write_timeout_s=0.002, connect_timeout_s=0.5, retry_interval_s=0.0
    )
    engine = Engine(load_text(CAPPED, "t.rules"), store)
    offers = 0
    degraded = 0
    for round_ in range(6):
        for n in range(10):
            decision = engine.decide(visit("c1", now - 60 + round_ * 10 + n))
            offers += decision.rule == "one_offer"
            degraded += decision.degraded
        with stopped(own_redis_server):
            for n in range(10):
                decision = engine.decide(visit("c1", now - 60 + round_ * 10 + n))
                assert decision.degraded and decision.rule == "free_tip"
                degraded += 1
        clock.sleep(0.05)
    engine.close()
    assert offers == 1
    assert degraded >= 60


@needs_redis
def test_a_slow_redis_async_never_lets_a_cap_be_exceeded(own_redis_server, now):
    import asyncio

    from nba.engine.store.redis import RedisStore

    store = RedisStore(
        own_redis_server.url, latency_budget_s=0.002, write_timeout_s=0.002, connect_timeout_s=0.5, retry_interval_s=0.0
    )
    engine = Engine(load_text(CAPPED, "t.rules"), store)

    async def scenario() -> list:
        await engine.get_profile_async("c1")  # connected
        seen = []
        for _round in range(4):
            seen += await asyncio.gather(*(engine.decide_async(visit("c1", now - 30 + n)) for n in range(8)))
            with stopped(own_redis_server):
                seen += await asyncio.gather(*(engine.decide_async(visit("c1", now - 30 + n)) for n in range(8)))
            await asyncio.sleep(0.05)
        await engine.close_async()
        return seen

    decisions = asyncio.run(scenario())
    assert sum(d.rule == "one_offer" for d in decisions) == 1
    assert all(d.rule == "free_tip" for d in decisions if d.degraded)
    assert any(d.degraded for d in decisions)


# -- out of time order (item 15, DSL.md: a cap counts (t - D, t + D)) --


def test_two_events_decided_out_of_time_order_cannot_both_get_a_cap_of_one(make_engine):
    engine = make_engine(CAPPED, max_event_ahead_s=None)
    later = engine.decide(visit("c1", T0 + 3600))
    earlier = engine.decide(visit("c1", T0))  # arrives second, happened first
    assert later.rule == "one_offer"
    assert earlier.rule == "free_tip"
    # a day after the later one is a new window
    assert engine.decide(visit("c1", T0 + 3600 + DAY)).rule == "one_offer"


def test_a_policy_counts_contacts_recorded_for_later_events(make_engine):
    engine = make_engine(POLICY, max_event_ahead_s=None)
    assert [c.rule for c in engine.decide(visit("c1", T0 + 600), limit=3).choices] == ["first", "second", "open"]
    assert [c.rule for c in engine.decide(visit("c1", T0), limit=3).choices] == ["open"]


def test_a_contact_older_than_what_is_kept_passes_the_cap_over(make_engine):
    """A decision whose window reaches back before a trimmed contact cannot check its cap."""
    engine = make_engine(CAPPED, max_event_ahead_s=None)
    assert engine.decide(visit("c1", T0)).rule == "one_offer"
    far = T0 + 10 * DAY  # this write trims the contact at T0 (kept: twice the window)
    assert engine.decide(visit("c1", far)).rule == "one_offer"
    assert engine.decide(visit("c1", T0 + 1)).rule == "free_tip"  # its window held the trimmed contact
    assert engine.decide(visit("c1", T0 + 2 * DAY)).rule == "one_offer"  # its window did not


RULE_CAPS = st.lists(st.tuples(st.integers(1, 3), st.sampled_from([600, 3600, DAY])), min_size=1, max_size=3)


def capped_rules(caps: list[tuple[int, int]], policy: tuple[int, int] | None) -> str:
    text = f"policy email: cap {policy[0]} per {policy[1]}s\n" if policy else ""
    for index, (limit, window) in enumerate(caps):
        text += f"rule r{index}\n  when true\n  then a{index} via email\n  cap {limit} per {window}s\nend\n"
    return text


def windows_hold(given_at: list[float], limit: int, window: float) -> bool:
    """No window of length ``window`` (open at both ends, as a cap counts) holds more than ``limit``."""
    times = sorted(given_at)
    for i in range(len(times) - limit):
        if times[i + limit] - times[i] < window:
            return False
    return True


@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(
    caps=RULE_CAPS,
    policy=st.none() | st.tuples(st.integers(1, 4), st.sampled_from([1800, DAY])),
    offsets=st.lists(st.integers(0, 2 * DAY), min_size=1, max_size=25),
    limit=st.integers(1, 3),
)
def test_property_no_window_ever_holds_more_contacts_than_the_cap(make_engine, caps, policy, offsets, limit):
    engine = make_engine(capped_rules(caps, policy), max_event_ahead_s=None)
    customer = f"c{abs(hash((tuple(caps), policy, tuple(offsets), limit))) % 10**9}"
    given: dict[str, list[float]] = {}
    for offset in offsets:  # the events in the drawn order: out of time order
        decision = engine.decide(visit(customer, T0 + offset), limit=limit)
        for choice in decision.choices:
            given.setdefault(choice.rule, []).append(T0 + offset)
    for index, (cap_limit, window) in enumerate(caps):
        assert windows_hold(given.get(f"r{index}", []), cap_limit, window)
    if policy:
        assert windows_hold([t for times in given.values() for t in times], policy[0], policy[1])


# -- a far-future event time (item 11, DSL.md step 1) --


def test_an_event_from_the_far_future_is_refused_on_the_wall_clock(make_engine, now):
    engine = make_engine(CAPPED)
    with pytest.raises(EventError) as refused:
        engine.decide({"customer_id": "c1", "type": "visit", "time": "2100-01-01T00:00:00Z"})
    assert refused.value.field == "time" and "ahead" in str(refused.value)
    # nothing was recorded, and nothing trims from 2100: the cap holds on the clock's time
    assert engine.decide(visit("c1", now)).rule == "one_offer"
    assert engine.decide(visit("c1", now + 1)).rule == "free_tip"
    assert engine.decide(visit("c1", now + 2)).rule == "free_tip"


def test_the_tolerance_is_a_setting(make_engine, now):
    engine = make_engine(CAPPED, max_event_ahead_s=30)
    assert engine.decide(visit("c1", now + 10)).rule == "one_offer"
    with pytest.raises(EventError):
        engine.decide(visit("c1", now + 120))
    default = make_engine(CAPPED)
    assert default.decide(visit("c2", now + 120)).rule == "one_offer"  # within 5 minutes
    with pytest.raises(EventError):
        default.decide(visit("c2", now + 400))


def test_an_async_decision_refuses_a_far_future_event_too(make_engine, now):
    import asyncio

    engine = make_engine(CAPPED)

    async def decide():
        return await engine.decide_async(visit("c1", now + 3600))

    with pytest.raises(EventError):
        asyncio.run(decide())


def test_replay_and_rule_tests_run_on_the_events_own_times(tmp_path):
    from nba.engine.cli import main

    rules = tmp_path / "t.rules"
    rules.write_text(CAPPED)
    events = tmp_path / "events.jsonl"
    events.write_text('{"customer_id": "c1", "type": "visit", "time": "2100-01-01T00:00:00Z"}\n')
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["replay", str(rules), str(events)])
    assert code == 0 and '"rule": "one_offer"' in out.getvalue()


def test_the_server_settings_carry_the_tolerance():
    from nba.engine.settings import ServerSettings

    assert ServerSettings().max_event_ahead_s == 300.0
    assert ServerSettings(max_event_ahead_s=5).max_event_ahead_s == 5


def test_the_tolerance_can_be_changed_on_a_running_engine(now):
    engine = Engine(load_text(CAPPED, "t.rules"), MemoryStore())
    engine.max_event_ahead_s = None
    assert engine.decide(visit("c1", now + 3600)).rule == "one_offer"
    engine.max_event_ahead_s = 60
    with pytest.raises(EventError):
        engine.decide(visit("c2", now + 3600))


def test_the_socket_refuses_a_far_future_event_and_serve_takes_the_setting(tmp_path, now):
    from nba.engine.client import Client, NbaError

    from server_fakes import ServerProcess, ThreadServer, server_command

    rules = tmp_path / "t.rules"
    rules.write_text(CAPPED)
    engine = Engine(load_text(CAPPED, "t.rules"), MemoryStore())
    with ThreadServer(engine) as server, Client("127.0.0.1", server.port) as client:
        with pytest.raises(NbaError) as refused:
            client.decide(visit("c1", now + 86400))
        assert refused.value.code == "bad_event" and "ahead" in refused.value.message
        assert client.decide(visit("c1", now))["rule"] == "one_offer"  # nothing was recorded before

    with (
        ServerProcess(server_command(rules, max_event_ahead_s=5), log_path=tmp_path / "log") as process,
        Client("127.0.0.1", process.port) as client,
    ):
        with pytest.raises(NbaError) as refused:
            client.decide(visit("c1", clock.time() + 120))  # within the default, not within 5 s
        assert refused.value.code == "bad_event"
