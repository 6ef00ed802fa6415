"""`nba replay ... --report FILE.html`: one self-contained page with the replay's charts.

The page opens with no network: no script, no font, no style sheet or image is fetched;
the charts are inline SVG drawn here (a chart library would be 50-200 KB of JavaScript
inlined for two charts, and SVG needs none: it scales, prints and stays readable without
a script). It shows the run's summary; decisions over event time, stacked by rule; the
channel mix; a table per rule (events of its types, matched, chosen, passed over by
reason, errors); for each rule with a holdout, held out against treated; and for each
rule never chosen, the condition that was false most often and its share.

It stays small for any replay: decisions are counted into at most ``MAX_BINS`` time bins
(bins double in width as the replay's span grows), so a million events draw the same
number of shapes as a thousand.
"""

from __future__ import annotations

import html
import math
import time
from collections import Counter, defaultdict

from nba.engine.coverage import Coverage

MAX_BINS = 120  # bars in the time chart
_KEEP_BINS = 4 * MAX_BINS  # bins kept while counting, before the final merge
NOTHING = "(nothing)"
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
OTHER_COLOR = "#9aa0a6"
DEFAULT_COLOR = "#e3e6ea"
TOP_RULES = len(PALETTE)  # rules drawn in their own colour; the others are "other rules"


class ReplayReport:
    """Collects what the page shows while a replay runs; ``write(path)`` at the end."""

    def __init__(self, rules_path: str, events_path: str):
        self.rules_path = rules_path
        self.events_path = events_path
        self.started = time.time()
        self.bin_width = 60.0  # seconds of event time per bin; doubles as the span grows
        self.bins: dict[int, Counter] = defaultdict(Counter)  # bin -> first-choice rule -> decisions
        self.channels: Counter = Counter()  # channel of every action given -> count
        self.first_choices: Counter = Counter()
        self.holdouts: dict[str, Counter] = defaultdict(Counter)  # rule -> {"held out": n, "treated": n}
        self.decisions = 0
        self.degraded = 0
        self.bad_lines = 0
        self.first_time: float | None = None
        self.last_time: float | None = None

    def add(self, event_time: float, decision: dict) -> None:
        self.decisions += 1
        if decision.get("degraded"):
            self.degraded += 1
        rule = decision.get("rule") or NOTHING
        self.first_choices[rule] += 1
        for choice in [decision] + list(decision.get("alternatives") or ()):
            if choice.get("action") is not None:
                self.channels[choice.get("channel") or "(no channel)"] += 1
        if isinstance(event_time, (int, float)) and math.isfinite(event_time):
            self.first_time = event_time if self.first_time is None else min(self.first_time, event_time)
            self.last_time = event_time if self.last_time is None else max(self.last_time, event_time)
            self.bins[int(event_time // self.bin_width)][rule] += 1
            if len(self.bins) > _KEEP_BINS:
                self._widen()
        for entry in decision.get("trace") or ():
            if entry.get("reason") == "holdout":
                self.holdouts[entry["rule"]]["held out"] += 1
            elif entry.get("outcome") == "chosen" and entry["rule"] != "default":
                self.holdouts[entry["rule"]]["treated"] += 1

    def _widen(self) -> None:
        merged: dict[int, Counter] = defaultdict(Counter)
        for key, counts in self.bins.items():
            merged[key // 2].update(counts)
        self.bins = merged
        self.bin_width *= 2

    # -- the page --

    def render(self, coverage: Coverage | None, rules_with_holdout: dict[str, float]) -> str:
        bins, width = self._final_bins()
        rules = [rule for rule, _ in self.first_choices.most_common() if rule not in (NOTHING, "default")]
        top = rules[:TOP_RULES]
        colors = {rule: PALETTE[i] for i, rule in enumerate(top)}
        parts = [
            _HEAD.format(title=html.escape(f"nba replay: {self.events_path}")),
            f"<h1>Replay of <code>{html.escape(self.events_path)}</code></h1>",
            f"<p class=sub>rules <code>{html.escape(self.rules_path)}</code> · written "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
            self._summary(),
            "<h2>Decisions over event time, by first choice</h2>",
            time_chart(bins, width, top, colors),
            legend(
                [(rule, colors[rule]) for rule in top]
                + ([("other rules", OTHER_COLOR)] if len(rules) > len(top) else [])
                + [("the default, or nothing", DEFAULT_COLOR)]
            ),
            "<h2>Channel mix</h2>",
            bar_chart(self.channels.most_common()),
        ]
        if coverage is not None:
            parts += ["<h2>Rules</h2>", coverage_table(coverage)]
            parts += never_chosen(coverage)
        if rules_with_holdout:
            parts += ["<h2>Holdouts: held out against treated</h2>", holdout_table(self.holdouts, rules_with_holdout)]
        parts.append("</main></body></html>\n")
        return "\n".join(parts)

    def write(self, path: str, coverage: Coverage | None, rules_with_holdout: dict[str, float]) -> None:
        with open(path, "w", encoding="utf-8") as out:
            out.write(self.render(coverage, rules_with_holdout))

    def _final_bins(self) -> tuple[list[tuple[float, Counter]], float]:
        """At most MAX_BINS bins of equal width over the replay's span, in time order."""
        if not self.bins:
            return [], self.bin_width
        keys = sorted(self.bins)
        factor = max(1, math.ceil((keys[-1] - keys[0] + 1) / MAX_BINS))
        merged: dict[int, Counter] = defaultdict(Counter)
        for key in keys:
            merged[(key - keys[0]) // factor].update(self.bins[key])
        width = self.bin_width * factor
        start = keys[0] * self.bin_width
        return [(start + index * width, merged.get(index, Counter())) for index in range(max(merged) + 1)], width

    def _summary(self) -> str:
        span = (self.last_time - self.first_time) if self.first_time is not None else 0.0
        given = sum(count for rule, count in self.first_choices.items() if rule not in (NOTHING, "default"))
        cells = [
            ("decisions", f"{self.decisions:,}"),
            ("bad lines", f"{self.bad_lines:,}"),
            ("an action from a rule", _share(given, self.decisions)),
            ("default", _share(self.first_choices.get("default", 0), self.decisions)),
            ("degraded", f"{self.degraded:,}"),
            ("event time", f"{_when(self.first_time)} to {_when(self.last_time)} ({_span(span)})"),
        ]
        return (
            "<dl class=summary>"
            + "".join(f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>" for k, v in cells)
            + "</dl>"
        )


# ---- charts (inline SVG) ---------------------------------------------------------------


def time_chart(bins: list[tuple[float, Counter]], width_s: float, top: list[str], colors: dict[str, str]) -> str:
    if not bins:
        return "<p>No decision had an event time.</p>"
    w, h, left, bottom = 960, 280, 56, 28
    plot_w, plot_h = w - left - 8, h - bottom - 10
    peak = max(sum(counts.values()) for _start, counts in bins) or 1
    bar = plot_w / len(bins)
    shapes = []
    for index, (start, counts) in enumerate(bins):
        x = left + index * bar
        y = h - bottom
        order = [(rule, counts.get(rule, 0)) for rule in top]
        order.append(
            ("other rules", sum(c for r, c in counts.items() if r not in colors and r not in (NOTHING, "default")))
        )
        order.append(("the default, or nothing", counts.get(NOTHING, 0) + counts.get("default", 0)))
        for rule, count in order:
            if not count:
                continue
            height = count / peak * plot_h
            y -= height
            color = colors.get(rule, OTHER_COLOR if rule == "other rules" else DEFAULT_COLOR)
            shapes.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 1, 0.5):.1f}" height="{height:.1f}" fill="{color}">'
                f"<title>{html.escape(rule)}: {count:,} ({_when(start)}, {_span(width_s)} bin)</title></rect>"
            )
    ticks = []
    for fraction in (0, 0.5, 1):
        value = peak * fraction
        y = h - bottom - fraction * plot_h
        ticks.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:,.0f}</text>')
        ticks.append(f'<line x1="{left}" x2="{w - 8}" y1="{y:.1f}" y2="{y:.1f}" class=grid />')
    for index, anchor in ((0, "start"), (len(bins) // 2, "middle"), (len(bins) - 1, "end")):
        x = left + (index + (0 if anchor == "start" else 1 if anchor == "end" else 0.5)) * bar
        label = html.escape(_when(bins[index][0]))
        ticks.append(f'<text x="{x:.1f}" y="{h - 8}" text-anchor="{anchor}">{label}</text>')
    return (
        f'<svg class=chart viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="decisions over event time">{"".join(ticks)}{"".join(shapes)}</svg>'
    )


def bar_chart(items: list[tuple[str, int]]) -> str:
    if not items:
        return "<p>No action was given.</p>"
    total = sum(count for _name, count in items) or 1
    row, w, label_w = 26, 960, 160
    h = row * len(items) + 8
    shapes = []
    for index, (name, count) in enumerate(items):
        y = 4 + index * row
        length = count / items[0][1] * (w - label_w - 140)
        shapes.append(f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{html.escape(name)}</text>')
        shapes.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{max(length, 1):.1f}" height="{row - 8}" '
            f'fill="{PALETTE[index % len(PALETTE)]}"><title>{html.escape(name)}: {count:,}</title></rect>'
        )
        shapes.append(f'<text x="{label_w + length + 8:.1f}" y="{y + 17}">{count:,} ({count / total:.1%})</text>')
    return (
        f'<svg class=chart viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="channel mix">{"".join(shapes)}</svg>'
    )


def legend(items: list[tuple[str, str]]) -> str:
    return (
        "<p class=legend>"
        + "".join(f'<span><i style="background:{color}"></i>{html.escape(name)}</span>' for name, color in items)
        + "</p>"
    )


# ---- tables ----------------------------------------------------------------------------


def coverage_table(coverage: Coverage) -> str:
    rows = coverage.to_dict()
    reasons = sorted({reason for row in rows for reason in row["passed_over"]})
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in ["rule", "events of its types", "matched", "chosen"]
        + [f"passed over: {r}" for r in reasons]
        + ["errors"]
    )
    body = []
    for row in rows:
        cells = [f"<td><code>{html.escape(row['rule'])}</code></td>"]
        cells += [f"<td>{row[key]:,}</td>" for key in ("events", "matched", "chosen")]
        cells += [f"<td>{row['passed_over'].get(reason, 0):,}</td>" for reason in reasons]
        cells.append(f"<td>{row['errors']:,}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def never_chosen(coverage: Coverage) -> list[str]:
    items = []
    for row in coverage.to_dict():
        if row["chosen"] or not row["events"]:
            continue
        found = row["most_often_false"]
        why = (
            f"<code>{html.escape(found['condition'])}</code> false in {found['share']:.0%} of its events"
            if found
            else "its conditions were never tested"
        )
        items.append(
            f"<li><code>{html.escape(row['rule'])}</code>: never chosen in {row['events']:,} events; {why}</li>"
        )
    return ["<h2>Never chosen</h2>", "<ul>" + "".join(items) + "</ul>"] if items else []


def holdout_table(counts: dict[str, Counter], rules: dict[str, float]) -> str:
    body = []
    for rule, percent in rules.items():
        held, treated = counts[rule]["held out"], counts[rule]["treated"]
        share = held / (held + treated) if held + treated else 0.0
        body.append(
            f"<tr><td><code>{html.escape(rule)}</code></td><td>{percent:g}%</td><td>{held:,}</td>"
            f"<td>{treated:,}</td><td>{share:.1%}</td></tr>"
        )
    return (
        "<table><thead><tr><th>rule</th><th>holdout</th><th>held out</th><th>treated</th>"
        f"<th>held out share</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


# ---- text ------------------------------------------------------------------------------


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({part / whole:.1%})" if whole else "0"


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #fafafa; }}
main {{ max-width: 1000px; margin: 0 auto; padding: 24px; background: #fff; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
.sub {{ color: #666; margin: 0 0 16px; }}
dl.summary {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px; margin: 0; }}
dl.summary div {{ background: #f4f6f8; padding: 8px 12px; border-radius: 6px; }}
dt {{ color: #666; font-size: 12px; }} dd {{ margin: 0; font-size: 16px; font-weight: 600; }}
svg.chart {{ max-width: 100%; height: auto; font-size: 11px; fill: #444; }}
svg .grid {{ stroke: #e6e6e6; }}
.legend span {{ display: inline-block; margin-right: 14px; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 5px; border-radius: 2px; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #eee; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ font-weight: 600; color: #555; font-size: 12px; }}
code {{ font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }}
</style></head><body><main>"""
