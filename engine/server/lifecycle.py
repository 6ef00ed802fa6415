"""The server of one process: listens, tracks connections and their limits, runs the
requests that wait for the store, and stops gracefully."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from typing import Any

from nba.engine.server.connection import Connection
from nba.engine.server.dispatch import Dispatcher
from nba.engine.server.logs import LogLimiter, log
from nba.engine.server.memory import MemoryTrimmer
from nba.engine.server.metrics import start_metrics
from nba.engine.server.reloading import Reloader, rules_signature
from nba.engine.server.security import Tokens, load_tokens, server_tls_context
from nba.engine.server.sockets import bind_socket
from nba.engine.server.stats import ServerStats
from nba.engine.settings import ServerSettings

FDS_KEPT = 64  # descriptors left for everything but client connections (files, Redis, metrics)


def connection_limit(wanted: int) -> int:
    """``wanted``, or fewer when the process may not open that many descriptors: past the
    open-file limit, accept() would fail and the client would get no clear refusal."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY or wanted <= soft - FDS_KEPT:
        return wanted
    usable = max(1, soft - FDS_KEPT)
    log.warning("max_connections %d is over what the open-file limit (%d) allows: %d", wanted, soft, usable)
    return usable


class Server:
    """Listens, tracks connections, reloads, and stops gracefully. One per process.

    ``tokens``: the `--auth` tokens (default: read from ``settings.auth_file`` when set).
    """

    def __init__(
        self,
        engine: Any,
        settings: ServerSettings,
        *,
        rules_path: str | None = None,
        blocking: bool = True,
        store: str = "memory",
        worker: int | None = None,
        notify_parent_on_reload: bool = False,
        tokens: Tokens | None = None,
    ):
        self.engine = engine
        self.settings = settings
        self.rules_path = rules_path
        self.store = store
        self.worker = worker
        if tokens is None and settings.auth_file is not None:
            tokens = load_tokens(settings.auth_file)
        self.tokens = tokens
        self.stats = ServerStats(histogram=settings.metrics_port is not None)
        self.limiter = LogLimiter()
        self.dispatcher = Dispatcher(self, engine, blocking)
        self.reloader = Reloader(self, rules_path, notify_parent_on_reload)
        self.connections: set[Connection] = set()
        self.max_connections = connection_limit(settings.max_connections)
        self.buffered_bytes = 0  # bytes of unfinished frames over all connections
        self.stopping = False
        self.address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._active = 0  # requests started and not yet answered (at most max_concurrency)
        self._max_concurrency = settings.max_concurrency
        self._backlog: deque = deque()  # (connection, request, started) waiting for one to end
        self._ready: deque = deque()  # (connection, request, started) to start now (see _run)
        self._starting = False
        self._metrics_http = None
        self._stopped: asyncio.Event | None = None
        self._trimmer = MemoryTrimmer()

    # -- life cycle

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        settings = self.settings
        self._stopped = asyncio.Event()
        tls = None
        if settings.tls_cert is not None:
            tls = server_tls_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        if sock is None:
            sock = bind_socket(settings.host, settings.port, reuse_port=False)
        # create_server(sock=...) calls listen() itself, with its own default backlog (100)
        # unless told: the backlog goes there.
        self._server = await loop.create_server(
            lambda: Connection(self),
            sock=sock,
            backlog=settings.backlog,
            ssl=tls,
        )
        self.address = sock.getsockname()[:2]
        self._background.append(loop.create_task(self._sweep()))
        if self.worker is not None:
            self._background.append(loop.create_task(self._watch_parent(os.getppid())))
        if settings.watch and self.rules_path is not None:
            baseline = rules_signature(self.rules_path)  # before start() returns: no change can slip by
            self._background.append(loop.create_task(self.reloader.watch(baseline, settings.watch_interval_s)))
        if settings.metrics_port is not None:
            port = settings.metrics_port
            if port and self.worker:
                port += self.worker  # worker i serves its metrics on metrics_port + i
            self._metrics_http = start_metrics(self, settings.host, port)
            self.metrics_address = self._metrics_http.server_address[:2]
        return self.address

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        """Begin a graceful stop (from a signal handler or another task)."""
        if not self.stopping:
            asyncio.get_running_loop().create_task(self.stop())

    async def stop(self) -> None:
        """Stop accepting, answer every request already started, close, return."""
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        in_flight = sum(conn.in_flight for conn in self.connections)
        log.info("stopping: %d connections, %d requests in flight", len(self.connections), in_flight)
        self._server.close()
        for task in self._background:
            task.cancel()
        closing = [conn.shutdown() for conn in list(self.connections)]
        if closing:
            _, pending = await asyncio.wait(closing, timeout=self.settings.drain_timeout_s)
            if pending:
                log.warning(
                    "%d connections still busy after %.1f s; closing them", len(pending), self.settings.drain_timeout_s
                )
                for conn in list(self.connections):
                    conn.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self.reloader.close()
        self._trimmer.cancel()
        log.info("stopped")
        self._stopped.set()

    # -- requests that wait for the store

    def submit(self, conn: Connection, req, started: float) -> None:
        """Run a request that waits for the store: at once while fewer than
        ``max_concurrency`` run, else when a running one is done."""
        if self._active < self._max_concurrency:
            self._active += 1
            self._run(conn, req, started)
        else:
            self._backlog.append((conn, req, started))

    def _run(self, conn: Connection, req, started: float) -> None:
        """Start one of at most ``max_concurrency`` requests. Its answer (``_answered``)
        starts the same customer's next one, or one from the backlog. A request answered
        before ``start`` returns queues the next instead of starting it inside (no stack
        growing with the backlog)."""
        self._ready.append((conn, req, started))
        if self._starting:
            return
        self._starting = True
        try:
            ready, dispatcher = self._ready, self.dispatcher
            while ready:
                conn, req, started = ready.popleft()
                answer = Answer(self, conn, req, started)
                try:
                    dispatcher.start(req, answer)
                except Exception as exc:  # noqa: BLE001 - a bug: the request is answered even so
                    answer(dispatcher.error(req.id, req.op, exc))
        finally:
            self._starting = False

    def _answered(self, conn: Connection, req, started: float, response: dict) -> None:
        try:
            following = conn.complete(req, response, started)
        except BaseException:
            self._next()
            raise
        if following is not None:
            self._run(conn, *following)
        else:
            self._next()

    def _next(self) -> None:
        """A running request is done (and its customer has none waiting): the backlog's next."""
        if self._backlog:
            self._run(*self._backlog.popleft())
        else:
            self._active -= 1

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- reload

    async def reload(self, request_id: Any = None, origin: str = "op") -> dict:
        return await self.reloader.reload(request_id, origin)

    def reload_soon(self, origin: str) -> None:
        if not self.stopping:
            self.spawn(self.reloader.reload(origin=origin))

    # -- limits

    def connection_closed(self, held_bytes: int) -> None:
        """A connection is gone: give the memory its buffers held back to the system soon."""
        self._trimmer.soon(held_bytes)

    async def _sweep(self) -> None:
        """Close connections idle for too long or holding an overdue frame."""
        settings = self.settings
        idle, frame = settings.idle_timeout_s, settings.frame_timeout_s
        while True:
            await asyncio.sleep(min(1.0, idle / 2, frame / 2))
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_deadlines(now, idle, frame)

    async def _watch_parent(self, parent: int) -> None:
        """A worker whose parent died (killed with SIGKILL, say) stops instead of holding the port."""
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        log.error("the parent process %d is gone; stopping", parent)
        self.request_stop()

    # -- observability

    def stats_snapshot(self) -> dict:
        engine_stats = getattr(self.engine, "stats", None)
        out = dict(engine_stats.snapshot()) if engine_stats is not None else {}
        stats = self.stats
        out["latency_us"] = stats.latency_us()
        out["requests"] = dict(stats.requests)
        out["request_errors"] = dict(stats.errors)
        out["connections"] = stats.connections
        out["connections_total"] = stats.connections_total
        out["connections_refused"] = dict(stats.refused)
        out["limits_hit"] = dict(stats.limits)
        out["buffered_bytes"] = self.buffered_bytes
        out["reloads"] = {"ok": stats.reloads, "failed": stats.reloads_failed}
        out["server"] = {
            "pid": os.getpid(),
            "worker": self.worker,
            "store": self.store,
            "uptime_s": round(time.time() - stats.started, 3),
        }
        return out


class Answer:
    """Where the response to a request that waited for the store goes: its connection,
    then the next request (``Server._answered``). The first call counts; a second (a bug
    answering twice) is dropped."""

    __slots__ = ("server", "conn", "req", "started", "given")

    def __init__(self, server: Server, conn: Connection, req, started: float):
        self.server = server
        self.conn = conn
        self.req = req
        self.started = started
        self.given = False

    def __call__(self, response: dict) -> None:
        if self.given:
            return
        self.given = True
        self.server._answered(self.conn, self.req, self.started, response)
