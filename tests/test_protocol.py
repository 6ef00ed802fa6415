"""The socket protocol without sockets: the frame decoder, request parsing, and a server
connection driven through a mock transport."""

from __future__ import annotations

import asyncio
from typing import Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nba.engine.protocol import (
    BAD_FRAME,
    BAD_REQUEST,
    FRAME_TOO_LARGE,
    HEADER,
    NEED_MORE,
    OPS,
    UNKNOWN_OP,
    BadRequest,
    FrameDecoder,
    FrameError,
    check_request,
    encode_frame,
    parse_request,
    plain_decide_event,
)
from nba.engine.server import Connection, Server
from nba.engine.settings import ServerSettings

from polling import eventually
from server_fakes import FakeEngine, raw_frame


def drain(decoder):
    out = []
    while (obj := decoder.next_frame()) is not NEED_MORE:
        out.append(obj)
    return out


# ------------------------------------------------------------------ frame decoder


def test_one_frame():
    decoder = FrameDecoder(1024)
    decoder.feed(encode_frame({"id": 1, "op": "ping"}))
    assert drain(decoder) == [{"id": 1, "op": "ping"}]
    assert decoder.at_frame_boundary


def test_frames_fed_one_byte_at_a_time():
    frames = [{"id": i, "op": "ping", "pad": "x" * i} for i in range(20)]
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder(1024)
    out = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        out.extend(drain(decoder))
    assert out == frames


def test_partial_header_and_partial_body_need_more():
    frame = encode_frame({"id": 1})
    decoder = FrameDecoder(1024)
    decoder.feed(frame[:2])
    assert decoder.next_frame() is NEED_MORE
    decoder.feed(frame[2:6])
    assert decoder.next_frame() is NEED_MORE
    assert decoder.close_error().code == BAD_FRAME
    decoder.feed(frame[6:])
    assert decoder.next_frame() == {"id": 1}
    assert decoder.close_error() is None


def test_too_large_is_refused_from_the_header_alone():
    decoder = FrameDecoder(100)
    decoder.feed(HEADER.pack(101))
    with pytest.raises(FrameError) as info:
        decoder.next_frame()
    assert info.value.code == FRAME_TOO_LARGE


def test_frame_at_the_limit_is_read():
    body = msgpack.packb({"p": "x" * 90})
    decoder = FrameDecoder(len(body))
    decoder.feed(raw_frame(body))
    assert decoder.next_frame() == {"p": "x" * 90}


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty frame
        b"\xc1",  # the byte msgpack never uses
        b"\x92\x01",  # an array cut short
        msgpack.packb(1) + msgpack.packb(2),  # two values in one frame
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
    ],
)
def test_bytes_that_are_not_one_msgpack_value(body):
    decoder = FrameDecoder(1024)
    decoder.feed(raw_frame(body))
    with pytest.raises(FrameError) as info:
        decoder.next_frame()
    assert info.value.code == BAD_FRAME


def test_deep_nesting_is_a_frame_error_not_a_crash():
    decoder = FrameDecoder(1 << 20)
    decoder.feed(raw_frame(b"\x91" * 100_000 + b"\x00"))
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_non_string_map_keys_are_read():
    decoder = FrameDecoder(1024)
    decoder.feed(encode_frame({"id": 1, "op": "decide", "event": {"customer_id": "c", "type": "t", "m": {1: 2}}}))
    assert decoder.next_frame()["event"]["m"] == {1: 2}


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=8), st.data())
def test_any_chunking_gives_the_same_frames(frames, data):
    stream = b"".join(encode_frame(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(1 << 20)
    out = []
    start = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[start:cut])
        start = cut
        out.extend(drain(decoder))
    assert out == frames
    assert decoder.at_frame_boundary


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_frames_or_a_frame_error(stream):
    decoder = FrameDecoder(200)
    decoder.feed(stream)
    try:
        drain(decoder)
    except FrameError as error:
        assert error.code in (BAD_FRAME, FRAME_TOO_LARGE)


# ------------------------------------------------------------------ requests


def test_decide_request_with_defaults():
    req = parse_request({"id": "a", "op": "decide", "event": {"customer_id": "c1", "type": "t"}})
    assert (req.id, req.op, req.customer_id, req.limit, req.explain, req.dry_run) == (
        "a",
        "decide",
        "c1",
        1,
        False,
        False,
    )


def test_decide_request_with_options():
    req = parse_request(
        {"id": [1, 2], "op": "decide", "event": {"type": "t"}, "limit": 3, "explain": True, "dry_run": True}
    )
    assert (req.id, req.limit, req.explain, req.dry_run, req.customer_id) == ([1, 2], 3, True, True, None)


@pytest.mark.parametrize(
    "obj, code, request_id",
    [
        ([1, 2], BAD_REQUEST, None),
        ("decide", BAD_REQUEST, None),
        (None, BAD_REQUEST, None),
        ({"id": 7}, BAD_REQUEST, 7),
        ({"id": 7, "op": 3}, BAD_REQUEST, 7),
        ({"id": 7, "op": "fly"}, UNKNOWN_OP, 7),
        ({"id": 7, "op": "decide"}, BAD_REQUEST, 7),
        ({"id": 7, "op": "decide", "event": [1]}, BAD_REQUEST, 7),
        ({"id": 7, "op": "decide", "event": {}, "limit": 0}, BAD_REQUEST, 7),
        ({"id": 7, "op": "decide", "event": {}, "limit": "2"}, BAD_REQUEST, 7),
        ({"id": 7, "op": "decide", "event": {}, "limit": True}, BAD_REQUEST, 7),
        ({"id": 7, "op": "decide", "event": {}, "limit": 1.5}, BAD_REQUEST, 7),
        ({"id": 7, "op": "decide", "event": {}, "explain": "yes"}, BAD_REQUEST, 7),
        ({"id": 7, "op": "decide", "event": {}, "dry_run": 1}, BAD_REQUEST, 7),
        ({"id": 7, "op": "get_profile"}, BAD_REQUEST, 7),
        ({"id": 7, "op": "get_profile", "customer_id": ""}, BAD_REQUEST, 7),
        ({"id": 7, "op": "put_profile", "customer_id": "c"}, BAD_REQUEST, 7),
        ({"id": 7, "op": "put_profile", "customer_id": "c", "profile": [1]}, BAD_REQUEST, 7),
    ],
)
def test_bad_requests(obj, code, request_id):
    with pytest.raises(BadRequest) as info:
        parse_request(obj)
    assert (info.value.code, info.value.id) == (code, request_id)
    assert info.value.message


def test_reload_takes_no_path():
    with pytest.raises(BadRequest) as info:
        parse_request({"id": 1, "op": "reload", "path": "/etc"})
    assert info.value.code == BAD_REQUEST and "started with" in info.value.message
    assert parse_request({"id": 1, "op": "reload"}).op == "reload"


def test_auth_needs_a_token():
    assert parse_request({"id": 1, "op": "auth", "token": "t"}).token == "t"
    for bad in ({"id": 1, "op": "auth"}, {"id": 1, "op": "auth", "token": ""}, {"id": 1, "op": "auth", "token": 5}):
        with pytest.raises(BadRequest):
            parse_request(bad)


any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
request_keys = ("id", "op", "event", "limit", "explain", "dry_run", "customer_id", "profile", "token", "path")
request_maps = st.dictionaries(
    st.sampled_from(request_keys) | st.text(max_size=4),
    st.sampled_from(sorted(OPS))
    | any_value
    | st.fixed_dictionaries({"customer_id": st.text(max_size=3), "type": st.text(max_size=3)}),
    max_size=5,
)


three_key_maps = st.fixed_dictionaries(
    {
        "id": any_value,
        "op": st.just("decide") | any_value,
        "event": st.fixed_dictionaries({"customer_id": st.text(max_size=3), "type": st.text(max_size=3)}) | any_value,
    }
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(request_maps | three_key_maps)
def test_the_fast_path_is_a_specialisation_of_parse_request(obj):
    """Whatever the fast path takes, the full check takes as the same decide with default options."""
    event = plain_decide_event(obj)
    if event is None:
        return
    req = check_request(obj)
    assert (req.op, req.event, req.id, req.limit, req.explain, req.dry_run) == (
        "decide",
        event,
        obj["id"],
        1,
        False,
        False,
    )


def test_the_fast_path_takes_the_common_decide():
    event = {"customer_id": "c", "type": "t"}
    assert plain_decide_event({"id": 1, "op": "decide", "event": event}) is event
    assert plain_decide_event({"id": 1, "op": "decide", "limit": 1}) is None  # issue 21 item 1
    assert plain_decide_event({"op": "decide", "event": event, "limit": 2}) is None


def test_other_ops():
    assert parse_request({"op": "ping"}).op == "ping"
    assert parse_request({"op": "stats", "id": None}).id is None
    req = parse_request({"op": "put_profile", "customer_id": "c", "profile": {"a": 1}})
    assert (req.customer_id, req.profile) == ("c", {"a": 1})


# ------------------------------------------------------------------ a connection over a mock transport


class MockTransport:
    def __init__(self):
        self.data = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data):
        assert not self.closed, "write after close"
        self.data += data

    def close(self):
        self.closed = True

    abort = close

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def responses(self):
        decoder = FrameDecoder(1 << 30)
        decoder.feed(bytes(self.data))
        self.data.clear()
        return drain(decoder)


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "fake.rules"
    path.write_text("action hello\n")
    return path


def open_connection(rules, blocking=True, engine=None, **settings):
    engine = engine or FakeEngine(str(rules))
    server = Server(engine, ServerSettings(port=0, **settings), rules_path=str(rules), blocking=blocking)
    conn = Connection(server)
    transport = MockTransport()
    conn.connection_made(transport)
    return conn, transport, server


def decide(i, customer="c1", **extra):
    return {"id": i, "op": "decide", "event": {"customer_id": customer, "type": "t", "seq": i, **extra}}


def test_pipelined_requests_get_one_write_with_their_ids(rules):
    conn, transport, _ = open_connection(rules)
    conn.data_received(b"".join(encode_frame(decide(i)) for i in range(100)))
    responses = transport.responses()
    assert [r["id"] for r in responses] == list(range(100))
    assert all(r["ok"] and r["decision"]["action"] == "hello" for r in responses)
    assert [r["decision"]["params"]["seq"] for r in responses] == list(range(100))


def test_bad_requests_are_answered_and_the_connection_stays_open(rules):
    conn, transport, server = open_connection(rules)
    frames = [
        encode_frame([1, 2]),
        encode_frame({"id": 2, "op": "nope"}),
        encode_frame({"id": 3, "op": "decide", "event": {"type": "t"}}),
        encode_frame(decide(4, boom=True)),
        encode_frame(decide(5, unencodable=True)),
        encode_frame(decide(6) | {"limit": 500}),
        encode_frame({"id": 7, "op": "ping"}),
    ]
    conn.data_received(b"".join(frames))
    responses = transport.responses()
    codes = [(r["id"], r["ok"] or r["error"]["code"]) for r in responses]
    assert codes == [
        (None, "bad_request"),
        (2, "unknown_op"),
        (3, "bad_event"),
        (4, "internal"),
        (5, "internal"),
        (6, "bad_request"),
        (7, True),
    ]
    assert not transport.closed
    assert server.stats.errors == {"bad_request": 2, "unknown_op": 1, "bad_event": 1, "internal": 2}


def test_a_decide_without_an_event_among_good_ones_is_answered_and_the_connection_stays_open(rules):
    """Issue 21 item 1: three keys and no event raised KeyError in the fast path; the
    connection was reset and the answers already made from that read were lost."""
    conn, transport, server = open_connection(rules)
    conn.data_received(
        encode_frame(decide(1)) + encode_frame({"id": 2, "op": "decide", "limit": 1}) + encode_frame(decide(3))
    )
    responses = transport.responses()
    assert [(r["id"], r["ok"] or r["error"]["code"]) for r in responses] == [(1, True), (2, BAD_REQUEST), (3, True)]
    assert "'event' must be a map" in responses[1]["error"]["message"]
    assert not transport.closed
    conn.data_received(encode_frame(decide(4)))
    assert [r["id"] for r in transport.responses()] == [4]


def test_a_decide_without_an_id_keeps_its_options(rules):
    conn, transport, _ = open_connection(rules)
    conn.data_received(encode_frame({"op": "decide", "event": {"customer_id": "c1", "type": "t"}, "limit": 500}))
    [response] = transport.responses()
    assert (response["id"], response["error"]["code"]) == (None, "bad_request")


def test_sets_and_integers_beyond_64_bits_are_sent_as_lists_and_floats(rules):
    conn, transport, _ = open_connection(rules)
    conn.data_received(encode_frame(decide(1, weird=True, big=True)))
    [response] = transport.responses()
    assert response["ok"] is True
    assert sorted(response["decision"]["params"]["weird"]) == [1, 2]
    assert response["decision"]["params"]["big"] == 3e30


def test_a_decision_that_cannot_be_encoded_is_made_once(rules):
    conn, transport, server = open_connection(rules)
    conn.data_received(encode_frame(decide(1, unencodable=True)) + encode_frame(decide(2)))
    responses = transport.responses()
    assert [(r["id"], r["ok"] or r["error"]["code"]) for r in responses] == [(1, "internal"), (2, True)]
    assert server.engine.stats.decisions == 2
    assert server.stats.requests == {"decide": 2} and server.stats.errors == {"internal": 1}


@pytest.mark.parametrize(
    "bad, code",
    [(HEADER.pack(1 << 21), FRAME_TOO_LARGE), (raw_frame(b"\xc1"), BAD_FRAME), (raw_frame(b""), BAD_FRAME)],
)
def test_an_unreadable_frame_is_answered_with_id_null_and_closes(rules, bad, code):
    conn, transport, _ = open_connection(rules)
    conn.data_received(encode_frame(decide(1)) + bad + encode_frame(decide(2)))
    responses = transport.responses()
    assert [r["id"] for r in responses] == [1, None]
    assert responses[1]["error"]["code"] == code
    assert transport.closed
    conn.data_received(encode_frame(decide(3)))  # anything after is ignored
    assert transport.responses() == []


def test_eof_mid_frame_is_a_frame_error(rules):
    conn, transport, server = open_connection(rules)
    frame = encode_frame(decide(1))
    conn.data_received(frame[:7])
    assert conn.eof_received() is False
    [response] = transport.responses()
    assert (response["id"], response["error"]["code"]) == (None, BAD_FRAME)
    assert server.stats.errors == {BAD_FRAME: 1}


def test_eof_at_a_frame_boundary_closes_quietly(rules):
    conn, transport, _ = open_connection(rules)
    conn.data_received(encode_frame(decide(1)))
    assert conn.eof_received() is False
    assert [r["id"] for r in transport.responses()] == [1]


def test_profiles_and_stats(rules):
    conn, transport, _ = open_connection(rules)
    conn.data_received(
        encode_frame({"id": 1, "op": "put_profile", "customer_id": "c1", "profile": {"tier": "gold"}})
        + encode_frame({"id": 2, "op": "get_profile", "customer_id": "c1"})
        + encode_frame(decide(3))
        + encode_frame({"id": 4, "op": "stats"})
    )
    r = transport.responses()
    assert r[0] == {"id": 1, "ok": True}
    assert r[1] == {"id": 2, "ok": True, "profile": {"tier": "gold"}}
    stats = r[3]["stats"]
    assert stats["decisions"] == 1 and stats["first_choices"] == {"r1": 1}
    assert stats["requests"] == {"put_profile": 1, "get_profile": 1, "decide": 1}
    assert stats["latency_us"]["count"] == 3 and stats["latency_us"]["p50"] >= 0
    assert stats["server"]["store"] == "memory"


def test_write_backpressure_stops_reading(rules):
    conn, transport, _ = open_connection(rules)
    conn.pause_writing()
    assert not transport.reading
    conn.data_received(encode_frame(decide(1)) + encode_frame(decide(2)))
    assert transport.responses() == []
    conn.resume_writing()
    assert transport.reading
    assert [r["id"] for r in transport.responses()] == [1, 2]


def run(coro):
    return asyncio.run(coro)


async def responses_until(transport, count: int, also: Callable[[], None] = lambda: None) -> list[dict]:
    """The transport's responses, collected until there are ``count`` (``also`` is checked
    at every look)."""
    seen: list[dict] = []

    def enough() -> bool:
        also()
        seen.extend(transport.responses())
        return len(seen) >= count

    await eventually(enough, lambda: f"{count} responses (had {len(seen)})")
    return seen


def test_in_flight_limit_stops_reading_until_answers_go_out(rules):
    async def scenario():
        engine = FakeEngine(str(rules), delay=0.01)
        conn, transport, _ = open_connection(rules, blocking=False, engine=engine, max_in_flight=2)
        conn.data_received(b"".join(encode_frame(decide(i, customer=f"c{i}")) for i in range(6)))
        assert conn.in_flight == 2
        assert not transport.reading
        seen = await responses_until(transport, 6)
        assert sorted(r["id"] for r in seen) == list(range(6))
        assert transport.reading and conn.in_flight == 0

    run(scenario())


def test_one_customers_requests_run_in_order(rules):
    async def scenario():
        engine = FakeEngine(str(rules), delay=0.001)
        conn, transport, _ = open_connection(rules, blocking=False, engine=engine)
        frames = [decide(i, customer="c1") for i in range(5)] + [decide(5, customer="c2")]
        conn.data_received(b"".join(encode_frame(f) for f in frames))
        assert len(conn.server._tasks) == 2  # one chain for c1, one task for c2
        seen = await responses_until(transport, 6)
        c1 = [r["id"] for r in seen if r["id"] != 5]
        assert c1 == [0, 1, 2, 3, 4]

    run(scenario())


def test_shutdown_answers_what_is_in_flight_then_closes(rules):
    async def scenario():
        engine = FakeEngine(str(rules), delay=0.02)
        conn, transport, server = open_connection(rules, blocking=False, engine=engine)
        conn.data_received(b"".join(encode_frame(decide(i, customer=f"c{i}")) for i in range(3)))
        server.stopping = True
        done = conn.shutdown()
        assert not transport.reading and not transport.closed
        await eventually(lambda: transport.closed, "the connection closed")
        conn.connection_lost(None)
        await done
        assert sorted(r["id"] for r in transport.responses()) == [0, 1, 2]

    run(scenario())


def test_reload_op_failure_keeps_the_old_ruleset(rules):
    async def scenario():
        conn, transport, server = open_connection(rules)
        rules.write_text("broken\n")
        conn.data_received(encode_frame({"id": 1, "op": "reload"}))
        responses = await eventually(transport.responses, "the reload's answer")
        assert responses[0]["error"]["code"] == "load_failed"
        assert "expected 'action NAME'" in responses[0]["error"]["message"]
        rules.write_text("action bye\n")
        conn.data_received(encode_frame({"id": 2, "op": "reload"}) + encode_frame(decide(3)))
        assert transport.responses()[0]["decision"]["action"] == "hello"
        responses = await eventually(transport.responses, "the second reload's answer")
        assert responses == [{"id": 2, "ok": True, "reloaded": {"reloads": 1}}]
        conn.data_received(encode_frame(decide(4)))
        assert transport.responses()[0]["decision"]["action"] == "bye"

    run(scenario())


def test_pipelined_reloads_share_their_loads(rules):
    """Issue 21: 300 pipelined reloads stalled other clients; now they share one load."""

    async def scenario():
        conn, transport, server = open_connection(rules)
        conn.data_received(
            b"".join(encode_frame({"id": i, "op": "reload"}) for i in range(300)) + encode_frame(decide(300))
        )
        seen = transport.responses()
        assert [r["id"] for r in seen] == [300]  # a decision is not held up behind them
        seen += await responses_until(transport, 300)
        assert sorted(r["id"] for r in seen) == list(range(301)) and all(r["ok"] for r in seen)
        assert server.stats.reloads == 1

    run(scenario())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_no_input_escapes_as_an_exception(tmp_path_factory, stream):
    path = tmp_path_factory.mktemp("r") / "f.rules"
    path.write_text("action hello\n")
    conn, transport, _ = open_connection(path, max_frame_bytes=256)
    conn.data_received(stream)
    conn.eof_received()
    for response in transport.responses():
        assert set(response) >= {"id", "ok"}


def test_close_error_tells_whole_unread_frames_from_a_cut_one():
    decoder = FrameDecoder(1024)
    frames = encode_frame({"id": 1}) + encode_frame({"id": 2})
    decoder.feed(frames)
    assert decoder.close_error() is None  # two whole frames, not yet read
    decoder.feed(frames[:5])
    assert decoder.close_error().code == BAD_FRAME


def test_eof_with_whole_frames_still_queued_answers_them_all(rules):
    async def scenario():
        engine = FakeEngine(str(rules), delay=0.002)
        conn, transport, _ = open_connection(rules, blocking=False, engine=engine, max_in_flight=2)
        conn.data_received(b"".join(encode_frame(decide(i, customer=f"c{i}")) for i in range(6)))
        assert conn.eof_received() is True  # half-closed: answer, then close
        await eventually(lambda: transport.closed, "the connection closed")
        seen = transport.responses()
        assert sorted(r["id"] for r in seen) == list(range(6))

    run(scenario())


class CountingEngine(FakeEngine):
    """Counts its decisions in flight, and the most there were at once."""

    def __init__(self, rules_path, delay):
        super().__init__(rules_path, delay)
        self.in_flight = self.most_in_flight = 0

    async def decide_async(self, event, limit=1, explain=False, dry_run=False):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super().decide_async(event, limit, explain, dry_run)
        finally:
            self.in_flight -= 1


def test_at_most_max_concurrency_requests_run_at_once(rules):
    async def scenario():
        engine = CountingEngine(str(rules), delay=0.002)
        conn, transport, server = open_connection(rules, blocking=False, engine=engine, max_concurrency=2)
        conn.data_received(b"".join(encode_frame(decide(i, customer=f"c{i}")) for i in range(20)))
        assert server._active == 2 and len(server._backlog) == 18

        def at_most_two_running() -> None:
            assert engine.in_flight <= 2

        seen = await responses_until(transport, 20, also=at_most_two_running)
        assert sorted(r["id"] for r in seen) == list(range(20))
        assert engine.most_in_flight == 2  # the engine never had more at once
        assert server._active == 0 and not server._backlog

    run(scenario())


class CallbackEngine(FakeEngine):
    """A stand-in deciding by callback (``decide_map_then``, as Engine does on Redis): on
    the next loop turn, or wrongly: raising, or calling back twice."""

    def decide_map_then(self, event, then, limit=1, explain=False, dry_run=False):
        if event.get("raise"):
            raise RuntimeError("a bug in the engine")
        try:
            decision = self.decide(event, limit, explain, dry_run).to_dict()
        except Exception as exc:  # noqa: BLE001
            asyncio.get_running_loop().call_soon(then, None, exc)
            return
        asyncio.get_running_loop().call_soon(then, decision, None)
        if event.get("twice"):
            asyncio.get_running_loop().call_soon(then, decision, None)


def test_decisions_by_callback_are_each_answered_once_whatever_the_engine_does(rules):
    async def scenario():
        conn, transport, server = open_connection(rules, blocking=False, engine=CallbackEngine(str(rules)))
        frames = [decide(0), decide(1, customer="c2", twice=True), decide(2, customer="c3", boom=True)]
        frames += [decide(3, customer="c4", **{"raise": True}), decide(4, customer="c5")]
        conn.data_received(b"".join(encode_frame(frame) for frame in frames))
        seen = await responses_until(transport, 5)
        await asyncio.sleep(0.01)  # a second answer to request 1 would have come by now
        seen += transport.responses()
        return sorted((r["id"], r["ok"] or r["error"]["code"]) for r in seen), server._active, conn.in_flight

    answers, active, in_flight = run(scenario())
    assert answers == [(0, True), (1, True), (2, "internal"), (3, "internal"), (4, True)]
    assert active == 0 and in_flight == 0


def test_latency_histogram_counts_every_sample_once():
    import bisect
    import random

    from nba.engine.server import LATENCY_BUCKETS, LATENCY_SAMPLES, ServerStats

    rng = random.Random(7)
    stats = ServerStats(histogram=True)
    seen = []
    while len(seen) < 3 * LATENCY_SAMPLES + 123:
        batch = [rng.expovariate(1 / 0.0004) for _ in range(rng.choice((1, 7, 5000, LATENCY_SAMPLES + 3)))]
        if len(batch) == 1:
            stats.observe("decide", batch[0])
        else:
            stats.observe_many("decide", batch)
        seen += batch
    buckets, total = stats.histogram()
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    for seconds in seen:
        expected[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
    cumulative = [sum(expected[: i + 1]) for i in range(len(expected))]
    assert [count for _, count in buckets] == cumulative
    assert total == pytest.approx(sum(seen))
    assert stats.requests == {"decide": len(seen)}
    latency = stats.latency_us()
    assert latency["count"] == len(seen)
    assert latency["max"] == round(max(seen[-LATENCY_SAMPLES:]) * 1e6, 1)
