"""Fuzzing the server's request path inside the suite (fixed seeds, bounded examples).

Request maps with every key of every op given every wrong type, or missing; frames split
at every byte and merged; good and bad requests in one pipeline. Each readable request is
answered exactly once, in order, with its id and the `ok` an oracle expects; the
connection stays open unless a frame was unreadable; another connection of the same server
is unaffected. scripts/fuzz_socket.py runs the same over real sockets for longer.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import MockTransport, open_connection

from nba.engine.protocol import OPS, BadRequest, encode_frame, parse_request
from nba.engine.server import Connection

from server_fakes import raw_frame

FUZZED_OPS = sorted(OPS - {"reload"})  # reload answers from a task: tested in test_protocol.py
WRONG_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**64 - 1,
    -(2**63),
    1.5,
    float("inf"),
    "",
    "x",
    "decide",
    b"",
    b"x",
    [],
    [1, "a"],
    {},
    {"a": 1},
    {"customer_id": 5},
    {1: 2},
]
GOOD = {
    "decide": {
        "id": 1,
        "op": "decide",
        "event": {"customer_id": "c1", "type": "t"},
        "limit": 2,
        "explain": True,
        "dry_run": False,
    },
    "ping": {"id": 1, "op": "ping"},
    "stats": {"id": 1, "op": "stats"},
    "get_profile": {"id": 1, "op": "get_profile", "customer_id": "c1"},
    "put_profile": {"id": 1, "op": "put_profile", "customer_id": "c1", "profile": {"tier": "gold"}},
    "auth": {"id": 1, "op": "auth", "token": "t"},
}


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "fake.rules"
    path.write_text("action hello\n")
    return path


def expected(obj) -> tuple:
    """(id, ok) of the answer to one readable frame, for the fake engine of server_fakes."""
    try:
        req = parse_request(obj)
    except BadRequest as bad:
        return bad.id, False
    if req.op == "decide":
        event = req.event
        customer_id = event.get("customer_id")
        good = (
            type(customer_id) is str
            and customer_id != ""
            and type(event.get("type")) is str
            and not event.get("boom")
            and req.limit <= 100
        )
        return req.id, good
    return req.id, True


def same(a, b) -> bool:
    return msgpack.packb(a) == msgpack.packb(b)  # NaN ids compare equal by their bytes


def check_answers(frames: list, responses: list, unreadable: bool) -> None:
    if unreadable:
        assert responses[-1]["id"] is None and responses[-1]["error"]["code"] in ("bad_frame", "frame_too_large")
        responses = responses[:-1]
    assert len(responses) == len(frames)
    for obj, response in zip(frames, responses):
        request_id, ok = expected(obj)
        assert same(response["id"], request_id), (obj, response)
        assert response["ok"] is ok, (obj, response)
        if not ok:
            assert response["error"]["code"] != "internal", (obj, response)
            assert response["error"]["message"]


def second_connection_is_unaffected(server) -> None:
    conn = Connection(server)
    transport = MockTransport()
    conn.connection_made(transport)
    conn.data_received(encode_frame({"id": "other", "op": "decide", "event": {"customer_id": "c9", "type": "t"}}))
    [response] = transport.responses()
    assert response["id"] == "other" and response["ok"] is True and not transport.closed


# ------------------------------------------------------------------ every key, every wrong type


def every_mutation():
    for op in FUZZED_OPS:
        good = GOOD[op]
        keys = [*good, "event", "limit", "customer_id", "profile", "token", "path"]
        for key in dict.fromkeys(keys):
            if key in good and key != "op":
                yield {k: v for k, v in good.items() if k != key}  # missing
            for value in WRONG_VALUES:
                yield {**good, key: value}
        for key in good.get("event", {}):  # the event's own keys
            for wrong in WRONG_VALUES:
                yield {**good, "event": {**good["event"], key: wrong}}


def test_every_key_with_every_wrong_type_is_answered_clearly(rules):
    frames = list(every_mutation())
    conn, transport, server = open_connection(rules)
    conn.data_received(b"".join(encode_frame(f) for f in frames))
    check_answers(frames, transport.responses(), unreadable=False)
    assert not transport.closed
    assert "internal" not in server.stats.errors
    second_connection_is_unaffected(server)


def test_every_mutation_alone_on_the_fast_path_shape(rules):
    """Three-key maps are the fast path's shape: each mutation cut to three keys."""
    frames = [dict(list(f.items())[:3]) for f in every_mutation()]
    conn, transport, server = open_connection(rules)
    conn.data_received(b"".join(encode_frame(f) for f in frames))
    check_answers(frames, transport.responses(), unreadable=False)
    assert not transport.closed and "internal" not in server.stats.errors


# ------------------------------------------------------------------ generated pipelines

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": st.text(max_size=4) | values,
        "type": st.sampled_from(["t", "u"]) | values,
        "time": st.integers(0, 2**40) | values,
        "seq": values,
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "id": values,
        "op": st.sampled_from(FUZZED_OPS) | values,
        "event": events | values,
        "limit": st.integers(-2, 200) | values,
        "explain": st.booleans() | values,
        "dry_run": st.booleans() | values,
        "customer_id": st.sampled_from(["c1", "c2"]) | values,
        "profile": st.dictionaries(st.text(max_size=4), values, max_size=3) | values,
        "token": st.text(max_size=4) | values,
    },
)
common_decides = st.builds(
    lambda i, c: {"id": i, "op": "decide", "event": {"customer_id": c, "type": "t"}},
    st.integers(0, 10**6),
    st.sampled_from(["c1", "c2", "c3"]),
)
readable = st.one_of(requests, common_decides, values)
unreadable_frames = st.sampled_from(
    [b"\x00\x00\x00\x01\xc1", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", raw_frame(b"\x92\x01")]
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(readable, min_size=1, max_size=12), st.none() | unreadable_frames, st.data())
def test_fuzzed_pipelines_are_answered_once_each_in_order(rules, frames, bad, data):
    stream = b"".join(encode_frame(f) for f in frames) + (bad or b"")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    conn, transport, server = open_connection(rules, max_frame_bytes=1 << 16)
    start = 0
    for cut in [*cuts, len(stream)]:
        conn.data_received(stream[start:cut])
        start = cut
    check_answers(frames, transport.responses(), unreadable=bad is not None)
    assert transport.closed is (bad is not None)
    second_connection_is_unaffected(server)


def test_a_pipeline_split_at_every_byte_gives_the_answers_of_the_whole(rules):
    frames = [
        {"id": 1, "op": "decide", "event": {"customer_id": "c1", "type": "t"}},
        {"id": 2, "op": "decide", "limit": 1},
        [1, 2],
        {"id": 4, "op": "decide", "event": {"customer_id": "c1", "type": "t"}, "limit": 2, "dry_run": True},
        {"id": 5, "op": "nope"},
        {"id": 6, "op": "decide", "event": {"type": "t"}},
        {"id": 7, "op": "ping"},
        {"id": 8, "op": "decide", "event": {"customer_id": "c2", "type": "t"}},
    ]
    stream = b"".join(encode_frame(f) for f in frames)
    conn, transport, _ = open_connection(rules)
    conn.data_received(stream)
    whole = transport.responses()
    check_answers(frames, whole, unreadable=False)
    for cut in range(len(stream) + 1):
        conn, transport, _ = open_connection(rules)
        conn.data_received(stream[:cut])
        conn.data_received(stream[cut:])
        assert transport.responses() == whole, cut
        assert not transport.closed
    conn, transport, _ = open_connection(rules)  # and a byte at a time
    for i in range(len(stream)):
        conn.data_received(stream[i : i + 1])
    assert transport.responses() == whole
