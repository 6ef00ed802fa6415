"""The server over real loopback sockets: pipelining, bad input, limits, reload, signals,
workers and metrics. Servers run in a thread (``ThreadServer``) or a child process
(``ServerProcess``); every one is stopped by the test that starts it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import struct
import sys
import threading
import urllib.request

import msgpack
import pytest

from nba.engine.client import AsyncClient, Client, NbaError
from nba.engine.protocol import HEADER, encode_frame

from polling import wait_until
from server_fakes import (
    FakeEngine,
    ServerProcess,
    ThreadServer,
    closed_by_peer,
    connect,
    raw_frame,
    read_frames,
    server_command,
)


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "fake.rules"
    path.write_text("action hello\n")
    return path


def decide(i, customer=None, **extra):
    return {"id": i, "op": "decide", "event": {"customer_id": customer or f"c{i % 97}", "type": "t", "seq": i, **extra}}


@pytest.mark.parametrize("blocking", [True, False], ids=["inline", "tasks"])
def test_10000_pipelined_requests_on_one_connection(rules, blocking):
    with ThreadServer(FakeEngine(str(rules)), blocking=blocking) as srv, connect(srv.port) as sock:
        ids = [i if i % 3 else f"req-{i}" for i in range(10_000)]
        payload = b"".join(encode_frame(decide(i) | {"id": rid}) for i, rid in enumerate(ids))
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        responses = read_frames(sock, len(ids))
        sender.join()
        assert len(responses) == len(ids)
        by_id = {r["id"]: r for r in responses}
        assert set(by_id) == set(ids)
        for i, rid in enumerate(ids):
            assert by_id[rid]["ok"] and by_id[rid]["decision"]["params"]["seq"] == i
        if blocking:
            assert [r["id"] for r in responses] == ids  # answered in order


BAD_FRAMES = {
    "too_large": (HEADER.pack(2 << 20) + b"x" * 100, "frame_too_large"),
    "not_msgpack": (raw_frame(b"\xc1\xc1"), "bad_frame"),
    "truncated_value": (raw_frame(b"\x93\x01"), "bad_frame"),
    "two_values": (raw_frame(msgpack.packb(1) + msgpack.packb(2)), "bad_frame"),
    "empty": (raw_frame(b""), "bad_frame"),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_an_unreadable_frame_gets_an_error_then_the_connection_closes(rules, name):
    bad, code = BAD_FRAMES[name]
    with ThreadServer(FakeEngine(str(rules))) as srv, connect(srv.port) as sock:
        sock.sendall(encode_frame(decide(1)) + bad)
        first, error = read_frames(sock, 2)
        assert first["id"] == 1 and first["ok"]
        assert error["id"] is None and error["ok"] is False and error["error"]["code"] == code
        assert closed_by_peer(sock)
        with Client("127.0.0.1", srv.port) as other:
            assert other.ping() is True


def test_bad_requests_leave_the_connection_open(rules):
    with ThreadServer(FakeEngine(str(rules))) as srv, connect(srv.port) as sock:
        sock.sendall(
            encode_frame("hello")
            + encode_frame({"id": 2, "op": "launch"})
            + encode_frame({"id": 3, "op": "decide", "event": {"customer_id": "c1"}})
            + encode_frame({"id": 4, "op": "decide", "event": {"customer_id": "c1", "type": "t"}, "limit": -1})
            + encode_frame({"id": 5, "op": "ping"})
        )
        responses = read_frames(sock, 5)
        assert [(r["id"], r["ok"] or r["error"]["code"]) for r in responses] == [
            (None, "bad_request"),
            (2, "unknown_op"),
            (3, "bad_event"),
            (4, "bad_request"),
            (5, True),
        ]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_that_disconnects_mid_frame(rules, how):
    with ThreadServer(FakeEngine(str(rules))) as srv:
        sock = connect(srv.port)
        sock.sendall(encode_frame(decide(1)))
        assert read_frames(sock, 1)[0]["ok"]
        sock.sendall(encode_frame(decide(2))[:9])
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_until(lambda: srv.stats()["connections"] == 0, "no connection left")
        if how == "close":
            assert srv.stats()["request_errors"] == {"bad_frame": 1}
        with Client("127.0.0.1", srv.port) as client:
            assert client.decide({"customer_id": "c9", "type": "t"})["action"] == "hello"


def test_garbage_from_one_client_does_not_disturb_another(rules):
    with ThreadServer(FakeEngine(str(rules)), max_frame_bytes=4096) as srv:
        results = []

        def good():
            with Client("127.0.0.1", srv.port) as client:
                for _ in range(20):
                    results.extend(client.decide_many(decide(i)["event"] for i in range(100)))

        worker = threading.Thread(target=good)
        worker.start()
        for chunk in (b"\xff" * 10, HEADER.pack(8) + b"\xc1" * 8, b"\x00\x00", HEADER.pack(1 << 30)):
            with connect(srv.port) as sock:
                sock.sendall(chunk)
                sock.shutdown(socket.SHUT_WR)
                closed_by_peer(sock)
        worker.join()
        assert len(results) == 2000 and all(d["action"] == "hello" for d in results)


def test_idle_connections_are_closed(rules):
    with ThreadServer(FakeEngine(str(rules)), idle_timeout_s=0.2) as srv, connect(srv.port) as sock:
        sock.sendall(encode_frame({"id": 1, "op": "ping"}))
        assert read_frames(sock, 1)[0]["ok"]
        assert closed_by_peer(sock)


def test_in_flight_limit_over_a_socket(rules):
    engine = FakeEngine(str(rules), delay=0.002)
    with ThreadServer(engine, blocking=False, max_in_flight=4) as srv, connect(srv.port) as sock:
        sock.sendall(b"".join(encode_frame(decide(i, customer=f"c{i}")) for i in range(200)))
        responses = read_frames(sock, 200)
        assert sorted(r["id"] for r in responses) == list(range(200))


def test_reload_under_load_fails_no_request(rules):
    engine = FakeEngine(str(rules), delay=0.0005)

    async def load(port, stop, seen):
        async with await AsyncClient.connect("127.0.0.1", port) as client:
            i = 0
            while not stop.is_set():
                batch = [client.decide({"customer_id": f"c{i + k}", "type": "t"}) for k in range(50)]
                seen.extend(d["action"] for d in await asyncio.gather(*batch))
                i += 50

    async def reloads(port, stop):
        outcomes = []
        async with await AsyncClient.connect("127.0.0.1", port) as admin:
            for n in range(6):
                rules.write_text(f"action v{n}\n" if n % 3 != 2 else "not a ruleset\n")
                try:
                    outcomes.append(await admin.reload())
                except Exception as exc:  # noqa: BLE001
                    outcomes.append(exc.code)
                await asyncio.sleep(0.02)
            rules.write_text("action final\n")
            outcomes.append(await admin.reload())
            await asyncio.sleep(0.05)
        stop.set()
        return outcomes

    async def scenario(port):
        stop = asyncio.Event()
        seen = []
        results = await asyncio.gather(*(load(port, stop, seen) for _ in range(3)), reloads(port, stop))
        return seen, results[-1]

    with ThreadServer(engine, rules_path=str(rules), blocking=False) as srv:
        seen, outcomes = asyncio.run(scenario(srv.port))
        assert outcomes.count("load_failed") == 2
        assert seen and seen[-1] == "final"
        assert set(seen) <= {"hello", "v0", "v1", "v3", "v4", "final"}
        stats = srv.stats()
        assert stats["reloads"] == {"ok": 5, "failed": 2}
        assert set(stats["request_errors"]) <= {"load_failed"}


def test_watch_reloads_when_a_rules_file_changes(rules):
    with ThreadServer(FakeEngine(str(rules)), rules_path=str(rules), watch=True, watch_interval_s=0.05) as srv:
        with Client("127.0.0.1", srv.port) as client:
            event = {"customer_id": "c1", "type": "t"}
            assert client.decide(event)["action"] == "hello"
            rules.write_text("action watched\n")
            wait_until(lambda: client.decide(event)["action"] == "watched", "the watched file's ruleset deciding")
            rules.write_text("broken, and longer than before\n")
            wait_until(lambda: srv.stats()["reloads"]["failed"] == 1, "a failed reload")
            assert client.decide(event)["action"] == "watched"


def test_metrics_endpoint(rules):
    with ThreadServer(FakeEngine(str(rules)), metrics_port=0) as srv:
        with Client("127.0.0.1", srv.port) as client:
            client.decide({"customer_id": "c1", "type": "t"})
            with pytest.raises(NbaError):
                client.decide({"type": "t"})
        host, port = srv.server.metrics_address
        text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
        assert "nba_decisions_total 1.0" in text
        assert 'nba_first_choices_total{rule="r1"} 1.0' in text
        assert 'nba_request_errors_total{code="bad_event"} 1.0' in text
        assert 'nba_request_latency_seconds_bucket{le="+Inf"} 2.0' in text


# ------------------------------------------------------------------ processes


def test_sigterm_finishes_requests_in_flight_then_exits_0(rules, tmp_path):
    command = server_command(rules, "slow_engine_factory")
    with ServerProcess(command, env={"NBA_FAKE_DELAY": "1.0"}, log_path=tmp_path / "log") as proc:
        with connect(proc.port) as sock:
            sock.sendall(b"".join(encode_frame(decide(i, customer=f"c{i}")) for i in range(20)))
            sock.sendall(encode_frame({"id": "ping", "op": "ping"}))
            [pong] = read_frames(sock, 1)  # answered at once: the 20 decisions are now in flight
            assert pong["id"] == "ping"
            proc.process.send_signal(signal.SIGTERM)
            responses = read_frames(sock, 21)
            assert sorted(r["id"] for r in responses) == list(range(20))
            assert all(r["ok"] for r in responses)
            assert closed_by_peer(sock)
        assert proc.process.wait(30) == 0
        in_flight = re.search(r"stopping: 1 connections, (\d+) requests in flight", proc.output())
        assert in_flight and int(in_flight.group(1)) > 0


def test_sighup_reloads(rules, tmp_path):
    with ServerProcess(server_command(rules, "fake_engine_factory"), log_path=tmp_path / "log") as proc:
        rules.write_text("action after_hup\n")
        proc.process.send_signal(signal.SIGHUP)
        with Client("127.0.0.1", proc.port) as client:
            wait_until(
                lambda: client.decide({"customer_id": "c", "type": "t"})["action"] == "after_hup",
                "the ruleset reloaded on SIGHUP deciding",
            )
        assert proc.stop() == 0


def test_a_ruleset_that_does_not_load_exits_2(tmp_path):
    rules = tmp_path / "bad.rules"
    rules.write_text("nonsense\n")
    proc = ServerProcess(server_command(rules, "fake_engine_factory"), log_path=tmp_path / "log")
    with pytest.raises(RuntimeError):
        proc.__enter__()
    assert proc.process.returncode == 2
    assert "does not load" in proc.output()


def test_two_workers_share_the_port(rules, tmp_path):
    command = server_command(rules, "fake_engine_factory", workers=2)
    with ServerProcess(command, log_path=tmp_path / "log") as proc:
        clients = [Client("127.0.0.1", proc.port) for _ in range(40)]
        try:
            pids = {client.stats()["server"]["pid"] for client in clients}
            assert len(pids) == 2
            # a reload asked of one worker reaches the other
            rules.write_text("action everywhere\n")
            assert clients[0].reload()
            event = {"customer_id": "c", "type": "t"}
            wait_until(lambda: all(c.decide(event)["action"] == "everywhere" for c in clients), "every worker reloaded")
        finally:
            for client in clients:
                client.close()
        assert proc.stop() == 0
    assert proc.output().count("stopped") == 2


# ------------------------------------------------------------------ the real engine

from nba.engine import Engine  # noqa: E402

from benchmarks.bench_server import RULES as CART_RULES  # noqa: E402  (DSL.md's example ruleset)
from redis_fixtures import needs_redis  # noqa: E402


@pytest.fixture
def cart_rules(tmp_path):
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "cart.rules").write_text(CART_RULES)
    return directory


def test_real_engine_over_the_socket(cart_rules):
    engine = Engine.from_path(cart_rules)
    with ThreadServer(engine, rules_path=str(cart_rules)) as srv, Client("127.0.0.1", srv.port) as client:
        view = {"customer_id": "c1", "type": "page_view", "category": "shoes"}
        actions = [client.decide(view)["action"] for _ in range(3)]
        assert actions == ["browse_recommendations", "browse_recommendations", "shoe_banner"]
        explained = client.decide(view, explain=True, dry_run=True)
        assert explained["rule"] == "shoe_browser" and explained["trace"][0]["rule"] == "shoe_browser"
        with pytest.raises(NbaError) as info:
            client.decide({"customer_id": "c1", "type": "cart_abandoned", "cart_value": "lots"})
        assert info.value.code == "bad_event" and "cart_value" in info.value.message
        with pytest.raises(NbaError) as info:
            client.decide(view, limit=1000)
        assert info.value.code == "bad_request"
        client.put_profile("c2", {"tier": "gold", "lifetime_value": "1200"})
        assert client.get_profile("c2") == {"tier": "gold", "lifetime_value": 1200}
        stats = client.stats()
        assert stats["first_choices"]["shoe_browser"] == 2 and stats["decisions"] >= 4


def test_real_engine_reload_under_load(cart_rules):
    rules_file = cart_rules / "cart.rules"
    engine = Engine.from_path(cart_rules)

    async def load(port, stop, seen, failures):
        async with await AsyncClient.connect("127.0.0.1", port) as client:
            i = 0
            while not stop.is_set():
                batch = [client.decide({"customer_id": f"c{i + k}", "type": "login"}) for k in range(40)]
                for result in await asyncio.gather(*batch, return_exceptions=True):
                    if isinstance(result, Exception):
                        failures.append(result)
                    else:
                        seen.add(result["action"])
                i += 40

    async def reloads(port, stop):
        outcomes = []
        async with await AsyncClient.connect("127.0.0.1", port) as admin:
            for text in ("default second via web\n", "rule broken when then end\n", "default third via web\n"):
                rules_file.write_text(CART_RULES.replace("default browse_recommendations via web\n", text))
                try:
                    outcomes.append(await admin.reload())
                except NbaError as exc:
                    outcomes.append(exc)
                await asyncio.sleep(0.05)
        stop.set()
        return outcomes

    async def scenario(port):
        stop, seen, failures = asyncio.Event(), set(), []
        *_, outcomes = await asyncio.gather(*(load(port, stop, seen, failures) for _ in range(2)), reloads(port, stop))
        return seen, failures, outcomes

    with ThreadServer(engine, rules_path=str(cart_rules)) as srv:
        seen, failures, outcomes = asyncio.run(scenario(srv.port))
        assert failures == []
        assert isinstance(outcomes[1], NbaError) and outcomes[1].code == "load_failed"
        assert "cart.rules:" in outcomes[1].message and "error:" in outcomes[1].message
        assert seen <= {"browse_recommendations", "second", "third"} and "third" in seen
        with Client("127.0.0.1", srv.port) as client:
            assert client.decide({"customer_id": "z", "type": "login"})["action"] == "third"


def not_in_holdout(cart_rules) -> str:
    """A customer that cart_rescue's 10% holdout lets through."""
    engine = Engine.from_path(cart_rules)
    for i in range(100):
        customer = f"cust{i}"
        engine.put_profile(customer, {"email_opt_in": True})
        event = {"customer_id": customer, "type": "cart_abandoned", "cart_value": 80}
        if engine.decide(event, dry_run=True).rule == "cart_rescue":
            return customer
    raise AssertionError("no customer outside the holdout")


@needs_redis
def test_real_engine_on_redis_via_python_m_engine_server(cart_rules, tmp_path, own_redis_server):
    customer = not_in_holdout(cart_rules)
    redis = own_redis_server
    command = [sys.executable, "-m", "nba.engine.server", str(cart_rules), "--port", "0", "--redis", redis.url]
    with ServerProcess(command, log_path=tmp_path / "log") as proc, Client("127.0.0.1", proc.port) as client:
        client.put_profile(customer, {"email_opt_in": True, "tier": "gold"})
        assert client.get_profile(customer) == {"email_opt_in": True, "tier": "gold"}
        cart = {"customer_id": customer, "type": "cart_abandoned", "cart_value": 80}
        decisions = client.decide_many([cart] * 5)  # one customer, pipelined: run in order
        reminders = [d for d in decisions if d["action"] == "cart_reminder" and not d["degraded"]]
        assert len(reminders) <= 1  # cap 1 per 24h
        views = client.decide_many(
            {"customer_id": f"v{i}", "type": "page_view", "category": "shoes"} for i in range(500)
        )
        assert len(views) == 500
        stats = client.stats()
        assert stats["server"]["store"] == "redis" and stats["decisions"] >= 505
    assert proc.process.returncode == 0


@needs_redis
def test_real_engine_on_redis_answers_as_on_memory(cart_rules, redis_url):
    """Decisions that wait for Redis (by the store's callbacks, no task each) answer what
    the in-memory engine answers: options, errors, profiles, pipelined from two clients."""
    customer = not_in_holdout(cart_rules)
    memory = Engine.from_path(cart_rules)
    engine = Engine.from_path(
        cart_rules, redis_url=redis_url, latency_budget_s=2.0, write_timeout_s=2.0, key_prefix=f"t{os.getpid()}"
    )
    views = [{"customer_id": f"v{i % 7}", "type": "page_view", "category": "shoes"} for i in range(60)]
    cart = {"customer_id": customer, "type": "cart_abandoned", "cart_value": 80}
    with ThreadServer(engine, rules_path=str(cart_rules), blocking=False) as srv:
        with Client("127.0.0.1", srv.port) as client, Client("127.0.0.1", srv.port) as other:
            for target in (client, memory):
                target.put_profile(customer, {"email_opt_in": True, "tier": "gold"})
            assert client.get_profile(customer) == memory.get_profile(customer)
            expected = [memory.decide(event).to_dict() for event in views[:30]]
            assert client.decide_many(views[:30]) == expected
            expected = [memory.decide(event, limit=2, explain=True).to_dict() for event in views[30:]]
            assert other.decide_many(views[30:], limit=2, explain=True) == expected
            assert client.decide(cart, dry_run=True) == memory.decide(cart, dry_run=True).to_dict()
            assert [client.decide(cart)["rule"] for _ in range(2)] == ["cart_rescue", "default"]  # cap 1 per 24h
            with pytest.raises(NbaError) as info:
                client.decide({"customer_id": "c1", "type": "cart_abandoned", "cart_value": "lots"})
            assert info.value.code == "bad_event"
            with pytest.raises(NbaError) as info:
                client.decide(views[0], limit=1000)
            assert info.value.code == "bad_request"
            stats = client.stats()
            assert stats["decisions"] == 63 and stats["degraded"] == 0


def test_workers_stop_when_their_parent_is_killed(rules, tmp_path):
    command = server_command(rules, "fake_engine_factory", workers=2)
    with ServerProcess(command, log_path=tmp_path / "log") as proc:
        proc.process.kill()
        proc.process.wait()
        wait_until(
            lambda: proc.output().count("is gone; stopping") == 2, lambda: f"both workers stopping:\n{proc.output()}"
        )
        wait_until(lambda: proc.output().count("stopped") == 2, lambda: f"both workers stopped:\n{proc.output()}")

        def port_closed():
            try:
                socket.create_connection(("127.0.0.1", proc.port), timeout=1).close()
                return False
            except OSError:
                return True

        wait_until(port_closed, "the port closed")
