"""The C packer of Redis commands (engine/store/redis/_resp.pyx) against hiredis, its twin."""

from __future__ import annotations

import math

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nba.engine.store.redis import protocol
from nba.twins import pick_extension

_resp = pick_extension("nba.engine.store.redis._resp")
needs_extension = pytest.mark.skipif(_resp is None, reason="the C packer is not built (or pure-Python twins)")

arguments = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
commands = st.lists(arguments, min_size=1, max_size=70).map(tuple)


def hiredis_or_error(command):
    try:
        return hiredis.pack_command(command)
    except Exception as exc:  # noqa: BLE001 - compared with the packer's
        return type(exc)


def packed_or_error(command):
    try:
        return _resp.pack_command(command)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


@needs_extension
@settings(max_examples=400, deadline=None)
@given(commands)
def test_same_bytes_as_hiredis(command):
    assert packed_or_error(command) == hiredis_or_error(command)


@needs_extension
@given(st.lists(commands, min_size=1, max_size=5))
def test_a_pipeline_is_the_commands_back_to_back(pipeline):
    assert _resp.pack_commands(pipeline) == b"".join(hiredis.pack_command(c) for c in pipeline)


class Text(str):
    pass


@needs_extension
@pytest.mark.parametrize(
    "command",
    [
        ("SET", "k", True),  # a bool: hiredis decides
        ("SET", Text("k"), "v"),  # a subclass
        ("SET", memoryview(b"abc"), "v"),
        ("SET", "k", None),
        ("SET", "k", -0.0, math.inf, -math.inf, math.nan, 1e300, 5e-324),
        ("SET", "ü€𝄞", "\x00"),
        ["SET", "k", "v"],  # a list: hiredis takes tuples only
        ("SET", "\ud800"),  # a lone surrogate has no UTF-8
        (),
        tuple(f"a{i}" for i in range(200)),  # more arguments than the stack holds
    ],
)
def test_the_unusual_cases_as_hiredis(command):
    assert packed_or_error(command) == hiredis_or_error(command)


def test_the_store_packs_with_the_extension_when_built():
    expected = _resp.pack_command if _resp is not None else hiredis.pack_command
    assert protocol.pack_command is expected
    assert protocol.pack_commands([("PING",)]) == b"*1\r\n$4\r\nPING\r\n"
