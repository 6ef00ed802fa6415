"""The server's limits, each with a clear error: a frame's completion deadline, open
connections, buffered bytes over all connections, the listen backlog; and nothing
recorded that the client was not told (issue 21 items 2 and 3)."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from test_protocol import decide, open_connection

from nba.engine.protocol import FRAME_TIMEOUT, HEADER, OVERLOADED, TOO_MANY_CONNECTIONS, encode_frame

from polling import wait_until
from server_fakes import FakeEngine, ThreadServer, closed_by_peer, connect, read_frames


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "fake.rules"
    path.write_text("action hello\n")
    return path


def codes(responses):
    return [(r["id"], r["ok"] if r["ok"] else r["error"]["code"]) for r in responses]


# ------------------------------------------------------------------ frame deadline


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    import nba.engine.server.connection

    fake = Clock()
    monkeypatch.setattr(nba.engine.server.connection, "monotonic", fake)
    return fake


def test_a_frame_trickled_in_is_cut_off_at_its_deadline(rules, clock):
    conn, transport, server = open_connection(rules, frame_timeout_s=30)
    frame = encode_frame(decide(1, pad="x" * 200))
    for i in range(40):  # a byte a second: each resets the idle clock, not the frame's
        clock.now += 1
        conn.data_received(frame[i : i + 1])
        conn.check_deadlines(clock.now, idle_timeout=300, frame_timeout=30)
        if transport.closed:
            break
    assert transport.closed and i == 31
    [response] = transport.responses()
    assert (response["id"], response["error"]["code"]) == (None, FRAME_TIMEOUT)
    assert server.stats.limits == {FRAME_TIMEOUT: 1}


def test_a_pipelining_client_always_mid_frame_is_not_cut_off(rules, clock):
    """Reads that each end mid-frame but complete frames: the deadline runs from the
    frame still unfinished, not from the first byte the connection ever sent."""
    conn, transport, _ = open_connection(rules, frame_timeout_s=30)
    stream = b"".join(encode_frame(decide(i)) for i in range(200))
    chunk = len(stream) // 100 + 7  # never a frame boundary at the end of a read
    for pos in range(0, len(stream), chunk):
        clock.now += 10  # 10 s a read
        conn.data_received(stream[pos : pos + chunk])
        conn.check_deadlines(clock.now + 10, idle_timeout=1e9, frame_timeout=30)
    assert not transport.closed
    assert [r["id"] for r in transport.responses()] == list(range(200))


def test_a_server_holding_up_reading_does_not_count_against_the_client(rules, clock):
    conn, transport, _ = open_connection(rules, frame_timeout_s=30)
    frame = encode_frame(decide(1))
    conn.pause_writing()  # the client does not read its answers: the server stops reading
    conn.data_received(frame + frame[:5])
    clock.now += 100
    conn.check_deadlines(clock.now, idle_timeout=1e9, frame_timeout=30)
    assert not transport.closed
    conn.resume_writing()  # the deadline starts again from here
    assert [r["id"] for r in transport.responses()] == [1]
    conn.check_deadlines(clock.now + 29, idle_timeout=1e9, frame_timeout=30)
    assert not transport.closed
    conn.check_deadlines(clock.now + 31, idle_timeout=1e9, frame_timeout=30)
    assert transport.closed


def test_slowloris_over_a_socket(rules):
    with ThreadServer(FakeEngine(str(rules)), rules_path=str(rules), frame_timeout_s=0.5) as srv:
        sock = connect(srv.port)
        sock.sendall(HEADER.pack(1 << 20))  # a frame of 1 MiB declared, then a byte at a time

        def cut_off():
            try:
                sock.sendall(b"x")
            except OSError:
                return True
            time.sleep(0.1)
            return srv.stats()["limits_hit"].get(FRAME_TIMEOUT)

        wait_until(cut_off, "the slow connection cut off")
        assert srv.stats()["connections"] == 0


# ------------------------------------------------------------------ connections


def test_past_max_connections_a_new_one_gets_one_error_then_a_close(rules):
    with ThreadServer(FakeEngine(str(rules)), rules_path=str(rules), max_connections=2) as srv:
        a, b = connect(srv.port), connect(srv.port)
        for sock in (a, b):
            sock.sendall(encode_frame({"id": 1, "op": "ping"}))
            assert codes(read_frames(sock, 1)) == [(1, True)]
        c = connect(srv.port)
        [response] = read_frames(c, 1)
        assert (response["id"], response["error"]["code"]) == (None, TOO_MANY_CONNECTIONS)
        assert closed_by_peer(c)
        c.close()
        a.close()
        wait_until(lambda: srv.stats()["connections"] == 1, "one connection left")
        d = connect(srv.port)
        d.sendall(encode_frame({"id": 2, "op": "ping"}))
        assert codes(read_frames(d, 1)) == [(2, True)]
        stats = srv.stats()
        assert stats["connections_refused"] == {TOO_MANY_CONNECTIONS: 1}
        b.close()
        d.close()


def test_unfinished_frames_over_the_byte_limit_close_the_connection_that_went_over(rules):
    conn_a, transport_a, server = open_connection(rules, max_buffered_bytes=1000, max_frame_bytes=10_000)
    from test_protocol import MockTransport

    from nba.engine.server import Connection

    from server_fakes import raw_frame  # noqa: F401  (same server, a second connection)

    conn_b = Connection(server)
    transport_b = MockTransport()
    conn_b.connection_made(transport_b)
    frame = encode_frame(decide(1, pad="x" * 2000))
    conn_a.data_received(frame[:600])
    assert server.buffered_bytes == 600 and not transport_a.closed
    conn_b.data_received(frame[:600])
    [response] = transport_b.responses()
    assert (response["id"], response["error"]["code"]) == (None, OVERLOADED)
    assert transport_b.closed
    conn_b.connection_lost(None)
    assert server.buffered_bytes == 600
    conn_a.data_received(frame[600:])  # the first one finishes its frame and is answered
    assert codes(transport_a.responses()) == [(1, True)]
    assert server.buffered_bytes == 0
    assert server.stats.limits == {OVERLOADED: 1}


# ------------------------------------------------------------------ backlog


def listen_backlog(port):
    """The listen queue's size of a socket listening on ``port`` (`ss` shows it as Send-Q)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[2])


@pytest.mark.skipif(shutil.which("ss") is None, reason="no ss (iproute2)")
@pytest.mark.parametrize("backlog", [77, 1024])
def test_the_listen_backlog_is_the_one_set(rules, backlog):
    with ThreadServer(FakeEngine(str(rules)), rules_path=str(rules), backlog=backlog) as srv:
        assert listen_backlog(srv.port) == backlog


# ------------------------------------------------------------------ nothing recorded unanswered

HUGE_PARAM_RULES = """\
event e { }
rule huge
  when event.type == "e"
  then act via web with n = 3000000000000000000000000000000
  cap 1 per 1d
end
"""


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_parameter_beyond_64_bits_is_answered_so_a_recorded_contact_was_told(tmp_path, dry_run):
    """Issue 21 item 2: the answer was encoded after the commit, so the client got
    `internal` while the contact was recorded and the next decision was capped."""
    from nba.engine import Engine

    path = tmp_path / "huge.rules"
    path.write_text(HUGE_PARAM_RULES)
    engine = Engine.from_path(str(path))
    conn, transport, _ = open_connection(path, engine=engine)
    event = {"customer_id": "c1", "type": "e", "time": 1_700_000_000}
    first = {"id": 1, "op": "decide", "event": event}
    if dry_run:
        first["dry_run"] = True
    conn.data_received(
        encode_frame(first) + encode_frame({"id": 2, "op": "decide", "event": {**event, "time": 1_700_000_060}})
    )
    one, two = transport.responses()
    assert one["ok"] is True and one["decision"]["action"] == "act"
    assert one["decision"]["params"]["n"] == 3e30
    # the first was answered: the cap holds the second back unless the first was a dry run
    assert two["ok"] is True
    assert two["decision"]["action"] == ("act" if dry_run else None)


# ------------------------------------------------------------------ metrics and flags


def test_metrics_count_degraded_decisions_refusals_and_limits(rules):
    import urllib.request

    engine = FakeEngine(str(rules))
    with ThreadServer(engine, rules_path=str(rules), metrics_port=0, max_connections=1) as srv:
        engine.stats.degraded = 3  # what the engine counts (engine/stats.py EngineStats.degraded)
        a = connect(srv.port)
        a.sendall(encode_frame({"id": 1, "op": "ping"}))
        read_frames(a, 1)
        b = connect(srv.port)
        assert read_frames(b, 1)[0]["error"]["code"] == TOO_MANY_CONNECTIONS
        b.close()
        a.sendall(HEADER.pack(1 << 30))  # over the frame limit
        assert read_frames(a, 1)[0]["error"]["code"] == "frame_too_large"
        a.close()
        host, port = srv.server.metrics_address
        text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    assert "nba_degraded_decisions_total 3.0" in text
    assert f'nba_connections_refused_total{{code="{TOO_MANY_CONNECTIONS}"}} 1.0' in text
    assert 'nba_limits_hit_total{code="frame_too_large"} 1.0' in text
    assert "nba_buffered_bytes 0.0" in text


def test_every_limit_and_security_setting_has_a_flag(tmp_path):
    import argparse

    from nba.engine.server.cli import add_arguments, settings_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "r.rules",
            "--frame-timeout",
            "7",
            "--max-connections",
            "9",
            "--max-buffered-bytes",
            "1000",
            "--backlog",
            "55",
            "--auth",
            "tokens",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ]
    )
    settings = settings_from(args)
    assert (settings.frame_timeout_s, settings.max_connections, settings.max_buffered_bytes, settings.backlog) == (
        7,
        9,
        1000,
        55,
    )
    assert (settings.auth_file, settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (
        "tokens",
        "c.pem",
        "k.pem",
        "ca.pem",
    )
    assert settings_from(parser.parse_args(["r.rules"])).host == "127.0.0.1"


def test_max_connections_stays_under_the_open_file_limit(monkeypatch):
    import resource

    from nba.engine.server.lifecycle import FDS_KEPT, connection_limit

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    assert connection_limit(4096) == 1024 - FDS_KEPT
    assert connection_limit(100) == 100
