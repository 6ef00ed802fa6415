"""What a consumer counts, for its `stats` lines on stderr and its Prometheus metrics."""

from __future__ import annotations

import time


class ConsumerStats:
    """Plain counters, read at scrape time from the metrics thread (nothing per entry)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.read = 0  # entries read (new and claimed)
        self.decided = 0  # decisions written to the output stream (redelivered ones included)
        self.redelivered = 0  # of those, answered with the decision kept by an earlier delivery
        self.bad = 0  # entries answered with an error (not a valid event)
        self.claimed = 0  # entries claimed from consumers idle for --claim-idle-ms
        self.dead_lettered = 0  # entries moved to STREAM:dead after --max-deliveries
        self.deleted = 0  # pending entries gone from the stream (trimmed or deleted), acknowledged
        self.failures = 0  # rounds that Redis failed (the entries in hand were kept)
        self.left_pending = 0  # entries whose customer's state Redis refused (left for a later delivery)
        self.groups_created = 0  # times the group was found missing and created again
        self.pending = 0  # the group's pending entries (XINFO GROUPS), all consumers
        self.lag_entries: int | None = 0  # entries not yet delivered to the group (None: unknown)
        self.lag_seconds = 0.0  # age of the newest entry read when it was read
        self.cpu_started: float | None = None  # process CPU time when the first entry was read

    def snapshot(self) -> dict:
        return {
            "read": self.read,
            "decided": self.decided,
            "redelivered": self.redelivered,
            "bad": self.bad,
            "claimed": self.claimed,
            "dead_lettered": self.dead_lettered,
            "deleted": self.deleted,
            "failures": self.failures,
            "left_pending": self.left_pending,
            "groups_created": self.groups_created,
            "pending": self.pending,
            "lag_entries": self.lag_entries,
            "lag_seconds": round(self.lag_seconds, 6),
            "uptime_s": round(time.time() - self.started, 3),
            "cpu_s_since_first_entry": round(time.process_time() - self.cpu_started, 3)
            if self.cpu_started is not None
            else 0.0,
        }


COUNTERS = (
    ("read", "nba_consume_read", "Stream entries read (new and claimed)"),
    ("decided", "nba_consume_decided", "Decisions written to the output stream"),
    ("redelivered", "nba_consume_redelivered", "Decisions answered from an earlier delivery's record"),
    ("bad", "nba_consume_bad", "Entries that were not a valid event (an error written)"),
    ("claimed", "nba_consume_claimed", "Entries claimed from idle consumers"),
    ("dead_lettered", "nba_consume_dead_lettered", "Entries moved to the dead-letter stream"),
    ("deleted", "nba_consume_deleted", "Pending entries gone from the stream, acknowledged"),
    ("failures", "nba_consume_failures", "Rounds in which Redis failed"),
    ("left_pending", "nba_consume_left_pending", "Entries left pending: their customer's state could not be used"),
)


class ConsumerMetrics:
    """Prometheus metrics read from the consumer's counters at scrape time."""

    def __init__(self, consumer):
        self.consumer = consumer

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.consumer.snapshot()
        for key, name, doc in COUNTERS:
            yield CounterMetricFamily(name, doc, value=snap[key])
        yield GaugeMetricFamily(
            "nba_consume_pending", "Entries pending in the group (all consumers)", value=snap["pending"]
        )
        if snap["lag_entries"] is not None:
            yield GaugeMetricFamily(
                "nba_consume_lag_entries", "Entries not yet delivered to the group", value=snap["lag_entries"]
            )
        yield GaugeMetricFamily(
            "nba_consume_lag_seconds", "Age of the newest entry read, when read", value=snap["lag_seconds"]
        )
        first = CounterMetricFamily("nba_first_choices", "First choices per rule", labels=["rule"])
        for rule, count in sorted(snap["first_choices"].items()):
            first.add_metric([rule], count)
        yield first


def start_metrics(consumer, host: str, port: int | None):
    """The Prometheus HTTP server (a thread), or None without a port."""
    if port is None:
        return None
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsumerMetrics(consumer))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    consumer.metrics_address = server.server_address[:2]
    return server
