"""The server's own cost per decision, measured in steps that do not depend on the machine's load.

    nba bench server-ticks [--batch 1] [--connections 4] [--decisions 20000] [--memory] [--callgrind]
    python -m benchmarks.server_ticks --batch 3 --callgrind --decisions 3000

`nba bench load` offers a rate whatever the server does, as production does; on a shared
machine its figures move with what else runs. This benchmark goes in closed-loop ticks
instead: each tick sends ``--batch`` decide frames on each of ``--connections``
connections to one `nba serve --redis` (or in memory with ``--memory``) and waits for all
their answers before the next tick, so the server sees the same pattern of reads and
writes however fast or slow it is. The workload is `nba bench load`'s
(benchmarks/load_workload.py); a first ``--warm`` decisions fill the histories, then the
measured ``--decisions``:

- the server's CPU time per decision (user + system, from /proc), and redis-server's;
- with ``--syscalls``, the server's write, read and epoll_pwait system calls per decision
  (``perf stat`` on its tracepoints; Linux, root or perf_event_paranoid <= 1);
- with ``--callgrind``, the server runs under valgrind's callgrind and its instructions
  per decision over the measured ticks are counted (the same on an idle machine and on a
  loaded one: use it to compare two versions of the server). Under valgrind the store's
  read budget is raised to 2 s, so that its slowness degrades no decision.

The read budget is raised to ``--budget-ms`` (default 100) in every run, so that a busy
machine degrades no decision and every run does the same work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.load_workload import RULES, Events, profile_frames
from benchmarks.processes import Process, ThrowawayRedis, process_cpu_seconds

HEADER_SIZE = 4


def read_answers(sock: socket.socket, buffered: bytes, count: int) -> bytes:
    """Read until ``count`` whole frames have arrived; what is left over."""
    while True:
        pos = 0
        while count and len(buffered) - pos >= HEADER_SIZE:
            end = pos + HEADER_SIZE + int.from_bytes(buffered[pos : pos + HEADER_SIZE], "big")
            if end > len(buffered):
                break
            pos, count = end, count - 1
        buffered = buffered[pos:]
        if not count:
            return buffered
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection")
        buffered += data


def ticks(socks: list[socket.socket], frames: list[bytes], batch: int) -> None:
    """``batch`` frames on each connection, then every answer, until ``frames`` are sent."""
    left = [b""] * len(socks)
    i = 0
    while i < len(frames):
        counts = []
        for sock in socks:
            chunk = frames[i : i + batch]
            i += len(chunk)
            if chunk:
                sock.sendall(b"".join(chunk))
            counts.append(len(chunk))
        for n, (sock, count) in enumerate(zip(socks, counts)):
            left[n] = read_answers(sock, left[n], count)


def put_profiles(port: int, customers: int, seed: int) -> None:
    frames = profile_frames(customers, seed)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"".join(frames))
        read_answers(sock, b"", len(frames))


def server_command(
    rules: Path, redis_url: str | None, budget_ms: float, callgrind_out: str | None, near_cache: int = 0
) -> list[str]:
    command = [sys.executable, "-m", "nba.engine.server", str(rules), "--port", "0"]
    if redis_url is not None:
        query = f"latency_budget_ms={budget_ms:g}&write_timeout_ms={max(50, budget_ms):g}"
        if near_cache:
            query += f"&near_cache={near_cache}"
        command += ["--redis", f"{redis_url}?{query}"]
    if callgrind_out is not None:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind_out}", *command]
    return command


def count_syscalls(pid: int) -> subprocess.Popen:
    events = ",".join(f"syscalls:sys_enter_{name}" for name in ("write", "read", "epoll_pwait"))
    return subprocess.Popen(
        ["perf", "stat", "-x", ",", "-e", events, "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def syscalls_counted(perf: subprocess.Popen) -> dict[str, int]:
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=30)
    counts = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            counts[fields[2].rsplit("_", 1)[-1]] = int(fields[0])
    return counts


def instructions_dumped(pid: int, out: str) -> int:
    """Ask callgrind to dump what it counted since it was zeroed; that dump's total."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    if os.environ.get("NBA_KEEP_CALLGRIND"):
        shutil.copy(out + ".1", os.environ["NBA_KEEP_CALLGRIND"])
    for line in Path(out + ".1").read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError("callgrind wrote no summary")


def measure(args: argparse.Namespace) -> dict:
    """One run: a redis-server (unless in memory), a server, the ticks; the figures per decision."""
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="nba-bench-ticks-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        rules = work / "load.rules"
        rules.write_text(RULES, encoding="utf-8")
        callgrind_out = str(work / "callgrind.out") if args.callgrind else None
        budget_ms = 2000.0 if args.callgrind else args.budget_ms
        redis = None if args.memory else stack.enter_context(ThrowawayRedis())
        server = Process(
            server_command(rules, redis and redis.url, budget_ms, callgrind_out, args.near_cache), "nba serve"
        )
        stack.callback(server.stop)
        return measure_server(args, server, redis, callgrind_out)


def measure_server(args: argparse.Namespace, server: Process, redis: ThrowawayRedis | None, callgrind_out) -> dict:
    put_profiles(server.port, args.customers, args.seed)
    frames = Events(args.customers, args.seed).frames(args.warm + args.decisions, time.time(), args.rate)
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(args.connections)]
    try:
        for sock in socks:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ticks(socks, frames[: args.warm], args.batch)
        perf = count_syscalls(server.pid) if args.syscalls else None
        if perf is not None:
            time.sleep(0.5)  # perf attached
        if callgrind_out is not None:
            subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
        server_before = process_cpu_seconds(server.pid) or 0.0
        redis_before = process_cpu_seconds(redis.pid) if redis else 0.0
        started = time.perf_counter()
        ticks(socks, frames[args.warm :], args.batch)
        elapsed = time.perf_counter() - started
        server_cpu = (process_cpu_seconds(server.pid) or 0.0) - server_before
        redis_cpu = (process_cpu_seconds(redis.pid) - redis_before) if redis else 0.0
        instructions = instructions_dumped(server.pid, callgrind_out) if callgrind_out is not None else None
        syscalls = syscalls_counted(perf) if perf is not None else {}
    finally:
        for sock in socks:
            sock.close()
    n = args.decisions
    return {
        "decisions": n,
        "per_second": n / elapsed,
        "server_cpu_us": server_cpu / n * 1e6,
        "redis_cpu_us": redis_cpu / n * 1e6,
        "instructions": instructions / n if instructions is not None else None,
        "syscalls": {name: count / n for name, count in syscalls.items()},
    }


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| turn | decisions/s | server CPU µs | redis-server CPU µs | instructions | writes | reads | epoll_pwait |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for turn, row in enumerate(rows, 1):
        calls = row["syscalls"]
        instructions = f"{row['instructions']:,.0f}" if row["instructions"] is not None else "-"
        counted = [f"{calls[name]:.2f}" if name in calls else "-" for name in ("write", "read", "pwait")]
        lines.append(
            f"| {turn} | {row['per_second']:,.0f} | {row['server_cpu_us']:.1f} | "
            f"{row['redis_cpu_us']:.1f} | {instructions} | {' | '.join(counted)} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--near-cache", type=int, default=0, help="customers the store's near cache holds (default 0: none)"
    )
    parser.add_argument("--batch", type=int, default=1, help="frames per connection per tick (default 1)")
    parser.add_argument("--connections", type=int, default=4, help="connections (default 4)")
    parser.add_argument("--decisions", type=int, default=None, help="measured decisions (default 20000)")
    parser.add_argument("--warm", type=int, default=None, help="decisions before them (default 20000)")
    parser.add_argument("--customers", type=int, default=1000, help="customers (default 1000)")
    parser.add_argument("--rate", type=float, default=10000, help="events' times advance at this rate (default 10000)")
    parser.add_argument("--budget-ms", type=float, default=100, help="the store's read budget (default 100)")
    parser.add_argument("--memory", action="store_true", help="nba serve on the in-memory store")
    parser.add_argument("--syscalls", action="store_true", help="count the server's system calls (perf)")
    parser.add_argument("--callgrind", action="store_true", help="count the server's instructions (valgrind)")
    parser.add_argument("--turns", type=int, default=1, help="runs, each with its own server (default 1)")
    parser.add_argument("--seed", type=int, default=7)


def run(args: argparse.Namespace) -> dict:
    if args.callgrind and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        raise SystemExit("--callgrind needs valgrind (apt-get install -y valgrind)")
    quick = getattr(args, "quick", False)
    args.decisions = args.decisions or (1000 if quick else 20000)
    args.warm = args.warm if args.warm is not None else (1000 if quick else 20000)
    rows = []
    for turn in range(1, args.turns + 1):
        row = measure(args)
        rows.append(row)
        print(f"turn {turn}: {row}", flush=True)
    store = "in memory" if args.memory else "on Redis"
    text = table(rows, args)
    print(text, flush=True)
    markdown = (
        f"`nba serve` {store}, closed-loop ticks of {args.batch} decide frame(s) on each of "
        f"{args.connections} connections, {args.decisions:,} decisions measured after {args.warm:,} "
        f"(nba bench load's workload, {args.customers:,} customers); per decision:\n\n{text}"
    )
    return {"title": "Server ticks", "markdown": markdown, "data": {"rows": rows, "args": vars(args)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nba bench server-ticks", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
