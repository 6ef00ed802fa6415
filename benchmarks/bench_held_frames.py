"""Memory held by unfinished frames, and given back when their connections close.

    python -m benchmarks.bench_held_frames [--connections 400] [--frame-bytes 1048576]

Issue 21: 400 connections each holding an unfinished 1 MB frame took a server from 98 to
501 MB, and 455 MB stayed after they closed. For each configuration below this starts
`python -m nba.engine.server` (in-memory store), opens ``--connections`` connections that each
declare a frame of ``--frame-bytes`` and send all of it but its last byte, ``--chunk-bytes``
at a time round the connections (so the server's buffers grow interleaved), samples the
server's RSS, closes them, waits 3 s, samples again, and checks the server still answers:

- the defaults (`--max-buffered-bytes` 64 MiB: connections past it are closed with
  `overloaded`);
- `--max-buffered-bytes` raised to hold them all, with the server's malloc_trim after
  closes, and without it (NBA_MALLOC_TRIM=0), to show what the trim gives back.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import msgpack

from benchmarks.bench_server import HEADER, RULES
from benchmarks.processes import Process


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = msgpack.packb({"id": 1, "op": "ping"})
        sock.sendall(HEADER.pack(len(body)) + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + HEADER.unpack_from(data)[0]:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return False
            data += chunk
        return msgpack.unpackb(data[4:]).get("ok") is True


def run_case(
    name: str, extra: list[str], env: dict, connections: int, frame_bytes: int, chunk_bytes: int, rules: str
) -> dict:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server = Process(
            [
                sys.executable,
                "-m",
                "nba.engine.server",
                rules,
                "--port",
                "0",
                "--max-connections",
                str(connections + 100),
                *extra,
            ],
            name,
        )
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    pid = server.proc.pid
    try:
        time.sleep(0.5)
        before = rss_mib(pid)
        socks = []
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(HEADER.pack(frame_bytes))
            socks.append(sock)
        # The frames grow a piece at a time, connection after connection (as from many slow
        # clients): the server's buffers grow by reallocation, interleaved.
        piece = b"x" * chunk_bytes
        left = frame_bytes - 1
        while left > 0:
            n = min(chunk_bytes, left)
            for sock in socks:
                try:
                    sock.sendall(piece[:n])
                except OSError:
                    pass  # closed by the server (overloaded)
            left -= n
        time.sleep(2.0)
        held = rss_mib(pid)
        for sock in socks:
            sock.close()
        time.sleep(3.0)
        after = rss_mib(pid)
        alive = ping(server.port)
    finally:
        server.stop()
    return {"case": name, "before": before, "held": held, "after": after, "alive": alive}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nba bench held-frames", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--frame-bytes", type=int, default=1 << 20)
    parser.add_argument("--chunk-bytes", type=int, default=16 << 10, help="each send's size (default 16 KiB)")
    args = parser.parse_args(argv)
    rules = str(Path(tempfile.mkdtemp(prefix="nba-held-"), "cart.rules"))
    Path(rules).write_text(RULES, encoding="utf-8")
    room = str(args.connections * args.frame_bytes * 2)
    cases = [
        ("defaults (64 MiB of unfinished frames at most)", [], {}),
        ("--max-buffered-bytes raised to hold them all", ["--max-buffered-bytes", room], {}),
        ("the same without malloc_trim (NBA_MALLOC_TRIM=0)", ["--max-buffered-bytes", room], {"NBA_MALLOC_TRIM": "0"}),
    ]
    print(
        f"{args.connections} connections, each holding {args.frame_bytes - 1:,} bytes of a {args.frame_bytes:,}-byte frame, "
        f"sent {args.chunk_bytes:,} bytes at a time, connection after connection"
    )
    print("| case | RSS before (MiB) | while held | 3 s after they close | still answers |")
    print("|---|---:|---:|---:|---|")
    for name, extra, env in cases:
        row = run_case(name, extra, env, args.connections, args.frame_bytes, args.chunk_bytes, rules)
        print(
            f"| {row['case']} | {row['before']:.0f} | {row['held']:.0f} | {row['after']:.0f} | {'yes' if row['alive'] else 'NO'} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
