"""The clients after a lost connection, from several threads, with a token and with TLS.

Reconnects are tested against real ``nba serve`` processes (started on a free port, killed,
started again on the same port) and, where a test needs the server to stay up while its
connections drop, against ``FakeAuthServer`` (tests/server_fakes.py), which also speaks the
``auth`` op and TLS of INTERFACES.md "Security of the socket". The tests against the real
server's ``--auth`` and ``--tls-cert`` run once ``nba serve --help`` lists those options.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nba.engine.client import AsyncClient, Client, ConnectionClosed, NbaError, RequestTimeout, ServerUnavailable

from polling import eventually, wait_until
from server_fakes import REPO, FakeAuthServer, FakeEngine, ServerProcess, ThreadServer, server_command

RULES = REPO / "rules"
FAST_BACKOFF = {"backoff_s": 0.01, "max_backoff_s": 0.05}


def nba_command() -> list[str]:
    script = Path(sys.executable).with_name("nba")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from nba.engine.cli import main; sys.exit(main())"]


def serve_help() -> str:
    try:
        return subprocess.run(
            [*nba_command(), "serve", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


SERVE_HELP = serve_help()
SERVER_HAS_AUTH = "--auth" in SERVE_HELP
SERVER_HAS_TLS = "--tls-cert" in SERVE_HELP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nba_serve(port: int, log_path: Path, *options: str) -> ServerProcess:
    return ServerProcess([*nba_command(), "serve", str(RULES), "--port", str(port), *options], log_path=log_path)


def crash(proc: ServerProcess) -> None:
    """SIGKILL: the server goes away without closing anything."""
    proc.process.kill()
    proc.process.wait(10)
    proc.stop()


async def until_the_loop_sees_the_close(client: AsyncClient) -> None:
    def closed() -> bool:
        return client._protocol is None or client._protocol.transport is None

    await eventually(closed, "the connection's end seen by the loop")


VIEW = {"customer_id": "c1", "type": "page_view", "category": "shoes"}


# ------------------------------------------------------------------ the real server restarts


def test_client_reconnects_after_nba_serve_is_killed_and_started_again(tmp_path):
    port = free_port()
    with nba_serve(port, tmp_path / "log1") as first:
        client = Client("127.0.0.1", port, **FAST_BACKOFF)
        assert client.ping() is True
        client.put_profile("c1", {"tier": "gold"})
        crash(first)
    # the server is away: a clear error (the request was not sent), not BrokenPipeError
    with pytest.raises(ServerUnavailable) as info:
        client.put_profile("c1", {"tier": "silver"})
    assert info.value.code == "server_unavailable" and f"127.0.0.1:{port}" in info.value.message
    with pytest.raises(ServerUnavailable) as info:
        client.ping()
    assert "next attempt in" in info.value.message
    with nba_serve(port, tmp_path / "log2"):
        assert wait_until(client.ping, "the server back", ignoring=(ServerUnavailable,)) is True
        # a recording call works again on the new connection
        client.put_profile("c1", {"tier": "silver"})
        assert client.get_profile("c1") == {"tier": "silver"}
        assert "action" in client.decide(VIEW)
    client.close()


def test_async_client_reconnects_after_nba_serve_is_killed_and_started_again(tmp_path):
    port = free_port()

    async def scenario():
        with nba_serve(port, tmp_path / "log1") as first:
            client = await AsyncClient.connect("127.0.0.1", port, **FAST_BACKOFF)
            assert await client.ping() is True
            crash(first)
        await until_the_loop_sees_the_close(client)
        with pytest.raises(ServerUnavailable):
            await client.put_profile("c1", {"tier": "silver"})
        with nba_serve(port, tmp_path / "log2"):
            assert await eventually(client.ping, "the server back", ignoring=(ServerUnavailable,)) is True
            await client.put_profile("c1", {"tier": "silver"})
            assert await client.get_profile("c1") == {"tier": "silver"}
            results = await asyncio.gather(*(client.decide(VIEW | {"customer_id": f"c{i}"}) for i in range(50)))
            assert len(results) == 50
        await client.close()

    asyncio.run(scenario())


@pytest.fixture
def slow_rules(tmp_path):
    path = tmp_path / "fake.rules"
    path.write_text("action hello\n")
    return path


def test_a_recording_call_in_flight_when_the_server_dies_fails_and_is_not_resent(tmp_path, slow_rules):
    command = server_command(slow_rules, "slow_engine_factory")
    with ServerProcess(command, env={"NBA_FAKE_DELAY": "5.0"}, log_path=tmp_path / "log") as proc:
        client = Client("127.0.0.1", proc.port, **FAST_BACKOFF)
        outcome = {}

        def decide():
            try:
                outcome["value"] = client.decide({"customer_id": "c1", "type": "t"})
            except NbaError as error:
                outcome["error"] = error

        thread = threading.Thread(target=decide)
        thread.start()
        wait_until(lambda: not client._free, "the call taking its connection")
        time.sleep(0.3)  # and its request waits in the server
        crash(proc)
        thread.join(20)
    error = outcome["error"]
    assert type(error) is ConnectionClosed and error.code == "connection_closed"
    assert "'decide'" in error.message and "not sent again" in error.message
    client.close()


def test_async_calls_in_flight_when_the_server_dies_fail(tmp_path, slow_rules):
    command = server_command(slow_rules, "slow_engine_factory")

    async def scenario(proc):
        client = await AsyncClient.connect("127.0.0.1", proc.port, **FAST_BACKOFF)
        waiting = [asyncio.ensure_future(client.decide({"customer_id": f"c{i}", "type": "t"})) for i in range(5)]
        await asyncio.sleep(0.3)
        crash(proc)
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(type(r) is ConnectionClosed and "not sent again" in r.message for r in results)
        await client.close()

    with ServerProcess(command, env={"NBA_FAKE_DELAY": "5.0"}, log_path=tmp_path / "log") as proc:
        asyncio.run(scenario(proc))


# ------------------------------------------------------------------ connections dropped, the server up


def test_safe_calls_in_flight_are_resent_and_recording_ones_are_not():
    with FakeAuthServer(decide_delay=0.5) as server:
        client = Client("127.0.0.1", server.port, **FAST_BACKOFF)
        outcomes = {}

        def run(name, call):
            try:
                outcomes[name] = call()
            except NbaError as error:
                outcomes[name] = error

        calls = {
            "dry_run": lambda: client.decide({"customer_id": "c1", "type": "t", "seq": 1}, dry_run=True),
            "recording": lambda: client.decide({"customer_id": "c2", "type": "t", "seq": 2}),
        }
        threads = [threading.Thread(target=run, args=item) for item in calls.items()]
        for thread in threads:
            thread.start()
        wait_until(lambda: sum(op == "decide" for _, op in server.requests) == 2, "two decides at the server")
        server.drop_connections()
        for thread in threads:
            thread.join(20)
        assert outcomes["dry_run"]["params"] == {"seq": 1}  # sent again on a new connection
        assert isinstance(outcomes["recording"], ConnectionClosed) and "not sent again" in outcomes["recording"].message
        decides = [op for _, op in server.requests if op == "decide"]
        assert len(decides) == 3  # the dry run twice, the recording decide once
        client.close()


@pytest.mark.parametrize("op", ["put_profile", "decide", "reload"])
def test_an_idle_connection_the_server_closed_is_replaced_before_any_request_is_written(op):
    with FakeAuthServer() as server:
        client = Client("127.0.0.1", server.port)
        assert client.ping() is True
        server.drop_connections()
        wait_until(lambda: client._free and client._free[0].is_stale(), "the idle connection going stale")
        calls = {
            "put_profile": lambda: client.put_profile("c1", {"a": 1}),
            "decide": lambda: client.decide({"customer_id": "c1", "type": "t"}),
            "reload": client.reload,
        }
        calls[op]()  # no ConnectionClosed: the request went out on a new connection
        assert server.ops_of(2) == [op]
        client.close()


def test_async_safe_calls_in_flight_are_resent_and_recording_ones_are_not():
    async def scenario(server):
        client = await AsyncClient.connect("127.0.0.1", server.port, **FAST_BACKOFF)
        dry = asyncio.ensure_future(client.decide({"customer_id": "c1", "type": "t", "seq": 1}, dry_run=True))
        recording = asyncio.ensure_future(client.put_profile("c1", {"a": 1}))
        ping = asyncio.ensure_future(client.ping())
        # the dry run waits in the server; the other two are written behind it
        await eventually(lambda: server.requests, "the dry run at the server")
        server.drop_connections()
        results = await asyncio.gather(dry, recording, ping, return_exceptions=True)
        assert results[0]["params"] == {"seq": 1}
        assert isinstance(results[1], ConnectionClosed) and "'put_profile'" in results[1].message
        assert results[2] is True
        # the next recording call goes out on the new connection
        await client.put_profile("c1", {"a": 2})
        await client.close()

    with FakeAuthServer(decide_delay=0.5) as server:
        asyncio.run(scenario(server))
        assert server.profiles == {"c1": {"a": 2}}


def test_the_wait_between_connect_attempts_doubles_up_to_its_limit():
    port = free_port()  # nothing listens there
    client = Client("127.0.0.1", port, backoff_s=0.05, max_backoff_s=0.2, connect_now=False)
    waits = []
    for _ in range(5):
        with pytest.raises(ServerUnavailable):
            client.ping()
        waits.append(client._backoff.wait_s)
        with pytest.raises(ServerUnavailable) as info:  # within the wait: no attempt, the same clear error
            client.ping()
        assert "next attempt in" in info.value.message and "ConnectionRefusedError" in info.value.message
        time.sleep(client._backoff.until - time.monotonic() + 0.001)
    assert waits == [0.05, 0.1, 0.2, 0.2, 0.2]


def test_a_client_that_cannot_connect_at_start_says_so():
    with pytest.raises(ServerUnavailable) as info:
        Client("127.0.0.1", free_port())
    assert "cannot connect to 127.0.0.1:" in str(info.value)


def test_no_answer_within_the_timeout_drops_the_connection(tmp_path):
    with FakeAuthServer(decide_delay=1.0) as server:
        client = Client("127.0.0.1", server.port, timeout=0.2)
        with pytest.raises(RequestTimeout) as info:
            client.decide({"customer_id": "c1", "type": "t"}, dry_run=True)
        assert info.value.code == "timeout"
        assert client.ping() is True  # on a new connection: the late answer is never mistaken for this one
        client.close()


# ------------------------------------------------------------------ threads


@pytest.fixture
def fake_server(tmp_path):
    path = tmp_path / "fake.rules"
    path.write_text("action hello\n")
    with ThreadServer(FakeEngine(str(path)), rules_path=str(path)) as srv:
        yield srv


@pytest.mark.parametrize("max_connections", [None, 2])
def test_one_client_shared_by_threads_gives_each_call_its_own_answer(fake_server, max_connections):
    client = Client("127.0.0.1", fake_server.port, max_connections=max_connections)
    failures = []

    def work(thread_number):
        for i in range(150):
            seq = thread_number * 1000 + i
            decision = client.decide({"customer_id": f"c{seq}", "type": "t", "seq": seq}, dry_run=True)
            if decision["params"]["seq"] != seq:
                failures.append((seq, decision))
            if i % 50 == 0:
                answers = client.decide_many(
                    [{"customer_id": "x", "type": "t", "seq": s} for s in range(seq, seq + 20)]
                )
                if [a["params"]["seq"] for a in answers] != list(range(seq, seq + 20)):
                    failures.append((seq, "pipeline"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert client._open <= (max_connections or 8)
    if max_connections:
        assert client._open <= max_connections
    client.close()
    with pytest.raises(ConnectionClosed):
        client.ping()


# ------------------------------------------------------------------ tokens


TOKENS = {"admin-token": "admin", "client-token": "client"}


def test_token_is_sent_first_on_every_new_connection():
    with FakeAuthServer(tokens=TOKENS) as server:
        client = Client("127.0.0.1", server.port, token="admin-token")
        assert client.ping() is True
        assert client.reload() == {"reloads": 1}
        server.drop_connections()
        assert wait_until(client.ping, "the server back", ignoring=(ServerUnavailable,)) is True
        assert server.ops_of(1) == ["auth", "ping", "reload"]
        assert server.ops_of(2) == ["auth", "ping"]
        client.close()


def test_token_roles_and_refusals():
    with FakeAuthServer(tokens=TOKENS) as server:
        with Client("127.0.0.1", server.port, token="client-token") as client:
            assert client.decide({"customer_id": "c1", "type": "t"})["action"] == "hello"
            with pytest.raises(NbaError) as info:
                client.reload()
            assert info.value.code == "forbidden"
            assert client.ping() is True  # the connection stays usable
        with pytest.raises(NbaError) as info:
            Client("127.0.0.1", server.port, token="wrong")
        assert info.value.code == "unauthenticated" and not isinstance(info.value, ConnectionClosed)
        with Client("127.0.0.1", server.port) as anonymous:
            with pytest.raises(NbaError) as info:
                anonymous.ping()
            assert info.value.code == "unauthenticated"


def test_async_token_is_sent_on_every_new_connection():
    async def scenario(server):
        client = await AsyncClient.connect("127.0.0.1", server.port, token="client-token")
        assert await client.ping() is True
        with pytest.raises(NbaError) as info:
            await client.put_profile("c1", {})
        assert info.value.code == "forbidden"
        server.drop_connections()
        await asyncio.sleep(0.05)
        assert await client.ping() is True
        await client.close()
        with pytest.raises(NbaError) as info:
            await AsyncClient.connect("127.0.0.1", server.port, token="wrong")
        assert info.value.code == "unauthenticated"

    with FakeAuthServer(tokens=TOKENS) as server:
        asyncio.run(scenario(server))
        assert server.ops_of(1) == ["auth", "ping", "put_profile"]
        assert server.ops_of(2) == ["auth", "ping"]


# ------------------------------------------------------------------ TLS


@pytest.mark.parametrize("client_certificates", [False, True])
def test_tls_client(certificates, client_certificates):
    server_context = certificates.server_context(client_certificates)
    with FakeAuthServer(tokens=TOKENS, ssl_context=server_context) as server:
        context = certificates.client_context(with_certificate=client_certificates)
        with Client("127.0.0.1", server.port, ssl=context, token="admin-token") as client:
            for _ in range(3):
                assert client.ping() is True
            # one connection: the TLS records a server sends after the handshake (session
            # tickets) do not make an idle connection look closed
            assert server.ops_of(1) == ["auth", "ping", "ping", "ping"]
            server.drop_connections()
            wait_until(lambda: client._free and client._free[0].is_stale(), "the idle connection going stale")
            client.put_profile("c1", {"a": 1})  # a new TLS connection, authenticated again
        assert server.ops_of(2) == ["auth", "put_profile"]
        with pytest.raises(ServerUnavailable) as info:
            Client("127.0.0.1", server.port, ssl=certificates.client_context(ca=certificates.other_ca))
        assert "CERTIFICATE_VERIFY_FAILED" in info.value.message


def test_tls_server_refuses_a_client_without_a_certificate(certificates):
    with FakeAuthServer(ssl_context=certificates.server_context(client_certificates=True)) as server:
        with pytest.raises(ConnectionClosed):  # TLS 1.3: the refusal may come after the handshake
            with Client("127.0.0.1", server.port, ssl=certificates.client_context()) as client:
                client.ping()


def test_async_tls_client(certificates):
    async def scenario(server):
        client = await AsyncClient.connect(
            "127.0.0.1", server.port, ssl=certificates.client_context(), token="admin-token"
        )
        assert await client.ping() is True
        server.drop_connections()
        await until_the_loop_sees_the_close(client)
        await client.put_profile("c1", {"a": 1})
        await client.close()
        with pytest.raises(ServerUnavailable) as info:
            await AsyncClient.connect(
                "127.0.0.1", server.port, ssl=certificates.client_context(ca=certificates.other_ca)
            )
        assert "CERTIFICATE_VERIFY_FAILED" in info.value.message

    with FakeAuthServer(tokens=TOKENS, ssl_context=certificates.server_context()) as server:
        asyncio.run(scenario(server))
        assert server.ops_of(2) == ["auth", "put_profile"]


# ------------------------------------------------------------------ the real server's --auth and TLS
# (enabled by themselves once `nba serve --help` lists the options)


@pytest.mark.skipif(not SERVER_HAS_AUTH, reason="nba serve has no --auth yet")
def test_token_against_nba_serve_with_auth(tmp_path):
    auth = tmp_path / "tokens"
    auth.write_text("admin admin-token\nclient client-token\n")
    port = free_port()
    with nba_serve(port, tmp_path / "log", "--auth", str(auth)):
        with Client("127.0.0.1", port, token="client-token") as client:
            assert client.ping() is True
            with pytest.raises(NbaError) as info:
                client.reload()
            assert info.value.code == "forbidden"
        with Client("127.0.0.1", port, token="admin-token") as admin:
            admin.put_profile("c1", {"tier": "gold"})
            assert admin.get_profile("c1") == {"tier": "gold"}
        with Client("127.0.0.1", port) as anonymous:
            with pytest.raises(NbaError) as info:
                anonymous.ping()
            assert info.value.code == "unauthenticated"
        with pytest.raises(NbaError) as info:
            Client("127.0.0.1", port, token="wrong")
        assert info.value.code == "unauthenticated"

        async def scenario():
            async with await AsyncClient.connect("127.0.0.1", port, token="client-token") as client:
                assert await client.ping() is True

        asyncio.run(scenario())


@pytest.mark.skipif(not SERVER_HAS_TLS, reason="nba serve has no --tls-cert yet")
def test_ssl_against_nba_serve_with_tls(tmp_path, certificates):
    port = free_port()
    options = ("--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key))
    client = Client("127.0.0.1", port, ssl=certificates.client_context(), connect_now=False, **FAST_BACKOFF)
    with nba_serve(port, tmp_path / "log", *options) as proc:
        assert client.ping() is True
        crash(proc)
    with nba_serve(port, tmp_path / "log2", *options):
        assert wait_until(client.ping, "the server back", ignoring=(ServerUnavailable,)) is True
        client.close()  # before the server stops: it need not wait for an idle connection

    async def scenario():
        async with await AsyncClient.connect("127.0.0.1", port, ssl=certificates.client_context()) as client:
            assert await client.ping() is True

    with nba_serve(port, tmp_path / "log3", *options):
        asyncio.run(scenario())
