"""nba: the real-time next-best-action engine.

    from nba import Engine
    engine = Engine.from_path("rules/")
    decision = engine.decide({"customer_id": "c1", "type": "cart_abandoned", "cart_value": 80})

The repository's folders install under this one name: ``dsl/`` as ``nba.dsl`` (the rule
language: text -> syntax tree -> checked tree -> compiled ruleset) and ``engine/`` as
``nba.engine`` (events, state, decisions, stores, server, clients). The names below are
loaded on first use, so ``import nba.dsl`` does not import the engine.
"""

from nba import twins as _twins

_twins.install()  # first: it decides which twin of every hot-path module loads

_EXPORTS = {
    "Engine": "nba.engine.engine",
    "Decision": "nba.engine.decision",
    "Choice": "nba.engine.decision",
    "TraceEntry": "nba.engine.decision",
    "EngineError": "nba.engine.errors",
    "EventError": "nba.engine.errors",
    "RequestError": "nba.engine.errors",
    "Client": "nba.engine.client",
    "AsyncClient": "nba.engine.client",
    "load_ruleset": "nba.dsl.loader",
    "LoadError": "nba.dsl.source",
    "CompiledRuleset": "nba.dsl.compiler",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nba' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
