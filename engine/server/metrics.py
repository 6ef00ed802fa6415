"""The Prometheus endpoint: metrics read from the counters at scrape time (nothing per request)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nba.engine.server.lifecycle import Server


def start_metrics(server: "Server", host: str, port: int):
    """Serve ``server``'s metrics over HTTP on host:port; returns the HTTP server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(server))
    http, _ = start_http_server(port, addr=host, registry=registry)
    return http


class MetricsCollector:
    def __init__(self, server: "Server"):
        self.server = server

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        snap = self.server.stats_snapshot()
        yield CounterMetricFamily("nba_decisions", "Decisions made", value=snap.get("decisions", 0))
        yield CounterMetricFamily(
            "nba_degraded_decisions",
            "Decisions made without the customer's state (the store did not answer in time)",
            value=snap.get("degraded", 0),
        )
        yield CounterMetricFamily("nba_decision_errors", "Decide requests that failed", value=snap.get("errors", 0))
        yield _labelled(
            CounterMetricFamily, "nba_first_choices", "First choices per rule", "rule", snap.get("first_choices", {})
        )
        yield _labelled(
            CounterMetricFamily,
            "nba_passed_over",
            "Candidates passed over, by reason",
            "reason",
            snap.get("passed_over", {}),
        )
        yield _labelled(CounterMetricFamily, "nba_requests", "Requests answered, by op", "op", snap["requests"])
        yield _labelled(
            CounterMetricFamily, "nba_request_errors", "Error responses, by code", "code", snap["request_errors"]
        )
        yield GaugeMetricFamily("nba_connections", "Open connections", value=snap["connections"])
        yield _labelled(
            CounterMetricFamily,
            "nba_connections_refused",
            "Connections refused at once, by error code",
            "code",
            snap["connections_refused"],
        )
        yield _labelled(
            CounterMetricFamily,
            "nba_limits_hit",
            "Connections closed by a limit, by error code",
            "code",
            snap["limits_hit"],
        )
        yield GaugeMetricFamily(
            "nba_buffered_bytes", "Bytes of unfinished frames held, over all connections", value=snap["buffered_bytes"]
        )
        yield _labelled(CounterMetricFamily, "nba_reloads", "Ruleset reloads, by result", "result", snap["reloads"])
        yield from store_metrics(snap)
        buckets, total = self.server.stats.histogram()
        yield HistogramMetricFamily(
            "nba_request_latency_seconds",
            "Time from reading a request to queueing its response",
            buckets=buckets,
            sum_value=total,
        )


def _labelled(kind, name: str, doc: str, label: str, values: dict):
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items(), key=lambda item: str(item[0])):
        family.add_metric([str(key)], value)
    return family


def store_metrics(snap: dict):
    """The state store's failures and, on Redis, its own counters (engine stats' snapshot)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield _labelled(
        CounterMetricFamily,
        "nba_store_failures",
        "State reads and commits that failed, by operation",
        "op",
        snap.get("store_failures", {}),
    )
    counters = snap.get("store_counters") or {}
    for key, name, doc in (
        ("lost_writes", "nba_store_lost_writes", "Writes sent without waiting that could not be made"),
        ("resent_writes", "nba_store_resent_writes", "Writes sent again after a redirect, TRYAGAIN or a lost link"),
        ("retried_writes", "nba_store_retried_writes", "Awaited commits tried again after TRYAGAIN"),
        ("slot_table_fetches", "nba_redis_slot_table_fetches", "Redis Cluster slot table fetches"),
        ("node_down_events", "nba_redis_node_down", "Redis nodes seen going down"),
        ("near_cache_hits", "nba_near_cache_hits", "Decisions whose state the near cache held"),
        ("near_cache_misses", "nba_near_cache_misses", "Decisions whose state was read from Redis (near cache on)"),
        ("near_cache_invalidations", "nba_near_cache_invalidations", "Near cache entries dropped: a key changed"),
        ("near_cache_flushes", "nba_near_cache_flushes", "Times the near cache was emptied (tracking lost, ...)"),
    ):
        if key in counters:
            yield CounterMetricFamily(name, doc, value=counters[key])
    if "nodes_down" in counters:
        yield GaugeMetricFamily("nba_redis_nodes_down", "Redis nodes down now", value=counters["nodes_down"])
    if "near_cache_customers" in counters:
        yield GaugeMetricFamily(
            "nba_near_cache_customers", "Customers the near cache holds now", value=counters["near_cache_customers"]
        )
