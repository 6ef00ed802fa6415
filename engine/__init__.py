"""nba: the real-time next-best-action engine.

    from engine import Engine
    engine = Engine.from_path("rules/")
    decision = engine.decide({"customer_id": "c1", "type": "cart_abandoned", "cart_value": 80})
"""

import dsl.twins  # noqa: F401 - first: it decides which twin of the hot-path modules loads
from engine.decision import Choice, Decision, TraceEntry
from engine.engine import Engine
from engine.errors import EngineError, EventError, RequestError

__all__ = ["Choice", "Decision", "Engine", "EngineError", "EventError", "RequestError", "TraceEntry"]
