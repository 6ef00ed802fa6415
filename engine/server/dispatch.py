"""The ops: run a parsed request against the engine and turn the outcome into a response."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from nba.engine.errors import EngineError
from nba.engine.protocol import CUSTOMER_OPS, INTERNAL, Request, error_response, ok_response
from nba.engine.server.logs import log

if TYPE_CHECKING:
    from nba.engine.server.lifecycle import Server

Respond = Callable[[dict], Any]  # hands a request's response over, once


class Dispatcher:
    """Runs the ops against the engine and turns outcomes (and errors) into response maps.

    ``blocking``: the engine's synchronous methods answer every op at once (the in-memory
    store). Otherwise the ops on a customer's state wait for the store: ``answers_at_once``
    says which requests ``answer`` answers, and ``start`` runs the others. `auth` and
    `reload` are the connection's business (engine/server/connection.py), not ops here.
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
        # Decisions by the store's callbacks, with no task per request (Engine.decide_map_then);
        # None: decide_async in a task (an engine without it: tests' stand-ins).
        self.decide_map_then = getattr(engine, "decide_map_then", None)

    def answers_at_once(self, req: Request) -> bool:
        """Whether ``answer`` answers ``req`` (else ``start`` runs it: it waits for the store)."""
        return self.blocking or req.op not in CUSTOMER_OPS

    def answer(self, req: Request) -> dict:
        """The response to a request ``answers_at_once`` is true of."""
        op = req.op
        try:
            if op == "decide":
                decision = self.engine.decide(req.event, limit=req.limit, explain=req.explain, dry_run=req.dry_run)
                return {"id": req.id, "ok": True, "decision": decision.to_dict()}
            if op == "ping":
                return {"id": req.id, "ok": True, "pong": True}
            if op == "stats":
                return ok_response(req.id, "stats", self.server.stats_snapshot())
            if op == "get_profile":
                return ok_response(req.id, "profile", self.engine.get_profile(req.customer_id))
            if op == "put_profile":
                self.engine.put_profile(req.customer_id, req.profile)
                return ok_response(req.id)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error response
            return self.error(req.id, req.op, exc)
        return error_response(req.id, INTERNAL, f"op {op!r} has no handler")

    def start(self, req: Request, respond: Respond) -> None:
        """Run a request that waits for the store; ``respond(response)`` once it is done,
        exactly once, perhaps before this returns."""
        decide_map_then = self.decide_map_then
        if req.op == "decide" and decide_map_then is not None:
            decide_map_then(
                req.event, Decided(self, req.id, respond), limit=req.limit, explain=req.explain, dry_run=req.dry_run
            )
            return
        self.server.spawn(self.respond_later(req, respond))

    async def respond_later(self, req: Request, respond: Respond) -> None:
        respond(await self.handle(req))

    async def handle(self, req: Request) -> dict:
        """The response to ``req``, from the engine's awaited methods."""
        op = req.op
        engine = self.engine
        try:
            if op == "decide":
                decision = await engine.decide_async(
                    req.event, limit=req.limit, explain=req.explain, dry_run=req.dry_run
                )
                return {"id": req.id, "ok": True, "decision": decision.to_dict()}
            if op == "get_profile":
                return ok_response(req.id, "profile", await engine.get_profile_async(req.customer_id))
            if op == "put_profile":
                await engine.put_profile_async(req.customer_id, req.profile)
                return ok_response(req.id)
        except Exception as exc:  # noqa: BLE001
            return self.error(req.id, req.op, exc)
        return self.answer(req)

    def error(self, request_id: Any, op: str, exc: BaseException) -> dict:
        if isinstance(exc, EngineError):
            if self.limiter.allow():
                log.info("request %r (%s) refused: %s: %s", request_id, op, exc.code, exc)
            return error_response(request_id, exc.code, str(exc))
        if self.limiter.allow():
            log.error("request %r (%s) failed", request_id, op, exc_info=exc)
        return error_response(request_id, INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


class Decided:
    """The callback of ``Engine.decide_map_then``: the decision (or the error) as the
    request's response."""

    __slots__ = ("dispatcher", "request_id", "respond")

    def __init__(self, dispatcher: Dispatcher, request_id: Any, respond: Respond):
        self.dispatcher = dispatcher
        self.request_id = request_id
        self.respond = respond

    def __call__(self, decision: dict | None, error: BaseException | None) -> None:
        if error is None:
            self.respond({"id": self.request_id, "ok": True, "decision": decision})
        else:
            self.respond(self.dispatcher.error(self.request_id, "decide", error))
