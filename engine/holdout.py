"""Stable control groups: a customer is in a rule's holdout by a hash of the two ids."""

from __future__ import annotations

from hashlib import blake2b

_SCALE = 100.0 / 2**64


def holdout_point(rule_id: str, customer_id: str) -> float:
    """A number in [0, 100) that is the same for a rule and a customer in every process."""
    digest = blake2b(f"{rule_id}\x00{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def in_holdout(rule_id: str, customer_id: str, percent: float) -> bool:
    return percent > 0 and holdout_point(rule_id, customer_id) < percent
