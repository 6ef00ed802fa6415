"""The socket server over loopback: sequential latency and pipelined throughput.

Targets, each a separate process measured in the same run by the same client code:
two bare msgpack echo servers (asyncio + uvloop, length-prefixed frames, each request
decoded and encoded back: the floor any msgpack-over-TCP server pays), one writing the
responses of a read in one write as nba's server does, one writing each response as it is
made (the plain way; the project's brief cites an echo floor of ~150,000 frames/s, nearer
this one's rate than the first's), then `nba serve` on the
in-memory store, then `nba serve` on Redis (a throwaway `redis-server` on a free loopback
port). The workload is the ruleset of DSL.md's example and a mix of its event types over
many customers.

- sequential: one request, wait for its response, next; per-request round trip timed.
- pipelined: every request of the run sent at once on one connection (a sender thread)
  while another thread reads the responses; requests per second from the first byte sent
  to the last response read. Every response is then checked (id, ok).

    nba bench server [--quick] [--sequential N] [--pipelined N] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

from benchmarks.processes import Process, ThrowawayRedis, process_cpu_seconds

REPO = Path(__file__).resolve().parent.parent
HEADER = struct.Struct(">I")
GOAL_P99_US = 1000.0
GOAL_ECHO_SHARE = 0.5
ECHO = "msgpack echo"
FRAMEWISE_ECHO = "msgpack echo, a write per response"

RULES = """\
profile {
  tier: string
  lifetime_value: number
  email_opt_in: bool
  last_purchase_at: time
}
event cart_abandoned { cart_value: number, items: number }
event page_view { category: string }

segment vip = profile.tier in ["gold", "platinum"] or profile.lifetime_value >= 1000

policy email: cap 2 per 7d
policy all: cap 4 per 1d

rule cart_rescue "Recover an abandoned cart"
  priority 80
  when event.type == "cart_abandoned"
   and event.cart_value > 50
   and profile.email_opt_in
   and count(purchase within 24h) == 0
  then cart_reminder via email with discount = 10, value = event.cart_value
  cap 1 per 24h
  holdout 10%
end

rule shoe_browser
  priority 40 + (if vip then 20 else 0)
  when event.type == "page_view"
   and count(page_view where category == "shoes" within 30m) >= 3
  then shoe_banner via web
end

on purchase
  set lifetime_value = coalesce(profile.lifetime_value, 0) + event.amount
  set last_purchase_at = event.time
end

default browse_recommendations via web
"""

DEFAULT_ONLY_RULES = "default browse_recommendations via web\n"  # the server's own cost, nearly no rule work

CATEGORIES = ("shoes", "shirts", "bags", "hats")


# ------------------------------------------------------------------ the workload


def make_events(n: int, customers: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        customer = f"{prefix}{rng.randrange(customers)}"
        kind = rng.random()
        if kind < 0.6:
            events.append({"customer_id": customer, "type": "page_view", "category": rng.choice(CATEGORIES)})
        elif kind < 0.9:
            events.append(
                {
                    "customer_id": customer,
                    "type": "cart_abandoned",
                    "cart_value": rng.randrange(10, 200),
                    "items": rng.randrange(1, 6),
                }
            )
        else:
            events.append({"customer_id": customer, "type": "purchase", "amount": rng.randrange(5, 300)})
    return events


def decide_frames(events: list[dict], first_id: int) -> list[bytes]:
    frames = []
    for i, event in enumerate(events, first_id):
        body = msgpack.packb({"id": i, "op": "decide", "event": event})
        frames.append(HEADER.pack(len(body)) + body)
    return frames


# ------------------------------------------------------------------ the bare echo server


class EchoProtocol(asyncio.Protocol):
    """Decodes every frame and sends it back encoded again: nothing else. The responses to
    the frames of one read go out in one write (``batched``), as nba's server sends them;
    with ``batched`` False each is written as it is made, a send per frame."""

    batched = True

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, size, out = 0, len(buf), []
        batched, write = self.batched, self.transport.write  # read once per read, not per frame
        while size - pos >= 4:
            (length,) = HEADER.unpack_from(buf, pos)
            end = pos + 4 + length
            if end > size:
                break
            body = msgpack.packb(msgpack.unpackb(buf[pos + 4 : end]))
            if batched:
                out.append(HEADER.pack(len(body)))
                out.append(body)
            else:
                write(HEADER.pack(len(body)) + body)
            pos = end
        del buf[:pos]
        if out:
            write(b"".join(out))


class FramewiseEchoProtocol(EchoProtocol):
    batched = False


def serve_echo(protocol=EchoProtocol) -> None:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(protocol, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass


# ------------------------------------------------------------------ the client side


class Connection:
    """A raw blocking connection: send frames, read whole response frames back."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def read_frame(self) -> bytes:
        buf = self.buf
        while True:
            if len(buf) >= 4:
                end = 4 + HEADER.unpack_from(buf, 0)[0]
                if len(buf) >= end:
                    body = bytes(buf[4:end])
                    del buf[:end]
                    return body
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("closed by the server")
            buf += data

    def close(self) -> None:
        self.sock.close()


def sequential(port: int, frames: list[bytes], warmup: int, check_ok: bool) -> dict:
    conn = Connection(port)
    clock = time.perf_counter_ns
    latencies = []
    errors = 0
    try:
        for i, frame in enumerate(frames):
            started = clock()
            conn.sock.sendall(frame)
            body = conn.read_frame()
            if i >= warmup:
                latencies.append(clock() - started)
            if check_ok and b"\xa2ok\xc3" not in body:  # "ok": true, as msgpack
                errors += 1
    finally:
        conn.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "p50_us": _pct(latencies, 0.5),
        "p99_us": _pct(latencies, 0.99),
        "p999_us": _pct(latencies, 0.999),
        "mean_us": sum(latencies) / len(latencies) / 1000,
        "errors": errors,
    }


def _pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000


def pipelined(port: int, frames: list[bytes], first_id: int, check_ok: bool) -> dict:
    conn = Connection(port)
    payload = b"".join(frames)
    chunks = [payload[i : i + (1 << 18)] for i in range(0, len(payload), 1 << 18)]
    received: list[bytes] = []
    count = len(frames)

    def send() -> None:
        for chunk in chunks:
            conn.sock.sendall(chunk)

    try:
        sender = threading.Thread(target=send)
        started = time.perf_counter()
        sender.start()
        _receive_frames(conn.sock, count, received)
        elapsed = time.perf_counter() - started
        sender.join()
    finally:
        conn.close()
    wrong = _check(b"".join(received), first_id, count, check_ok)
    return {"requests": count, "seconds": elapsed, "per_second": count / elapsed, "wrong": wrong}


def _receive_frames(sock: socket.socket, count: int, received: list[bytes]) -> None:
    """Read until ``count`` frames have arrived, parsing only their headers."""
    pending = b""
    seen = 0
    while seen < count:
        data = sock.recv(1 << 18)
        if not data:
            raise ConnectionError(f"closed by the server after {seen} of {count} responses")
        received.append(data)
        buf = pending + data if pending else data
        pos, size = 0, len(buf)
        while size - pos >= 4:
            end = pos + 4 + HEADER.unpack_from(buf, pos)[0]
            if end > size:
                break
            seen += 1
            pos = end
        pending = buf[pos:]


def _check(stream: bytes, first_id: int, count: int, check_ok: bool) -> int:
    """How many responses are missing, duplicated, or (``check_ok``) not ok."""
    pos, ids, wrong = 0, set(), 0
    while pos < len(stream):
        end = pos + 4 + HEADER.unpack_from(stream, pos)[0]
        response = msgpack.unpackb(stream[pos + 4 : end])
        pos = end
        if (check_ok and response.get("ok") is not True) or response.get("id") in ids:
            wrong += 1
        ids.add(response.get("id"))
    return wrong + len(set(range(first_id, first_id + count)) - ids)


def server_stats(port: int) -> dict:
    conn = Connection(port)
    try:
        body = msgpack.packb({"id": 0, "op": "stats"})
        conn.sock.sendall(HEADER.pack(len(body)) + body)
        return msgpack.unpackb(conn.read_frame())["stats"]
    finally:
        conn.close()


def put_profiles(port: int, customers: int, prefix: str, seed: int) -> None:
    rng = random.Random(seed)
    frames = []
    for i in range(customers):
        profile = {
            "tier": rng.choice(["gold", "silver", "bronze"]),
            "lifetime_value": rng.randrange(0, 3000),
            "email_opt_in": rng.random() < 0.7,
        }
        body = msgpack.packb({"id": i, "op": "put_profile", "customer_id": f"{prefix}{i}", "profile": profile})
        frames.append(HEADER.pack(len(body)) + body)
    conn = Connection(port)
    try:
        conn.sock.sendall(b"".join(frames))
        for _ in frames:
            conn.read_frame()
    finally:
        conn.close()


# ------------------------------------------------------------------ one target


def measure_target(name: str, port: int, config: dict, nba: bool, pid: int | None = None) -> dict:
    seq_n, pipe_n, customers, seed = config["sequential"], config["pipelined"], config["customers"], config["seed"]
    prefix = f"{len(name)}{name[:3]}-"
    if nba:
        put_profiles(port, customers, prefix, seed)
    warmup = min(1000, seq_n // 5)
    seq_events = make_events(seq_n + warmup, customers, seed, prefix)
    before = server_stats(port) if nba else None
    seq = sequential(port, decide_frames(seq_events, 1), warmup, nba)
    middle = server_stats(port) if nba else None
    pipe_events = make_events(pipe_n, customers, seed + 1, prefix)
    first_id = 10_000_000
    pipelined(port, decide_frames(pipe_events[: min(5000, pipe_n)], first_id), first_id, nba)  # warm-up
    warm = server_stats(port) if nba else None
    frames = decide_frames(pipe_events, first_id)
    cpu_before = process_cpu_seconds(pid) if pid else None
    pipe = pipelined(port, frames, first_id, nba)
    cpu_after = process_cpu_seconds(pid) if pid else None
    if cpu_before is not None and cpu_after is not None:
        pipe["server_cpu_us"] = (cpu_after - cpu_before) / pipe_n * 1e6
    row = {"target": name, "sequential": seq, "pipelined": pipe}
    if nba:
        after = server_stats(port)
        seq["degraded_share"] = _degraded(before, middle)
        pipe["degraded_share"] = _degraded(warm, after)
        row["server_latency_us"] = after["latency_us"]
    return row


def _degraded(before: dict, after: dict) -> float:
    decisions = after["decisions"] - before["decisions"]
    return (after.get("degraded", 0) - before.get("degraded", 0)) / max(1, decisions)


def in_process(rules_path: str, config: dict) -> dict:
    """``Engine.decide_map(...)`` (the map ``decide(...).to_dict()`` gives, as the server
    makes it) in this process on the same workload, each event decoded from its msgpack
    bytes inside the timed loop (as any server must): the ceiling that a server on the
    in-memory store can reach, with no sockets and no framing."""
    from nba.engine import Engine

    engine = Engine.from_path(rules_path)
    prefix = "inproc-"
    rng = random.Random(config["seed"])
    for i in range(config["customers"]):
        engine.put_profile(
            f"{prefix}{i}",
            {
                "tier": rng.choice(["gold", "silver", "bronze"]),
                "lifetime_value": rng.randrange(0, 3000),
                "email_opt_in": rng.random() < 0.7,
            },
        )
    events = make_events(config["sequential"] + config["pipelined"], config["customers"], config["seed"], prefix)
    for event in events[: config["sequential"]]:  # the history the server's sequential phase leaves
        engine.decide_map(event)
    timed = [msgpack.packb(event) for event in events[config["sequential"] :]]
    unpackb = msgpack.unpackb
    decide_map = engine.decide_map
    started, cpu_started = time.perf_counter(), time.process_time()
    for packed in timed:
        decide_map(unpackb(packed))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    engine.close()
    return {
        "requests": len(timed),
        "seconds": elapsed,
        "per_second": len(timed) / elapsed,
        "server_cpu_us": cpu / len(timed) * 1e6,
    }


def nba_command(rules_dir: str, redis_url: str | None) -> list[str]:
    command = [sys.executable, "-m", "nba.engine.server", rules_dir, "--port", "0"]
    if redis_url:
        command += ["--redis", redis_url]
    return command


def measure_all(config: dict) -> list[dict]:
    rows = []
    rules_dir = tempfile.mkdtemp(prefix="nba-bench-server-")
    Path(rules_dir, "cart.rules").write_text(RULES, encoding="utf-8")
    default_only = Path(rules_dir, "default-only.rules")
    default_only.write_text(DEFAULT_ONLY_RULES, encoding="utf-8")
    echo = [sys.executable, "-m", "benchmarks.bench_server"]
    targets = [
        (ECHO, echo + ["--serve-echo"], False),
        (FRAMEWISE_ECHO, echo + ["--serve-echo-per-frame"], False),
        ("nba in-memory", nba_command(str(Path(rules_dir, "cart.rules")), None), True),
        ("nba in-memory, default-only ruleset", nba_command(str(default_only), None), True),
    ]
    redis = None
    try:
        if config["redis"]:
            if shutil.which("redis-server"):
                redis = ThrowawayRedis().__enter__()
                targets.append(("nba redis", nba_command(str(Path(rules_dir, "cart.rules")), redis.url), True))
            else:
                print("(redis-server not found: the Redis row is left out)", flush=True)
        for name, command, nba in targets:
            proc = Process(command, name)
            try:
                print(f"measuring {name} ...", flush=True)
                rows.append(measure_target(name, proc.port, config, nba, proc.proc.pid))
            finally:
                proc.stop()
        print("measuring Engine.decide_map in-process ...", flush=True)
        rows.append(
            {
                "target": "Engine.decide_map in-process (no server)",
                "pipelined": in_process(str(Path(rules_dir, "cart.rules")), config),
            }
        )
    finally:
        if redis is not None:
            redis.__exit__(None, None, None)
        shutil.rmtree(rules_dir, ignore_errors=True)
    return rows


# ------------------------------------------------------------------ report


def table(rows: list[dict]) -> str:
    echo = next((r for r in rows if r["target"] == ECHO), None)
    lines = [
        "| target | sequential p50 µs | p99 µs | p99.9 µs | pipelined req/s | of echo | CPU µs/request | degraded (seq / pipelined) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        seq, pipe = row.get("sequential"), row["pipelined"]
        share = f"{pipe['per_second'] / echo['pipelined']['per_second']:.0%}" if echo else "-"
        degraded = (
            f"{seq['degraded_share']:.1%} / {pipe['degraded_share']:.1%}" if seq and "degraded_share" in seq else "-"
        )
        latency = f"{seq['p50_us']:.0f} | {seq['p99_us']:.0f} | {seq['p999_us']:.0f}" if seq else "- | - | -"
        cpu = f"{pipe['server_cpu_us']:.1f}" if pipe.get("server_cpu_us") is not None else "-"
        lines.append(f"| {row['target']} | {latency} | {pipe['per_second']:,.0f} | {share} | {cpu} | {degraded} |")
    return "\n".join(lines)


def goals(rows: list[dict]) -> list[str]:
    by_name = {r["target"]: r for r in rows}
    out = []
    for name in ("nba in-memory", "nba redis"):
        if name in by_name:
            p99 = by_name[name]["sequential"]["p99_us"]
            out.append(
                f"- {name}: sequential p99 {p99:.0f} µs (goal < {GOAL_P99_US:.0f} µs): "
                f"{'met' if p99 < GOAL_P99_US else 'NOT met'}"
            )
    memory = by_name.get("nba in-memory")
    for name, which in (
        (ECHO, "the echo server's (one write per read, as nba's server)"),
        (FRAMEWISE_ECHO, "the per-frame echo server's (one write per response)"),
    ):
        echo = by_name.get(name)
        if memory and echo:
            share = memory["pipelined"]["per_second"] / echo["pipelined"]["per_second"]
            out.append(
                f"- nba in-memory: pipelined throughput {share:.0%} of {which} (goal >= "
                f"{GOAL_ECHO_SHARE:.0%}): {'met' if share >= GOAL_ECHO_SHARE else 'NOT met'}"
            )
    ceiling = by_name.get("Engine.decide_map in-process (no server)")
    if memory and ceiling:
        share = memory["pipelined"]["per_second"] / ceiling["pipelined"]["per_second"]
        out.append(
            f"- nba in-memory: pipelined throughput {share:.0%} of Engine.decide_map called in-process "
            "on the same workload (the ceiling for any server of this engine)"
        )
    return out


def settings(args: argparse.Namespace) -> dict:
    quick = getattr(args, "quick", False)
    return {
        "sequential": getattr(args, "sequential", None) or (2_000 if quick else 20_000),
        "pipelined": getattr(args, "pipelined", None) or (20_000 if quick else 200_000),
        "customers": getattr(args, "customers", None) or (1_000 if quick else 10_000),
        "seed": getattr(args, "seed", 1),
        "redis": not getattr(args, "no_redis", False),
    }


def run(args: argparse.Namespace) -> dict:
    config = settings(args)
    rows = measure_all(config)
    text = table(rows)
    goal_lines = goals(rows)
    print("\n" + text + "\n\nGoals (reported, not asserted):\n" + "\n".join(goal_lines), flush=True)
    for row in rows:
        if row["pipelined"].get("wrong") or row.get("sequential", {}).get("errors"):
            print(
                f"WARNING: {row['target']}: {row['pipelined']['wrong']} wrong pipelined responses, "
                f"{row['sequential']['errors']} sequential errors",
                flush=True,
            )
    markdown = "\n".join(
        [
            "One client process and one server process over loopback (127.0.0.1); every target is measured "
            "in the same run by the same client code. Sequential: one request at a time, round trip timed. "
            f"Pipelined: {config['pipelined']:,} decide requests sent at once on one connection, requests per second "
            "until the last response. Both echo servers decode each msgpack frame and send it back encoded again; "
            "the first writes the responses to one read in one write (as nba's server does), the second "
            "writes each response as it is made. `of echo` is against the first. "
            f"Events: DSL.md's example ruleset, page views, abandoned carts and purchases over {config['customers']:,} "
            "customers with profiles. `degraded`: decisions made without state because the store missed its latency budget. "
            "The default-only ruleset row shows the server's own cost with almost no rule work; the in-process row is "
            "`Engine.decide_map(msgpack.unpackb(event))` (the map `decide(...).to_dict()` gives, made as the server makes it) "
            "called in a loop on the same workload, without a server. "
            "`CPU µs/request`: the server process's CPU time (user + system) over the pipelined run, per request "
            "(for the in-process row, the loop's own): unlike wall-clock rates it does not depend on what else the "
            "machine is running.",
            "",
            text,
            "",
            "Goals (reported, not asserted):",
            "",
            *goal_lines,
        ]
    )
    return {"title": "Socket server", "markdown": markdown, "data": {"config": config, "rows": rows}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sequential", type=int, default=None, help="sequential requests per target (default 20000)")
    parser.add_argument("--pipelined", type=int, default=None, help="pipelined requests per target (default 200000)")
    parser.add_argument("--customers", type=int, default=None, help="customers (default 10000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-redis", action="store_true", help="leave the Redis row out")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--serve-echo"]:
        serve_echo()
        return 0
    if argv == ["--serve-echo-per-frame"]:
        serve_echo(FramewiseEchoProtocol)
        return 0
    parser = argparse.ArgumentParser(prog="nba bench server", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
