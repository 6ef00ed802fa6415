"""`nba bench load`: the socket server on Redis under an open-loop load, rate by rate.

An open-loop generator (benchmarks/open_loop.py, in this process, not the servers') sends
decide frames at a fixed offered rate over ``--connections`` pipelined connections, each
request at its scheduled time whatever the server does, and times each one from that
scheduled time to its response (matched by id), so that queueing counts. Targets, each a
process of its own, measured in the same run in turns (``--turns`` per rate, round robin,
the median reported and every turn kept in the data):

- ``floor``: a bare server (benchmarks/load_floor.py) on the same frames and the same
  stack that per request does one pipelined HGETALL + ZRANGEBYSCORE on one Redis
  connection and answers a decision-shaped response: no rules, no writes;
- ``workers1`` / ``workers2``: `nba serve --redis URL --workers 1` / `--workers 2`;
- ``near1`` / ``near2``: the same with the near cache (``URL?near_cache=1000000``:
  customers' state kept in the process between their decisions, kept true by Redis's
  invalidations; engine/store/redis/near_cache.py), each on keys of its own;
- ``memory``: `nba serve` on the in-memory store.

The Redis targets share one throwaway `redis-server` on a free loopback port (the floor
reads the keys nba writes); only one target is under load at a time. The workload is
benchmarks/load_workload.py: 3 rules with history aggregates and a cap, ``--customers``
customers with profiles put first, events stamped with the time they are due.

The rates are swept upwards; a target leaves the sweep after the first rate at which its
p99 passes ``--p99-limit-ms`` or it achieves under 95% of the offered rate (the floor stays
while any other target is measured). CPU per decision: the server's process tree
(/proc, `--workers` children included), redis-server's own, and the generator's. Then the
knees, a sequential run (one request at a time, beside the bare round trip through the
floor server and straight to Redis), and the issue's goals, met or not, with figures.

    nba bench load [--rates 1000,2000,5000,...] [--seconds 5] [--turns 3] [--connections 4]
                   [--targets floor,workers1,workers2,near1,near2,memory] [--p99-limit-ms 50] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack

from benchmarks import load_report
from benchmarks.load_floor import read_request
from benchmarks.load_workload import RULES, Events, profile_frames, profiles
from benchmarks.open_loop import GENERATORS, percentile_ms, run_turn, split_frames
from benchmarks.processes import Process, ThrowawayRedis, process_cpu_seconds, tree_cpu_seconds

TARGETS = ("floor", "workers1", "workers2", "near1", "near2", "memory")
REDIS_TARGETS = ("floor", "workers1", "workers2", "near1", "near2")
NEAR_TARGETS = ("near1", "near2")


def near_url(redis_url: str, target: str) -> str:
    """A near target's store URL: a near cache that every customer of the workload fits in,
    and keys of its own (``key_prefix``): another target's writes to the same customers
    would otherwise drop its entries at each turn (Redis announces them), a cost a process
    that has its customers to itself does not pay."""
    return f"{redis_url}?near_cache=1000000&key_prefix={target}"


DEFAULT_RATES = (1000, 2000, 5000, 8000, 10000, 12000, 15000, 20000, 25000, 30000)
GENERATOR_CHECK_RATES = (20000, 30000)
ACHIEVED_SHARE = 0.95
BUILD_S_PER_FRAME = 6e-6  # a generous estimate of decide_frame's cost, to stamp times ahead


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rates", help=f"offered rates, requests/s (default {','.join(map(str, DEFAULT_RATES))})")
    parser.add_argument("--seconds", type=float, help="seconds of load per turn (default 5)")
    parser.add_argument("--turns", type=int, help="turns per target and rate, round robin (default 3)")
    parser.add_argument("--connections", type=int, help="pipelined connections (default 4)")
    parser.add_argument("--targets", help=f"some of {','.join(TARGETS)} (default all)")
    parser.add_argument("--p99-limit-ms", type=float, help="a target leaves the sweep past this p99 (default 50)")
    parser.add_argument("--customers", type=int, help="customers, profiles put first (default 1000)")
    parser.add_argument("--sequential", type=int, help="one-at-a-time requests per target (default 2000)")
    parser.add_argument("--generator", choices=GENERATORS, help="the generator's implementation (default select)")
    parser.add_argument("--redis-server", help="the redis-server executable (default: the one on the PATH)")
    parser.add_argument("--seed", type=int, default=1)


def settings(args: argparse.Namespace) -> dict:
    quick = getattr(args, "quick", False)
    rates = getattr(args, "rates", None)
    targets = getattr(args, "targets", None)
    config = {
        "quick": quick,
        "rates": [int(float(r)) for r in rates.split(",")] if rates else ([1000] if quick else list(DEFAULT_RATES)),
        "seconds": getattr(args, "seconds", None) or (1.0 if quick else 5.0),
        "turns": getattr(args, "turns", None) or (1 if quick else 3),
        "connections": getattr(args, "connections", None) or 4,
        "targets": [t.strip() for t in targets.split(",") if t.strip()] if targets else list(TARGETS),
        "p99_limit_ms": getattr(args, "p99_limit_ms", None) or 50.0,
        "customers": getattr(args, "customers", None) or 1000,
        "sequential": getattr(args, "sequential", None) or (100 if quick else 2000),
        "generator": getattr(args, "generator", None) or "select",
        "redis_server": getattr(args, "redis_server", None),
        "seed": getattr(args, "seed", 1),
        "warmup_s": 0.3 if quick else 1.0,
        "generator_check_rates": [5000] if quick else list(GENERATOR_CHECK_RATES),
    }
    unknown = [t for t in config["targets"] if t not in TARGETS]
    if unknown or not config["targets"]:
        raise SystemExit(f"nba bench load: unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    if config["connections"] < 1 or config["turns"] < 1 or min(config["rates"]) <= 0:
        raise SystemExit("nba bench load: --connections, --turns and every rate must be positive")
    config["drain_s"] = max(2.0, 2 * config["p99_limit_ms"] / 1000)
    return config


# ------------------------------------------------------------------ the targets


class Target:
    """A server under test: its process, and what its turns measure beside the generator."""

    def __init__(self, name: str, command: list[str], redis: ThrowawayRedis | None):
        self.name = name
        self.redis = redis if name in REDIS_TARGETS else None
        self.process = Process(command, name)

    @property
    def port(self) -> int:
        return self.process.port

    def turn(self, frames: list[bytes], rate: float, config: dict, start: float) -> dict:
        server_before = tree_cpu_seconds(self.process.pid)
        redis_before = process_cpu_seconds(self.redis.pid) if self.redis else None
        figures = run_turn(
            self.port, frames, rate, config["connections"], config["drain_s"], config["generator"], start
        )
        server_after = tree_cpu_seconds(self.process.pid)
        decisions = max(1, figures["answered"])
        by_process = {pid: cpu - server_before[pid] for pid, cpu in server_after.items() if pid in server_before}
        figures["server_cpu_us"] = sum(by_process.values()) / decisions * 1e6
        figures["server_core_share"] = sum(by_process.values()) / figures["wall_s"] if figures["wall_s"] else 0.0
        figures["server_cpu_us_by_process"] = {str(pid): cpu / decisions * 1e6 for pid, cpu in by_process.items()}
        if self.redis:
            figures["redis_cpu_us"] = (process_cpu_seconds(self.redis.pid) - redis_before) / decisions * 1e6
        return figures

    def stop(self) -> None:
        self.process.stop()


def nba_command(rules: Path, redis_url: str | None, workers: int = 1) -> list[str]:
    command = [sys.executable, "-m", "nba.engine.server", str(rules), "--port", "0"]
    if redis_url:
        command += ["--redis", redis_url]
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def start_target(name: str, rules: Path, redis: ThrowawayRedis | None) -> Target:
    commands = {
        "floor": lambda: [sys.executable, "-m", "benchmarks.load_floor", "--redis", redis.url],
        "workers1": lambda: nba_command(rules, redis.url),
        "workers2": lambda: nba_command(rules, redis.url, workers=2),
        "near1": lambda: nba_command(rules, near_url(redis.url, "near1")),
        "near2": lambda: nba_command(rules, near_url(redis.url, "near2"), workers=2),
        "memory": lambda: nba_command(rules, None),
        "echo": lambda: [sys.executable, "-m", "benchmarks.bench_server", "--serve-echo"],
    }
    return Target(name, commands[name](), redis)


def put_profiles_in_redis(rules: Path, url: str, config: dict) -> None:
    """The customers' profiles, through nba's own Redis store (the keys every target reads)."""
    from nba.engine import Engine

    engine = Engine.from_path(rules, redis_url=url)
    try:
        for customer, profile in profiles(config["customers"], config["seed"]):
            engine.put_profile(customer, profile)
    finally:
        engine.close()


def exchange(port: int, frames: list[bytes]) -> list[dict]:
    """Send ``frames`` at once on one connection and read as many responses."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"".join(frames))
        received: list = []
        rest = b""
        while len(received) < len(frames):
            data = sock.recv(1 << 18)
            if not data:
                raise ConnectionError(f"closed after {len(received)} of {len(frames)} responses")
            rest = split_frames(rest + data, 0.0, received)
    return [msgpack.unpackb(body) for _, body in received]


# ------------------------------------------------------------------ turns


def scheduled_frames(events: Events, rate: float, seconds: float) -> tuple[list[bytes], float]:
    """The frames of one turn and the ``perf_counter`` time the first is due: their event
    times are the wall-clock times they are due, a little ahead of now to leave time to
    build them."""
    count = max(1, int(rate * seconds))
    lead = 0.1 + count * BUILD_S_PER_FRAME
    wall, clock = time.time(), time.perf_counter()
    frames = events.frames(count, wall + lead, rate)
    start = clock + lead
    if time.perf_counter() > start:  # built slower than estimated: due from now, stamped a little early
        start = time.perf_counter() + 0.01
    return frames, start


def one_turn(target: Target, rate: float, seconds: float, config: dict, seed: int) -> dict:
    frames, start = scheduled_frames(Events(config["customers"], seed), rate, seconds)
    gc.collect()
    gc.disable()  # no collection of this process's garbage in the middle of a turn
    try:
        return target.turn(frames, rate, config, start)
    finally:
        gc.enable()


def median_of(turns: list[dict]) -> dict:
    """Each figure's median over the turns (counts summed)."""
    summed = ("requests", "answered", "unanswered", "ok", "errors", "degraded", "wrong", "connections_closed")
    out = {}
    for key, value in turns[0].items():
        if key in summed:
            out[key] = sum(turn[key] for turn in turns)
        elif isinstance(value, (int, float)):
            out[key] = statistics.median(turn[key] for turn in turns)
    codes: dict[str, int] = {}
    for turn in turns:
        for code, n in turn["error_codes"].items():
            codes[code] = codes.get(code, 0) + n
    out["error_codes"] = codes
    return out


def passes(figures: dict, rate: float, config: dict) -> bool:
    return figures["p99_ms"] <= config["p99_limit_ms"] and figures["achieved_per_s"] >= ACHIEVED_SHARE * rate


def sweep(targets: dict[str, Target], config: dict) -> list[dict]:
    active = list(targets)
    rows = []
    for rate in config["rates"]:
        if not any(name != "floor" for name in active) and len(targets) > 1:
            break
        turns: dict[str, list] = {name: [] for name in active}
        for turn in range(config["turns"]):
            for name in active:
                figures = one_turn(targets[name], rate, config["seconds"], config, seed=config["seed"] * 1000 + turn)
                turns[name].append(figures)
                print(f"  {rate:>6,}/s turn {turn + 1} {name:<9} {load_report.turn_line(figures)}", flush=True)
        row = {"rate": rate, "targets": {}}
        for name in active:
            median = median_of(turns[name])
            row["targets"][name] = {"median": median, "turns": turns[name], "passed": passes(median, rate, config)}
        rows.append(row)
        failed = [name for name in active if not row["targets"][name]["passed"]]
        others_left = [name for name in active if name != "floor" and name not in failed]
        active = [name for name in active if name not in failed or (name == "floor" and others_left)]
        if not active:
            break
    return rows


# ------------------------------------------------------------------ sequential


def read_one(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 4:
        data = sock.recv(4 - len(head))
        if not data:
            raise ConnectionError("closed")
        head += data
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        data = sock.recv(size - len(body))
        if not data:
            raise ConnectionError("closed")
        body += data
    return body


def redis_round_trip(sock: socket.socket, reader, packed: bytes) -> None:
    sock.sendall(packed)
    replies = 0
    while replies < 2:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("redis-server closed the connection")
        reader.feed(data)
        while reader.gets() is not False:
            replies += 1


def sequential(targets: dict[str, Target], redis: ThrowawayRedis | None, config: dict) -> dict:
    """One request at a time to each target in turn, and a bare round trip straight to
    Redis (the floor's HGETALL + ZRANGEBYSCORE), each timed; the p50s and p99s."""
    import hiredis

    clock = time.perf_counter
    socks = {name: socket.create_connection(("127.0.0.1", target.port)) for name, target in targets.items()}
    for sock in socks.values():
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    direct = socket.create_connection(("127.0.0.1", redis.port)) if redis else None
    if direct:
        direct.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()
    times: dict[str, list[float]] = {name: [] for name in [*socks, *(["redis"] if direct else [])]}
    not_ok = dict.fromkeys(socks, 0)
    events = Events(config["customers"], config["seed"] + 7)
    try:
        for step in range(config["sequential"]):
            event = events.next()
            for name, sock in socks.items():
                now = time.time()
                body = msgpack.packb({"id": step, "op": "decide", "event": {**event, "time": now}})
                frame = len(body).to_bytes(4, "big") + body
                t0 = clock()
                sock.sendall(frame)
                response = read_one(sock)
                times[name].append(clock() - t0)
                decoded = msgpack.unpackb(response)
                if decoded.get("ok") is not True or decoded["decision"].get("degraded"):
                    not_ok[name] += 1
            if direct:
                packed = read_request(event["customer_id"], event["type"], time.time())
                t0 = clock()
                redis_round_trip(direct, reader, packed)
                times["redis"].append(clock() - t0)
    finally:
        for sock in socks.values():
            sock.close()
        if direct:
            direct.close()
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = {
            "requests": len(values),
            "p50_us": percentile_ms(values, 0.50) * 1000,
            "p99_us": percentile_ms(values, 0.99) * 1000,
            "not_ok": not_ok.get(name, 0),
        }
    return out


# ------------------------------------------------------------------ the run


def history_sizes(url: str, customers: int) -> dict[str, float]:
    """Events kept per customer and event type in Redis at the end (what a read returns
    is what lies within the window: at most this)."""
    import redis as redis_py

    from benchmarks.load_floor import KEY_PREFIX
    from benchmarks.load_workload import WINDOWS, customer_id

    client = redis_py.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for n in range(customers):
            for event_type in WINDOWS:
                pipe.zcard(f"{KEY_PREFIX}:{{{customer_id(n)}}}:h:{event_type}")
        sizes = pipe.execute()
    finally:
        client.close()
    return {event_type: sum(sizes[i :: len(WINDOWS)]) / max(1, customers) for i, event_type in enumerate(WINDOWS)}


def generator_check(config: dict) -> list[dict]:
    """The generator against the msgpack echo server (benchmarks/bench_server.py), which
    does next to nothing per frame: how fast and how punctually this process sends."""
    echo = start_target("echo", Path(), None)
    try:
        rows = []
        for rate in config["generator_check_rates"]:
            figures = one_turn(echo, rate, config["seconds"], config, seed=config["seed"])
            print(f"  echo {rate:,}/s: {load_report.turn_line(figures)}", flush=True)
            rows.append(figures)
        return rows
    finally:
        echo.stop()


def measure(config: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="nba-bench-load-") as rules_dir:
        rules = Path(rules_dir) / "load.rules"
        rules.write_text(RULES, encoding="utf-8")
        return measure_with(rules, config)


def measure_with(rules: Path, config: dict) -> dict:
    print("the generator against the msgpack echo server ...", flush=True)
    data: dict = {"config": config, "load_average": {"start": os.getloadavg()}}
    data["generator_check"] = generator_check(config)
    redis = None
    targets: dict[str, Target] = {}
    try:
        if any(name in REDIS_TARGETS for name in config["targets"]):
            redis = ThrowawayRedis(config["redis_server"]).__enter__()
            put_profiles_in_redis(rules, redis.url, config)
            for name in NEAR_TARGETS:
                if name in config["targets"]:
                    put_profiles_in_redis(rules, near_url(redis.url, name), config)
        for name in config["targets"]:
            print(f"starting {load_report.LABELS[name]} ...", flush=True)
            targets[name] = start_target(name, rules, redis)
        if "memory" in targets:
            answers = exchange(targets["memory"].port, profile_frames(config["customers"], config["seed"]))
            if any(answer.get("ok") is not True for answer in answers):
                raise RuntimeError(f"put_profile failed: {next(a for a in answers if a.get('ok') is not True)}")
        for target in targets.values():  # connections made, code paths warm
            one_turn(target, 1000, config["warmup_s"], config, seed=config["seed"] + 99)
        print("sweep ...", flush=True)
        data["sweep"] = sweep(targets, config)
        print("sequential ...", flush=True)  # after the sweep: on the state it left (a near cache warm)
        data["sequential"] = sequential(targets, redis, config)
        if redis is not None:
            data["history_sizes"] = history_sizes(redis.url, config["customers"])
    finally:
        for target in targets.values():
            target.stop()
        if redis is not None:
            redis.__exit__(None, None, None)
        data["load_average"]["end"] = os.getloadavg()
    return data


def run(args: argparse.Namespace) -> dict:
    config = settings(args)
    data = measure(config)
    data["knees"] = load_report.knees(data["sweep"])
    data["goals"] = load_report.goals(data)
    markdown = load_report.markdown(data)
    print("\n" + markdown, flush=True)
    return {"title": "Open-loop load on Redis", "markdown": markdown, "data": data}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.cli import main as bench_main  # the same options as `nba bench load`

    return bench_main(["load", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
