"""One process of the evaluation benchmark: one nba twin, the reference, and the peers.

Which nba twin runs (Cython or pure Python) is fixed when nba is imported, by the
environment variable NBA_PURE_PYTHON, so bench_eval starts this module once per twin:

    NBA_PURE_PYTHON=1 python -m benchmarks.eval_worker --rules 1000 --events 5000 --seed 1

It rebuilds the workload from the seed, writes its rules as ``rules.rules`` in a temporary
directory, loads them with ``Engine.from_path``, builds the other contenders, checks every
contender's decision on every event against the expected one, times them all taking turns
(benchmarks.timing.measure_interleaved), and prints one JSON object on stdout. Once
everything is built, ``gc.freeze()`` keeps the collector off what was loaded, as a
long-running server would.

Contenders:
- ``nba evaluation``: the decision procedure alone (steps 2 to 6 of DSL.md's decision on the
  compiled ruleset, given the customer's state, no store), the twin the Engine uses;
- ``nba decide``: a full in-process ``Engine.decide`` (event check, in-memory store read
  and write), after ``put_profile`` for every customer;
- the hand-written Python reference, always (it anchors the ratios between processes);
- the peers, with ``--peers`` (``all`` or names), those that are installed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from benchmarks import peers, synthetic
from benchmarks.timing import freeze_loaded, measure_interleaved

BUILD_LIMIT_SECONDS = 60.0
NBA_EVAL = "nba evaluation"
NBA_DECIDE = "nba decide"


class BuildTooSlow(Exception):
    pass


def loaded_twin() -> str:
    """ "cython" when this process runs the compiled twins (dsl/twins.py), else "pure"."""
    import nba.dsl.twins

    return "cython" if nba.dsl.twins.IMPLEMENTATION == "cython" else "pure"


def write_rules(workload: synthetic.Workload, directory: Path) -> Path:
    path = directory / "rules.rules"
    path.write_text(synthetic.render_rules(workload), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------
# Building the contenders
# ---------------------------------------------------------------------------------------


def nba_contenders(workload: synthetic.Workload) -> tuple[list[dict], float]:
    """The two nba contenders and the load time of the ruleset."""
    from nba.engine import Engine
    from nba.engine.state import CustomerState

    with tempfile.TemporaryDirectory(prefix="nba-bench-") as tmp:
        path = write_rules(workload, Path(tmp))
        started = time.perf_counter()
        engine = Engine.from_path(str(path))
        load_s = time.perf_counter() - started
    from nba.engine import procedure  # the twin the Engine uses

    ruleset = engine.ruleset

    def evaluate(event, state):
        choices = procedure.evaluate(ruleset, event, state).choices
        return choices[0].action if choices else None

    states = {cid: CustomerState(profile=p, history={}, contacts=[]) for cid, p in workload.profiles.items()}
    for customer_id, profile in workload.profiles.items():
        engine.put_profile(customer_id, profile)

    def decide(event):
        return engine.decide(event).action

    return [
        {
            "contender": NBA_EVAL,
            "version": _nba_version(),
            "build_s": load_s,
            "decide": evaluate,
            "inputs": [(e, states[e["customer_id"]]) for e in workload.events],
        },
        {
            "contender": NBA_DECIDE,
            "version": _nba_version(),
            "build_s": load_s,
            "decide": decide,
            "inputs": [(e,) for e in workload.events],
        },
    ], load_s


def _nba_version() -> str:
    return peers.package_version("nba") or "work tree"


def other_contenders(wanted: set[str] | None, with_peers: bool) -> list[tuple[str, str | None, Callable]]:
    """(label, version, build) of the reference and, if asked, every peer variant."""
    reference = peers.reference_module()
    out = [(reference.name, reference.version, reference.build)]
    if not with_peers:
        return out
    for module in peers.peer_modules():
        if wanted is not None and module.name not in wanted:
            continue
        for label, build in getattr(module, "variants", {module.name: module.build}).items():
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


def built(label: str, version: str | None, build: Callable, workload: synthetic.Workload, earlier_builds: dict) -> dict:
    """A contender ready to run, or a row with a note saying why it is not."""
    row: dict = {"contender": label, "version": version}
    if version is None:
        return {**row, "note": "not installed"}
    n = len(workload.rules)
    earlier = earlier_builds.get(label)
    if earlier and earlier[1] * n / earlier[0] > BUILD_LIMIT_SECONDS:
        estimate = earlier[1] * n / earlier[0]
        return {
            **row,
            "note": f"skipped: building would take about {estimate:.0f} s ({earlier[1]:.1f} s at {earlier[0]:,} rules)",
        }
    started = time.perf_counter()
    try:
        decide = build_with_limit(build, workload, BUILD_LIMIT_SECONDS)
    except BuildTooSlow:
        return {**row, "note": f"skipped: building took over {BUILD_LIMIT_SECONDS:.0f} s"}
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return {**row, "note": f"build failed: {type(exc).__name__}: {exc}"}
    row["build_s"] = time.perf_counter() - started
    row["decide"] = decide
    row["inputs"] = workload.pairs()
    return row


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def run(
    rules: int,
    events: int,
    seed: int,
    budget: float,
    with_peers: bool,
    wanted: set[str] | None,
    earlier_builds: dict,
    with_nba: bool = True,
) -> dict:
    workload = synthetic.generate(rules, events, seed)
    expected = synthetic.expected_actions(workload)
    out: dict = {
        "rules": rules,
        "event_types": len(workload.event_types),
        "events": len(workload.events),
        "match_rate": sum(1 for a in expected if a is not None) / len(expected),
    }
    contenders: list[dict] = []
    if with_nba:
        try:
            contenders, out["load_s"] = nba_contenders(workload)
        except Exception as exc:  # noqa: BLE001 - nba broken or missing: the others are still measured
            contenders = [{"contender": "nba", "version": None, "note": f"failed: {type(exc).__name__}: {exc}"}]
    out["twin"] = loaded_twin()
    for label, version, build in other_contenders(wanted, with_peers):
        contenders.append(built(label, version, build, workload, earlier_builds))
    runnable = [c for c in contenders if "decide" in c]
    freeze_loaded()
    measured = measure_interleaved(
        [(c["contender"], c["decide"], c["inputs"]) for c in runnable], budget_seconds=budget
    )
    rows = []
    for contender in contenders:
        row = {k: v for k, v in contender.items() if k not in ("decide", "inputs")}
        outcome = measured.get(contender["contender"])
        if isinstance(outcome, Exception):
            row["note"] = f"failed on its first call: {type(outcome).__name__}: {outcome}"
        elif outcome is not None:
            measurement, results = outcome
            row.update(measurement.as_dict())
            wrong = [i for i, (got, want) in enumerate(zip(results, expected)) if got != want]
            row["mismatches"] = len(wrong)
            if wrong:
                row["first_mismatches"] = [{"event": i, "got": results[i], "expected": expected[i]} for i in wrong[:3]]
        rows.append(row)
    out["rows"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval_worker")
    parser.add_argument("--rules", type=int, required=True)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per contender")
    parser.add_argument("--peers", default=None, help="'all' or comma-separated peer names")
    parser.add_argument("--no-nba", action="store_true", help="leave nba out")
    parser.add_argument(
        "--earlier-builds", default="{}", help="JSON: label -> [rules, build seconds] at a smaller size"
    )
    args = parser.parse_args(argv)
    wanted = None if args.peers in (None, "all") else set(args.peers.split(","))
    try:
        result = run(
            args.rules,
            args.events,
            args.seed,
            args.budget,
            args.peers is not None,
            wanted,
            json.loads(args.earlier_builds),
            with_nba=not args.no_nba,
        )
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which prints it in the table
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
