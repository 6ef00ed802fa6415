"""An open-loop load generator for nba's socket protocol (4-byte length, msgpack map).

Request i (its frame carries id i) is due at ``start + i / rate`` and goes out on
connection ``i % connections`` as soon as it is due, whatever the server has answered:
a slow server does not slow the offered load down, it only makes requests wait (in the
server, in the sockets, or in this process's buffer of bytes not yet taken by the
socket). Each request's latency runs from the time it was due to the time its response
was read, so the time a request spends queued anywhere counts. Responses are matched to
requests by id; a request not answered within ``drain_s`` after the last one was due
counts as unanswered (and as an infinite latency in the percentiles).

Two implementations, chosen with ``generator``:

- ``select`` (the default): one thread, non-blocking sockets and ``select.select``,
  whose timeout is in microseconds, so that it wakes when the next request is due.
- ``uvloop``: asyncio on uvloop, a sender task sleeping until the next request is due
  and a protocol per connection. uvloop's timers (libuv's) count whole milliseconds, so
  requests go out up to a millisecond after they were due, in bursts: the lateness
  figures show it, and it adds to every latency measured.

Both report their own CPU time and how late they sent (`lateness`), so that a run can
show that the generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import math
import select
import socket
import time
from dataclasses import dataclass, field

import msgpack

from benchmarks.processes import own_cpu_seconds

GENERATORS = ("select", "uvloop")
START_DELAY_S = 0.05
READ_SIZE = 1 << 18


@dataclass
class Received:
    """What came back on the connections, to be decoded once the turn is over."""

    frames: list = field(default_factory=list)  # (time read, body)
    closed: int = 0  # connections the server closed


def split_frames(buffer: bytes, when: float, frames: list) -> bytes:
    """Append (``when``, body) for each whole frame of ``buffer``; return the rest."""
    pos, size = 0, len(buffer)
    while size - pos >= 4:
        end = pos + 4 + int.from_bytes(buffer[pos : pos + 4], "big")
        if end > size:
            break
        frames.append((when, buffer[pos + 4 : end]))
        pos = end
    return buffer[pos:]


def connect(port: int, connections: int) -> list[socket.socket]:
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
    return socks


class SelectGenerator:
    """The ``select`` implementation: one thread, non-blocking sockets."""

    def __init__(self, port: int, frames: list[bytes], rate: float, connections: int):
        self.socks = connect(port, connections)
        for sock in self.socks:
            sock.setblocking(False)
        self.by_fd = {sock.fileno(): n for n, sock in enumerate(self.socks)}
        self.frames, self.rate, self.connections = frames, rate, connections
        self.outgoing = [bytearray() for _ in self.socks]  # due, not yet taken by the socket
        self.incoming = [b""] * connections  # the start of a frame not yet whole
        self.live = list(range(connections))
        self.readers = list(self.socks)
        self.backlogged: set[int] = set()  # connections with bytes in ``outgoing``
        self.received = Received()
        self.lateness: list[float] = []
        self.answered = self.next_index = 0

    def run(self, drain_s: float, start: float | None) -> dict:
        clock, frames, count, rate = time.perf_counter, self.frames, len(self.frames), self.rate
        interval = 1.0 / rate
        cpu_started = own_cpu_seconds()
        start = start if start is not None else clock() + START_DELAY_S
        deadline = start + (count - 1) * interval + drain_s
        while True:
            now = clock()
            if self.next_index < count and now >= start:
                self.send_due(min(count, int((now - start) * rate) + 1), now - (start + self.next_index * interval))
            if self.next_index >= count:
                if self.answered >= count or now >= deadline or not self.live:
                    break
                timeout = deadline - now
            else:
                timeout = start + self.next_index * interval - now
            writers = [self.socks[n] for n in self.backlogged] if self.backlogged else []
            readable, writable, _ = select.select(self.readers, writers, [], max(0.0, timeout))
            now = clock()
            for sock in writable:
                self.flush(self.by_fd[sock.fileno()])
            for sock in readable:
                self.read(self.by_fd[sock.fileno()], now)
        cpu = own_cpu_seconds() - cpu_started
        for sock in self.socks:
            sock.close()
        return summarize(frames, rate, start, self.received, self.lateness, cpu, self.next_index)

    def send_due(self, due: int, late: float) -> None:
        """Requests up to ``due`` (exclusive) go out; the first of them is ``late`` seconds late."""
        if due <= self.next_index:
            return
        self.lateness.append(late)
        outgoing, frames, connections = self.outgoing, self.frames, self.connections
        for i in range(self.next_index, due):
            outgoing[i % connections] += frames[i]
        self.next_index = due
        for n in list(self.live):
            self.flush(n)

    def flush(self, n: int) -> None:
        if n not in self.live or not self.outgoing[n]:
            return
        try:
            sent = self.socks[n].send(self.outgoing[n])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close(n)
            return
        del self.outgoing[n][:sent]
        if self.outgoing[n]:
            self.backlogged.add(n)
        else:
            self.backlogged.discard(n)

    def read(self, n: int, now: float) -> None:
        try:
            data = self.socks[n].recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close(n)
            return
        frames = self.received.frames
        before = len(frames)
        self.incoming[n] = split_frames(self.incoming[n] + data if self.incoming[n] else data, now, frames)
        self.answered += len(frames) - before

    def close(self, n: int) -> None:
        """The server closed connection ``n``: its requests, sent or not, stay unanswered."""
        if n in self.live:
            self.live.remove(n)
            self.readers.remove(self.socks[n])
            self.backlogged.discard(n)
            self.received.closed += 1


def run_select(
    port: int, frames: list[bytes], rate: float, connections: int, drain_s: float, start: float | None
) -> dict:
    return SelectGenerator(port, frames, rate, connections).run(drain_s, start)


def run_uvloop(
    port: int, frames: list[bytes], rate: float, connections: int, drain_s: float, start: float | None
) -> dict:
    try:
        import uvloop
    except ImportError:
        uvloop = None
    return (uvloop.run if uvloop else asyncio.run)(_uvloop_turn(port, frames, rate, connections, drain_s, start))


class _Reader(asyncio.Protocol):
    def __init__(self, received: Received, all_answered: asyncio.Event, count: int):
        self.received, self.all_answered, self.count = received, all_answered, count
        self.buffer = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        frames = self.received.frames
        self.buffer = split_frames(self.buffer + data if self.buffer else data, time.perf_counter(), frames)
        if len(frames) >= self.count:
            self.all_answered.set()

    def connection_lost(self, exc) -> None:
        self.received.closed += 1


async def _uvloop_turn(
    port: int, frames: list[bytes], rate: float, connections: int, drain_s: float, start: float | None
) -> dict:
    loop = asyncio.get_running_loop()
    received, all_answered = Received(), asyncio.Event()
    count, interval = len(frames), 1.0 / rate
    readers = []
    for _ in range(connections):
        _, reader = await loop.create_connection(lambda: _Reader(received, all_answered, count), "127.0.0.1", port)
        readers.append(reader)
    lateness: list[float] = []
    clock = time.perf_counter
    cpu_started = own_cpu_seconds()
    start = start if start is not None else clock() + START_DELAY_S
    next_index = 0
    while next_index < count:
        now = clock()
        due = min(count, int((now - start) * rate) + 1) if now >= start else 0
        if due > next_index:
            lateness.append(now - (start + next_index * interval))
            batches = [[] for _ in readers]
            for i in range(next_index, due):
                batches[i % connections].append(frames[i])
            for reader, batch in zip(readers, batches):
                if batch and not reader.transport.is_closing():
                    reader.transport.write(b"".join(batch))
            next_index = due
        if next_index < count:
            await asyncio.sleep(max(0.0, start + next_index * interval - clock()))
    try:
        await asyncio.wait_for(all_answered.wait(), max(0.0, start + (count - 1) * interval + drain_s - clock()))
    except asyncio.TimeoutError:
        pass
    cpu = own_cpu_seconds() - cpu_started
    for reader in readers:
        reader.transport.close()
    return summarize(frames, rate, start, received, lateness, cpu, next_index)


def run_turn(
    port: int,
    frames: list[bytes],
    rate: float,
    connections: int,
    drain_s: float,
    generator: str = "select",
    start: float | None = None,
) -> dict:
    """Offer ``frames`` (ids 0 .. n-1) at ``rate`` a second over ``connections``, the first
    due at ``start`` (a ``time.perf_counter()`` time; default: right away); the figures."""
    run = run_select if generator == "select" else run_uvloop
    return run(port, frames, rate, connections, drain_s, start)


def summarize(
    frames: list[bytes], rate: float, start: float, received: Received, lateness: list, cpu: float, sent: int
) -> dict:
    """The turn's figures from the responses (decoded here, after the clock stopped)."""
    count, interval = len(frames), 1.0 / rate
    latencies = [math.inf] * count
    ok = degraded = wrong = 0
    errors: dict[str, int] = {}
    last_read = start
    for when, body in received.frames:
        try:
            response = msgpack.unpackb(body)
            request_id = response.get("id")
        except Exception:  # noqa: BLE001 - an unreadable response is counted, not fatal
            wrong += 1
            continue
        if not isinstance(request_id, int) or not 0 <= request_id < count or latencies[request_id] != math.inf:
            wrong += 1  # unknown, duplicated, or a connection-level error (id null)
            if response.get("ok") is False:
                code = response.get("error", {}).get("code", "?")
                errors[code] = errors.get(code, 0) + 1
            continue
        latencies[request_id] = when - (start + request_id * interval)
        last_read = max(last_read, when)
        if response.get("ok", True) is not True:  # the echo server answers no "ok"
            code = (response.get("error") or {}).get("code", "?")
            errors[code] = errors.get(code, 0) + 1
        elif (response.get("decision") or {}).get("degraded"):
            degraded += 1
        else:
            ok += 1
    answered = sum(1 for latency in latencies if latency != math.inf)
    span = max(last_read, start + (count - 1) * interval) - start
    ordered = sorted(latencies)
    late = sorted(lateness) or [0.0]
    return {
        "offered_per_s": rate,
        "requests": count,
        "sent": sent,
        "answered": answered,
        "unanswered": count - answered,
        "achieved_per_s": answered / span if span > 0 else 0.0,
        "ok": ok,
        "errors": sum(errors.values()),
        "error_codes": errors,
        "degraded": degraded,
        "wrong": wrong,
        "connections_closed": received.closed,
        "p50_ms": percentile_ms(ordered, 0.50),
        "p90_ms": percentile_ms(ordered, 0.90),
        "p99_ms": percentile_ms(ordered, 0.99),
        "p999_ms": percentile_ms(ordered, 0.999),
        "max_ms": ordered[-1] * 1000,
        "generator_cpu_s": cpu,
        "generator_cpu_us": cpu / max(1, count) * 1e6,
        "generator_core_share": cpu / span if span > 0 else 0.0,
        "lateness_p50_ms": percentile_ms(late, 0.50),
        "lateness_p99_ms": percentile_ms(late, 0.99),
        "lateness_max_ms": late[-1] * 1000,
        "wall_s": span,
    }


def percentile_ms(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted seconds, in milliseconds (inf: unanswered)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1] * 1000
