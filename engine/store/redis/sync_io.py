"""The sync transport: a free list of connections per node, one ``sendall`` and a
hiredis reader per round trip."""

from __future__ import annotations

import os
import weakref
from typing import Any, Callable

import redis.connection as sync_connection
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.exceptions import ResponseError

from nba.engine.store.redis.protocol import (
    COMMIT_SCRIPT,
    CONNECTION_ERRORS,
    PING,
    Backoff,
    Endpoint,
    RefusalLog,
    connect_failure,
)


class SyncLink:
    """A redis-py connection, and the writes sent on it whose replies are still unread.

    Once connected, a round trip skips redis-py: one ``sendall`` of the packed commands on
    the connection's socket, and its hiredis reader fed from ``recv_into`` a buffer of
    the link's own (redis-py's ``read_response`` when the parser is not hiredis's).
    """

    __slots__ = ("conn", "unread", "sock", "reader", "timeout_s", "buffer")

    def __init__(self, conn):
        self.conn = conn
        self.unread: list[tuple] = []
        self.sock = conn._sock
        self.reader = getattr(getattr(conn, "_parser", None), "_reader", None)
        self.timeout_s: float | None = None
        self.buffer = bytearray(65536) if self.reader is not None else None

    def send(self, packed: bytes, timeout_s: float) -> None:
        if timeout_s != self.timeout_s:
            self.sock.settimeout(timeout_s)
            self.timeout_s = timeout_s
        self.sock.sendall(packed)

    def receive(self, count: int) -> list:
        """``count`` replies (errors in place, as redis-py's exception objects)."""
        reader = self.reader
        if reader is None:  # not the hiredis parser
            return [read_reply(self.conn) for _ in range(count)]
        replies: list = []
        while len(replies) < count:
            reply = reader.gets()
            if reply is NOT_ENOUGH_DATA or reply is False:
                size = self.sock.recv_into(self.buffer)
                if not size:
                    raise ConnectionError("redis closed the connection")
                reader.feed(self.buffer, 0, size)
            else:
                replies.append(reply)
        return replies

    def close(self) -> None:
        self.conn.disconnect()


class SyncNode:
    """A free list of connected links to one node (thread-safe by the GIL)."""

    def __init__(
        self,
        endpoint: Endpoint,
        connect_timeout_s: float,
        setup_timeout_s: float,
        retry_interval_s: float,
        on_state: Callable[[tuple, bool, str], None] | None = None,
    ):
        self.endpoint = endpoint
        self.on_state = on_state  # (address, up, why): told of each connect that fails or works
        self.connect_timeout_s = connect_timeout_s
        self.setup_timeout_s = setup_timeout_s  # the handshake and the script load after a connect
        self.free: list[SyncLink] = []
        self.backoff = Backoff(retry_interval_s)
        self.refusals = RefusalLog()
        NODES.add(self)

    def acquire(self) -> SyncLink:
        try:
            return self.free.pop()
        except IndexError:
            return self.connect()

    def forget_parents_links(self) -> None:
        """In a forked child: the parent's connections are not ours to use (nor to close)."""
        self.free = []

    def connect(self) -> SyncLink:
        self.backoff.check()
        options = dict(
            self.endpoint.options,
            host=self.endpoint.host,
            port=self.endpoint.port,
            socket_connect_timeout=self.connect_timeout_s,
            socket_timeout=self.setup_timeout_s,
        )
        conn_class = options.pop("connection_class", sync_connection.Connection)
        conn = conn_class(**options)
        try:
            conn.connect()
            conn.send_command("SCRIPT", "LOAD", COMMIT_SCRIPT)  # so writes sent without waiting find it
            conn.read_response()
        except CONNECTION_ERRORS as error:
            self.backoff.failed()
            conn.disconnect()
            failure = connect_failure(self.endpoint, error)
            self.refusals.failed(failure)
            if self.on_state is not None:
                self.on_state(self.endpoint.address, False, f"cannot connect: {failure}")
            raise failure from error
        self.backoff.succeeded()
        self.refusals.succeeded()
        if self.on_state is not None:
            self.on_state(self.endpoint.address, True, "connected")
        return SyncLink(conn)

    def release(self, link: SyncLink) -> None:
        self.free.append(link)

    def close(self, on_late_reply: Callable[[tuple, Any], None], timeout_s: float) -> None:
        """Read the replies still owed (the writes they answer were sent), then disconnect."""
        free, self.free = self.free, []
        for link in free:
            try:
                if link.unread:
                    round_trip(link, PING, 1, timeout_s, on_late_reply)
            except CONNECTION_ERRORS:
                pass
            link.close()


NODES: weakref.WeakSet[SyncNode] = weakref.WeakSet()  # every SyncNode of this process


def after_fork_in_child() -> None:
    for node in list(NODES):
        node.forget_parents_links()


os.register_at_fork(after_in_child=after_fork_in_child)


def read_reply(conn) -> Any:
    try:
        return conn.read_response(disconnect_on_error=False)
    except ResponseError as error:
        return error


def round_trip(
    link: SyncLink, packed: bytes, count: int, timeout_s: float, on_late_reply: Callable[[tuple, Any], None]
) -> list:
    """Send ``packed`` (``count`` commands) in one write and read every reply (errors in place).

    The replies owed to writes sent earlier on this link come first: they go to
    ``on_late_reply``.
    """
    link.send(packed, timeout_s)
    unread = link.unread
    if not unread:
        return link.receive(count)
    link.unread = []
    try:
        replies = link.receive(len(unread) + count)
    except BaseException:
        link.unread = unread  # the link is dropped by the caller anyway
        raise
    for command, reply in zip(unread, replies):
        on_late_reply(command, reply)
    return replies[len(unread) :]


def send_only(link: SyncLink, packed: bytes, commands: list[tuple], timeout_s: float) -> None:
    """Send ``packed`` (``commands``) without waiting; the replies are read on the link's next round trip."""
    link.send(packed, timeout_s)
    link.unread.extend(commands)
