"""Python clients of the socket protocol: a blocking ``Client`` and a pipelining ``AsyncClient``.

Both return the payload of a successful response (a decision map, a profile map, ...) and
raise ``NbaError`` (with ``code`` and ``message``) for an error response.

Both survive a server that goes away and comes back:

- A call whose connection is lost before its answer came raises ``ConnectionClosed`` (code
  ``connection_closed``), unless the request is safe to send twice (``ping``, ``stats``,
  ``get_profile``, a ``dry_run`` decide): that one is sent once more on a new connection.
  A recording decide, ``put_profile`` or ``reload`` is never resent: the server may have
  applied it.
- The next call opens a new connection (and authenticates it when ``token=`` is given). A
  connection the server closed while it was idle is noticed before a request is written
  on it, so that request goes out on a fresh one.
- While the server cannot be reached, calls raise ``ServerUnavailable`` (code
  ``server_unavailable``, a subclass of ``ConnectionClosed``; the request was not sent).
  After a failed connect the next attempts wait for a backoff that doubles from
  ``backoff_s`` up to ``max_backoff_s``; calls made before then fail at once.

``Client`` is thread-safe: it keeps a pool of connections (at most ``max_connections``),
one per thread in use at a time, as redis-py's pool does. ``AsyncClient`` pipelines every
concurrent call of its event loop on one connection.

    with Client("127.0.0.1", 7411, token="...", ssl=ssl.create_default_context(cafile="ca.pem")) as nba:
        decision = nba.decide({"customer_id": "c1", "type": "page_view"})

    async with await AsyncClient.connect("127.0.0.1", 7411) as nba:
        decisions = await asyncio.gather(*(nba.decide(e) for e in events))
"""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
import ssl as ssl_module
import threading
import time
from typing import Any, Iterable

from nba.engine.protocol import NEED_MORE, FrameDecoder, FrameError, encode_frame
from nba.engine.settings import DEFAULT_PORT

CLIENT_MAX_FRAME_BYTES = 64 << 20
PIPELINE_WINDOW = 512  # Client.pipeline: requests sent ahead of their answers
PIPELINE_CHUNK = 128  # Client.pipeline: requests per write
BACKOFF_S = 0.05  # after a failed connect, the first wait before the next attempt
MAX_BACKOFF_S = 2.0  # the wait doubles after each failed connect, up to this

SAFE_OPS = frozenset({"ping", "stats", "get_profile"})  # reading only: safe to send twice


class NbaError(Exception):
    """The server answered with an error (or the connection failed)."""

    def __init__(self, code: str, message: str, request_id: Any = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.id = request_id


class ConnectionClosed(NbaError):
    """The connection ended before the answer came; the request may have been applied."""

    code_name = "connection_closed"

    def __init__(self, message: str = "the connection was closed before the answer came"):
        super().__init__(self.code_name, message)


class ServerUnavailable(ConnectionClosed):
    """No connection to the server could be opened; the request was not sent."""

    code_name = "server_unavailable"


class RequestTimeout(ConnectionClosed):
    """No answer within the client's ``timeout``; the connection was dropped (the
    request may have been applied) and the next call opens a new one."""

    code_name = "timeout"


def is_safe_to_resend(request: dict) -> bool:
    """True when sending ``request`` twice does no harm: it reads and records nothing."""
    op = request.get("op")
    return op in SAFE_OPS or (op == "decide" and request.get("dry_run") is True)


def _decide_request(event: dict, limit: int, explain: bool, dry_run: bool) -> dict:
    request = {"op": "decide", "event": event}
    if limit != 1:
        request["limit"] = limit
    if explain:
        request["explain"] = True
    if dry_run:
        request["dry_run"] = True
    return request


def _payload(response: Any, key: str | None) -> Any:
    """The payload of one response, or raise its error."""
    if type(response) is not dict:
        raise NbaError("bad_response", f"the server sent {type(response).__name__}, not a map")
    if response.get("ok") is not True:
        error = response.get("error") or {}
        raise NbaError(str(error.get("code", "unknown")), str(error.get("message", "")), response.get("id"))
    return response.get(key) if key else None


def _lost(request: dict, address: str, error: BaseException) -> ConnectionClosed:
    """The error of a call whose connection was lost with its request written."""
    if isinstance(error, ConnectionClosed):
        if isinstance(error, (ServerUnavailable, RequestTimeout)):
            return error
        why = error.message
    else:
        why = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    op = request.get("op")
    if is_safe_to_resend(request):
        return ConnectionClosed(f"the connection to {address} was lost before the answer to {op!r} came ({why})")
    return ConnectionClosed(
        f"the connection to {address} was lost before the answer to {op!r} came ({why}); "
        "the server may have applied it, so it was not sent again"
    )


class _Backoff:
    """After a failed connect, further attempts wait: BACKOFF_S, doubling up to MAX_BACKOFF_S."""

    def __init__(self, address: str, first_s: float, max_s: float):
        self.address = address
        self.first_s = first_s
        self.max_s = max_s
        self.wait_s = 0.0
        self.until = 0.0
        self.last_error = ""

    def check(self) -> None:
        """Raise ServerUnavailable while the wait after a failed connect lasts."""
        if self.until:
            left = self.until - time.monotonic()
            if left > 0:
                raise ServerUnavailable(
                    f"cannot connect to {self.address} ({self.last_error}); next attempt in {left:.2f} s"
                )

    def failed(self, error: BaseException) -> ServerUnavailable:
        self.wait_s = min(self.wait_s * 2, self.max_s) if self.wait_s else self.first_s
        self.until = time.monotonic() + self.wait_s
        self.last_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return ServerUnavailable(
            f"cannot connect to {self.address} ({self.last_error}); next attempt in {self.wait_s:.2f} s"
        )

    def succeeded(self) -> None:
        self.wait_s = 0.0
        self.until = 0.0


_PAYLOAD_KEY = {"decide": "decision", "get_profile": "profile", "stats": "stats", "reload": "reloaded", "ping": "pong"}


class _Ops:
    """The op methods, shared by both clients; ``call`` is theirs (sync or async)."""

    def decide(self, event: dict, limit: int = 1, explain: bool = False, dry_run: bool = False):
        return self.call(_decide_request(event, limit, explain, dry_run), "decision")

    def ping(self):
        return self.call({"op": "ping"}, "pong")

    def get_profile(self, customer_id: str):
        return self.call({"op": "get_profile", "customer_id": customer_id}, "profile")

    def put_profile(self, customer_id: str, profile: dict):
        return self.call({"op": "put_profile", "customer_id": customer_id, "profile": profile}, None)

    def reload(self):
        return self.call({"op": "reload"}, "reloaded")

    def stats(self):
        return self.call({"op": "stats"}, "stats")


# ------------------------------------------------------------------ blocking


class _Connection:
    """One connected (and, with a token, authenticated) socket of a ``Client``."""

    __slots__ = ("sock", "decoder", "poller", "timeout")

    def __init__(self, sock: socket.socket, max_frame_bytes: int, timeout: float | None):
        self.sock = sock
        self.timeout = timeout
        self.decoder = FrameDecoder(max_frame_bytes)
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def is_stale(self) -> bool:
        """True when the server has closed (or is closing) this idle connection.

        No answer is owed on an idle connection, so anything to read (the end of the
        stream, a reset, a last error frame) means the server is done with it. A poll
        with no wait: about a microsecond, and the request is never written into a
        connection the server already closed.
        """
        if not self.decoder.at_frame_boundary:
            return True
        sock = self.sock
        if not isinstance(sock, ssl_module.SSLSocket):
            return bool(self.poller.poll(0))
        if sock.pending():
            return True
        if not self.poller.poll(0):
            return False
        # TLS: the bytes may be only TLS records for the library (a TLS 1.3 server sends its
        # session tickets after the handshake); read without waiting to tell
        sock.setblocking(False)
        try:
            sock.recv(1)
            return True  # data while no answer is owed, or the end of the stream
        except ssl_module.SSLWantReadError:
            return False
        except OSError:
            return True
        finally:
            sock.settimeout(self.timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Any:
        """The next response; ConnectionClosed at the end of the stream, NbaError for a frame
        that cannot be read."""
        decoder = self.decoder
        while True:
            try:
                obj = decoder.next_frame()
            except FrameError as error:
                raise NbaError(error.code, error.message) from None
            if obj is not NEED_MORE:
                return obj
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionClosed()
            decoder.feed(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Client(_Ops):
    """A blocking client, safe to share between threads (a pool of connections).

    ``timeout``: seconds to wait for an answer (None: forever); ``connect_timeout`` for a
    connect and its TLS and auth handshake (default: ``timeout``). ``token``: sent in an
    ``auth`` request first on every new connection. ``ssl``: an ``ssl.SSLContext`` to speak
    TLS (the server's name checked against ``host`` when the context checks host names).
    ``max_connections``: the pool's limit (None: as many as threads call at once); a call
    finding every connection busy waits for one, up to ``timeout``. ``resend_safe``: send
    a safe request (see ``is_safe_to_resend``) once more when its connection is lost.
    The first connection is opened at once (``ServerUnavailable`` if it cannot be) unless
    ``connect_now`` is false.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        timeout: float | None = 10.0,
        max_frame_bytes: int = CLIENT_MAX_FRAME_BYTES,
        *,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        connect_timeout: float | None = None,
        max_connections: int | None = None,
        resend_safe: bool = True,
        backoff_s: float = BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        connect_now: bool = True,
    ):
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.max_frame_bytes = max_frame_bytes
        self.token = token
        self.ssl = ssl
        self.max_connections = max_connections
        self.resend_safe = resend_safe
        self._ids = itertools.count(1)
        self._free: list[_Connection] = []
        self._open = 0  # connections free or in use
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._backoff = _Backoff(self.address, backoff_s, max_backoff_s)
        self._closed = False
        if connect_now:
            self._release(self._acquire())

    # -- the pool

    def _acquire(self) -> _Connection:
        """A free connection that the server has not closed, or a new one."""
        while True:
            with self._lock:
                if self._closed:
                    raise ConnectionClosed("the client was closed")
                if self._free:
                    conn = self._free.pop()
                elif self.max_connections is None or self._open < self.max_connections:
                    self._open += 1
                    conn = None
                else:
                    if not self._released.wait(self.timeout):
                        raise RequestTimeout(f"all {self.max_connections} connections stayed busy for {self.timeout} s")
                    continue
            if conn is None:
                try:
                    return self._connect()
                except BaseException:
                    self._forget()
                    raise
            if not conn.is_stale():
                return conn
            self._discard(conn)

    def _release(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed:
                self._free.append(conn)
                if self.max_connections is not None:  # only then may a caller wait for one
                    self._released.notify()
                return
            self._open -= 1
        conn.close()

    def _discard(self, conn: _Connection) -> None:
        """Close a connection that failed or is out of step; it is never used again."""
        conn.close()
        self._forget()

    def _forget(self) -> None:
        with self._lock:
            self._open -= 1
            self._released.notify()

    def _connect(self) -> _Connection:
        self._backoff.check()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as error:
            raise self._backoff.failed(error) from error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl is not None:
                sock = self.ssl.wrap_socket(sock, server_hostname=self.host)
            conn = _Connection(sock, self.max_frame_bytes, self.timeout)
            if self.token is not None:
                self._authenticate(conn)
        except (OSError, ConnectionClosed) as error:  # TLS refused, or the connection dropped in the handshake
            sock.close()
            raise self._backoff.failed(error) from error
        except BaseException:  # the server refused the token (not a reason to wait), or interrupted
            sock.close()
            raise
        sock.settimeout(self.timeout)
        self._backoff.succeeded()
        return conn

    def _authenticate(self, conn: _Connection) -> None:
        request_id = next(self._ids)
        conn.send(encode_frame({"id": request_id, "op": "auth", "token": self.token}))
        response = conn.receive()
        if type(response) is not dict or response.get("ok") is not True:
            _payload(response, None)  # the server's error (unauthenticated): raises
            raise NbaError("bad_response", "the server did not accept the auth request")

    # -- requests

    def call(self, request: dict, key: str | None = None) -> Any:
        """Send one request (an ``id`` is added) and return its payload ``response[key]``."""
        request["id"] = request_id = next(self._ids)
        frame = encode_frame(request)
        attempts = 2 if self.resend_safe and is_safe_to_resend(request) else 1
        for attempt in range(attempts):
            conn = self._acquire()
            try:
                conn.send(frame)
                response = conn.receive()
            except socket.timeout:
                self._discard(conn)
                raise RequestTimeout(
                    f"no answer to {request.get('op')!r} from {self.address} within {self.timeout} s; "
                    "the connection was dropped"
                ) from None
            except (OSError, ConnectionClosed) as error:
                self._discard(conn)
                if attempt + 1 < attempts:
                    continue  # safe: send it again on a new connection
                raise _lost(request, self.address, error) from error
            except NbaError:  # an unreadable frame from the server
                self._discard(conn)
                raise
            except BaseException:  # interrupted half-way: the connection is out of step
                self._discard(conn)
                raise
            if type(response) is dict and response.get("id") != request_id:
                self._discard(conn)
                _payload(response, None)  # an error answered with id null (the server closes): raises
                raise NbaError(
                    "bad_response", f"answer to request {response.get('id')!r} while waiting for {request_id!r}"
                )
            self._release(conn)
            return _payload(response, key)
        raise AssertionError("unreachable")

    def pipeline(self, requests: Iterable[dict], window: int = PIPELINE_WINDOW) -> list[dict]:
        """Send the requests without waiting for each answer (at most ``window`` unanswered,
        so that neither side ever blocks on a full socket), and return the raw response maps
        in request order (an error response is returned, not raised).

        All on one connection; when it is lost half-way, ``ConnectionClosed`` is raised and
        nothing is resent (some of the requests may have been applied)."""
        requests = list(requests)
        conn = self._acquire()
        try:
            responses = self._pipeline_on(conn, requests, window)
        except (OSError, ConnectionClosed) as error:
            self._discard(conn)
            if isinstance(error, socket.timeout):
                raise RequestTimeout(f"no answer from {self.address} within {self.timeout} s") from None
            raise ConnectionClosed(
                f"the connection to {self.address} was lost half-way through a pipeline of "
                f"{len(requests)} requests; some may have been applied"
            ) from error
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)
        return responses

    def _pipeline_on(self, conn: _Connection, requests: list[dict], window: int) -> list[dict]:
        by_id: dict = {}
        for start in range(0, len(requests), PIPELINE_CHUNK):
            chunk = requests[start : start + PIPELINE_CHUNK]
            for request in chunk:
                request["id"] = next(self._ids)
            conn.send(b"".join(encode_frame(request) for request in chunk))
            while start + len(chunk) - len(by_id) > window:
                self._receive_into(conn, by_id)
        while len(by_id) < len(requests):
            self._receive_into(conn, by_id)
        return [by_id[request["id"]] for request in requests]

    @staticmethod
    def _receive_into(conn: _Connection, by_id: dict) -> None:
        response = conn.receive()
        if type(response) is dict and response.get("id") is None and response.get("ok") is False:
            _payload(response, None)  # an unreadable-frame error: raises
        by_id[response.get("id") if type(response) is dict else None] = response

    def decide_many(self, events: Iterable[dict], limit: int = 1, explain: bool = False, dry_run: bool = False) -> list:
        """Pipelined decisions; raises the first error response's NbaError."""
        responses = self.pipeline(_decide_request(event, limit, explain, dry_run) for event in events)
        return [_payload(response, "decision") for response in responses]

    def close(self) -> None:
        """Close every connection (those in use when they come back); later calls raise."""
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
            self._open -= len(free)
            self._released.notify_all()
        for conn in free:
            conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------ asyncio


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, max_frame_bytes: int):
        self.decoder = FrameDecoder(max_frame_bytes)
        self.pending: dict[int, asyncio.Future] = {}
        self.transport: asyncio.Transport | None = None
        self.closed_error: NbaError | None = None
        self._out: list[bytes] = []
        self._flush_handle = None
        self._can_write: asyncio.Event | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._can_write = asyncio.Event()
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        pending = self.pending
        while True:
            try:
                response = self.decoder.next_frame()
            except FrameError as error:
                self._fail_all(NbaError(error.code, error.message))
                self.transport.close()
                return
            if response is NEED_MORE:
                return
            request_id = response.get("id") if type(response) is dict else None
            future = pending.pop(request_id, None)
            if future is None:
                if request_id is None and type(response) is dict and response.get("ok") is False:
                    error = response.get("error") or {}
                    self._fail_all(NbaError(str(error.get("code")), str(error.get("message"))))
                continue
            if not future.done():
                future.set_result(response)

    def connection_lost(self, exc) -> None:
        self.transport = None
        self._fail_all(ConnectionClosed() if exc is None else ConnectionClosed(f"the connection failed: {exc}"))
        if self._can_write is not None:
            self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def send(self, frame: bytes) -> None:
        self._out.append(frame)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self.transport is not None and self._out:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _fail_all(self, error: NbaError) -> None:
        if self.closed_error is None:
            self.closed_error = error
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


class AsyncClient(_Ops):
    """An asyncio client that pipelines: any number of calls may wait at once on one
    connection; each gets the response with its own id. Writes made in one loop iteration
    go out together.

    Options as ``Client``'s (``token``, ``ssl``, ``connect_timeout``, ``resend_safe``,
    backoff); a lost connection fails the calls waiting on it (the safe ones are sent
    again on a new connection), and the next call opens a new one. Calls are not timed
    out by the client: wrap them in ``asyncio.timeout`` where that matters.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        max_frame_bytes: int = CLIENT_MAX_FRAME_BYTES,
        *,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        connect_timeout: float | None = 10.0,
        resend_safe: bool = True,
        backoff_s: float = BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ):
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.max_frame_bytes = max_frame_bytes
        self.token = token
        self.ssl = ssl
        self.connect_timeout = connect_timeout
        self.resend_safe = resend_safe
        self._ids = itertools.count(1)
        self._protocol: _ClientProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Future | None = None
        self._backoff = _Backoff(self.address, backoff_s, max_backoff_s)
        self._closed = False

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        max_frame_bytes: int = CLIENT_MAX_FRAME_BYTES,
        **options: Any,
    ) -> "AsyncClient":
        """A client with its first connection open (``ServerUnavailable`` if it cannot be)."""
        client = cls(host, port, max_frame_bytes, **options)
        await client._ready_protocol()
        return client

    async def _ready_protocol(self) -> _ClientProtocol:
        """The open connection's protocol, or a new connection's (one connect shared by
        every call that needs it)."""
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            return protocol
        if self._closed:
            raise ConnectionClosed("the client was closed")
        if self._connecting is None:
            self._backoff.check()
            self._connecting = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _ClientProtocol:
        try:
            loop = asyncio.get_running_loop()
            max_frame_bytes = self.max_frame_bytes
            transport = None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    transport, protocol = await loop.create_connection(
                        lambda: _ClientProtocol(max_frame_bytes),
                        self.host,
                        self.port,
                        ssl=self.ssl,
                        server_hostname=self.host if self.ssl is not None else None,
                    )
                    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if self.token is not None:
                        await self._authenticate(protocol)
            except BaseException as error:
                if transport is not None:
                    transport.close()
                if isinstance(error, (OSError, TimeoutError, ConnectionClosed)):
                    raise self._backoff.failed(error) from error
                raise  # the server refused the token (not a reason to wait), or cancelled
            self._backoff.succeeded()
            self._protocol, self._transport = protocol, transport
            return protocol
        finally:
            self._connecting = None

    async def _authenticate(self, protocol: _ClientProtocol) -> None:
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        protocol.pending[request_id] = future
        protocol.send(encode_frame({"id": request_id, "op": "auth", "token": self.token}))
        response = await future
        if type(response) is not dict or response.get("ok") is not True:
            _payload(response, None)  # the server's error (unauthenticated): raises
            raise NbaError("bad_response", "the server did not accept the auth request")

    async def call(self, request: dict, key: str | None = None) -> Any:
        """Send one request (an ``id`` is added) and return its payload ``response[key]``."""
        return _payload(await self.request(request), key)

    async def request(self, request: dict) -> dict:
        """Send one request and return the raw response map (an error response is returned)."""
        request["id"] = request_id = next(self._ids)
        frame = encode_frame(request)
        attempts = 2 if self.resend_safe and is_safe_to_resend(request) else 1
        for attempt in range(attempts):
            protocol = self._protocol
            if protocol is None or protocol.transport is None:
                protocol = await self._ready_protocol()
            if not protocol._can_write.is_set():
                await protocol._can_write.wait()
                if protocol.transport is None:  # lost before this request was written
                    if attempt + 1 < attempts:
                        continue
                    raise ConnectionClosed(
                        f"the connection to {self.address} was lost before "
                        f"{request.get('op')!r} was sent; it was not sent"
                    )
            future = asyncio.get_running_loop().create_future()
            protocol.pending[request_id] = future
            protocol.send(frame)
            try:
                return await future
            except ConnectionClosed as error:
                if attempt + 1 < attempts:
                    continue
                raise _lost(request, self.address, error) from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self._closed = True
        protocol, transport = self._protocol, self._transport
        if protocol is not None and transport is not None:
            protocol._flush()
            transport.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
