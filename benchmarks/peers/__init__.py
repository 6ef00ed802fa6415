"""The contenders nba is measured against: a hand-written Python reference and the peers.

Each module exposes ``name``, ``version`` (a string, or None when the package is missing)
and ``build(workload) -> decide(event, profile) -> action | None``. A peer whose package is
not installed raises ImportError from ``build``.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

PEER_MODULES = ("zen_peer", "durable_peer", "rule_engine_peer", "business_rules_peer", "cel_peer")


def package_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def reference_module() -> ModuleType:
    return importlib.import_module(f"{__name__}.reference")


def peer_modules() -> list[ModuleType]:
    """Every peer module (installed or not: check ``version``)."""
    return [importlib.import_module(f"{__name__}.{module}") for module in PEER_MODULES]
