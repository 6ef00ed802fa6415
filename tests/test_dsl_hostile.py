"""Hostile rule files (issue 21, items 5-7): every one is a load error at its place,
never another exception, a hang or an unbounded read; and numbers from events that are
huge at decision time cost one rule an error in the trace at most."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from nba.dsl import LoadError, load_ruleset
from nba.dsl.files import read_rule_file

from dsl_helpers import EvalFailed, engine_for, evaluate, event, load_errors, trace_error

ZEROS_400 = "1" + "0" * 400


def messages(text: str) -> list[str]:
    return [f"{d.pos.line}:{d.pos.column}: {d.message}" for d in load_errors(text, "t.rules")]


# ---- item 5: a schema field of an unknown type ------------------------------------------------


def test_a_field_of_an_unknown_type_used_by_a_rule_is_a_load_error_and_the_rest_is_checked():
    text = (
        "profile { x: integer }\n"
        "rule r\n  when profile.x > 1\n  then a\nend\n"
        "rule s\n  when profile.y > 1\n  then a\nend\n"
    )
    found = messages(text)
    assert found[0].startswith("1:14: unknown type `integer`")
    assert "string, number, bool, time, list" in found[0]
    assert any(m.startswith("7:8: unknown profile field `y`") for m in found), found
    assert len(found) == 2, found


@pytest.mark.parametrize(
    "use",
    [
        'rule r when event.type == "e" and event.x > 1 then a end',
        "rule r when count(e where x > 1 within 1d) > 0 then a end",
        "rule r when sum(e.x within 1d) > 0 then a end",
        "on e set p = 1 end",
    ],
)
def test_every_use_of_a_field_of_an_unknown_type(use):
    text = "event e { x: integr }\nprofile { p: whole }\n" + use + "\n"
    found = messages(text)
    assert any("unknown type `integr`" in m and "did you mean `integer`" not in m for m in found), found
    assert any(m.startswith("1:14: unknown type `integr`") for m in found), found
    assert any(m.startswith("2:14: unknown type `whole`") for m in found), found
    assert len(found) == 2, found


# ---- item 6: huge numbers ---------------------------------------------------------------------


START = len("  then a with v = ") + 1  # the column where the expression starts
BIG = "1" + "0" * 300  # 1e300: in range; its square is not


@pytest.mark.parametrize(
    "expr, column, words",
    [
        (f"1.5 * {ZEROS_400}", START + 6, ["the number `1000", "is too large", "±1.8e308"]),
        (f"{ZEROS_400} % 2.5", START, ["the number `1000", "is too large"]),
        (f"days({ZEROS_400})", START + 5, ["is too large"]),
        ("1" + "0" * 4300, START, ["is too large", "(4,301 characters)"]),
        ("1" + "0" * 100_000, START, ["is too large", "(100,001 characters)"]),
        (f"{ZEROS_400}.5", START, ["is too large"]),
        ("-" + "9" * 309, START + 1, ["is too large"]),
        # constant expressions whose result is out of range: at the first operator that leaves it
        (f"{BIG} * {BIG} * 1.5", START + len(BIG) + 1, ["the result of `*`", "is too large"]),
        (f"{BIG}.0 * {BIG}.0", START + len(BIG) + 3, ["the result of `*`", "is too large"]),
        (f"-({BIG} * {BIG})", START + 2 + len(BIG) + 1, ["the result of `*`", "is too large"]),
        (f"round({BIG} * {BIG} + 0.5)", START + 6 + len(BIG) + 1, ["the result of `*`", "is too large"]),
        (f"days({BIG}.0 * 1000000000)", START + 5 + len(BIG) + 3, ["the result of `*`", "is too large"]),
        (f"{BIG}.0 * 1000000000 / 10", START + len(BIG) + 3, ["the result of `*`", "is too large"]),
        (f"({BIG} * 1000000000) % 2.5", START + 1 + len(BIG) + 1, ["the result of `*`"]),
    ],
)
def test_a_number_out_of_range_is_a_load_error_at_its_place(expr, column, words):
    text = f"rule r\n  when true\n  then a with v = {expr}\nend\n"
    diagnostics = load_errors(text, "t.rules")
    assert len(diagnostics) == 1, [d.message for d in diagnostics]
    (error,) = diagnostics
    assert (error.pos.path, error.pos.line, error.pos.column) == ("t.rules", 3, column), error.message
    for word in words:
        assert word in error.message
    assert len(error.message) < 200


@pytest.mark.parametrize(
    "clause, words",
    [
        ("cap 1" + "0" * 5000 + " per 1d", ["the limit `1000", "is too large"]),
        ("cap 2 per 1" + "0" * 5000 + "d", ["the duration", "is too large"]),
        ("holdout 1" + "0" * 5000 + "%", ["outside 0-100%", "(5,002 characters)"]),
    ],
)
def test_limits_and_durations_out_of_range(clause, words):
    text = f"rule r\n  when true\n  then a\n  {clause}\nend\n"
    (error,) = load_errors(text, "t.rules")
    assert error.pos.line == 4
    for word in words:
        assert word in error.message


def test_a_window_out_of_range():
    (error,) = load_errors("rule r when count(buy within 1" + "0" * 400 + "d) > 0 then a end")
    assert (error.pos.line, error.pos.column) == (1, 30)
    assert "the duration" in error.message and "too large" in error.message


def test_numbers_at_the_edge_of_the_range_load_and_keep_their_value():
    biggest_whole = int(sys.float_info.max)
    assert evaluate(str(biggest_whole)) == biggest_whole
    assert evaluate("9007199254740993") == 9007199254740993  # whole numbers stay exact
    assert evaluate("1" + "0" * 300 + " * 1" + "0" * 8) == 10**308
    assert evaluate("0." + "0" * 400 + "1") == 0.0  # below the smallest float: zero
    assert evaluate("1" + "0" * 300 + " / 0") is None  # DSL: division by zero is null


def test_several_out_of_range_numbers_are_all_reported():
    text = f"rule r when event.x > {ZEROS_400} then a with v = days({ZEROS_400}) end\nrule s when true then b with w = 1.0 * {ZEROS_400}.0 end\n"
    found = messages(text)
    assert len(found) == 3, found
    assert all("too large" in m for m in found)


HUGE_FLOAT = 1e308
HUGE_INT = 10**400


@pytest.mark.parametrize(
    "expr",
    [
        "event.x * 10",
        "event.x + 0.5",
        "event.x % 2.5",
        "event.x / 3",
        "days(event.x)",
        "round(event.x, 2)",
        "floor(event.x * 1.5)",
        "hour(event.x)",
        "weekday(event.x)",
        "-event.x * 2",
        "abs(event.x) - 1.5",
        "max(event.x, 1.5) * 2",
        "time(event.x) + 0.5",
        "round(1.5, event.x)",
    ],
)
@pytest.mark.parametrize(
    "value",
    [HUGE_FLOAT, HUGE_INT, -HUGE_INT, float("inf"), float("nan")],
    ids=["1e308", "10^400", "-10^400", "inf", "nan"],
)
def test_huge_numbers_from_events_fail_one_rule_at_most(expr, value):
    """At decision time a number from an event may be anything a decoder gives: an
    arithmetic that overflows is that rule's error in the trace; the decision is made."""
    try:
        evaluate(expr, x=value)
    except EvalFailed as exc:
        assert str(exc)  # the trace names the error
    engine = engine_for(
        f"rule probe priority 10 when ({expr}) > 0 then probe with v = {expr} end\n"
        f"rule prio priority ({expr}) when true then prio end\n"
        "rule fallback priority -1000 when true then fallback end\n"
    )
    decision = engine.decide(event(x=value), explain=True, dry_run=True)
    assert decision.action in ("probe", "prio", "fallback")


def test_an_overflow_in_a_condition_is_named_in_the_trace():
    engine = engine_for(
        "rule probe when event.x * 1.5 > 0 then probe end\nrule other priority -1 when true then other end\n"
    )
    decision = engine.decide(event(x=HUGE_INT), explain=True, dry_run=True)
    assert decision.action == "other"
    assert (
        "too large" in (trace_error(decision, "probe") or "")
        or "overflow" in (trace_error(decision, "probe") or "").lower()
    )


# ---- item 7: only regular files, of a bounded size --------------------------------------------


def test_a_fifo_named_rules_is_an_error_and_does_not_block(tmp_path):
    (tmp_path / "good.rules").write_text("rule r when vipp then a end\n")
    os.mkfifo(tmp_path / "p.rules")
    result: list = []
    thread = threading.Thread(target=lambda: result.append(_load_errors(tmp_path)), daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "loading a directory with a FIFO blocked"
    found = result[0]
    assert any(
        path.endswith("p.rules") and pos == (1, 1) and "FIFO" in m and "only regular files" in m
        for path, pos, m in found
    ), found
    assert any("unknown segment `vipp`" in m for _p, _pos, m in found)  # the other file is still checked


def test_a_fifo_given_as_the_ruleset_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "p.rules")
    result = subprocess.run(
        [sys.executable, "-m", "nba.engine.cli", "check", str(tmp_path / "p.rules")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "p.rules:1:1: error:" in result.stdout + result.stderr
    assert "FIFO" in result.stdout + result.stderr


@pytest.mark.parametrize("device, kind", [("/dev/zero", "character device"), ("/dev/null", "character device")])
def test_a_link_to_a_device_is_an_error_without_reading_it(tmp_path, device, kind):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    (tmp_path / "z.rules").symlink_to(device)
    (tmp_path / "a.rules").write_text("rule r when true then a end\n")
    found = _load_errors(tmp_path)
    assert [(os.path.basename(p), pos) for p, pos, _m in found] == [("z.rules", (1, 1))]
    assert kind in found[0][2] and "only regular files" in found[0][2]


def test_links_to_regular_files_and_link_loops(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.rules").write_text("rule r when true then a end\n")
    (tmp_path / "real" / "b.txt").write_text("rule s when true then b end\n")
    (tmp_path / "b.rules").symlink_to(tmp_path / "real" / "b.txt")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")  # a directory loop: not walked into
    (tmp_path / "self.rules").symlink_to(tmp_path / "self.rules")  # a link to itself: an error
    found = _load_errors(tmp_path)
    assert [(os.path.basename(p), pos) for p, pos, _m in found] == [("self.rules", (1, 1))]
    (tmp_path / "self.rules").unlink()
    ruleset = load_ruleset(tmp_path)
    assert [os.path.basename(p) for p in ruleset.paths] == ["b.rules", "a.rules"]


def test_a_file_larger_than_the_limit(tmp_path, monkeypatch):
    body = "rule r when true then a end\n" * 100
    (tmp_path / "big.rules").write_text(body)
    monkeypatch.setenv("NBA_MAX_RULE_FILE_BYTES", str(len(body) - 1))
    found = _load_errors(tmp_path)
    assert len(found) == 1 and found[0][1] == (1, 1)
    assert "too large" in found[0][2] and f"{len(body) - 1:,} bytes" in found[0][2]
    monkeypatch.setenv("NBA_MAX_RULE_FILE_BYTES", str(len(body)))
    with pytest.raises(LoadError, match="duplicate rule id"):
        load_ruleset(tmp_path)


def test_the_read_stops_at_the_limit_when_the_size_is_not_known(tmp_path):
    """A file that says it is small but is not (procfs, a file that grows): at most limit+1 bytes are read."""
    path = tmp_path / "a.rules"
    path.write_bytes(b"x" * 1000)
    assert len(read_rule_file(str(path), limit=1000)) == 1000
    with pytest.raises(Exception, match="too large"):
        read_rule_file(str(path), limit=999)


def test_a_directory_named_rules_is_walked(tmp_path):
    (tmp_path / "d.rules").mkdir()
    (tmp_path / "d.rules" / "x.rules").write_text("rule r when true then a end\n")
    assert [os.path.basename(p) for p in load_ruleset(tmp_path).paths] == ["x.rules"]


def test_many_files_still_load(tmp_path):
    for i in range(500):
        (tmp_path / f"f{i:04}.rules").write_text(f"rule r{i} when true then a end\n")
    assert len(load_ruleset(tmp_path).rules) == 500


def _load_errors(root) -> list:
    try:
        load_ruleset(root)
    except LoadError as exc:
        return [(d.pos.path, (d.pos.line, d.pos.column), d.message) for d in exc.diagnostics]
    return []
