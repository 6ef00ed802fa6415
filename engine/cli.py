"""The ``nba`` command: check, decide, replay, test, serve, consume, lsp and bench (INTERFACES.md)."""

from __future__ import annotations

import argparse
import json
import math
import sys

from nba.dsl import LoadError, load_ruleset
from nba.engine.jsontext import dumps

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_LOAD = 2
REPLAY_BUDGET_S = 0.05  # `nba replay --redis`: the state read's latency budget (a URL's ?latency_budget_ms= wins)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # the benchmarks parse their own options
        return run_bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_LOAD
    try:
        return args.run(args)
    except BrokenPipeError:  # `nba replay ... | head`
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nba", description="The real-time next-best-action engine.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="load a ruleset and print every error")
    check.add_argument("rules", help="a .rules file or a directory of them")
    check.add_argument("--lint", action="store_true", help="also print the warnings of `nba lint`")
    check.set_defaults(run=run_check)

    lint = commands.add_parser("lint", help="static analysis: rules that never match, shadowed rules, ...")
    lint.add_argument("rules", help="a .rules file or a directory of them")
    lint.add_argument(
        "--at", metavar="TIME", help="the time `expired` compares with (RFC 3339 or epoch seconds; default now)"
    )
    lint.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or a JSON list")
    lint.set_defaults(run=run_lint)

    decide = commands.add_parser("decide", help="one decision on a fresh in-memory store")
    decide.add_argument("rules")
    decide.add_argument("--event", required=True, metavar="JSON", help="the event, a JSON object")
    decide.add_argument("--profile", metavar="JSON", help="the customer's profile, a JSON object")
    add_decision_options(decide)
    decide.add_argument(
        "--json", action="store_true", help="JSON even on a terminal (where --explain prints a readable tree)"
    )
    decide.set_defaults(run=run_decide)

    replay = commands.add_parser("replay", help="decide every event of a JSONL file, in order")
    replay.add_argument("rules")
    replay.add_argument("events", help="a JSONL file of events ('-': standard input)")
    replay.add_argument("--profiles", metavar="PROFILES.jsonl", help="profiles, each with a customer_id")
    replay.add_argument("--redis", metavar="URL", help="decide on Redis instead of a fresh in-memory store")
    replay.add_argument("--dry-run", action="store_true", help="record nothing")
    replay.add_argument("--quiet", action="store_true", help="no summary and no progress bar on stderr")
    replay.add_argument(
        "--report", metavar="FILE.html", help="also write the replay's report: one self-contained HTML page with charts"
    )
    replay.add_argument(
        "--no-coverage",
        action="store_true",
        help="leave out the summary's coverage (what each rule did and which condition kept it out); faster",
    )
    add_decision_options(replay)
    replay.set_defaults(run=run_replay)

    test = commands.add_parser("test", help="run the ruleset's own test cases (*.test.toml)")
    test.add_argument("rules")
    test.set_defaults(run=run_test)

    serve = commands.add_parser("serve", help="serve the engine over TCP (msgpack frames)")
    from nba.engine.server import add_arguments

    add_arguments(serve)
    serve.set_defaults(run=run_serve)

    consume = commands.add_parser("consume", help="decide the events of Redis streams as a consumer group member")
    from nba.engine.stream.command import add_arguments as add_consume_arguments
    from nba.engine.stream.command import consume_main

    add_consume_arguments(consume)
    consume.set_defaults(run=consume_main)

    lsp = commands.add_parser("lsp", help="a language server for .rules files over stdio (docs/editors.md)")
    lsp.set_defaults(run=run_lsp)

    commands.add_parser("bench", help="run the benchmarks (nba bench --help)")
    return parser


def add_decision_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=1, help="how many actions to choose (default 1)")
    parser.add_argument("--explain", action="store_true", help="add the trace of every rule considered")


# ---- check -----------------------------------------------------------------------------


def load_or_report(path: str):
    """The compiled ruleset, or None after printing every error as `nba check` does."""
    try:
        return load_ruleset(path)
    except LoadError as exc:
        print(exc.report(), file=sys.stderr)
        count = len(exc.diagnostics)
        print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return None


def run_check(args) -> int:
    if args.lint:
        return run_lint(args, checking=True)
    ruleset = load_or_report(args.rules)
    if ruleset is None:
        return EXIT_FAILED
    types = sorted(t for t in ruleset.buckets if t is not None)
    print(
        f"{args.rules}: ok: {len(ruleset.rules)} rules in {len(ruleset.paths)} files, "
        f"{len(ruleset.policies)} policies, indexed by {len(types)} event type{'' if len(types) == 1 else 's'}"
        + (", with a default" if ruleset.default else "")
    )
    return EXIT_OK


# ---- lint ------------------------------------------------------------------------------


def run_lint(args, checking: bool = False) -> int:
    """`nba lint`: exit 0 with no warning, 1 with warnings, 2 when the ruleset does not load.
    `nba check --lint`: the errors, or the warnings; exit 1 for either, as `check` does."""
    from nba.dsl.lint import format_json, format_text, lint_path

    at = None
    if getattr(args, "at", None) is not None:
        at = lint_time(args.at)
        if at is None:
            print(
                f"--at: `{args.at}` is not a time (write 2026-11-27, 2026-11-27T09:30:00Z or epoch seconds)",
                file=sys.stderr,
            )
            return EXIT_LOAD
    try:
        warnings, sources = lint_path(args.rules, at)
    except LoadError as exc:
        print(exc.report(), file=sys.stderr)
        count = len(exc.diagnostics)
        print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_FAILED if checking else EXIT_LOAD
    if getattr(args, "format", "text") == "json":
        print(format_json(warnings))
    elif warnings:
        print(format_text(warnings, sources))
    count = len(warnings)
    summary = f"{count} warning{'s' if count != 1 else ''}"
    print(f"{args.rules}: ok, {summary}" if checking else summary, file=sys.stderr)
    return EXIT_FAILED if warnings else EXIT_OK


def lint_time(text: str) -> float | None:
    """`--at`: an RFC 3339 time or finite epoch seconds; None for anything else."""
    from nba.dsl.runtime import parse_time

    at = parse_time(text)
    if at is None:
        try:
            at = float(text)
        except ValueError:
            return None
    return at if math.isfinite(at) else None


# ---- decide ----------------------------------------------------------------------------


def parse_json_object(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def run_decide(args) -> int:
    from nba.engine import Engine, EngineError

    ruleset = load_or_report(args.rules)
    if ruleset is None:
        return EXIT_LOAD
    engine = Engine(ruleset, path=args.rules, max_event_ahead_s=None)  # a fresh store: any time
    try:
        event = parse_json_object(args.event, "--event")
        if args.profile is not None:
            engine.put_profile(event.get("customer_id"), parse_json_object(args.profile, "--profile"))
        decision = engine.decide(event, limit=args.limit, explain=args.explain)
    except (ValueError, EngineError) as exc:
        print(json.dumps({"error": str(exc)}))
        return EXIT_FAILED
    if args.explain and sys.stdout.isatty() and not args.json:
        from nba.engine.explain_view import render

        sys.stdout.write(render(decision.to_dict()))
    else:
        print(dumps(decision.to_dict(), indent=2))
    return EXIT_OK


# ---- replay ----------------------------------------------------------------------------


def run_replay(args) -> int:
    from nba.engine import Engine
    from nba.engine.replay import replay

    ruleset = load_or_report(args.rules)
    if ruleset is None:
        return EXIT_LOAD
    if args.redis:
        from nba.engine.store import StoreUnavailable, open_store

        try:  # A replay is a batch: give Redis time to answer rather than deciding without state.
            store = open_store(args.redis, latency_budget_s=REPLAY_BUDGET_S)
        except (StoreUnavailable, ValueError) as error:  # refused (RedisAccessDenied), a bad URL
            print(f"nba replay: {error}", file=sys.stderr)
            return EXIT_LOAD
        engine = Engine(ruleset, store, path=args.rules, max_event_ahead_s=None)  # replay runs on the events' own times
    else:
        engine = Engine(ruleset, path=args.rules, max_event_ahead_s=None)
    try:
        return replay(
            engine,
            args.events,
            sys.stdout,
            sys.stderr,
            profiles=args.profiles,
            limit=args.limit,
            explain=args.explain,
            dry_run=getattr(args, "dry_run", False),
            quiet=args.quiet,
            coverage=not args.no_coverage,
            report=args.report,
            rules_path=args.rules,
        )
    finally:
        engine.close()


# ---- bench ----------------------------------------------------------------------------


def run_bench(argv: list[str]) -> int:
    """``nba bench``: the benchmarks live in the source checkout's benchmarks/ folder, which
    is not installed (the product never imports its benchmarks); they run from there."""
    import importlib
    import os

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(checkout, "benchmarks", "cli.py")):
        print(
            "nba bench: the benchmarks are not installed with the package; run them from a source "
            "checkout (pip install -e . there, then nba bench, or python -m benchmarks)",
            file=sys.stderr,
        )
        return EXIT_LOAD
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    return importlib.import_module("benchmarks.cli").main(argv)


# ---- test, serve -----------------------------------------------------------------------


def run_test(args) -> int:
    from nba.engine.ruletests import run_tests

    return run_tests(args.rules)


def run_serve(args) -> int:
    from nba.engine.server import serve_main

    return serve_main(args)


def run_lsp(args) -> int:
    from nba.engine.lsp import main as lsp_main

    return lsp_main()


if __name__ == "__main__":
    sys.exit(main())
