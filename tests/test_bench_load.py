"""`nba bench load`: the open-loop generator accounts for every request, and a quick run
reports the figures it promises. No timing is asserted: the figures are whatever this
machine gives."""

from __future__ import annotations

import math
import socket
import threading

import msgpack
import pytest

from benchmarks import bench_load, cli, load_report, open_loop
from benchmarks.load_workload import Events
from redis_fixtures import REDIS_SERVER, needs_redis


def frame(message: dict) -> bytes:
    body = msgpack.packb(message)
    return len(body).to_bytes(4, "big") + body


class PickyServer:
    """Answers decide frames on loopback: ids ending in 0 never, ending in 1 with ok:false,
    ending in 2 degraded, the rest ok; and answers id 3 twice."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self.accept, daemon=True)
        self.accepting.start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self.serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def serve(self, conn: socket.socket) -> None:
        frames: list = []
        rest = b""
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    return
                rest = open_loop.split_frames(rest + data, 0.0, frames)
                out = [self.answer(msgpack.unpackb(body)) for _, body in frames]
                frames.clear()
                conn.sendall(b"".join(out))

    @staticmethod
    def answer(request: dict) -> bytes:
        request_id = request["id"]
        last = request_id % 10
        if last == 0:
            return b""
        if last == 1:
            return frame({"id": request_id, "ok": False, "error": {"code": "bad_event", "message": "no"}})
        decision = {"degraded": last == 2, "action": "x"}
        response = frame({"id": request_id, "ok": True, "decision": decision})
        return response * 2 if request_id == 3 else response

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def picky_server():
    server = PickyServer()
    yield server
    server.close()


@pytest.mark.parametrize("generator", open_loop.GENERATORS)
def test_every_request_is_answered_or_counted(picky_server, generator):
    rate, count = 2000.0, 300
    frames = Events(50, seed=3).frames(count, 0.0, rate)
    figures = open_loop.run_turn(picky_server.port, frames, rate, 3, drain_s=0.5, generator=generator)
    assert figures["requests"] == figures["sent"] == count
    assert figures["unanswered"] == count // 10  # ids ending in 0
    assert figures["answered"] == figures["ok"] + figures["errors"] + figures["degraded"]
    assert figures["errors"] == count // 10 and figures["error_codes"] == {"bad_event": count // 10}
    assert figures["degraded"] == count // 10
    assert figures["wrong"] == 1  # the second answer to id 3
    assert figures["p99_ms"] == math.inf  # 10% unanswered: beyond p90
    assert 0 <= figures["p50_ms"] < math.inf and figures["p50_ms"] <= figures["p90_ms"]
    assert figures["generator_cpu_us"] >= 0 and figures["lateness_max_ms"] >= 0


def test_a_server_that_closes_leaves_its_requests_unanswered():
    listener = socket.create_server(("127.0.0.1", 0))

    def close_each() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            conn.close()

    closer = threading.Thread(target=close_each, daemon=True)
    closer.start()
    try:
        frames = Events(5, seed=1).frames(20, 0.0, 1000.0)
        figures = open_loop.run_turn(listener.getsockname()[1], frames, 1000.0, 2, drain_s=0.3)
    finally:
        closer.join(5)
        listener.close()
    assert figures["answered"] == 0 and figures["unanswered"] == 20
    assert figures["connections_closed"] == 2


def sweep_row(rate: int, floor_p99: float, one_p99: float, passed: bool = True) -> dict:
    def entry(p99: float) -> dict:
        return {"median": {"p99_ms": p99}, "passed": passed, "turns": []}

    return {"rate": rate, "targets": {"floor": entry(floor_p99), "workers1": entry(one_p99)}}


def test_the_knee_is_the_last_rate_of_an_unbroken_run_from_the_lowest():
    sweep = [
        sweep_row(1000, 0.4, 0.7),
        sweep_row(2000, 0.5, 0.9),
        sweep_row(5000, 1.0, 1.5),  # over 1 ms, within 2x the floor's
        sweep_row(8000, 0.5, 1.5),  # over both
        sweep_row(10000, 2.0, 0.9),  # under both again: not counted, the run broke before
    ]
    assert load_report.knees(sweep) == {"workers1": {"p99_under_1ms": 2000, "p99_within_2x_floor": 5000}}
    assert load_report.knees([sweep_row(1000, 0.1, 0.7)]) == {
        "workers1": {"p99_under_1ms": 1000, "p99_within_2x_floor": None}
    }
    assert load_report.knees([sweep_row(1000, 0.4, 0.5, passed=False)])["workers1"]["p99_under_1ms"] is None


def test_medians_over_turns_sum_the_counts():
    turns = [
        {"p99_ms": 1.0, "answered": 10, "unanswered": 0, "errors": 1, "error_codes": {"x": 1}, "requests": 10},
        {"p99_ms": 3.0, "answered": 9, "unanswered": 1, "errors": 0, "error_codes": {}, "requests": 10},
        {"p99_ms": 2.0, "answered": 10, "unanswered": 0, "errors": 2, "error_codes": {"x": 2}, "requests": 10},
    ]
    median = bench_load.median_of(turns)
    assert median["p99_ms"] == 2.0
    assert (median["answered"], median["unanswered"], median["requests"], median["errors"]) == (29, 1, 30, 3)
    assert median["error_codes"] == {"x": 3}


@needs_redis
def test_a_quick_run_reports_every_figure(capsys):
    module = cli.load("load")
    argv = ["load", "--quick", "--rates", "400", "--targets", "floor,memory", "--sequential", "20"]
    args = cli.parser("load", module).parse_args([*argv, "--redis-server", REDIS_SERVER])
    result = module.run(args)
    assert set(result) == {"title", "markdown", "data"}
    data = result["data"]
    check = data["generator_check"]
    assert check and all(g["unanswered"] + g["answered"] == g["requests"] for g in check)

    [row] = data["sweep"]
    assert row["rate"] == 400 and set(row["targets"]) == {"floor", "memory"}
    for name, entry in row["targets"].items():
        assert len(entry["turns"]) == 1
        for figures in [*entry["turns"], entry["median"]]:
            assert figures["requests"] == figures["answered"] + figures["unanswered"] > 0
            assert figures["answered"] == figures["ok"] + figures["errors"] + figures["degraded"]
            for key in (
                "achieved_per_s",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "p999_ms",
                "server_cpu_us",
                "server_core_share",
            ):
                assert figures[key] >= 0, key
            assert figures["generator_cpu_us"] >= 0
            assert ("redis_cpu_us" in figures) == (name == "floor")

    assert set(data["sequential"]) == {"floor", "memory", "redis"}
    assert all(s["requests"] == 20 and s["p50_us"] > 0 for s in data["sequential"].values())
    assert data["knees"] == {}  # no nba Redis target measured
    assert [g["met"] for g in data["goals"]] == [None, None, None]  # workers1 was not measured
    for label in ("floor: bare HGETALL+ZRANGEBYSCORE server", "nba serve, in memory", "Goals"):
        assert label in result["markdown"]


def test_a_target_that_left_the_sweep_below_the_goal_rate_misses_the_goals():
    row = sweep_row(5000, 0.4, 80.0, passed=False)
    row["targets"]["workers1"]["median"].update(achieved_per_s=4000.0, server_cpu_us=50.0, redis_cpu_us=9.0)
    goals = load_report.goals({"sweep": [sweep_row(1000, 0.4, 0.5), row], "sequential": {}})
    assert [g["met"] for g in goals] == [False, False, None]
    assert "left the sweep at 5,000/s" in goals[0]["figures"]
    assert load_report.goals({"sweep": [sweep_row(1000, 0.4, 0.5)], "sequential": {}})[0]["met"] is None
