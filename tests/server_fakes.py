"""A small stand-in for ``engine.Engine`` with the same interface, for the server's tests.

The ruleset is one text file: ``action NAME`` makes every decision give ``NAME``; any other
content fails to load. ``slow_engine_factory`` makes the async methods wait a little, so that
requests stay in flight.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from nba.engine.decision import Choice, Decision
from nba.engine.errors import EventError, RequestError
from nba.engine.protocol import HEADER, NEED_MORE, FrameDecoder, encode_frame
from nba.engine.server import Server, new_event_loop
from nba.engine.settings import ServerSettings

from polling import wait_until

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


class FakeLoadError(Exception):
    pass


class FakeStats:
    def __init__(self):
        self.decisions = 0
        self.degraded = 0
        self.first_choices = {}

    def snapshot(self):
        return {
            "decisions": self.decisions,
            "errors": 0,
            "degraded": self.degraded,
            "first_choices": dict(self.first_choices),
            "passed_over": {},
        }


def read_action(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    if not text.startswith("action "):
        raise FakeLoadError(f"{path}:1:1: error: expected 'action NAME'")
    return text.split()[1]


class FakeEngine:
    def __init__(self, rules_path: str, delay: float = 0.0):
        self.rules_path = rules_path
        self.delay = delay
        self.action = read_action(rules_path)
        self.profiles = {}
        self.stats = FakeStats()
        self.closed = False

    def decide(self, event, limit=1, explain=False, dry_run=False):
        customer_id = event.get("customer_id")
        if type(customer_id) is not str or not customer_id:
            raise EventError("customer_id", "must be a non-empty string")
        if type(event.get("type")) is not str:
            raise EventError("type", "must be a non-empty string")
        if event.get("boom"):
            raise RuntimeError("boom")
        if limit > 100:
            raise RequestError("limit must be at most 100")
        self.stats.decisions += 1
        self.stats.first_choices["r1"] = self.stats.first_choices.get("r1", 0) + 1
        params = {"seq": event.get("seq")}
        if event.get("weird"):
            params["weird"] = {1, 2}  # a set: sent as a list
        if event.get("unencodable"):
            params["unencodable"] = object()  # a value no response can carry
        if event.get("big"):
            params["big"] = 3 * 10**30  # beyond msgpack's 64-bit integers: sent as a float
        return Decision(customer_id, (Choice("r1", self.action, "web", params),))

    async def decide_async(self, event, limit=1, explain=False, dry_run=False):
        action = self.action  # an in-flight request finishes on the ruleset it started with
        if self.delay:
            await asyncio.sleep(self.delay)
        decision = self.decide(event, limit, explain, dry_run)
        first = decision.choices[0]
        return Decision(decision.customer_id, (Choice(first.rule, action, first.channel, first.params),))

    def get_profile(self, customer_id):
        return dict(self.profiles.get(customer_id, {}))

    def put_profile(self, customer_id, profile):
        self.profiles[customer_id] = dict(profile)

    async def get_profile_async(self, customer_id):
        return self.get_profile(customer_id)

    async def put_profile_async(self, customer_id, profile):
        self.put_profile(customer_id, profile)

    def reload(self, path=None):
        self.action = read_action(path or self.rules_path)

    def close(self):
        self.closed = True


def fake_engine_factory(rules_path, redis_url=None):
    return FakeEngine(rules_path)


def slow_engine_factory(rules_path, redis_url=None):
    return FakeEngine(rules_path, delay=float(os.environ.get("NBA_FAKE_DELAY", "0.5")))


# ------------------------------------------------------------------ a server in a thread


class ThreadServer:
    """A ``Server`` on its own event loop in a background thread, on a free loopback port."""

    def __init__(self, engine, rules_path=None, blocking=True, tokens=None, sock=None, **settings):
        settings.setdefault("port", 0)
        self.tokens = tokens
        self.sock = sock
        self.engine = engine
        self.settings = ServerSettings(**settings)
        self.rules_path = rules_path
        self.blocking = blocking
        self.loop = None
        self.server = None
        self.port = None
        self._thread = None
        self._ready = threading.Event()
        self._error = None

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(20)
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        self.loop = new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _main(self):
        self.server = Server(
            self.engine, self.settings, rules_path=self.rules_path, blocking=self.blocking, tokens=self.tokens
        )
        _, self.port = await self.server.start(self.sock)
        self._ready.set()
        await self.server.wait_stopped()

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the server's loop and return its result."""
        done = threading.Event()
        box = {}

        def run():
            try:
                box["value"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001
                box["error"] = exc
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(20)
        if "error" in box:
            raise box["error"]
        return box["value"]

    def stats(self):
        return self.call(self.server.stats_snapshot)

    def stop(self):
        if self._thread is None or not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.server.request_stop)
        self._thread.join(30)


# ------------------------------------------------------------------ raw sockets


def connect(port, timeout=20.0, host="127.0.0.1", source=None):
    sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_frames(sock, count, max_frame_bytes=64 << 20):
    """Read ``count`` responses (fewer if the server closes first)."""
    decoder = FrameDecoder(max_frame_bytes)
    out = []
    while len(out) < count:
        obj = decoder.next_frame()
        if obj is NEED_MORE:
            data = sock.recv(1 << 16)
            if not data:
                break
            decoder.feed(data)
            continue
        out.append(obj)
    return out


def closed_by_peer(sock):
    """True when the server has closed the connection (reads end-of-stream or a reset)."""
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def raw_frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


# ------------------------------------------------------------------ processes


def server_command(rules_path, factory=None, **settings):
    """``python -c ...`` running ``run_server`` (with a fake engine when ``factory`` is named)."""
    settings.setdefault("port", 0)
    factory_code = f"from server_fakes import {factory} as factory" if factory else "factory = None"
    code = (
        "import sys; sys.path.insert(0, %r)\n" % str(TESTS)
        + factory_code
        + "\n"
        + "from nba.engine.server import run_server\nfrom engine.settings import ServerSettings\n"
        + f"sys.exit(run_server({str(rules_path)!r}, ServerSettings(**{settings!r}), engine_factory=factory, "
        + f"blocking={'False' if factory == 'slow_engine_factory' else 'None'}))"
    )
    return [sys.executable, "-c", code]


class ServerProcess:
    """``run_server`` in a child process; ``port`` comes from its "listening on" log line."""

    def __init__(self, command, env=None, log_path=None):
        self.command = command
        self.env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
        self.log_path = log_path
        self.process = None
        self.port = None

    def __enter__(self):
        self.log = open(self.log_path, "w+b")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self.log, stderr=self.log, cwd=str(REPO))
        try:
            wait_until(
                lambda: self._port() or self.process.poll() is not None,
                lambda: f"the server to listen (or exit); it said:\n{self.output()}",
                timeout_s=60,
            )
        finally:
            if not self._port():
                self.stop()
        if not self._port():
            raise RuntimeError(f"the server did not start:\n{self.output()}")
        self.port = self._port()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _port(self):
        for line in self.output().splitlines():
            if "listening on 127.0.0.1:" in line and not re.search(r", worker \d", line):
                return int(line.split("listening on 127.0.0.1:")[1].split()[0])
        return None

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout=30):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.log.closed:
            self.log.close()
        return self.process.returncode


# ------------------------------------------------------------------ a server with tokens and TLS


class FakeAuthServer:
    """A small threaded stand-in for ``nba serve --auth FILE [--tls-cert ...]`` (INTERFACES.md,
    "Security of the socket"), for the clients' tests until the real server has both.

    ``tokens`` maps a token to its role (``client``: decide, ping, get_profile, stats;
    ``admin``: every op). With tokens, a connection's first request must be ``auth``: any
    other op before it gets ``unauthenticated`` (the connection stays open); a wrong token
    gets that error and a close. ``ssl_context``: TLS on the socket. ``requests`` records
    ``(connection number, op)`` of every request read; ``drop_connections()`` closes every
    open connection, as a server that restarts does.
    """

    CLIENT_OPS = frozenset({"decide", "ping", "get_profile", "stats"})

    def __init__(self, tokens: dict | None = None, ssl_context=None, decide_delay: float = 0.0):
        self.tokens = tokens
        self.ssl_context = ssl_context
        self.decide_delay = decide_delay
        self.requests: list[tuple[int, str]] = []
        self.profiles: dict = {}
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.stopped = False

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped = True
        try:  # wakes the accept() in the other thread (closing alone does not, on Linux)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.drop_connections()
        self.thread.join(10)

    def drop_connections(self) -> None:
        with self.lock:
            connections, self.connections = self.connections, []
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def ops_of(self, number: int) -> list[str]:
        return [op for n, op in self.requests if n == number]

    def _accept(self) -> None:
        number = 0
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number += 1
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return
        with self.lock:
            self.connections.append(conn)
        role = None if self.tokens else "admin"
        decoder = FrameDecoder(1 << 20)
        try:
            while True:
                request = decoder.next_frame()
                if request is NEED_MORE:
                    data = conn.recv(1 << 16)
                    if not data:
                        return
                    decoder.feed(data)
                    continue
                op = request.get("op")
                with self.lock:
                    self.requests.append((number, op))
                response, close = self._answer(request, role)
                if op == "auth" and response["ok"]:
                    role = self.tokens[request["token"]]
                conn.sendall(encode_frame(response))
                if close:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, request: dict, role: str | None) -> tuple[dict, bool]:
        request_id, op = request.get("id"), request.get("op")

        def error(code, message):
            return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}

        if op == "auth":
            if self.tokens and request.get("token") in self.tokens:
                return {"id": request_id, "ok": True}, False
            return error("unauthenticated", "wrong token"), True
        if role is None:
            return error("unauthenticated", "send an auth request first"), False
        if role == "client" and op not in self.CLIENT_OPS:
            return error("forbidden", f"the role client may not {op}"), False
        if op == "ping":
            return {"id": request_id, "ok": True, "pong": True}, False
        if op == "decide":
            if self.decide_delay:
                time.sleep(self.decide_delay)
            event = request.get("event") or {}
            decision = {"customer_id": event.get("customer_id"), "action": "hello", "params": {"seq": event.get("seq")}}
            return {"id": request_id, "ok": True, "decision": decision}, False
        if op == "get_profile":
            return {"id": request_id, "ok": True, "profile": self.profiles.get(request.get("customer_id"), {})}, False
        if op == "put_profile":
            self.profiles[request.get("customer_id")] = request.get("profile")
            return {"id": request_id, "ok": True}, False
        if op == "stats":
            return {"id": request_id, "ok": True, "stats": {"requests": len(self.requests)}}, False
        if op == "reload":
            return {"id": request_id, "ok": True, "reloaded": {"reloads": 1}}, False
        return error("unknown_op", f"unknown op {op!r}"), False
