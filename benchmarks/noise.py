"""The machine's noise floor: the latency tail of a busy loop that allocates nothing.

A loop of fixed work has no garbage collection and no I/O, so whatever tail its timed
calls show (preemption by other processes, timer ticks, frequency changes) is the
machine's, and sets a floor under every p99 and p99.9 measured in the same run.
"""

from __future__ import annotations

from benchmarks.report import figure, markdown_table
from benchmarks.timing import summarize, time_calls

# iterations of the loop -> calls timed (about 2, 10 and 150 µs a call)
LOOPS = ((40, 20_000), (200, 20_000), (4_000, 3_000))


def busy(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


def noise_floor() -> dict:
    rows = []
    for iterations, calls in LOOPS:
        measurement = summarize(time_calls(busy, [(iterations,)] * calls), 0.0)
        rows.append({"iterations": iterations, **measurement.as_dict()})
    table = markdown_table(
        ["busy loop", "p50 µs", "p99 µs", "p99.9 µs", "calls"],
        [
            [
                f"{r['iterations']:,} additions",
                figure(r["p50_us"]),
                figure(r["p99_us"]),
                figure(r["p999_us"]),
                f"{r['samples']:,}",
            ]
            for r in rows
        ],
    )
    markdown = (
        "A loop of fixed work that allocates nothing, timed like the contenders at the start of "
        "the run: its tail is the machine's (other processes, timer ticks), a floor under every "
        "p99 and p99.9 below.\n\n" + table
    )
    return {"title": "Noise floor", "markdown": markdown, "data": rows}
