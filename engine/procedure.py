"""Steps 2 to 6 of DSL.md's decision, without I/O: state in, decision and state write out.

evaluate -> rank -> holdouts, caps, policies, same action, limit -> default -> what to record.
The engine reads the state before and commits the write after; this module never
touches a store, so the in-memory and Redis paths share every line of it.
"""

from __future__ import annotations

from itertools import chain

from nba.dsl.compiler import CompiledRule, CompiledRuleset
from nba.dsl.twins import runtime as _runtime
from nba.engine.decision import Choice, TraceEntry
from nba.engine.events import read_as
from nba.engine.explain import annotate
from nba.engine.holdout import in_holdout
from nba.engine.state import NEVER_TRIMMED, CapCheck, Contact, CustomerState, StateWrite

EvalContext = _runtime.EvalContext
new_context = _runtime.new_context
EvalError = _runtime.EvalError
kind_article = _runtime.kind_article

# Reasons a candidate is passed over (the trace and the stats use these words).
HOLDOUT = "holdout"
CAP = "cap"
SAME_ACTION = "same_action"
DEGRADED = "degraded"  # a degraded decision cannot check a cap or a policy (DSL.md "The decision")


class Outcome:
    """What one decision chose and what it records (a C struct in the Cython twin)."""

    __slots__ = ("choices", "write", "passed_over", "errors", "trace")

    def __init__(
        self,
        choices: list[Choice],
        write: StateWrite | None,  # None: nothing to record
        passed_over: list[tuple[str, str]],  # (rule id, reason)
        errors: list[tuple[str, str]],  # (rule id, message)
        trace: list[TraceEntry] | None,
    ):
        self.choices = choices
        self.write = write
        self.passed_over = passed_over
        self.errors = errors
        self.trace = trace

    def __repr__(self) -> str:
        return (
            f"Outcome(choices={self.choices!r}, write={self.write!r}, passed_over={self.passed_over!r}, "
            f"errors={self.errors!r}, trace={self.trace!r})"
        )


def error_message(exc: BaseException) -> str:
    if isinstance(exc, EvalError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def evaluate(
    ruleset: CompiledRuleset,
    event: dict,
    state: CustomerState,
    limit: int = 1,
    explain: bool = False,
    degraded: bool = False,
) -> Outcome:
    """The decision for ``event`` on ``state``. ``degraded``: the state could not be read
    (``state`` is empty); every rule with a cap or under a policy is passed over and
    nothing is to be recorded (``write`` is None)."""
    t = event["time"]
    event_type = event["type"]
    rules = ruleset.rules

    # 2-3. candidates in ranking order: priority, highest first; ties in declaration order
    bucket = ruleset.buckets.get(event_type) or ruleset.buckets[None]
    raised: list = []  # (rule index, exception) for every rule that failed
    computed = None  # priorities computed at decision time (buckets that are not ranked)
    starter = bucket.starter
    if starter is not None:  # the Cython matcher makes the context as it starts
        candidates = starter(event, state.profile, t, event_type, state.history, raised)
        context = candidates.context
    else:
        context = new_context(event, state.profile, t, event_type, state.history)
        matcher = bucket.only_matcher
        if matcher is not None:
            candidates = matcher(context, raised)
        elif not bucket.ranked:
            candidates, computed = rank_matches(bucket, rules, context, raised)
        else:
            candidates = chained(bucket.matchers, context, raised)

    # 4. down the ranking: holdouts, caps, policies, same action, limit
    chosen: list[Choice] = []
    chosen_rules: list[CompiledRule] = []
    passed_over: list[tuple[str, str]] = []
    # for the trace: what happened to each candidate, and its priority
    outcomes: dict[int, tuple[str, str | None, str | None]] | None = {} if explain else None
    priorities: dict[int, float] | None = {} if explain else None
    for index in candidates:
        rule = rules[index]
        if explain:
            priorities[index] = rule.priority if computed is None else computed[index]
        if len(chosen) >= limit:
            if not explain:
                break  # a ranked bucket stops testing rules here
            outcomes[index] = ("not_reached", None, None)
            continue
        if rule.guarded or chosen:
            reason = pass_over_reason(rule, event["customer_id"], t, state, chosen, chosen_rules, degraded)
            if reason is not None:
                passed_over.append((rule.id, reason))
                if explain:
                    outcomes[index] = ("passed_over", reason, None)
                continue
        try:
            params = rule.params_fn(context) if rule.params_fn is not None else dict(rule.params)
        except Exception as exc:  # noqa: BLE001 - a rule's error never stops the decision
            raised.append((index, exc))
            if explain:
                outcomes[index] = ("error", None, error_message(exc))
            continue
        chosen.append(Choice(rule.id, rule.action, rule.channel, params))
        chosen_rules.append(rule)
        if explain:
            outcomes[index] = ("chosen", None, None)
        elif len(chosen) >= limit:
            break  # DSL.md: the ranking stops once `limit` actions are chosen; no rule after is tested
    errors = [(rules[index].id, error_message(exc)) for index, exc in raised] if raised else []

    # 5. the default, when nothing else was chosen (never recorded)
    default_error = None
    if degraded:
        write = None  # nothing of a degraded decision is recorded
    elif chosen or event_type in ruleset.recorded_types:
        write = state_write(ruleset, event, context, chosen, chosen_rules)
    else:
        write = None
    if not chosen and ruleset.default is not None:
        default = ruleset.default
        try:
            params = default.params_fn(context) if default.params_fn is not None else dict(default.params)
            chosen = [Choice("default", default.action, default.channel, params)]
        except Exception as exc:  # noqa: BLE001
            default_error = error_message(exc)
            errors.append(("default", default_error))

    trace = None
    if explain:
        trace = build_trace(ruleset, bucket.rules, t, outcomes, priorities, raised, chosen, default_error)
        annotate(trace, ruleset, context, state.contacts, event, count_contacts)
    return new_outcome(chosen, write, passed_over, errors, trace)


def new_outcome(choices: list, write, passed_over: list, errors: list, trace) -> Outcome:
    """``Outcome(...)``, made without a generic call in the Cython twin."""
    outcome = Outcome.__new__(Outcome)
    outcome.choices = choices
    outcome.write = write
    outcome.passed_over = passed_over
    outcome.errors = errors
    outcome.trace = trace
    return outcome


def chained(matchers, context, raised: list):
    """The matches of several matchers, one after the other."""
    return chain.from_iterable([matcher(context, raised) for matcher in matchers])


def rank_matches(bucket, rules: list[CompiledRule], context, raised: list) -> tuple[list[int], dict]:
    """Every matching rule in ranking order, and the priorities computed for them."""
    matched: list[int] = []
    for matcher in bucket.matchers:
        matched += matcher(context, raised)
    ranked = []
    for index in matched:
        rule = rules[index]
        priority = rule.priority
        if rule.priority_fn is not None:
            try:
                priority = rule.priority_fn(context)
            except Exception as exc:  # noqa: BLE001 - a rule's error never stops the decision
                raised.append((index, exc))
                continue
        if priority is None or priority.__class__ not in (int, float):
            raised.append((index, EvalError(priority_error(priority))))
            continue
        ranked.append((-priority, index))
    ranked.sort()
    return [index for _negative, index in ranked], {index: -negative for negative, index in ranked}


def priority_error(priority) -> str:
    if priority is None:
        return "`priority` must be a number, but it is null"
    return f"`priority` must be a number, but it is {kind_article(priority)} ({priority!r})"


def pass_over_reason(
    rule: CompiledRule,
    customer_id: str,
    t: float,
    state: CustomerState,
    chosen: list[Choice],
    chosen_rules: list[CompiledRule],
    degraded: bool = False,
) -> str | None:
    if rule.holdout and in_holdout(rule.id, customer_id, rule.holdout):
        return HOLDOUT
    if degraded and (rule.cap is not None or rule.policies):
        return DEGRADED
    contacts = state.contacts
    kept_from: float = state.kept_from  # a window starting before it may miss a trimmed contact
    trimmed = kept_from != NEVER_TRIMMED  # (a C comparison in the Cython twin; rarely true)
    if rule.cap is not None:
        cap_limit, window = rule.cap
        if count_contacts(contacts, t, window, rule=rule.id) + 1 > cap_limit or (trimmed and t - window < kept_from):
            return CAP
    for policy in rule.policies:
        if trimmed and t - policy.window < kept_from:
            return policy.label
        already = sum(1 for c in chosen_rules if policy.channel is None or c.channel == policy.channel)
        if count_contacts(contacts, t, policy.window, channel=policy.channel) + already + 1 > policy.limit:
            return policy.label
    for choice in chosen:
        if choice.action == rule.action:
            return SAME_ACTION
    return None


def count_contacts(
    contacts: list[Contact], t: float, window: float, rule: str | None = None, channel: str | None = None
) -> int:
    """Contacts in ``(t - window, t + window)``, of one rule or one channel (neither: all).

    The window reaches past ``t``: a contact recorded for a later event that was decided
    first counts too, so a cap holds whatever order events arrive in (DSL.md, `cap`).
    """
    start: float = t - window
    stop: float = t + window
    total = 0
    when: float  # a C double in the Cython twin: int times compare with no float objects made
    for contact in reversed(contacts):  # sorted by time: the newest are last
        when = contact.time
        if when <= start:
            break
        if when >= stop:
            continue
        if rule is not None and contact.rule != rule:
            continue
        if channel is not None and contact.channel != channel:
            continue
        total += 1
    return total


def state_write(
    ruleset: CompiledRuleset,
    event: dict,
    context: EvalContext,
    recorded: list[Choice],
    recorded_rules: list[CompiledRule],
) -> StateWrite | None:
    """6. What the decision records: contacts (with their cap checks), history, `on` updates.

    None when there is nothing to record (no store round trip is needed).
    """
    event_type = event["type"]
    need = ruleset.needs.history.get(event_type)
    blocks = ruleset.on_updates.get(event_type)
    if not recorded and need is None and blocks is None:
        return None
    t = event["time"]
    contacts = [Contact(t, c.rule, c.action, c.channel) for c in recorded]
    checks: list[CapCheck] = []
    for rule in recorded_rules:
        if rule.cap is not None:
            checks.append(CapCheck("rule", rule.id, rule.cap[0], rule.cap[1]))
        for policy in rule.policies:
            if policy.channel is None:
                check = CapCheck("all", None, policy.limit, policy.window)
            else:
                check = CapCheck("channel", policy.channel, policy.limit, policy.window)
            if check not in checks:
                checks.append(check)
    record = None if need is None else {name: event.get(name) for name in need.fields}
    updates = profile_updates(ruleset, blocks, context) if blocks is not None else {}
    return StateWrite(t, event_type, record, contacts, checks, updates)


def profile_updates(ruleset: CompiledRuleset, blocks: tuple, context: EvalContext) -> dict:
    """Every `set` sees the profile as it was before the event; a later `set` wins.

    A value is read through the profile schema as ``put_profile`` reads it (``"150"`` into
    a number field is 150); one that cannot be read as its field's kind fails its `set`.
    """
    updates: dict = {}
    schema = ruleset.profile_schema
    for block in blocks:
        if block.condition is not None:
            try:
                if not block.condition(context):
                    continue
            except Exception:  # noqa: BLE001 - a failing `on ... when` skips its block
                continue
        for name, value_fn in block.sets:
            try:
                value = value_fn(context)
                declared = schema.get(name)
                updates[name] = value if value is None or declared is None else read_as(value, declared, name)
            except Exception:  # noqa: BLE001 - a failing `set` leaves its field unchanged
                continue
    return updates


def build_trace(
    ruleset: CompiledRuleset,
    considered: tuple[int, ...],
    t: float,
    outcomes: dict[int, tuple[str, str | None, str | None]],
    priorities: dict[int, float],
    raised: list,
    chosen: list[Choice],
    default_error: str | None,
) -> list[TraceEntry]:
    """Every rule considered: candidates in ranking order, then the others in declaration order."""
    rules = ruleset.rules
    errors = {index: error_message(exc) for index, exc in raised}
    entries = []
    for index in sorted(priorities, key=lambda i: (-priorities[i], i)):
        outcome, reason, error = outcomes.get(index, ("not_reached", None, None))
        entries.append(TraceEntry(rules[index].id, outcome, True, priorities[index], reason, error))
    for index in considered:
        if index in priorities:
            continue
        rule = rules[index]
        if index in errors:
            entries.append(TraceEntry(rule.id, "error", False, None, None, errors[index]))
        elif not (rule.active_from <= t < rule.active_to):
            entries.append(TraceEntry(rule.id, "inactive", False))
        else:
            entries.append(TraceEntry(rule.id, "not_matched", False))
    if chosen and chosen[0].rule == "default":
        entries.append(TraceEntry("default", "chosen", False))
    elif default_error is not None:
        entries.append(TraceEntry("default", "error", False, None, None, default_error))
    return entries
