"""One client connection (an ``asyncio.Protocol``): frames in, responses out, limits and
authentication enforced, every readable request answered exactly once with its id."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from time import monotonic  # a name of this module: the tests move its clock
from typing import TYPE_CHECKING, Any

import msgpack

from nba.engine.protocol import (
    CUSTOMER_OPS,
    FORBIDDEN,
    FRAME_TIMEOUT,
    FRAME_TOO_LARGE,
    HEADER,
    INTERNAL,
    NEED_MORE,
    OVERLOADED,
    ROLE_OPS,
    TOO_MANY_CONNECTIONS,
    UNAUTHENTICATED,
    BadRequest,
    FrameDecoder,
    FrameError,
    Request,
    error_response,
    new_packer,
    parse_request,
    plain_decide_event,
)
from nba.engine.server.logs import log, peer_name
from nba.engine.server.security import is_loopback

if TYPE_CHECKING:
    from nba.engine.server.lifecycle import Server

HEADER_PACK = HEADER.pack
WRITE_BUFFER_HIGH = 1 << 20  # pause reading a connection whose responses are not being read
EVERY_OP = ROLE_OPS["admin"]
LIMIT_CODES = frozenset({FRAME_TOO_LARGE, FRAME_TIMEOUT, OVERLOADED})  # counted in stats' limits_hit


class Connection:
    """One client connection: frames in, responses out, limits enforced (an asyncio
    protocol: the event loop calls its ``connection_made``, ``data_received``, ...)."""

    def __init__(self, server: "Server"):
        settings = server.settings
        self.server = server
        self.dispatcher = server.dispatcher
        self.stats = server.stats
        self.limiter = server.limiter
        self.decoder = FrameDecoder(settings.max_frame_bytes)
        self.max_in_flight = settings.max_in_flight
        # The ops this connection may use: all of them without --auth; none but `auth`
        # until a token is given with it.
        self.allowed: frozenset | None = EVERY_OP if server.tokens is None else None
        self.role: str | None = "admin" if server.tokens is None else None
        self._decide_map = None  # the fast path's engine call, once the connection may decide
        if self.allowed is not None:
            self._enable_fast_path()
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self.in_flight = 0
        self.last_seen = monotonic()
        self._frame_since: float | None = None  # when the unfinished frame buffered now began
        self._buffered = 0  # this connection's share of server.buffered_bytes
        self._peak_buffered = 0
        self._counted = False  # among server.connections (not refused at once)
        self._mark = 0.0  # perf_counter when the last request was answered (or input arrived)
        self._pack = new_packer().pack
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._reading = True
        self._write_paused = False
        self._fatal = False  # an unreadable frame or a limit: no more input is read
        self._close_when_done = False  # end of input or shutdown: close once nothing is in flight
        self._waiting: dict[str, deque] = {}  # customer id -> requests queued behind a running one
        self._done: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the event loop, once needed

    def _enable_fast_path(self) -> None:
        if self.dispatcher.blocking:
            self._decide_map = self.dispatcher.decide_map

    # -- asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        server = self.server
        if len(server.connections) >= server.max_connections:
            self._refuse(
                TOO_MANY_CONNECTIONS,
                f"the server holds its limit of {server.max_connections} connections; try again later",
            )
            return
        if server.tokens is None and not is_loopback(self.peer):
            self._refuse(
                UNAUTHENTICATED, "protected mode: without --auth this server answers only clients on its own machine"
            )
            return
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        server.connections.add(self)
        self._counted = True
        self.stats.connections += 1
        self.stats.connections_total += 1
        if server.stopping:
            self.shutdown()

    def connection_lost(self, exc) -> None:
        if self._counted:
            self._counted = False
            self.server.connections.discard(self)
            self.stats.connections -= 1
        self.transport = None
        self.server.buffered_bytes -= self._buffered
        self._buffered = 0
        self.decoder.release()
        self.server.connection_closed(self._peak_buffered)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        before = self._buffered
        self.last_seen = now = monotonic()
        decoder.feed(data)
        self._process_input()
        if self.transport is None or self._fatal:
            return
        pending = self._account()
        if not pending:
            self._frame_since = None
        elif self._frame_since is None or before + len(data) > pending:
            self._frame_since = now  # a frame was read: the deadline runs from the unfinished one
        server = self.server
        if server.buffered_bytes > server.settings.max_buffered_bytes and pending:
            self._limit(
                OVERLOADED,
                f"the server holds its limit of {server.settings.max_buffered_bytes} bytes of unfinished frames; try again later",
            )

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
        decoder = self.decoder
        server = self.server
        decide_map = self._decide_map
        pack = self._pack
        out = self._out
        latencies: list[float] = []  # of the decisions answered on the fast path below
        clock = time.perf_counter
        mark = clock()  # a request's latency starts when the one before it ends
        try:
            while self.in_flight < self.max_in_flight and not self._write_paused and not server.stopping:
                obj = decoder.next_frame()
                # The common request {id, op: decide, event} with the in-memory store, once the
                # connection may decide: decided inline, with no Request object, one after
                # another (they change neither the requests in flight nor the writing state).
                # plain_decide_event is parse_request's specialisation to that request; any
                # other frame takes the general path through _handle.
                while decide_map is not None:
                    event = plain_decide_event(obj)
                    if event is None:
                        break
                    request_id = obj["id"]
                    try:
                        response = {"id": request_id, "ok": True, "decision": decide_map(event)}
                    except Exception as exc:  # noqa: BLE001 - every failure becomes an error response
                        response = self.dispatcher.error(request_id, "decide", exc)
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
                            obj = decoder.next_frame()
                            continue
                    self._mark = mark
                    self._send(response, "decide", mark)
                    mark = self._mark
                    obj = decoder.next_frame()
                if obj is NEED_MORE:
                    break
                if latencies:  # counted before a `stats` request among them is answered
                    self.stats.observe_many("decide", latencies)
                    latencies = []
                self._mark = mark
                self._handle(obj, mark)
                mark = self._mark
                if self._fatal or self.transport is None:  # a wrong token: nothing more is read
                    return
                decide_map = self._decide_map  # `auth` may have allowed decisions
        except FrameError as error:
            self._frame_error(error)
            return
        finally:
            self.stats.observe_many("decide", latencies)
            if self._fatal or self.transport is None:
                self._flush()  # the answers made before the end still go out
        self._flush()
        self._update_reading()
        self._close_if_done()

    def _handle(self, obj: Any, started: float) -> None:
        """Answer one readable frame (any value), or start what will (it waits for the store)."""
        try:
            req = parse_request(obj)
        except BadRequest as bad:
            self._send(error_response(bad.id, bad.code, bad.message), "invalid", started)
            if self.limiter.allow():
                log.info("request from %s refused: %s: %s", peer_name(self.peer), bad.code, bad.message)
            return
        try:
            allowed = self.allowed
            op = req.op
            if op == "auth":
                self._authenticate(req, started)
                return
            if allowed is None:
                self._send(
                    error_response(req.id, UNAUTHENTICATED, "authenticate first: {op: auth, token: ...}"), op, started
                )
                return
            if op not in allowed:
                self._send(
                    error_response(req.id, FORBIDDEN, f"op {op!r} is not allowed to the role {self.role!r}"),
                    op,
                    started,
                )
                return
            if op == "reload":  # not through the store's queue: concurrent reloads share one load
                self.in_flight += 1
                self.server.spawn(self._reload(req, started))
                return
            dispatcher = self.dispatcher
            if dispatcher.answers_at_once(req):
                self._send(dispatcher.answer(req), op, started)
            else:
                self._start(req, started)
        except Exception as exc:  # noqa: BLE001 - a bug: answered, logged (rate-limited), the connection goes on
            self._send(self.dispatcher.error(req.id, req.op, exc), req.op, started)

    def _authenticate(self, req: Request, started: float) -> None:
        tokens = self.server.tokens
        if tokens is None:  # no --auth: every (local) client is admin already
            self._send({"id": req.id, "ok": True, "role": self.role}, "auth", started)
            return
        role = tokens.role_of(req.token)
        if role is None:
            self.stats.limit_hit(UNAUTHENTICATED)
            if self.limiter.allow():
                log.warning("closing connection from %s: a wrong token", peer_name(self.peer))  # never the token
            self._fatal = True
            self._send(error_response(req.id, UNAUTHENTICATED, "wrong token"), "auth", started)
            self._flush()
            self._close_now()
            return
        self.role = role
        self.allowed = ROLE_OPS[role]
        self._enable_fast_path()
        self._send({"id": req.id, "ok": True, "role": role}, "auth", started)

    async def _reload(self, req: Request, started: float) -> None:
        try:
            response = await self.server.reloader.reload(req.id, origin="op")
        except Exception as exc:  # noqa: BLE001
            response = self.dispatcher.error(req.id, "reload", exc)
        self._finish(response, "reload", started)

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None:
            return
        want = not (self._fatal or self._write_paused or self.server.stopping or self.in_flight >= self.max_in_flight)
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
                if self._frame_since is not None:  # the server, not the client, held it up
                    self._frame_since = monotonic()
            else:
                transport.pause_reading()

    def _account(self) -> int:
        """Bring this connection's share of the server's buffered bytes up to date."""
        pending = self.decoder.buffered()
        self.server.buffered_bytes += pending - self._buffered
        self._buffered = pending
        if pending > self._peak_buffered:
            self._peak_buffered = pending
        return pending

    # -- requests that wait for the store

    def _start(self, req: Request, started: float) -> None:
        self.in_flight += 1
        customer_id = req.customer_id if req.op in CUSTOMER_OPS else None
        if customer_id is not None:
            queue = self._waiting.get(customer_id)
            if queue is not None:
                queue.append((req, started))  # runs once this customer's earlier request is answered
                return
            self._waiting[customer_id] = deque()
        self.server.submit(self, req, started)

    def complete(self, req: Request, response: dict, started: float):
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
        self.last_seen = monotonic()
        self._send(response, op, started)
        if self.in_flight == self.max_in_flight - 1 or self._close_when_done or self.server.stopping:
            self._process_input()
            if self.transport is not None:
                self._account()
        elif self._flush_handle is None:
            loop = self._loop
            if loop is None:  # asked once: asyncio's get_running_loop() costs a getpid() in Python 3.11
                loop = self._loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_soon(self._flush)

    # -- output

    def _send(self, response: dict, op: str, started: float) -> None:
        try:
            body = self._pack(response)
        except Exception as exc:  # noqa: BLE001 - a value msgpack cannot encode even so
            if self.limiter.allow():
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
        if error.code in LIMIT_CODES:
            self.stats.limit_hit(error.code)
        if self.limiter.allow():
            log.warning("closing connection from %s: %s: %s", peer_name(self.peer), error.code, error.message)
        self._send(error_response(None, error.code, error.message), "frame", time.perf_counter())
        self._flush()
        self._close_now()

    def _limit(self, code: str, message: str) -> None:
        """A limit of the server closes this connection, with one error for the client."""
        self._frame_error(FrameError(code, message))

    def _refuse(self, code: str, message: str) -> None:
        """Answer a connection refused at once with one error, then close it."""
        self._fatal = True
        self.stats.refuse(code)
        if self.limiter.allow():
            log.warning("refused a connection from %s: %s", peer_name(self.peer), code)
        body = self._pack(error_response(None, code, message))
        self.transport.write(HEADER_PACK(len(body)) + body)
        self.transport.close()

    def _close_now(self) -> None:
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

    def check_deadlines(self, now: float, idle_timeout: float, frame_timeout: float) -> None:
        """Close the connection when idle too long, or when a frame begun is overdue."""
        if self.transport is None or self._fatal:
            return
        since = self._frame_since
        if since is not None and self._reading and now - since > frame_timeout:
            self._limit(
                FRAME_TIMEOUT,
                f"a frame begun {now - since:.0f} s ago is still not whole (the limit is {frame_timeout:g} s)",
            )
        elif self.in_flight == 0 and now - self.last_seen > idle_timeout:
            log.debug("closing idle connection from %s", peer_name(self.peer))
            self.stats.limit_hit("idle_timeout")
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _plain_id(request_id: Any) -> Any:
    try:
        msgpack.packb(request_id)
        return request_id
    except Exception:  # noqa: BLE001
        return None
