"""The engine: events, customer state, the decision procedure, stores, the server and clients.

from nba import Engine  # or: from nba.engine import Engine
engine = Engine.from_path("rules/")
decision = engine.decide({"customer_id": "c1", "type": "cart_abandoned", "cart_value": 80})
"""

from nba.engine.decision import Choice, Decision, TraceEntry
from nba.engine.engine import Engine
from nba.engine.errors import EngineError, EventError, RequestError

__all__ = ["Choice", "Decision", "Engine", "EngineError", "EventError", "RequestError", "TraceEntry"]
