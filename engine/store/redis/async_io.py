"""The asyncio transport: one connection per node and event loop, shared (pipelined)
by every concurrent caller of the loop."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable

import redis.asyncio.connection as async_connection
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.exceptions import ResponseError

from nba.engine.store.interface import StoreUnavailable
from nba.engine.store.redis.protocol import (
    COMMIT_SCRIPT,
    CONNECTION_ERRORS,
    PING,
    Backoff,
    Endpoint,
    NodeDown,
    RefusalLog,
    connect_failure,
)


class Pending:
    """A request waiting on a shared connection for its ``count`` replies.

    A caller awaits ``future``; a write sent without waiting has ``commands`` instead,
    and its replies go to the link's ``on_late_reply``. A caller's request carries its
    deadline, which the link's ``Watchdog`` enforces.
    """

    __slots__ = ("count", "future", "commands", "replies", "timeout_s", "deadline", "hard_limit", "turns_left")

    def __init__(
        self,
        count: int,
        future: asyncio.Future | None,
        commands: list[tuple] | None = None,
        timeout_s: float = 0.0,
        now: float = 0.0,
    ):
        self.count = count
        self.future = future
        self.commands = commands
        self.replies = []
        self.timeout_s = timeout_s
        self.deadline = now + timeout_s
        self.hard_limit = now + timeout_s * LOOP_LAG_LIMIT
        self.turns_left = LOOP_TURNS


class Watchdog:
    """Fails a link's waiting requests that Redis has not answered within their budget.

    One timer per link, set for the earliest deadline of its waiting requests, rather than
    one per request: most requests are answered long before it fires.

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
        """``pending`` was queued: make sure the timer fires by its deadline."""
        if pending.deadline < self.armed_for:
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
        for pending in self.link.waiting:
            future = pending.future
            if future is None or future.done():
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
            future.set_exception(StoreUnavailable("redis answered too late"))
        if recheck_next_turn:
            self.armed_for = now  # every later request's deadline is after this
            self.handle = self.loop.call_soon(self.check)
        elif soonest < INFINITY:
            self.arm(soonest)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle, self.armed_for = None, INFINITY


INFINITY = float("inf")
LOOP_TURNS = 8
LOOP_LAG_LIMIT = 20  # a busy loop may stretch the budget this many times, no more


class AsyncLink:
    """One connection shared by every concurrent caller of an event loop.

    Callers' requests are written back to back (pipelined) and their replies come back in
    the same order; a reader task hands each caller its own. A caller that gives up (its
    timeout) leaves its replies to be read and dropped, so the connection never gets out
    of step; a broken connection fails every waiting caller and is replaced.
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
        self.loop = asyncio.get_running_loop()
        self.last_reply_at = float("-inf")  # loop time of the latest bytes read from Redis
        writer = getattr(conn, "_writer", None)
        self.writer = writer if hasattr(writer, "transport") else None
        self.watchdog = Watchdog(self.loop, self)
        self.reader = self.loop.create_task(self.read_replies())

    def enqueue(self, pending: Pending, packed: bytes) -> None:
        if self.closed:
            raise NodeDown("redis connection lost")
        self.waiting.append(pending)
        self.outgoing.append(packed)
        if len(self.outgoing) == 1:
            if self.writer is not None:
                self.loop.call_soon(self.flush_now)
            else:
                self.loop.create_task(self.flush())

    def send_only(self, packed: bytes, commands: list[tuple]) -> None:
        self.enqueue(Pending(len(commands), None, commands), packed)

    def request(self, packed: bytes, count: int, timeout_s: float) -> asyncio.Future:
        """A future of the replies of ``packed`` (``count`` commands), failed with
        ``StoreUnavailable`` when Redis does not answer within ``timeout_s``. To be awaited
        in this link's event loop."""
        loop = self.loop
        pending = Pending(count, loop.create_future(), None, timeout_s, loop.time())
        self.enqueue(pending, packed)
        self.watchdog.watch(pending)
        return pending.future

    def flush_now(self) -> None:
        """Write every request queued since the last flush in one go (fewer syscalls under load).

        Straight to the stream's transport, which buffers what the socket does not take at
        once: no task per write. A lost connection shows up in the reader, which fails
        every waiting request.
        """
        outgoing, self.outgoing = self.outgoing, []
        if self.closed or not outgoing:
            return
        if self.writer.transport.is_closing():
            self.fail(ConnectionError("redis connection closed"))
            return
        try:
            self.writer.write(b"".join(outgoing))
        except CONNECTION_ERRORS as error:
            self.fail(error)

    async def flush(self) -> None:
        """``flush_now`` through redis-py, for a connection without a stream writer."""
        outgoing, self.outgoing = self.outgoing, []
        if self.closed or not outgoing:
            return
        try:
            await self.conn.send_packed_command(outgoing, check_health=False)
        except CONNECTION_ERRORS as error:
            self.fail(error)

    async def read_replies(self) -> None:
        try:
            parser = getattr(self.conn, "_parser", None)
            if hasattr(parser, "_reader") and hasattr(parser, "_stream"):
                await self.read_replies_in_bulk(parser._reader, parser._stream)
            while True:  # the redis-py parser is not hiredis's: one reply at a time
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

    async def read_replies_in_bulk(self, reader, stream: asyncio.StreamReader) -> None:
        """Every reply a chunk of bytes holds, parsed by the connection's own hiredis reader.

        redis-py's ``read_response`` costs a few microseconds per reply; under load one
        chunk holds the replies of many callers. Error replies come out of the reader as
        redis-py's exception objects (``MovedError``, ``NoScriptError``, ...), as they do
        through ``read_response``.
        """
        incomplete, gets, waiting = NOT_ENOUGH_DATA, reader.gets, self.waiting
        while True:
            reply = gets()
            while reply is not incomplete and reply is not False:
                pending = waiting[0]  # deliver(reply), inline
                replies = pending.replies
                replies.append(reply)
                if len(replies) >= pending.count:
                    self.complete()
                reply = gets()
            data = await stream.read(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.last_reply_at = self.loop.time()
            reader.feed(data)

    def deliver(self, reply: Any) -> None:
        pending = self.waiting[0]
        pending.replies.append(reply)
        if len(pending.replies) >= pending.count:
            self.complete()

    def complete(self) -> None:
        """The first waiting request has all its replies: hand them over."""
        pending = self.waiting.popleft()
        if pending.future is None:
            for command, late in zip(pending.commands, pending.replies):
                self.on_late_reply(command, late)
        elif not pending.future.done():
            pending.future.set_result(pending.replies)

    def fail(self, error: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        self.watchdog.cancel()
        if self.on_lost is not None:
            self.on_lost(error)
        lost = NodeDown(f"redis connection lost: {error!r}")
        written = len(self.waiting) - len(self.outgoing)  # the first ones were written
        for position, pending in enumerate(self.waiting):
            if pending.future is None:
                if position >= written:  # never written: surely lost (a written one: unknown)
                    for command in pending.commands:
                        self.on_late_reply(command, lost)
            elif not pending.future.done():
                pending.future.set_exception(lost)
        self.waiting.clear()
        self.outgoing = []
        asyncio.get_running_loop().create_task(discard_async(self.conn))

    async def close(self, timeout_s: float) -> None:
        """Wait (a while) for the replies still owed, then disconnect."""
        if self.waiting and not self.closed:
            try:
                await self.request(PING, 1, timeout_s)
            except StoreUnavailable:
                pass
        self.reader.cancel()
        self.on_lost = None  # closed on purpose: not a node going down
        self.fail(ConnectionError("closed"))
        await discard_async(self.conn)


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
    ):
        self.endpoint = endpoint
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
        """The open link of the running event loop, if there is one."""
        link = self.link
        if link is None or link.closed or self.loop is not asyncio.get_running_loop():
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
        try:
            await conn.connect()
            await conn.send_command("SCRIPT", "LOAD", COMMIT_SCRIPT)  # so writes sent without waiting find it
            await conn.read_response()
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
        self.link = AsyncLink(conn, self.on_late_reply, self.link_lost)
        self.warm = True
        self.tell(True, "connected")
        return self.link

    def link_lost(self, error: BaseException) -> None:
        self.tell(False, f"connection lost: {error!r}")

    def tell(self, up: bool, why: str) -> None:
        self.down = not up
        if self.on_state is not None:
            self.on_state(self.endpoint.address, up, why)

    async def close(self, timeout_s: float) -> None:
        link, self.link = self.link, None
        if link is not None and self.loop is asyncio.get_running_loop():
            await link.close(timeout_s)


def never() -> bool:
    return False


def retrieve_exception(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


async def discard_async(conn) -> None:
    try:
        await conn.disconnect(nowait=True)
    except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
        pass


COLD_START_WAIT_S = 0.1  # how long the first callers of an event loop wait for its first connection
