"""A small stand-in for ``engine.Engine`` with the same interface, for the server's tests.

The ruleset is one text file: ``action NAME`` makes every decision give ``NAME``; any other
content fails to load. ``slow_engine_factory`` makes the async methods wait a little, so that
requests stay in flight.
"""

from __future__ import annotations

import asyncio
import os
import time

from engine.decision import Choice, Decision
from engine.errors import EventError, RequestError


class FakeLoadError(Exception):
    pass


class FakeStats:
    def __init__(self):
        self.decisions = 0
        self.first_choices = {}

    def snapshot(self):
        return {"decisions": self.decisions, "errors": 0, "first_choices": dict(self.first_choices), "passed_over": {}}


def read_action(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    if not text.startswith("action "):
        raise FakeLoadError(f"{path}:1:1: error: expected 'action NAME'")
    return text.split()[1]


class FakeEngine:
    def __init__(self, rules_path: str, delay: float = 0.0):
        self.rules_path = rules_path
        self.delay = delay
        self.action = read_action(rules_path)
        self.profiles = {}
        self.stats = FakeStats()
        self.closed = False

    def decide(self, event, limit=1, explain=False, dry_run=False):
        customer_id = event.get("customer_id")
        if type(customer_id) is not str or not customer_id:
            raise EventError("customer_id", "must be a non-empty string")
        if type(event.get("type")) is not str:
            raise EventError("type", "must be a non-empty string")
        if event.get("boom"):
            raise RuntimeError("boom")
        if limit > 100:
            raise RequestError("limit must be at most 100")
        self.stats.decisions += 1
        self.stats.first_choices["r1"] = self.stats.first_choices.get("r1", 0) + 1
        params = {"seq": event.get("seq"), "weird": event.get("weird")} if "weird" in event else {"seq": event.get("seq")}
        return Decision(customer_id, (Choice("r1", self.action, "web", params),))

    async def decide_async(self, event, limit=1, explain=False, dry_run=False):
        action = self.action  # an in-flight request finishes on the ruleset it started with
        if self.delay:
            await asyncio.sleep(self.delay)
        decision = self.decide(event, limit, explain, dry_run)
        first = decision.choices[0]
        return Decision(decision.customer_id, (Choice(first.rule, action, first.channel, first.params),))

    def get_profile(self, customer_id):
        return dict(self.profiles.get(customer_id, {}))

    def put_profile(self, customer_id, profile):
        self.profiles[customer_id] = dict(profile)

    async def get_profile_async(self, customer_id):
        return self.get_profile(customer_id)

    async def put_profile_async(self, customer_id, profile):
        self.put_profile(customer_id, profile)

    def reload(self, path=None):
        self.action = read_action(path or self.rules_path)

    def close(self):
        self.closed = True


def fake_engine_factory(rules_path, redis_url=None):
    return FakeEngine(rules_path)


def slow_engine_factory(rules_path, redis_url=None):
    return FakeEngine(rules_path, delay=float(os.environ.get("NBA_FAKE_DELAY", "0.5")))


def wait_for(predicate, timeout=20.0, interval=0.02):
    """Poll until ``predicate()`` is true; returns its last value (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
