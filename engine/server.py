"""`nba serve`: the engine behind the socket protocol of INTERFACES.md.

One process runs one asyncio event loop (uvloop when it can be imported) with one
``asyncio.Protocol`` per connection. With the in-memory store a decision is pure CPU work,
so requests are answered inline, in order, and every response of one read goes out in one
write. With Redis each request runs as a task, so many decisions wait on Redis at once;
requests of one customer on one connection still run one after another, in order.

``--workers N`` starts N such processes bound to one port with SO_REUSEPORT; the kernel
spreads connections over them. Each is a full engine (with the in-memory store each has its
own state: use Redis to share it).

Entry points: ``run_server(rules_path, settings, redis_url)`` (returns the exit code),
``add_arguments(parser)`` + ``serve_main(args)`` for a CLI, and ``python -m engine.server``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import msgpack

from nba.engine.errors import EngineError
from nba.engine.protocol import (
    CUSTOMER_OPS,
    HEADER,
    INTERNAL,
    LOAD_FAILED,
    NEED_MORE,
    BadRequest,
    FrameDecoder,
    FrameError,
    error_response,
    ok_response,
    parse_request,
)
from nba.engine.settings import ServerSettings

log = logging.getLogger("nba.server")

LATENCY_SAMPLES = 1 << 16  # the latency percentiles cover the last 65,536 requests
LATENCY_BUCKETS = (  # seconds; Prometheus histogram bounds
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)
HEADER_PACK = HEADER.pack
WRITE_BUFFER_HIGH = 1 << 20  # pause reading a connection whose responses are not being read
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PARENT_SIGNALS = {*STOP_SIGNALS, signal.SIGHUP}  # the parent of workers takes these with sigtimedwait

EngineFactory = Callable[[str, "str | None"], Any]


# ------------------------------------------------------------------ statistics

class ServerStats:
    """Counters kept per request with plain Python (no locks, no labels); read at `stats`.

    Latencies go into a ring of the latest ``LATENCY_SAMPLES`` (the percentiles of `stats`);
    with ``histogram`` (the Prometheus endpoint is on) every latency is also counted into
    the histogram's buckets, a ring's worth at a time, before the ring overwrites it.
    """

    def __init__(self, histogram: bool = True) -> None:
        self.started = time.time()
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.connections = 0
        self.connections_total = 0
        self.reloads = 0
        self.reloads_failed = 0
        self.keep_histogram = histogram
        self._samples = [0.0] * LATENCY_SAMPLES  # a ring of the latest latencies, in seconds
        self._count = 0  # latencies observed
        self._folded = 0  # of which counted into the histogram buckets (or let go, without one)
        self._sum = 0.0
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)

    def observe(self, op: str, seconds: float) -> None:
        requests = self.requests
        requests[op] = requests.get(op, 0) + 1
        count = self._count
        if count - self._folded == LATENCY_SAMPLES:
            self._fold()  # before the ring overwrites samples not yet counted
        self._samples[count & (LATENCY_SAMPLES - 1)] = seconds
        self._count = count + 1

    def observe_many(self, op: str, latencies: list[float]) -> None:
        """``observe(op, s)`` for every ``s`` of ``latencies``, with slices instead of a loop."""
        n = len(latencies)
        if not n:
            return
        requests = self.requests
        requests[op] = requests.get(op, 0) + n
        if n > LATENCY_SAMPLES:
            for start in range(0, n, LATENCY_SAMPLES):
                self.observe_many_samples(latencies[start : start + LATENCY_SAMPLES])
        else:
            self.observe_many_samples(latencies)

    def observe_many_samples(self, latencies: list[float]) -> None:
        n = len(latencies)  # at most LATENCY_SAMPLES
        if self._count - self._folded + n > LATENCY_SAMPLES:
            self._fold()
        samples = self._samples
        pos = self._count & (LATENCY_SAMPLES - 1)
        head = LATENCY_SAMPLES - pos
        if n <= head:
            samples[pos : pos + n] = latencies
        else:
            samples[pos:] = latencies[:head]
            samples[: n - head] = latencies[head:]
        self._count += n

    def _fold(self) -> None:
        n = self._count - self._folded
        if n and self.keep_histogram:
            samples = self._samples
            start = self._folded & (LATENCY_SAMPLES - 1)
            if start + n <= LATENCY_SAMPLES:
                chunk = samples[start : start + n]
            else:
                chunk = samples[start:] + samples[: start + n - LATENCY_SAMPLES]
            chunk.sort()
            buckets = self._buckets
            below = 0  # samples <= the previous bound
            for i, bound in enumerate(LATENCY_BUCKETS):
                upto = bisect.bisect_right(chunk, bound)
                buckets[i] += upto - below
                below = upto
            buckets[-1] += n - below
            self._sum += sum(chunk)
        self._folded = self._count

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def latency_us(self) -> dict:
        n = min(self._count, LATENCY_SAMPLES)
        samples = sorted(self._samples[:n])
        out = {"count": self._count}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)):
            out[name] = round(samples[min(n - 1, int(q * n))] * 1e6, 1) if n else None
        out["max"] = round(samples[-1] * 1e6, 1) if n else None
        return out

    def histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (bound, count) pairs and the sum of seconds, for Prometheus."""
        self._fold()
        total = 0
        out = []
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self._buckets):
            total += count
            out.append((bound, total))
        return out, self._sum


class LogLimiter:
    """At most ``per_second`` log lines a second for errors a client can cause at will."""

    def __init__(self, per_second: int = 50) -> None:
        self.per_second = per_second
        self._second = 0
        self._lines = 0
        self._dropped = 0

    def allow(self) -> bool:
        now = int(time.monotonic())
        if now != self._second:
            if self._dropped:
                log.warning("%d more error lines were not logged in the last second", self._dropped)
            self._second, self._lines, self._dropped = now, 0, 0
        if self._lines < self.per_second:
            self._lines += 1
            return True
        self._dropped += 1
        return False


# ------------------------------------------------------------------ ops

class Dispatcher:
    """Runs the ops against the engine and turns outcomes (and errors) into response maps.

    ``blocking``: call the engine's synchronous methods inline (the in-memory store);
    otherwise the ``*_async`` ones, from a task.
    """

    def __init__(self, server: "Server", engine: Any, blocking: bool):
        self.server = server
        self.engine = engine
        self.blocking = blocking
        self.stats = server.stats
        self.limiter = LogLimiter()
        decide_map = getattr(engine, "decide_map", None)
        if decide_map is None:  # an engine without the shortcut (tests' stand-ins)
            decide_map = lambda event: engine.decide(event).to_dict()  # noqa: E731
        # The decision map of an event with the default options: blocking mode's fast path.
        self.decide_map: Callable[[dict], dict] = decide_map

    def handle_now(self, req) -> dict | None:
        """The response, when the op can be answered at once; None when it needs a task."""
        op = req.op
        try:
            if op == "decide":
                if not self.blocking:
                    return None
                decision = self.engine.decide(req.event, limit=req.limit, explain=req.explain, dry_run=req.dry_run)
                return {"id": req.id, "ok": True, "decision": decision.to_dict()}
            if op == "ping":
                return {"id": req.id, "ok": True, "pong": True}
            if op == "stats":
                return ok_response(req.id, "stats", self.server.stats_snapshot())
            if not self.blocking or op == "reload":
                return None
            if op == "get_profile":
                return ok_response(req.id, "profile", self.engine.get_profile(req.customer_id))
            if op == "put_profile":
                self.engine.put_profile(req.customer_id, req.profile)
                return ok_response(req.id)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error response
            return self.error(req.id, req.op, exc)
        return None

    async def handle(self, req) -> dict:
        op = req.op
        engine = self.engine
        try:
            if op == "decide":
                decision = await engine.decide_async(
                    req.event, limit=req.limit, explain=req.explain, dry_run=req.dry_run
                )
                return {"id": req.id, "ok": True, "decision": decision.to_dict()}
            if op == "reload":
                return await self.server.reload(req.id, origin="op")
            if op == "get_profile":
                return ok_response(req.id, "profile", await engine.get_profile_async(req.customer_id))
            if op == "put_profile":
                await engine.put_profile_async(req.customer_id, req.profile)
                return ok_response(req.id)
            return self.handle_now(req) or error_response(req.id, INTERNAL, f"op {op!r} has no handler")
        except Exception as exc:  # noqa: BLE001
            return self.error(req.id, req.op, exc)

    def error(self, request_id: Any, op: str, exc: Exception) -> dict:
        if isinstance(exc, EngineError):
            if self.limiter.allow():
                log.info("request %r (%s) refused: %s: %s", request_id, op, exc.code, exc)
            return error_response(request_id, exc.code, str(exc))
        if self.limiter.allow():
            log.error("request %r (%s) failed", request_id, op, exc_info=exc)
        return error_response(request_id, INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------ connections

class Connection(asyncio.Protocol):
    """One client connection: frames in, responses out, limits enforced."""

    def __init__(self, server: "Server"):
        settings = server.settings
        self.server = server
        self.dispatcher = server.dispatcher
        self.stats = server.stats
        self.decoder = FrameDecoder(settings.max_frame_bytes)
        self.max_in_flight = settings.max_in_flight
        self._decide_map = server.dispatcher.decide_map if server.dispatcher.blocking else None
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self.in_flight = 0
        self.last_seen = time.monotonic()
        self._mark = 0.0  # perf_counter when the last request was answered (or input arrived)
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._reading = True
        self._write_paused = False
        self._fatal = False  # an unreadable frame: no more input is read
        self._close_when_done = False  # end of input or shutdown: close once nothing is in flight
        self._waiting: dict[str, deque] = {}  # customer id -> requests queued behind a running one
        self._done: asyncio.Future | None = None

    # -- asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.server.connections.add(self)
        self.stats.connections += 1
        self.stats.connections_total += 1
        if self.server.stopping:
            self.shutdown()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self.stats.connections -= 1
        self.transport = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self.decoder.feed(data)
        self._process_input()

    def eof_received(self) -> bool:
        if self._fatal:
            return False
        error = self.decoder.close_error()
        if error is not None:
            self._frame_error(error)
            return False
        self._close_when_done = True
        self._process_input()
        return self.transport is not None and self.in_flight > 0

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._process_input()

    # -- input

    def _process_input(self) -> None:
        if self._fatal or self.transport is None:
            return
        next_frame = self.decoder.next_frame
        server = self.server
        decide_map = self._decide_map
        pack = self._pack
        out = self._out
        latencies: list[float] = []  # of the decisions answered on the fast path below
        clock = time.perf_counter
        mark = clock()  # a request's latency starts when the one before it ends
        try:
            while self.in_flight < self.max_in_flight and not self._write_paused and not server.stopping:
                obj = next_frame()
                # The common request {id, op: decide, event} with the in-memory store: decided
                # inline, with no Request object and no call per step, one after another (they
                # change neither the requests in flight nor the writing state); anything else
                # takes the general path through _handle, and failures go through _send.
                while (
                    decide_map is not None
                    and obj.__class__ is dict
                    and len(obj) == 3
                    and obj.get("op") == "decide"
                    and "id" in obj
                    and obj["event"].__class__ is dict
                ):
                    try:
                        response = {"id": obj["id"], "ok": True, "decision": decide_map(obj["event"])}
                    except Exception as exc:  # noqa: BLE001 - every failure becomes an error response
                        response = self.dispatcher.error(obj["id"], "decide", exc)
                    else:
                        try:
                            body = pack(response)
                        except Exception:  # noqa: BLE001 - _send answers with an error instead
                            pass
                        else:
                            out.append(HEADER_PACK(len(body)) + body)
                            now = clock()
                            latencies.append(now - mark)
                            mark = now
                            obj = next_frame()
                            continue
                    self._mark = mark
                    self._send(response, "decide", mark)
                    mark = self._mark
                    obj = next_frame()
                if obj is NEED_MORE:
                    break
                if latencies:  # counted before a `stats` request among them is answered
                    self.stats.observe_many("decide", latencies)
                    latencies = []
                self._mark = mark
                self._handle(obj, mark)
                mark = self._mark
        except FrameError as error:
            self._frame_error(error)
            return
        finally:
            self.stats.observe_many("decide", latencies)
        self._flush()
        self._update_reading()
        self._close_if_done()

    def _handle(self, obj: Any, started: float) -> None:
        try:
            req = parse_request(obj)
        except BadRequest as bad:
            self._send(error_response(bad.id, bad.code, bad.message), "invalid", started)
            if self.dispatcher.limiter.allow():
                log.info("request from %s refused: %s: %s", _peer(self.peer), bad.code, bad.message)
            return
        response = self.dispatcher.handle_now(req)
        if response is not None:
            self._send(response, req.op, started)
        else:
            self._start(req, started)

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None:
            return
        want = not (
            self._fatal or self._write_paused or self.server.stopping or self.in_flight >= self.max_in_flight
        )
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    # -- requests that need a task

    def _start(self, req, started: float) -> None:
        self.in_flight += 1
        customer_id = req.customer_id if req.op in CUSTOMER_OPS else None
        if customer_id is not None:
            queue = self._waiting.get(customer_id)
            if queue is not None:
                queue.append((req, started))  # runs once this customer's earlier request is answered
                return
            self._waiting[customer_id] = deque()
        self.server.submit(self, req, started)

    def complete(self, req, response: dict, started: float):
        """Answer ``req``; return this customer's next waiting request (req, started), or None."""
        self._finish(response, req.op, started)
        customer_id = req.customer_id if req.op in CUSTOMER_OPS else None
        if customer_id is None:
            return None
        queue = self._waiting[customer_id]
        if queue:
            return queue.popleft()
        del self._waiting[customer_id]
        return None

    def _finish(self, response: dict, op: str, started: float) -> None:
        self.in_flight -= 1
        if self.transport is None:
            return
        self.last_seen = time.monotonic()
        self._send(response, op, started)
        if self.in_flight == self.max_in_flight - 1 or self._close_when_done or self.server.stopping:
            self._process_input()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    # -- output

    def _send(self, response: dict, op: str, started: float) -> None:
        try:
            body = self._pack(response)
        except Exception as exc:  # noqa: BLE001 - a value msgpack cannot encode
            log.error("response to %r (%s) could not be encoded: %s", response.get("id"), op, exc)
            body = self._pack(error_response(_plain_id(response.get("id")), INTERNAL, "response could not be encoded"))
            response = {"ok": False, "error": {"code": INTERNAL}}
        self._out.append(HEADER_PACK(len(body)) + body)
        self._mark = now = time.perf_counter()
        self.stats.observe(op, now - started)
        if response["ok"] is not True:
            self.stats.error(response["error"]["code"])

    def _flush(self) -> None:
        self._flush_handle = None
        if self._out and self.transport is not None:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _frame_error(self, error: FrameError) -> None:
        self._fatal = True
        if self.dispatcher.limiter.allow():
            log.warning("closing connection from %s: %s: %s", _peer(self.peer), error.code, error.message)
        self._send(error_response(None, error.code, error.message), "frame", time.perf_counter())
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _close_if_done(self) -> None:
        if (self._close_when_done or self.server.stopping) and self.in_flight == 0 and self.transport is not None:
            self._flush()
            self.transport.close()

    # -- called by the server

    def shutdown(self) -> asyncio.Future:
        """Stop reading; close once every request started is answered. Returns when closed."""
        loop = asyncio.get_running_loop()
        if self._done is None:
            self._done = loop.create_future()
            if self.transport is None:
                self._done.set_result(None)
        self._close_when_done = True
        self._update_reading()
        self._close_if_done()
        return self._done

    def close_if_idle(self, now: float, idle_timeout: float) -> None:
        if self.in_flight == 0 and now - self.last_seen > idle_timeout and self.transport is not None:
            log.debug("closing idle connection from %s", _peer(self.peer))
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _peer(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _plain_id(request_id: Any) -> Any:
    try:
        msgpack.packb(request_id)
        return request_id
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------ the server

class Server:
    """Listens, tracks connections, reloads, and stops gracefully. One per process."""

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
    ):
        self.engine = engine
        self.settings = settings
        self.rules_path = rules_path
        self.store = store
        self.worker = worker
        self.notify_parent_on_reload = notify_parent_on_reload
        self.stats = ServerStats(histogram=settings.metrics_port is not None)
        self.dispatcher = Dispatcher(self, engine, blocking)
        self.connections: set[Connection] = set()
        self.stopping = False
        self.address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._reload_lock = asyncio.Lock()
        self._active = 0  # runners (tasks) at work
        self._backlog: deque = deque()  # (connection, request, started) waiting for a runner
        self._reloader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nba-reload")
        self._metrics_http = None
        self._stopped: asyncio.Event | None = None

    # -- life cycle

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if sock is None:
            sock = bind_socket(self.settings.host, self.settings.port, reuse_port=False)
        sock.listen(self.settings.backlog)
        self._server = await loop.create_server(lambda: Connection(self), sock=sock)
        self.address = sock.getsockname()[:2]
        self._background.append(loop.create_task(self._sweep_idle()))
        if self.worker is not None:
            self._background.append(loop.create_task(self._watch_parent(os.getppid())))
        if self.settings.watch and self.rules_path is not None:
            baseline = rules_signature(self.rules_path)  # before start() returns: no change can slip by
            self._background.append(loop.create_task(self._watch(baseline)))
        if self.settings.metrics_port is not None:
            self._start_metrics()
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
                log.warning("%d connections still busy after %.1f s; closing them", len(pending), self.settings.drain_timeout_s)
                for conn in list(self.connections):
                    conn.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self._reloader.shutdown(wait=False)
        log.info("stopped")
        self._stopped.set()

    def submit(self, conn: Connection, req, started: float) -> None:
        """Run a request that needs the event loop: at once while fewer than
        ``max_concurrency`` run, else when a running one is done (no task per waiting request)."""
        if self._active < self.settings.max_concurrency:
            self._active += 1
            self.spawn(self._work(conn, req, started))
        else:
            self._backlog.append((conn, req, started))

    async def _work(self, conn: Connection, req, started: float) -> None:
        """One of at most ``max_concurrency`` runners: answers its request, then the same
        customer's next one, then whatever waits in the backlog."""
        handle = self.dispatcher.handle
        backlog = self._backlog
        try:
            while True:
                response = await handle(req)
                following = conn.complete(req, response, started)
                if following is not None:
                    req, started = following
                elif backlog:
                    conn, req, started = backlog.popleft()
                else:
                    return
        finally:
            self._active -= 1

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- reload

    async def reload(self, request_id: Any = None, origin: str = "op") -> dict:
        """Load the ruleset again and swap it in; on failure the old one keeps serving."""
        async with self._reload_lock:
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._reloader, self.engine.reload)
            except Exception as exc:  # noqa: BLE001 - any failure to load leaves the old ruleset
                self.stats.reloads_failed += 1
                log.error("reload (%s) failed; the old ruleset keeps serving:\n%s", origin, exc)
                return error_response(request_id, LOAD_FAILED, str(exc))
            self.stats.reloads += 1
            log.info("reloaded %s (%s) in %.1f ms", self.rules_path, origin, (time.perf_counter() - started) * 1e3)
        if origin == "op" and self.notify_parent_on_reload:
            os.kill(os.getppid(), signal.SIGHUP)  # the parent passes it on to the other workers
        return ok_response(request_id, "reloaded", {"reloads": self.stats.reloads})

    def reload_soon(self, origin: str) -> None:
        if not self.stopping:
            self.spawn(self.reload(origin=origin))

    async def _watch(self, last: tuple) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.watch_interval_s)
            current = await loop.run_in_executor(None, rules_signature, self.rules_path)
            if current != last:
                last = current
                await self.reload(origin="watch")

    async def _sweep_idle(self) -> None:
        idle = self.settings.idle_timeout_s
        while True:
            await asyncio.sleep(min(1.0, idle / 2))
            now = time.monotonic()
            for conn in list(self.connections):
                conn.close_if_idle(now, idle)

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
        out["reloads"] = {"ok": stats.reloads, "failed": stats.reloads_failed}
        out["server"] = {
            "pid": os.getpid(),
            "worker": self.worker,
            "store": self.store,
            "uptime_s": round(time.time() - stats.started, 3),
        }
        return out

    def _start_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        port = self.settings.metrics_port
        if port and self.worker:
            port += self.worker  # worker i serves its metrics on metrics_port + i
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(self))
        self._metrics_http, _ = start_http_server(port, addr=self.settings.host, registry=registry)
        self.metrics_address = self._metrics_http.server_address[:2]


class MetricsCollector:
    """Prometheus metrics read from the counters at scrape time (nothing per request)."""

    def __init__(self, server: Server):
        self.server = server

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        snap = self.server.stats_snapshot()
        yield CounterMetricFamily("nba_decisions", "Decisions made", value=snap.get("decisions", 0))
        yield CounterMetricFamily("nba_decision_errors", "Decide requests that failed", value=snap.get("errors", 0))
        yield _labelled(CounterMetricFamily, "nba_first_choices", "First choices per rule", "rule", snap.get("first_choices", {}))
        yield _labelled(CounterMetricFamily, "nba_passed_over", "Candidates passed over, by reason", "reason", snap.get("passed_over", {}))
        yield _labelled(CounterMetricFamily, "nba_requests", "Requests answered, by op", "op", snap["requests"])
        yield _labelled(CounterMetricFamily, "nba_request_errors", "Error responses, by code", "code", snap["request_errors"])
        yield GaugeMetricFamily("nba_connections", "Open connections", value=snap["connections"])
        yield _labelled(CounterMetricFamily, "nba_reloads", "Ruleset reloads, by result", "result", snap["reloads"])
        buckets, total = self.server.stats.histogram()
        yield HistogramMetricFamily(
            "nba_request_latency_seconds", "Time from reading a request to queueing its response",
            buckets=buckets, sum_value=total,
        )


def _labelled(kind, name: str, doc: str, label: str, values: dict):
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items(), key=lambda item: str(item[0])):
        family.add_metric([str(key)], value)
    return family


# ------------------------------------------------------------------ helpers

def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound (not yet listening) TCP socket."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(info[4])
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def rules_signature(path: str) -> tuple:
    """What changes when a `.rules` file under ``path`` is added, removed or written."""
    entries = []
    if os.path.isfile(path):
        files = [path]
    else:
        files = [
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if name.endswith(".rules")
        ]
    for name in sorted(files):
        try:
            st = os.stat(name)
        except OSError:
            continue
        entries.append((name, st.st_mtime_ns, st.st_size))
    return tuple(entries)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s nba[%(process)d] %(levelname)s %(message)s",
        )
    elif root.level > logging.INFO or root.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def default_engine_factory(rules_path: str, redis_url: str | None) -> Any:
    from nba.engine import Engine

    return Engine.from_path(rules_path, redis_url=redis_url)


# ------------------------------------------------------------------ one process

def run_server(
    rules_path: str,
    settings: ServerSettings | None = None,
    redis_url: str | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    blocking: bool | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop,
    2 when the ruleset does not load at start).

    ``engine_factory(rules_path, redis_url)`` builds the engine (default: ``Engine.from_path``);
    ``blocking`` says whether to call the engine inline (default: when there is no Redis).
    """
    settings = settings or ServerSettings()
    configure_logging()
    if settings.workers > 1:
        return _run_workers(rules_path, settings, redis_url, engine_factory, blocking)
    return _run_process(rules_path, settings, redis_url, engine_factory, blocking)


def _run_process(rules_path, settings, redis_url, engine_factory, blocking, *, worker=None, sock=None, ready=None) -> int:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_serve(rules_path, settings, redis_url, engine_factory, blocking, worker, sock, ready))


async def _serve(rules_path, settings, redis_url, engine_factory, blocking, worker, sock, ready) -> int:
    factory = engine_factory or default_engine_factory
    try:
        engine = factory(rules_path, redis_url)
    except Exception as exc:  # noqa: BLE001 - report and exit, whatever went wrong
        log.error("the ruleset %s does not load; not serving:\n%s", rules_path, exc)
        if ready is not None:
            ready.put(("failed", worker, str(exc)))
        return 2
    if hasattr(engine, "max_event_ahead_s"):  # the server decides on the wall clock (tests' stand-ins need not)
        engine.max_event_ahead_s = settings.max_event_ahead_s
    gc.collect()
    gc.freeze()  # the loaded engine is not garbage: keep the cycle collector from scanning it again and again
    server = Server(
        engine,
        settings,
        rules_path=rules_path,
        blocking=(redis_url is None) if blocking is None else blocking,
        store="redis" if redis_url else "memory",
        worker=worker,
        notify_parent_on_reload=worker is not None,
    )
    try:
        host, port = await server.start(sock)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        await _close_engine(engine)
        if ready is not None:
            ready.put(("failed", worker, str(exc)))
        return 1
    _install_signals(server)
    log.info(
        "listening on %s:%d (rules %s, %s store, %s, pid %d%s%s)",
        host, port, rules_path, server.store,
        "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio",
        os.getpid(),
        f", worker {worker}" if worker is not None else "",
        f", metrics on {server.metrics_address[0]}:{server.metrics_address[1]}" if server.metrics_address else "",
    )
    if ready is not None:
        ready.put(("ready", worker, os.getpid()))
    await server.wait_stopped()
    await _close_engine(engine)
    return 0


def _install_signals(server: Server) -> None:
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, server.reload_soon, "signal")


async def _close_engine(engine: Any) -> None:
    close_async = getattr(engine, "close_async", None) or getattr(engine, "aclose", None)
    try:
        if close_async is not None:
            await close_async()
        elif hasattr(engine, "close"):
            engine.close()
    except Exception:  # noqa: BLE001
        log.exception("closing the engine failed")


# ------------------------------------------------------------------ several processes

def _worker_main(rules_path, settings_data, redis_url, engine_factory, blocking, worker, ready) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_SIGNALS)
    configure_logging()
    settings = ServerSettings(**settings_data)
    sock = bind_socket(settings.host, settings.port, reuse_port=True)
    sys.exit(_run_process(rules_path, settings, redis_url, engine_factory, blocking, worker=worker, sock=sock, ready=ready))


class _Workers:
    """The parent of ``--workers N``: starts them, passes signals on, restarts crashed ones."""

    def __init__(self, rules_path, settings, redis_url, engine_factory, blocking):
        self.args = (rules_path, settings.model_dump(), redis_url, engine_factory, blocking)
        self.settings = settings
        self.ctx = multiprocessing.get_context("spawn")
        self.ready = self.ctx.Queue()
        self.procs: dict[int, multiprocessing.Process] = {}

    def start(self, worker: int) -> None:
        proc = self.ctx.Process(target=_worker_main, args=(*self.args, worker, self.ready), name=f"nba-worker-{worker}")
        proc.start()
        # multiprocessing's resource tracker unblocks SIGINT/SIGTERM when it starts: block them again
        signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
        self.procs[worker] = proc

    def wait_ready(self, signals: set) -> int:
        """Wait until every worker listens. 0: all ready; 2: one failed; -1: told to stop."""
        waiting = set(self.procs)
        while waiting:
            if signal.sigtimedwait(signals - {signal.SIGHUP}, 0) is not None:
                return -1
            try:
                kind, worker, detail = self.ready.get(timeout=0.1)
            except Exception:  # noqa: BLE001 - queue.Empty
                dead = [w for w in waiting if not self.procs[w].is_alive()]
                if dead:
                    log.error("worker %d exited before it was ready", dead[0])
                    return 2
                continue
            if kind == "failed":
                return 2
            waiting.discard(worker)
        return 0

    def signal_all(self, signum: int, except_pid: int | None = None) -> None:
        for proc in self.procs.values():
            if proc.pid != except_pid and proc.is_alive():
                os.kill(proc.pid, signum)

    def restart_dead(self) -> None:
        for worker, proc in list(self.procs.items()):
            if not proc.is_alive():
                log.error("worker %d (pid %d) exited with %s; starting it again", worker, proc.pid, proc.exitcode)
                self.start(worker)

    def stop(self) -> int:
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_timeout_s + 10
        codes = []
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
            codes.append(proc.exitcode)
        return 0 if all(code == 0 for code in codes) else 1


def _run_workers(rules_path, settings, redis_url, engine_factory, blocking) -> int:
    signals = PARENT_SIGNALS
    try:
        reserved = bind_socket(settings.host, settings.port, reuse_port=True)  # holds the port; never listens
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    port = reserved.getsockname()[1]
    settings = settings.model_copy(update={"port": port})
    if redis_url is None:
        log.warning("%d workers with the in-memory store: each worker keeps its own customer state", settings.workers)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    workers = _Workers(rules_path, settings, redis_url, engine_factory, blocking)
    try:
        for worker in range(settings.workers):
            workers.start(worker)
        started = workers.wait_ready(signals)
        if started != 0:
            workers.stop()
            return 0 if started < 0 else started
        log.info("listening on %s:%d (%d workers, pid %d)", settings.host, port, settings.workers, os.getpid())
        while True:
            info = signal.sigtimedwait(signals, 0.5)
            if info is None:
                workers.restart_dead()
            elif info.si_signo == signal.SIGHUP:
                workers.signal_all(signal.SIGHUP, except_pid=info.si_pid)
            else:
                log.info("stopping %d workers", settings.workers)
                return workers.stop()
    finally:
        reserved.close()
        while signal.sigtimedwait(signals, 0) is not None:
            pass  # a repeated stop signal is not passed on once the workers are stopped
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


# ------------------------------------------------------------------ command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `nba serve`."""
    defaults = ServerSettings()
    parser.add_argument("rules", help="a .rules file or a directory of them")
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="0: any free port (logged)")
    parser.add_argument("--redis", metavar="URL", help="redis:// or rediss:// URL (default: in-memory store)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="processes sharing the port")
    parser.add_argument("--watch", action="store_true", help="reload when a .rules file changes")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    parser.add_argument("--max-frame-bytes", type=int, default=defaults.max_frame_bytes)
    parser.add_argument("--max-in-flight", type=int, default=defaults.max_in_flight)
    parser.add_argument("--max-concurrency", type=int, default=defaults.max_concurrency,
                        help="with Redis: requests at the store at once, over all connections")
    parser.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout_s, metavar="SECONDS")


def serve_main(args: argparse.Namespace) -> int:
    """Run `nba serve` from parsed arguments (see ``add_arguments``); returns the exit code."""
    from pydantic import ValidationError

    try:
        settings = ServerSettings(
            host=args.host,
            port=args.port,
            workers=args.workers,
            watch=args.watch,
            metrics_port=args.metrics_port,
            max_frame_bytes=args.max_frame_bytes,
            max_in_flight=args.max_in_flight,
            max_concurrency=args.max_concurrency,
            idle_timeout_s=args.idle_timeout,
        )
    except ValidationError as exc:
        print(f"nba serve: bad settings:\n{exc}", file=sys.stderr)
        return 2
    return run_server(args.rules, settings, redis_url=args.redis)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nba serve", description="Serve the engine over TCP.")
    add_arguments(parser)
    return serve_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
