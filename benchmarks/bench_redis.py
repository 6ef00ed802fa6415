"""Deciding on Redis: latency and throughput beside a bare Redis round trip, and memory.

The workload is the demo day (examples/demo: its profiles, then its events in order)
through the example rules (rules/), on a throwaway ``redis-server`` on a free loopback
port (or ``--redis URL``), with the store's default latency budget of 1 ms.

- sequential: ``engine.decide`` one event after the other, each timed, interleaved with a
  bare pipelined ``HGETALL`` + ``ZRANGEBYSCORE`` round trip on the same customer's keys,
  timed the same way (through redis-py's ``Pipeline`` and through a plain redis-py
  ``Connection``, as the store sends it), and with the same decision on the in-memory
  store (what the rules cost without any I/O), so that all of them see the same load.
- concurrent: 16 asyncio callers (uvloop when installed), each deciding for its own customers
  (the events split by customer, as a partitioned log feeds them), each awaiting
  ``engine.decide_async`` on the next event, beside 16 callers doing the bare round trip
  through ``redis.asyncio`` and through the store's own shared pipelined connection.
- memory: then ``MEMORY USAGE`` of every key, per customer and kind of key, and the
  growth of Redis's ``used_memory`` over the run, per customer.
- spread over processes: the same 16 callers split over 2 and 4 engine processes (forked,
  each with its own engine, event loop and connection, as ``nba serve --workers``), the
  second part's events again, latencies pooled: one Python process is CPU-bound long
  before Redis is.

    nba bench redis [--quick] [--events N] [--concurrency 16] [--processes 2,4] [--redis URL]
    python -m benchmarks.bench_redis --quick
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.processes import ThrowawayRedis, own_cpu_seconds
from benchmarks.timing import freeze_loaded

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"
EVENTS = REPO / "examples" / "demo" / "events.jsonl"
PROFILES = REPO / "examples" / "demo" / "profiles.jsonl"
GOAL_CONCURRENT_P99_US = 1000.0
GOAL_SEQUENTIAL_RATIO = 2.0
RELAXED_BUDGET_S = 0.1  # a second concurrent run, to see the decisions that did read their state


# -- figures


def percentiles(latencies_s: list[float]) -> dict:
    values = sorted(latencies_s)
    count = len(values)

    def rank(fraction: float) -> float:
        return values[min(count - 1, max(0, int(fraction * count + 0.5) - 1))] * 1e6

    return {"samples": count, "p50_us": rank(0.50), "p99_us": rank(0.99), "p999_us": rank(0.999)}


def read_jsonl(path: Path, limit: int | None = None) -> list:
    with open(path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    return lines[:limit]


# -- the bare round trip


def bare_commands(keys, customer_id: str, time_s: float) -> list[tuple]:
    return [
        ("HGETALL", keys.profile(customer_id)),
        ("ZRANGEBYSCORE", keys.history(customer_id, "page_view"), f"({time_s - 1800!r}", "+inf"),
    ]


class BareRoundTrip:
    """HGETALL + ZRANGEBYSCORE pipelined, through a redis-py Pipeline and a plain Connection."""

    def __init__(self, url: str, keys):
        import redis
        from redis.connection import Connection

        self.keys = keys
        self.client = redis.Redis.from_url(url)
        self.conn = Connection(**{k: v for k, v in redis.connection.parse_url(url).items()}, protocol=3)
        self.conn.connect()

    def pipeline(self, customer_id: str, time_s: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        for command in bare_commands(self.keys, customer_id, time_s):
            pipe.execute_command(*command)
        pipe.execute()

    def connection(self, customer_id: str, time_s: float) -> None:
        commands = bare_commands(self.keys, customer_id, time_s)
        self.conn.send_packed_command(self.conn.pack_commands(commands), check_health=False)
        for _ in commands:
            self.conn.read_response()

    def close(self) -> None:
        self.client.close()
        self.conn.disconnect()


# -- the parts of the run


def prepare(engine, profiles: list) -> None:
    for profile in profiles:
        profile = dict(profile)
        engine.put_profile(profile.pop("customer_id"), profile)


def event_time(engine, event: dict) -> float:
    from nba.engine.events import check_event

    return check_event(event, engine.ruleset.event_schemas)["time"]


def sequential(engine, on_memory, bare: BareRoundTrip, events: list) -> dict:
    """Decisions (on Redis, on memory) and bare round trips taken in turns, each call timed."""
    clock = time.perf_counter
    decide, memory, pipelined, connection = [], [], [], []
    degraded = 0
    times = [event_time(engine, event) for event in events]
    gc.collect()
    started = clock()
    decide_total = 0.0
    for event, time_s in zip(events, times):
        t0 = clock()
        decision = engine.decide(event)
        t1 = clock()
        bare.pipeline(event["customer_id"], time_s)
        t2 = clock()
        bare.connection(event["customer_id"], time_s)
        t3 = clock()
        on_memory.decide(event)
        t4 = clock()
        decide.append(t1 - t0)
        pipelined.append(t2 - t1)
        connection.append(t3 - t2)
        memory.append(t4 - t3)
        decide_total += t1 - t0
        degraded += decision.degraded
    return {
        "decide": dict(percentiles(decide), per_second=len(events) / decide_total, degraded=degraded),
        "decide_memory": dict(percentiles(memory), per_second=len(events) / sum(memory)),
        "bare_pipeline": percentiles(pipelined),
        "bare_connection": percentiles(connection),
        "wall_s": clock() - started,
    }


def by_customer(events: list, parts: int) -> list[list]:
    """The events split into ``parts`` streams of about the same length, each customer's
    events in one stream, in order.

    This is how a service feeds concurrent callers in production (a log partitioned by
    customer): each caller decides for its own customers, one event after the other. The
    demo day replayed at full speed puts one customer's session of page views back to
    back, and callers sharing one ordered stream would decide them at the same instant
    (the engine then has them take turns, engine/turns.py). Customers go to the shortest
    stream so far, the busiest first, so that every caller stays busy until near the end.
    """
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        counts[event["customer_id"]] += 1
    lengths = [(0, part) for part in range(parts)]
    heapq.heapify(lengths)
    part_of: dict[str, int] = {}
    for customer in sorted(counts, key=lambda c: (-counts[c], c)):
        length, part = heapq.heappop(lengths)
        part_of[customer] = part
        heapq.heappush(lengths, (length + counts[customer], part))
    streams: list[list] = [[] for _ in range(parts)]
    for event in events:
        streams[part_of[event["customer_id"]]].append(event)
    return streams


def while_all_busy(streams: list[list]) -> list:
    """Iterators over the streams that all stop once the first of them runs out: latencies
    are taken only while every caller is deciding (a caller that ran out of events would
    leave the others less contended)."""
    running = [True]

    def stream_of(events: list):
        for event in events:
            if not running[0]:
                return
            yield event
        running[0] = False

    return [stream_of(events) for events in streams]


async def concurrent_decisions(engine, events: list, callers: int, shared_stream: bool = False) -> dict:
    """``callers`` asyncio callers, each on its own customers' events (``by_customer``), or
    all taking the next event of one stream in file order (``shared_stream``)."""
    clock = time.perf_counter
    latencies: list[float] = []
    degraded = 0
    shared = iter(events)
    streams = [shared] * callers if shared_stream else while_all_busy(by_customer(events, callers))

    async def caller(stream) -> None:
        nonlocal degraded
        for event in stream:
            t0 = clock()
            decision = await engine.decide_async(event)
            latencies.append(clock() - t0)
            degraded += decision.degraded

    await engine.decide_async(events[0], dry_run=True)  # connected
    cpu_before = own_cpu_seconds()
    started = clock()
    await asyncio.gather(*(caller(stream) for stream in streams))
    elapsed = clock() - started
    cpu_us = (own_cpu_seconds() - cpu_before) / len(latencies) * 1e6
    await engine.close_async()  # the writes sent without waiting are answered before the loop ends
    return dict(percentiles(latencies), per_second=len(latencies) / elapsed, degraded=degraded, cpu_us=cpu_us)


async def concurrent_bare_shared(store, events: list, times: list, callers: int) -> dict:
    """The bare round trip through the store's own shared, pipelined asyncio connection."""
    clock = time.perf_counter
    latencies: list[float] = []
    queue = iter(zip(events, times))

    async def caller() -> None:
        for event, time_s in queue:
            t0 = clock()
            key = store.keys.profile(event["customer_id"])
            await store.call_async(key, bare_commands(store.keys, event["customer_id"], time_s), 1.0)
            latencies.append(clock() - t0)

    started = clock()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = clock() - started
    await store.close_async()
    return dict(percentiles(latencies), per_second=len(latencies) / elapsed)


async def concurrent_bare(url: str, keys, events: list, times: list, callers: int) -> dict:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, max_connections=callers)
    clock = time.perf_counter
    latencies: list[float] = []
    queue = iter(zip(events, times))

    async def caller() -> None:
        for event, time_s in queue:
            t0 = clock()
            pipe = client.pipeline(transaction=False)
            for command in bare_commands(keys, event["customer_id"], time_s):
                pipe.execute_command(*command)
            await pipe.execute()
            latencies.append(clock() - t0)

    started = clock()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = clock() - started
    await client.aclose()
    return dict(percentiles(latencies), per_second=len(latencies) / elapsed)


def process_caller(url: str, events: list, callers: int, start, results) -> None:
    """One engine process of ``concurrent_processes``: its share of the callers, on its own loop."""
    from nba.engine import Engine

    engine = Engine.from_path(RULES, redis_url=url, key_prefix="nbabench")
    clock = time.perf_counter
    latencies: list[float] = []
    degraded = 0

    async def caller(stream: list) -> None:
        nonlocal degraded
        for event in stream:
            t0 = clock()
            decision = await engine.decide_async(event)
            latencies.append(clock() - t0)
            degraded += decision.degraded

    async def main() -> tuple[float, float]:
        await engine.decide_async(events[0], dry_run=True)  # connected
        freeze_loaded()
        start.wait()  # every process starts at once
        began = clock()
        await asyncio.gather(*(caller(stream) for stream in while_all_busy(by_customer(events, callers))))
        ended = clock()
        await engine.close_async()
        return began, ended

    (began, ended), _ = run_loop(main())
    results.put((latencies, degraded, began, ended))


def concurrent_processes(url: str, events: list, callers: int, processes: int) -> dict:
    """``callers`` asyncio callers spread over ``processes`` engine processes (as ``nba serve
    --workers``), every one on its own event loop and its own connection; latencies pooled."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(processes), context.Queue()
    shares = [callers // processes + (n < callers % processes) for n in range(processes)]
    parts = by_customer(events, processes)  # each customer's events in one process, in order
    children = [
        context.Process(target=process_caller, args=(url, parts[n], shares[n], start, results))
        for n in range(processes)
    ]
    for child in children:
        child.start()
    gathered = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(timeout=60)
    latencies = [latency for part in gathered for latency in part[0]]
    elapsed = max(part[3] for part in gathered) - min(part[2] for part in gathered)
    return dict(
        percentiles(latencies),
        per_second=len(latencies) / elapsed,
        degraded=sum(part[1] for part in gathered),
        processes=processes,
    )


def redis_cpu_s(url: str) -> float:
    """The Redis server's CPU time so far (user + system, INFO cpu), in seconds."""
    import redis

    client = redis.Redis.from_url(url)
    cpu = client.info("cpu")
    client.close()
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def used_memory(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    used = client.info("memory")["used_memory"]
    client.close()
    return used


def memory_per_customer(url: str, prefix: str, used_before: int) -> dict:
    """MEMORY USAGE of every key of the store, summed per customer and per kind of key;
    and the growth of Redis's used_memory over the run, per customer."""
    import redis

    client = redis.Redis.from_url(url)
    per_kind: dict[str, int] = defaultdict(int)
    customers: set[str] = set()
    for key in client.scan_iter(match=f"{prefix}:{{*", count=1000):
        text = key.decode()
        customer, _, rest = text[len(prefix) + 2 :].rpartition("}:")
        customers.add(customer)
        per_kind[rest.split(":")[0]] += client.memory_usage(key, samples=0) or 0
    used = client.info("memory")["used_memory"]
    client.close()
    count = max(1, len(customers))
    names = {"p": "profile", "h": "history", "c": "contacts", "m": "meta"}
    return {
        "customers": len(customers),
        "bytes_per_customer": sum(per_kind.values()) / count,
        "by_kind": {names.get(kind, kind): total / count for kind, total in sorted(per_kind.items())},
        "used_memory_growth_per_customer": (used - used_before) / count,
    }


def run_loop(coroutine):
    try:
        import uvloop

        return uvloop.run(coroutine), "uvloop"
    except ImportError:
        return asyncio.run(coroutine), "asyncio"


# -- the benchmark


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events", type=int, default=None, help="events decided sequentially (default: 6000; quick: 1500)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent asyncio callers")
    parser.add_argument(
        "--redis", metavar="URL", default=None, help="an existing Redis to use (it gets keys under the prefix nbabench)"
    )
    parser.add_argument(
        "--processes",
        default="2,4",
        metavar="N,N",
        help="also run the concurrent callers spread over this many engine processes (default: 2,4; 0: not)",
    )


def run(args: argparse.Namespace) -> dict:
    from nba.engine import Engine

    quick = getattr(args, "quick", False)
    count = getattr(args, "events", None) or (1500 if quick else 6000)
    callers = getattr(args, "concurrency", 16) or 16
    url = getattr(args, "redis", None)
    process_counts = [int(n) for n in str(getattr(args, "processes", "2,4") or "0").split(",") if n.strip()]
    events = read_jsonl(EVENTS)
    profiles = read_jsonl(PROFILES)
    first, second, third = (events[n * count : (n + 1) * count] or events[:count] for n in range(3))
    server = None if url else ThrowawayRedis().__enter__()
    try:
        url = url or server.url
        used_before = used_memory(url)
        engine = Engine.from_path(RULES, redis_url=url, key_prefix="nbabench")
        keys = engine.store.keys
        prepare(engine, profiles)
        on_memory = Engine.from_path(RULES)
        prepare(on_memory, profiles)
        bare = BareRoundTrip(url, keys)
        freeze_loaded()
        seq = sequential(engine, on_memory, bare, first)
        bare.close()
        times = [event_time(engine, event) for event in second]
        redis_cpu_before = redis_cpu_s(url)
        concurrent, loop_name = run_loop(concurrent_decisions(engine, second, callers))
        concurrent["redis_cpu_us"] = (redis_cpu_s(url) - redis_cpu_before) / len(second) * 1e6
        engine.store.latency_budget_s = RELAXED_BUDGET_S
        concurrent_relaxed, _ = run_loop(concurrent_decisions(engine, third, callers))
        concurrent_bare_figures, _ = run_loop(concurrent_bare(url, keys, second, times, callers))
        concurrent_shared_figures, _ = run_loop(concurrent_bare_shared(engine.store, second, times, callers))
        engine.close()
        memory = memory_per_customer(url, "nbabench", used_before)
        # on keys of their own, after the memory is taken: the same events by callers sharing one stream
        shared_engine = Engine.from_path(RULES, redis_url=url, key_prefix="nbabench-shared")
        prepare(shared_engine, profiles)
        concurrent_shared_stream, _ = run_loop(concurrent_decisions(shared_engine, second, callers, shared_stream=True))
        shared_engine.close()
        spread = [concurrent_processes(url, second, callers, n) for n in process_counts if n > 1]
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    data = {
        "events": count,
        "callers": callers,
        "loop": loop_name,
        "sequential": seq,
        "concurrent": {
            "decide": concurrent,
            "decide_relaxed_budget": concurrent_relaxed,
            "decide_shared_stream": concurrent_shared_stream,
            "bare_pipeline": concurrent_bare_figures,
            "bare_shared": concurrent_shared_figures,
            "decide_processes": spread,
        },
        "memory": memory,
        "goals": {
            "concurrent_p99_under_1ms": concurrent["p99_us"] < GOAL_CONCURRENT_P99_US,
            "sequential_p50_ratio_to_bare_pipeline": seq["decide"]["p50_us"] / seq["bare_pipeline"]["p50_us"],
            "sequential_p50_ratio_to_bare_connection": seq["decide"]["p50_us"] / seq["bare_connection"]["p50_us"],
        },
    }
    markdown = format_markdown(data)
    print(markdown, flush=True)
    return {"title": "Deciding on Redis", "markdown": markdown, "data": data}


def format_markdown(data: dict) -> str:
    from benchmarks.report import figure, markdown_table

    seq, conc, memory = data["sequential"], data["concurrent"], data["memory"]

    def row(name, figures, per_second=True):
        return [
            name,
            figure(figures["p50_us"]),
            figure(figures["p99_us"]),
            figure(figures["per_second"]) if per_second and "per_second" in figures else "-",
            figures.get("degraded", "-"),
        ]

    headers = ["", "p50 µs", "p99 µs", "decisions/s", "degraded"]
    rows = [
        row("sequential: engine.decide on Redis", seq["decide"]),
        row("sequential: engine.decide on memory (the rules' own cost)", seq["decide_memory"]),
        row("sequential: bare HGETALL+ZRANGEBYSCORE, redis-py Pipeline", seq["bare_pipeline"]),
        row("sequential: bare HGETALL+ZRANGEBYSCORE, redis-py Connection", seq["bare_connection"]),
        row(
            f"{data['callers']} concurrent: engine.decide_async on Redis, budget 1 ms ({data['loop']})", conc["decide"]
        ),
        row(
            f"{data['callers']} concurrent: engine.decide_async on Redis, budget {RELAXED_BUDGET_S * 1000:g} ms",
            conc["decide_relaxed_budget"],
        ),
        row(
            f"{data['callers']} concurrent, one shared stream in file order: engine.decide_async on Redis, budget 1 ms",
            conc["decide_shared_stream"],
        ),
        *[
            row(
                f"{data['callers']} concurrent: engine.decide_async on Redis, budget 1 ms, spread over "
                f"{figures['processes']} processes",
                figures,
            )
            for figures in conc.get("decide_processes", [])
        ],
        row(f"{data['callers']} concurrent: bare round trip, redis.asyncio Pipeline", conc["bare_pipeline"]),
        row(f"{data['callers']} concurrent: bare round trip, the store's shared connection", conc["bare_shared"]),
    ]
    goals = data["goals"]
    lines = [
        f"{data['events']} demo events decided sequentially, then {data['events']} more by {data['callers']} "
        "concurrent callers, each deciding for its own customers in order (twice: with the default latency "
        "budget of 1 ms and with a relaxed one), and once more with the callers taking the next event of one "
        "shared stream in file order (one customer's consecutive events then wait for each other); rules/ on a "
        "throwaway redis-server.",
        "",
        markdown_table(headers, rows),
        "",
        f"- sequential p50 / bare p50: {goals['sequential_p50_ratio_to_bare_pipeline']:.2f}x the Pipeline round trip, "
        f"{goals['sequential_p50_ratio_to_bare_connection']:.2f}x the Connection round trip (goal: within 2x)",
        f"- {data['callers']} concurrent p99: {figure(conc['decide']['p99_us'])} µs in one process (goal: under 1000 µs)"
        + "".join(
            f"; {figure(figures['p99_us'])} µs over {figures['processes']} processes"
            for figures in conc.get("decide_processes", [])
        ),
        f"- CPU of the engine's process per concurrent decision (user + system, one process, 1 ms budget): "
        f"{figure(conc['decide']['cpu_us'])} µs: one process decides at most {figure(1e6 / conc['decide']['cpu_us'])} "
        f"times a second, so with {data['callers']} callers always waiting a decision takes at least "
        f"{figure(data['callers'] * conc['decide']['cpu_us'])} µs on average (Little's law); the Redis server's "
        f"CPU per decision: {figure(conc['decide']['redis_cpu_us'])} µs",
        f"- memory after the run: {figure(memory['bytes_per_customer'])} bytes per customer (MEMORY USAGE of "
        f"its keys: {', '.join(f'{kind} {figure(size)}' for kind, size in memory['by_kind'].items())}) over "
        f"{memory['customers']} customers; used_memory grew {figure(memory['used_memory_growth_per_customer'])} "
        "bytes per customer",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_redis", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
