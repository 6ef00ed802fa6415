"""`nba bench`: run the benchmarks and optionally write benchmarks/RESULTS.md.

    nba bench eval [--rules 10,100,1000,10000] [--events N] [--peers zen-engine,...]
    nba bench history [--customers N] [--decisions N]
    nba bench load [--rules 100,1000,10000]
    nba bench redis ... / nba bench server ...   (benchmarks.bench_redis / bench_server)
    nba bench all [--quick] [--write-results]

``--quick`` is a smoke run of a few seconds; ``--write-results`` writes RESULTS.md with the
machine, the versions, the exact command and the tables of this run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from benchmarks import bench_eval, bench_history, bench_load
from benchmarks.report import write_results

OWN = {"eval": bench_eval, "history": bench_history, "load": bench_load}
OTHERS = {"redis": "benchmarks.bench_redis", "server": "benchmarks.bench_server"}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nba bench", description="nba's benchmarks")
    commands = top.add_subparsers(dest="command", required=True)
    for name, module in OWN.items():
        sub = commands.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        _common(sub)
        module.add_arguments(sub)
    every = commands.add_parser("all", help="eval, history and load (and redis and server when present)")
    _common(every)
    return top


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--quick", action="store_true", help="a fast smoke run")
    sub.add_argument("--write-results", action="store_true", help="write benchmarks/RESULTS.md")


def _delegate(name: str, argv: list[str]) -> int:
    """Hand the command to a benchmark written elsewhere (imported only when asked for)."""
    try:
        module = importlib.import_module(OTHERS[name])
    except ImportError as exc:
        print(f"nba bench {name}: not available ({exc})", file=sys.stderr)
        return 2
    return module.main(argv) or 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in OTHERS:
        return _delegate(argv[0], argv[1:])
    args = parser().parse_args(argv)
    if args.command == "all":
        sections = []
        for module in OWN.values():
            defaults = argparse.Namespace(quick=args.quick)
            sections.append(module.run(defaults))
        for name in OTHERS:
            _run_other_for_all(name, args.quick)
    else:
        sections = [OWN[args.command].run(args)]
    if args.write_results:
        path = write_results(sections, argv)
        print(f"\nwrote {path}")
    return 0


def _run_other_for_all(name: str, quick: bool) -> None:
    try:
        module = importlib.import_module(OTHERS[name])
    except ImportError:
        print(f"\n(nba bench {name}: not available, skipped)")
        return
    print(f"\n# {name}", flush=True)
    try:
        module.main(["--quick"] if quick else [])
    except Exception as exc:  # one benchmark failing (no Redis, say) does not stop the others
        print(f"(nba bench {name} failed: {type(exc).__name__}: {exc})")
