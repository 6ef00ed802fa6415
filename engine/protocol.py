"""The socket protocol of INTERFACES.md, without sockets (sans-IO).

A frame is a 4-byte big-endian unsigned length, then that many bytes of one msgpack value.
``FrameDecoder`` is fed bytes and hands out decoded values one at a time, or raises
``FrameError`` when the stream cannot be read any further (the connection must then be
closed). ``parse_request`` turns one decoded value into a ``Request`` or raises
``BadRequest`` (the connection stays open). ``encode_frame`` and the ``*_response``
helpers build what goes back.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size

OPS = frozenset({"auth", "decide", "ping", "get_profile", "put_profile", "reload", "stats"})
CUSTOMER_OPS = frozenset({"decide", "get_profile", "put_profile"})
# What each role of `--auth` may do (INTERFACES.md "Security of the socket").
ROLE_OPS = {
    "client": frozenset({"auth", "decide", "ping", "get_profile", "stats"}),
    "admin": OPS,
}

# Error codes of the protocol.
BAD_REQUEST = "bad_request"  # not a map, a missing or mistyped argument
UNKNOWN_OP = "unknown_op"
BAD_EVENT = "bad_event"  # raised by the engine (EventError)
BAD_FRAME = "bad_frame"  # fatal: not msgpack, or cut off mid-frame
FRAME_TOO_LARGE = "frame_too_large"  # fatal: length over the server's limit
LOAD_FAILED = "load_failed"  # reload: the new ruleset does not load; the old one serves on
INTERNAL = "internal"  # a bug; logged with its traceback
UNAUTHENTICATED = "unauthenticated"  # no `auth` yet (stays open), a wrong token or a stranger (closes)
FORBIDDEN = "forbidden"  # an op outside the token's role
FRAME_TIMEOUT = "frame_timeout"  # fatal: a frame begun was not whole within the server's deadline
TOO_MANY_CONNECTIONS = "too_many_connections"  # fatal: the server holds its limit of connections
OVERLOADED = "overloaded"  # fatal: unfinished frames of all connections hold the server's byte limit
FATAL_CODES = frozenset({BAD_FRAME, FRAME_TOO_LARGE, FRAME_TIMEOUT, TOO_MANY_CONNECTIONS, OVERLOADED})
# (answered with id null, then the connection closes; so is `unauthenticated` for a wrong
# token or a client refused by protected mode)

NEED_MORE = object()  # FrameDecoder.next_frame: no complete frame buffered yet


class FrameError(Exception):
    """The byte stream cannot be read any further; answer with ``id: null`` and close."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class BadRequest(Exception):
    """A readable frame that is not a valid request; answered, and the connection stays open."""

    def __init__(self, request_id: Any, code: str, message: str):
        super().__init__(message)
        self.id = request_id
        self.code = code
        self.message = message


def _unpack(data) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, timestamp=1)


_unpackb = msgpack.unpackb
_header_from = HEADER.unpack_from
assert HEADER_SIZE == 4


class FrameDecoder:
    """Turns a byte stream into decoded msgpack values, one frame at a time.

    ``feed`` appends bytes; ``next_frame`` returns the next decoded value, or ``NEED_MORE``,
    or raises ``FrameError``. A length over ``max_frame_bytes`` is refused as soon as the
    header arrives, before its body is buffered. ``at_frame_boundary`` tells whether the
    stream may end here (``False``: a peer closing now cut a frame off).
    """

    __slots__ = ("max_frame_bytes", "_buf", "_pos")

    def __init__(self, max_frame_bytes: int):
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def at_frame_boundary(self) -> bool:
        return len(self._buf) == self._pos

    def buffered(self) -> int:
        """Bytes received and not yet handed out as frames."""
        return len(self._buf) - self._pos

    def release(self) -> None:
        """Drop the buffer (the connection is gone)."""
        self._buf = bytearray()
        self._pos = 0

    def next_frame(self) -> Any:
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if size - pos < 4:  # HEADER_SIZE
            return NEED_MORE
        (length,) = _header_from(buf, pos)
        if length > self.max_frame_bytes:
            raise FrameError(FRAME_TOO_LARGE, f"frame of {length} bytes is over the limit of {self.max_frame_bytes}")
        end = pos + 4 + length
        if end > size:
            return NEED_MORE
        self._pos = end
        try:  # _unpack, inlined: this runs for every request
            return _unpackb(buf[pos + 4 : end], raw=False, strict_map_key=False, timestamp=1)
        except Exception as exc:  # noqa: BLE001 - any malformed msgpack: ExtraData, FormatError, StackError, ...
            raise FrameError(BAD_FRAME, f"frame is not one msgpack value: {type(exc).__name__}: {exc}") from None

    def close_error(self) -> FrameError | None:
        """The error to report when the peer closes now: None when what is buffered is whole
        frames (perhaps not yet read), a ``bad_frame`` error when the last one is cut off."""
        buf, pos, size = self._buf, self._pos, len(self._buf)
        while size - pos >= HEADER_SIZE:
            end = pos + HEADER_SIZE + HEADER.unpack_from(buf, pos)[0]
            if end > size:
                break
            pos = end
        if pos == size:
            return None
        return FrameError(BAD_FRAME, f"connection closed mid-frame ({size - pos} bytes of an unfinished frame)")


class Request:
    """One parsed request. Fields an op does not use are None."""

    __slots__ = ("id", "op", "event", "limit", "explain", "dry_run", "customer_id", "profile", "token")

    def __init__(self, request_id: Any, op: str):
        self.id = request_id
        self.op = op
        self.event: dict | None = None
        self.limit = 1
        self.explain = False
        self.dry_run = False
        self.customer_id: str | None = None
        self.profile: dict | None = None
        self.token: str | None = None  # `auth` only; never logged

    def __repr__(self) -> str:
        return f"Request(id={self.id!r}, op={self.op!r}, customer_id={self.customer_id!r})"


def plain_decide_event(obj: Any) -> dict | None:
    """The event of ``obj`` when it is the common request ``{id, op: "decide", event}`` with
    every option at its default, else None (then ``parse_request`` says what it is).

    The server's fast path, and ``parse_request``'s shortcut: a specialisation of
    ``check_request``, which accepts every request this accepts as a decide of that event
    with limit 1, no explanation, no dry run (tests/test_protocol.py checks that on
    generated maps). It looks at exactly three keys, so a map of any other shape takes the
    general path.
    """
    if obj.__class__ is dict and len(obj) == 3 and "id" in obj and obj.get("op") == "decide":
        event = obj.get("event")
        if event.__class__ is dict:
            return event
    return None


def parse_request(obj: Any) -> Request:
    """Check one decoded frame and return the request it holds, or raise ``BadRequest``."""
    event = plain_decide_event(obj)
    if event is not None:  # the common decide: the fast path's case, as a Request
        request = Request(obj["id"], "decide")
        request.event = event
        customer_id = event.get("customer_id")
        request.customer_id = customer_id if type(customer_id) is str else None
        return request
    return check_request(obj)


def check_request(obj: Any) -> Request:
    """``parse_request`` without its shortcut: every check, whatever the request."""
    if type(obj) is not dict:
        raise BadRequest(None, BAD_REQUEST, f"a request must be a map, not {_kind(obj)}")
    request_id = obj.get("id")
    op = obj.get("op")
    if type(op) is not str:
        raise BadRequest(request_id, BAD_REQUEST, "'op' must be a string" if op is not None else "'op' is missing")
    if op not in OPS:
        raise BadRequest(request_id, UNKNOWN_OP, f"unknown op {op!r}; ops are {', '.join(sorted(OPS))}")
    request = Request(request_id, op)
    if op == "decide":
        _parse_decide(obj, request)
    elif op == "get_profile":
        request.customer_id = _customer_id(obj, request_id)
    elif op == "put_profile":
        request.customer_id = _customer_id(obj, request_id)
        request.profile = _profile(obj, request_id)
    elif op == "auth":
        token = obj.get("token")
        if type(token) is not str or not token:
            raise BadRequest(request_id, BAD_REQUEST, "'token' must be a non-empty string")
        request.token = token
    elif op == "reload" and "path" in obj:
        raise BadRequest(
            request_id, BAD_REQUEST, "'reload' takes no path: the server reloads the path it was started with"
        )
    return request


def _parse_decide(obj: dict, request: Request) -> None:
    event = obj.get("event")
    if type(event) is not dict:
        raise BadRequest(request.id, BAD_REQUEST, f"'event' must be a map, not {_kind(event)}")
    request.event = event
    customer_id = event.get("customer_id")
    request.customer_id = customer_id if type(customer_id) is str else None
    limit = obj.get("limit", 1)
    if type(limit) is not int or limit < 1:
        raise BadRequest(request.id, BAD_REQUEST, f"'limit' must be a whole number of at least 1, not {limit!r}")
    request.limit = limit
    request.explain = _flag(obj, "explain", request.id)
    request.dry_run = _flag(obj, "dry_run", request.id)


def _flag(obj: dict, name: str, request_id: Any) -> bool:
    value = obj.get(name, False)
    if value is None:
        return False
    if type(value) is not bool:
        raise BadRequest(request_id, BAD_REQUEST, f"'{name}' must be true or false, not {value!r}")
    return value


def _customer_id(obj: dict, request_id: Any) -> str:
    customer_id = obj.get("customer_id")
    if type(customer_id) is not str or not customer_id:
        raise BadRequest(request_id, BAD_REQUEST, "'customer_id' must be a non-empty string")
    return customer_id


def _profile(obj: dict, request_id: Any) -> dict:
    profile = obj.get("profile")
    if type(profile) is not dict:
        raise BadRequest(request_id, BAD_REQUEST, f"'profile' must be a map, not {_kind(profile)}")
    return profile


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a map", list: "a list", str: "a string", bytes: "bytes", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


# ---------------------------------------------------------------- responses


def ok_response(request_id: Any, key: str | None = None, value: Any = None) -> dict:
    if key is None:
        return {"id": request_id, "ok": True}
    return {"id": request_id, "ok": True, key: value}


def error_response(request_id: Any, code: str, message: str) -> dict:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def encodable(value: Any) -> Any:
    """msgpack's ``default``: what to send for a value msgpack has no form for.

    An integer beyond 64 bits (a rule can compute 3 * 10^30) goes as the nearest float
    (or an infinity past the floats' range); a set or tuple as a list. Anything else
    raises TypeError, as msgpack would.
    """
    if isinstance(value, int):  # called for ints only when they do not fit 64 bits
        try:
            return float(value)
        except OverflowError:
            return float("inf") if value > 0 else float("-inf")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"can not serialize {type(value).__name__!r} object")


def new_packer() -> msgpack.Packer:
    """The packer of responses (every value an engine can produce is encodable)."""
    return msgpack.Packer(use_bin_type=True, default=encodable)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_frame(obj: Any) -> bytes:
    """One whole frame: the length header, then the msgpack body."""
    body = pack(obj)
    return HEADER.pack(len(body)) + body
