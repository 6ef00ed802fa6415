"""Timing one contender: per-call latencies, their percentiles, and decisions per second.

``measure`` runs one untimed pass over every input (collecting the decisions, to be
checked, and warming up), then times calls one by one with ``time.perf_counter_ns`` while
the time budget lasts, then measures throughput with an untimed loop.
``measure_interleaved`` does the same for several contenders, taking turns in rounds, so
that a burst of load from another process on this shared machine falls on all of them
rather than on one. perf_counter_ns itself adds some tens of nanoseconds to each timed
call, which matters only for the fastest contenders and is the same for all of them.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

MAX_THROUGHPUT_CALLS = 200_000


@dataclass
class Measurement:
    samples: int
    p50_us: float
    p99_us: float
    p999_us: float
    mean_us: float
    per_second: float  # decisions per second, untimed loop

    def as_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_ns: Sequence[int], per_second: float) -> Measurement:
    values = sorted(latencies_ns)
    return Measurement(
        samples=len(values),
        p50_us=percentile(values, 0.50) / 1000,
        p99_us=percentile(values, 0.99) / 1000,
        p999_us=percentile(values, 0.999) / 1000,
        mean_us=sum(values) / len(values) / 1000,
        per_second=per_second,
    )


def measure(
    decide: Callable[..., Any],
    inputs: Sequence[tuple],
    budget_seconds: float = 2.0,
    min_samples: int = 1000,
    max_samples: int = 50_000,
) -> tuple[Measurement, list[Any]]:
    """Time ``decide(*args)`` over ``inputs``; return the measurement and every input's result.

    The first, untimed pass over every input collects the results and warms up. Then calls
    are timed one by one, cycling over the inputs, as many as the budget allows between
    ``min_samples`` and ``max_samples``: a slow contender is timed on fewer inputs.
    """
    started = time.perf_counter_ns()
    results = [decide(*args) for args in inputs]
    first_pass_mean = (time.perf_counter_ns() - started) / max(1, len(inputs))
    count = int(min(max_samples, max(min_samples, budget_seconds * 1e9 / max(first_pass_mean, 1.0))))
    chosen = [inputs[i % len(inputs)] for i in range(count)]
    latencies = time_calls(decide, chosen)
    mean_ns = sum(latencies) / count
    return summarize(latencies, throughput(decide, inputs, budget_seconds / 2, mean_ns)), results


def freeze_loaded() -> None:
    """Collect the set-up's garbage and freeze what is left, right before the measured calls:
    what is loaded is not garbage, so the cycle collector is kept off it (as a server
    would), and a full collection over it cannot fall inside one measurement and not
    another (under callgrind it moved a difference by about a thousand instructions per
    decision)."""
    gc.collect()
    gc.freeze()


def time_calls(decide: Callable[..., Any], inputs: Sequence[tuple]) -> list[int]:
    """The latency of each call, in nanoseconds."""
    clock = time.perf_counter_ns
    latencies = [0] * len(inputs)
    gc.collect()
    for i, args in enumerate(inputs):
        t0 = clock()
        decide(*args)
        latencies[i] = clock() - t0
    return latencies


def throughput(decide: Callable[..., Any], inputs: Sequence[tuple], budget_seconds: float, mean_ns: float) -> float:
    """Decisions per second of an untimed loop over as many inputs as fit the budget."""
    count = max(100, min(MAX_THROUGHPUT_CALLS, int(budget_seconds * 1e9 / max(mean_ns, 1.0))))
    chosen = [inputs[i % len(inputs)] for i in range(count)]
    gc.collect()
    started = time.perf_counter_ns()
    for args in chosen:
        decide(*args)
    elapsed = time.perf_counter_ns() - started
    return count / (elapsed / 1e9) if elapsed else math.inf


def measure_interleaved(
    contenders: Sequence[tuple[str, Callable[..., Any], Sequence[tuple]]],
    budget_seconds: float = 2.0,
    rounds: int = 5,
    min_samples: int = 1000,
    max_samples: int = 50_000,
) -> dict[str, tuple[Measurement, list[Any]] | Exception]:
    """``measure`` for each (name, decide, inputs), the timed calls taken in turns.

    A contender that raises on its first, untimed pass is left out of the timing; its
    entry is the exception instead of a (measurement, results) pair.
    """
    results: dict[str, list[Any]] = {}
    counts: dict[str, int] = {}
    failed: dict[str, Exception] = {}
    for name, decide, inputs in contenders:
        started = time.perf_counter_ns()
        try:
            results[name] = [decide(*args) for args in inputs]
        except Exception as exc:  # noqa: BLE001 - the caller reports it
            failed[name] = exc
            continue
        mean = (time.perf_counter_ns() - started) / max(1, len(inputs))
        counts[name] = int(min(max_samples, max(min_samples, budget_seconds * 1e9 / max(mean, 1.0))))
    contenders = [c for c in contenders if c[0] not in failed]
    latencies: dict[str, list[int]] = {name: [] for name, _, _ in contenders}
    calls = {name: 0 for name, _, _ in contenders}
    elapsed = {name: 0 for name, _, _ in contenders}
    for round_ in range(rounds):
        for name, decide, inputs in contenders:
            start, stop = round_ * counts[name] // rounds, (round_ + 1) * counts[name] // rounds
            latencies[name] += time_calls(decide, [inputs[i % len(inputs)] for i in range(start, stop)])
        for name, decide, inputs in contenders:
            share = max(20, counts[name] // (2 * rounds))
            chosen = [inputs[i % len(inputs)] for i in range(round_ * share, (round_ + 1) * share)]
            started = time.perf_counter_ns()
            for args in chosen:
                decide(*args)
            elapsed[name] += time.perf_counter_ns() - started
            calls[name] += share
    measured: dict[str, Any] = {
        name: (
            summarize(latencies[name], calls[name] / (elapsed[name] / 1e9) if elapsed[name] else math.inf),
            results[name],
        )
        for name, _, _ in contenders
    }
    measured.update(failed)
    return measured
