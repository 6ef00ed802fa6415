"""The ops: run a parsed request against the engine and turn the outcome into a response."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from nba.engine.errors import EngineError
from nba.engine.protocol import INTERNAL, Request, error_response, ok_response
from nba.engine.server.logs import log

if TYPE_CHECKING:
    from nba.engine.server.lifecycle import Server


class Dispatcher:
    """Runs the ops against the engine and turns outcomes (and errors) into response maps.

    ``blocking``: call the engine's synchronous methods inline (the in-memory store);
    otherwise the ``*_async`` ones, from a task. `auth` is the connection's business
    (engine/server/connection.py), not an op of the engine.
    """

    def __init__(self, server: "Server", engine: Any, blocking: bool):
        self.server = server
        self.engine = engine
        self.blocking = blocking
        self.stats = server.stats
        self.limiter = server.limiter  # one budget of log lines for the whole server
        decide_map = getattr(engine, "decide_map", None)
        if decide_map is None:  # an engine without the shortcut (tests' stand-ins)
            decide_map = lambda event: engine.decide(event).to_dict()  # noqa: E731
        # The decision map of an event with the default options: blocking mode's fast path.
        self.decide_map: Callable[[dict], dict] = decide_map

    def handle_now(self, req: Request) -> dict | None:
        """The response, when the op can be answered at once; None when it needs a task."""
        op = req.op
        try:
            if op == "decide":
                if not self.blocking:
                    return None
                decision = self.engine.decide(req.event, limit=req.limit, explain=req.explain, dry_run=req.dry_run)
                return {"id": req.id, "ok": True, "decision": decision.to_dict()}
            if op == "ping":
                return {"id": req.id, "ok": True, "pong": True}
            if op == "stats":
                return ok_response(req.id, "stats", self.server.stats_snapshot())
            if not self.blocking or op == "reload":
                return None
            if op == "get_profile":
                return ok_response(req.id, "profile", self.engine.get_profile(req.customer_id))
            if op == "put_profile":
                self.engine.put_profile(req.customer_id, req.profile)
                return ok_response(req.id)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error response
            return self.error(req.id, req.op, exc)
        return None

    async def handle(self, req: Request) -> dict:
        op = req.op
        engine = self.engine
        try:
            if op == "decide":
                decision = await engine.decide_async(
                    req.event, limit=req.limit, explain=req.explain, dry_run=req.dry_run
                )
                return {"id": req.id, "ok": True, "decision": decision.to_dict()}
            if op == "reload":
                return await self.server.reloader.reload(req.id, origin="op")
            if op == "get_profile":
                return ok_response(req.id, "profile", await engine.get_profile_async(req.customer_id))
            if op == "put_profile":
                await engine.put_profile_async(req.customer_id, req.profile)
                return ok_response(req.id)
            return self.handle_now(req) or error_response(req.id, INTERNAL, f"op {op!r} has no handler")
        except Exception as exc:  # noqa: BLE001
            return self.error(req.id, req.op, exc)

    def error(self, request_id: Any, op: str, exc: Exception) -> dict:
        if isinstance(exc, EngineError):
            if self.limiter.allow():
                log.info("request %r (%s) refused: %s: %s", request_id, op, exc.code, exc)
            return error_response(request_id, exc.code, str(exc))
        if self.limiter.allow():
            log.error("request %r (%s) failed", request_id, op, exc_info=exc)
        return error_response(request_id, INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
