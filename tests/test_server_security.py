"""Who may talk to the server (INTERFACES.md "Security of the socket"): protected mode,
`--auth` tokens and roles, TLS with and without client certificates, reload's path, and
the limit on log lines a client can cause."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess

import pytest
from test_protocol import MockTransport, decide

from nba.engine.protocol import BAD_REQUEST, FORBIDDEN, UNAUTHENTICATED, encode_frame
from nba.engine.server import Connection, Server
from nba.engine.server.security import AuthFileError, is_loopback, load_tokens
from nba.engine.settings import ServerSettings

from polling import eventually
from server_fakes import FakeEngine, ThreadServer, closed_by_peer, connect, read_frames


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "fake.rules"
    path.write_text("action hello\n")
    return path


@pytest.fixture
def auth_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# role token\nclient c-secret-1\n\nadmin a-secret-2\n")
    return path


class PeerTransport(MockTransport):
    def __init__(self, peer):
        super().__init__()
        self.peer = peer

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default


def connection(rules, peer=("127.0.0.1", 40000), tokens=None, **settings):
    server = Server(FakeEngine(str(rules)), ServerSettings(port=0, **settings), rules_path=str(rules), tokens=tokens)
    conn = Connection(server)
    transport = PeerTransport(peer)
    conn.connection_made(transport)
    return conn, transport, server


def codes(responses):
    return [(r["id"], r["ok"] if r["ok"] else r["error"]["code"]) for r in responses]


# ------------------------------------------------------------------ protected mode


@pytest.mark.parametrize(
    "peer, local",
    [
        (("127.0.0.1", 1), True),
        (("127.0.0.2", 1), True),
        (("127.255.255.254", 1), True),
        (("::1", 1, 0, 0), True),
        (("::ffff:127.0.0.1", 1, 0, 0), True),
        (("10.0.0.1", 1), False),
        (("192.168.1.20", 1), False),
        (("8.8.8.8", 1), False),
        (("::ffff:10.0.0.1", 1, 0, 0), False),
        (("fe80::1%eth0", 1, 0, 2), False),
        (("2001:db8::1", 1, 0, 0), False),
        (("not an address", 1), False),
        ((None, 1), False),
        ((), False),
        (None, False),
    ],
)
def test_is_loopback(peer, local):
    assert is_loopback(peer) is local


def test_protected_mode_answers_a_stranger_once_then_closes(rules):
    conn, transport, server = connection(rules, peer=("192.0.2.7", 5555))
    assert transport.closed
    [response] = transport.responses()
    assert (response["id"], response["error"]["code"]) == (None, UNAUTHENTICATED)
    assert "protected mode" in response["error"]["message"]
    conn.data_received(encode_frame(decide(1)))  # nothing more is read
    assert transport.responses() == []
    assert server.stats.refused == {UNAUTHENTICATED: 1} and server.stats.connections == 0
    conn.connection_lost(None)
    assert server.stats.connections == 0


def test_with_auth_a_stranger_may_authenticate(rules, auth_file):
    conn, transport, _ = connection(rules, peer=("192.0.2.7", 5555), tokens=load_tokens(str(auth_file)))
    conn.data_received(encode_frame({"id": 1, "op": "auth", "token": "c-secret-1"}) + encode_frame(decide(2)))
    assert codes(transport.responses()) == [(1, True), (2, True)]


def test_a_second_loopback_address_is_a_local_client(rules):
    """The server binds 127.0.0.1; a client from 127.0.0.2 (loopback too) is answered."""
    with ThreadServer(FakeEngine(str(rules)), rules_path=str(rules)) as srv:
        sock = connect(srv.port, source="127.0.0.2")
        sock.sendall(encode_frame({"id": 1, "op": "ping"}))
        assert read_frames(sock, 1) == [{"id": 1, "ok": True, "pong": True}]
        sock.close()


# ------------------------------------------------------------------ tokens and roles


def test_before_auth_every_op_is_unauthenticated_and_the_connection_stays_open(rules, auth_file):
    conn, transport, server = connection(rules, tokens=load_tokens(str(auth_file)))
    conn.data_received(
        encode_frame(decide(1))  # the fast path must not skip authentication
        + encode_frame({"id": 2, "op": "ping"})
        + encode_frame({"id": 3, "op": "put_profile", "customer_id": "c1", "profile": {"a": 1}})
    )
    assert codes(transport.responses()) == [(1, UNAUTHENTICATED), (2, UNAUTHENTICATED), (3, UNAUTHENTICATED)]
    assert not transport.closed
    assert server.engine.stats.decisions == 0 and server.engine.profiles == {}


def test_a_wrong_token_is_refused_and_closes(rules, auth_file, caplog):
    conn, transport, server = connection(rules, tokens=load_tokens(str(auth_file)))
    with caplog.at_level(logging.DEBUG):
        conn.data_received(
            encode_frame({"id": 1, "op": "auth", "token": "c-secret-X"}) + encode_frame({"id": 2, "op": "ping"})
        )
    assert codes(transport.responses()) == [(1, UNAUTHENTICATED)]
    assert transport.closed
    assert "c-secret" not in caplog.text and "a-secret" not in caplog.text


def test_a_client_token_may_decide_but_not_administer(rules, auth_file, caplog):
    conn, transport, server = connection(rules, tokens=load_tokens(str(auth_file)))
    with caplog.at_level(logging.DEBUG):
        conn.data_received(
            encode_frame({"id": 1, "op": "auth", "token": "c-secret-1"})
            + encode_frame(decide(2))
            + encode_frame({"id": 3, "op": "put_profile", "customer_id": "c1", "profile": {"a": 1}})
            + encode_frame({"id": 4, "op": "reload"})
            + encode_frame({"id": 5, "op": "get_profile", "customer_id": "c1"})
            + encode_frame({"id": 6, "op": "stats"})
            + encode_frame({"id": 7, "op": "ping"})
        )
    responses = transport.responses()
    assert codes(responses) == [(1, True), (2, True), (3, FORBIDDEN), (4, FORBIDDEN), (5, True), (6, True), (7, True)]
    assert responses[0]["role"] == "client"
    assert server.engine.profiles == {}
    assert not transport.closed
    assert "c-secret" not in caplog.text


def test_an_admin_token_may_do_everything(rules, auth_file):
    conn, transport, server = connection(rules, tokens=load_tokens(str(auth_file)))
    conn.data_received(
        encode_frame({"id": 1, "op": "auth", "token": "a-secret-2"})
        + encode_frame({"id": 2, "op": "put_profile", "customer_id": "c1", "profile": {"a": 1}})
        + encode_frame(decide(3))
    )
    assert codes(transport.responses()) == [(1, True), (2, True), (3, True)]
    assert server.engine.profiles == {"c1": {"a": 1}}


def test_auth_without_an_auth_file_is_answered(rules):
    conn, transport, _ = connection(rules)
    conn.data_received(encode_frame({"id": 1, "op": "auth", "token": "anything"}))
    assert transport.responses() == [{"id": 1, "ok": True, "role": "admin"}]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no tokens"),
        ("# only a comment\n", "no tokens"),
        ("client\n", ":1: expected 'ROLE TOKEN'"),
        ("client tok extra\n", ":1: expected 'ROLE TOKEN'"),
        ("client ok\nroot hunter2\n", ":2: unknown role 'root'"),
    ],
)
def test_auth_file_errors_name_the_line_and_never_a_token(tmp_path, text, message):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(AuthFileError) as info:
        load_tokens(str(path))
    assert message in str(info.value)
    assert "hunter2" not in str(info.value) and "extra" not in str(info.value)


def test_tokens_are_found_whatever_their_order(auth_file):
    tokens = load_tokens(str(auth_file))
    assert (tokens.role_of("c-secret-1"), tokens.role_of("a-secret-2")) == ("client", "admin")
    assert tokens.role_of("c-secret-") is None and tokens.role_of("") is None and tokens.role_of("é") is None


def test_auth_over_a_socket(rules, auth_file):
    with ThreadServer(FakeEngine(str(rules)), rules_path=str(rules), auth_file=str(auth_file)) as srv:
        sock = connect(srv.port)
        sock.sendall(
            encode_frame({"id": 1, "op": "ping"})
            + encode_frame({"id": 2, "op": "auth", "token": "a-secret-2"})
            + encode_frame({"id": 3, "op": "ping"})
        )
        assert codes(read_frames(sock, 3)) == [(1, UNAUTHENTICATED), (2, True), (3, True)]
        sock.close()
        sock = connect(srv.port)
        sock.sendall(encode_frame({"id": 1, "op": "auth", "token": "nope"}))
        assert codes(read_frames(sock, 1)) == [(1, UNAUTHENTICATED)]
        assert closed_by_peer(sock)
        sock.close()


def test_nba_serve_with_an_auth_file_that_does_not_load_exits_2(rules, tmp_path):
    from server_fakes import ServerProcess, server_command

    bad = tmp_path / "tokens"
    bad.write_text("superuser s3cret\n")
    proc = ServerProcess(
        server_command(rules, factory="fake_engine_factory", auth_file=str(bad)), log_path=tmp_path / "log"
    )
    with pytest.raises(RuntimeError):
        proc.__enter__()
    assert proc.process.returncode == 2
    assert "unknown role 'superuser'" in proc.output() and "s3cret" not in proc.output()


# ------------------------------------------------------------------ reload


def test_reload_reloads_only_the_path_the_server_was_started_with(rules, tmp_path):
    other = tmp_path / "other.rules"
    other.write_text("action stolen\n")
    import asyncio

    async def scenario():
        conn, transport, server = connection(rules)
        conn.data_received(encode_frame({"id": 1, "op": "reload", "path": str(other)}))
        assert codes(transport.responses()) == [(1, BAD_REQUEST)]
        server.engine.rules_path = str(other)  # even an engine told another path elsewhere
        conn.data_received(encode_frame({"id": 2, "op": "reload"}))
        responses = await eventually(transport.responses, "the reload's answer")
        assert codes(responses) == [(2, True)]
        conn.data_received(encode_frame(decide(3)))
        assert transport.responses()[0]["decision"]["action"] == "hello"

    asyncio.run(scenario())


# ------------------------------------------------------------------ log lines


def test_bad_input_logs_at_most_the_limit_a_second(rules, caplog):
    conn, transport, server = connection(rules)
    server.limiter.clock = lambda: 1000.0  # all in one second, however long it takes
    with caplog.at_level(logging.INFO, logger="nba.server"):
        conn.data_received(b"".join(encode_frame({"id": i, "op": "decide", "limit": 1}) for i in range(2000)))
        conn.data_received(b"".join(encode_frame(decide(i, boom=True)) for i in range(2000)))
    assert len(transport.responses()) == 4000
    assert len(caplog.records) == server.limiter.per_second
    server.limiter.clock = lambda: 1001.0
    with caplog.at_level(logging.INFO, logger="nba.server"):
        conn.data_received(encode_frame(decide(1, boom=True)))
    assert "3950 more error lines were not logged" in caplog.text


# ------------------------------------------------------------------ TLS

OPENSSL = shutil.which("openssl")


def _openssl(*args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made here."""
    if OPENSSL is None:
        pytest.skip("no openssl command (scripts/test.sh installs it)")
    d = tmp_path_factory.mktemp("tls")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=nba test CA", cwd=d
    )
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=nba test {name}", cwd=d)
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    return d


def tls_client(port, certificates, with_cert=False):
    context = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    if with_cert:
        context.load_cert_chain(str(certificates / "client.pem"), str(certificates / "client.key"))
    raw = connect(port)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_tls(rules, certificates):
    settings = {"tls_cert": str(certificates / "server.pem"), "tls_key": str(certificates / "server.key")}
    with ThreadServer(FakeEngine(str(rules)), rules_path=str(rules), **settings) as srv:
        sock = tls_client(srv.port, certificates)
        sock.sendall(encode_frame({"id": 1, "op": "ping"}) + encode_frame(decide(2)))
        assert codes(read_frames(sock, 2)) == [(1, True), (2, True)]
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        sock.close()
        plain = connect(srv.port, timeout=5)  # a client speaking plain msgpack gets no answer
        plain.sendall(encode_frame({"id": 1, "op": "ping"}))
        assert closed_by_peer(plain)  # after a TLS alert at most
        plain.close()
        assert srv.stats()["requests"] == {"ping": 1, "decide": 1}


def test_tls_with_client_certificates(rules, certificates):
    settings = {
        "tls_cert": str(certificates / "server.pem"),
        "tls_key": str(certificates / "server.key"),
        "tls_client_ca": str(certificates / "ca.pem"),
    }
    with ThreadServer(FakeEngine(str(rules)), rules_path=str(rules), **settings) as srv:
        sock = tls_client(srv.port, certificates, with_cert=True)
        sock.sendall(encode_frame({"id": 1, "op": "ping"}))
        assert codes(read_frames(sock, 1)) == [(1, True)]
        sock.close()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            sock = tls_client(srv.port, certificates, with_cert=False)
            sock.sendall(encode_frame({"id": 1, "op": "ping"}))
            if not read_frames(sock, 1):  # TLS 1.3: the refusal may come with the first read
                raise ConnectionError("closed without an answer")
        assert srv.stats()["requests"] == {"ping": 1}


def test_tls_settings_go_together():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ServerSettings(tls_cert="a.pem")
    with pytest.raises(ValidationError):
        ServerSettings(tls_client_ca="ca.pem")
