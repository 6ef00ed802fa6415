"""The lint benchmark: `nba lint` time against rule count (the goal: 1,000 rules under 5 s).

Two rulesets per size:
- ``synthetic``: the evaluation benchmark's rulesets (benchmarks/synthetic.py): rules
  spread over event types, 2-3 comparisons each, no channel and no policy, so every rule
  is a possible winner for ``shadowed``;
- ``overlapping``: the worst case for ``shadowed`` and ``redundant-condition``: every rule
  of one event type, over three fields and few constants, so most pairs of rules can meet
  and many conditions imply each other (and a segment in some).

Each is written to a temporary file; the table shows the whole `lint_path` (load, then
parse and check again for the tree, then the analysis) in wall-clock and CPU time (the CPU
time moves less on a shared machine), and the analysis alone.

    python -m benchmarks lint --rules 100,1000
    python benchmarks/bench_lint.py
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/bench_lint.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import synthetic
from benchmarks.report import figure, markdown_table

DEFAULT_RULE_COUNTS = (100, 1000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", default=None, help="comma-separated rule counts (default 100,1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per ruleset (default 3; the best is shown)")
    parser.add_argument("--seed", type=int, default=1)


def overlapping_rules(n: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = ['segment gold = profile.tier in ["gold", "platinum"]\n']
    tiers = ["gold", "platinum", "silver", "bronze"]
    for i in range(n):
        parts = ['event.type == "view"']
        for _ in range(rng.choice((1, 2, 3))):
            kind = rng.randrange(4)
            if kind == 0:
                parts.append(f"event.amount {rng.choice(['>', '>=', '<', '<=', '==', '!='])} {rng.randrange(10)}")
            elif kind == 1:
                parts.append(f"profile.visits {rng.choice(['>', '<'])} {rng.randrange(10)}")
            elif kind == 2:
                chosen = rng.sample(tiers, rng.choice((1, 2)))
                parts.append("profile.tier in [" + ", ".join(f'"{t}"' for t in chosen) + "]")
            else:
                parts.append(rng.choice(["gold", "not gold", "profile.opt_in"]))
        lines.append(
            f"rule r{i}\n  priority {rng.randrange(10)}\n  when "
            + "\n   and ".join(parts)
            + f"\n  then a{i} via {rng.choice(['web', 'email', 'push'])}\nend\n"
        )
    return "\n".join(lines)


def time_lint(path: Path, repeat: int) -> tuple[float, float, Counter]:
    from nba.dsl.lint import lint_checked, load_checked

    best_total = best_analysis = best_cpu = float("inf")
    counts: Counter = Counter()
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        checked, sources = load_checked(path)
        middle = time.perf_counter()
        warnings = lint_checked(checked, sources, at=0)
        ended, cpu_ended = time.perf_counter(), time.process_time()
        best_total = min(best_total, ended - started)
        best_analysis = min(best_analysis, ended - middle)
        best_cpu = min(best_cpu, cpu_ended - cpu_started)
        counts = Counter(w.code for w in warnings)
    return best_total, best_analysis, best_cpu, counts


def run(args: argparse.Namespace) -> dict:
    rules_arg = getattr(args, "rules", None)
    quick = getattr(args, "quick", False)
    counts = [int(n) for n in rules_arg.split(",")] if rules_arg else list(DEFAULT_RULE_COUNTS)
    repeat = 1 if quick else max(1, getattr(args, "repeat", 3) or 3)
    seed = getattr(args, "seed", 1)
    rows, data = [], []
    for n in counts:
        for name, text in (
            ("synthetic", synthetic.render_rules(synthetic.generate(n, n_events=0, seed=seed))),
            ("overlapping", overlapping_rules(n, seed)),
        ):
            with tempfile.TemporaryDirectory(prefix="nba-lint-") as tmp:
                path = Path(tmp) / "rules.rules"
                path.write_text(text, encoding="utf-8")
                total, analysis, cpu, found = time_lint(path, repeat)
            summary = ", ".join(f"{code} {count}" for code, count in sorted(found.items())) or "none"
            rows.append([f"{n:,}", name, figure(total), figure(cpu), figure(analysis), summary])
            data.append(
                {
                    "rules": n,
                    "ruleset": name,
                    "lint_s": total,
                    "lint_cpu_s": cpu,
                    "analysis_s": analysis,
                    "warnings": dict(found),
                }
            )
            print(
                f"  {n:,} rules, {name}: lint {figure(total)} s, CPU {figure(cpu)} s "
                f"(analysis {figure(analysis)} s); warnings: {summary}",
                flush=True,
            )
    table = markdown_table(["rules", "ruleset", "lint s (best)", "lint CPU s", "analysis s (best)", "warnings"], rows)
    print(table, flush=True)
    markdown = f"`nba lint` of generated rulesets, best of {repeat} (goal: 1,000 rules under 5 s).\n\n{table}"
    return {"title": "Lint time", "markdown": markdown, "data": {"runs": data}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_lint", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
