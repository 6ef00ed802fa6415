"""The options of `nba consume` and its entry point."""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_LOAD = 2
STATE_BUDGET_S = 0.5  # the state read's budget: a consumer waits for Redis rather than decide without state
WRITE_TIMEOUT_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nba.engine.stream.consumer import ConsumeSettings

    defaults = ConsumeSettings(streams=[])
    parser.add_argument("rules", help="a .rules file or a directory of them")
    parser.add_argument(
        "--redis", metavar="URL", required=True, help="redis:// or rediss:// URL (any node of a cluster)"
    )
    parser.add_argument(
        "--stream",
        metavar="NAME",
        action="append",
        required=True,
        help="the input stream (give it again for more streams)",
    )
    parser.add_argument("--group", default=defaults.group, help="the consumer group (default %(default)s)")
    parser.add_argument("--consumer", metavar="NAME", help="this consumer's name (default HOST-PID)")
    parser.add_argument(
        "--out",
        metavar="NAME",
        action="append",
        help="the output stream (default STREAM:decisions); once for all streams, or once per --stream",
    )
    parser.add_argument("--count", type=int, default=defaults.count, help="entries per read (default %(default)s)")
    parser.add_argument(
        "--block-ms",
        type=int,
        default=defaults.block_ms,
        help="how long a read waits for new entries (default %(default)s)",
    )
    parser.add_argument(
        "--claim-idle-ms",
        type=int,
        default=defaults.claim_idle_ms,
        help="claim entries pending this long at another consumer (default %(default)s)",
    )
    parser.add_argument(
        "--max-deliveries",
        type=int,
        default=defaults.max_deliveries,
        help="an entry delivered more often goes to STREAM:dead (default %(default)s)",
    )
    parser.add_argument(
        "--record-ttl",
        type=float,
        default=defaults.record_ttl_s,
        metavar="SECONDS",
        help="how long an entry's idempotency record is kept (default %(default)s)",
    )
    parser.add_argument("--out-maxlen", type=int, metavar="N", help="trim the output stream to about N entries")
    parser.add_argument(
        "--max-event-ahead",
        type=float,
        default=None,
        metavar="SECONDS",
        help="refuse events whose time is further ahead of the clock (default: the engine's, 300)",
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    parser.add_argument("--metrics-host", default=defaults.metrics_host)
    parser.add_argument(
        "--stats-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="print a stats line on stderr this often (default: only at the end)",
    )


def consume_main(args: argparse.Namespace) -> int:
    from nba.engine import Engine
    from nba.engine.cli import load_or_report
    from nba.engine.store import open_store
    from nba.engine.stream.consumer import Consumer, ConsumeSettings, default_consumer_name

    if args.out and len(args.out) not in (1, len(args.stream)):
        print("nba consume: give --out once, or once per --stream", file=sys.stderr)
        return EXIT_LOAD
    for name in ("count", "block_ms", "claim_idle_ms", "max_deliveries"):
        if getattr(args, name) < (0 if name == "block_ms" else 1):
            print(f"nba consume: --{name.replace('_', '-')} is too small", file=sys.stderr)
            return EXIT_LOAD
    if args.record_ttl * 1000 < args.claim_idle_ms * 2:
        print("nba consume: --record-ttl must be at least twice --claim-idle-ms", file=sys.stderr)
        return EXIT_LOAD
    logging.basicConfig(level=logging.INFO, format="%(asctime)s nba consume %(levelname)s %(message)s")
    ruleset = load_or_report(args.rules)
    if ruleset is None:
        return EXIT_LOAD
    store = open_store(
        args.redis, latency_budget_s=STATE_BUDGET_S, write_timeout_s=WRITE_TIMEOUT_S, connect_timeout_s=1.0
    )
    ahead = {} if args.max_event_ahead is None else {"max_event_ahead_s": args.max_event_ahead}
    engine = Engine(ruleset, store, path=args.rules, **ahead)
    settings = ConsumeSettings(
        streams=args.stream,
        group=args.group,
        consumer=args.consumer or default_consumer_name(),
        outs=args.out,
        count=args.count,
        block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms,
        max_deliveries=args.max_deliveries,
        record_ttl_s=args.record_ttl,
        out_maxlen=args.out_maxlen,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        stats_every_s=args.stats_every,
    )
    try:
        return Consumer(engine, settings, args.redis).run()
    finally:
        engine.close()
