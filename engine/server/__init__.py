"""`nba serve`: the engine behind the socket protocol (docs/server.md, docs/security.md).

One process runs one asyncio event loop (uvloop when it can be imported) with one
asyncio protocol (``Connection``) per connection. With the in-memory store a decision is
pure CPU work, so requests are answered inline, in order, and every response of one read
goes out in one write. With Redis many decisions wait on Redis at once (at most
``--max-concurrency``), each carried on by the store's callbacks (``Engine.decide_map_then``)
rather than by a task; requests of one customer on one connection still run one after
another, in order.
``--workers N`` starts N such processes bound to one port with SO_REUSEPORT.

The modules, one job each:

- ``config``: ``ServeConfig``, what one `nba serve` runs (path, store, settings, factory)
- ``cli``: the `nba serve` options -> ``ServeConfig``; ``__main__``: ``python -m nba.engine.server``
- ``run``: ``run(config)`` / ``run_server(...)``, one process or a supervisor
- ``process``: one serving process (engine, server, signals)
- ``supervisor``: the parent of ``--workers N``
- ``lifecycle``: ``Server``, listening, connections, limits, graceful stop
- ``connection``: ``Connection``, one client: frames, auth, limits, answers
- ``dispatch``: ``Dispatcher``, the ops against the engine
- ``reloading``: reload on `reload`, SIGHUP and --watch
- ``security``: protected mode, tokens and roles, TLS
- ``stats``, ``metrics``, ``logs``, ``memory``, ``sockets``: counters, Prometheus, logging,
  returning memory, sockets and loops

The request format and its validation are in ``engine.protocol``.
"""

from nba.engine.server.cli import add_arguments, main, serve_main
from nba.engine.server.config import ServeConfig
from nba.engine.server.connection import Connection
from nba.engine.server.lifecycle import Server
from nba.engine.server.run import run, run_server
from nba.engine.server.sockets import bind_socket, new_event_loop
from nba.engine.server.stats import LATENCY_BUCKETS, LATENCY_SAMPLES, ServerStats

__all__ = [
    "LATENCY_BUCKETS",
    "LATENCY_SAMPLES",
    "Connection",
    "Server",
    "ServeConfig",
    "ServerStats",
    "add_arguments",
    "bind_socket",
    "main",
    "new_event_loop",
    "run",
    "run_server",
    "serve_main",
]
