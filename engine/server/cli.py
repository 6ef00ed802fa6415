"""The options of `nba serve` and ``python -m nba.engine.server``: arguments -> ServeConfig."""

from __future__ import annotations

import argparse
import sys

from nba.engine.server.config import ServeConfig
from nba.engine.settings import ServerSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `nba serve` (docs/server.md and docs/security.md describe them)."""
    d = ServerSettings()
    parser.add_argument("rules", help="a .rules file or a directory of them")
    parser.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host})")
    parser.add_argument("--port", type=int, default=d.port, help=f"0: any free port (logged); default {d.port}")
    parser.add_argument("--redis", metavar="URL", help="redis:// or rediss:// URL (default: in-memory store)")
    parser.add_argument("--workers", type=int, default=d.workers, help="processes sharing the port")
    parser.add_argument("--watch", action="store_true", help="reload when a .rules file changes")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-frame-bytes",
        type=int,
        default=d.max_frame_bytes,
        help=f"longest frame accepted (default {d.max_frame_bytes})",
    )
    limits.add_argument(
        "--max-in-flight",
        type=int,
        default=d.max_in_flight,
        help=f"unanswered requests per connection before it is not read (default {d.max_in_flight})",
    )
    limits.add_argument(
        "--max-concurrency",
        type=int,
        default=d.max_concurrency,
        help=f"with Redis: requests at the store at once, over all connections (default {d.max_concurrency})",
    )
    limits.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout_s,
        metavar="SECONDS",
        help=f"close a connection silent this long (default {d.idle_timeout_s:g})",
    )
    limits.add_argument(
        "--frame-timeout",
        type=float,
        default=d.frame_timeout_s,
        metavar="SECONDS",
        help=f"a frame begun must be whole within this (default {d.frame_timeout_s:g})",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help=f"open connections; past it new ones are refused (default {d.max_connections})",
    )
    limits.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=d.max_buffered_bytes,
        help=f"bytes of unfinished frames over all connections (default {d.max_buffered_bytes})",
    )
    limits.add_argument(
        "--backlog",
        type=int,
        default=d.backlog,
        help=f"the listen queue of connections not yet accepted (default {d.backlog})",
    )
    security = parser.add_argument_group("security (docs/security.md)")
    security.add_argument(
        "--auth",
        metavar="FILE",
        help="lines of 'ROLE TOKEN' (client or admin); without it only loopback clients are answered",
    )
    security.add_argument("--tls-cert", metavar="FILE", help="TLS certificate chain (PEM)")
    security.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM)")
    security.add_argument("--tls-client-ca", metavar="FILE", help="require client certificates signed by this CA")


def settings_from(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        host=args.host,
        port=args.port,
        workers=args.workers,
        watch=args.watch,
        metrics_port=args.metrics_port,
        max_frame_bytes=args.max_frame_bytes,
        max_in_flight=args.max_in_flight,
        max_concurrency=args.max_concurrency,
        idle_timeout_s=args.idle_timeout,
        frame_timeout_s=args.frame_timeout,
        max_connections=args.max_connections,
        max_buffered_bytes=args.max_buffered_bytes,
        backlog=args.backlog,
        auth_file=args.auth,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )


def serve_main(args: argparse.Namespace) -> int:
    """Run `nba serve` from parsed arguments (see ``add_arguments``); returns the exit code."""
    from pydantic import ValidationError

    from nba.engine.server.run import run

    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"nba serve: bad settings:\n{exc}", file=sys.stderr)
        return 2
    return run(ServeConfig(args.rules, settings, redis_url=args.redis))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nba serve", description="Serve the engine over TCP.")
    add_arguments(parser)
    return serve_main(parser.parse_args(argv))
