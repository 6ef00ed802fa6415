"""`nba test RULES`: a ruleset's own test cases, written by the people who write the rules.

Test files are TOML files named ``*.test.toml`` anywhere under the ruleset directory (the
rule loader reads only ``*.rules``, so they can live beside the rules); for a ruleset that
is one file ``x.rules``, the test file is ``x.test.toml`` beside it. README.md, "Testing rules"
describes the format. A file::

    [defaults]                     # optional: shared by every case of this file
    time = 2026-11-20T10:00:00Z    # the event's time when a case gives none
    profile = { email_opt_in = true }

    [[case]]
    name = "a cart over 50 gets the email reminder"
    profile = { tier = "silver" }  # merged over the defaults' profile
    event = { type = "cart_abandoned", cart_value = 80 }
    expect = { rule = "cart_reminder_email", action = "cart_reminder", params = { discount = 10 } }

    [[case.history]]               # earlier events, fed through the engine first
    type = "purchase"
    ago = "2d"                     # or: time = 2026-11-18T10:00:00Z
    amount = 40

Every case runs on a fresh engine with the in-memory store: the profile is stored, the
history events are decided in time order (what they decide is not checked, but their
contacts, history and profile updates count), then the event is decided with an
explanation and the decision is compared with ``expect``.

``run_tests`` prints ``PASS name`` / ``FAIL name (file:line)`` per case, with what differed
and the decision's trace for a failure, then a summary; it returns the exit code: 0 when
every case passed, 1 when one failed (or there were none), 2 when the ruleset or a test
file does not load.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from nba.dsl import LoadError, load_ruleset
from nba.dsl.compiler import CompiledRuleset
from nba.dsl.files import files_under
from nba.dsl.runtime import parse_time
from nba.engine.decision import Choice, Decision, TraceEntry
from nba.engine.engine import MAX_LIMIT, Engine
from nba.engine.errors import EngineError

TEST_SUFFIX = ".test.toml"
DEFAULT_TIME = "2026-06-01T12:00:00Z"  # a case's event time when neither it nor [defaults] gives one
_DEFAULT_SECONDS = int(parse_time(DEFAULT_TIME))
DEFAULT_CUSTOMER = "test-customer"

TOP_KEYS = ("case", "defaults")
DEFAULTS_KEYS = ("time", "customer_id", "profile")
CASE_KEYS = ("name", "description", "profile", "history", "event", "limit", "expect")
EXPECT_KEYS = (
    "rule",
    "action",
    "channel",
    "params",
    "alternatives",
    "nothing",
    "not_rule",
    "not_action",
    "trace",
    "conditions",
)
CHOICE_KEYS = ("rule", "action", "channel", "params")
TRACE_WORDS = (
    "chosen",
    "passed over",
    "not reached",
    "not matched",
    "inactive",
    "error",
    "holdout",
    "cap",
    "policy",
    "same action",
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CASE_HEADER = re.compile(r"^\s*\[\[\s*case\s*\]\]\s*(#.*)?$")
_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)\s*$")


# -- the format ---------------------------------------------------------------------


class CaseFileError(Exception):
    """One problem in a test file, at a line when it is known."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = path
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: error: {self.message}"


class CaseFileErrors(Exception):
    """Every problem found in the test files; nothing was run."""

    def __init__(self, errors: list[CaseFileError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass
class ExpectedChoice:
    rule: str | None = None
    action: str | None = None
    channel: str | None = None
    params: dict | None = None


@dataclass
class Expect:
    first: ExpectedChoice = field(default_factory=ExpectedChoice)
    nothing: bool | None = None  # True: no action at all; False: some action
    alternatives: list[ExpectedChoice] | None = None
    not_rule: list[str] = field(default_factory=list)
    not_action: list[str] = field(default_factory=list)
    trace: dict[str, str] = field(default_factory=dict)
    # rule id -> {condition text: true | false | None}: a condition's value in the explanation
    conditions: dict[str, dict[str, bool | None]] = field(default_factory=dict)


@dataclass
class Case:
    path: str
    line: int | None
    name: str
    profile: dict | None
    history: list[dict]  # checked events with ``time`` as epoch seconds, in time order
    event: dict
    limit: int
    expect: Expect

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


def find_test_files(rules_path: str | os.PathLike) -> list[str]:
    """The test files of a ruleset, sorted by path."""
    root = os.fspath(rules_path)
    if os.path.isfile(root):
        base = root[: -len(".rules")] if root.endswith(".rules") else root
        candidate = base + TEST_SUFFIX
        return [candidate] if os.path.isfile(candidate) else []
    return files_under(root, TEST_SUFFIX)


def load_test_file(path: str, ruleset: CompiledRuleset | None = None) -> list[Case]:
    """The cases of one test file; ``CaseFileErrors`` with every problem found.

    Given the ruleset, rule ids and actions named in ``expect`` must be the ruleset's.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CaseFileErrors([CaseFileError(path, None, f"the file is not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise CaseFileErrors([CaseFileError(path, None, f"cannot read the file: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_LINE.search(message)
        line = int(found.group(1)) if found else None
        if found:
            message = message[: found.start()].rstrip()
        raise CaseFileErrors([CaseFileError(path, line, f"not valid TOML: {message}")]) from None
    reader = _FileReader(path, text, ruleset)
    cases = reader.read(data)
    if reader.errors:
        raise CaseFileErrors(reader.errors)
    return cases


class _FileReader:
    def __init__(self, path: str, text: str, ruleset: CompiledRuleset | None):
        self.path = path
        self.lines = text.splitlines()
        self.errors: list[CaseFileError] = []
        self.case_lines = [i + 1 for i, line in enumerate(self.lines) if _CASE_HEADER.match(line)]
        self.rule_ids: set[str] | None = None
        self.actions: set[str] | None = None
        if ruleset is not None:
            self.rule_ids = {rule.id for rule in ruleset.rules}
            self.actions = {rule.action for rule in ruleset.rules}
            if ruleset.default is not None:
                self.rule_ids.add("default")
                self.actions.add(ruleset.default.action)

    # where things are

    def case_line(self, index: int) -> int | None:
        return self.case_lines[index] if index < len(self.case_lines) else None

    def key_line(self, index: int | None, key: str) -> int | None:
        """The line of ``key`` inside case ``index`` (or at the top), else the case's line."""
        if index is None:
            start, end = 0, (self.case_lines[0] - 1 if self.case_lines else len(self.lines))
        else:
            start = self.case_line(index)
            if start is None:
                return None
            end = self.case_line(index + 1)
            end = end - 1 if end is not None else len(self.lines)
        pattern = re.compile(
            rf"^\s*(\[\[?\s*(case\.)?{re.escape(key)}\s*\]\]?|{re.escape(key)}\s*=|\"{re.escape(key)}\"\s*=)"
        )
        for number in range(start, end):
            if pattern.match(self.lines[number]):
                return number + 1
        return start if index is not None else None

    def error(self, line: int | None, message: str) -> None:
        self.errors.append(CaseFileError(self.path, line, message))

    # the file

    def read(self, data: dict) -> list[Case]:
        self.unknown_keys(data, TOP_KEYS, "at the top of the file", None)
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict):
            self.error(self.key_line(None, "defaults"), "`defaults` must be a table")
            defaults = {}
        self.unknown_keys(defaults, DEFAULTS_KEYS, "in [defaults]", None, line=self.key_line(None, "defaults"))
        default_time = _DEFAULT_SECONDS
        if "time" in defaults:
            default_time = self.time_value(defaults["time"], "[defaults] time", self.key_line(None, "time"))
        default_customer = defaults.get("customer_id", DEFAULT_CUSTOMER)
        if not isinstance(default_customer, str) or not default_customer:
            self.error(self.key_line(None, "customer_id"), "[defaults] customer_id must be a non-empty string")
            default_customer = DEFAULT_CUSTOMER
        default_profile = defaults.get("profile", {})
        if not isinstance(default_profile, dict):
            self.error(self.key_line(None, "profile"), "[defaults] profile must be a table of fields")
            default_profile = {}
        default_profile = _plain(default_profile)

        raw_cases = data.get("case")
        if raw_cases is None:
            self.error(None, "no test cases: a test file holds `[[case]]` tables")
            return []
        if not isinstance(raw_cases, list):
            self.error(self.key_line(None, "case"), "`case` must be an array of tables: write each as `[[case]]`")
            return []
        cases = []
        for index, raw in enumerate(raw_cases):
            case = self.read_case(index, raw, default_time, default_customer, default_profile)
            if case is not None:
                cases.append(case)
        return cases

    def read_case(self, index: int, raw, default_time, default_customer, default_profile) -> Case | None:
        line = self.case_line(index)
        label = f"case {index + 1}"
        if not isinstance(raw, dict):
            self.error(line, f"{label} must be a table")
            return None
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            self.error(self.key_line(index, "name"), f"{label} needs a `name` (a non-empty string)")
            name = label
        else:
            label = f"case {name!r}"
        errors_before = len(self.errors)
        self.unknown_keys(raw, CASE_KEYS, f"in {label}", index)
        if "description" in raw and not isinstance(raw["description"], str):
            self.error(self.key_line(index, "description"), f"{label}: `description` must be a string")

        profile = dict(default_profile)
        if "profile" in raw:
            if isinstance(raw["profile"], dict):
                profile.update(_plain(raw["profile"]))
            else:
                self.error(self.key_line(index, "profile"), f"{label}: `profile` must be a table of fields")

        limit = raw.get("limit", 1)
        if limit.__class__ is not int or not 1 <= limit <= MAX_LIMIT:
            self.error(self.key_line(index, "limit"), f"{label}: `limit` must be a whole number from 1 to {MAX_LIMIT}")
            limit = 1

        event = None
        if "event" not in raw:
            self.error(line, f"{label} needs an `event` (the event under test)")
        elif not isinstance(raw["event"], dict):
            self.error(self.key_line(index, "event"), f"{label}: `event` must be a table")
        else:
            event = self.read_event(raw["event"], f"{label}: event", self.key_line(index, "event"), None)
        if event is not None:
            event.setdefault("customer_id", default_customer)
            if "time" not in event:
                event["time"] = default_time

        history: list[dict] = []
        raw_history = raw.get("history", [])
        if not isinstance(raw_history, list):
            self.error(
                self.key_line(index, "history"), f"{label}: `history` must be an array of tables: `[[case.history]]`"
            )
            raw_history = []
        for number, past in enumerate(raw_history, 1):
            where = f"{label}: history event {number}"
            hline = self.key_line(index, "history")
            if not isinstance(past, dict):
                self.error(hline, f"{where} must be a table")
                continue
            past_event = self.read_event(past, where, hline, event["time"] if event else default_time)
            if past_event is None:
                continue
            if "time" not in past_event:
                self.error(hline, f'{where} needs a `time` (or `ago`, a duration before the event: "2h")')
                continue
            past_event.setdefault("customer_id", event["customer_id"] if event else default_customer)
            history.append(past_event)
        history.sort(key=lambda e: e["time"])  # stable: same times keep the file's order

        expect = None
        if "expect" not in raw:
            self.error(line, f'{label} needs an `expect` table (e.g. expect = {{ action = "..." }})')
        elif not isinstance(raw["expect"], dict):
            self.error(self.key_line(index, "expect"), f"{label}: `expect` must be a table")
        else:
            expect = self.read_expect(raw["expect"], label, self.key_line(index, "expect"))
        if len(self.errors) > errors_before or event is None or expect is None:
            return None
        return Case(self.path, line, name, profile or None, history, event, limit, expect)

    def read_event(self, raw: dict, where: str, line, relative_to) -> dict | None:
        event = _plain({k: v for k, v in raw.items() if k not in ("time", "ago")})
        ok = True
        kind = raw.get("type")
        if not isinstance(kind, str) or not kind:
            self.error(line, f"{where} needs a `type` (a non-empty string)")
            ok = False
        if "customer_id" in raw and (not isinstance(raw["customer_id"], str) or not raw["customer_id"]):
            self.error(line, f"{where}: `customer_id` must be a non-empty string")
            ok = False
        if "time" in raw and "ago" in raw:
            self.error(line, f"{where}: give `time` or `ago`, not both")
            ok = False
        elif "time" in raw:
            t = self.time_value(raw["time"], f"{where}: time", line)
            if t is None:
                ok = False
            else:
                event["time"] = t
        elif "ago" in raw:
            if relative_to is None:
                self.error(line, f"{where}: `ago` is only for history events")
                ok = False
            else:
                seconds = _duration(raw["ago"])
                if seconds is None:
                    self.error(
                        line,
                        f'{where}: `ago` must be a duration such as "30m", "2h", "1d12h" or a number of seconds, not {raw["ago"]!r}',
                    )
                    ok = False
                else:
                    event["time"] = _whole(relative_to - seconds)
        return event if ok else None

    def time_value(self, value, where: str, line) -> float | None:
        converted = _plain(value)
        if isinstance(converted, bool) or converted is None:
            converted = None
        elif isinstance(converted, (int, float)):
            if not math.isfinite(converted):
                converted = None
        elif isinstance(converted, str):
            parsed = parse_time(converted)
            converted = None if parsed is None else _whole(parsed)
        else:
            converted = None
        if converted is None:
            self.error(
                line,
                f"{where} must be a time: 2026-11-27T09:30:00Z (quoted or not), 2026-11-27, or seconds since the epoch; not {value!r}",
            )
        return converted

    def read_expect(self, raw: dict, label: str, line) -> Expect | None:
        where = f"{label}: expect"
        before = len(self.errors)
        self.unknown_keys(raw, EXPECT_KEYS, f"in the `expect` of {label}", None, line=line)
        if not raw:
            self.error(line, f"{where} is empty: say what the decision should be (rule, action, nothing = true, ...)")
            return None
        expect = Expect()
        expect.first = self.read_choice(raw, where, line, keys=CHOICE_KEYS)
        if "nothing" in raw:
            if not isinstance(raw["nothing"], bool):
                self.error(line, f"{where}: `nothing` must be true or false")
            else:
                expect.nothing = raw["nothing"]
                if raw["nothing"] and any(k in raw for k in ("rule", "action", "channel", "params", "alternatives")):
                    self.error(
                        line, f"{where}: `nothing = true` cannot go with rule, action, channel, params or alternatives"
                    )
        if "alternatives" in raw:
            alternatives = raw["alternatives"]
            if not isinstance(alternatives, list):
                self.error(
                    line,
                    f"{where}: `alternatives` must be a list (of actions, or of tables with rule/action/channel/params)",
                )
            else:
                expect.alternatives = []
                for number, item in enumerate(alternatives, 1):
                    if isinstance(item, str):
                        item = {"action": item}
                    if not isinstance(item, dict):
                        self.error(line, f"{where}: alternative {number} must be an action name or a table")
                        continue
                    self.unknown_keys(item, CHOICE_KEYS, f"in {where} alternative {number}", None, line=line)
                    expect.alternatives.append(
                        self.read_choice(item, f"{where} alternative {number}", line, CHOICE_KEYS)
                    )
        for key in ("not_rule", "not_action"):
            if key in raw:
                names = raw[key]
                if isinstance(names, str):
                    names = [names]
                if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names):
                    self.error(line, f"{where}: `{key}` must be a name or a list of names")
                    continue
                for name in names:
                    self.known(name, "rule" if key == "not_rule" else "action", where, line)
                setattr(expect, key, names)
        if "trace" in raw:
            trace = raw["trace"]
            if not isinstance(trace, dict):
                self.error(
                    line,
                    f'{where}: `trace` must be a table: rule id = what happened to it (e.g. cart_reminder_email = "cap")',
                )
            else:
                for rule_id, what in trace.items():
                    self.known(rule_id, "rule", where, line)
                    if not isinstance(what, str) or not _trace_word_ok(what):
                        self.error(
                            line,
                            f"{where}: trace.{rule_id} must be one of {', '.join(repr(w) for w in TRACE_WORDS)} "
                            f'(or a policy: "policy email"), not {what!r}',
                        )
                    else:
                        expect.trace[rule_id] = what
        if "conditions" in raw:
            self.read_conditions(raw["conditions"], expect, where, line)
        return expect if len(self.errors) == before else None

    def read_conditions(self, raw, expect: Expect, where: str, line) -> None:
        """``conditions = { RULE = { "CONDITION TEXT" = true | false | "null" } }``."""
        usage = f'{where}: `conditions` must be a table: rule id = {{ "condition text" = true, false or "null" }}'
        if not isinstance(raw, dict):
            self.error(line, usage)
            return
        for rule_id, table in raw.items():
            self.known(rule_id, "rule", where, line)
            if not isinstance(table, dict) or not table:
                self.error(line, usage)
                continue
            wanted = {}
            for text, value in table.items():
                if value == "null":
                    value = None
                elif not isinstance(value, bool):
                    self.error(
                        line, f'{where}: conditions.{rule_id}.{text!r} must be true, false or "null", not {value!r}'
                    )
                    continue
                wanted[text] = value
            expect.conditions[rule_id] = wanted

    def read_choice(self, raw: dict, where: str, line, keys) -> ExpectedChoice:
        choice = ExpectedChoice()
        for key in ("rule", "action", "channel"):
            if key in raw:
                value = raw[key]
                if not isinstance(value, str) or not value:
                    self.error(line, f"{where}: `{key}` must be a non-empty string")
                    continue
                if key != "channel":
                    self.known(value, key, where, line)
                setattr(choice, key, value)
        if "params" in raw:
            if not isinstance(raw["params"], dict):
                self.error(line, f"{where}: `params` must be a table (e.g. params = {{ discount = 10 }})")
            else:
                choice.params = _plain(raw["params"])
        return choice

    def known(self, name: str, kind: str, where: str, line) -> None:
        names = self.rule_ids if kind == "rule" else self.actions
        if names is None or name in names:
            return
        close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        self.error(line, f"{where}: the ruleset has no {kind} `{name}`{hint}")

    def unknown_keys(self, table: dict, known: tuple[str, ...], where: str, index: int | None, line=None) -> None:
        if not isinstance(table, dict):
            return
        for key in table:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else f" (known: {', '.join(known)})"
            at = line if line is not None else self.key_line(index, key)
            self.error(at, f"unknown key `{key}` {where}{hint}")


def _plain(value):
    """TOML values as event/profile values: dates and datetimes become epoch seconds (UTC)."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return _whole(value.timestamp())
    if isinstance(value, _dt.date):
        return _whole(_dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc).timestamp())
    if isinstance(value, _dt.time):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _whole(number: float):
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _duration(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) and value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.replace(" ", "")
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _norm(text: str) -> str:
    return " ".join(text.replace("_", " ").lower().split())


def _trace_word_ok(what: str) -> bool:
    word = _norm(what)
    return word in TRACE_WORDS or word.startswith("policy ")


# -- running ------------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    passed: bool
    problems: list[str]
    decision: Decision | None = None
    error: str | None = None  # the engine refused the case's profile or an event


def run_case(ruleset: CompiledRuleset, case: Case) -> Result:
    """Run one case on a fresh in-memory engine."""
    engine = Engine(ruleset, max_event_ahead_s=None)  # on the events' own times (DSL.md step 1)
    customer = case.event["customer_id"]
    try:
        if case.profile:
            engine.put_profile(customer, case.profile)
    except EngineError as exc:
        return Result(case, False, [f"the profile was refused: {exc}"], error=str(exc))
    for number, past in enumerate(case.history, 1):
        try:
            engine.decide(past)
        except EngineError as exc:
            message = f"history event {number} ({past.get('type')} at {_time_text(past['time'])}) was refused: {exc}"
            return Result(case, False, [message], error=message)
    try:
        decision = engine.decide(case.event, limit=case.limit, explain=True)
    except EngineError as exc:
        return Result(case, False, [f"the event was refused: {exc}"], error=str(exc))
    problems = compare(case.expect, decision)
    return Result(case, not problems, problems, decision)


def compare(expect: Expect, decision: Decision) -> list[str]:
    """What differs between the expectation and the decision (empty: it passed)."""
    problems: list[str] = []
    first = decision.first
    got = _describe(first)
    if expect.nothing is True and first is not None:
        problems.append(f"expected nothing, got {got}")
    if expect.nothing is False and first is None:
        problems.append("expected an action, got nothing")
    want = expect.first
    wrong = []  # (key, expected) of the first choice's rule, action and channel that differ
    for key in ("rule", "action", "channel"):
        wanted = getattr(want, key)
        if wanted is not None and (first is None or getattr(first, key) != wanted):
            wrong.append((key, wanted))
    if len(wrong) == 1:
        key, wanted = wrong[0]
        if key == "rule":
            problems.append(f"expected rule {wanted}, got {_describe(first, lead='rule')}")
        elif key == "action":
            problems.append(f"expected action {wanted}, got {got}")
        else:
            actual = "nothing" if first is None else first.channel or "no channel"
            problems.append(f"expected channel {wanted}, got {actual}")
    elif wrong:
        wanted = ", ".join(f"{key} {value}" for key, value in wrong)
        actual = (
            "nothing" if first is None else f"{first.action} via {first.channel or 'no channel'} (rule {first.rule})"
        )
        problems.append(f"expected {wanted}; got {actual}")
    if want.params is not None:
        problems += _compare_params(want.params, first, "params")
    if expect.alternatives is not None:
        alternatives = decision.alternatives
        if len(alternatives) != len(expect.alternatives):
            wanted = ", ".join(_describe_expected(a) for a in expect.alternatives) or "none"
            actual = ", ".join(_describe(a) for a in alternatives) or "none"
            problems.append(
                f"expected {len(expect.alternatives)} alternatives ({wanted}), got {len(alternatives)} ({actual})"
            )
        else:
            for number, (want_alt, alt) in enumerate(zip(expect.alternatives, alternatives), 1):
                for key in ("rule", "action", "channel"):
                    wanted = getattr(want_alt, key)
                    if wanted is not None and getattr(alt, key) != wanted:
                        problems.append(f"expected alternative {number} {key} {wanted}, got {_describe(alt)}")
                if want_alt.params is not None:
                    problems += _compare_params(want_alt.params, alt, f"alternative {number} params")
    for position, choice in enumerate(decision.choices):
        place = "the first choice" if position == 0 else f"alternative {position}"
        if choice.rule in expect.not_rule:
            problems.append(f"expected rule {choice.rule} not to be chosen, but it is {place} (action {choice.action})")
        if choice.action in expect.not_action:
            problems.append(f"expected action {choice.action} not to be given, but it is {place} (rule {choice.rule})")
    if expect.trace:
        entries = {entry.rule: entry for entry in decision.trace or ()}
        for rule_id, what in expect.trace.items():
            entry = entries.get(rule_id)
            if not _trace_matches(what, entry):
                problems.append(f"expected {rule_id} to be {_norm(what)}, the trace says {_trace_text(entry)}")
    if expect.conditions:
        entries = {entry.rule: entry for entry in decision.trace or ()}
        for rule_id, wanted in expect.conditions.items():
            problems += _compare_conditions(rule_id, wanted, entries.get(rule_id))
    return problems


def _compare_conditions(rule_id: str, wanted: dict, entry: TraceEntry | None) -> list[str]:
    if entry is None or entry.conditions is None:
        return [f"expected conditions of {rule_id}, but its `when` was not tested ({_trace_text(entry)})"]
    found = {condition["text"]: condition["value"] for condition in entry.conditions}
    problems = []
    for text, value in wanted.items():
        if text not in found:
            known = "; ".join(f"`{t}`" for t in found)
            problems.append(f"{rule_id} has no condition `{text}` (its conditions: {known})")
        elif found[text] is not value:
            problems.append(f"expected {rule_id}'s `{text}` to be {_bool_text(value)}, it is {_bool_text(found[text])}")
    return problems


def _bool_text(value) -> str:
    return "null" if value is None else ("true" if value else "false")


def _compare_params(wanted: dict, choice: Choice | None, label: str) -> list[str]:
    if choice is None:
        return [f"expected {label} {_value_text(wanted)}, got nothing"]
    problems = []
    for key, value in wanted.items():
        if key not in choice.params:
            problems.append(
                f"expected {label}.{key} = {_value_text(value)}, but there is no such parameter (got {_value_text(choice.params)})"
            )
        elif not same(value, choice.params[key]):
            problems.append(f"expected {label}.{key} = {_value_text(value)}, got {_value_text(choice.params[key])}")
    return problems


def same(a, b) -> bool:
    """The rule language's `==`: kinds must agree (a bool is not a number), ``10 == 10.0``."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def _trace_matches(what: str, entry: TraceEntry | None) -> bool:
    word = _norm(what)
    if entry is None:  # not in the event type's rules: it could not match this event
        return word == "not matched"
    if word == _norm(entry.outcome):
        return True
    reason = _norm(entry.reason or "")
    if not reason:
        return False
    return reason == word or reason.startswith(word + ":") or reason.startswith(word + " ")


def _trace_text(entry: TraceEntry | None) -> str:
    if entry is None:
        return "not matched (it does not apply to this event type)"
    text = _norm(entry.outcome)
    if entry.reason and entry.outcome != "inactive":
        text += f" ({entry.reason})"
    if entry.error:
        text += f" ({entry.error})"
    return text


def _describe(choice: Choice | None, lead: str = "action") -> str:
    if choice is None:
        return "nothing"
    if lead == "rule":
        return f"{choice.rule} (action {choice.action})"
    return f"{choice.action} (rule {choice.rule})"


def _describe_expected(choice: ExpectedChoice) -> str:
    return choice.action or choice.rule or "?"


def _value_text(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _time_text(t) -> str:
    try:
        moment = _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
    except (OverflowError, OSError, ValueError, TypeError):
        return str(t)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment.microsecond == 0 else moment.isoformat()


def format_trace(decision: Decision, event: dict) -> list[str]:
    """The decision and its trace, as indented lines for a failing case."""
    lines = [f"decision for {event['type']} at {_time_text(event['time'])}:"]
    if not decision.choices:
        lines.append("  nothing")
    for position, choice in enumerate(decision.choices):
        label = "first" if position == 0 else f"alt {position}"
        via = f" via {choice.channel}" if choice.channel else ""
        params = f" with {_value_text(choice.params)[1:-1]}" if choice.params else ""
        lines.append(f"  {label}: {choice.action}{via}{params} (rule {choice.rule})")
    entries = decision.trace or ()
    lines.append("trace (rules for this event type, best ranked first):")
    if not entries:
        lines.append("  no rule applies to this event type")
    width = max((len(e.rule) for e in entries), default=0)
    for entry in entries:
        priority = f"priority {_value_text(entry.priority)}" if entry.priority is not None else ""
        lines.append(f"  {entry.rule.ljust(width)}  {priority:<13} {_trace_text(entry)}".rstrip())
    return lines


def run_tests(rules_path: str, out: TextIO | None = None) -> int:
    """Run every test case of the ruleset at ``rules_path``; print the results to ``out``
    (``sys.stdout`` when not given).

    Returns 0 when every case passed, 1 when a case failed (or there are none),
    2 when the ruleset or a test file does not load (then nothing is run).
    """
    if out is None:
        out = sys.stdout
    rules_path = os.fspath(rules_path)
    try:
        ruleset = load_ruleset(rules_path)
    except LoadError as exc:
        print(exc.report(), file=out)
        print(f"the ruleset {rules_path} does not load: no tests were run", file=out)
        return 2
    files = find_test_files(rules_path)
    if not files:
        where = (
            rules_path
            if os.path.isdir(rules_path)
            else f"{rules_path} (looked for {Path(rules_path).stem}{TEST_SUFFIX} beside it)"
        )
        print(f"no test files (*{TEST_SUFFIX}) in {where}", file=out)
        return 1
    cases: list[Case] = []
    errors: list[CaseFileError] = []
    for path in files:
        try:
            cases += load_test_file(path, ruleset)
        except CaseFileErrors as exc:
            errors += exc.errors
    if errors:
        for error in errors:
            print(error, file=out)
        bad = len({e.path for e in errors})
        print(
            f"{len(errors)} error{'s' if len(errors) != 1 else ''} in {bad} test file{'s' if bad != 1 else ''}: no tests were run",
            file=out,
        )
        return 2
    if not cases:
        print(f"no test cases in {len(files)} test file{'s' if len(files) != 1 else ''}", file=out)
        return 1
    failed = 0
    for case in cases:
        result = run_case(ruleset, case)
        if result.passed:
            print(f"PASS {case.name}", file=out)
            continue
        failed += 1
        print(f"FAIL {case.name} ({case.where})", file=out)
        for problem in result.problems:
            print(f"    {problem}", file=out)
        if result.decision is not None:
            for line in format_trace(result.decision, case.event):
                print(f"    {line}", file=out)
    passed = len(cases) - failed
    counted = f"{_plural(len(cases), 'case')} in {_plural(len(files), 'file')}"
    if failed:
        print(f"{failed} failed, {passed} passed ({counted})", file=out)
        return 1
    print(f"all {passed} passed ({counted})", file=out)
    return 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.ruletests RULES`` (the same as ``nba test RULES``)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m engine.ruletests RULES", file=sys.stderr)
        return 2
    return run_tests(args[0])


if __name__ == "__main__":
    sys.exit(main())
