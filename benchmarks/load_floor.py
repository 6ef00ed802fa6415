"""The floor of `nba bench load`: the least a socket server on Redis does per decision.

It speaks nba's socket protocol (4-byte length, msgpack map) on the same stack as
`nba serve` (asyncio + uvloop) and, per decide request, sends one pipelined
HGETALL (the profile) + ZRANGEBYSCORE (the history of the event's type within its window,
benchmarks/load_workload.py) on nba's keys on one shared Redis connection, reads the
replies in order with hiredis, and answers a decision of the shape nba answers (the
default action): no rules, no writes, no decoding of what Redis returned.

    python -m benchmarks.load_floor --redis redis://127.0.0.1:PORT/0 [--port 0]

Other ops are answered ``unknown_op``. It logs ``listening on 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from urllib.parse import urlparse

import hiredis
import msgpack

from benchmarks.load_workload import WINDOWS

KEY_PREFIX = "nba"  # the key layout of engine/store/redis (nba:{CUSTOMER}:p, nba:{CUSTOMER}:h:TYPE)
REPLIES_PER_READ = 2


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def read_request(customer_id: str, event_type: str, time_s: float) -> bytes:
    """The RESP bytes of one read: HGETALL of the profile, ZRANGEBYSCORE of the history of
    ``event_type`` after ``time_s`` minus its window."""
    base = f"{KEY_PREFIX}:{{{customer_id}}}".encode()
    after = b"(" + repr(time_s - WINDOWS.get(event_type, 0.0)).encode()
    return (
        b"*2\r\n$7\r\nHGETALL\r\n"
        + bulk(base + b":p")
        + b"*4\r\n$13\r\nZRANGEBYSCORE\r\n"
        + bulk(base + b":h:" + event_type.encode())
        + bulk(after)
        + b"$4\r\n+inf\r\n"
    )


def decision_response(request_id, customer_id) -> bytes:
    body = msgpack.packb(
        {
            "id": request_id,
            "ok": True,
            "decision": {
                "customer_id": customer_id,
                "rule": "default",
                "action": "browse_recommendations",
                "channel": "web",
                "params": {},
                "alternatives": [],
                "degraded": False,
            },
        }
    )
    return len(body).to_bytes(4, "big") + body


def error_response(request_id, code: str, message: str) -> bytes:
    body = msgpack.packb({"id": request_id, "ok": False, "error": {"code": code, "message": message}})
    return len(body).to_bytes(4, "big") + body


class RedisLink(asyncio.Protocol):
    """One connection to Redis: reads sent pipelined, replies matched to them in order."""

    def __init__(self):
        self.reader = hiredis.Reader()
        self.waiting: collections.deque = collections.deque()  # (client, request id, customer id)
        self.replies: list = []
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, client: "FloorProtocol", request_id, customer_id: str, packed: bytes) -> None:
        self.waiting.append((client, request_id, customer_id))
        self.transport.write(packed)

    def data_received(self, data: bytes) -> None:
        reader, replies, waiting = self.reader, self.replies, self.waiting
        reader.feed(data)
        answers: dict = {}  # client -> its responses of this read, written at once
        while (reply := reader.gets()) is not False:
            replies.append(reply)
            if len(replies) == REPLIES_PER_READ:
                replies.clear()
                client, request_id, customer_id = waiting.popleft()
                answers.setdefault(client, []).append(decision_response(request_id, customer_id))
        for client, responses in answers.items():
            client.write(b"".join(responses))

    def connection_lost(self, exc) -> None:
        print(f"redis connection lost: {exc}", file=sys.stderr, flush=True)
        asyncio.get_event_loop().stop()


class FloorProtocol(asyncio.Protocol):
    def __init__(self, redis: RedisLink):
        self.redis = redis
        self.buffer = bytearray()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos, size = 0, len(buffer)
        errors = []
        while size - pos >= 4:
            end = pos + 4 + int.from_bytes(buffer[pos : pos + 4], "big")
            if end > size:
                break
            try:
                request = msgpack.unpackb(buffer[pos + 4 : end])
            except Exception:  # noqa: BLE001 - not one msgpack value: answered and closed, as nba does
                self.write(b"".join(errors) + error_response(None, "bad_frame", "not one msgpack value"))
                self.transport.close()
                return
            pos = end
            event = request.get("event") if isinstance(request, dict) else None
            request_id = request.get("id") if isinstance(request, dict) else None
            if not isinstance(event, dict) or request.get("op") != "decide":
                errors.append(error_response(request_id, "unknown_op", "the floor server only decides"))
                continue
            customer_id, event_type, when = event.get("customer_id"), event.get("type"), event.get("time")
            if not isinstance(customer_id, str) or not isinstance(event_type, str):
                errors.append(error_response(request_id, "bad_event", "customer_id and type must be strings"))
                continue
            when = when if isinstance(when, (int, float)) else time.time()
            self.redis.send(self, request_id, customer_id, read_request(customer_id, event_type, when))
        del buffer[:pos]
        if errors:
            self.write(b"".join(errors))


async def serve(redis_url: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    address = urlparse(redis_url)
    _, redis = await loop.create_connection(RedisLink, address.hostname or "127.0.0.1", address.port or 6379)
    server = await loop.create_server(lambda: FloorProtocol(redis), "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/0")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    try:
        (uvloop.run if uvloop else asyncio.run)(serve(args.redis, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
