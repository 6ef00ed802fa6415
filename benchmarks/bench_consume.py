"""`nba consume`: entries per second for one consumer process, and end-to-end lag.

The workload is the demo day (examples/demo: its profiles put first, then its events in
order) through the example rules (rules/), on a throwaway ``redis-server`` on a free
loopback port (or ``--redis URL``: its database is flushed).

- throughput: the stream is filled with ``--events`` entries first, then one
  ``nba consume`` process (``--count`` entries per read) decides them all. The rate is
  taken from the output entries' own ids (Redis's clock, in ms): from the first output
  entry to the last, so the process's start-up is not in it.
- lag: a fresh stream, the consumer started first and idle, then entries added at a steady
  ``--rate`` per second for ``--seconds`` (the entries due every millisecond in one write
  of XADDs packed beforehand, their replies read at the end: the producer takes ~2% of a
  core, not the 9% a redis-py pipeline took beside the consumer). An entry's lag is its
  output entry's id time minus its input entry's id time (both from the one Redis clock,
  1 ms resolution): XADD to output entry. The consumer's and Redis's CPU per entry in that
  run are printed too: at a moderate rate the batches are small and cost more per entry.

Goal (issue 17): one consumer process decides >= 10,000 entries/s, and at 5,000/s offered
the lag p99 is under 20 ms.

    nba bench consume [--quick] [--events N] [--rate R] [--seconds S] [--count N] [--redis URL]
    python -m benchmarks.bench_consume --quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis as redis_py

from benchmarks.processes import ThrowawayRedis

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"
EVENTS = REPO / "examples" / "demo" / "events.jsonl"
PROFILES = REPO / "examples" / "demo" / "profiles.jsonl"
GOAL_RATE = 10_000
GOAL_LAG_P99_MS = 20.0
GOAL_OFFERED = 5_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=60_000, help="entries for the throughput run")
    parser.add_argument("--rate", type=int, default=GOAL_OFFERED, help="entries/s offered in the lag run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the lag run")
    parser.add_argument("--count", type=int, default=200, help="the consumer's --count")
    parser.add_argument("--redis", metavar="URL", help="use this Redis (flushed) instead of a throwaway one")


def event_lines(count: int) -> list[bytes]:
    lines = [line for line in EVENTS.read_bytes().splitlines() if line.strip()]
    return (lines * (count // len(lines) + 1))[:count]


def put_profiles(url: str) -> None:
    from nba.engine import Engine

    engine = Engine.from_path(RULES, redis_url=url)
    for line in PROFILES.read_text().splitlines():
        profile = json.loads(line)
        engine.put_profile(profile.pop("customer_id"), profile)
    engine.close()


def start_consumer(url: str, stream: str, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nba.engine.cli",
            "consume",
            str(RULES),
            "--redis",
            url,
            "--stream",
            stream,
            "--count",
            str(count),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def consumer_process(url: str, stream: str, count: int):
    """``start_consumer``'s process, killed if the run fails before ``stop``."""
    process = start_consumer(url, stream, count)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(process: subprocess.Popen) -> dict:
    process.send_signal(signal.SIGTERM)
    try:
        _out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _out, err = process.communicate()
    for line in reversed(err.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"the consumer printed no stats: {err[-2000:]}")


def wait_for_outputs(client, out: str, count: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while client.xlen(out) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the consumer stopped or stalled at {client.xlen(out)} of {count}: "
                f"{stop(process) if process.poll() is None else process.stderr.read()[-2000:]}"
            )
        time.sleep(0.02)


def id_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def throughput(client, url: str, events: int, count: int) -> dict:
    lines = event_lines(events)
    for start in range(0, len(lines), 5000):
        pipe = client.pipeline(transaction=False)
        for line in lines[start : start + 5000]:
            pipe.xadd("bench", {"event": line})
        pipe.execute()
    redis_cpu = redis_cpu_s(client)
    with consumer_process(url, "bench", count) as process:
        started = time.perf_counter()
        wait_for_outputs(client, "bench:decisions", events, process, timeout_s=600)
        wall = time.perf_counter() - started
        redis_cpu = redis_cpu_s(client) - redis_cpu
        stats = stop(process)
    first = client.xrange("bench:decisions", count=1)[0][0]
    last = client.xrevrange("bench:decisions", count=1)[0][0]
    span_s = max(1, id_ms(last) - id_ms(first)) / 1000
    consumer_cpu = stats["cpu_s_since_first_entry"]
    return {
        "events": events,
        "count": count,
        "span_s": span_s,
        "rate": (events - 1) / span_s,
        "wall_s_with_startup": wall,
        "decided": stats["decided"],
        "bad": stats["bad"],
        "consumer_cpu_us_per_entry": consumer_cpu / events * 1e6,
        "redis_cpu_us_per_entry": redis_cpu / events * 1e6,
        "load_average": os.getloadavg()[0],
    }


def redis_cpu_s(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def produce(client, stream: str, lines: list[bytes], rate: int) -> float:
    """XADD ``lines`` at ``rate`` a second: the ones due, every millisecond, in one write on
    one connection; the replies are read at the end. The seconds it took."""
    from nba.engine.store.redis.protocol import pack_commands

    packed = [pack_commands([("XADD", stream, "*", "event", line)]) for line in lines]
    connection = client.connection_pool.get_connection("XADD")
    try:
        started = time.perf_counter()
        sent = 0
        while sent < len(lines):
            due = min(len(lines), int((time.perf_counter() - started) * rate) + 1)
            if due > sent:
                connection.send_packed_command([b"".join(packed[sent:due])], check_health=False)
                sent = due
            time.sleep(0.001)
        offered_s = time.perf_counter() - started
        for _ in lines:
            connection.read_response()  # an error reply raises
    finally:
        client.connection_pool.release(connection)
    return offered_s


def lag(client, url: str, rate: int, seconds: float, count: int) -> dict:
    lines = event_lines(int(rate * seconds))
    with consumer_process(url, "lag", count) as process:
        client.xgroup_create("lag", "nba", id="0", mkstream=True) if not client.exists("lag") else None
        time.sleep(1.0)  # the consumer is up and blocked in XREADGROUP
        redis_cpu = redis_cpu_s(client)
        offered_s = produce(client, "lag", lines, rate)
        wait_for_outputs(client, "lag:decisions", len(lines), process, timeout_s=120)
        redis_cpu = redis_cpu_s(client) - redis_cpu
        stats = stop(process)
    lags = sorted(id_ms(out_id) - id_ms(fields[b"entry"]) for out_id, fields in client.xrange("lag:decisions"))

    def pick(q: float) -> float:
        return float(lags[min(len(lags) - 1, int(q * len(lags)))])

    return {
        "rate": rate,
        "offered_rate": len(lines) / offered_s,
        "entries": len(lines),
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "max_ms": float(lags[-1]),
        "decided": stats["decided"],
        "consumer_cpu_us_per_entry": stats["cpu_s_since_first_entry"] / len(lines) * 1e6,
        "redis_cpu_us_per_entry": redis_cpu / len(lines) * 1e6,  # the producer's XADDs included
        "load_average": os.getloadavg()[0],
    }


def run(args: argparse.Namespace) -> dict:
    events = 10_000 if args.quick else args.events
    seconds = 3.0 if args.quick else args.seconds
    own = None
    if args.redis:
        url = args.redis
    else:
        own = ThrowawayRedis().__enter__()
        url = own.url
    try:
        client = redis_py.Redis.from_url(url)
        client.flushdb()
        put_profiles(url)
        fast = throughput(client, url, events, args.count)
        slow = lag(client, url, args.rate, seconds, args.count)
    finally:
        if own is not None:
            own.__exit__(None, None, None)
    used = {"events": events, "rate": args.rate, "seconds": seconds, "count": args.count}  # --quick's sizes
    command = "nba bench consume " + " ".join(f"--{name} {value}" for name, value in used.items())
    lines = [
        f"`{command}` ({'cython' if os.environ.get('NBA_PURE_PYTHON') != '1' else 'pure'} twins)",
        "",
        "| run | figure | goal |",
        "|---|---|---|",
        f"| throughput, {fast['events']:,} entries pre-filled, one process, --count {fast['count']} | "
        f"{fast['rate']:,.0f} entries/s ({fast['span_s']:.2f} s first to last output) | >= {GOAL_RATE:,}/s |",
        f"| CPU per entry in that run (load average {fast['load_average']:.1f} on {os.cpu_count()} cores) | "
        f"consumer {fast['consumer_cpu_us_per_entry']:.0f} µs, redis-server {fast['redis_cpu_us_per_entry']:.0f} µs: "
        f"{1e6 / fast['consumer_cpu_us_per_entry']:,.0f} entries per consumer CPU-second | |",
        f"| lag at {slow['rate']:,}/s offered ({slow['offered_rate']:,.0f}/s achieved) for {slow['entries']:,} entries | "
        f"p50 {slow['p50_ms']:.0f} ms, p90 {slow['p90_ms']:.0f} ms, p99 {slow['p99_ms']:.0f} ms, max {slow['max_ms']:.0f} ms | "
        f"p99 < {GOAL_LAG_P99_MS:.0f} ms |",
        f"| CPU per entry in that run (load average {slow['load_average']:.1f}) | "
        f"consumer {slow['consumer_cpu_us_per_entry']:.0f} µs, redis-server {slow['redis_cpu_us_per_entry']:.0f} µs "
        "(the producer's XADDs included) | |",
    ]
    return {
        "title": "nba consume (Redis Streams)",
        "markdown": "\n".join(lines),
        "data": {"throughput": fast, "lag": slow},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nba bench consume", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    add_arguments(parser)
    result = run(parser.parse_args(argv))
    print(result["markdown"])
    print(json.dumps(result["data"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
