"""The workload of `nba bench load`: a 3-rule ruleset with history aggregates over
page_view, cart_abandoned and purchase (counts and a sum within windows, a cap on one
rule), customers with profiles, and a mix of their events.

The windows are seconds long on purpose: 1,000 customers at thousands of events a second
means each customer sends several events a second, so a window of seconds holds some tens
of events (what the floor server reads), as a production read would where far more
customers each send far fewer. nba keeps each history 300 s longer than the longest window
that reads it (for events that arrive late, dsl/compiler.py LATE_EVENTS_S) and, as of this
writing, reads all of what it keeps: its reads return up to that much more, growing over
the first five minutes of a run.
"""

from __future__ import annotations

import random

import msgpack

RULES = """\
profile {
  tier: string
  lifetime_value: number
  email_opt_in: bool
}
event page_view { category: string }
event cart_abandoned { cart_value: number, items: number }
event purchase { amount: number }

rule browsing_offer
  priority 30
  when event.type == "page_view"
   and count(page_view within 10s) >= 3
  then category_banner via web with category = event.category
end

rule cart_rescue "Recover an abandoned cart"
  priority 80
  when event.type == "cart_abandoned"
   and event.cart_value > 50
   and profile.email_opt_in
   and count(cart_abandoned within 30s) >= 2
   and count(purchase within 30s) == 0
  then cart_reminder via email with discount = 10, value = event.cart_value
  cap 1 per 1m
end

rule big_spender
  priority 60
  when event.type == "purchase"
   and sum(purchase.amount within 30s) > 500
  then vip_upgrade via email
end

on purchase
  set lifetime_value = coalesce(profile.lifetime_value, 0) + event.amount
end

default browse_recommendations via web
"""

# The history window each event type's rules read for that type (the floor server reads
# the same keys with the same windows: benchmarks/load_floor.py).
WINDOWS = {"page_view": 10.0, "cart_abandoned": 30.0, "purchase": 30.0}
MIX = (("page_view", 0.7), ("cart_abandoned", 0.2), ("purchase", 0.1))
CATEGORIES = ("shoes", "shirts", "bags", "hats", "coats")
TIERS = ("gold", "silver", "bronze")


def customer_id(n: int) -> str:
    return f"c{n}"


def profiles(customers: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    return [
        (
            customer_id(n),
            {
                "tier": rng.choice(TIERS),
                "lifetime_value": rng.randrange(0, 3000),
                "email_opt_in": rng.random() < 0.7,
            },
        )
        for n in range(customers)
    ]


class Events:
    """An endless seeded stream of events (without their time), customers chosen uniformly."""

    def __init__(self, customers: int, seed: int):
        self.customers = customers
        self.rng = random.Random(seed)

    def next(self) -> dict:
        rng = self.rng
        customer = customer_id(rng.randrange(self.customers))
        draw = rng.random()
        if draw < MIX[0][1]:
            return {"customer_id": customer, "type": "page_view", "category": rng.choice(CATEGORIES)}
        if draw < MIX[0][1] + MIX[1][1]:
            return {
                "customer_id": customer,
                "type": "cart_abandoned",
                "cart_value": rng.randrange(10, 200),
                "items": rng.randrange(1, 6),
            }
        return {"customer_id": customer, "type": "purchase", "amount": rng.randrange(5, 300)}

    def frames(self, count: int, first_time: float, rate: float) -> list[bytes]:
        """``count`` decide frames with ids 0, 1, ...; request i's event time is
        ``first_time + i / rate`` (the time it is scheduled to be sent: now, as the server
        sees it)."""
        return [decide_frame(i, self.next(), first_time + i / rate) for i in range(count)]


def decide_frame(request_id: int, event: dict, time: float) -> bytes:
    body = msgpack.packb({"id": request_id, "op": "decide", "event": {**event, "time": time}})
    return len(body).to_bytes(4, "big") + body


def profile_frames(customers: int, seed: int) -> list[bytes]:
    frames = []
    for n, (customer, profile) in enumerate(profiles(customers, seed)):
        body = msgpack.packb({"id": n, "op": "put_profile", "customer_id": customer, "profile": profile})
        frames.append(len(body).to_bytes(4, "big") + body)
    return frames
