"""The compile benchmark: ruleset parse, check and compile time against rule count.

The rulesets are the synthetic ones of the evaluation benchmark, written to a temporary
``rules.rules`` and loaded with ``dsl.load_ruleset`` (the twin is whichever this process
imports: NBA_PURE_PYTHON decides).

    nba bench compile --rules 100,1000,10000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import synthetic
from benchmarks.report import figure, markdown_table

DEFAULT_RULE_COUNTS = (100, 1000, 10000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", default=None, help="comma-separated rule counts (default 100,1000,10000)")
    parser.add_argument(
        "--repeat", type=int, default=None, help="loads per rule count (default 3; 1 at 10,000 rules and more)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--big",
        type=int,
        default=None,
        metavar="N",
        help="also load a varied N-rule file (benchmarks/big_ruleset.py; issue 21 used 52000) "
        "in a loop, in a thread and in a child process, measuring the event loop's longest stall",
    )


def load_times(path: Path, repeat: int) -> list[float]:
    from nba.dsl import load_ruleset

    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        load_ruleset(path)
        times.append(time.perf_counter() - started)
    return times


def run(args: argparse.Namespace) -> dict:
    quick = getattr(args, "quick", False)
    rules_arg = getattr(args, "rules", None)
    counts = (
        [int(n) for n in rules_arg.split(",")] if rules_arg else ([100, 1000] if quick else list(DEFAULT_RULE_COUNTS))
    )
    seed = getattr(args, "seed", 1)
    rows, data = [], []
    for n in counts:
        workload = synthetic.generate(n, n_events=0, seed=seed)
        text = synthetic.render_rules(workload)
        repeat = getattr(args, "repeat", None) or (1 if quick or n >= 10000 else 3)
        with tempfile.TemporaryDirectory(prefix="nba-compile-") as tmp:
            path = Path(tmp) / "rules.rules"
            path.write_text(text, encoding="utf-8")
            try:
                times = load_times(path, repeat)
            except ImportError as exc:
                rows.append([f"{n:,}", f"{len(text):,}", "-", "-", "-", f"dsl.load_ruleset not available: {exc}"])
                continue
            except Exception as exc:  # noqa: BLE001 - a load error is a finding, reported in the table
                rows.append([f"{n:,}", f"{len(text):,}", "-", "-", "-", f"{type(exc).__name__}: {str(exc)[:200]}"])
                continue
        best, median = min(times), statistics.median(times)
        data.append({"rules": n, "bytes": len(text), "best_s": best, "median_s": median, "loads": repeat})
        rows.append(
            [
                f"{n:,}",
                f"{len(text):,}",
                figure(best),
                figure(median),
                figure(best / n * 1e6),
                f"{repeat} load{'s' if repeat > 1 else ''}",
            ]
        )
        print(f"  {n:,} rules: {figure(best)} s", flush=True)
    twin = _twin()
    table = markdown_table(["rules", "bytes", "best s", "median s", "µs per rule (best)", "note"], rows)
    print(table, flush=True)
    markdown = (
        f"`dsl.load_ruleset` (parse, check, compile) of the synthetic rulesets, in one process "
        f"({twin} twin).\n\n{table}"
    )
    result = {"title": "Compile time", "markdown": markdown, "data": {"twin": twin, "loads": data}}
    big = getattr(args, "big", None)
    if big:
        stall_markdown, stall_data = run_stall(big, seed)
        result["markdown"] += "\n\n" + stall_markdown
        result["data"]["stall"] = stall_data
    return result


def run_stall(n_rules: int, seed: int) -> tuple[str, dict]:
    """The big file's phases, and the event loop's lag while it loads each way
    (benchmarks/load_stall.py: each measurement in a fresh process)."""
    from benchmarks import big_ruleset, load_stall

    with tempfile.TemporaryDirectory(prefix="nba-compile-") as tmp:
        path = Path(tmp) / "big.rules"
        text = big_ruleset.render(n_rules, seed)
        path.write_text(text, encoding="utf-8")
        phases = load_stall.phases_in_child(str(path))
        print(f"  {n_rules:,} rules, {len(text.encode()):,} bytes: phases {phases}", flush=True)
        rows, found = [], []
        for mode in load_stall.MODES:
            measured = load_stall.measure_in_child(str(path), mode)
            found.append(measured)
            print(f"  {mode}: {measured}", flush=True)
            rows.append(
                [
                    mode,
                    figure(measured["load_s"]),
                    figure(measured["max_lag_s"] * 1000),
                    figure(measured["p99_lag_s"] * 1000),
                    figure(measured["peak_rss_mb"]),
                ]
            )
    table = markdown_table(["load", "seconds", "longest loop stall ms", "p99 stall ms", "peak RSS MB"], rows)
    print(table, flush=True)
    markdown = (
        f"A {n_rules:,}-rule file of {len(text.encode()):,} bytes (benchmarks/big_ruleset.py), loaded "
        f"while an asyncio loop ticks every 1 ms (benchmarks/load_stall.py). In-process phases: "
        + ", ".join(f"{k} {figure(v)}" for k, v in phases.items())
        + f".\n\n{table}"
    )
    return markdown, {"rules": n_rules, "bytes": len(text.encode()), "phases": phases, "modes": found}


def _twin() -> str:
    from benchmarks.eval_worker import loaded_twin

    return "Cython" if loaded_twin() == "cython" else "pure Python"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.cli import main as bench_main  # the same options as `nba bench compile`

    return bench_main(["compile", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
