"""The asyncio transport: one connection per node and event loop, shared (pipelined)
by every concurrent caller of the loop."""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import islice
from threading import get_ident
from typing import Any, Awaitable, Callable

import redis.asyncio.connection as async_connection
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.exceptions import ResponseError

from nba.engine.store.interface import StoreUnavailable
from nba.engine.store.redis.near_cache import NearCache
from nba.engine.store.redis.protocol import (
    COMMIT_SCRIPT,
    CONNECTION_ERRORS,
    PING,
    Backoff,
    Endpoint,
    NodeDown,
    RefusalLog,
    connect_failure,
    log,
    pack_commands,
)
from nba.engine.store.redis.tracking import InvalidationListener, TrackingRefused, connect_listener


class Pending:
    """A request waiting on a shared connection for its ``count`` replies.

    Its caller is told in one of three ways: a ``future`` to await; a ``callback``, called
    once with ``(replies, None)`` or ``(None, error)`` (the request path of the server,
    which has no task to wake up); or neither, for a write sent without waiting: it has
    its ``commands`` instead, and their replies go to the link's ``on_late_reply``. A
    caller's request carries its deadline, which the link's ``Watchdog`` enforces.
    """

    __slots__ = (
        "count",
        "future",
        "commands",
        "replies",
        "timeout_s",
        "deadline",
        "hard_limit",
        "turns_left",
        "callback",
        "settled",
    )

    def __init__(
        self,
        count: int,
        future: asyncio.Future | None,
        commands: list[tuple] | None = None,
        timeout_s: float = 0.0,
        now: float = 0.0,
        callback: Callable[[list | None, BaseException | None], Any] | None = None,
    ):
        self.count = count
        self.future = future
        self.commands = commands
        self.replies = []
        self.timeout_s = timeout_s
        self.deadline = now + timeout_s
        self.hard_limit = now + timeout_s * LOOP_LAG_LIMIT
        self.turns_left = LOOP_TURNS
        self.callback = callback
        self.settled = False  # the callback was called

    def waits(self) -> bool:
        """Whether a caller still waits for it (not a write sent without waiting, not answered)."""
        if self.callback is not None:
            return not self.settled
        return self.future is not None and not self.future.done()

    def answer(self, on_late_reply: Callable[[tuple, Any], None]) -> None:
        """Its replies are all in: hand them over."""
        callback = self.callback
        if callback is not None:
            if not self.settled:
                self.settled = True
                call_back(callback, self.replies, None)
        elif self.future is None:
            for command, late in zip(self.commands, self.replies):
                on_late_reply(command, late)
        elif not self.future.done():
            self.future.set_result(self.replies)

    def fail(self, error: BaseException) -> None:
        """Its caller gives up waiting with ``error`` (a write sent without waiting: nothing)."""
        if self.callback is not None:
            if not self.settled:
                self.settled = True
                call_back(self.callback, None, error)
        elif self.future is not None and not self.future.done():
            self.future.set_exception(error)


def call_back(callback: Callable[[Any, Any], Any], replies: list | None, error: BaseException | None) -> None:
    """``callback(replies, error)``; an exception it raises (a bug) is the event loop's to
    report, not the link's: the link goes on reading, in step with Redis."""
    try:
        callback(replies, error)
    except Exception as exc:  # noqa: BLE001
        asyncio.get_running_loop().call_exception_handler(
            {"message": "a redis reply callback failed", "exception": exc, "callback": callback}
        )


class Watchdog:
    """Fails a link's waiting requests that Redis has not answered within their budget.

    One timer per link, set for the earliest deadline of its waiting requests, rather than
    one per request: most requests are answered long before it fires. It fires at most
    once per ``CHECK_INTERVAL_S``: a request fails up to that much after its deadline.
    (uvloop runs a timer due in under half a millisecond at the next loop turn, and a
    timer set for each next deadline fired at nearly every turn of a busy server.)

    The budget is for Redis, not for this process. When a deadline passes, the request
    fails only if Redis has stopped answering: while replies to the requests written before
    it keep arriving on the link (Redis is working through them in order, and this process
    is the one behind), it waits on, up to ``LOOP_LAG_LIMIT`` budgets. A reply may also sit
    unread in the socket because the event loop was busy: so the request fails only once
    the loop has also taken ``LOOP_TURNS`` more turns (each one reads the socket and runs
    the reader) without an answer. On an idle loop those turns take microseconds; without
    these two rules a saturated engine process would decide without state, with Redis
    answering every request in time.
    """

    __slots__ = ("loop", "link", "handle", "armed_for")

    def __init__(self, loop, link):
        self.loop = loop
        self.link = link  # its ``waiting`` requests (in the order written) and ``last_reply_at``
        self.handle = None
        self.armed_for = INFINITY

    def watch(self, pending: Pending) -> None:
        """``pending`` was queued: make sure the timer fires by its deadline (or at most
        ``CHECK_INTERVAL_S`` after it)."""
        if pending.deadline + CHECK_INTERVAL_S < self.armed_for:
            self.arm(pending.deadline)

    def arm(self, at: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed_for = at
        self.handle = self.loop.call_at(at, self.check)

    def check(self) -> None:
        self.handle, self.armed_for = None, INFINITY
        now = self.loop.time()
        last_reply_at = self.link.last_reply_at
        soonest, recheck_next_turn = INFINITY, False
        for pending in list(self.link.waiting):  # a callback told of its failure may queue more
            if not pending.waits():
                continue
            if pending.deadline > now:
                soonest = min(soonest, pending.deadline)
                continue
            if now < pending.hard_limit:
                answering_until = last_reply_at + pending.timeout_s
                if answering_until > now:  # replies are still coming: Redis is not the one late
                    pending.deadline = min(answering_until, pending.hard_limit)
                    soonest = min(soonest, pending.deadline)
                    continue
                if pending.turns_left:
                    pending.turns_left -= 1
                    recheck_next_turn = True
                    continue
            pending.fail(StoreUnavailable("redis answered too late"))  # its caller may queue another: watch()
        if recheck_next_turn:
            if self.handle is not None:
                self.handle.cancel()
            self.armed_for = now  # every later request's deadline is after this
            self.handle = self.loop.call_soon(self.check)
        elif soonest < self.armed_for:
            self.arm(max(soonest, now + CHECK_INTERVAL_S))

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle, self.armed_for = None, INFINITY


INFINITY = float("inf")
CHECK_INTERVAL_S = 0.001  # the watchdog's timer fires at most this often
UNWAITED_DELAY_S = 0.001  # a write no caller waits for waits this long at most for one to go with
LOOP_TURNS = 8
LOOP_LAG_LIMIT = 20  # a busy loop may stretch the budget this many times, no more


class AsyncLink:
    """One connection shared by every concurrent caller of an event loop.

    Callers' requests are written back to back (pipelined) and their replies come back in
    the same order, each caller's handed to it. A caller that gives up (its timeout)
    leaves its replies to be read and dropped, so the connection never gets out of step;
    a broken connection fails every waiting caller and is replaced.

    With hiredis (redis-py's default parser when installed), the link takes the
    connection's transport over once it is set up (``ReplyProtocol``): each chunk Redis
    sends is parsed where it arrives and its callers are answered there. The requests
    queued in a loop turn (the next reads, awaited commits) are written together at its
    end; writes no caller waits for go with them, or with the next ones. From Redis's
    bytes to the next request's that is one loop turn, where a reader task on the stream
    took three (the stream's waiter, the task, the flush). Otherwise a reader task reads
    replies through redis-py.
    """

    def __init__(
        self, conn, on_late_reply: Callable[[tuple, Any], None], on_lost: Callable[[BaseException], None] | None = None
    ):
        self.conn = conn
        self.on_late_reply = on_late_reply
        self.on_lost = on_lost  # told once when the connection breaks (not when closed)
        self.waiting: deque[Pending] = deque()
        self.outgoing: list[bytes] = []  # requests not yet written: one write per loop turn
        self.closed = False
        self.urgent = False  # a request a caller waits for is queued
        self.flush_scheduled = False  # a flush runs soon (this loop turn or the next)
        self.delay_handle: asyncio.TimerHandle | None = None  # the flush of writes no caller waits for
        self.loop = asyncio.get_running_loop()
        self.thread = get_ident()  # the loop's
        self.last_reply_at = float("-inf")  # loop time of the latest bytes read from Redis
        writer = getattr(conn, "_writer", None)
        self.transport = writer.transport if hasattr(writer, "transport") else None
        self.watchdog = Watchdog(self.loop, self)
        self.parser = None  # the hiredis reader fed by ReplyProtocol; None: the reader task reads
        self.reader: asyncio.Task | None = None
        # the near cache (near_cache.py): nonzero while Redis tracks this link's reads for the
        # node's invalidation connection (a new number each time tracking is turned on); 0: no
        # caching of its reads
        self.tracking = 0
        parser = getattr(conn, "_parser", None)
        hiredis_reader = getattr(parser, "_reader", None)
        stream = getattr(parser, "_stream", None)
        if self.transport is not None and hiredis_reader is not None and isinstance(stream, asyncio.StreamReader):
            self.parser = hiredis_reader
            left = bytes(stream._buffer)  # read by the stream, not yet by redis-py (nothing, after its set-up)
            stream._buffer.clear()
            self.transport.set_protocol(ReplyProtocol(self))
            if left:
                self.received(left)
        else:
            self.reader = self.loop.create_task(self.read_replies())

    def enqueue(self, pending: Pending, packed: bytes, waited: bool = True) -> None:
        """Queue a request; it is written with the others of this loop turn, or (not
        ``waited``: no caller waits for it) with the next request written on the link, at
        most ``UNWAITED_DELAY_S`` later."""
        if self.closed:
            raise NodeDown("redis connection lost")
        self.waiting.append(pending)
        self.outgoing.append(packed)
        if waited:
            self.urgent = True
            if not self.flush_scheduled:
                self.flush_scheduled = True
                if self.transport is not None:
                    self.loop.call_soon(self.flush_now)
                else:
                    self.loop.create_task(self.flush())
        elif self.delay_handle is None:
            self.delay_handle = self.loop.call_later(UNWAITED_DELAY_S, self.flush_unwaited)

    def send_only(self, packed: bytes, commands: list[tuple]) -> None:
        """Queue writes no caller waits for (their replies go to ``on_late_reply``): they
        go out with the next request written on the link, at most ``UNWAITED_DELAY_S``
        later. On a link answering a caller every few hundred microseconds that saves a
        write and a read per decision (each a wake-up of the other side: 10-15 µs of CPU
        on a small virtual machine); a link with nothing else to write writes them then."""
        self.enqueue(Pending(len(commands), None, commands), packed, waited=UNWAITED_DELAY_S <= 0)

    def flush_unwaited(self) -> None:
        self.delay_handle = None
        if self.outgoing and not self.flush_scheduled:
            if self.transport is not None:
                self.flush_now()
            else:
                self.flush_scheduled = True
                self.loop.create_task(self.flush())

    def request(self, packed: bytes, count: int, timeout_s: float) -> asyncio.Future:
        """A future of the replies of ``packed`` (``count`` commands), failed with
        ``StoreUnavailable`` when Redis does not answer within ``timeout_s``. To be awaited
        in this link's event loop."""
        loop = self.loop
        pending = Pending(count, loop.create_future(), None, timeout_s, loop.time())
        self.enqueue(pending, packed)
        self.watchdog.watch(pending)
        return pending.future

    def request_then(
        self, packed: bytes, count: int, timeout_s: float, callback: Callable[[list | None, BaseException | None], Any]
    ) -> None:
        """``request`` without a future: ``callback(replies, None)`` once they are in, or
        ``callback(None, error)`` (``StoreUnavailable``; ``NodeDown`` when the connection
        is lost), called from the event loop, never before this returns. Raises
        ``NodeDown`` when the link is closed already."""
        loop = self.loop
        pending = Pending(count, None, None, timeout_s, loop.time(), callback)
        self.enqueue(pending, packed)
        self.watchdog.watch(pending)

    def flush_now(self) -> None:
        """Write every request queued since the last flush in one go (fewer syscalls under load).

        Straight to the connection's transport, which buffers what the socket does not
        take at once: no task per write. A lost connection shows up in the reader, which
        fails every waiting request.
        """
        self.flush_scheduled = self.urgent = False
        outgoing, self.outgoing = self.outgoing, []
        if self.closed or not outgoing:
            return
        self.written(len(outgoing))
        if self.transport.is_closing():
            self.fail(ConnectionError("redis connection closed"))
            return
        try:
            self.transport.write(b"".join(outgoing))
        except CONNECTION_ERRORS as error:
            self.fail(error)

    def written(self, count) -> None:  # an int (a C int, compiled)
        """The last ``count`` requests queued are written now: their budgets start now.
        The budget is Redis's: a request queued while this loop was busy deciding from
        memory (the near cache) is not late for the time it waited to be written."""
        now = self.loop.time()
        for pending in islice(reversed(self.waiting), count):
            if now > pending.deadline - pending.timeout_s:
                pending.deadline = now + pending.timeout_s
                pending.hard_limit = now + pending.timeout_s * LOOP_LAG_LIMIT

    async def flush(self) -> None:
        """``flush_now`` through redis-py, for a connection without a stream writer."""
        self.flush_scheduled = self.urgent = False
        outgoing, self.outgoing = self.outgoing, []
        if self.closed or not outgoing:
            return
        self.written(len(outgoing))
        try:
            await self.conn.send_packed_command(outgoing, check_health=False)
        except CONNECTION_ERRORS as error:
            self.fail(error)

    def received(self, data: bytes) -> None:
        """Bytes from Redis (``ReplyProtocol``): every reply they complete handed over in
        order (error replies as redis-py's exception objects: ``MovedError``,
        ``NoScriptError``, ...). What the callers queue meanwhile is written once this loop
        turn has read its other input too (the clients' requests): in one write."""
        if self.closed:
            return
        self.last_reply_at = self.loop.time()
        parser, waiting, incomplete = self.parser, self.waiting, NOT_ENOUGH_DATA
        try:
            parser.feed(data)
            reply = parser.gets()
            while reply is not incomplete and reply is not False:
                pending = waiting[0]  # deliver(reply), inline
                replies = pending.replies
                replies.append(reply)
                if len(replies) >= pending.count:
                    waiting.popleft()
                    pending.answer(self.on_late_reply)
                    if self.closed:  # a caller closed it (or failed it) meanwhile
                        return
                reply = parser.gets()
        except Exception as error:  # noqa: BLE001 - bytes that are not RESP, a reply nobody asked for
            self.fail(error)

    async def read_replies(self) -> None:
        """The reader task of a connection whose parser is not hiredis's: one reply at a time."""
        try:
            while True:
                try:
                    reply = await self.conn.read_response(disconnect_on_error=False)
                except ResponseError as error:
                    reply = error
                self.last_reply_at = self.loop.time()
                self.deliver(reply)
        except BaseException as error:
            self.fail(error)
            if isinstance(error, asyncio.CancelledError):
                raise

    def deliver(self, reply: Any) -> None:
        pending = self.waiting[0]
        pending.replies.append(reply)
        if len(pending.replies) >= pending.count:
            self.waiting.popleft()
            pending.answer(self.on_late_reply)

    def fail(self, error: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        self.watchdog.cancel()
        if self.delay_handle is not None:
            self.delay_handle.cancel()
            self.delay_handle = None
        if self.on_lost is not None:
            self.on_lost(error)
        lost = NodeDown(f"redis connection lost: {error!r}")
        waiting, self.waiting = self.waiting, deque()
        written = len(waiting) - len(self.outgoing)  # the first ones were written
        self.outgoing = []
        for position, pending in enumerate(waiting):
            if pending.future is None and pending.callback is None:
                if position >= written:  # never written: surely lost (a written one: unknown)
                    for command in pending.commands:
                        self.on_late_reply(command, lost)
            else:
                pending.fail(lost)
        if self.transport is not None:
            self.transport.close()  # a transport taken over is no longer redis-py's to close
        self.loop.create_task(discard_async(self.conn))

    async def close(self, timeout_s: float) -> None:
        """Wait (a while) for the replies still owed, then disconnect."""
        if self.waiting and not self.closed:
            try:
                await self.request(PING, 1, timeout_s)
            except StoreUnavailable:
                pass
        if self.reader is not None:
            self.reader.cancel()
        self.on_lost = None  # closed on purpose: not a node going down
        self.fail(ConnectionError("closed"))
        await discard_async(self.conn)


class ReplyProtocol(asyncio.Protocol):
    """The protocol of a link's transport once the link has taken it over from redis-py's stream."""

    def __init__(self, link: AsyncLink):
        self.link = link

    def data_received(self, data: bytes) -> None:
        self.link.received(data)

    def eof_received(self) -> bool:
        self.link.fail(ConnectionError("redis closed the connection"))
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.link.fail(exc or ConnectionError("redis closed the connection"))


class AsyncNode:
    """The asyncio side of one node: a shared ``AsyncLink`` per event loop, opened on demand.

    A connect runs in the background (with a patient timeout): a caller waits for it at
    most its own timeout, and the callers after it find the connection ready. The very
    first connect of an event loop (a server starting) is waited for a little longer,
    ``COLD_START_WAIT_S``, so that the first decisions are not made without state only
    because the connection was not open yet.

    A node that is down (its last connect failed, or its connection broke) is not waited
    for when ``fail_fast_when_down()`` (in a cluster: its slots are about to move to a
    replica): callers fail at once while one connect per ``retry_interval_s`` runs in the
    background. A single server, which has nothing to fail over to, is waited for up to
    each caller's own timeout, so that the first decisions after it is back have state.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        connect_timeout_s: float,
        setup_timeout_s: float,
        retry_interval_s: float,
        on_late_reply: Callable[[tuple, Any], None],
        on_state: Callable[[tuple, bool, str], None] | None = None,
        near: NearCache | None = None,
    ):
        self.endpoint = endpoint
        self.near = near  # the store's near cache: this node's links are tracked for it
        self.listener: InvalidationListener | None = None  # the node's invalidation connection
        self.tracking_refused = False  # logged once: the node cannot track keys for the cache
        self.on_state = on_state  # (address, up, why): told of each connect that fails or works, each link lost
        self.down = False  # the last connect failed or the link was lost, and no connect has worked since
        self.fail_fast_when_down: Callable[[], bool] = never  # whether callers skip waiting on a down node's connect
        self.connect_timeout_s = connect_timeout_s
        self.setup_timeout_s = setup_timeout_s
        self.on_late_reply = on_late_reply
        self.loop = None
        self.link: AsyncLink | None = None
        self.connecting: asyncio.Task | None = None
        self.warm = False  # a link was opened on this loop before
        self.backoff = Backoff(retry_interval_s)
        self.refusals = RefusalLog()

    def ready_link(self) -> AsyncLink | None:
        """The open link of the running event loop, if there is one.

        The link's loop running in this thread is the running loop (a loop runs in the
        thread it was made in): that is asked instead of ``asyncio.get_running_loop()``,
        which costs a ``getpid()`` system call in Python 3.11, and this runs for every read."""
        link = self.link
        if link is None or link.closed or link.thread != get_ident() or not link.loop.is_running():
            return None
        return link

    def request(self, packed: bytes, count: int, timeout_s: float) -> Awaitable[list]:
        """The replies of ``packed`` (``count`` commands), to await; on the open link
        itself when there is one (no coroutine of the node's own on the hot path)."""
        link = self.ready_link()
        if link is None:
            return self.request_on_new_link(packed, count, timeout_s)
        return link.request(packed, count, timeout_s)

    async def request_on_new_link(self, packed: bytes, count: int, timeout_s: float) -> list:
        link = await self.get_link(timeout_s)
        return await link.request(packed, count, timeout_s)

    async def get_link(self, timeout_s: float) -> AsyncLink:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # links of another (maybe closed) loop are forgotten
            self.loop, self.link, self.connecting, self.warm = loop, None, None, False
        if self.link is not None and not self.link.closed:
            return self.link
        self.backoff.check()
        if self.connecting is None:
            self.connecting = loop.create_task(self.open_link())
            self.connecting.add_done_callback(retrieve_exception)
        if self.down and self.fail_fast_when_down():
            raise NodeDown("redis node is down; reconnecting in the background")
        wait_s = timeout_s if self.warm else max(timeout_s, COLD_START_WAIT_S)
        try:
            async with asyncio.timeout(wait_s):
                return await asyncio.shield(self.connecting)
        except TimeoutError as error:
            raise StoreUnavailable("redis: connecting took too long") from error

    async def open_link(self) -> AsyncLink:
        options = dict(
            self.endpoint.async_options,
            host=self.endpoint.host,
            port=self.endpoint.port,
            socket_connect_timeout=self.connect_timeout_s,
            socket_timeout=self.setup_timeout_s,
        )
        conn_class = options.pop("connection_class", async_connection.Connection)
        conn = conn_class(**options)
        tracking = 0
        try:
            await conn.connect()
            await conn.send_command("SCRIPT", "LOAD", COMMIT_SCRIPT)  # so writes sent without waiting find it
            await conn.read_response()
            if self.near is not None:
                tracking = await self.track(conn)
        except CONNECTION_ERRORS as error:
            self.backoff.failed()
            await discard_async(conn)
            failure = connect_failure(self.endpoint, error)
            self.refusals.failed(failure)
            self.tell(False, f"cannot connect: {failure}")
            raise failure from error
        finally:
            self.connecting = None
        conn.socket_timeout = None  # callers time out on their own; the reader waits forever
        self.backoff.succeeded()
        self.refusals.succeeded()
        self.link = link = AsyncLink(conn, self.on_late_reply, self.link_lost)
        if tracking:
            link.tracking = tracking
        elif self.near is not None and not self.tracking_refused:
            self.track_again_soon(link)
        self.warm = True
        self.tell(True, "connected")
        return self.link

    def link_lost(self, error: BaseException) -> None:
        if self.near is not None:  # Redis forgets a closed connection's tracking
            self.near.flush()
        self.tell(False, f"connection lost: {error!r}")

    # -- tracking for the near cache

    async def track(self, conn) -> int:
        """Turn tracking on for a new link's connection ``conn``, its invalidations sent to
        the node's invalidation connection (made first if there is none): the tracking's
        number, or 0 when it could not be turned on (the link works, its reads uncached:
        for good when the node refuses, logged once; until ``track_again`` when the
        invalidation connection could not be made)."""
        if self.tracking_refused:
            return 0
        try:
            listener = await self.listening()
        except (ResponseError, TrackingRefused) as error:  # before CONNECTION_ERRORS, which holds RedisError
            self.refused_tracking(error)
            return 0
        except CONNECTION_ERRORS as error:  # OSError among them
            log.warning(
                "redis %s:%d: no invalidation connection for the near cache yet: %s", *self.endpoint.address, error
            )
            return 0
        await conn.send_command(*tracking_command(listener.client_id))
        try:
            reply = await conn.read_response()
        except ResponseError as error:
            self.refused_tracking(error)
            return 0
        if reply not in (b"OK", "OK"):
            self.refused_tracking(reply)
            return 0
        return next_tracking()

    async def listening(self) -> InvalidationListener:
        """The node's invalidation connection; a new one (connected in a thread) when it has none."""
        if self.listener is not None and self.listener.alive:
            return self.listener
        loop = asyncio.get_running_loop()
        conn, client_id = await loop.run_in_executor(
            None, connect_listener, self.endpoint, max(self.connect_timeout_s, self.setup_timeout_s)
        )
        self.listener = InvalidationListener(conn, client_id, loop, self.near.invalidated, self.listener_lost)
        return self.listener

    def listener_lost(self) -> None:
        """The invalidation connection broke: nothing cached is known true any more. The
        link's reads stay uncached until tracking is on again for a new connection."""
        self.near.flush()
        link = self.link
        if link is not None and not link.closed and link.tracking:
            link.tracking = 0
            self.track_again_soon(link)

    def track_again_soon(self, link: AsyncLink) -> None:
        link.loop.create_task(self.track_again(link)).add_done_callback(retrieve_exception)

    async def track_again(self, link: AsyncLink) -> None:
        """Tracking on again for an open link, after its invalidation connection broke:
        after a pause, a new connection, then ``CLIENT TRACKING`` on the link itself (its
        replies come in order with the reads': the reads sent before it are not cached)."""
        await asyncio.sleep(self.backoff.interval_s)
        if link.closed or link is not self.link or self.tracking_refused:
            return
        try:
            listener = await self.listening()
            replies = await link.request(
                pack_commands(
                    [
                        ("CLIENT", "TRACKING", "OFF"),
                        tracking_command(listener.client_id),
                    ]
                ),
                2,
                max(self.connect_timeout_s, self.setup_timeout_s),
            )
        except (ResponseError, TrackingRefused) as error:
            self.refused_tracking(error)
            return
        except TRACK_AGAIN_ERRORS as error:
            log.warning(
                "redis %s:%d: tracking for the near cache could not be turned on again: %s",
                *self.endpoint.address,
                error,
            )
            if not link.closed and link is self.link:
                self.track_again_soon(link)
            return
        if link.closed or link is not self.link:
            return
        if replies[-1] in (b"OK", "OK"):
            link.tracking = next_tracking()
        else:
            self.refused_tracking(replies[-1])

    def refused_tracking(self, why: Any) -> None:
        if not self.tracking_refused:
            self.tracking_refused = True
            log.warning(
                "redis %s:%d does not track keys for the near cache (%s): its customers are read at every decision "
                "(the engine's ACL needs +client|id +client|tracking +subscribe +exists &__redis__:invalidate)",
                *self.endpoint.address,
                why,
            )

    def tell(self, up: bool, why: str) -> None:
        self.down = not up
        if self.on_state is not None:
            self.on_state(self.endpoint.address, up, why)

    async def close(self, timeout_s: float) -> None:
        link, self.link = self.link, None
        if link is not None and self.loop is asyncio.get_running_loop():
            await link.close(timeout_s)
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.on_lost = self.near.flush  # closed on purpose: nothing to track again
            listener.close()


def never() -> bool:
    return False


TRACK_AGAIN_ERRORS = (*CONNECTION_ERRORS, StoreUnavailable)


def tracking_command(listener_id: int) -> tuple:
    """Tracking on for a link: every key it reads is tracked, and a change to it by another
    connection announced to ``listener_id``; the link's own writes are not (NOLOOP).

    Redis stops tracking a key at its first change, the link's own included (NOLOOP only
    keeps that one from being announced): so each write the near cache applies itself is
    followed, in the same pipeline, by a read of the keys it wrote (``RedisStore``'s
    ``EXISTS``), which tracks them again. (Broadcast mode would need no such read, but
    it announces a script's writes as another client's, and within one turn of Redis's
    event loop it names only the last writer of a key: another's change followed by the
    link's own would go unannounced.)"""
    return ("CLIENT", "TRACKING", "ON", "REDIRECT", listener_id, "NOLOOP")


TRACKINGS = [0]  # the last tracking number given (near cache)


def next_tracking() -> int:
    TRACKINGS[0] += 1
    return TRACKINGS[0]


def retrieve_exception(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


async def discard_async(conn) -> None:
    try:
        await conn.disconnect(nowait=True)
    except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
        pass


COLD_START_WAIT_S = 0.1  # how long the first callers of an event loop wait for its first connection
