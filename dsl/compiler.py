"""Checked ruleset -> compiled ruleset: Python functions, an index by event type, and state needs.

The index: each rule's ``when`` is analysed for ``event.type == "x"`` / ``event.type in
[...]`` tests (``checker.event_types_of``); a rule restricted to some types sits only in
those types' buckets, a rule without such a test sits in every bucket. Each bucket gets
generated match functions that test its rules in declaration order, with ``event.type``
folded to the bucket's type, so an event pays only for the rules that can match it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from nba.dsl import nodes as n
from nba.dsl.checker import CheckedRuleset, walk
from nba.dsl.codegen import (
    CONTEXT_LOCALS,
    ExprGen,
    ModuleBuilder,
    compile_functions,
    literal_source,
    run_code,
    runtime_namespace,
)
from nba.dsl.explain import Explainers
from nba.dsl.folding import fold
from nba.dsl.matchplan import PAST, BucketPlan, PlanBuilder, resolve, where_plan
from nba.dsl.needs import HistoryNeed, StateNeeds, read_needs
from nba.dsl.twins import matchvm

# State is kept this much longer than the longest window that reads it, so that an event
# arriving up to this late (decided at a time older than the newest seen) still finds every
# past event and contact its windows hold. Later than that, what is older was trimmed.
LATE_EVENTS_S = 300.0
RULES_PER_MATCHER = 200  # rules per generated match function (keeps each function small)
ANY_TYPE = None  # the bucket for event types no rule names
_PICKED = object()  # Compiler's default matcher: the one dsl.twins picked


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int  # declaration order
    id: str
    title: str | None
    pos: n.Position
    action: str
    channel: str | None
    priority: float | None  # a constant priority, or None when ``priority_fn`` computes it
    priority_fn: Callable | None
    params: dict | None  # constant parameters, or None when ``params_fn`` computes them
    params_fn: Callable | None
    cap: tuple[int, float] | None  # (limit, window seconds)
    holdout: float  # percent
    active_from: float
    active_to: float
    event_types: frozenset[str] | None
    policies: tuple  # the CompiledPolicy objects that count this rule's action (its channel's and `all`)
    guarded: bool  # a holdout, a cap or a policy can pass this rule over


@dataclass(frozen=True, slots=True)
class Bucket:
    """The rules an event type can match, and the generated functions that test them.

    When every rule of the bucket has a constant priority (the usual case), the bucket is
    ``ranked``: its matchers are generators that test the rules in ranking order and yield
    each match as they go, so a decision stops testing once it has chosen ``limit``
    actions. Otherwise each matcher tests all its rules and returns the matches, which the
    decision then ranks by their computed priorities.
    """

    rules: tuple[int, ...]  # rule indexes in declaration order
    matchers: tuple[Callable, ...]  # each: (context, errors) -> matched rule indexes
    ranked: bool
    # the one matcher of a ranked bucket that has one (the usual case), else None
    only_matcher: Callable | None = field(init=False)
    # that matcher's ``start(event, profile, now, event_type, history, errors)`` when it makes
    # the decision's context itself (the Cython matcher: the matches it gives hold the context
    # as ``context``), else None
    starter: Callable | None = field(init=False)

    def __post_init__(self) -> None:
        only = self.matchers[0] if self.ranked and len(self.matchers) == 1 else None
        object.__setattr__(self, "only_matcher", only)
        object.__setattr__(self, "starter", getattr(only, "start", None))


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    channel: str | None  # None: every channel (`policy all`)
    limit: int
    window: float
    label: str  # "policy email: cap 2 per 7d"


@dataclass(frozen=True, slots=True)
class CompiledUpdate:
    """One `on` block: an optional condition and its `set`s, each evaluated on its own."""

    condition: Callable | None
    sets: tuple[tuple[str, Callable], ...]


@dataclass(frozen=True, slots=True)
class CompiledDefault:
    action: str
    channel: str | None
    params: dict | None
    params_fn: Callable | None


@dataclass
class CompiledRuleset:
    rules: list[CompiledRule]
    buckets: dict[str | None, Bucket]
    policies: list[CompiledPolicy]
    on_updates: dict[str, tuple[CompiledUpdate, ...]]
    default: CompiledDefault | None
    needs: StateNeeds
    event_schemas: dict[str, dict[str, str]]
    profile_schema: dict[str, str]
    python_source: str = ""
    paths: list[str] = field(default_factory=list)
    # event type -> what its decision reads (dsl/needs.py); None: every other type
    read_needs: dict[str | None, StateNeeds] = field(default_factory=dict)
    # rule index -> its RuleExplainer (dsl/explain.py), made on first use; None when the
    # ruleset was not compiled from a checked tree
    explainer: Callable | None = field(default=None, repr=False, compare=False)
    # the event types whose decisions record something even when no action is chosen
    recorded_types: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.recorded_types = frozenset(self.needs.history) | frozenset(self.on_updates)

    def bucket(self, event_type: str) -> Bucket:
        found = self.buckets.get(event_type)
        return found if found is not None else self.buckets[ANY_TYPE]

    def needs_for(self, event_type: str) -> StateNeeds:
        """What a decision for ``event_type`` reads of the customer's state (never more
        than ``needs``, which is what is recorded and kept)."""
        found = self.read_needs.get(event_type)
        if found is None:
            found = self.read_needs.get(ANY_TYPE, self.needs)
        return found

    def rule(self, rule_id: str) -> CompiledRule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None


@dataclass
class RulesetRecipe:
    """A compiled ruleset as plain data: the generated functions' source and, for each part
    of the ruleset, the names of the functions it calls. ``link`` makes the ruleset from it
    and the functions' code; it pickles, so a child process can make it (dsl/isolated.py)."""

    functions: list[str]  # the generated functions' sources
    constants: dict[str, object]  # plain values the functions read
    programs: dict[str, BucketPlan]  # Cython row filters: constant name -> plan
    vm_functions: dict[str, str]  # constant name -> the Cython matcher's function
    # (index, id, title, (path, line, column), action, channel, priority, priority_fn,
    #  params, params_fn, cap, holdout, active_from, active_to, event_types)
    rules: list[tuple]
    policies: list[CompiledPolicy]
    buckets: dict[str | None, tuple]  # type -> (rule indexes, matcher names or plan, ranked)
    on_updates: dict[str, list]  # type -> [(condition name or None, [(field, function name)])]
    default: tuple | None  # (action, channel, params, params function name)
    needs: StateNeeds
    read_needs: dict[str | None, StateNeeds]
    event_schemas: dict[str, dict[str, str]]
    profile_schema: dict[str, str]
    uses_vm: bool  # plans for the Cython matcher (else generated Python matchers)
    # the compiler (with the checked ruleset), for the explanations it makes on first use
    # (nba.dsl.explain); None in a recipe made by a child process (dsl/isolated.py)
    compiler: object = field(default=None, repr=False, compare=False)


class Compiler:
    def __init__(self, checked: CheckedRuleset, matcher_vm=_PICKED):
        """``matcher_vm``: the Cython matcher module (dsl._matchvm), None for generated
        Python matchers; by default the one dsl.twins picked."""
        self.checked = checked
        self.matcher_vm = matchvm if matcher_vm is _PICKED else matcher_vm
        self.module = ModuleBuilder()
        self.history_fields: dict[str, set[str]] = {}
        self.history_windows: dict[str, float] = {}
        self._aggregate_ids = 0
        self.row_filters: dict[str, str] = {}  # repr of a `where` plan -> its program's name
        self.folded_segments: dict[str, n.Expr] | None = None  # for the Cython matcher's plans

    # -- entry --

    def compile(self, filename: str = "<rules>") -> CompiledRuleset:
        recipe = self.recipe()
        ruleset = link(recipe, compile_functions(recipe.functions, filename), self.matcher_vm)
        self.module.functions.clear()  # compiled; the source stays in `python_source`
        return ruleset

    def recipe(self) -> RulesetRecipe:
        checked = self.checked
        self.declare_segments()
        rule_parts = [self.rule_parts(index, rule) for index, rule in enumerate(checked.rules)]
        self.constant_priorities = {parts[0]: parts[2] for parts in rule_parts}
        bucket_plan = self.plan_buckets()
        matcher_names = {key: self.matchers(key, indexes) for key, indexes in bucket_plan.items()}
        update_parts = self.update_parts()
        default_part = self.default_part()

        self.policies = [
            CompiledPolicy(p.channel, p.limit, p.window, f"{p.label}: cap {p.limit} per {format_duration(p.window)}")
            for p in checked.policies
        ]
        contact_window = max(
            [p.window for p in checked.policies] + [r.cap.window for r in checked.rules if r.cap], default=0.0
        )
        needs = StateNeeds(
            history={
                t: HistoryNeed(tuple(sorted(self.history_fields.get(t, ()))), float(w), LATE_EVENTS_S)
                for t, w in sorted(self.history_windows.items())
            },
            contact_window=float(contact_window),
            profile_schema=dict(checked.profile_schema),
            contact_keep=2 * (float(contact_window) + LATE_EVENTS_S) if contact_window else 0.0,
        )
        module = self.module
        return RulesetRecipe(
            functions=module.functions,
            constants=module.constants,
            programs=module.programs,
            vm_functions=module.vm_functions,
            rules=[self.rule_spec(*parts) for parts in rule_parts],
            policies=self.policies,
            buckets={
                key: (tuple(bucket_plan[key]), spec, self.is_ranked(bucket_plan[key]))
                for key, spec in matcher_names.items()
            },
            on_updates=update_parts,
            default=default_part,
            needs=needs,
            read_needs=read_needs(checked, bucket_plan, needs, LATE_EVENTS_S),
            event_schemas=checked.event_schemas,
            profile_schema=checked.profile_schema,
            uses_vm=self.matcher_vm is not None,
            compiler=self,
        )

    # -- segments --

    def declare_segments(self) -> None:
        for name in self.checked.segments:
            self.module.segment_functions[name] = f"_seg_{name}"
        for name, segment in self.checked.segments.items():
            gen = self.gen()
            test = gen.cond(fold(segment.condition), "a segment")
            self.module.add_function(
                f"def _seg_{name}(context):\n"
                f"    segments = context.segments\n"
                f"    held = segments.get({name!r})\n"
                f"    if held is None:\n"
                f"        {CONTEXT_LOCALS}\n"
                f"{gen.prologue('        ')}"
                f"        held = {test}\n"
                f"        segments[{name!r}] = held\n"
                f"    return held"
            )

    # -- aggregates --

    def gen(self, past: dict[str, str] | None = None) -> ExprGen:
        return ExprGen(self.module, self.aggregate_function, past)

    def aggregate_function(self, agg: n.Aggregate) -> str:
        """The name of a generated function computing ``agg`` once per decision."""
        fields = {agg.path[0]} if agg.path else set()
        if agg.where is not None:
            for node in walk(agg.where):
                if isinstance(node, n.Field) and node.root == "past" and node.path:
                    fields.add(node.path[0])
        stored = sorted(f for f in fields if f not in ("time", "type"))
        self.history_fields.setdefault(agg.event_type, set()).update(stored)
        self.history_windows[agg.event_type] = max(self.history_windows.get(agg.event_type, 0), agg.window)

        past = {f: f"_p_{f}" for f in fields}
        past["type"] = repr(agg.event_type)
        body = self.aggregate_body(agg, stored, past)
        name = self.module.aggregate_functions.get(body)
        if name is None:
            name = f"_agg{self._aggregate_ids}"
            self._aggregate_ids += 1
            self.module.aggregate_functions[body] = name
            self.module.add_function(body.replace("__AGG__", name))
        return name

    def aggregate_body(self, agg: n.Aggregate, stored: list[str], past: dict[str, str]) -> str:
        gen = self.gen(past)
        where = gen.cond(agg.where, "`where`") if agg.where is not None else "True"
        value = None
        if agg.path:
            value = past[agg.path[0]]
            for name in agg.path[1:]:
                value = f"_get({value}, {name!r})"
        init, step, result = AGGREGATORS[agg.func]
        step = step.replace("VALUE", value or "None")
        uses_time = "_p_time" in where or (agg.path[:1] == ("time",))
        loop_vars = (["_p_time"] if uses_time else []) + [past[f] for f in stored]
        loop_sources = (["times[lo:hi]"] if uses_time else []) + [f"_col(columns, {f!r}, times)[lo:hi]" for f in stored]
        current = "".join(f"        {past[f]} = event.get({f!r})\n" for f in stored)
        if uses_time:
            current += "        _p_time = now\n"
        key = agg.event_type
        row_filter = self.row_filter(agg.where)
        lines = [
            "def __AGG__(context):",
            "    computed = context.aggregates",
            "    if __AGG__ in computed:",
            "        return computed[__AGG__]",
            f"    {CONTEXT_LOCALS}",
            gen.prologue().rstrip("\n"),
            f"    {init}",
        ]
        lines = [line for line in lines if line]
        if agg.func == "since":
            lines += [
                f"    if context.event_type == {key!r}:",
                current.rstrip("\n") or "        pass",
                f"        if {where}:",
                "            best = now",
                "    if best is None:",
                f"        history = context.history.get({key!r})",
                "        if history is not None:",
                "            times = history.times; columns = history.columns",
                f"            lo = _bisect_right(times, now - {literal_source(float(agg.window), self.module)}); hi = _bisect_right(times, now)",
            ]
            if row_filter is not None:
                lines += [
                    f"            i = _last_row({row_filter}, lo, hi)",
                    "            if i >= 0:",
                    "                best = times[i]",
                ]
            else:
                lines += [f"            _c_{f} = _col(columns, {f!r}, times)" for f in stored]
                lines += [
                    "            for i in range(hi - 1, lo - 1, -1):",
                    "                _p_time = times[i]",
                ]
                lines += [f"                {past[f]} = _c_{f}[i]" for f in stored]
                lines += [
                    f"                if {where}:",
                    "                    best = _p_time",
                    "                    break",
                ]
        else:
            lines += [
                f"    history = context.history.get({key!r})",
                "    if history is not None:",
                "        times = history.times; columns = history.columns",
                f"        lo = _bisect_right(times, now - {literal_source(float(agg.window), self.module)}); hi = _bisect_right(times, now)",
            ]
            if agg.func == "count" and agg.where is None:
                lines.append("        count += hi - lo")
            elif row_filter is not None and agg.func == "count":
                lines.append(f"        count += _count_rows({row_filter}, lo, hi)")
            elif row_filter is not None and len(agg.path) == 1 and agg.func in ROW_KERNELS:
                head = agg.path[0]
                values = column_source(head)
                lines.append("        " + ROW_KERNELS[agg.func].format(args=f"{row_filter}, lo, hi, {values}"))
            elif row_filter is not None and agg.path:
                head = agg.path[0]
                values = column_source(head)
                lines += [
                    f"        for {past[head]} in _select_rows({row_filter}, lo, hi, {values}):",
                    f"            {step}",
                ]
            elif loop_vars:
                target = ", ".join(loop_vars)
                sources = loop_sources[0] if len(loop_sources) == 1 else "zip(" + ", ".join(loop_sources) + ")"
                lines += [f"        for {target} in {sources}:", f"            if {where}:", f"                {step}"]
            else:
                lines += ["        for _ in range(lo, hi):", f"            if {where}:", f"                {step}"]
            lines += [
                f"    if context.event_type == {key!r}:",
                current.rstrip("\n") or "        pass",
                f"        if {where}:",
                f"            {step}",
            ]
        lines += [f"    result = {result}", "    computed[__AGG__] = result", "    return result"]
        return "\n".join(lines)

    def row_filter(self, where: n.Expr | None) -> str | None:
        """The arguments that hand an aggregate's `where` to the Cython row filter (its
        program, then its columns), or None: no `where`, no Cython matcher, or a `where`
        that needs Python (the generated loop tests it then)."""
        if where is None or self.matcher_vm is None:
            return None
        plan = where_plan(where)
        if plan is None:
            return None
        for name in ("count_rows", "select_rows", "last_row", "sum_rows", "min_rows", "max_rows", "distinct_rows"):
            self.module.vm_functions["_" + name] = name
        key = repr(plan)
        program = self.row_filters.get(key)
        if program is None:
            program = self.row_filters[key] = f"_RF{len(self.row_filters)}"
            self.module.programs[program] = plan
        columns = ", ".join(
            column_source(name) if root == PAST else decision_value_source(name) for root, name in plan.slots
        )
        return f"{program}, [{columns}]"

    # -- rules --

    def rule_parts(self, index: int, rule: n.Rule):
        gen = self.gen()
        priority_fn = None
        priority = 0
        if rule.priority is not None:
            folded = fold(rule.priority)
            if (
                isinstance(folded, n.Literal)
                and (folded.value is None or isinstance(folded.value, (int, float)))
                and not isinstance(folded.value, bool)
            ):
                priority = folded.value
            else:
                priority = None
                priority_fn = f"_prio_{index}"
                self.expression_function(priority_fn, gen, f"_rank({gen.value(folded)})")
        params, params_fn = self.params_part(rule.then, f"_params_{index}")
        return index, rule, priority, priority_fn, params, params_fn

    def params_part(self, spec: n.ActionSpec, name: str):
        folded = [(key, fold(expr)) for key, expr, _pos in spec.params]
        if all(isinstance(expr, n.Literal) for _key, expr in folded):
            return {key: expr.value for key, expr in folded}, None
        gen = self.gen()
        items = ", ".join(f"{key!r}: {gen.value(expr)}" for key, expr in folded)
        self.expression_function(name, gen, f"{{{items}}}")
        return None, name

    def expression_function(self, name: str, gen: ExprGen, expression: str) -> None:
        """``def name(context): return expression``, with the fields it reads loaded first."""
        self.module.add_function(f"def {name}(context):\n    {CONTEXT_LOCALS}\n{gen.prologue()}    return {expression}")

    def rule_spec(self, index, rule: n.Rule, priority, priority_fn, params, params_fn) -> tuple:
        """A rule of ``RulesetRecipe.rules`` (``link`` makes its CompiledRule)."""
        return (
            index,
            rule.id,
            rule.title,
            (rule.pos.path, rule.pos.line, rule.pos.column),
            rule.then.action,
            rule.then.channel,
            priority,
            priority_fn,
            params,
            params_fn,
            (rule.cap.limit, float(rule.cap.window)) if rule.cap else None,
            rule.holdout or 0.0,
            rule.active_from if rule.active_from is not None else -math.inf,
            rule.active_to if rule.active_to is not None else math.inf,
            self.checked.rule_event_types.get(rule.id),
        )

    def plan_buckets(self) -> dict[str | None, list[int]]:
        types: set[str] = set()
        for rule in self.checked.rules:
            types.update(self.checked.rule_event_types.get(rule.id) or ())
        plan: dict[str | None, list[int]] = {t: [] for t in sorted(types)}
        plan[ANY_TYPE] = []
        every = list(plan.values())
        for index, rule in enumerate(self.checked.rules):  # in declaration order, so each list is
            rule_types = self.checked.rule_event_types.get(rule.id)
            if rule_types is None:
                for indexes in every:
                    indexes.append(index)
            else:  # only its own types' buckets (was a test of every bucket: rules x types)
                for key in rule_types:
                    plan[key].append(index)
        return plan

    def is_ranked(self, indexes: list[int]) -> bool:
        return all(self.constant_priorities.get(index) is not None for index in indexes)

    def matchers(self, event_type: str | None, indexes: list[int]) -> list[str] | BucketPlan:
        """The names of the generated match functions of a bucket, or its plan for the
        Cython matcher when that is built (the two test the rules alike)."""
        ranked = self.is_ranked(indexes)
        if ranked:
            priorities = self.constant_priorities
            indexes = sorted(indexes, key=lambda index: (-priorities[index], index))
        if self.matcher_vm is not None:
            return self.match_plan(event_type, indexes)
        names = []
        label = "any" if event_type is None else str(len(self.module.functions))
        for start in range(0, max(len(indexes), 1), RULES_PER_MATCHER):
            chunk = indexes[start : start + RULES_PER_MATCHER]
            name = f"_match_{label}_{start}"
            gen = self.gen()
            lines = []
            for index in chunk:
                rule = self.checked.rules[index]
                condition = fold(rule.when, event_type)
                if isinstance(condition, n.Literal) and condition.value is False:
                    continue
                test = gen.cond(condition, "`when`")
                active = self.active_test(rule)
                found = "yield" if ranked else "matched.append"
                lines += [
                    "    try:",
                    f"        if {active}{test}:",
                    f"            {found}({index})",
                    "    except Exception as error:",
                    f"        errors.append(({index}, error))",
                ]
            head = [f"def {name}(context, errors):", f"    {CONTEXT_LOCALS}", gen.prologue().rstrip("\n")]
            if ranked:
                lines = [line for line in head if line] + lines + ["    return", "    yield"]
            else:
                lines = [line for line in head if line] + ["    matched = []"] + lines + ["    return matched"]
            self.module.add_function("\n".join(lines))
            names.append(name)
        return names

    def match_plan(self, event_type: str | None, indexes: list[int]) -> BucketPlan:
        if self.folded_segments is None:
            self.folded_segments = {name: fold(seg.condition) for name, seg in self.checked.segments.items()}
        builder = PlanBuilder(self.python_condition, segments=self.folded_segments)
        for index in indexes:
            rule = self.checked.rules[index]
            condition = fold(rule.when, event_type)
            if isinstance(condition, n.Literal) and condition.value is False:
                continue
            active_from = rule.active_from if rule.active_from is not None else -math.inf
            active_to = rule.active_to if rule.active_to is not None else math.inf
            builder.add_rule(index, condition, active_from, active_to)
        return builder.plan()

    def python_condition(self, expr: n.Expr, what: str) -> str:
        """A generated ``(context) -> bool`` for a sub-condition the Cython matcher calls."""
        name = f"_when_{len(self.module.functions)}"
        gen = self.gen()
        test = gen.cond(expr, what)
        self.expression_function(name, gen, test)
        return name

    def active_test(self, rule: n.Rule) -> str:
        parts = []
        if rule.active_from is not None:
            parts.append(f"{literal_source(rule.active_from, self.module)} <= now")
        if rule.active_to is not None and rule.active_to != math.inf:
            parts.append(f"now < {literal_source(rule.active_to, self.module)}")
        return "".join(f"{p} and " for p in parts)

    # -- `on` updates and the default --

    def update_parts(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for number, update in enumerate(self.checked.on_updates):
            cond_name = None
            if update.condition is not None:
                cond_name = f"_on_{number}_when"
                gen = self.gen()
                test = gen.cond(fold(update.condition, update.event_type), "`on ... when`")
                self.expression_function(cond_name, gen, test)
            sets = []
            for position, item in enumerate(update.sets):
                fn = f"_on_{number}_set_{position}"
                gen = self.gen()
                self.expression_function(fn, gen, gen.value(fold(item.value, update.event_type)))
                sets.append((item.field, fn))
            out.setdefault(update.event_type, []).append((cond_name, sets))
        return out

    def default_part(self):
        default = self.checked.default
        if default is None:
            return None
        params, params_fn = self.params_part(default.then, "_params_default")
        return default.then.action, default.then.channel, params, params_fn


def column_source(name: str) -> str:
    """A past events' column in a generated aggregate."""
    return "times" if name == "time" else f"_col(columns, {name!r}, times)"


def decision_value_source(qualified: str) -> str:
    """``event.g`` / ``profile.h`` in a generated aggregate (``event.time`` is ``now``)."""
    root, name = qualified.split(".", 1)
    if qualified == "event.time":
        return "now"
    return f"{'event' if root == 'event' else 'profile'}.get({name!r})"


# The Cython row filter's kernels for an aggregate over one past field (the variables
# are AGGREGATORS' own: each kernel starts from its initial value and steps as it does).
ROW_KERNELS = {
    "sum": "total, _counted = _sum_rows({args})",
    "avg": "total, counted = _sum_rows({args})",
    "min": "best = _min_rows({args})",
    "max": "best = _max_rows({args})",
    "distinct": "_distinct_rows({args}, seen, _distinct_key)",
}


def _aggregators() -> dict[str, tuple[str, str, str]]:
    """func -> (initialisation, per matching event step, result)."""
    return {
        "count": ("count = 0", "count += 1", "count"),
        "sum": ("total = 0", "if VALUE.__class__ in _NUM: total += VALUE", "total"),
        "avg": (
            "total = 0; counted = 0",
            "if VALUE.__class__ in _NUM: total += VALUE; counted += 1",
            "total / counted if counted else None",
        ),
        "min": ("best = None", "if VALUE.__class__ in _NUM and (best is None or VALUE < best): best = VALUE", "best"),
        "max": ("best = None", "if VALUE.__class__ in _NUM and (best is None or VALUE > best): best = VALUE", "best"),
        "distinct": (
            "seen = set()",
            "if VALUE is not None: seen.add(VALUE if VALUE.__class__ in _SIMPLE else _distinct_key(VALUE))",
            "len(seen)",
        ),
        "since": ("best = None", "", "None if best is None else now - best"),
    }


AGGREGATORS = _aggregators()


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def compile_ruleset(checked: CheckedRuleset, filename: str = "<rules>", matcher_vm=_PICKED) -> CompiledRuleset:
    return Compiler(checked, matcher_vm).compile(filename)


def ruleset_recipe(checked: CheckedRuleset, matcher_vm=_PICKED) -> RulesetRecipe:
    return Compiler(checked, matcher_vm).recipe()


def link_namespace(recipe: RulesetRecipe, code_objects: list, matcher_vm=_PICKED) -> dict:
    """The namespace of the generated functions: the runtime's helpers, the constants, and
    the functions themselves, made by running their code."""
    vm = matchvm if matcher_vm is _PICKED else matcher_vm
    if (recipe.programs or recipe.uses_vm) and vm is None:
        raise RuntimeError("this ruleset was compiled for the Cython matcher, which is not loaded here")
    namespace = runtime_namespace()
    namespace.update(recipe.constants)
    for name, attribute in recipe.vm_functions.items():
        namespace[name] = getattr(vm, attribute)
    for name, plan in recipe.programs.items():
        namespace[name] = vm.BucketProgram(plan)
    return run_code(code_objects, namespace)


def link(
    recipe: RulesetRecipe,
    code_objects: list,
    matcher_vm=_PICKED,
    namespace: dict | None = None,
    rules: list[CompiledRule] | None = None,
    buckets: dict[str | None, Bucket] | None = None,
) -> CompiledRuleset:
    """The compiled ruleset of a recipe and the code of its functions (``compile_functions``),
    or of the namespace they already ran in; ``rules`` and ``buckets`` when they are linked
    already (``link_rules``, ``link_buckets``: dsl/isolated.py links them in steps)."""
    vm = matchvm if matcher_vm is _PICKED else matcher_vm
    if namespace is None:
        namespace = link_namespace(recipe, code_objects, vm)
    policies = recipe.policies
    if rules is None:
        rules = link_rules(recipe.rules, namespace, policies)
    if buckets is None:
        buckets = link_buckets(recipe.buckets.items(), namespace, vm)
    on_updates = {
        event_type: tuple(
            CompiledUpdate(namespace[cond] if cond else None, tuple((name, namespace[fn]) for name, fn in sets))
            for cond, sets in blocks
        )
        for event_type, blocks in recipe.on_updates.items()
    }
    default = None
    if recipe.default is not None:
        action, channel, params, params_fn = recipe.default
        default = CompiledDefault(action, channel, params, namespace[params_fn] if params_fn else None)
    return CompiledRuleset(
        rules=rules,
        buckets=buckets,
        policies=policies,
        on_updates=on_updates,
        default=default,
        needs=recipe.needs,
        event_schemas=recipe.event_schemas,
        profile_schema=recipe.profile_schema,
        python_source="\n\n".join(recipe.functions) + "\n",
        read_needs=recipe.read_needs,
        explainer=Explainers(recipe.compiler, namespace) if recipe.compiler is not None else None,
    )


def link_rules(specs: list[tuple], namespace: dict, policies: list[CompiledPolicy]) -> list[CompiledRule]:
    shared: dict = {}  # one object for equal event type sets and policy tuples (52,000 rules, 500 types)
    return [_linked_rule(spec, namespace, policies, shared) for spec in specs]


def link_buckets(items, namespace: dict, matcher_vm=_PICKED) -> dict[str | None, Bucket]:
    """The buckets of ``(event type, (rule indexes, matcher names or plan, ranked))`` items."""
    vm = matchvm if matcher_vm is _PICKED else matcher_vm
    return {
        key: Bucket(indexes, _linked_matchers(spec, namespace, vm), ranked) for key, (indexes, spec, ranked) in items
    }


def _linked_rule(spec: tuple, namespace: dict, policies: list[CompiledPolicy], shared: dict) -> CompiledRule:
    (
        index,
        rule_id,
        title,
        (path, line, column),
        action,
        channel,
        priority,
        priority_fn,
        params,
        params_fn,
        cap,
        holdout,
        active_from,
        active_to,
        event_types,
    ) = spec
    counted = shared.get(("policies", channel))
    if counted is None:
        counted = shared[("policies", channel)] = tuple(
            p for p in policies if p.channel is None or p.channel == channel
        )
    if event_types is not None:
        event_types = shared.setdefault(event_types, event_types)
    return CompiledRule(
        index=index,
        id=rule_id,
        title=title,
        pos=n.Position(path, line, column),
        action=action,
        channel=channel,
        priority=priority,
        priority_fn=namespace[priority_fn] if priority_fn else None,
        params=params,
        params_fn=namespace[params_fn] if params_fn else None,
        cap=cap,
        holdout=holdout,
        active_from=active_from,
        active_to=active_to,
        event_types=event_types,
        policies=counted,
        guarded=bool(holdout or cap or counted),
    )


def _linked_matchers(spec: list[str] | BucketPlan, namespace: dict, vm) -> tuple[Callable, ...]:
    if isinstance(spec, BucketPlan):
        return (vm.BucketProgram(resolve(spec, namespace)),)
    return tuple(namespace[name] for name in spec)


__all__ = ["Bucket", "CompiledRule", "CompiledRuleset", "RulesetRecipe", "compile_ruleset", "link", "ruleset_recipe"]
