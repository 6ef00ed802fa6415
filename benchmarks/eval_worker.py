"""Measure nba on a synthetic workload, in a process of its own.

Which twin runs (Cython or pure Python) is fixed when nba is imported, by the environment
variable NBA_PURE_PYTHON, so bench_eval starts this module once per twin:

    NBA_PURE_PYTHON=1 python -m benchmarks.nba_runner --rules 1000 --events 5000 --seed 1

It rebuilds the same workload from the seed, writes its rules as ``rules.rules`` in a
temporary directory, loads them, checks that nba makes the expected decision on every
event, times it, and prints one JSON object on stdout: the twin it ran, the load time,
and per contender a measurement and the count of decisions that differ from the expected
ones.

Contenders: ``nba evaluation``, the decision procedure alone (engine.procedure.evaluate:
steps 2 to 6 of DSL.md's decision on the compiled ruleset, given the customer's state, no
store), and ``nba decide``, a full in-process ``Engine.decide`` (event check, in-memory
store read and write) after ``Engine.from_path`` and ``put_profile``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import synthetic
from benchmarks.timing import measure


def loaded_twin() -> str:
    """"cython" when any nba module was loaded from a compiled extension, else "pure"."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("dsl", "engine") and str(getattr(module, "__file__", "") or "").endswith((".so", ".pyd")):
            return "cython"
    return "pure"


def write_rules(workload: synthetic.Workload, directory: Path) -> Path:
    path = directory / "rules.rules"
    path.write_text(synthetic.render_rules(workload), encoding="utf-8")
    return path


def evaluation_function(ruleset):
    """``evaluate(event, state) -> action | None``: steps 2 to 6 of the decision, no store."""
    from dsl.twins import pick

    evaluate = pick("engine.procedure", "engine._procedure_c").evaluate  # the twin the Engine uses

    def decide(event, state):
        choices = evaluate(ruleset, event, state).choices
        return choices[0].action if choices else None

    return decide


def customer_states(workload: synthetic.Workload) -> dict:
    from engine.state import CustomerState

    return {cid: CustomerState(profile=profile, history={}, contacts=[]) for cid, profile in workload.profiles.items()}


def run(rules: int, events: int, seed: int, budget: float, contenders: list[str]) -> dict:
    workload = synthetic.generate(rules, events, seed)
    expected = synthetic.expected_actions(workload)
    from engine import Engine

    out: dict = {"contenders": {}}
    with tempfile.TemporaryDirectory(prefix="nba-bench-") as tmp:
        path = write_rules(workload, Path(tmp))
        started = time.perf_counter()
        engine = Engine.from_path(str(path))
        out["load_s"] = time.perf_counter() - started
    out["twin"] = loaded_twin()
    if "evaluation" in contenders:
        states = customer_states(workload)
        inputs = [(event, states[event["customer_id"]]) for event in workload.events]
        out["contenders"]["nba evaluation"] = _measured(evaluation_function(engine.ruleset), inputs, expected, budget)
    if "decide" in contenders:
        for customer_id, profile in workload.profiles.items():
            engine.put_profile(customer_id, profile)

        def decide(event):
            return engine.decide(event).action

        out["contenders"]["nba decide"] = _measured(decide, [(event,) for event in workload.events], expected, budget)
    return out


def _measured(fn, inputs, expected, budget: float) -> dict:
    measurement, results = measure(fn, inputs, budget_seconds=budget)
    mismatches = [i for i, (got, want) in enumerate(zip(results, expected)) if got != want]
    row = measurement.as_dict()
    row["mismatches"] = len(mismatches)
    row["first_mismatches"] = [
        {"event": i, "got": results[i], "expected": expected[i]} for i in mismatches[:3]
    ]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nba_runner")
    parser.add_argument("--rules", type=int, required=True)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per contender")
    parser.add_argument("--contenders", default="evaluation,decide")
    args = parser.parse_args(argv)
    try:
        result = run(args.rules, args.events, args.seed, args.budget, args.contenders.split(","))
    except Exception as exc:  # reported to the parent, which prints it in the table
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
