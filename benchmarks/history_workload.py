"""The history benchmark's workload: a ruleset of 20 aggregates with `where` filters,
customers with 1,000 past events each, and a hand-written Python version of the rules.

Three event types are kept in history: ``page_view {category, device, seconds}``,
``purchase {amount, category, channel}`` and ``email_open {campaign}``. Each customer's
1,000 past events fall in the 30 days before ``START`` (30 days is the widest window, so
every one of them is in reach of some aggregate). The decisions come after ``START``.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

DAY = 86_400
START = 1_767_225_600 + 60 * DAY  # 2026-03-02T00:00:00Z
PAST_SPAN = 30 * DAY
CATEGORIES = ("shoes", "bags", "hats", "coats", "shirts", "toys")
DEVICES = ("mobile", "desktop", "tablet")
CHANNELS = ("web", "app", "store")
CAMPAIGNS = ("spring", "summer", "autumn", "winter")
TYPE_WEIGHTS = (("page_view", 0.6), ("purchase", 0.25), ("email_open", 0.15))

RULES = """\
# The history benchmark: 10 rules, 20 aggregates, each with a `where` filter.

rule shoe_offer priority 90
  when event.type == "page_view" and event.category == "shoes"
   and count(page_view where category == "shoes" within 1d) >= 3
   and sum(purchase.amount where category == "shoes" within 30d) > 300
  then shoe_offer
end

rule mobile_nudge priority 80
  when event.type == "page_view"
   and count(page_view where device == "mobile" within 1h) >= 2
   and max(page_view.seconds where device == "mobile" within 1d) > 150
  then mobile_nudge
end

rule web_loyalty priority 70
  when event.type == "purchase"
   and sum(purchase.amount where channel == "web" within 7d) > 5500
   and distinct(purchase.category where amount > 50 within 30d) >= 6
  then web_loyalty
end

rule accessories priority 60
  when event.type == "page_view"
   and avg(purchase.amount where category in ["bags", "hats"] within 30d) > 260
   and max(purchase.amount where channel == "store" within 30d) > 480
  then accessories
end

rule bargain priority 50
  when event.type == "purchase"
   and min(purchase.amount where amount > 20 within 7d) < 25
   and sum(purchase.amount where category != "shoes" within 7d) > 3000
  then bargain
end

rule explorer priority 45
  when event.type == "page_view"
   and distinct(page_view.category where device != "desktop" within 7d) >= 6
   and count(page_view where category == "bags" within 12h) >= 2
  then explorer
end

rule win_back priority 40
  when event.type == "page_view"
   and coalesce(since(purchase where amount >= 200 within 30d), 30d) > 6h
   and count(email_open where campaign == "spring" within 7d) >= 12
  then win_back
end

rule repeat_category priority 35
  when event.type == "purchase"
   and count(purchase where category == event.category within 30d) >= 45
   and sum(purchase.amount where category == "coats" within 1d) > 0
  then repeat_category
end

rule engaged_reader priority 30
  when event.type == "page_view"
   and avg(page_view.seconds where category == "shoes" within 7d) > 160
   and count(email_open where campaign in ["spring", "summer"] within 30d) >= 80
  then engaged_reader
end

rule winter_campaign priority 20
  when event.type == "email_open"
   and coalesce(since(email_open where campaign == "winter" within 30d), 30d) < 1d
   and count(purchase where channel == "app" and amount > 100 within 30d) >= 70
  then winter_campaign
end
"""


def random_event(rng: random.Random, customer_id: str, t: int) -> dict:
    event_type = rng.choices([t for t, _ in TYPE_WEIGHTS], [w for _, w in TYPE_WEIGHTS])[0]
    event = {"customer_id": customer_id, "type": event_type, "time": t}
    if event_type == "page_view":
        event.update(category=rng.choice(CATEGORIES), device=rng.choice(DEVICES), seconds=rng.randint(1, 300))
    elif event_type == "purchase":
        event.update(amount=rng.randint(1, 500), category=rng.choice(CATEGORIES), channel=rng.choice(CHANNELS))
    else:
        event.update(campaign=rng.choice(CAMPAIGNS))
    return event


@dataclass
class HistoryWorkload:
    past: list[dict]  # every customer's past events, in time order
    decisions: list[dict]  # the events to decide, in time order
    customers: list[str] = field(default_factory=list)


def generate(
    customers: int = 50, past_per_customer: int = 1000, decisions: int = 5000, seed: int = 1
) -> HistoryWorkload:
    rng = random.Random(seed)
    ids = [f"h{i}" for i in range(customers)]
    past = []
    for customer_id in ids:
        times = sorted(rng.sample(range(START - PAST_SPAN + 1, START), past_per_customer))
        past += [random_event(rng, customer_id, t) for t in times]
    past.sort(key=lambda e: (e["time"], e["customer_id"]))
    upcoming = [random_event(rng, rng.choice(ids), START + 1 + i * 60) for i in range(decisions)]
    return HistoryWorkload(past=past, decisions=upcoming, customers=ids)


# ---------------------------------------------------------------------------------------
# The same rules, written by hand in Python
# ---------------------------------------------------------------------------------------


class HandWrittenRules:
    """Each customer's events by type in time order; each rule as plain Python.

    ``decide`` adds the event to the history (the history includes the event being
    decided, as in nba) and returns the first action whose rule holds, by priority.
    """

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], list[int]] = {}
        self.events: dict[tuple[str, str], list[dict]] = {}

    def add(self, event: dict) -> None:
        key = (event["customer_id"], event["type"])
        times = self.times.setdefault(key, [])
        events = self.events.setdefault(key, [])
        at = bisect.bisect_right(times, event["time"])
        times.insert(at, event["time"])
        events.insert(at, event)

    def window(self, customer_id: str, event_type: str, t: int, seconds: int) -> list[dict]:
        """The events of one type in ``(t - seconds, t]``."""
        key = (customer_id, event_type)
        times = self.times.get(key)
        if not times:
            return []
        return self.events[key][bisect.bisect_right(times, t - seconds) : bisect.bisect_right(times, t)]

    def decide(self, event: dict) -> str | None:
        self.add(event)
        kind, t, cid = event["type"], event["time"], event["customer_id"]
        views = lambda seconds: self.window(cid, "page_view", t, seconds)  # noqa: E731
        buys = lambda seconds: self.window(cid, "purchase", t, seconds)  # noqa: E731
        opens = lambda seconds: self.window(cid, "email_open", t, seconds)  # noqa: E731

        if kind == "page_view" and event.get("category") == "shoes":
            if (
                sum(1 for e in views(DAY) if e["category"] == "shoes") >= 3
                and sum(e["amount"] for e in buys(30 * DAY) if e["category"] == "shoes") > 300
            ):
                return "shoe_offer"
        if kind == "page_view":
            mobile_day = [e["seconds"] for e in views(DAY) if e["device"] == "mobile"]
            if sum(1 for e in views(3600) if e["device"] == "mobile") >= 2 and mobile_day and max(mobile_day) > 150:
                return "mobile_nudge"
        if kind == "purchase":
            if (
                sum(e["amount"] for e in buys(7 * DAY) if e["channel"] == "web") > 5500
                and len({e["category"] for e in buys(30 * DAY) if e["amount"] > 50}) >= 6
            ):
                return "web_loyalty"
        if kind == "page_view":
            small = [e["amount"] for e in buys(30 * DAY) if e["category"] in ("bags", "hats")]
            store = [e["amount"] for e in buys(30 * DAY) if e["channel"] == "store"]
            if small and sum(small) / len(small) > 260 and store and max(store) > 480:
                return "accessories"
        if kind == "purchase":
            over_20 = [e["amount"] for e in buys(7 * DAY) if e["amount"] > 20]
            if (
                over_20
                and min(over_20) < 25
                and sum(e["amount"] for e in buys(7 * DAY) if e["category"] != "shoes") > 3000
            ):
                return "bargain"
        if kind == "page_view":
            if (
                len({e["category"] for e in views(7 * DAY) if e["device"] != "desktop"}) >= 6
                and sum(1 for e in views(DAY // 2) if e["category"] == "bags") >= 2
            ):
                return "explorer"
        if kind == "page_view":
            big = [e["time"] for e in buys(30 * DAY) if e["amount"] >= 200]
            since_big = t - max(big) if big else 30 * DAY
            if since_big > 6 * 3600 and sum(1 for e in opens(7 * DAY) if e["campaign"] == "spring") >= 12:
                return "win_back"
        if kind == "purchase":
            if (
                sum(1 for e in buys(30 * DAY) if e["category"] == event.get("category")) >= 45
                and sum(e["amount"] for e in buys(DAY) if e["category"] == "coats") > 0
            ):
                return "repeat_category"
        if kind == "page_view":
            shoe_seconds = [e["seconds"] for e in views(7 * DAY) if e["category"] == "shoes"]
            if (
                shoe_seconds
                and sum(shoe_seconds) / len(shoe_seconds) > 160
                and sum(1 for e in opens(30 * DAY) if e["campaign"] in ("spring", "summer")) >= 80
            ):
                return "engaged_reader"
        if kind == "email_open":
            winter = [e["time"] for e in opens(30 * DAY) if e["campaign"] == "winter"]
            since_winter = t - max(winter) if winter else 30 * DAY
            if (
                since_winter < DAY
                and sum(1 for e in buys(30 * DAY) if e["channel"] == "app" and e["amount"] > 100) >= 70
            ):
                return "winter_campaign"
        return None
