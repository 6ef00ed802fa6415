"""A large, varied rule file for the load benchmark: by default 52,000 rules in about 6 MB.

Issue 21 measured the load of a 5.9 MB file of 52,000 rules. This writes one of that
shape, seeded: every rule names an event type, and most test two or three event and
profile fields against literals (what the Cython matcher evaluates in place); one in
five also uses what needs generated Python: a segment, an aggregate, arithmetic, a
function, a computed priority or computed parameters. A schema and a few segments and
policies come first.

    python -m benchmarks.big_ruleset /tmp/big.rules [--rules 52000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys

EVENT_TYPES = 500
SEGMENTS = 40
CATEGORIES = ("shoes", "shirts", "bags", "hats", "coats", "socks", "belts", "watches", "toys", "books")
TIERS = ("none", "bronze", "silver", "gold", "platinum")
CHANNELS = ("email", "push", "web", "sms")


def header(rng: random.Random) -> str:
    lines = ["# a generated ruleset for the load benchmark (benchmarks/big_ruleset.py)", ""]
    lines.append("profile {\n  tier: string\n  lifetime_value: number\n  visits: number\n  region: string\n}")
    for t in range(EVENT_TYPES):
        lines.append(f"event t{t} {{ amount: number, items: number, category: string, device: string }}")
    for s in range(SEGMENTS):
        lines.append(
            f"segment s{s} = profile.lifetime_value > {rng.randrange(5000)} "
            f"and profile.tier in [{', '.join(repr_string(x) for x in rng.sample(TIERS, 2))}]"
        )
    for channel in CHANNELS:
        lines.append(f"policy {channel}: cap {rng.randrange(2, 6)} per 1d")
    return "\n".join(lines) + "\n\n"


def repr_string(value: str) -> str:
    return '"' + value + '"'


def atom(rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:
        return f"event.amount {rng.choice(('>', '>=', '<', '<='))} {rng.randrange(1000)}"
    if choice == 1:
        return f"event.category == {repr_string(rng.choice(CATEGORIES))}"
    if choice == 2:
        return f"profile.tier in [{', '.join(repr_string(x) for x in rng.sample(TIERS, 2))}]"
    if choice == 3:
        return f"profile.visits > {rng.randrange(200)}"
    if choice == 4:
        return f"event.items >= {rng.randrange(1, 20)}"
    return f"profile.region != {repr_string('r' + str(rng.randrange(10)))}"


def python_part(rng: random.Random, event_type: str) -> str:
    choice = rng.randrange(4)
    if choice == 0:
        return f"s{rng.randrange(SEGMENTS)}"
    if choice == 1:
        return f"count({event_type} within {rng.randrange(1, 30)}d) >= {rng.randrange(1, 5)}"
    if choice == 2:
        return f"event.amount * {rng.randrange(2, 9)} + profile.visits > {rng.randrange(100, 5000)}"
    return f"lower(event.device) == {repr_string(rng.choice(('ios', 'android', 'web')))}"


def rule(rng: random.Random, index: int) -> str:
    event_type = f"t{index % EVENT_TYPES}"
    parts = [f'event.type == "{event_type}"'] + [atom(rng) for _ in range(rng.choice((1, 2)))]
    rich = rng.random() < 0.2
    if rich:
        parts.append(python_part(rng, event_type))
    priority = f"{rng.randrange(100)} + profile.visits / 10" if rich and rng.random() < 0.5 else str(rng.randrange(100))
    then = f"a{index % 997} via {rng.choice(CHANNELS)}"
    if rich and rng.random() < 0.5:
        then += f" with discount = event.amount * {rng.randrange(1, 30)} / 100"
    cap = f"\n  cap {rng.randrange(1, 4)} per 1d" if rng.random() < 0.3 else ""
    return f"rule r{index}\n  priority {priority}\n  when " + "\n   and ".join(parts) + f"\n  then {then}{cap}\nend\n"


def render(n_rules: int = 52_000, seed: int = 1) -> str:
    rng = random.Random(seed)
    return header(rng) + "".join(rule(rng, i) for i in range(n_rules))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--rules", type=int, default=52_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    text = render(args.rules, args.seed)
    with open(args.path, "w", encoding="utf-8") as out:
        out.write(text)
    print(f"{args.path}: {args.rules:,} rules, {len(text.encode()):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
