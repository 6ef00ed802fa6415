"""Entry point of a whole `nba serve`: one process, or a supervisor of N workers."""

from __future__ import annotations

from nba.engine.server.config import EngineFactory, ServeConfig
from nba.engine.server.logs import configure_logging
from nba.engine.server.process import run_process
from nba.engine.server.supervisor import run_workers
from nba.engine.settings import ServerSettings


def run(config: ServeConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop, 1 when
    it cannot listen, 2 when the ruleset or the auth file does not load at start)."""
    configure_logging()
    if config.settings.workers > 1:
        return run_workers(config)
    return run_process(config)


def run_server(
    rules_path: str,
    settings: ServerSettings | None = None,
    redis_url: str | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    blocking: bool | None = None,
) -> int:
    """``run(ServeConfig(...))`` with its fields as arguments."""
    return run(ServeConfig(rules_path, settings or ServerSettings(), redis_url, engine_factory, blocking))
