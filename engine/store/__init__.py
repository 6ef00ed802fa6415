"""Where customers' state lives: in this process (``MemoryStore``) or in Redis (``RedisStore``)."""

from __future__ import annotations

from nba.engine.store.interface import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable", "open_store"]

MEMORY_OPTIONS = ("max_events_per_type", "max_contacts")  # the others only mean something for Redis


def open_store(redis_url: str | None = None, **options) -> Store:
    """The in-memory store when ``redis_url`` is None or empty, else a ``RedisStore`` on it.

    A ``redis://`` or ``rediss://`` URL of a single server or of any node of a Redis
    Cluster (found out on connecting). ``options`` go to ``RedisStore``
    (``latency_budget_s``, ``write_timeout_s``, ``key_prefix``, ``profile_ttl_s``, ...).
    """
    if not redis_url:
        from nba.engine.store.memory import MemoryStore

        return MemoryStore(**{name: options[name] for name in MEMORY_OPTIONS if name in options})
    from nba.engine.store.redis import RedisStore

    return RedisStore(redis_url, **options)
