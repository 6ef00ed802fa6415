"""The figures of `nba bench load` as text: one turn's line, the knees, the issue's goals
met or not, and the markdown section of RESULTS.md."""

from __future__ import annotations

import os

from benchmarks.report import figure, markdown_table

KNEE_P99_MS = 1.0
FLOOR_FACTOR = 2.0
GOAL_RATE = 10000
GOAL_SERVER_CPU_US = 40.0
GOAL_REDIS_CPU_US = 8.0
GOAL_SEQUENTIAL_RATIO = 1.5
NBA_REDIS_TARGETS = ("workers1", "workers2", "near1", "near2")
GOAL_TEXTS = (
    f"at {GOAL_RATE:,}/s offered one server process answers everything with p99 within {FLOOR_FACTOR:g}x the floor's",
    f"at that load server CPU <= {GOAL_SERVER_CPU_US:g} µs and redis-server CPU <= {GOAL_REDIS_CPU_US:g} µs per decision",
)
LABELS = {
    "floor": "floor: bare HGETALL+ZRANGEBYSCORE server",
    "workers1": "nba serve --redis --workers 1",
    "workers2": "nba serve --redis --workers 2",
    "near1": "nba serve --redis URL?near_cache=1000000 --workers 1 (keys of its own)",
    "near2": "nba serve --redis URL?near_cache=1000000 --workers 2 (keys of its own)",
    "memory": "nba serve, in memory",
    "echo": "msgpack echo server",
    "redis": "straight to Redis: HGETALL+ZRANGEBYSCORE",
}


def turn_line(figures: dict) -> str:
    line = (
        f"achieved {figures['achieved_per_s']:,.0f}/s  p50 {figure(figures['p50_ms'])} ms  "
        f"p99 {figure(figures['p99_ms'])} ms  unanswered {figures['unanswered']}  errors {figures['errors']}  "
        f"degraded {figures['degraded']}  server {figure(figures.get('server_cpu_us'))} µs"
    )
    if figures.get("redis_cpu_us") is not None:
        line += f"  redis {figure(figures['redis_cpu_us'])} µs"
    return line + f"  generator {figure(figures['generator_cpu_us'])} µs"


def median_at(sweep: list[dict], rate: int, target: str) -> dict | None:
    for row in sweep:
        if row["rate"] == rate and target in row["targets"]:
            return row["targets"][target]["median"]
    return None


def knees(sweep: list[dict]) -> dict:
    """For each nba Redis target: the highest rate up to which (every measured rate from
    the lowest on) p99 <= 1 ms, and up to which p99 <= 2x the floor's at the same rate;
    both also need 95% of the offered rate achieved. None: not even the lowest rate."""
    out = {}
    for target in NBA_REDIS_TARGETS:
        under_ms = within_floor = None
        ms_holds = floor_holds = True
        for row in sweep:
            entry = row["targets"].get(target)
            if entry is None:
                break
            median, passed = entry["median"], entry["passed"]
            ms_holds = ms_holds and passed and median["p99_ms"] <= KNEE_P99_MS
            if ms_holds:
                under_ms = row["rate"]
            floor = row["targets"].get("floor")
            floor_holds = (
                floor_holds
                and passed
                and floor is not None
                and median["p99_ms"] <= FLOOR_FACTOR * floor["median"]["p99_ms"]
            )
            if floor_holds:
                within_floor = row["rate"]
        if any(target in row["targets"] for row in sweep):
            out[target] = {"p99_under_1ms": under_ms, "p99_within_2x_floor": within_floor}
    return out


def left_sweep(sweep: list[dict], target: str) -> dict | None:
    """The row at which ``target`` failed and left the sweep, if it did."""
    for row in sweep:
        entry = row["targets"].get(target)
        if entry is not None and not entry["passed"]:
            return {"rate": row["rate"], **entry["median"]}
    return None


def goals(data: dict) -> list[dict]:
    """The issue's goals, each {"goal", "met" (True, False or None: not measured), "figures"}."""
    sweep, out = data["sweep"], []
    name = goal_target(data)
    one, floor = median_at(sweep, GOAL_RATE, name), median_at(sweep, GOAL_RATE, "floor")
    failed = left_sweep(sweep, name)
    if one is None and failed is not None and failed["rate"] < GOAL_RATE:
        why = (
            f"{name} left the sweep at {failed['rate']:,}/s: p99 {figure(failed['p99_ms'])} ms, achieved "
            f"{failed['achieved_per_s']:,.0f}/s, server {figure(failed['server_cpu_us'])} µs and redis-server "
            f"{figure(failed['redis_cpu_us'])} µs per decision"
        )
        out.append({"goal": GOAL_TEXTS[0], "met": False, "figures": why})
        out.append({"goal": GOAL_TEXTS[1], "met": False, "figures": why})
    elif one is None or floor is None:
        missing = f"{name} or the floor not measured at {GOAL_RATE:,}/s"
        out.append({"goal": GOAL_TEXTS[0], "met": None, "figures": missing})
        out.append({"goal": GOAL_TEXTS[1], "met": None, "figures": missing})
    else:
        everything = one["unanswered"] == 0 and one["errors"] == 0 and one["degraded"] == 0
        ratio = one["p99_ms"] / floor["p99_ms"] if floor["p99_ms"] else float("inf")
        out.append(
            {
                "goal": GOAL_TEXTS[0],
                "met": everything and ratio <= FLOOR_FACTOR,
                "figures": f"{name}: p99 {figure(one['p99_ms'])} ms vs the floor's {figure(floor['p99_ms'])} ms "
                f"({figure(ratio, 2)}x); achieved {one['achieved_per_s']:,.0f}/s; over {one['requests']:,} requests "
                f"{one['unanswered']} unanswered, {one['errors']} errors, {one['degraded']} degraded",
            }
        )
        out.append(
            {
                "goal": GOAL_TEXTS[1],
                "met": one["server_cpu_us"] <= GOAL_SERVER_CPU_US and one["redis_cpu_us"] <= GOAL_REDIS_CPU_US,
                "figures": f"{name}: server {figure(one['server_cpu_us'])} µs, redis-server {figure(one['redis_cpu_us'])} µs "
                f"(the floor: {figure(floor['server_cpu_us'])} µs and {figure(floor['redis_cpu_us'])} µs)",
            }
        )
    goal = f"sequential p50 within {GOAL_SEQUENTIAL_RATIO:g}x a bare round trip (through the floor server)"
    seq = data.get("sequential", {})
    if name in seq and "floor" in seq:
        ratio = seq[name]["p50_us"] / seq["floor"]["p50_us"]
        direct = f"; {figure(seq[name]['p50_us'] / seq['redis']['p50_us'], 2)}x" if "redis" in seq else ""
        out.append(
            {
                "goal": goal,
                "met": ratio <= GOAL_SEQUENTIAL_RATIO,
                "figures": f"{name}: p50 {figure(seq[name]['p50_us'])} µs vs {figure(seq['floor']['p50_us'])} µs "
                f"({figure(ratio, 2)}x{direct} the round trip straight to Redis, "
                f"{figure(seq['redis']['p50_us']) if 'redis' in seq else '-'} µs)",
            }
        )
    else:
        out.append({"goal": goal, "met": None, "figures": f"{name} or the floor not measured"})
    return out


def goal_target(data: dict) -> str:
    """The one-process nba target the goals are judged on: with the near cache when measured."""
    measured = {target for row in data["sweep"] for target in row["targets"]} | set(data.get("sequential", {}))
    return "near1" if "near1" in measured else "workers1"


def load_average(data: dict, when: str) -> str:
    values = data.get("load_average", {}).get(when)
    return " / ".join(f"{value:.1f}" for value in values) if values else "-"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def ms(value: float | None) -> str:
    return figure(value) if value is not None else "-"


def markdown(data: dict) -> str:
    config = data["config"]
    parts = [
        f"An open-loop generator (benchmarks/open_loop.py, `{config['generator']}`, its own process) offers decide "
        f"requests at fixed rates over {config['connections']} pipelined connections, each request sent when it is "
        "due whatever the server does; latency runs from the time a request was due to its response (matched by id), "
        "so queueing counts, and a request unanswered "
        f"{figure(config['drain_s'])} s after the last was due counts as an infinite latency. Targets in turns, "
        f"{config['turns']} turn(s) of {figure(config['seconds'])} s per rate, medians shown: the floor "
        "(benchmarks/load_floor.py: per request one pipelined HGETALL + ZRANGEBYSCORE on one Redis connection, "
        "no rules, no writes), `nba serve --redis` with 1 and 2 workers, without and with the near cache (`?near_cache=1000000`), `nba serve` in memory. Workload "
        f"(benchmarks/load_workload.py): 3 rules with count/sum aggregates over windows of 10 to 30 s and a cap, "
        f"{config['customers']:,} customers with profiles, 70% page views, 20% abandoned carts, 10% purchases. "
        "CPU per decision from /proc: the server's process tree, redis-server, the generator. A target leaves the "
        f"sweep once its p99 passes {figure(config['p99_limit_ms'])} ms or it achieves under 95% of the offered rate. "
        f"The machine's load average: {load_average(data, 'start')} at the start, {load_average(data, 'end')} at the end "
        f"(on {os.cpu_count()} CPUs).",
        "",
        "The generator against the msgpack echo server (what it can offer, and how punctually):",
        "",
        markdown_table(
            [
                "offered/s",
                "achieved/s",
                "p50 ms",
                "p99 ms",
                "generator CPU µs/request",
                "of a core",
                "sent late p50 / p99 / max ms",
            ],
            [
                [
                    f"{g['offered_per_s']:,.0f}",
                    f"{g['achieved_per_s']:,.0f}",
                    ms(g["p50_ms"]),
                    ms(g["p99_ms"]),
                    figure(g["generator_cpu_us"]),
                    f"{g['generator_core_share']:.0%}",
                    f"{ms(g['lateness_p50_ms'])} / {ms(g['lateness_p99_ms'])} / {ms(g['lateness_max_ms'])}",
                ]
                for g in data["generator_check"]
            ],
        ),
        "",
        sweep_table(data["sweep"]),
        "",
        "`p99 of each turn` are the turns' own p99s; the other figures are medians over the turns but for the counts "
        "(errors: ok:false; degraded: decided without state; unanswered), summed over them. CPU columns: µs per "
        "answered decision; a server that achieves less than offered while its share of a core stays well under "
        "100% per process was short of CPU (the machine's other work), not at its own limit.",
        "",
    ]
    parts += knee_lines(data.get("knees", {}))
    if data.get("history_sizes"):
        parts.append(
            "- Events kept in Redis per customer at the end of the run: "
            + ", ".join(f"{kind} {figure(size)}" for kind, size in data["history_sizes"].items())
            + " (the history a read returns is what of it lies within the window)."
        )
    parts += split_lines(data["sweep"])
    seq = data.get("sequential", {})
    if seq:
        parts += [
            "",
            f"Sequential: one request at a time, {next(iter(seq.values()))['requests']:,} per target, the targets and "
            "a bare round trip straight to Redis (the floor's two commands, hiredis) taken in turns:",
            "",
            markdown_table(
                ["target", "p50 µs", "p99 µs", "not ok or degraded"],
                [
                    [LABELS.get(name, name), figure(s["p50_us"]), figure(s["p99_us"]), s["not_ok"]]
                    for name, s in seq.items()
                ],
            ),
        ]
    parts += ["", "Goals (reported, not asserted):", ""]
    parts += [f"- {g['goal']}: **{verdict(g['met'])}** ({g['figures']})" for g in data.get("goals", [])]
    return "\n".join(parts)


def sweep_table(sweep: list[dict]) -> str:
    rows = []
    for row in sweep:
        for name, entry in row["targets"].items():
            m = entry["median"]
            rows.append(
                [
                    f"{row['rate']:,}",
                    LABELS.get(name, name),
                    f"{m['achieved_per_s']:,.0f}",
                    ms(m["p50_ms"]),
                    ms(m["p90_ms"]),
                    ms(m["p99_ms"]),
                    ms(m["p999_ms"]),
                    " / ".join(ms(t["p99_ms"]) for t in entry["turns"]),
                    m["errors"],
                    m["degraded"],
                    m["unanswered"],
                    figure(m["server_cpu_us"]),
                    f"{m['server_core_share']:.0%}",
                    figure(m.get("redis_cpu_us")),
                    figure(m["generator_cpu_us"]),
                    ms(m["lateness_p99_ms"]),
                ]
            )
    return markdown_table(
        [
            "offered/s",
            "target",
            "achieved/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "p99 of each turn",
            "errors",
            "degraded",
            "unanswered",
            "server CPU µs",
            "server's share of a core",
            "redis CPU µs",
            "generator CPU µs",
            "sent late p99 ms",
        ],
        rows,
    )


def knee_lines(found: dict) -> list[str]:
    lines = []
    for target, knee in found.items():
        under = f"{knee['p99_under_1ms']:,}/s" if knee["p99_under_1ms"] else "none of the rates"
        within = f"{knee['p99_within_2x_floor']:,}/s" if knee["p99_within_2x_floor"] else "none of the rates"
        lines.append(
            f"- Knee of {LABELS[target]}: p99 <= {KNEE_P99_MS:g} ms up to {under}; p99 within {FLOOR_FACTOR:g}x "
            f"the floor's up to {within}."
        )
    return lines


def split_lines(sweep: list[dict]) -> list[str]:
    """How `--workers 2`'s CPU fell on its processes (the parent and the workers share
    the port; the kernel spreads the connections over the workers by a hash)."""
    splits = []
    for row in sweep:
        entry = row["targets"].get("workers2")
        if entry:
            shares = sorted(entry["turns"][0]["server_cpu_us_by_process"].values(), reverse=True)
            splits.append(f"{row['rate']:,}/s: " + " + ".join(figure(share) for share in shares) + " µs")
    if not splits:
        return []
    return ["- CPU per decision of `--workers 2` by process, first turn, largest first: " + "; ".join(splits) + "."]
