"""What one `nba serve` runs: the ruleset's path, the store, the settings, the engine factory.

One ``ServeConfig`` goes from the command line (or ``run_server``) through the worker
supervisor to every process (it is picklable: ``engine_factory`` must be a module-level
function), instead of five arguments through four functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from nba.engine.settings import ServerSettings

EngineFactory = Callable[[str, "str | None"], Any]


def default_engine_factory(rules_path: str, redis_url: str | None) -> Any:
    from nba.engine import Engine

    return Engine.from_path(rules_path, redis_url=redis_url)


@dataclass(frozen=True)
class ServeConfig:
    rules_path: str
    settings: ServerSettings = field(default_factory=ServerSettings)
    redis_url: str | None = None
    # engine_factory(rules_path, redis_url) builds the engine (default: Engine.from_path)
    engine_factory: EngineFactory | None = None
    # call the engine inline (True) or its *_async methods from tasks (False); None: inline
    # when there is no Redis
    blocking: bool | None = None

    @property
    def inline(self) -> bool:
        return (self.redis_url is None) if self.blocking is None else self.blocking

    @property
    def store(self) -> str:
        return "redis" if self.redis_url else "memory"

    def build_engine(self) -> Any:
        return (self.engine_factory or default_engine_factory)(self.rules_path, self.redis_url)

    def replace(self, **changes) -> "ServeConfig":
        from dataclasses import replace

        return replace(self, **changes)
