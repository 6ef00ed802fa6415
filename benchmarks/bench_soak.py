"""Soak: `nba serve` under a steady load for minutes; do its memory and descriptors stay flat?

    python -m benchmarks.bench_soak [--minutes 10] [--rate N] [--interval 5] [--connections 4]
    nba bench soak ...

Starts `python -m nba.engine.server` on the in-memory store with DSL.md's example ruleset (the
one of bench_server). Unless ``--rate`` is given, first finds the knee (approximated by
the server's saturated pipelined throughput over a few seconds) and runs at half of it.
The load is open-loop: ``--connections`` connections each send their share of decide
requests (dry runs unless ``--record``: the in-memory store keeps every recorded event
within the rules' windows, so with writes RSS grows with the state, by design, and would
hide a leak) every 10 ms, whatever the answers do, while a reader per connection checks every
answer (its id, `ok`). Every second one more connection is opened, used for a few requests
and closed (churn: a descriptor or buffer kept per connection would show), and every
``--interval`` seconds the server's RSS (/proc/PID/status VmRSS) and open file descriptors
(/proc/PID/fd) are sampled and printed. At the end it compares the first samples after the
warm-up with the last ones and prints whether RSS and descriptors stayed flat (RSS within
max(5 MiB, 5%), descriptors within 2), the rate achieved, the answers' latency
percentiles and the number of wrong or missing answers.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import msgpack

from benchmarks.bench_server import HEADER, RULES, decide_frames, make_events, pipelined
from benchmarks.processes import Process

BATCH_EVERY_S = 0.01
FLAT_RSS_BYTES = 5 << 20
FLAT_RSS_SHARE = 0.05
FLAT_FDS = 2


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def find_knee(port: int, customers: int, seconds: float = 3.0) -> float:
    """Requests per second the server sustains with every request pipelined (its ceiling)."""
    events = make_events(20_000, customers, seed=99, prefix="knee")
    frames = decide_frames(events, 0)
    pipelined(port, frames[:5000], 0, True)  # warm-up
    done, total, started = 0, 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        result = pipelined(port, frames, 0, True)
        done += result["requests"]
        total += result["seconds"]
    return done / total


class Loader:
    """One connection sending ``rate`` decide requests a second in batches, open-loop,
    and a thread reading and checking the answers (in order: ids ``first_id``, +1, ...)."""

    def __init__(self, port: int, rate: float, events: list[dict], first_id: int, record: bool):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rate = rate
        # Each request is a pre-packed map with its id as a fixed-width uint64 (0xcf), so
        # that the sender, a Python thread, keeps up with the rate.
        head = b"\x84" if not record else b"\x83"
        tail = b"" if record else msgpack.packb("dry_run") + msgpack.packb(True)
        self.parts = [
            (
                head + msgpack.packb("id") + b"\xcf",
                msgpack.packb("op") + msgpack.packb("decide") + msgpack.packb("event") + msgpack.packb(event) + tail,
            )
            for event in events
        ]
        self.first_id = first_id
        self.sent = 0
        self.answered = 0
        self.wrong = 0
        self.latencies: list[float] = []
        self.batches: deque = deque()  # (index of the batch's last request + 1, time sent)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def run_sender(self) -> None:
        owed = 0.0
        tick = time.perf_counter()
        parts, n, first_id = self.parts, len(self.parts), self.first_id
        header = HEADER.pack
        while not self.stop.is_set():
            tick += BATCH_EVERY_S
            owed += self.rate * BATCH_EVERY_S
            count = int(owed)
            owed -= count
            if count:
                out = []
                for i in range(self.sent, self.sent + count):
                    head, rest = parts[i % n]
                    body = head + (first_id + i).to_bytes(8, "big") + rest
                    out.append(header(len(body)) + body)
                self.batches.append((self.sent + count, time.perf_counter()))
                try:
                    self.sock.sendall(b"".join(out))
                except OSError:
                    return
                self.sent += count
            delay = tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    def run_reader(self) -> None:
        buf = b""
        batches = self.batches
        while True:
            try:
                data = self.sock.recv(1 << 18)
            except OSError:
                return
            if not data:
                return
            buf = buf + data if buf else data
            pos, size = 0, len(buf)
            now = time.perf_counter()
            while size - pos >= 4:
                end = pos + 4 + HEADER.unpack_from(buf, pos)[0]
                if end > size:
                    break
                response = msgpack.unpackb(buf[pos + 4 : end], raw=False)
                pos = end
                if response.get("id") != self.first_id + self.answered or response.get("ok") is not True:
                    self.wrong += 1
                self.answered += 1
                while batches and batches[0][0] < self.answered:
                    batches.popleft()
                if batches:
                    self.latencies.append(now - batches[0][1])
            buf = buf[pos:]

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self.run_sender, daemon=True),
            threading.Thread(target=self.run_reader, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def finish(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self.threads[0].join()
        deadline = time.monotonic() + timeout
        while self.answered < self.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        self.sock.close()
        self.threads[1].join(5)


def churn(port: int, frames: list[bytes], stop: threading.Event, counts: dict) -> None:
    """Every second: a new connection, a few requests, a close."""
    while not stop.wait(1.0):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"".join(frames[:5]))
                got = 0
                buf = b""
                while got < 5:
                    data = sock.recv(1 << 16)
                    if not data:
                        break
                    buf += data
                    while len(buf) >= 4 and len(buf) >= 4 + HEADER.unpack_from(buf, 0)[0]:
                        buf = buf[4 + HEADER.unpack_from(buf, 0)[0] :]
                        got += 1
                counts["churned"] += 1
                counts["churn_missing"] += 5 - got
        except OSError:
            counts["churn_failed"] += 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nba bench soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, help="requests per second (default: half the knee)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument(
        "--record",
        action="store_true",
        help="record the decisions (the in-memory store then grows with every customer's history, "
        "so RSS grows by design); default: dry runs, which exercise everything but the write",
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds left out of the comparison (default: a tenth)"
    )
    args = parser.parse_args(argv)

    rules_dir = tempfile.mkdtemp(prefix="nba-soak-")
    rules = Path(rules_dir, "cart.rules")
    rules.write_text(RULES, encoding="utf-8")
    server = Process([sys.executable, "-m", "nba.engine.server", str(rules), "--port", "0"], "nba serve")
    pid = server.proc.pid
    try:
        if args.rate is None:
            knee = find_knee(server.port, args.customers)
            rate = knee / 2
            print(f"knee (saturated pipelined throughput): {knee:,.0f}/s; soaking at half: {rate:,.0f}/s", flush=True)
        else:
            rate = args.rate
            print(f"soaking at {rate:,.0f}/s", flush=True)
        events = make_events(50_000, args.customers, seed=7, prefix="soak")
        frames = decide_frames(events[:5], 0)
        loaders = [
            Loader(server.port, rate / args.connections, events, first_id=(k + 1) * 10**12, record=args.record)
            for k in range(args.connections)
        ]
        stop = threading.Event()
        counts = {"churned": 0, "churn_missing": 0, "churn_failed": 0}
        churner = threading.Thread(target=churn, args=(server.port, frames, stop, counts), daemon=True)
        for loader in loaders:
            loader.start()
        churner.start()
        seconds = args.minutes * 60
        warmup = args.warmup if args.warmup is not None else seconds / 10
        samples = []  # (t, rss, fds)
        started = time.monotonic()
        print(f"{'t (s)':>7} {'RSS (MiB)':>10} {'fds':>5} {'answered':>10} {'wrong':>6}", flush=True)
        while True:
            t = time.monotonic() - started
            samples.append((t, rss_bytes(pid), open_fds(pid)))
            answered = sum(loader.answered for loader in loaders)
            wrong = sum(loader.wrong for loader in loaders)
            print(f"{t:7.0f} {samples[-1][1] / 2**20:10.1f} {samples[-1][2]:5d} {answered:10d} {wrong:6d}", flush=True)
            if t >= seconds:
                break
            time.sleep(min(args.interval, max(0.0, seconds - t)))
        stop.set()
        for loader in loaders:
            loader.stop.set()
        elapsed = time.monotonic() - started  # the time requests were being sent
        for loader in loaders:
            loader.finish()
        churner.join(15)
    finally:
        server.stop()

    sent = sum(loader.sent for loader in loaders)
    answered = sum(loader.answered for loader in loaders)
    wrong = sum(loader.wrong for loader in loaders)
    latencies = [x for loader in loaders for x in loader.latencies]
    steady = [s for s in samples if s[0] >= warmup] or samples
    k = max(1, len(steady) // 4)
    first, last = steady[:k], steady[-k:]
    rss_first = sum(s[1] for s in first) / len(first)
    rss_last = sum(s[1] for s in last) / len(last)
    fds_first = max(s[2] for s in first)
    fds_last = max(s[2] for s in last)
    rss_flat = rss_last - rss_first <= max(FLAT_RSS_BYTES, FLAT_RSS_SHARE * rss_first)
    fds_flat = fds_last - fds_first <= FLAT_FDS
    print()
    print(
        f"duration {elapsed:.0f} s at {sent / elapsed:,.0f} requests/s sent ({rate:,.0f} asked), "
        f"{answered:,} answered, {sent - answered} unanswered, {wrong} wrong; "
        f"churn: {counts['churned']} connections, {counts['churn_missing']} answers missing, {counts['churn_failed']} failed"
    )
    print(
        f"answer latency (client side, open loop): p50 {percentile(latencies, 0.5) * 1e3:.2f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1e3:.2f} ms, max {max(latencies, default=float('nan')) * 1e3:.1f} ms"
    )
    print(
        f"RSS after warm-up {rss_first / 2**20:.1f} MiB -> at the end {rss_last / 2**20:.1f} MiB "
        f"({(rss_last - rss_first) / 2**20:+.1f} MiB): {'flat' if rss_flat else 'GREW'}"
    )
    print(f"open descriptors {fds_first} -> {fds_last}: {'flat' if fds_flat else 'GREW'}")
    ok = rss_flat and fds_flat and wrong == 0 and answered == sent
    print(
        "soak: " + ("RSS and descriptors stayed flat, every request answered" if ok else "NOT flat or not all answered")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
