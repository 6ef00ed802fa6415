"""The engine on Redis decides exactly as on memory: replays, races for a cap, faults."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from nba.engine import Engine, EngineError
from nba.engine.store.redis import RedisStore

from polling import wait_until
from redis_fixtures import needs_redis

pytestmark = needs_redis

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
GOLDEN_EVENTS = ROOT / "tests" / "golden" / "replay_small.jsonl"
GOLDEN_PROFILES = ROOT / "tests" / "golden" / "replay_small.profiles.jsonl"
DEMO_EVENTS = ROOT / "examples" / "demo" / "events.jsonl"
DEMO_PROFILES = ROOT / "examples" / "demo" / "profiles.jsonl"
DEMO_SLICE = 1500  # events of the demo day replayed in the tests
RELAXED = {"latency_budget_s": 2.0, "write_timeout_s": 2.0, "connect_timeout_s": 1.0}  # a busy machine is no outage

CAPPED_RULES = """
rule one_offer
  when event.type == "visit"
  then offer via email
  cap 1 per 1d
end
default nothing
"""


def read_jsonl(path: Path, limit: int | None = None) -> list:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:limit] if line.strip()]


def replay(engine: Engine, events: list, profiles: list) -> list[dict]:
    for profile in profiles:
        profile = dict(profile)
        engine.put_profile(profile.pop("customer_id"), profile)
    out = []
    for number, event in enumerate(events, 1):
        try:
            out.append(engine.decide(event).to_dict())
        except EngineError as error:
            out.append({"line": number, "error": str(error)})
    return out


async def replay_async(engine: Engine, events: list, profiles: list) -> list[dict]:
    for profile in profiles:
        profile = dict(profile)
        await engine.put_profile_async(profile.pop("customer_id"), profile)
    out = []
    for number, event in enumerate(events, 1):
        try:
            out.append((await engine.decide_async(event)).to_dict())
        except EngineError as error:
            out.append({"line": number, "error": str(error)})
    await engine.close_async()
    return out


ASYNC_CALLS = ["awaited", "callback"]  # decide_async; decide_map_then (the socket server's way, no task)


def decide_by(call: str, engine: Engine, event: dict, **options) -> asyncio.Future:
    """The map of ``event``'s decision for an asyncio caller: awaited, or handed to a callback."""
    if call == "awaited":
        return asyncio.ensure_future(awaited_map(engine, event, **options))
    future = asyncio.get_running_loop().create_future()

    def then(decision, error) -> None:
        assert not future.done(), "told twice"
        if error is None:
            future.set_result(decision)
        else:
            future.set_exception(error)

    engine.decide_map_then(event, then, **options)
    return future


async def awaited_map(engine: Engine, event: dict, **options) -> dict:
    return (await engine.decide_async(event, **options)).to_dict()


def assert_same_lines(expected: list[dict], actual: list[dict]) -> None:
    assert len(actual) == len(expected)
    for number, (want, got) in enumerate(zip(expected, actual), 1):
        assert got == want, f"line {number} differs"


@pytest.fixture(scope="module")
def demo():
    return read_jsonl(DEMO_EVENTS, DEMO_SLICE), read_jsonl(DEMO_PROFILES)


@pytest.fixture(scope="module")
def on_memory(demo):
    events, profiles = demo
    return replay(Engine.from_path(RULES), events, profiles)


# -- replays agree line for line


@pytest.mark.parametrize("call", ASYNC_CALLS)
def test_sixteen_callers_sharing_one_stream_decide_as_memory_does(redis_url, demo, on_memory, call):
    """One customer's events taken by different callers at once are decided in the order
    they were taken (engine/turns.py): each sees the state the one before it left."""
    events, profiles = demo
    engine = Engine.from_path(RULES, redis_url=redis_url, **RELAXED)

    async def run() -> list:
        for profile in profiles:
            profile = dict(profile)
            await engine.put_profile_async(profile.pop("customer_id"), profile)
        out: list = [None] * len(events)
        stream = iter(enumerate(events, 1))

        async def caller() -> None:
            for number, event in stream:
                try:
                    out[number - 1] = await decide_by(call, engine, event)
                except EngineError as error:
                    out[number - 1] = {"line": number, "error": str(error)}

        await asyncio.gather(*(caller() for _ in range(16)))
        await engine.close_async()
        return out

    assert_same_lines(on_memory, asyncio.run(run()))


def test_golden_replay_on_redis_matches_memory(redis_url):
    events, profiles = read_jsonl(GOLDEN_EVENTS), read_jsonl(GOLDEN_PROFILES)
    expected = replay(Engine.from_path(RULES), events, profiles)
    with Engine.from_path(RULES, redis_url=redis_url, **RELAXED) as engine:
        assert_same_lines(expected, replay(engine, events, profiles))


def test_demo_replay_on_redis_matches_memory(redis_url, demo, on_memory):
    with Engine.from_path(RULES, redis_url=redis_url, **RELAXED) as engine:
        decisions = replay(engine, *demo)
    assert_same_lines(on_memory, decisions)
    assert not any(decision.get("degraded") for decision in decisions)
    assert sum(1 for decision in decisions if decision.get("rule") not in (None, "default")) > 50


def test_demo_replay_on_redis_async_matches_memory(redis_url, demo, on_memory):
    engine = Engine.from_path(RULES, redis_url=redis_url, **RELAXED)
    assert_same_lines(on_memory, asyncio.run(replay_async(engine, *demo)))


def test_demo_replay_on_a_cluster_matches_memory(redis_cluster_url, demo, on_memory):
    with Engine.from_path(RULES, redis_url=redis_cluster_url, **RELAXED) as engine:
        assert engine.store.topology.cluster is True
        assert_same_lines(on_memory, replay(engine, *demo))


def test_demo_replay_on_a_cluster_async_matches_memory(redis_cluster_url, demo, on_memory):
    engine = Engine.from_path(RULES, redis_url=redis_cluster_url, **RELAXED)
    assert_same_lines(on_memory, asyncio.run(replay_async(engine, *demo)))


def test_demo_replay_on_a_cluster_by_callback_matches_memory(redis_cluster_url, demo, on_memory):
    events, profiles = demo
    engine = Engine.from_path(RULES, redis_url=redis_cluster_url, **RELAXED)

    async def run() -> list:
        for profile in profiles:
            profile = dict(profile)
            await engine.put_profile_async(profile.pop("customer_id"), profile)
        out = []
        for number, event in enumerate(events, 1):
            try:
                out.append(await decide_by("callback", engine, event))
            except EngineError as error:
                out.append({"line": number, "error": str(error)})
        await engine.close_async()
        return out

    assert_same_lines(on_memory, asyncio.run(run()))


def test_a_decision_by_callback_takes_every_option_and_tells_errors(redis_url, demo):
    events, profiles = demo
    engine = Engine.from_path(RULES, redis_url=redis_url, **RELAXED)
    memory = Engine.from_path(RULES)
    for profile in profiles:
        profile = dict(profile)
        customer = profile.pop("customer_id")
        engine.put_profile(customer, profile)
        memory.put_profile(customer, profile)
    options = {"limit": 3, "explain": True, "dry_run": True}

    async def run() -> list:
        out = [await decide_by("callback", engine, event, **options) for event in events[:200]]
        for bad in ({"customer_id": "c1"}, {"customer_id": "c1", "type": "login", "time": "soon"}):
            with pytest.raises(EngineError) as info:
                await decide_by("callback", engine, bad)
            out.append(info.value.code)
        with pytest.raises(EngineError) as info:
            await decide_by("callback", engine, events[0], limit=0)
        out.append(info.value.code)
        await engine.close_async()
        return out

    expected = [memory.decide(event, **options).to_dict() for event in events[:200]]
    assert asyncio.run(run()) == expected + ["bad_event", "bad_event", "bad_request"]


def test_nba_replay_with_redis_prints_what_memory_prints(redis_url, tmp_path):
    from nba.engine.cli import main

    events = tmp_path / "events.jsonl"
    events.write_text("".join(line + "\n" for line in DEMO_EVENTS.read_text().splitlines()[:300]))

    def run(*extra: str) -> str:
        out = io.StringIO()
        with redirect_stdout(out), redirect_stderr(io.StringIO()):
            main(["replay", str(RULES), str(events), "--profiles", str(DEMO_PROFILES), *extra])
        return out.getvalue()

    on_memory = run()
    assert run("--redis", redis_url + "?latency_budget_ms=2000&write_timeout_ms=2000") == on_memory


def test_profiles_read_back_the_same(redis_url):
    profile = read_jsonl(DEMO_PROFILES, 1)[0]
    customer = profile.pop("customer_id")
    memory = Engine.from_path(RULES)
    memory.put_profile(customer, profile)
    with Engine.from_path(RULES, redis_url=redis_url, **RELAXED) as engine:
        engine.put_profile(customer, profile)
        assert engine.get_profile(customer) == memory.get_profile(customer)


def test_threads_sharing_one_engine_decide_as_memory_does(redis_url, demo, on_memory):
    events, profiles = demo
    by_customer: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        by_customer.setdefault(event["customer_id"], []).append(index)
    engine = Engine.from_path(RULES, redis_url=redis_url, **RELAXED)
    for profile in profiles:
        profile = dict(profile)
        engine.put_profile(profile.pop("customer_id"), profile)
    decided: dict[int, dict] = {}

    def decide_for(indexes: list[int]) -> None:  # one customer's events, in order
        for index in indexes:
            decided[index] = engine.decide(events[index]).to_dict()

    groups = list(by_customer.values())
    threads = [threading.Thread(target=lambda chunk=groups[n::8]: [decide_for(g) for g in chunk]) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    engine.close()
    assert_same_lines(on_memory, [decided[index] for index in range(len(events))])


# -- a cap holds across processes


def decide_at_the_barrier(rules: str, url: str, barrier, results) -> None:
    engine = Engine.from_path(rules, redis_url=url, **RELAXED)
    event = {"customer_id": "racer", "type": "visit", "time": "2026-11-27T10:00:00Z"}
    barrier.wait()
    decision = engine.decide(event)
    results.put((decision.rule, decision.degraded))
    engine.close()


def test_processes_deciding_at_once_give_a_cap_of_one_once(redis_url, write_rules):
    rules = str(write_rules(CAPPED_RULES))
    racers = 8
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(racers), context.Queue()
    processes = [
        context.Process(target=decide_at_the_barrier, args=(rules, redis_url, barrier, results)) for _ in range(racers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert not any(degraded for _, degraded in outcomes)
    assert sorted(rule for rule, _ in outcomes) == ["default"] * (racers - 1) + ["one_offer"]


@pytest.mark.parametrize("call", ASYNC_CALLS)
def test_concurrent_async_callers_give_a_cap_of_one_once(redis_url, write_rules, call):
    engine = Engine.from_path(write_rules(CAPPED_RULES), redis_url=redis_url, **RELAXED)
    event = {"customer_id": "racer", "type": "visit", "time": "2026-11-27T10:00:00Z"}

    async def race():
        decisions = await asyncio.gather(*(decide_by(call, engine, event) for _ in range(16)))
        await engine.close_async()
        return sorted(decision["rule"] for decision in decisions)

    assert asyncio.run(race()) == ["default"] * 15 + ["one_offer"]


COUNTING_RULES = """
rule third_visit
  when event.type == "visit" and count(visit within 1d) == 3
  then badge
end
default nothing
"""


def test_threads_deciding_one_customer_at_once_each_see_the_ones_before(redis_url, write_rules):
    """Eight threads, one customer, one instant: each decision reads the state the one
    before it left, so exactly one of them counts three visits."""
    engine = Engine.from_path(write_rules(COUNTING_RULES), redis_url=redis_url, **RELAXED)
    start = threading.Barrier(8)
    rules: list[str] = []

    def visit_once() -> None:
        start.wait()
        rules.append(engine.decide({"customer_id": "crowd", "type": "visit", "time": 1_795_000_000}).rule)

    threads = [threading.Thread(target=visit_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.close()
    assert sorted(rules) == ["default"] * 7 + ["third_visit"]


@pytest.mark.parametrize("call", ASYNC_CALLS)
def test_async_callers_deciding_one_customer_at_once_each_see_the_ones_before(redis_url, write_rules, call):
    engine = Engine.from_path(write_rules(COUNTING_RULES), redis_url=redis_url, **RELAXED)
    event = {"customer_id": "crowd", "type": "visit", "time": 1_795_000_000}

    async def crowd() -> list[str]:
        decisions = await asyncio.gather(*(decide_by(call, engine, event) for _ in range(8)))
        await engine.close_async()
        return [decision["rule"] for decision in decisions]

    assert asyncio.run(crowd()) == ["default", "default", "third_visit"] + ["default"] * 5  # in arrival order


# -- faults: Redis stops and comes back while decisions flow


def visit(n: int) -> dict:
    return {"customer_id": f"c{n % 7}", "type": "visit", "time": 1_795_000_000 + n}


def test_decisions_flow_through_a_redis_restart(own_redis_server, write_rules):
    engine = Engine.from_path(
        write_rules(CAPPED_RULES), redis_url=own_redis_server.url, retry_interval_s=0.0, **RELAXED
    )
    before = [engine.decide(visit(n)) for n in range(20)]
    own_redis_server.stop()
    during = [engine.decide(visit(n)) for n in range(20, 40)]  # never raises
    own_redis_server.start()
    after = [engine.decide(visit(n)) for n in range(40, 60)]
    assert not any(decision.degraded for decision in before + after)
    assert all(decision.degraded for decision in during)
    assert all(decision.rule == "default" for decision in during)  # without state: the capped rule is passed over
    assert sum(decision.rule == "one_offer" for decision in after) == 7  # state was lost with the restart
    engine.close()


class Traffic:
    """Decisions in a background thread, one after the other, until stopped."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.decisions: list = []
        self.errors: list = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            try:
                self.decisions.append(self.engine.decide(visit(n)))
            except Exception as error:  # noqa: BLE001 - the test asserts there are none
                self.errors.append(error)
            n += 1

    def wait_for(self, condition, what: str) -> None:
        """Until ``condition(decisions)`` holds; fails the test after a generous wait."""
        wait_until(lambda: condition(list(self.decisions)), what, interval_s=0.01)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)


def test_redis_killed_and_restarted_under_traffic(own_redis_server, write_rules):
    engine = Engine.from_path(
        write_rules(CAPPED_RULES), redis_url=own_redis_server.url, retry_interval_s=0.01, **RELAXED
    )
    traffic = Traffic(engine)
    traffic.thread.start()
    try:
        traffic.wait_for(lambda seen: len(seen) >= 50, "decisions before the kill")
        killed_at = len(traffic.decisions)
        own_redis_server.stop()
        traffic.wait_for(lambda seen: sum(d.degraded for d in seen[killed_at:]) >= 20, "degraded decisions")
        own_redis_server.start()
        restarted_at = len(traffic.decisions)
        traffic.wait_for(lambda seen: sum(not d.degraded for d in seen[restarted_at:]) >= 50, "recovery")
    finally:
        traffic.stop()
        engine.close()
    assert traffic.errors == []
    assert not any(decision.degraded for decision in traffic.decisions[:killed_at])


@pytest.mark.parametrize("call", ASYNC_CALLS)
def test_async_decisions_flow_through_a_redis_restart(own_redis_server, write_rules, call):
    engine = Engine.from_path(
        write_rules(CAPPED_RULES), redis_url=own_redis_server.url, retry_interval_s=0.0, **RELAXED
    )

    async def flow():
        before = await asyncio.gather(*(decide_by(call, engine, visit(n)) for n in range(16)))
        own_redis_server.stop()
        during = await asyncio.gather(*(decide_by(call, engine, visit(n)) for n in range(16, 32)))
        own_redis_server.start()
        after = await asyncio.gather(*(decide_by(call, engine, visit(n)) for n in range(32, 48)))
        await engine.close_async()
        return before, during, after

    before, during, after = asyncio.run(flow())
    assert not any(decision["degraded"] for decision in before + after)
    assert all(decision["degraded"] for decision in during)


def paused(url: str, engine: Engine, event: dict):
    """The decision for ``event`` while Redis answers nobody (CLIENT PAUSE)."""
    import redis as redis_py

    admin = redis_py.Redis.from_url(url)
    admin.execute_command("CLIENT", "PAUSE", 500, "ALL")
    try:
        return engine.decide(event)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()


def test_a_slow_redis_gives_a_degraded_decision_that_records_nothing(redis_url, write_rules):
    engine = Engine.from_path(
        write_rules(CAPPED_RULES), redis_url=redis_url, latency_budget_s=0.005, write_timeout_s=2.0
    )
    engine.get_profile("c0")  # connected
    decision = paused(redis_url, engine, visit(0))
    assert (decision.rule, decision.degraded) == ("default", True)  # a capped rule is never given degraded
    engine.store.latency_budget_s = 2.0  # now patient: the cap was not used up by the degraded decision
    assert (engine.decide(visit(0)).rule, engine.decide(visit(0)).rule) == ("one_offer", "default")
    engine.close()


@pytest.mark.parametrize("call", ASYNC_CALLS)
def test_a_slow_redis_gives_a_degraded_decision_async(redis_url, write_rules, call):
    import redis as redis_py

    engine = Engine.from_path(
        write_rules(CAPPED_RULES),
        redis_url=redis_url,
        latency_budget_s=0.005,
        write_timeout_s=2.0,
        connect_timeout_s=1.0,
    )
    admin = redis_py.Redis.from_url(redis_url)

    async def scenario():
        await engine.get_profile_async("c0")  # connected
        admin.execute_command("CLIENT", "PAUSE", 500, "ALL")
        try:
            return await decide_by(call, engine, visit(0))
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
            await engine.close_async()

    decision = asyncio.run(scenario())
    assert (decision["rule"], decision["degraded"]) == ("default", True)


def test_the_engine_starts_while_redis_is_down(own_redis_server, write_rules):
    url = own_redis_server.url
    own_redis_server.stop()
    engine = Engine.from_path(write_rules(CAPPED_RULES), redis_url=url, retry_interval_s=0.0, **RELAXED)
    assert isinstance(engine.store, RedisStore)
    assert engine.decide(visit(0)).degraded
    own_redis_server.start()
    assert not engine.decide(visit(0)).degraded
    engine.close()
