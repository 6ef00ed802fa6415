"""Redis's invalidation messages for the near cache (``near_cache.NearCache``).

One connection per node, subscribed to ``__redis__:invalidate``; every link of the node
sends ``CLIENT TRACKING ON REDIRECT <its id> NOLOOP`` when it opens, so Redis announces
here each key those links read that another connection then changed.

The connection is made by redis-py (TLS, AUTH, SELECT as the URL says; RESP2, whatever
the URL asks, so that messages have one shape), in a thread so that a slow connect does
not hold the event loop, and then read here: its socket, non-blocking, watched by the
event loop, its bytes parsed by a hiredis reader, each message acted on in the loop turn
it arrives. (Not read again before each decision from memory: that was a system call per
decision, more than the rest of a hit; see ``RedisStore.cached``.)
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Callable

import hiredis
import redis.connection as sync_connection

from nba.engine.store.redis.protocol import CONNECTION_ERRORS, Endpoint, log

INVALIDATE_CHANNEL = b"__redis__:invalidate"
RECEIVE_SIZE = 65536


class TrackingRefused(Exception):
    """The node cannot track keys for this engine (an ACL without CLIENT or SUBSCRIBE, a Redis before 6)."""


def connect_listener(endpoint: Endpoint, timeout_s: float) -> tuple[Any, int]:
    """A new connection to the node, subscribed to invalidations: (redis-py's connection, its client id).
    Blocking: run it in a thread."""
    options = dict(endpoint.options, host=endpoint.host, port=endpoint.port)
    options.update(socket_connect_timeout=timeout_s, socket_timeout=timeout_s, protocol=2)
    conn_class = options.pop("connection_class", sync_connection.Connection)
    conn = conn_class(**options)
    try:
        conn.connect()
        conn.send_command("CLIENT", "ID")
        client_id = conn.read_response()
        conn.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
        conn.read_response()
    except Exception:
        conn.disconnect()
        raise
    if not isinstance(client_id, int):
        conn.disconnect()
        raise TrackingRefused(f"CLIENT ID answered {client_id!r}")
    return conn, client_id


class InvalidationListener:
    """The node's invalidation connection, read by the event loop (``drain``).

    ``on_keys(keys)`` is told each message's keys (``None``: the node flushed every key);
    ``on_lost()`` once, when the connection breaks or is closed."""

    def __init__(
        self,
        conn: Any,
        client_id: int,
        loop: asyncio.AbstractEventLoop,
        on_keys: Callable[[list | None], None],
        on_lost: Callable[[], None],
    ):
        self.conn = conn
        self.client_id = client_id
        self.loop = loop
        self.on_keys = on_keys
        self.on_lost = on_lost
        self.sock = conn._sock
        self.sock.setblocking(False)
        self.reader = hiredis.Reader()
        self.alive = True
        loop.add_reader(self.sock.fileno(), self.drain)

    def drain(self) -> None:
        """Read and hand over every message that has arrived (nothing waits)."""
        if not self.alive:
            return
        sock, reader = self.sock, self.reader
        while True:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except CONNECTION_ERRORS as error:  # OSError among them
                self.lost(error)
                return
            if not data:
                self.lost(ConnectionError("redis closed the invalidation connection"))
                return
            reader.feed(data)
            try:
                message = reader.gets()
                while message is not False:
                    self.message(message)
                    message = reader.gets()
            except Exception as error:  # noqa: BLE001 - bytes that are not RESP: the cache cannot trust this connection
                self.lost(error)
                return

    def message(self, message: Any) -> None:
        if (
            isinstance(message, list)
            and len(message) == 3
            and message[0] == b"message"
            and message[1] == INVALIDATE_CHANNEL
        ):
            keys = message[2]
            self.on_keys(keys if isinstance(keys, list) else None)

    def lost(self, error: BaseException | None) -> None:
        if not self.alive:
            return
        self.alive = False
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, OSError, RuntimeError):  # the socket or the loop is closed already
            pass
        try:
            self.conn.disconnect()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
            pass
        if error is not None:
            log.warning("redis invalidation connection lost (%s): the near cache starts empty again", error)
        self.on_lost()

    def close(self) -> None:
        """Closed on purpose (the store closes)."""
        self.lost(None)
