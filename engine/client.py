"""Python clients of the socket protocol: a blocking ``Client`` and a pipelining ``AsyncClient``.

Both return the payload of a successful response (a decision map, a profile map, ...) and
raise ``NbaError`` (with ``code`` and ``message``) for an error response. ``ConnectionClosed``
(a subclass, code ``connection_closed``) means the connection ended before the answer came.

    with Client("127.0.0.1", 7411) as nba:
        decision = nba.decide({"customer_id": "c1", "type": "page_view"})

    async with await AsyncClient.connect("127.0.0.1", 7411) as nba:
        decisions = await asyncio.gather(*(nba.decide(e) for e in events))
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from typing import Any, Iterable

from nba.engine.protocol import NEED_MORE, FrameDecoder, FrameError, encode_frame
from nba.engine.settings import DEFAULT_PORT

CLIENT_MAX_FRAME_BYTES = 64 << 20
PIPELINE_WINDOW = 512  # Client.pipeline: requests sent ahead of their answers
PIPELINE_CHUNK = 128  # Client.pipeline: requests per write


class NbaError(Exception):
    """The server answered with an error (or the connection failed)."""

    def __init__(self, code: str, message: str, request_id: Any = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.id = request_id


class ConnectionClosed(NbaError):
    def __init__(self, message: str = "the connection was closed before the answer came"):
        super().__init__("connection_closed", message)


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

class Client(_Ops):
    """A blocking client on one connection. Not for use by several threads at once."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        timeout: float | None = 10.0,
        max_frame_bytes: int = CLIENT_MAX_FRAME_BYTES,
    ):
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder = FrameDecoder(max_frame_bytes)
        self._ids = itertools.count(1)

    def call(self, request: dict, key: str | None = None) -> Any:
        """Send one request (an ``id`` is added) and return its payload ``response[key]``."""
        request["id"] = request_id = next(self._ids)
        self._sock.sendall(encode_frame(request))
        response = self._receive()
        if type(response) is dict and response.get("id") != request_id and response.get("ok") is True:
            raise NbaError("bad_response", f"answer to request {response.get('id')!r} while waiting for {request_id!r}")
        return _payload(response, key)

    def pipeline(self, requests: Iterable[dict], window: int = PIPELINE_WINDOW) -> list[dict]:
        """Send the requests without waiting for each answer (at most ``window`` unanswered,
        so that neither side ever blocks on a full socket), and return the raw response maps
        in request order (an error response is returned, not raised)."""
        requests = list(requests)
        by_id: dict = {}
        for start in range(0, len(requests), PIPELINE_CHUNK):
            chunk = requests[start : start + PIPELINE_CHUNK]
            for request in chunk:
                request["id"] = next(self._ids)
            self._sock.sendall(b"".join(encode_frame(request) for request in chunk))
            while start + len(chunk) - len(by_id) > window:
                self._receive_into(by_id)
        while len(by_id) < len(requests):
            self._receive_into(by_id)
        return [by_id[request["id"]] for request in requests]

    def _receive_into(self, by_id: dict) -> None:
        response = self._receive()
        if type(response) is dict and response.get("id") is None and response.get("ok") is False:
            _payload(response, None)  # an unreadable-frame error: raises
        by_id[response.get("id") if type(response) is dict else None] = response

    def decide_many(self, events: Iterable[dict], limit: int = 1, explain: bool = False, dry_run: bool = False) -> list:
        """Pipelined decisions; raises the first error response's NbaError."""
        responses = self.pipeline(_decide_request(event, limit, explain, dry_run) for event in events)
        return [_payload(response, "decision") for response in responses]

    def _receive(self) -> Any:
        decoder = self._decoder
        while True:
            try:
                obj = decoder.next_frame()
            except FrameError as error:
                self.close()
                raise NbaError(error.code, error.message) from None
            if obj is not NEED_MORE:
                return obj
            data = self._sock.recv(1 << 16)
            if not data:
                raise ConnectionClosed()
            decoder.feed(data)

    def close(self) -> None:
        self._sock.close()

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
    go out together."""

    def __init__(self, transport: asyncio.Transport, protocol: _ClientProtocol):
        self._transport = transport
        self._protocol = protocol
        self._ids = itertools.count(1)

    @classmethod
    async def connect(
        cls, host: str = "127.0.0.1", port: int = DEFAULT_PORT, max_frame_bytes: int = CLIENT_MAX_FRAME_BYTES
    ) -> "AsyncClient":
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(lambda: _ClientProtocol(max_frame_bytes), host, port)
        return cls(transport, protocol)

    async def call(self, request: dict, key: str | None = None) -> Any:
        """Send one request (an ``id`` is added) and return its payload ``response[key]``."""
        return _payload(await self.request(request), key)

    async def request(self, request: dict) -> dict:
        """Send one request and return the raw response map (an error response is returned)."""
        protocol = self._protocol
        if protocol.transport is None:
            raise protocol.closed_error or ConnectionClosed()
        if not protocol._can_write.is_set():
            await protocol._can_write.wait()
            if protocol.transport is None:
                raise protocol.closed_error or ConnectionClosed()
        request["id"] = request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        protocol.pending[request_id] = future
        protocol.send(encode_frame(request))
        return await future

    async def close(self) -> None:
        self._protocol._flush()
        self._transport.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
