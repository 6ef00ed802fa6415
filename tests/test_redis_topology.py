"""The slot table's refresh policy, node up/down tracking and a commit that fails, without Redis.

The cluster faults themselves, for real: tests/test_redis_cluster.py.
"""

from __future__ import annotations

import logging

import pytest

from nba.engine import Engine
from nba.engine.store import StoreUnavailable
from nba.engine.store.memory import MemoryStore
from nba.engine.store.redis.protocol import SLOT_COUNT, Endpoint, Topology, parse_cluster_slots

A, B, C = ("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)
RA, RB, RC = ("10.0.0.4", 7003), ("10.0.0.5", 7004), ("10.0.0.6", 7005)


def node(address: tuple[str, int]) -> list:
    return [address[0].encode(), address[1], b"id-%d" % address[1]]


def slots_reply(*ranges) -> list:
    """CLUSTER SLOTS: (start, end, master, replicas...) per range."""
    return [[start, end, *map(node, nodes)] for start, end, *nodes in ranges]


THREE = slots_reply((0, 5460, A, RA), (5461, 10922, B, RB), (10923, 16383, C, RC))


def cluster(interval_s: float = 0.25, max_backoff_s: float = 2.0) -> Topology:
    topology = Topology(Endpoint("10.0.0.1", 7000, {}, {}), interval_s, max_backoff_s)
    topology.learn(THREE)
    return topology


def test_the_slot_table_names_each_slots_master_and_every_node():
    table, nodes = parse_cluster_slots(slots_reply((0, 99, A, RA), (100, 100, ("", 7009))), "127.0.0.1")
    assert len(table) == SLOT_COUNT
    assert table[0] == table[99] == A and table[100] == ("127.0.0.1", 7009)
    assert table[101] is None and table[SLOT_COUNT - 1] is None
    assert nodes == [A, RA, ("127.0.0.1", 7009)]


def test_a_node_lost_marks_the_table_stale_and_keeps_serving_it():
    topology = cluster()
    topology.lost(A)
    assert topology.cluster is True and topology.stale  # not thrown away: the request path never fetches
    assert topology.address_for("nba:{x}:p") in (A, B, C)


def test_one_fetch_at_a_time_and_at_most_one_per_interval():
    topology = cluster(interval_s=0.25)
    topology.stale = True
    assert topology.refresh_due(10.0)
    assert not topology.refresh_due(10.0)  # one in flight
    topology.refreshed(THREE, 10.001)
    topology.lost(B)
    assert topology.stale
    assert not topology.refresh_due(10.1)  # too soon after the last
    assert topology.refresh_due(10.26)


def test_a_fetch_that_never_ended_does_not_stop_the_next_ones():
    topology = cluster()
    topology.stale = True
    assert topology.refresh_due(10.0)  # and then its event loop closed under it: no refreshed(), no failed()
    assert not topology.refresh_due(12.0)
    assert topology.refresh_due(15.1)


def test_fetches_back_off_while_no_node_answers():
    topology = cluster(interval_s=0.25, max_backoff_s=2.0)
    topology.stale = True
    now, gaps = 0.0, []
    for _ in range(6):
        assert topology.refresh_due(now)
        topology.refresh_failed(now)
        gaps.append(topology.next_refresh_at - now)
        now = topology.next_refresh_at
    assert gaps == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert topology.refresh_due(now)
    topology.refreshed(THREE, now)
    assert topology.next_refresh_at == now + 0.25  # answered: back to the plain interval


def test_the_table_stays_stale_while_a_slots_owner_is_down():
    topology = cluster()
    assert topology.node_down(A) and not topology.node_down(A)  # news once
    topology.refreshed(THREE, 1.0)  # the cluster has not promoted A's replica yet
    assert topology.stale
    promoted = slots_reply((0, 5460, RA), (5461, 10922, B, RB), (10923, 16383, C, RC))
    topology.refreshed(promoted, 2.0)
    assert not topology.stale and topology.address_for("nba:{a}:p") != A


def test_refresh_asks_nodes_that_are_up_first():
    topology = cluster()
    topology.node_down(A)
    candidates = topology.refresh_candidates()
    assert candidates[-1] == A and set(candidates) == {A, B, C, RA, RB, RC}


def test_a_node_is_logged_once_going_down_and_once_coming_back(caplog):
    from nba.engine.store.redis import RedisStore

    store = RedisStore("redis://127.0.0.1:1/0", connect_now=False)
    with caplog.at_level(logging.WARNING, logger="nba.store.redis"):
        for _ in range(50):
            store.node_state(A, False, "connection refused")
        for _ in range(50):
            store.node_state(A, True, "connected")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2 and "down" in messages[0] and "back" in messages[1]
    assert store.counters()["node_down_events"] == 1 and store.counters()["nodes_down"] == 0


RULES = """
rule welcome_back
  priority 10
  when event.type == "visit" and count(visit within 1d) >= 2
  then welcome_back via email
end

rule hello
  when event.type == "visit"
  then hello via email
end
"""


class FailingCommits(MemoryStore):
    """The in-memory store, with commits that fail while ``failing``."""

    failing = False

    def commit(self, customer_id, needs, write):
        if self.failing:
            raise StoreUnavailable("the write could not be made")
        return super().commit(customer_id, needs, write)

    async def commit_async(self, customer_id, needs, write):
        return self.commit(customer_id, needs, write)


@pytest.mark.parametrize("call", ["sync", "async"])
def test_a_decision_whose_write_failed_is_told_as_a_degraded_one(write_rules, call):
    import asyncio

    store = FailingCommits()
    engine = Engine.from_path(write_rules(RULES), store=store)
    visit = {"customer_id": "c1", "type": "visit", "time": 1_795_000_000}
    assert engine.decide(visit).rule == "hello"
    store.failing = True
    later = dict(visit, time=visit["time"] + 60)
    decision = engine.decide(later) if call == "sync" else asyncio.run(engine.decide_async(later))
    # with the state read, welcome_back; but nothing was recorded: the answer is the one
    # made without state (what a degraded decision sees), not the one that was not recorded
    assert decision.degraded and decision.rule == "hello"
    stats = engine.stats.snapshot()
    assert stats["store_failures"] == {"read": 0, "commit": 1} and stats["degraded"] == 1
