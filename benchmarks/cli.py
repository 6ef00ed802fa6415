"""`nba bench`: run the benchmarks and optionally write benchmarks/RESULTS.md.

    nba bench eval [--rules 10,100,1000,10000] [--events N] [--peers zen-engine,...]
    nba bench history [--customers N] [--past N] [--decisions N]
    nba bench compile [--rules 100,1000,10000]   (ruleset parse, check, compile)
    nba bench load [--rates 1000,2000,...] [--targets floor,workers1,workers2,memory]   (open-loop, on Redis)
    nba bench lsp [--rules 1000] [--edits 40]   (didChange -> publishDiagnostics of `nba lsp`)
    nba bench lint [--rules 100,1000]
    nba bench redis ... / nba bench server ... / nba bench consume ...   (benchmarks.bench_redis / ...)
    nba bench redis-cost ...   (what a decision costs redis-server: CPU, commands, round trips)
    nba bench server-ticks ...   (the server's CPU, system calls, instructions per decision, closed loop)
    nba bench all [--quick] [--write-results]

``--quick`` is a fast smoke run; ``--write-results`` writes RESULTS.md with the machine,
the versions, the exact command and the tables of this run. Each benchmark module has
``add_arguments(parser)`` and ``run(args) -> {"title", "markdown", "data"}``; the redis and
server ones are imported only when asked for (or by ``all``), and a module without ``run``
is handed its arguments through its ``main(argv)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from benchmarks.noise import noise_floor
from benchmarks.report import write_results

BENCHMARKS = {
    "eval": "benchmarks.bench_eval",
    "history": "benchmarks.bench_history",
    "compile": "benchmarks.bench_compile",
    "load": "benchmarks.bench_load",
    "redis": "benchmarks.bench_redis",
    "server": "benchmarks.bench_server",
    "lsp": "benchmarks.bench_lsp",
    "lint": "benchmarks.bench_lint",
    "consume": "benchmarks.bench_consume",
    "soak": "benchmarks.bench_soak",
    "held-frames": "benchmarks.bench_held_frames",
    "redis-cost": "benchmarks.redis_cost",
    "server-ticks": "benchmarks.server_ticks",
}
ALL = ("eval", "history", "compile", "redis", "server", "load")


def load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(BENCHMARKS[name])
    except ImportError as exc:
        if exc.name == BENCHMARKS[name]:
            return None  # not written (yet)
        raise


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--quick", action="store_true", help="a fast smoke run")
    sub.add_argument("--write-results", action="store_true", help="write benchmarks/RESULTS.md")


def parser(command: str, module: ModuleType | None) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nba bench", description="nba's benchmarks")
    commands = top.add_subparsers(dest="command", required=True)
    for name in BENCHMARKS:
        sub = commands.add_parser(name)
        _common(sub)
        if name == command and module is not None and hasattr(module, "add_arguments"):
            module.add_arguments(sub)
    _common(commands.add_parser("all", help="every benchmark, one after the other"))
    return top


def run_all(quick: bool) -> list[dict]:
    sections = []
    for name in ALL:
        module = load(name)
        if module is None or not hasattr(module, "run"):
            print(f"\n(nba bench {name}: not available, skipped)", flush=True)
            continue
        print(f"\n# {name}", flush=True)
        try:
            sections.append(module.run(argparse.Namespace(quick=quick)))
        except Exception as exc:  # noqa: BLE001 - one benchmark failing (no Redis, say) does not stop the others
            print(f"(nba bench {name} failed: {type(exc).__name__}: {exc})", flush=True)
            sections.append({"title": name, "markdown": f"Failed: {type(exc).__name__}: {exc}"})
    return sections


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    module = load(command) if command in BENCHMARKS else None
    if command in BENCHMARKS and module is None:
        print(f"nba bench {command}: not available ({BENCHMARKS[command]} is missing)", file=sys.stderr)
        return 2
    if module is not None and not hasattr(module, "run"):
        return module.main(argv[1:]) or 0
    args = parser(command, module).parse_args(argv)
    floor = noise_floor()
    print(f"\n# {floor['title']}\n{floor['markdown']}", flush=True)
    sections = [floor] + (run_all(args.quick) if args.command == "all" else [module.run(args)])
    if args.write_results:
        path = write_results(sections, argv)
        print(f"\nwrote {path}")
    return 0
