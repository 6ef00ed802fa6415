"""`nba replay`: decide every event of a JSONL file in order, one JSON decision per line.

A line that is not a valid event prints ``{"line": N, "error": "..."}`` in its place and
the run goes on. A summary goes to stderr, with a progress bar when stderr is a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import IO, Iterator

from nba.dsl.twins import runtime as _runtime
from nba.engine.coverage import Coverage
from nba.engine.errors import EngineError
from nba.engine.jsontext import dumps
from nba.engine.report import ReplayReport

PROGRESS_MIN_BYTES = 1 << 20  # files smaller than this finish before a bar is worth drawing
PROGRESS_EVERY_S = 0.1
_time_of = _runtime.FUNCTIONS["time"]


class ReplaySummary:
    def __init__(self) -> None:
        self.decisions = 0
        self.bad_lines = 0
        self.first_choices: Counter[str] = Counter()
        self.passed_over: Counter[str] = Counter()
        self.rule_errors: Counter[str] = Counter()
        self.bad_profiles = 0
        self.coverage: Coverage | None = None
        self.report: ReplayReport | None = None
        self.started = time.perf_counter()

    def format(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.decisions / elapsed if elapsed > 0 else 0.0
        lines = [
            f"replayed {self.decisions + self.bad_lines:,} lines in {elapsed:.2f} s: "
            f"{self.decisions:,} decisions ({rate:,.0f}/s), {self.bad_lines:,} errors"
        ]
        if self.bad_profiles:
            lines.append(f"{self.bad_profiles:,} bad profile lines")
        lines += _table("first choices", self.first_choices)
        lines += _table("passed over", self.passed_over)
        lines += _table("rule errors", self.rule_errors)
        if self.coverage is not None:
            lines += self.coverage.format()
        return "\n".join(lines)


def _table(title: str, counts: Counter) -> list[str]:
    if not counts:
        return [f"{title}: none"]
    width = max(len(name) for name in counts)
    return [f"{title}:"] + [f"  {name:<{width}}  {count:>9,}" for name, count in counts.most_common()]


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream: IO, total_bytes: int | None):
        self.stream = stream
        self.total = total_bytes
        self.enabled = bool(total_bytes and total_bytes >= PROGRESS_MIN_BYTES and _isatty(stream))
        self.last = 0.0

    def update(self, done_bytes: int, lines: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        fraction = min(done_bytes / self.total, 1.0)
        filled = int(fraction * 30)
        self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} {lines:,} lines")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def _isatty(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def open_lines(path: str) -> tuple[Iterator[bytes], int | None, IO]:
    if path == "-":
        return iter(sys.stdin.buffer), None, sys.stdin.buffer
    handle = open(path, "rb")
    return iter(handle), os.fstat(handle.fileno()).st_size, handle


def load_profiles(engine, path: str, summary: ReplaySummary, err: IO) -> None:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                profile = json.loads(raw)
                if not isinstance(profile, dict):
                    raise ValueError("a profile line must be a JSON object")
                customer_id = profile.pop("customer_id", None)
                engine.put_profile(customer_id, profile)
            except (ValueError, EngineError) as exc:
                summary.bad_profiles += 1
                err.write(f"{path}:{number}: {exc}\n")


def replay(
    engine,
    events: str,
    out: IO,
    err: IO,
    *,
    profiles: str | None = None,
    limit: int = 1,
    explain: bool = False,
    dry_run: bool = False,
    quiet: bool = False,
    coverage: bool = True,
    report: str | None = None,
    rules_path: str = "",
) -> int:
    """Decide every event of the JSONL file ``events`` ("-": stdin) in order, writing one
    JSON line per input line to ``out`` and the summary to ``err``. ``profiles``: a JSONL
    file of profiles loaded first. ``coverage``: the summary says what each rule did and
    which condition kept a rarely chosen rule out (each decision is explained for it; the
    output carries the trace only with ``explain``). ``report``: also write the replay's
    HTML report there (engine/report.py). The exit code: 1 when a line was bad, else 0."""
    summary = ReplaySummary()
    if coverage or report:
        summary.coverage = Coverage([rule.id for rule in engine.ruleset.rules])
    if report:
        summary.report = ReplayReport(rules_path, events)
    if profiles:
        load_profiles(engine, profiles, summary, err)
    lines, total, handle = open_lines(events)
    progress = Progress(err, None if quiet else total)
    done = 0
    write = out.write
    try:
        for number, raw in enumerate(lines, 1):
            done += len(raw)
            if not raw.strip():
                continue
            write(decide_line(engine, raw, number, summary, limit, explain, dry_run) + "\n")
            progress.update(done, number)
    finally:
        progress.close()
        if handle is not sys.stdin.buffer:
            handle.close()
        out.flush()
    if summary.report is not None:
        summary.report.bad_lines = summary.bad_lines
        holdouts = {rule.id: rule.holdout for rule in engine.ruleset.rules if rule.holdout}
        summary.report.write(report, summary.coverage, holdouts)
        if not quiet:
            err.write(f"report: {report}\n")
    summary.passed_over.update(engine.stats.passed_over)
    summary.rule_errors.update(engine.stats.errors_by_rule)
    if not quiet:
        err.write(summary.format() + "\n")
    return 1 if summary.bad_lines or summary.bad_profiles else 0


def decide_line(
    engine, raw: bytes, number: int, summary: ReplaySummary, limit: int, explain: bool, dry_run: bool
) -> str:
    try:
        event = json.loads(raw)
        decision = engine.decide(event, limit=limit, explain=explain or summary.coverage is not None, dry_run=dry_run)
    except json.JSONDecodeError as exc:
        summary.bad_lines += 1
        return dumps({"line": number, "error": f"not valid JSON: {exc.msg} at column {exc.colno}"})
    except EngineError as exc:
        summary.bad_lines += 1
        return dumps({"line": number, "error": str(exc)})
    summary.decisions += 1
    summary.first_choices[decision.rule or "(nothing)"] += 1
    out = decision.to_dict()
    if summary.report is not None:
        summary.report.add(event_time(event), out)
    if summary.coverage is not None:
        summary.coverage.add(event.get("type"), out["trace"] if explain else out.pop("trace"))
    return dumps(out)


def event_time(event: dict) -> float | None:
    """The event's time in seconds (an RFC 3339 string read as the engine reads it), or
    None when it has none or it cannot be read (the decision then failed or used now)."""
    value = event.get("time")
    if value is None:
        return time.time()
    try:
        return float(_time_of(value))
    except Exception:  # noqa: BLE001 - a bad time made the decision fail before this
        return None
