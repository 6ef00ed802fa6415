"""The Python clients: every op, error responses raised as NbaError, pipelining, and a
connection that ends."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from nba.engine.client import AsyncClient, Client, ConnectionClosed, NbaError, ServerUnavailable
from nba.engine.protocol import HEADER, encode_frame

from polling import wait_until
from server_fakes import FakeEngine, ThreadServer


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "fake.rules"
    path.write_text("action hello\n")
    with ThreadServer(FakeEngine(str(path)), rules_path=str(path)) as srv:
        yield srv


EVENT = {"customer_id": "c1", "type": "t"}


def test_client_ops(server):
    with Client("127.0.0.1", server.port) as client:
        assert client.ping() is True
        decision = client.decide(EVENT | {"seq": 5}, limit=2, explain=True, dry_run=True)
        assert decision["action"] == "hello" and decision["params"] == {"seq": 5}
        assert client.put_profile("c1", {"tier": "gold"}) is None
        assert client.get_profile("c1") == {"tier": "gold"}
        assert client.reload() == {"reloads": 1}
        stats = client.stats()
        assert stats["decisions"] == 1 and stats["requests"]["decide"] == 1


def test_client_raises_error_responses_and_goes_on(server):
    with Client("127.0.0.1", server.port) as client:
        with pytest.raises(NbaError) as info:
            client.decide({"customer_id": "c1"})
        assert info.value.code == "bad_event" and "type" in info.value.message
        with pytest.raises(NbaError) as info:
            client.call({"op": "teleport"})
        assert info.value.code == "unknown_op"
        with pytest.raises(NbaError) as info:
            client.get_profile("")
        assert info.value.code == "bad_request"
        assert client.ping() is True


def test_client_pipeline_keeps_request_order_and_returns_errors_in_place(server):
    with Client("127.0.0.1", server.port) as client:
        responses = client.pipeline([{"op": "decide", "event": EVENT}, {"op": "nope"}, {"op": "ping"}])
        assert [r["ok"] for r in responses] == [True, False, True]
        assert responses[1]["error"]["code"] == "unknown_op"
        decisions = client.decide_many({"customer_id": f"c{i}", "type": "t", "seq": i} for i in range(2000))
        assert [d["params"]["seq"] for d in decisions] == list(range(2000))
        with pytest.raises(NbaError):
            client.decide_many([EVENT, {"type": "t"}])


def test_client_fatal_error_closes_the_connection_and_the_next_call_opens_another(server):
    with Client("127.0.0.1", server.port) as client:
        conn = client._acquire()
        conn.send(HEADER.pack(1 << 30))
        response = conn.receive()
        assert response["id"] is None and response["error"]["code"] == "frame_too_large"
        client._release(conn)
        wait_until(conn.is_stale, "the connection going stale (the server closed it)")
        assert client.ping() is True  # on a new connection


def fake_listener(answer):
    """A listener whose one connection reads a request and then does ``answer(conn)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        conn, _ = listener.accept()
        conn.recv(100)
        answer(conn)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    return listener, thread


def test_client_raises_a_fatal_error_answered_in_place_of_its_answer():
    error = {"id": None, "ok": False, "error": {"code": "frame_too_large", "message": "too large"}}
    listener, thread = fake_listener(lambda conn: conn.sendall(encode_frame(error)))
    with listener, Client("127.0.0.1", listener.getsockname()[1]) as client:
        with pytest.raises(NbaError) as info:
            client.ping()
        assert info.value.code == "frame_too_large" and not isinstance(info.value, ConnectionClosed)
    thread.join()


def test_client_sees_a_server_that_closes():
    listener, thread = fake_listener(lambda conn: None)
    with listener, Client("127.0.0.1", listener.getsockname()[1]) as client:
        with pytest.raises(ConnectionClosed) as info:
            client.decide(EVENT)
        assert info.value.code == "connection_closed" and "not sent again" in info.value.message
    thread.join()


def run(coro):
    return asyncio.run(coro)


def test_async_client_ops(server):
    async def scenario():
        async with await AsyncClient.connect("127.0.0.1", server.port) as client:
            assert await client.ping() is True
            assert (await client.decide(EVENT))["action"] == "hello"
            await client.put_profile("c2", {"a": [1, 2]})
            assert await client.get_profile("c2") == {"a": [1, 2]}
            assert (await client.stats())["decisions"] == 1
            assert await client.reload() == {"reloads": 1}

    run(scenario())


def test_async_client_pipelines_and_matches_ids(server):
    async def scenario():
        async with await AsyncClient.connect("127.0.0.1", server.port) as client:
            events = [{"customer_id": f"c{i}", "type": "t", "seq": i} for i in range(5000)]
            decisions = await asyncio.gather(*(client.decide(e) for e in events))
            assert [d["params"]["seq"] for d in decisions] == list(range(5000))

    run(scenario())


def test_async_client_raises_error_responses(server):
    async def scenario():
        async with await AsyncClient.connect("127.0.0.1", server.port) as client:
            results = await asyncio.gather(
                client.decide(EVENT), client.decide({"type": "t"}), client.ping(), return_exceptions=True
            )
            assert results[0]["action"] == "hello"
            assert isinstance(results[1], NbaError) and results[1].code == "bad_event"
            assert results[2] is True

    run(scenario())


def test_async_client_fatal_error_fails_every_waiting_call(server):
    async def scenario():
        async with await AsyncClient.connect("127.0.0.1", server.port) as client:
            waiting = [asyncio.ensure_future(client.decide(EVENT | {"seq": i})) for i in range(3)]
            await asyncio.sleep(0)
            client._protocol.send(HEADER.pack(8) + b"\xc1" * 8)
            results = await asyncio.gather(*waiting, return_exceptions=True)
            # the three decisions went out before the bad frame: they are answered
            assert [r["params"]["seq"] for r in results] == [0, 1, 2]
            # the server answered the bad frame and closed: the next call opens a new connection
            assert await client.ping() is True

    run(scenario())


def test_async_client_after_the_server_stops(tmp_path):
    path = tmp_path / "fake.rules"
    path.write_text("action hello\n")

    async def scenario(srv):
        client = await AsyncClient.connect("127.0.0.1", srv.port)
        assert await client.ping() is True
        srv.stop()
        with pytest.raises(ConnectionClosed):
            for _ in range(100):
                await client.ping()
                await asyncio.sleep(0.01)
        await client.close()

    with ThreadServer(FakeEngine(str(path))) as srv:
        run(scenario(srv))


def test_frames_from_encode_frame_are_what_the_server_reads(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(encode_frame({"id": "x", "op": "ping"}))
        data = sock.recv(100)
        assert HEADER.unpack(data[:4])[0] == len(data) - 4


def test_client_pipeline_of_many_large_requests_does_not_block(server):
    with Client("127.0.0.1", server.port) as client:
        events = [{"customer_id": f"c{i}", "type": "t", "seq": i, "pad": "x" * 2000} for i in range(3000)]
        decisions = client.decide_many(events)
        assert [d["params"]["seq"] for d in decisions] == list(range(3000))


def test_a_server_that_hangs_up_during_auth_is_unavailable_not_a_wrong_token():
    listener, thread = fake_listener(lambda conn: None)
    with listener:
        with pytest.raises(ServerUnavailable) as info:
            Client("127.0.0.1", listener.getsockname()[1], token="t")
        assert "ConnectionClosed" in info.value.message
    thread.join()
