"""What a decision costs Redis: redis-server CPU, commands and round trips per decision.

Decides N events through the Engine on a throwaway ``redis-server`` (a free loopback port,
nothing on disk; or ``--redis URL``, whose stats it resets) and reports, per decision:

- redis-server CPU (``INFO cpu``: ``used_cpu_user`` + ``used_cpu_sys``, the delta over the
  decisions only, profiles loaded before), in µs;
- ``INFO commandstats``: calls and µs per call of each command, commands run inside a
  script counted too (an ``EVALSHA``'s own µs include theirs);
- what the engine sent: round trips (a request whose replies were awaited), writes sent
  without waiting, and the commands in both, counted at the store's I/O calls;
- the decisions that differ from the same events decided on the in-memory store (0
  unless something is wrong).

Workloads: ``demo`` (examples/demo: its profiles, then its events in order, through rules/),
``history3`` (the 3-rule ruleset of issue 19 with history aggregates, page_view /
cart_abandoned / purchase over 1,000 customers, 10,000 events a second of event time) and
``load`` (``nba bench load``'s workload, benchmarks/load_workload.py: its rules, profiles
and event mix at 10,000 events a second of event time; most page views record a contact).
Modes: ``sync`` (``engine.decide``, one after the other), ``async`` (``--callers``
asyncio callers each on its own customers, ``engine.decide_async``: closed loop, as fast
as it goes) and ``paced`` (open loop: decision n starts at n / ``--rate`` seconds, each
in a task of its own, as a server's requests arrive), each on a fresh Redis database.
How many decisions share one socket read in Redis (the figure that moves its CPU the
most besides the commands) depends on the mode and on the engine's own speed: compare
runs of one mode on the same twin. ``--repeat`` runs each that many times and shows the
run of median Redis CPU.

    python -m benchmarks.redis_cost [--events 5000] [--workload demo,history3] [--mode sync,async,paced] [--repeat 3]
    nba bench redis-cost ...            (the same)
    ... --callgrind                     (redis-server's instructions per decision, under valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_RULES = REPO / "rules"
DEMO_EVENTS = REPO / "examples" / "demo" / "events.jsonl"
DEMO_PROFILES = REPO / "examples" / "demo" / "profiles.jsonl"
# the generated workloads (history3, load): a fixed day, so that every run decides the same
GENERATED_START = 1795737600.0  # 2026-11-27T00:00:00Z
GENERATED_RATE = 10_000.0  # events a second of event time
GENERATED_CUSTOMERS = 1000
NOT_COUNTED = {"info", "config|resetstat", "config", "flushall", "flushdb", "ping", "client|setinfo", "hello"}


def workload(name: str, count: int) -> tuple[object, list[dict], list[dict]]:
    """(the ruleset, profiles to load first, events) of a workload."""
    from nba.dsl import load_ruleset, load_text

    if name == "demo":
        from benchmarks.bench_redis import read_jsonl

        return load_ruleset(DEMO_RULES), read_jsonl(DEMO_PROFILES), read_jsonl(DEMO_EVENTS, count)
    if name == "history3":
        from benchmarks.bench_server import RULES, make_events

        events = make_events(count, GENERATED_CUSTOMERS, 19, "c")
        for n, event in enumerate(events):
            event["time"] = GENERATED_START + n / GENERATED_RATE
        return load_text(RULES, "history3.rules"), [], events
    if name == "load":
        from benchmarks import load_workload

        stream = load_workload.Events(GENERATED_CUSTOMERS, 19)
        events = [{**stream.next(), "time": GENERATED_START + n / GENERATED_RATE} for n in range(count)]
        profiles = [
            {"customer_id": customer, **profile}
            for customer, profile in load_workload.profiles(GENERATED_CUSTOMERS, 19)
        ]
        return load_text(load_workload.RULES, "load.rules"), profiles, events
    raise SystemExit(f"unknown workload {name!r} (demo, history3, load)")


class Counted:
    """Counts the store's I/O: round trips, writes sent without waiting, commands in each."""

    def __init__(self, store):
        self.counts: dict[str, int] = defaultdict(int)
        counts = self.counts
        exchange, exchange_async, send_to, sent_at_once = (
            store.exchange,
            store.exchange_async,
            store.send_to,
            store.sent_at_once,
        )

        def counted_exchange(address, packed, count, timeout_s):
            counts["round trips"] += 1
            counts["commands sent"] += count
            return exchange(address, packed, count, timeout_s)

        def counted_exchange_async(address, packed, count, timeout_s):
            counts["round trips"] += 1
            counts["commands sent"] += count
            return exchange_async(address, packed, count, timeout_s)

        def counted_send_to(address, packed, commands, timeout_s):
            counts["sent without waiting"] += 1
            counts["commands sent"] += len(commands)
            return send_to(address, packed, commands, timeout_s)

        def counted_sent_at_once(key, commands):
            sent = sent_at_once(key, commands)
            if sent:
                counts["sent without waiting"] += 1
                counts["commands sent"] += len(commands) if isinstance(commands, list) else 1
            return sent

        store.exchange, store.exchange_async = counted_exchange, counted_exchange_async
        store.send_to, store.sent_at_once = counted_send_to, counted_sent_at_once

    def reset(self) -> None:
        self.counts.clear()


class CallgrindRedis:
    """``redis-server`` under valgrind's callgrind, counting the instructions it runs (in
    user space: not the kernel's share of its syscalls) only while ``counting``: a figure
    that does not move with the machine's load, unlike CPU time."""

    def __init__(self):
        from benchmarks.bench_redis import ThrowawayRedis

        self.server = ThrowawayRedis()
        self.out = os.path.join(self.server.dir, "callgrind.out")

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> "CallgrindRedis":
        server = self.server
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.out}",
            shutil.which("redis-server"),
            *("--port", str(server.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", server.dir, "--daemonize", "no"),
        ]
        server.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # valgrind starts slowly
        server.wait_until_ready()
        return self

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.server.process.pid)], check=True, capture_output=True)

    def instructions(self) -> int:
        """The instructions counted since the last call (callgrind's dump of the counters, zeroed)."""
        for name in glob.glob(self.out + "*"):
            os.unlink(name)
        self.control("--dump")
        total = 0
        for name in glob.glob(self.out + "*"):
            with open(name, encoding="utf-8", errors="replace") as dump:
                for line in dump:
                    if line.startswith(("summary:", "totals:")):
                        total = max(total, int(line.split()[1]))
        self.control("--zero")
        return total

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)


def redis_stats(client) -> dict:
    cpu = client.info("cpu")
    stats = client.info("stats")
    return {
        "cpu_s": cpu["used_cpu_user"] + cpu["used_cpu_sys"],
        "reads": stats.get("total_reads_processed", 0),
        "writes": stats.get("total_writes_processed", 0),
    }


def commandstats(client) -> dict[str, dict]:
    return {
        name.removeprefix("cmdstat_"): value
        for name, value in client.info("commandstats").items()
        if name.removeprefix("cmdstat_") not in NOT_COUNTED
    }


def decide_all(engine, events: list[dict], mode: str, callers: int, rate: float) -> list:
    if mode == "sync":
        return [engine.decide(event) for event in events]
    from benchmarks.bench_redis import by_customer, run_loop

    decisions: list = [None] * len(events)

    async def caller(stream: list[tuple[int, dict]]) -> None:
        for n, event in stream:
            decisions[n] = await engine.decide_async(event)

    async def one(n: int, event: dict) -> None:
        decisions[n] = await engine.decide_async(event)

    async def paced() -> None:
        """Open loop: decision n starts at n / rate seconds, whatever the ones before do."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        tasks = []
        for n, event in enumerate(events):
            delay = started + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(one(n, event)))
        await asyncio.gather(*tasks)

    async def main() -> None:
        if mode == "paced":
            await paced()
        else:
            numbered = list(enumerate(events))
            streams = by_customer([event for _, event in numbered], callers)
            index = {id(event): n for n, event in numbered}
            await asyncio.gather(*(caller([(index[id(event)], event) for event in stream]) for stream in streams))
        await engine.close_async()  # the writes sent without waiting are answered

    run_loop(main())
    return decisions


def measure(
    url: str, name: str, mode: str, count: int, callers: int, rate: float, callgrind=None, near_cache: int = 0
) -> dict:
    import redis

    from nba.engine import Engine
    from nba.engine.store.redis import RedisStore

    ruleset, profiles, events = workload(name, count)
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    store = RedisStore(url, latency_budget_s=1.0, write_timeout_s=1.0, connect_timeout_s=1.0, near_cache=near_cache)
    engine = Engine(ruleset, store, max_event_ahead_s=None)
    memory = Engine(ruleset, max_event_ahead_s=None)
    for profile in profiles:
        profile = dict(profile)
        customer = profile.pop("customer_id")
        engine.put_profile(customer, profile)
        memory.put_profile(customer, profile)
    counted = Counted(store)
    admin.config_resetstat()
    if callgrind is not None:
        callgrind.control("--instr=on")
        callgrind.instructions()  # zeroed
    before = redis_stats(admin)
    started, engine_cpu = time.perf_counter(), os.times()
    decisions = decide_all(engine, events, mode, callers, rate)
    if mode == "sync":
        engine.close()  # the replies still owed to writes sent without waiting
    elapsed = time.perf_counter() - started
    engine_cpu = sum(os.times()[:2]) - sum(engine_cpu[:2])
    after = redis_stats(admin)
    instructions = callgrind.instructions() if callgrind is not None else 0
    if callgrind is not None:
        callgrind.control("--instr=off")
    commands = commandstats(admin)
    expected = [memory.decide(event) for event in events]
    differ = sum(
        1
        for got, want in zip(decisions, expected)
        if (got.rule, got.action, got.channel, got.degraded) != (want.rule, want.action, want.channel, False)
    )
    admin.close()
    n = len(events)
    return {
        "workload": name,
        "mode": mode,
        "decisions": n,
        "degraded": sum(1 for decision in decisions if decision.degraded),
        "differ_from_memory": differ,
        "redis_cpu_us": (after["cpu_s"] - before["cpu_s"]) / n * 1e6,
        "redis_instructions": instructions / n,
        "engine_cpu_us": engine_cpu / n * 1e6,
        "server_reads": (after["reads"] - before["reads"]) / n,
        "server_writes": (after["writes"] - before["writes"]) / n,
        "commands": {
            command: {
                "calls": stats["calls"] / n,
                "usec_per_call": stats["usec_per_call"],
                "usec": stats["usec"] / n,
            }
            for command, stats in sorted(commands.items(), key=lambda item: -item[1]["usec"])
        },
        "commands_run": sum(stats["calls"] for stats in commands.values()) / n,
        "client": {what: value / n for what, value in counted.counts.items()},
        "wall_s": elapsed,
    }


def report(result: dict) -> str:
    lines = [
        f"## {result['workload']}, {result['mode']}: {result['decisions']} decisions "
        f"({result['degraded']} degraded, {result['differ_from_memory']} differ from memory), {result['wall_s']:.1f} s",
        f"redis-server CPU per decision: {result['redis_cpu_us']:.1f} µs "
        f"(runs: {', '.join(map(str, result.get('redis_cpu_us_runs', [])))}) "
        f"(socket reads {result['server_reads']:.2f}, writes {result['server_writes']:.2f} per decision)"
        + (
            f"; redis-server instructions per decision (callgrind, user space): {result['redis_instructions']:,.0f}"
            if result["redis_instructions"]
            else ""
        ),
        f"engine, per decision: CPU {result['engine_cpu_us']:.0f} µs (this process), "
        + ", ".join(f"{what} {value:.2f}" for what, value in sorted(result["client"].items()))
        + f"; commands run in Redis (scripts' included) {result['commands_run']:.2f}",
        "",
        "| command | calls/decision | µs/call | µs/decision |",
        "|---|---:|---:|---:|",
    ]
    for command, stats in result["commands"].items():
        lines.append(f"| {command} | {stats['calls']:.2f} | {stats['usec_per_call']:.2f} | {stats['usec']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events decided per workload and mode")
    parser.add_argument("--workload", default="demo,history3", help="demo, history3, load (comma-separated)")
    parser.add_argument("--mode", default="sync,async,paced", help="sync, async, paced (comma-separated)")
    parser.add_argument("--callers", type=int, default=16, help="concurrent asyncio callers in the async mode")
    parser.add_argument("--rate", type=float, default=5000.0, help="decisions started a second in the paced mode")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the run of median redis CPU is shown")
    parser.add_argument("--redis", metavar="URL", default=None, help="a Redis to use (its database is flushed)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--near-cache", type=int, default=0, help="customers the store's near cache holds (default 0: none)"
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run redis-server under valgrind's callgrind and report its instructions per decision (slow, but steady)",
    )
    args = parser.parse_args(argv)
    from nba.dsl.twins import IMPLEMENTATION
    from nba.engine.store.redis import protocol

    from benchmarks.bench_redis import ThrowawayRedis

    store_twin = "cython" if protocol.__file__.endswith(".so") else "python"
    print(f"(twins: rules {IMPLEMENTATION}, Redis store {store_twin})", flush=True)
    results = []
    if args.callgrind and args.redis:
        raise SystemExit("--callgrind starts its own redis-server: not with --redis")
    server = None if args.redis else (CallgrindRedis() if args.callgrind else ThrowawayRedis()).__enter__()
    try:
        url = args.redis or server.url
        for name in args.workload.split(","):
            for mode in args.mode.split(","):
                runs = [
                    measure(
                        url,
                        name.strip(),
                        mode.strip(),
                        args.events,
                        args.callers,
                        args.rate,
                        server if args.callgrind else None,
                        args.near_cache,
                    )
                    for _ in range(args.repeat)
                ]
                runs.sort(key=lambda run: run["redis_cpu_us"])
                result = runs[len(runs) // 2]
                result["redis_cpu_us_runs"] = [round(run["redis_cpu_us"], 1) for run in runs]
                results.append(result)
                print(report(result) + "\n", flush=True)
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    main()
