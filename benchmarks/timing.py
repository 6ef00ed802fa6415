"""Timing one contender: per-call latencies, their percentiles, and decisions per second.

``measure`` runs a warm-up, then times every call of one pass over all the inputs with
``time.perf_counter_ns`` (that pass also collects the decisions, to be checked), then
repeats timed passes while the time budget lasts, then measures throughput with an
untimed loop. perf_counter_ns itself adds some tens of nanoseconds to each timed call,
which matters only for the fastest contenders and is the same for all of them.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

WARMUP_SECONDS = 0.3
WARMUP_CALLS = 1000
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


def summarize(latencies_ns: list[int], per_second: float) -> Measurement:
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
    min_samples: int = 20_000,
) -> tuple[Measurement, list[Any]]:
    """Time ``decide(*args)`` over ``inputs``; return the measurement and the first pass's results."""
    _warm_up(decide, inputs)
    gc.collect()
    clock = time.perf_counter_ns
    latencies: list[int] = []
    results: list[Any] = []
    started = clock()
    for args in inputs:
        t0 = clock()
        result = decide(*args)
        latencies.append(clock() - t0)
        results.append(result)
    deadline = started + int(budget_seconds * 1e9)
    while len(latencies) < min_samples and clock() < deadline:
        for args in inputs:
            t0 = clock()
            decide(*args)
            latencies.append(clock() - t0)
            if len(latencies) >= min_samples:
                break
    return summarize(latencies, _throughput(decide, inputs, budget_seconds / 2, sum(latencies) / len(latencies))), results


def _warm_up(decide: Callable[..., Any], inputs: Sequence[tuple]) -> None:
    deadline = time.perf_counter() + WARMUP_SECONDS
    for i, args in enumerate(inputs):
        decide(*args)
        if i >= WARMUP_CALLS or time.perf_counter() > deadline:
            break


def _throughput(decide: Callable[..., Any], inputs: Sequence[tuple], budget_seconds: float, mean_ns: float) -> float:
    """Decisions per second of an untimed loop over as many inputs as fit the budget."""
    count = max(100, min(MAX_THROUGHPUT_CALLS, int(budget_seconds * 1e9 / max(mean_ns, 1.0))))
    chosen = [inputs[i % len(inputs)] for i in range(count)]
    gc.collect()
    started = time.perf_counter_ns()
    for args in chosen:
        decide(*args)
    elapsed = time.perf_counter_ns() - started
    return count / (elapsed / 1e9) if elapsed else math.inf
