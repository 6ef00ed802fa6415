"""The engine: a compiled ruleset and a store, deciding for one event at a time.

event -> check -> state read -> evaluate, rank, caps and holdouts -> decision -> state write
"""

from __future__ import annotations

import logging
import os
from asyncio import get_running_loop
from threading import get_ident
from typing import Callable, Mapping, TypeVar

from nba.dsl import load_ruleset
from nba.dsl.compiler import CompiledRuleset
from nba.engine.decision import Decision, decision_map
from nba.engine.errors import EventError, RequestError, StoreError
from nba.engine.events import DEFAULT_MAX_EVENT_AHEAD_S, event_checker, read_as
from nba.engine.procedure import Outcome, evaluate
from nba.engine.state import CustomerState, StateWrite, empty_state
from nba.engine.stats import EngineStats
from nba.engine.store import Store, StoreUnavailable
from nba.engine.turns import CustomerTurns, ThreadTurns, turns_for

T = TypeVar("T")
log = logging.getLogger("nba.engine")

MAX_ATTEMPTS = 8  # decisions retried when another process recorded a contact meanwhile
MAX_LIMIT = 100


class Engine:
    """Decides the next best action for customer events.

    >>> engine = Engine.from_path("rules/")
    >>> engine.decide({"customer_id": "c1", "type": "cart_abandoned", "cart_value": 80}).action

    The engine runs on the wall clock: an event whose time is more than
    ``max_event_ahead_s`` (default 300) after the clock is refused (``EventError`` on
    ``time``), since it would move its customer's windows. ``max_event_ahead_s=None``
    takes any time (``nba replay`` and ``nba test`` run on the events' own times).
    """

    def __init__(
        self,
        ruleset: CompiledRuleset,
        store: Store | None = None,
        path: str | None = None,
        *,
        max_event_ahead_s: float | None = DEFAULT_MAX_EVENT_AHEAD_S,
    ):
        if store is None:
            from nba.engine.store.memory import MemoryStore

            store = MemoryStore()
        self._ruleset = ruleset
        self._max_event_ahead_s = max_event_ahead_s
        self._current = (ruleset, self._checker(ruleset))  # swapped as one on reload
        self.store = store
        self.path = path
        self.stats = EngineStats()
        self.stats.store_counters = getattr(store, "counters", None)
        self._turns: dict = {}  # event loop -> CustomerTurns (engine/turns.py)
        self._last_turns: tuple = (None, None)  # (thread, CustomerTurns) of the last decide_map_then
        self._thread_turns = ThreadTurns()

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        redis_url: str | None = None,
        store: Store | None = None,
        max_event_ahead_s: float | None = DEFAULT_MAX_EVENT_AHEAD_S,
        **store_options,
    ) -> "Engine":
        """Load the ruleset at ``path`` (raises ``dsl.LoadError``) on the in-memory store,
        or on Redis when ``redis_url`` is given."""
        ruleset = load_ruleset(path)
        if store is None:
            from nba.engine.store import open_store

            store = open_store(redis_url, **store_options)
        return cls(ruleset, store, os.fspath(path), max_event_ahead_s=max_event_ahead_s)

    @property
    def ruleset(self) -> CompiledRuleset:
        return self._ruleset

    # -- deciding --

    def decide(self, event: Mapping, *, limit: int = 1, explain: bool = False, dry_run: bool = False) -> Decision:
        lock = self.store.decision_lock
        if lock is None:
            return self._decide(event, limit, explain, dry_run, _decision)
        lock.acquire()  # not `with lock`: measurably slower, and this runs for every event
        try:
            return self._decide(event, limit, explain, dry_run, _decision)
        finally:
            lock.release()

    def decide_map(self, event: Mapping, *, limit: int = 1, explain: bool = False, dry_run: bool = False) -> dict:
        """``decide(...).to_dict()``, built straight from the outcome (the socket server's path)."""
        lock = self.store.decision_lock
        if lock is None:
            return self._decide(event, limit, explain, dry_run, decision_map)
        lock.acquire()
        try:
            return self._decide(event, limit, explain, dry_run, decision_map)
        finally:
            lock.release()

    def _decide(self, event: Mapping, limit: int, explain: bool, dry_run: bool, finish: Callable[..., T]) -> T:
        """The decision, handed to ``finish(customer_id, choices, degraded, trace)``."""
        ruleset, checked = self._prepare(event, limit)
        customer_id = checked["customer_id"]
        store = self.store
        if store.decision_lock is not None:  # the in-memory store: the engine holds its lock
            return self._decide_checked(ruleset, checked, limit, explain, dry_run, finish)
        turns = self._thread_turns  # a store whose reads block: one customer's decisions take turns
        turns.take(customer_id)
        try:
            return self._decide_checked(ruleset, checked, limit, explain, dry_run, finish)
        finally:
            turns.give_back(customer_id)

    def _decide_checked(
        self,
        ruleset: CompiledRuleset,
        checked: dict,
        limit: int,
        explain: bool,
        dry_run: bool,
        finish: Callable[..., T],
    ) -> T:
        customer_id = checked["customer_id"]
        store = self.store
        needs = ruleset.needs  # what is recorded and kept
        reads = ruleset.needs_for(checked["type"])  # what this event's decision reads
        time = checked["time"]
        attempts = 0
        while True:
            try:
                state = store.read(customer_id, reads, time)
                degraded = False
            except StoreUnavailable:
                self.stats.store_read_failures += 1
                state, degraded = empty_state(), True
            outcome = evaluate(ruleset, checked, state, limit, explain, degraded)
            write = outcome.write
            if (
                dry_run
                or degraded
                or write is None
                or (  # StateWrite.is_empty, inlined
                    write.event_record is None and not write.contacts and not write.profile_set
                )
            ):
                break
            try:
                if store.commit(customer_id, needs, write):
                    break
            except StoreUnavailable:  # the write may or may not have landed: answer as degraded,
                degraded = True  # which gives no capped action (an untold contact only tightens a cap)
                self.stats.store_commit_failures += 1
                outcome = evaluate(ruleset, checked, empty_state(), limit, explain, True)
                break
            attempts += 1
            if attempts == MAX_ATTEMPTS:  # the commit's cap check never agreed with the read's
                degraded = True
                outcome = _given_up(ruleset, checked, limit, explain)
                break
        self._record(outcome, degraded)
        return finish(customer_id, outcome.choices, degraded, outcome.trace)

    async def decide_async(
        self, event: Mapping, *, limit: int = 1, explain: bool = False, dry_run: bool = False
    ) -> Decision:
        lock = self.store.decision_lock
        if lock is None:
            customer_id, outcome, degraded = await self._decide_async_in_turn(event, limit, explain, dry_run)
        else:
            with lock:  # the in-memory store: its reads and commits never suspend
                customer_id, outcome, degraded = await self._decide_async(
                    *self._prepare(event, limit), limit, explain, dry_run
                )
        return _decision(customer_id, outcome.choices, degraded, outcome.trace)

    async def _decide_async_in_turn(
        self, event: Mapping, limit: int, explain: bool, dry_run: bool
    ) -> tuple[str, Outcome, bool]:
        """``_decide_async`` once the customer's earlier decisions in this loop are done
        (engine/turns.py): on a store whose reads suspend, they would otherwise overlap."""
        ruleset, checked = self._prepare(event, limit)
        customer_id = checked["customer_id"]
        loop = get_running_loop()
        turns = turns_for(self._turns, loop)
        turn = turns.take(customer_id)
        if turn is not None:
            await turns.wait(turn, customer_id)
        try:
            return await self._decide_async(ruleset, checked, limit, explain, dry_run)
        finally:
            turns.give_back(customer_id)

    async def _decide_async(
        self, ruleset: CompiledRuleset, checked: dict, limit: int, explain: bool, dry_run: bool
    ) -> tuple[str, Outcome, bool]:
        customer_id = checked["customer_id"]
        store = self.store
        needs = ruleset.needs  # what is recorded and kept
        reads = ruleset.needs_for(checked["type"])  # what this event's decision reads
        time = checked["time"]
        steps = Attempts(self, ruleset, checked, limit, explain, dry_run)
        while True:
            try:
                state = await store.read_async(customer_id, reads, time)
            except StoreUnavailable:
                state = None
            write = steps.read(state)
            if write is None:
                break
            try:
                committed = await store.commit_async(customer_id, needs, write)
            except StoreUnavailable:
                committed = None
            if steps.committed(committed):
                break
        self._record(steps.outcome, steps.degraded)
        return customer_id, steps.outcome, steps.degraded

    def decide_map_then(
        self,
        event: Mapping,
        then: Callable[[dict | None, BaseException | None], object],
        *,
        limit: int = 1,
        explain: bool = False,
        dry_run: bool = False,
    ) -> None:
        """``decide_map`` for an event loop's caller with no task to suspend (the socket
        server): ``then(decision_map, None)`` once the decision is made, or ``then(None,
        error)`` (``EventError``, ``RequestError``, a bug), exactly once, perhaps before this
        returns. The same decision as ``decide_async``, in the same turn order, driven by
        the store's callbacks (``Store.read_then``/``commit_then``) instead of a task's awaits."""
        if self.store.decision_lock is not None:  # the in-memory store: nothing waits
            try:
                decision = self.decide_map(event, limit=limit, explain=explain, dry_run=dry_run)
            except Exception as error:  # noqa: BLE001 - the caller is told
                then(None, error)
                return
            then(decision, None)
            return
        try:
            ruleset, checked = self._prepare(event, limit)
        except Exception as error:  # noqa: BLE001
            then(None, error)
            return
        decision = DecisionThen(self, ruleset, checked, limit, explain, dry_run, then)
        decision.turns.take_then(decision.customer_id, decision.start)

    def _running_turns(self) -> CustomerTurns:
        """The running loop's ``CustomerTurns``. The last one found is taken again while its
        loop runs in this thread (then it is the running loop): asyncio's
        ``get_running_loop()`` costs a ``getpid()`` system call in Python 3.11."""
        thread, turns = self._last_turns
        if thread == get_ident() and turns.loop.is_running():
            return turns
        turns = turns_for(self._turns, get_running_loop())
        self._last_turns = (get_ident(), turns)
        return turns

    def _prepare(self, event: Mapping, limit: int) -> tuple[CompiledRuleset, dict]:
        if limit.__class__ is not int or not 1 <= limit <= MAX_LIMIT:
            raise _bad_limit(limit)
        ruleset, check = self._current  # one ruleset for the whole decision, even across a reload
        try:
            return ruleset, check(event)
        except EventError:
            self.stats.record_bad_event()
            raise

    def _record(self, outcome: Outcome, degraded: bool) -> None:
        """``EngineStats.record``, inlined: it runs for every decision."""
        stats = self.stats
        stats.decisions += 1
        choices = outcome.choices
        if choices:
            first_choices = stats.first_choices
            rule = choices[0].rule
            first_choices[rule] = first_choices.get(rule, 0) + 1
        else:
            stats.nothing_chosen += 1
        if degraded:
            stats.degraded += 1
        if outcome.passed_over or outcome.errors:
            stats.record_reasons(outcome.passed_over, outcome.errors)

    # -- profiles --

    # A store that cannot be reached is an ``unavailable`` error here (a decision is degraded instead).

    def put_profile(self, customer_id: str, profile: Mapping) -> None:
        try:
            self.store.put_profile(*self._checked_profile(customer_id, profile), self._ruleset.needs)
        except StoreUnavailable as error:
            raise _unavailable(error) from None

    def get_profile(self, customer_id: str) -> dict:
        try:
            return self.store.get_profile(_checked_customer(customer_id), self._ruleset.needs)
        except StoreUnavailable as error:
            raise _unavailable(error) from None

    async def put_profile_async(self, customer_id: str, profile: Mapping) -> None:
        try:
            await self.store.put_profile_async(*self._checked_profile(customer_id, profile), self._ruleset.needs)
        except StoreUnavailable as error:
            raise _unavailable(error) from None

    async def get_profile_async(self, customer_id: str) -> dict:
        try:
            return await self.store.get_profile_async(_checked_customer(customer_id), self._ruleset.needs)
        except StoreUnavailable as error:
            raise _unavailable(error) from None

    def _checked_profile(self, customer_id: str, profile: Mapping) -> tuple[str, dict]:
        """Declared fields read as their schema kinds, so every store holds the same values."""
        customer_id = _checked_customer(customer_id)
        if not isinstance(profile, Mapping):
            raise RequestError(f"a profile is a map of fields, not {type(profile).__name__}")
        checked = {}
        schema = self._ruleset.profile_schema
        for name, value in profile.items():
            if not isinstance(name, str) or not name:
                raise RequestError(f"profile field names are non-empty strings, not {name!r}")
            declared = schema.get(name)
            if declared is not None and value is not None:
                try:
                    value = read_as(value, declared, name)
                except EventError as exc:
                    raise RequestError(f"profile field {exc}") from None
            checked[name] = value
        return customer_id, checked

    # -- rulesets --

    def reload(self, path: str | os.PathLike | None = None) -> CompiledRuleset:
        """Load the ruleset again (or another one) and swap it in atomically.

        A ruleset that fails to load raises ``dsl.LoadError`` and the old one keeps serving.
        """
        target = os.fspath(path) if path is not None else self.path
        if target is None:
            raise RequestError("this engine was not loaded from a path; give reload() one")
        return self.use(load_ruleset(target), target)

    def use(self, ruleset: CompiledRuleset, path: str | os.PathLike | None = None) -> CompiledRuleset:
        """Swap in a ruleset loaded elsewhere (the server loads in a child process:
        ``nba.dsl.loader.load_ruleset_async``), atomically: a decision already started
        finishes on the ruleset it started with."""
        self._current = (ruleset, self._checker(ruleset))
        self._ruleset = ruleset
        if path is not None:
            self.path = os.fspath(path)
        return ruleset

    @property
    def max_event_ahead_s(self) -> float | None:
        """How far after the clock an event's time may be (None: any time)."""
        return self._max_event_ahead_s

    @max_event_ahead_s.setter
    def max_event_ahead_s(self, seconds: float | None) -> None:
        self._max_event_ahead_s = seconds
        ruleset = self._current[0]
        self._current = (ruleset, self._checker(ruleset))

    def _checker(self, ruleset: CompiledRuleset):
        return event_checker(ruleset.event_schemas, max_ahead_s=self._max_event_ahead_s)

    def close(self) -> None:
        self.store.close()

    async def close_async(self) -> None:
        await self.store.close_async()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Attempts:
    """One decision on a store whose reads and commits wait, without its I/O: evaluate on
    each state read, say what to commit, and read again while the commit's cap check
    disagrees with the read's (another process recorded a contact meanwhile), at most
    ``MAX_ATTEMPTS`` times. ``decide_async`` drives it with awaits, ``decide_map_then``
    with callbacks."""

    __slots__ = ("engine", "ruleset", "checked", "limit", "explain", "dry_run", "attempts", "outcome", "degraded")

    def __init__(
        self, engine: Engine, ruleset: CompiledRuleset, checked: dict, limit: int, explain: bool, dry_run: bool
    ):
        self.engine = engine
        self.ruleset = ruleset
        self.checked = checked
        self.limit = limit
        self.explain = explain
        self.dry_run = dry_run
        self.attempts = 0
        self.outcome: Outcome | None = None
        self.degraded = False

    def read(self, state: CustomerState | None) -> StateWrite | None:
        """The state read (None: the store was unavailable, the decision is degraded): the
        write to commit next, or None when the decision is made."""
        degraded = state is None
        if degraded:
            self.engine.stats.store_read_failures += 1
            state = empty_state()
        outcome = evaluate(self.ruleset, self.checked, state, self.limit, self.explain, degraded)
        self.outcome = outcome
        self.degraded = degraded
        write = outcome.write
        if self.dry_run or degraded or write is None or write.is_empty:
            return None
        return write

    def committed(self, committed: object) -> bool:
        """The commit's result (None: the store was unavailable): whether the decision is
        made (else read again)."""
        if committed is None:  # the write may or may not have landed: answer as degraded,
            self.degraded = True  # which gives no capped action (an untold contact only tightens a cap)
            self.engine.stats.store_commit_failures += 1
            self.outcome = evaluate(self.ruleset, self.checked, empty_state(), self.limit, self.explain, True)
            return True
        if committed:
            return True
        self.attempts += 1
        if self.attempts == MAX_ATTEMPTS:  # the commit's cap check never agreed with the read's
            self.degraded = True
            self.outcome = _given_up(self.ruleset, self.checked, self.limit, self.explain)
            return True
        return False


class DecisionThen(Attempts):
    """``Attempts`` driven by the store's callbacks, for ``Engine.decide_map_then``: the
    customer's turn taken, read, commit, (read again), then the decision's map handed to
    ``then`` and the turn given back."""

    __slots__ = ("customer_id", "then", "turns", "told", "store")

    def __init__(
        self,
        engine: Engine,
        ruleset: CompiledRuleset,
        checked: dict,
        limit: int,
        explain: bool,
        dry_run: bool,
        then: Callable[[dict | None, BaseException | None], object],
    ):
        Attempts.__init__(self, engine, ruleset, checked, limit, explain, dry_run)
        self.customer_id = checked["customer_id"]
        self.then = then
        self.turns = engine._running_turns()
        self.told = False  # then was called: an exception now is the caller's own, not the decision's
        self.store = engine.store

    def start(self) -> None:
        """The customer's turn: read."""
        checked = self.checked
        try:
            self.store.read_then(
                self.customer_id, self.ruleset.needs_for(checked["type"]), checked["time"], self.on_read
            )
        except Exception as failure:  # a store that raises instead of calling back (or then, re-raised)
            if self.told:
                raise
            self.fail(failure)

    def on_read(self, state: CustomerState | None, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, StoreUnavailable):
            self.fail(error)
            return
        try:
            write = self.read(state)
        except Exception as failure:  # noqa: BLE001 - a bug: the caller is told
            self.fail(failure)
            return
        if write is None:
            self.succeed()
            return
        try:
            self.store.commit_then(self.customer_id, self.ruleset.needs, write, self.on_commit)
        except Exception as failure:  # a store that raises instead of calling back (or then, re-raised)
            if self.told:
                raise
            self.fail(failure)

    def on_commit(self, committed: bool | None, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, StoreUnavailable):
            self.fail(error)
            return
        try:
            made = self.committed(committed)
        except Exception as failure:  # noqa: BLE001
            self.fail(failure)
            return
        if made:
            self.succeed()
        else:
            self.start()

    def succeed(self) -> None:
        engine = self.engine
        outcome = self.outcome
        try:
            engine._record(outcome, self.degraded)
            result = decision_map(self.customer_id, outcome.choices, self.degraded, outcome.trace)
        except Exception as failure:  # noqa: BLE001
            self.fail(failure)
            return
        self.told = True
        self.turns.give_back(self.customer_id)
        self.then(result, None)

    def fail(self, error: BaseException) -> None:
        self.told = True
        self.turns.give_back(self.customer_id)
        self.then(None, error)


def _decision(customer_id: str, choices: list, degraded: bool, trace: list | None) -> Decision:
    return Decision(customer_id, tuple(choices), degraded, tuple(trace) if trace is not None else None)


def _bad_limit(limit) -> RequestError:
    return RequestError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")


def _unavailable(error: StoreUnavailable) -> StoreError:
    return StoreError(f"the state store is unavailable: {error}")


def _given_up(ruleset: CompiledRuleset, checked: dict, limit: int, explain: bool) -> Outcome:
    """The degraded decision, after ``MAX_ATTEMPTS`` commits refused by their cap checks
    (contacts recorded meanwhile by other processes each time, or contacts another service
    wrote whose times the read and the commit see differently): no capped action is given."""
    log.warning(
        "customer %r: the state kept changing under %d attempts to decide; deciding degraded",
        checked["customer_id"],
        MAX_ATTEMPTS,
    )
    return evaluate(ruleset, checked, empty_state(), limit, explain, True)


def _checked_customer(customer_id) -> str:
    if customer_id.__class__ is not str or not customer_id:
        raise RequestError(f"customer_id must be a non-empty string, not {customer_id!r}")
    return customer_id
