"""The evaluation benchmark: nba against a hand-written Python function and the peers.

For each rule count, one seeded synthetic workload (benchmarks/synthetic.py). Every
contender is built, then run over every event of the workload, its decisions checked
against the expected ones (a mismatch is reported in the table, never hidden), then timed
call by call, the contenders taking turns. The twin of nba is chosen when nba is
imported, so each size runs two worker processes (benchmarks/eval_worker.py): the Cython
twin with the reference and the peers, then the pure-Python twin with the reference,
which anchors the ratio between the two processes.

    python -m benchmarks eval --rules 10,100,1000,10000
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import peers
from benchmarks.children import run_in_twin
from benchmarks.eval_worker import NBA_DECIDE, NBA_EVAL
from benchmarks.report import figure, markdown_table, ratio

DEFAULT_RULE_COUNTS = (10, 100, 1000, 10000)


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
# The workers: one process per nba twin
# ---------------------------------------------------------------------------------------


def run_worker(n_rules: int, config: dict, pure: bool, with_peers: bool, earlier_builds: dict) -> dict:
    args = [
        "benchmarks.eval_worker",
        "--rules",
        str(n_rules),
        "--events",
        str(config["events"]),
        "--seed",
        str(config["seed"]),
        "--budget",
        str(config["budget"]),
        "--earlier-builds",
        json.dumps(earlier_builds),
    ]
    if with_peers:
        args += ["--peers", ",".join(sorted(config["peers"])) if config["peers"] else "all"]
    if not config["nba"]:
        args.append("--no-nba")
    return run_in_twin(args, pure, timeout_s=3600)


def twin_rows(result: dict, twin: str, pure: bool) -> list[dict]:
    """The worker's rows, nba's named after the twin (and a note if another twin ran)."""
    if "error" in result:
        return [{"contender": f"nba ({twin})", "note": "failed: " + result["error"]}]
    rows = []
    for row in result["rows"]:
        if row["contender"].startswith("nba"):
            row = {**row, "contender": f"{row['contender']} ({twin})"}
            if result.get("twin") and (result["twin"] == "pure") != pure:
                row["note"] = (row.get("note", "") + f" ran the {result['twin']} twin").strip()
        rows.append(row)
    return rows


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
    headers = [
        "contender",
        "version",
        "build s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "decisions/s",
        f"p50 vs {base['contender'] if base else '-'}",
        "samples",
        "wrong decisions",
        "note",
    ]
    body = []
    for r in rows:
        timed = "p50_us" in r
        body.append(
            [
                r["contender"],
                r.get("version") or "-",
                figure(r.get("build_s")),
                figure(r.get("p50_us")) if timed else "-",
                figure(r.get("p99_us")) if timed else "-",
                figure(r.get("p999_us")) if timed else "-",
                figure(r.get("per_second")) if timed else "-",
                ratio(r["p50_us"] / base["p50_us"]) if timed and base else "-",
                f"{r['samples']:,}" if timed else "-",
                str(r.get("mismatches", "-")),
                r.get("note", ""),
            ]
        )
    return markdown_table(headers, body)


def run_size(n_rules: int, config: dict, earlier_builds: dict) -> dict:
    print(f"\n## {n_rules:,} rules", flush=True)
    main_result = run_worker(n_rules, config, pure=False, with_peers=True, earlier_builds=earlier_builds)
    rows = twin_rows(main_result, "Cython", pure=False)
    reference_name = peers.reference_module().name
    anchors = {"Cython": next((r for r in rows if r["contender"] == reference_name and "p50_us" in r), None)}
    if config["nba"]:
        pure_result = run_worker(n_rules, config, pure=True, with_peers=False, earlier_builds={})
        pure_rows = twin_rows(pure_result, "pure Python", pure=True)
        anchors["pure Python"] = next(
            (r for r in pure_rows if r["contender"] == reference_name and "p50_us" in r), None
        )
        nba_rows = [r for r in rows if r["contender"].startswith("nba")]
        others = [r for r in rows if not r["contender"].startswith("nba")]
        rows = nba_rows + [r for r in pure_rows if r["contender"].startswith("nba")] + others
    else:
        rows = [r for r in rows if not r["contender"].startswith("nba")]
    for row in rows:
        if "build_s" in row and not row["contender"].startswith("nba"):
            earlier_builds[row["contender"]] = [n_rules, row["build_s"]]
    info = {k: main_result.get(k) for k in ("rules", "event_types", "events", "match_rate")}
    info["rules"] = n_rules
    heading = (
        f"{n_rules:,} rules ({info['event_types']} event types, {info['events'] or 0:,} events, "
        f"{(info['match_rate'] or 0):.0%} decided)"
    )
    table = size_table(rows)
    print(heading + "\n" + table, flush=True)
    return {
        **info,
        "heading": heading,
        "rows": rows,
        "table": table,
        "reference_p50_us": {twin: (a["p50_us"] if a else None) for twin, a in anchors.items()},
    }


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


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
        times = fastest["p50_us"] / nba["p50_us"]
        lines.append(
            f"- nba evaluation (Cython) vs the fastest peer, {fastest['contender']}: {ratio(times)} "
            f"as fast at p50 (goal 10x: {_verdict(times >= 10)})"
        )
    if nba and reference:
        times = reference["p50_us"] / nba["p50_us"]
        lines.append(
            f"- nba evaluation (Cython) vs the hand-written Python: {ratio(times)} as fast at p50 "
            f"(goal more than 1x: {_verdict(times > 1)})"
        )
    if nba and pure:
        times = pure["p50_us"] / nba["p50_us"]
        anchors = at_1000.get("reference_p50_us") or {}
        anchored = ""
        if anchors.get("Cython") and anchors.get("pure Python"):
            relative = (pure["p50_us"] / anchors["pure Python"]) / (nba["p50_us"] / anchors["Cython"])
            anchored = f"; {ratio(relative)} relative to the hand-written Python measured in each process"
        lines.append(
            f"- Cython twin vs pure-Python twin (evaluation): {ratio(times)} as fast at p50{anchored} "
            f"(goal 2x: {_verdict(times >= 2)})"
        )
    decide = rows.get(f"{NBA_DECIDE} (Cython)")
    if decide:
        lines.append(
            f"- full in-process decide (Cython, in-memory store): p99 {figure(decide['p99_us'])} µs "
            f"(goal under 50 µs: {_verdict(decide['p99_us'] < 50)})"
        )
    return lines or ["(nba not measured: goals not measured)"]


def contender_notes() -> list[str]:
    """One line per contender: the first paragraph of its module's docstring."""
    lines = []
    for module in [peers.reference_module(), *peers.peer_modules()]:
        summary = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
        lines.append(f"- {summary}")
    return lines


def run(args: argparse.Namespace) -> dict:
    config = settings(args)
    earlier_builds: dict = {}
    sizes = [run_size(n, config, earlier_builds) for n in config["rules"]]
    goal_lines = goals(sizes)
    print("\nGoals at 1,000 rules:\n" + "\n".join(goal_lines), flush=True)
    markdown = [
        "Seeded synthetic rulesets (benchmarks/synthetic.py, seed "
        f"{config['seed']}): each rule an event type plus two or three comparisons on event and "
        "profile fields, some `in` lists; about one event type per 20 rules; about 20% of events "
        "decided. The decision is the action of the highest-priority matching rule (ties by "
        "declaration order) or none. Every contender is checked on every event before it is timed; "
        "`wrong decisions` counts the events where it differed. Peers are indexed by event type "
        "(durable-rules through its Rete network). The contenders of one process take turns in "
        "five rounds, so that load from other processes falls on all of them. Ratios are p50 "
        "latencies against the row named in the column header (above 1x: slower than that row). `nba evaluation` is the decision "
        "procedure on the compiled ruleset given the customer's state; `nba decide` is a full "
        "`Engine.decide` on the in-memory store (event check, state read, procedure, state write). "
        "`build s` is the load time for nba (parse, check, compile) and the build time for the others.",
        "",
        "How each contender is used (details in benchmarks/peers/):",
        "",
        *contender_notes(),
        "",
        "Goals at 1,000 rules (reported, not asserted):",
        "",
        *goal_lines,
    ]
    for size in sizes:
        markdown += ["", f"### {size['heading']}", "", size["table"]]
    return {
        "title": "Evaluation",
        "markdown": "\n".join(markdown),
        "data": {"config": {**config, "peers": sorted(config["peers"] or [])}, "sizes": sizes},
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.cli import main as bench_main  # the same options as `nba bench eval`

    return bench_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
