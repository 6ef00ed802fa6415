"""The server's own counters: requests, errors, connections, limits and latencies."""

from __future__ import annotations

import bisect
import time

LATENCY_SAMPLES = 1 << 16  # the latency percentiles cover the last 65,536 requests
LATENCY_BUCKETS = (  # seconds; Prometheus histogram bounds
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class ServerStats:
    """Counters kept per request with plain Python (no locks, no labels); read at `stats`.

    Latencies go into a ring of the latest ``LATENCY_SAMPLES`` (the percentiles of `stats`);
    with ``histogram`` (the Prometheus endpoint is on) every latency is also counted into
    the histogram's buckets, a ring's worth at a time, before the ring overwrites it.
    """

    def __init__(self, histogram: bool = True) -> None:
        self.started = time.time()
        self.requests: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.connections = 0
        self.connections_total = 0
        self.reloads = 0
        self.reloads_failed = 0
        self.refused: dict[str, int] = {}  # connections refused at once, by error code
        self.limits: dict[str, int] = {}  # connections closed by a limit, by error code
        self.keep_histogram = histogram
        self._samples = [0.0] * LATENCY_SAMPLES  # a ring of the latest latencies, in seconds
        self._count = 0  # latencies observed
        self._folded = 0  # of which counted into the histogram buckets (or let go, without one)
        self._sum = 0.0
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)

    def observe(self, op: str, seconds: float) -> None:
        requests = self.requests
        requests[op] = requests.get(op, 0) + 1
        count = self._count
        if count - self._folded == LATENCY_SAMPLES:
            self._fold()  # before the ring overwrites samples not yet counted
        self._samples[count & (LATENCY_SAMPLES - 1)] = seconds
        self._count = count + 1

    def observe_many(self, op: str, latencies: list[float]) -> None:
        """``observe(op, s)`` for every ``s`` of ``latencies``, with slices instead of a loop."""
        n = len(latencies)
        if not n:
            return
        requests = self.requests
        requests[op] = requests.get(op, 0) + n
        if n > LATENCY_SAMPLES:
            for start in range(0, n, LATENCY_SAMPLES):
                self.observe_many_samples(latencies[start : start + LATENCY_SAMPLES])
        else:
            self.observe_many_samples(latencies)

    def observe_many_samples(self, latencies: list[float]) -> None:
        n = len(latencies)  # at most LATENCY_SAMPLES
        if self._count - self._folded + n > LATENCY_SAMPLES:
            self._fold()
        samples = self._samples
        pos = self._count & (LATENCY_SAMPLES - 1)
        head = LATENCY_SAMPLES - pos
        if n <= head:
            samples[pos : pos + n] = latencies
        else:
            samples[pos:] = latencies[:head]
            samples[: n - head] = latencies[head:]
        self._count += n

    def _fold(self) -> None:
        n = self._count - self._folded
        if n and self.keep_histogram:
            samples = self._samples
            start = self._folded & (LATENCY_SAMPLES - 1)
            if start + n <= LATENCY_SAMPLES:
                chunk = samples[start : start + n]
            else:
                chunk = samples[start:] + samples[: start + n - LATENCY_SAMPLES]
            chunk.sort()
            buckets = self._buckets
            below = 0  # samples <= the previous bound
            for i, bound in enumerate(LATENCY_BUCKETS):
                upto = bisect.bisect_right(chunk, bound)
                buckets[i] += upto - below
                below = upto
            buckets[-1] += n - below
            self._sum += sum(chunk)
        self._folded = self._count

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def refuse(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1

    def limit_hit(self, code: str) -> None:
        self.limits[code] = self.limits.get(code, 0) + 1

    def latency_us(self) -> dict:
        n = min(self._count, LATENCY_SAMPLES)
        samples = sorted(self._samples[:n])
        out = {"count": self._count}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)):
            out[name] = round(samples[min(n - 1, int(q * n))] * 1e6, 1) if n else None
        out["max"] = round(samples[-1] * 1e6, 1) if n else None
        return out

    def histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (bound, count) pairs and the sum of seconds, for Prometheus."""
        self._fold()
        total = 0
        out = []
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self._buckets):
            total += count
            out.append((bound, total))
        return out, self._sum
