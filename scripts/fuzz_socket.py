"""Fuzz a real `nba serve` over its socket for as long as asked.

    .venv/bin/python scripts/fuzz_socket.py [--seconds 60] [--seed 1] [--rules PATH]

Starts `python -m nba.engine.server` (in-memory store) on a free loopback port with a small
ruleset, then, until the time is up, sends pipelines of generated requests (every key
given values of every type, keys missing, maps that are not requests, the common decide),
sometimes ending in an unreadable frame, cut into random reads, on fresh connections,
while a second connection keeps deciding. It checks what tests/test_server_fuzz.py checks
in the suite: every readable request answered exactly once, in order, with its id; `ok`
false for what the protocol refuses and true for ping/stats; never `internal`; the
connection closed after an unreadable frame and only then; the other connection's
decisions all answered; the server alive. Prints a summary; exit 1 on the first failure
(with the case, to turn into a test).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nba.engine.protocol import NEED_MORE, BadRequest, FrameDecoder, encode_frame, parse_request  # noqa: E402

RULES = """\
event cart_abandoned { cart_value: number }
rule cart_rescue
  when event.type == "cart_abandoned" and event.cart_value > 50
  then cart_reminder via email with value = event.cart_value
  cap 1 per 1d
end
rule fallback
  when event.type == "page_view"
  then banner via web
end
"""
OPS = ["decide", "ping", "stats", "get_profile", "put_profile", "auth"]
KEYS = ["id", "op", "event", "limit", "explain", "dry_run", "customer_id", "profile", "token"]
UNREADABLE = [b"\x00\x00\x00\x01\xc1", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x02\x92\x01"]


def value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(11 if depth < 2 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -1e308, float("inf"), float("nan"), 1e-300])
    if kind == 4:
        return "".join(rng.choice("ab c_é\x00") for _ in range(rng.randrange(6)))
    if kind == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(5)))
    if kind == 6:
        return rng.choice(OPS)
    if kind == 7:
        return rng.choice(["c1", "c2", "cart_abandoned", "page_view"])
    if kind == 8:
        return [value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if kind == 9:
        return {
            rng.choice(["customer_id", "type", "cart_value", "time", "x"]): value(rng, depth + 1)
            for _ in range(rng.randrange(4))
        }
    return event(rng)


def event(rng: random.Random) -> dict:
    out = {
        "customer_id": rng.choice(["c1", "c2", "c3"]),
        "type": rng.choice(["cart_abandoned", "page_view"]),
        "cart_value": rng.choice([10, 80, 3.5]),
    }
    for _ in range(rng.randrange(3)):
        key = rng.choice(["customer_id", "type", "cart_value", "time", "extra"])
        if rng.random() < 0.5:
            out.pop(key, None)
        else:
            out[key] = value(rng, 1)
    return out


def request(rng: random.Random):
    roll = rng.random()
    if roll < 0.3:
        return {"id": rng.randrange(10**6), "op": "decide", "event": event(rng)}
    if roll < 0.35:
        return value(rng)  # not a map, or a map of anything
    obj = {
        "id": rng.randrange(10**6),
        "op": rng.choice(OPS),
        "event": event(rng),
        "customer_id": "c1",
        "profile": {"tier": "gold"},
        "token": "t",
    }
    for key in rng.sample(KEYS, rng.randrange(len(KEYS))):
        if rng.random() < 0.4:
            obj.pop(key, None)
        else:
            obj[key] = value(rng)
    if obj.get("op") == "reload":  # answered from a task, out of order: tests/test_protocol.py covers it
        obj["op"] = "ping"
    return obj


def expected_ok(obj):
    """True, False, or None when either may come (the engine decides)."""
    try:
        req = parse_request(obj)
    except BadRequest:
        return False
    if req.op in ("ping", "stats", "auth"):
        return True
    return None


def same(a, b) -> bool:
    import msgpack

    return msgpack.packb(a) == msgpack.packb(b)


def read_until(sock, decoder, count, deadline):
    out = []
    while len(out) < count:
        obj = decoder.next_frame()
        if obj is not NEED_MORE:
            out.append(obj)
            continue
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(1 << 16)
        except (socket.timeout, ConnectionResetError):
            break
        if not data:
            break
        decoder.feed(data)
    return out


def closed(sock) -> bool:
    sock.settimeout(5)
    try:
        while True:
            if not sock.recv(1 << 16):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def start_server(rules: str, log_path: str):
    log = open(log_path, "w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nba.engine.server", rules, "--port", "0"],
        stdout=log,
        stderr=log,
        cwd=str(REPO),
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = Path(log_path).read_text(errors="replace")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{Path(log_path).read_text(errors='replace')}")


def fail(case, message):
    print(f"FAILED: {message}\ncase: {case!r}", file=sys.stderr)
    sys.exit(1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rules", help="a ruleset to serve (default: a small one written here)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    workdir = tempfile.mkdtemp(prefix="nba-fuzz-")
    rules = args.rules or str(Path(workdir, "fuzz.rules"))
    if not args.rules:
        Path(rules).write_text(RULES)
    proc, port = start_server(rules, str(Path(workdir, "server.log")))
    counts = {"pipelines": 0, "requests": 0, "unreadable": 0, "victim_decisions": 0}
    try:
        victim = socket.create_connection(("127.0.0.1", port))
        victim_decoder = FrameDecoder(1 << 24)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            frames = [request(rng) for _ in range(rng.randrange(1, 30))]
            bad = rng.choice(UNREADABLE) if rng.random() < 0.15 else b""
            stream = b"".join(encode_frame(f) for f in frames) + bad
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randrange(4)))
            start = 0
            for cut in [*cuts, len(stream)]:
                sock.sendall(stream[start:cut])
                start = cut
            decoder = FrameDecoder(1 << 24)
            answers = read_until(sock, decoder, len(frames) + (1 if bad else 0), time.monotonic() + 10)
            case = (frames, bad)
            if bad:
                if len(answers) != len(frames) + 1 or answers[-1]["id"] is not None or answers[-1]["ok"]:
                    fail(case, f"an unreadable frame: expected {len(frames)} answers then an error, got {answers!r}")
                answers = answers[:-1]
                if not closed(sock):
                    fail(case, "the connection stayed open after an unreadable frame")
                counts["unreadable"] += 1
            if len(answers) != len(frames):
                fail(case, f"{len(frames)} requests, {len(answers)} answers")
            for obj, answer in zip(frames, answers):
                want_id = obj.get("id") if isinstance(obj, dict) else None
                if not same(answer.get("id"), want_id):
                    fail(obj, f"answer {answer!r} does not carry the request's id")
                ok = expected_ok(obj)
                if ok is not None and answer["ok"] is not ok:
                    fail(obj, f"answer {answer!r}: ok should be {ok}")
                if not answer["ok"] and answer["error"]["code"] == "internal":
                    fail(obj, f"internal error: {answer!r}")
            if not bad:
                sock.sendall(encode_frame({"id": "last", "op": "ping"}))
                if read_until(sock, decoder, 1, time.monotonic() + 10) != [{"id": "last", "ok": True, "pong": True}]:
                    fail(case, "the connection did not stay open after readable frames")
            sock.close()
            victim.sendall(
                encode_frame(
                    {"id": counts["pipelines"], "op": "decide", "event": {"customer_id": "victim", "type": "page_view"}}
                )
            )
            [answer] = read_until(victim, victim_decoder, 1, time.monotonic() + 10) or [None]
            if answer is None or answer["id"] != counts["pipelines"] or answer["ok"] is not True:
                fail(case, f"the other connection's decision went wrong: {answer!r}")
            counts["victim_decisions"] += 1
            counts["pipelines"] += 1
            counts["requests"] += len(frames)
            if proc.poll() is not None:
                fail(case, "the server exited")
        victim.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    log_text = Path(workdir, "server.log").read_text(errors="replace")
    tracebacks = log_text.count("Traceback")
    print(
        f"{counts['pipelines']} pipelines, {counts['requests']} requests, {counts['unreadable']} unreadable frames, "
        f"{counts['victim_decisions']} decisions on the other connection: all answered as expected; "
        f"{tracebacks} tracebacks in the server's log; exit code {proc.returncode}"
    )
    return 0 if tracebacks == 0 and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
