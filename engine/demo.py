"""Demo traffic for the example ruleset in rules/: one seeded day of a web shop.

    python -m engine.demo                      # writes examples/demo/{events,profiles}.jsonl
    python -m engine.demo --day 2026-12-05 --customers 50 --seed 1 --out /tmp/demo

``generate`` returns ``(profiles, events)``: profiles with a ``customer_id`` key, events in
time order. Each customer has a few sessions spread over the day (more around lunch and
in the evening): app users open the app first; then product pages, mostly in one or two
categories; a session ends with an order, an abandoned cart, or nothing. Some customers
have not ordered for months (win-back), some never ordered (first-purchase welcome), some
are VIPs, and a few visitors have no profile at all. The same arguments always give the
same data.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import random
import sys

CATEGORIES = {
    # category: (weight, median price, price spread)
    "shoes": (14, 85, 0.5),
    "bags": (8, 70, 0.6),
    "jackets": (8, 120, 0.5),
    "dresses": (9, 60, 0.5),
    "electronics": (12, 220, 0.9),
    "watches": (4, 260, 0.8),
    "jewellery": (4, 150, 0.9),
    "beauty": (9, 25, 0.5),
    "home": (9, 45, 0.7),
    "garden": (5, 40, 0.7),
    "toys": (8, 30, 0.6),
    "books": (6, 15, 0.4),
    "sports": (6, 55, 0.6),
}
TIERS = (("standard", 66), ("silver", 20), ("gold", 10), ("platinum", 4))
COUNTRIES = (("DE", 30), ("FR", 20), ("GB", 20), ("NL", 10), ("ES", 10), ("IT", 10))
DAY = 86400


def generate(day: str = "2026-11-27", customers: int = 500, seed: int = 7) -> tuple[list[dict], list[dict]]:
    """One day of shop traffic: ``(profiles, events)``, events sorted by time."""
    start = _day_start(day)
    rng = random.Random(f"nba-demo/{day}/{customers}/{seed}")
    categories = list(CATEGORIES)
    category_weights = [CATEGORIES[c][0] for c in categories]
    profiles: list[dict] = []
    events: list[tuple[float, int, dict]] = []  # (time, sequence, event)
    sequence = 0
    for number in range(1, customers + 1):
        customer_id = f"c{number:05d}"
        known = rng.random() < 0.93  # the rest are new visitors without a profile
        favourites = rng.choices(categories, category_weights, k=2)
        profile = _profile(rng, customer_id, start, favourites[0]) if known else None
        if profile is not None:
            profiles.append(profile)
        app_user = bool(profile and profile.get("push_opt_in")) or rng.random() < 0.25
        activity = rng.lognormvariate(1.2, 0.6)  # sessions today, heavy-tailed
        for _ in range(min(12, max(1, round(activity)))):
            session_start = start + _session_time(rng)
            for event in _session(
                rng, customer_id, session_start, start + DAY, app_user, favourites, categories, category_weights
            ):
                events.append((event["_t"], sequence, event))
                sequence += 1
    events.sort(key=lambda item: (item[0], item[1]))
    out = []
    for _t, _seq, event in events:
        del event["_t"]
        out.append(event)
    return profiles, out


def write(
    path_events: str,
    path_profiles: str,
    day: str = "2026-11-27",
    customers: int = 500,
    seed: int = 7,
) -> tuple[int, int]:
    """Write ``events.jsonl`` and ``profiles.jsonl``; return (events, profiles) written."""
    profiles, events = generate(day, customers, seed)
    for path, rows in ((path_events, events), (path_profiles, profiles)):
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, separators=(",", ":")) + "\n")
    return len(events), len(profiles)


# -- the pieces ------------------------------------------------------------------------


def _profile(rng: random.Random, customer_id: str, day_start: float, favourite: str) -> dict:
    tier = _pick(rng, TIERS)
    signed_up = day_start - rng.uniform(20, 1500) * DAY
    if rng.random() < 0.14 and tier == "standard":
        orders = 0  # signed up, never ordered
    else:
        orders = max(
            1, int(rng.lognormvariate({"standard": 1.0, "silver": 1.8, "gold": 2.4, "platinum": 2.9}[tier], 0.6))
        )
    profile: dict = {"customer_id": customer_id, "tier": tier}
    if orders:
        average = rng.lognormvariate(math.log(70), 0.5)
        profile["lifetime_value"] = round(orders * average, 2)
        profile["order_count"] = orders
        # when was the last order: recently, a while ago, or long ago (win-back)
        roll = rng.random()
        if roll < 0.45:
            ago = rng.uniform(1, 30)
        elif roll < 0.75:
            ago = rng.uniform(30, 90)
        else:
            ago = rng.uniform(90, 400)
        ago = min(ago, (day_start - signed_up) / DAY - 1)
        last = day_start - ago * DAY - rng.uniform(0, DAY)
        first = min(last, signed_up + rng.uniform(0, max(1.0, last - signed_up)))
        profile["first_purchase_at"] = _rfc3339(first)
        profile["last_purchase_at"] = _rfc3339(last)
    else:
        profile["lifetime_value"] = 0
        profile["order_count"] = 0
    profile["email_opt_in"] = rng.random() < 0.72
    profile["push_opt_in"] = rng.random() < 0.35
    if rng.random() < 0.7:
        profile["last_category"] = favourite
    profile["country"] = _pick(rng, COUNTRIES)
    profile["signed_up_at"] = _rfc3339(signed_up)
    return profile


def _session_time(rng: random.Random) -> float:
    """Seconds into the day: a quiet night, a lunch peak and a bigger evening peak."""
    roll = rng.random()
    if roll < 0.12:
        hours = rng.uniform(0, 24)
    elif roll < 0.45:
        hours = rng.gauss(12.5, 1.8)
    else:
        hours = rng.gauss(20.0, 2.0)
    return min(max(hours, 0.0), 23.9) * 3600


def _session(rng, customer_id, t, day_end, app_user, favourites, categories, weights):
    events = []
    if app_user and rng.random() < 0.7:
        events.append(_event(customer_id, "app_open", t, platform=rng.choice(("ios", "android"))))
        t += rng.uniform(2, 20)
    views = max(1, int(rng.lognormvariate(2.15, 0.6)))
    category = favourites[0] if rng.random() < 0.6 else rng.choices(categories, weights)[0]
    seen: list[tuple[str, str, float]] = []  # (product, category, price)
    for _ in range(views):
        if t >= day_end:
            break
        roll = rng.random()
        if roll > 0.65:  # wander off to another category
            category = favourites[1] if roll < 0.75 else rng.choices(categories, weights)[0]
        _weight, median, spread = CATEGORIES[category]
        price = round(median * rng.lognormvariate(0, spread), 2)
        product = f"sku-{category[:3]}-{rng.randrange(1, 400):03d}"
        events.append(_event(customer_id, "page_view", t, category=category, product_id=product, price=price))
        seen.append((product, category, price))
        t += rng.expovariate(1 / 55) + 5
    if t >= day_end or not seen:
        return events
    ending = rng.random()
    basket = rng.sample(seen, k=min(len(seen), rng.choice((1, 1, 1, 2, 2, 3))))
    value = round(sum(price for _p, _c, price in basket), 2)
    if ending < 0.08:
        top = max(basket, key=lambda item: item[2])
        events.append(
            _event(
                customer_id,
                "purchase",
                t + rng.uniform(30, 300),
                amount=value,
                items=len(basket),
                category=top[1],
                order_id=f"o-{customer_id[1:]}-{int(t) % 100000:05d}",
            )
        )
    elif ending < 0.22:
        events.append(_event(customer_id, "cart_abandoned", t + 1800, cart_value=value, items=len(basket)))
    return [e for e in events if e["_t"] < day_end]


def _event(customer_id: str, kind: str, t: float, **fields) -> dict:
    t = round(t)
    event = {"customer_id": customer_id, "type": kind, "time": _rfc3339(t)}
    event.update(fields)
    event["_t"] = t
    return event


def _pick(rng: random.Random, weighted) -> str:
    names = [name for name, _w in weighted]
    return rng.choices(names, [w for _n, w in weighted])[0]


def _day_start(day: str) -> float:
    moment = _dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


def _rfc3339(t: float) -> str:
    return _dt.datetime.fromtimestamp(round(t), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--day", default="2026-11-27", help="the day, YYYY-MM-DD (UTC)")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="examples/demo", help="the directory for events.jsonl and profiles.jsonl")
    args = parser.parse_args(argv)
    events, profiles = write(
        os.path.join(args.out, "events.jsonl"),
        os.path.join(args.out, "profiles.jsonl"),
        args.day,
        args.customers,
        args.seed,
    )
    print(f"wrote {events} events and {profiles} profiles to {args.out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
