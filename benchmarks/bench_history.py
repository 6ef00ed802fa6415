"""The history benchmark: `decide` with 20 aggregates over customers' 1,000 past events.

Each customer's past events are put into the engine by deciding them in time order
(``Engine.decide``, not a dry run, so they are recorded), then each new event is decided
and timed, one call at a time. The same rules written by hand in Python
(history_workload.HandWrittenRules) give the expected decisions and reference timings:
in one subprocess per nba twin (Cython, pure Python), nba and the hand-written rules
decide each event in turn.

    python -m benchmarks history --customers 50 --decisions 5000
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks import history_workload as hw
from benchmarks.children import run_in_twin
from benchmarks.report import figure, markdown_table, ratio
from benchmarks.timing import freeze_loaded, summarize

NBA_TWINS = (("Cython", None), ("pure Python", "1"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=None, help="customers (default 50)")
    parser.add_argument("--past", type=int, default=None, help="past events per customer (default 1000)")
    parser.add_argument("--decisions", type=int, default=None, help="timed decisions (default 5000)")
    parser.add_argument("--seed", type=int, default=1)


def settings(args: argparse.Namespace) -> dict:
    quick = getattr(args, "quick", False)
    return {
        "customers": getattr(args, "customers", None) or (5 if quick else 50),
        "past": getattr(args, "past", None) or (1000 if not quick else 300),
        "decisions": getattr(args, "decisions", None) or (300 if quick else 5000),
        "seed": getattr(args, "seed", 1),
    }


def workload(config: dict) -> hw.HistoryWorkload:
    return hw.generate(config["customers"], config["past"], config["decisions"], config["seed"])


def timed_sequence(decide, events: list[dict]) -> tuple[list[int], list]:
    """Decide every event in order, timing each call (the calls change state: one pass only)."""
    clock = time.perf_counter_ns
    latencies, results = [], []
    gc.collect()
    for event in events:
        t0 = clock()
        result = decide(event)
        latencies.append(clock() - t0)
        results.append(result)
    return latencies, results


def measured_row(name: str, latencies: list[int], results: list, expected: list | None) -> dict:
    per_second = len(latencies) / (sum(latencies) / 1e9) if latencies else 0.0
    row = {"contender": name, **summarize(latencies, per_second).as_dict()}
    if expected is not None:
        row["mismatches"] = sum(1 for got, want in zip(results, expected) if got != want)
    return row


# ---------------------------------------------------------------------------------------
# The child: one nba twin
# ---------------------------------------------------------------------------------------


def child(config: dict) -> dict:
    """nba and the hand-written rules, deciding the same events in turns, one event at a time."""
    from nba.engine import Engine

    from benchmarks.eval_worker import loaded_twin

    data = workload(config)
    reference = hw.HandWrittenRules()
    for event in data.past:
        reference.add(event)
    with tempfile.TemporaryDirectory(prefix="nba-history-") as tmp:
        path = Path(tmp) / "rules.rules"
        path.write_text(hw.RULES, encoding="utf-8")
        engine = Engine.from_path(str(path))
    started = time.perf_counter()
    for event in data.past:
        engine.decide(event)
    fill_s = time.perf_counter() - started
    freeze_loaded()

    clock = time.perf_counter_ns
    nba_ns, reference_ns, got, expected = [], [], [], []
    gc.collect()
    for event in data.decisions:
        copy = dict(event)
        t0 = clock()
        action = engine.decide(event).action
        t1 = clock()
        want = reference.decide(copy)
        t2 = clock()
        nba_ns.append(t1 - t0)
        reference_ns.append(t2 - t1)
        got.append(action)
        expected.append(want)
    return {
        "twin": loaded_twin(),
        "fill_s": fill_s,
        "past_events": len(data.past),
        "rows": [
            measured_row("nba decide", nba_ns, got, expected),
            measured_row("hand-written Python", reference_ns, expected, expected),
        ],
        "actions": Counter(a or "none" for a in expected),
    }


def run_child(pure: str | None, config: dict) -> dict:
    return run_in_twin(["benchmarks.bench_history", "--child", json.dumps(config)], bool(pure), timeout_s=1800)


# ---------------------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    config = settings(args)
    print(
        f"\n## history: {config['customers']} customers x {config['past']:,} past events, "
        f"{config['decisions']:,} timed decisions, 20 aggregates",
        flush=True,
    )
    rows, notes, actions = [], [], None
    for twin, pure in NBA_TWINS:
        result = run_child(pure, config)
        if "error" in result:
            rows.append({"contender": f"nba decide ({twin})", "note": "failed: " + result["error"]})
            continue
        nba, reference = result["rows"]
        nba["contender"] = f"nba decide ({twin})"
        if (result["twin"] == "cython") != (pure is None):
            nba["note"] = f"ran the {result['twin']} twin"
        reference["contender"] = f"hand-written Python (beside the {twin} twin)"
        rows += [nba, reference]
        actions = result["actions"]
        notes.append(
            f"{twin}: {result['past_events']:,} past events decided in {figure(result['fill_s'])} s "
            f"({figure(result['past_events'] / result['fill_s'])} decisions/s)"
        )
        print(
            f"  {nba['contender']}: p50 {figure(nba['p50_us'])} µs, p99 {figure(nba['p99_us'])} µs; "
            f"hand-written p50 {figure(reference['p50_us'])} µs",
            flush=True,
        )
    base = next((r for r in rows if "p50_us" in r and r["contender"].startswith("nba")), None)
    table = markdown_table(
        [
            "contender",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "decisions/s",
            f"p50 vs {base['contender'] if base else '-'}",
            "samples",
            "wrong decisions",
            "note",
        ],
        [
            [
                r["contender"],
                figure(r.get("p50_us")),
                figure(r.get("p99_us")),
                figure(r.get("p999_us")),
                figure(r.get("per_second")),
                ratio(r["p50_us"] / base["p50_us"]) if base and "p50_us" in r else "-",
                f"{r['samples']:,}" if "samples" in r else "-",
                str(r.get("mismatches", "-")),
                r.get("note", ""),
            ]
            for r in rows
        ],
    )
    print(table, flush=True)
    decided = ", ".join(f"{name} {count}" for name, count in sorted((actions or {}).items(), key=lambda kv: -kv[1]))
    cython = next((r for r in rows if r["contender"] == "nba decide (Cython)" and "p99_us" in r), None)
    goal = (
        f"Goal (reported, not asserted): p99 under 200 µs; measured {figure(cython['p99_us'])} µs (Cython)."
        if cython
        else "Goal: p99 under 200 µs; not measured."
    )
    markdown = "\n".join(
        [
            f"{config['customers']} customers with {config['past']:,} past events each (page views, purchases, "
            f"email opens over 30 days), decided into the in-memory store in time order; then "
            f"{config['decisions']:,} new events decided and timed one by one (each also recorded). "
            "The ruleset (benchmarks/history_workload.py) has 10 rules and 20 aggregates "
            "(count, sum, avg, min, max, distinct, since), each with a `where` filter, windows from 1h "
            "to 30d. The hand-written Python keeps each customer's events by type in time order and "
            "computes the same aggregates with bisect and comprehensions; it gives the expected "
            "decisions, and decides each event right after nba, in the same process, so that both "
            "meet the same load. `gc.freeze()` is called once the past events are in. Decisions/s here "
            "is 1 / mean latency (the calls change state).",
            "",
            goal,
            "",
            table,
            "",
            *[f"- {n}" for n in notes],
            f"- decisions made: {decided}" if decided else "",
        ]
    )
    return {"title": "History", "markdown": markdown, "data": {"config": config, "rows": rows, "notes": notes}}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        try:
            result = child(json.loads(argv[1]))
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result))
        return 0
    from benchmarks.cli import main as bench_main  # the same options as `nba bench history`

    return bench_main(["history", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
