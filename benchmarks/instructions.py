"""Instructions per decision, counted by valgrind's callgrind: repeatable on a noisy machine.

Wall-clock figures on a shared machine move 15-40% from run to run; instruction counts do
not. Each contender runs twice under callgrind on the same seeded workload, once deciding
no events and once deciding N; the difference over N is its cost per decision, set-up
excluded. Use it to compare two versions of the hot path, or the twins, before and after a
change:

    python -m benchmarks.instructions                       # nba evaluation, decide, the reference
    python -m benchmarks.instructions --contenders eval --rules 200 --events 1000
    NBA_PURE_PYTHON=1 python -m benchmarks.instructions --contenders eval

Rule counts above a few hundred make the set-up slow under valgrind (about 50x); the cost
per decision depends on the rules per event type (20 here at every size), not on the total.

Two more contenders decide the demo day (examples/demo) through the example rules (rules/):
``demo`` with ``Engine.decide`` on the in-memory store, ``redis`` with 16 asyncio callers
awaiting ``Engine.decide_async`` on a throwaway ``redis-server`` (only this process's
instructions are counted, not the server's; the latency budget is raised so that
valgrind's slowness degrades no decision). ``--events`` is then capped at the demo's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys

from benchmarks.timing import freeze_loaded

CONTENDERS = ("reference", "eval", "decide", "demo", "redis")


def run_workload(contender: str, n_rules: int, pool: int, n_events: int, seed: int) -> None:
    """Decide the first ``n_events`` events of the seeded workload (``pool`` events, generated
    whatever ``n_events`` is, so that both runs do the same set-up) with one contender."""
    from benchmarks.synthetic import generate, render_rules

    if contender in ("demo", "redis"):
        run_demo(contender, pool, n_events)
        return
    workload = generate(n_rules, pool, seed=seed)
    events = workload.events[:n_events]
    if contender == "reference":
        from benchmarks.peers import reference

        decide = reference.build(workload)
        freeze_loaded()
        for event in events:
            decide(event, workload.profiles[event["customer_id"]])
        return
    from nba.dsl import load_text
    from nba.engine import Engine

    engine = Engine(load_text(render_rules(workload)))
    for customer_id, profile in workload.profiles.items():
        engine.put_profile(customer_id, profile)
    if contender == "decide":
        freeze_loaded()
        for event in events:
            engine.decide(event)
        return
    from nba.engine.events import check_event
    from nba.engine.procedure import evaluate
    from nba.engine.state import CustomerState

    ruleset = engine.ruleset
    states = {cid: CustomerState(profile=p, history={}, contacts=[]) for cid, p in workload.profiles.items()}
    # every event of the pool is checked, so that the check is set-up in both runs
    checked = [check_event(event, ruleset.event_schemas) for event in workload.events]
    freeze_loaded()
    for event in checked[:n_events]:
        evaluate(ruleset, event, states[event["customer_id"]], 1, False)


def run_demo(contender: str, pool: int, n_events: int) -> None:
    """The demo day's first ``n_events`` of ``pool`` events, in memory or on Redis."""
    from nba.engine import Engine

    from benchmarks import bench_redis
    from benchmarks.processes import ThrowawayRedis

    events = bench_redis.read_jsonl(bench_redis.EVENTS, pool)
    profiles = bench_redis.read_jsonl(bench_redis.PROFILES)
    if contender == "demo":
        engine = Engine.from_path(bench_redis.RULES)
        bench_redis.prepare(engine, profiles)
        checked = events[:n_events]
        freeze_loaded()
        for event in checked:
            engine.decide(event)
        return
    with ThrowawayRedis() as server:
        engine = Engine.from_path(bench_redis.RULES, redis_url=server.url, key_prefix="instructions")
        engine.store.latency_budget_s = 30.0
        bench_redis.prepare(engine, profiles)
        streams = bench_redis.by_customer(events, REDIS_CALLERS)  # the same split in both runs
        budget = [n_events]

        async def caller(stream: list) -> None:
            for event in stream:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
                await engine.decide_async(event)

        async def main() -> None:
            await engine.decide_async(events[0], dry_run=True)  # connected, scripts loaded
            await asyncio.gather(*(caller(stream) for stream in streams))
            await engine.close_async()

        freeze_loaded()
        bench_redis.run_loop(main())
        engine.close()


REDIS_CALLERS = 16


def count_instructions(contender: str, n_rules: int, pool: int, n_events: int, seed: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--worker",
        contender,
        "--rules",
        str(n_rules),
        "--pool",
        str(pool),
        "--events",
        str(n_events),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_decision(contender: str, n_rules: int, n_events: int, seed: int) -> int:
    if contender in ("demo", "redis"):
        from benchmarks import bench_redis

        n_events = min(n_events, len(bench_redis.read_jsonl(bench_redis.EVENTS)))
    baseline = count_instructions(contender, n_rules, n_events, 0, seed)
    total = count_instructions(contender, n_rules, n_events, n_events, seed)
    return (total - baseline) // n_events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated: " + ", ".join(CONTENDERS))
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_workload(args.worker, args.rules, args.pool, args.events, args.seed)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    twin = "pure Python" if os.environ.get("NBA_PURE_PYTHON") else "Cython when built"
    print(f"instructions per decision, {args.rules} rules, {args.events} events, twins: {twin}")
    for contender in args.contenders.split(","):
        print(f"  {contender:<10} {per_decision(contender, args.rules, args.events, args.seed):>9,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
