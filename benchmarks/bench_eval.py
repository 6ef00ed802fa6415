"""The evaluation benchmark: nba against a hand-written Python function and the peers.

For each rule count, one seeded synthetic workload (benchmarks/synthetic.py). Every
contender is built, then run over every event of the workload, its decisions checked
against the expected ones (a mismatch is reported in the table, never hidden), then timed
call by call. nba runs in one subprocess per twin (Cython, pure Python), as the twin is
chosen when nba is imported; the others run in this process.

    python -m benchmarks eval --rules 10,100,1000,10000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from benchmarks import peers, synthetic
from benchmarks.report import figure, markdown_table, ratio
from benchmarks.timing import measure

DEFAULT_RULE_COUNTS = (10, 100, 1000, 10000)
BUILD_LIMIT_SECONDS = 60.0
REPO_ROOT = Path(__file__).resolve().parent.parent
NBA_TWINS = (("Cython", None), ("pure Python", "1"))  # label, NBA_PURE_PYTHON
NBA_EVAL = "nba evaluation"
NBA_DECIDE = "nba decide"


class BuildTooSlow(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", default=None, help="comma-separated rule counts (default 10,100,1000,10000)")
    parser.add_argument("--events", type=int, default=None, help="events per workload (default 5000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=None, help="seconds of timed calls per contender (default 2)")
    parser.add_argument("--peers", default=None, help="comma-separated peer names to run (default: all installed)")
    parser.add_argument("--no-nba", action="store_true", help="leave nba out (peers and reference only)")


def settings(args: argparse.Namespace) -> dict:
    quick = getattr(args, "quick", False)
    rules = getattr(args, "rules", None)
    return {
        "rules": [int(n) for n in rules.split(",")] if rules else ([10, 100] if quick else list(DEFAULT_RULE_COUNTS)),
        "events": getattr(args, "events", None) or (500 if quick else 5000),
        "seed": getattr(args, "seed", 1),
        "budget": getattr(args, "budget", None) or (0.3 if quick else 2.0),
        "peers": set(args.peers.split(",")) if getattr(args, "peers", None) else None,
        "nba": not getattr(args, "no_nba", False),
    }


# ---------------------------------------------------------------------------------------
# Contenders
# ---------------------------------------------------------------------------------------

def in_process_contenders(wanted: set[str] | None) -> list[tuple[str, str | None, Callable]]:
    """(label, version, build) of the reference and every installed peer variant."""
    reference = peers.reference_module()
    out = [(reference.name, reference.version, reference.build)]
    for module in peers.peer_modules():
        if wanted is not None and module.name not in wanted:
            continue
        variants = getattr(module, "variants", {module.name: module.build})
        for label, build in variants.items():
            out.append((label, module.version, build))
    return out


def build_with_limit(build: Callable, workload: synthetic.Workload, limit: float):
    """build(workload), or BuildTooSlow when it takes over ``limit`` seconds."""
    def too_slow(_signum, _frame):
        raise BuildTooSlow()

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return build(workload)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def measure_in_process(label, version, build, workload, expected, budget, build_history: dict) -> dict:
    row = {"contender": label, "version": version}
    if version is None:
        return {**row, "note": "not installed"}
    n = len(workload.rules)
    earlier = build_history.get(label)
    if earlier and earlier[1] * n / earlier[0] > BUILD_LIMIT_SECONDS:
        estimate = earlier[1] * n / earlier[0]
        return {**row, "note": f"skipped: building would take about {estimate:.0f} s ({earlier[1]:.1f} s at {earlier[0]:,} rules)"}
    started = time.perf_counter()
    try:
        decide = build_with_limit(build, workload, BUILD_LIMIT_SECONDS)
    except BuildTooSlow:
        return {**row, "note": f"skipped: building took over {BUILD_LIMIT_SECONDS:.0f} s"}
    except Exception as exc:
        return {**row, "note": f"build failed: {type(exc).__name__}: {exc}"}
    row["build_s"] = time.perf_counter() - started
    build_history[label] = (n, row["build_s"])
    measurement, results = measure(decide, workload.pairs(), budget_seconds=budget)
    row.update(measurement.as_dict())
    row["mismatches"] = _mismatches(results, expected)
    return row


def _mismatches(results: list, expected: list) -> int:
    return sum(1 for got, want in zip(results, expected) if got != want)


def measure_nba(n_rules: int, config: dict) -> list[dict]:
    """The nba rows, one subprocess per twin."""
    rows = []
    for twin, pure in NBA_TWINS:
        env = {k: v for k, v in os.environ.items() if k != "NBA_PURE_PYTHON"}
        if pure:
            env["NBA_PURE_PYTHON"] = pure
        command = [sys.executable, "-m", "benchmarks.nba_runner", "--rules", str(n_rules),
                   "--events", str(config["events"]), "--seed", str(config["seed"]), "--budget", str(config["budget"])]
        result = _run_runner(command, env)
        note = ""
        if "error" in result:
            rows.append({"contender": f"nba ({twin})", "version": None, "note": "failed: " + result["error"]})
            continue
        if (result.get("twin") == "cython") != (pure is None):
            note = f"ran the {result.get('twin')} twin"
        for name, measured in result["contenders"].items():
            row = {"contender": f"{name} ({twin})", "version": _nba_version(), "build_s": result.get("load_s")}
            if "error" in measured:
                row["note"] = measured["error"]
            else:
                row.update(measured)
                if note:
                    row["note"] = note
            rows.append(row)
    return rows


def _run_runner(command: list[str], env: dict) -> dict:
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])


def _nba_version() -> str:
    from benchmarks.peers import package_version

    return package_version("nba") or "work tree"


# ---------------------------------------------------------------------------------------
# One rule count, and the whole run
# ---------------------------------------------------------------------------------------

def baseline(rows: list[dict]) -> dict | None:
    """The row the ratios are against: nba evaluation, Cython first; else the reference."""
    by_name = {r["contender"]: r for r in rows if "p50_us" in r}
    for name in (f"{NBA_EVAL} (Cython)", f"{NBA_EVAL} (pure Python)", peers.reference_module().name):
        if name in by_name:
            return by_name[name]
    return None


def size_table(rows: list[dict]) -> str:
    base = baseline(rows)
    headers = ["contender", "version", "build s", "p50 µs", "p99 µs", "p99.9 µs", "decisions/s",
               f"p50 vs {base['contender'] if base else '-'}", "samples", "wrong decisions", "note"]
    body = []
    for r in rows:
        timed = "p50_us" in r
        body.append([
            r["contender"], r.get("version") or "-", figure(r.get("build_s")),
            figure(r.get("p50_us")) if timed else "-", figure(r.get("p99_us")) if timed else "-",
            figure(r.get("p999_us")) if timed else "-", figure(r.get("per_second")) if timed else "-",
            ratio(r["p50_us"] / base["p50_us"]) if timed and base else "-",
            f"{r['samples']:,}" if timed else "-",
            str(r.get("mismatches", "-")), r.get("note", ""),
        ])
    return markdown_table(headers, body)


def run_size(n_rules: int, config: dict, build_history: dict) -> dict:
    workload = synthetic.generate(n_rules, config["events"], config["seed"])
    expected = synthetic.expected_actions(workload)
    info = {
        "rules": n_rules, "event_types": len(workload.event_types), "events": len(workload.events),
        "match_rate": sum(1 for a in expected if a is not None) / len(expected),
    }
    print(f"\n## {n_rules:,} rules ({info['event_types']} event types, {info['events']:,} events, "
          f"{info['match_rate']:.0%} decided)", flush=True)
    rows = measure_nba(n_rules, config) if config["nba"] else []
    for row in rows:
        print(f"  {row['contender']}: {figure(row.get('p50_us'))} µs p50 {row.get('note', '')}", flush=True)
    for label, version, build in in_process_contenders(config["peers"]):
        row = measure_in_process(label, version, build, workload, expected, config["budget"], build_history)
        print(f"  {label}: {figure(row.get('p50_us'))} µs p50 {row.get('note', '')}", flush=True)
        rows.append(row)
    table = size_table(rows)
    print(table, flush=True)
    return {**info, "rows": rows, "table": table}


def goals(sizes: list[dict]) -> list[str]:
    """The issue's goals at 1,000 rules, measured (reported, never asserted)."""
    at_1000 = next((s for s in sizes if s["rules"] == 1000), None)
    if at_1000 is None:
        return ["(no 1,000-rule run: goals not measured)"]
    rows = {r["contender"]: r for r in at_1000["rows"] if "p50_us" in r}
    lines = []
    nba = rows.get(f"{NBA_EVAL} (Cython)")
    pure = rows.get(f"{NBA_EVAL} (pure Python)")
    reference = rows.get(peers.reference_module().name)
    peer_rows = [r for name, r in rows.items() if not name.startswith("nba") and r is not reference]
    if nba and peer_rows:
        fastest = min(peer_rows, key=lambda r: r["p50_us"])
        lines.append(f"- nba evaluation vs the fastest peer ({fastest['contender']}): "
                     f"{ratio(fastest['p50_us'] / nba['p50_us'])} faster at p50 (goal: 10x)")
    if nba and reference:
        lines.append(f"- nba evaluation vs the hand-written Python: {ratio(reference['p50_us'] / nba['p50_us'])} "
                     f"faster at p50 (goal: more than 1x)")
    if nba and pure:
        lines.append(f"- Cython twin vs pure Python (evaluation): {ratio(pure['p50_us'] / nba['p50_us'])} "
                     f"faster at p50 (goal: 2x)")
    decide = rows.get(f"{NBA_DECIDE} (Cython)")
    if decide:
        lines.append(f"- full in-process decide (Cython, in-memory store): p99 {figure(decide['p99_us'])} µs (goal: under 50 µs)")
    return lines or ["(nba not measured: goals not measured)"]


def run(args: argparse.Namespace) -> dict:
    config = settings(args)
    build_history: dict = {}
    sizes = [run_size(n, config, build_history) for n in config["rules"]]
    goal_lines = goals(sizes)
    print("\nGoals at 1,000 rules:\n" + "\n".join(goal_lines), flush=True)
    markdown = [
        "Seeded synthetic rulesets (benchmarks/synthetic.py, seed "
        f"{config['seed']}): each rule an event type plus two or three comparisons on event and "
        "profile fields, some `in` lists; about one event type per 20 rules; about 20% of events "
        "decided. The decision is the action of the highest-priority matching rule (ties by "
        "declaration order) or none. Every contender is checked on every event before it is timed; "
        "`wrong decisions` counts the events where it differed. Peers are indexed by event type "
        "(durable-rules through its Rete network). Ratios are p50 latencies against the first row "
        "named in the column header.",
        "",
        "Goals at 1,000 rules (reported, not asserted):",
        "",
        *goal_lines,
    ]
    for size in sizes:
        markdown += ["", f"### {size['rules']:,} rules ({size['event_types']} event types, {size['events']:,} events, "
                     f"{size['match_rate']:.0%} decided)", "", size["table"]]
    return {"title": "Evaluation", "markdown": "\n".join(markdown), "data": {"config": {**config, "peers": sorted(config["peers"] or [])}, "sizes": sizes}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nba bench eval")
    parser.add_argument("--quick", action="store_true")
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
