"""The language server's checking (``nba.engine.lsp.analysis``) finds what `nba check` and
`nba lint` find.

It parses files in pieces, re-checks only changed rules and lints only changed rules again,
for speed; these tests hold it to the loader's errors, and to lint's warnings when the
ruleset loads, on the example and broken rule files and after random sequences of edits to
open buffers (the state kept between edits included)."""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nba.dsl import LoadError, load_ruleset
from nba.dsl.checker import check
from nba.dsl.lint import lint_path
from nba.dsl.runtime import parse_time
from nba.dsl.source import Diagnostics
from nba.engine.lsp.analysis import Ruleset, ruleset_root
from nba.engine.lsp.chunks import cut

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "rules"
BROKEN = ROOT / "tests" / "rulefiles" / "broken"
# the time lint judges `expired` at: the example rules (the Black Friday 2026 demo) are clean then
AT = parse_time("2026-11-27")


def ruleset_of(root: Path) -> Ruleset:
    return Ruleset(str(root), lint_at=AT)


def loader_findings(root: Path) -> set[tuple]:
    """What `nba check` reports, or when the ruleset loads, what `nba lint --at AT` does."""
    try:
        load_ruleset(root)
    except LoadError as exc:
        return {relative(str(root), d.pos, d.message) for d in exc.diagnostics}
    warnings, _sources = lint_path(root, AT)
    return {relative(str(root), w.pos, f"warning[{w.code}]: {w.message}") for w in warnings}


def lsp_findings(ruleset: Ruleset, buffers: dict[str, str]) -> set[tuple]:
    analysis = ruleset.analyze(buffers)
    found = set()
    for findings in analysis.findings.values():
        for f in findings:
            if f.severity == "error":
                assert (f.code, f.source) == (None, "nba")
                found.add(relative(ruleset.root, f.pos, f.message))
            else:
                assert (f.severity, f.source) == ("warning", "nba lint")
                found.add(relative(ruleset.root, f.pos, f"warning[{f.code}]: {f.message}"))
    return found


def relative(root: str, pos, message: str) -> tuple:
    """A finding with its paths (also those in its message) relative to the ruleset's root."""
    return os.path.relpath(pos.path, root), pos.line, pos.column, message.replace(root + os.sep, "")


@pytest.mark.parametrize("root", [EXAMPLES, BROKEN, BROKEN / "multi", ROOT / "tests" / "rulefiles" / "good"])
def test_the_findings_of_a_ruleset_on_disk_are_the_loaders(root):
    assert lsp_findings(ruleset_of(root), {}) == loader_findings(root)


@pytest.mark.parametrize("path", sorted(BROKEN.glob("*.rules")), ids=lambda p: p.name)
def test_each_broken_file_gives_the_loaders_error(path, tmp_path):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    expected = loader_findings(tmp_path)
    assert expected, "a broken file loads"
    assert lsp_findings(ruleset_of(tmp_path), {}) == expected
    # ... also as a buffer, cut into pieces after lines added above it
    text = path.read_text(encoding="utf-8")
    moved = {(p, line + 3, column, message) for p, line, column, message in expected}
    assert lsp_findings(ruleset_of(tmp_path), {str(copy): "# one\n\n# two\n" + text}) == moved


FRAGMENTS = [
    "end\n",
    "rule extra\n",
    " and ",
    "event.",
    '"',
    "(",
    ")",
    "==",
    "=",
    "\n",
    "segment vip = true\n",
    "profile.tier",
    "#",
    " within 3h",
    'rule cart_banner_web when event.type == "a" then b end\n',
    "on purchase\n",
    "vip",
    "xyz",
    "10%",
    "rule ",
    "then x via web\n",
    "segment s = s\n",
    "policy email: cap 0 per 1d\n",
    "event page_view { category: number }\n",
    "  set tier = 3\n",
    "count(page_view within 30m)",
    "[",
    "]",
    ",",
]
FILES = sorted(p.name for p in EXAMPLES.glob("*.rules"))
edit = st.tuples(
    st.sampled_from(FILES),
    st.sampled_from(["insert", "delete", "swap-line", "rename"]),
    st.floats(0, 1),
    st.integers(0, 40),
    st.sampled_from(FRAGMENTS),
)


def apply(text: str, how: str, where: float, size: int, fragment: str) -> str:
    at = int(where * len(text))
    if how == "insert":
        return text[:at] + fragment + text[at:]
    if how == "delete":
        return text[:at] + text[at + size :]
    if how == "rename":  # the name at or after `at` gets a letter more: a segment, a field, ...
        match = re.compile(r"[A-Za-z_]\w*").search(text, at) or re.compile(r"[A-Za-z_]\w*").search(text)
        return text[: match.end()] + "q" + text[match.end() :] if match else text
    lines = text.split("\n")
    i = int(where * (len(lines) - 1))
    j = min(len(lines) - 1, i + 1 + size % 5)
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


@settings(derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(edit, min_size=1, max_size=5))
def test_after_every_edit_the_findings_are_the_loaders(edits, tmp_path_factory):
    on_disk = tmp_path_factory.mktemp("disk")  # what the server reads: the files as they were
    edited = tmp_path_factory.mktemp("edited")  # what the loader reads: the buffers saved
    texts = {}
    for name in FILES:
        texts[name] = (EXAMPLES / name).read_text(encoding="utf-8")
        (on_disk / name).write_text(texts[name], encoding="utf-8")
        (edited / name).write_text(texts[name], encoding="utf-8")
    ruleset = ruleset_of(on_disk)
    assert lsp_findings(ruleset, {}) == set()
    for name, how, where, size, fragment in edits:
        texts[name] = apply(texts[name], how, where, size, fragment)
        (edited / name).write_text(texts[name], encoding="utf-8")
        buffers = {str(on_disk / n): t for n, t in texts.items()}
        assert lsp_findings(ruleset, buffers) == loader_findings(edited), (name, how, where, size, fragment)
        # the kinds worked out are those of a check from scratch of the same syntax trees
        analysis = ruleset.analyze(buffers)
        unparsed = tuple(p for p in analysis.sources if p not in {m.path for m in analysis.modules})
        assert analysis.checked.kinds == check(analysis.modules, Diagnostics(), unparsed).kinds
        assert analysis.checked.rule_event_types == check(analysis.modules, Diagnostics(), unparsed).rule_event_types


SEGMENTS = 'segment gold = profile.tier in ["gold", "platinum"]\nsegment loyal = profile.visits > 3\n'
POLICY = "policy web: cap 1 per 1d\n"


def lint_rule(number: int, seed: int) -> str:
    """A rule that often overlaps the others: lint finds rules that never match, conditions
    that add nothing, rules always outranked, segments unused, rules expired."""
    rng = random.Random(seed)
    parts = ['event.type == "view"']
    for _ in range(rng.choice((1, 2, 3))):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(f"event.amount {rng.choice(['>', '>=', '<', '<=', '==', '!='])} {rng.randrange(6)}")
        elif kind == 1:
            parts.append(f"profile.visits {rng.choice(['>', '<'])} {rng.randrange(6)}")
        elif kind == 2:
            parts.append(rng.choice(["gold", "not gold", "loyal"]))
        else:
            parts.append('profile.tier in ["gold", "silver"]')
    active = "  active from 2020-01-01 to 2020-02-01\n" if rng.random() < 0.1 else ""
    when = "\n   and ".join(parts)
    return f"rule r{number}\n  priority {rng.randrange(4)}\n  when {when}\n  then offer_{number} via web\n{active}end\n"


@settings(derandomize=True, max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["replace", "insert", "delete", "line-at-top", "segment", "policy"]), st.integers()),
        min_size=1,
        max_size=8,
    )
)
def test_after_every_edit_the_warnings_are_nba_lints(edits, tmp_path_factory):
    """Lint in the server keeps its results for the rules that did not change (``LintMemo``);
    after each edit its warnings, in their files, are those of `nba lint` on the saved files."""
    on_disk = tmp_path_factory.mktemp("disk")
    edited = tmp_path_factory.mktemp("edited")
    rules = [lint_rule(number, number) for number in range(12)]
    texts = {"a.rules": SEGMENTS, "b.rules": "\n".join(rules), "c.rules": ""}
    for name, text in texts.items():
        (on_disk / name).write_text(text, encoding="utf-8")
    ruleset = ruleset_of(on_disk)
    for step, (how, seed) in enumerate(edits):
        at = seed % len(rules) if rules else 0
        if how == "replace" and rules:
            rules[at] = lint_rule(at, seed)
        elif how == "insert":
            rules.insert(at, lint_rule(100 + step, seed))
        elif how == "delete" and rules:
            del rules[at]
        elif how == "line-at-top":
            texts["b.rules"] = "\n" + texts["b.rules"]
        elif how == "segment":
            texts["a.rules"] = SEGMENTS.replace("> 3", f"> {seed % 5}")
        else:  # in a file of its own, so that the segments stay the same nodes
            texts["c.rules"] = POLICY if not texts["c.rules"] else ""
        if how != "line-at-top":
            texts["b.rules"] = "\n".join(rules)
        for name, text in texts.items():
            (edited / name).write_text(text, encoding="utf-8")
        buffers = {str(on_disk / name): text for name, text in texts.items()}
        assert lsp_findings(ruleset, buffers) == loader_findings(edited), (step, how, seed)


def test_lint_speaks_only_when_the_ruleset_has_no_error(tmp_path):
    (tmp_path / "a.rules").write_text(
        SEGMENTS + lint_rule(1, 1) + "rule dead\n  when event.x > 2 and event.x < 1\n  then a\nend\n"
    )
    ruleset = ruleset_of(tmp_path)
    path = str(tmp_path / "a.rules")
    text = (tmp_path / "a.rules").read_text(encoding="utf-8")
    warned = lsp_findings(ruleset, {})
    when = text.split("\n").index("rule dead") + 2  # the line of its `when`
    assert (
        "a.rules",
        when,
        3,
        "warning[never-matches]: rule `dead` can never match: `event.x > 2` and `event.x < 1` are never true together",
    ) in warned
    broken = text.replace("then a\n", "then a via\n")
    found = ruleset.analyze({path: broken}).findings[path]
    assert [f.severity for f in found] == ["error"]  # the error only: no warning while it stands
    assert lsp_findings(ruleset, {path: text}) == warned  # fixed: the warnings are back
    fixed = text.replace("event.x < 1", "event.x < 9")
    assert not any("dead" in message for _p, _l, _c, message in lsp_findings(ruleset, {path: fixed}))


def test_a_change_to_a_segment_or_a_schema_is_seen_by_the_unchanged_rules_of_other_files():
    ruleset = ruleset_of(EXAMPLES)
    assert lsp_findings(ruleset, {}) == set()
    segments = (EXAMPLES / "segments.rules").read_text(encoding="utf-8")
    schema = (EXAMPLES / "schema.rules").read_text(encoding="utf-8")
    renamed = {str(EXAMPLES / "segments.rules"): segments.replace("segment vip", "segment vipq")}
    found = lsp_findings(ruleset, renamed)
    assert ("browse.rules", 19, 8, "unknown segment `vip`; did you mean `vipq`?") in found
    assert lsp_findings(ruleset, {}) == set()
    retyped = {str(EXAMPLES / "schema.rules"): schema.replace("cart_value: number", "cart_value: string")}
    assert any(p == "cart.rules" and "cart_value" in m for p, _l, _c, m in lsp_findings(ruleset, retyped))


def test_a_file_is_cut_before_each_declaration_at_a_line_start():
    text = '# head\nrule a\n  when event.type == "x"\nend\n  rule indented\nevent.type\nevent t { a: number }\nprofile {\n}\non t\n'
    assert [first for first, _text in cut(text)] == [0, 1, 6, 7, 9]
    assert "\n".join(piece for _first, piece in cut(text)) == text


def test_the_ruleset_of_a_file(tmp_path):
    (tmp_path / "rules" / "retail").mkdir(parents=True)
    (tmp_path / "rules" / "a.rules").write_text("")
    (tmp_path / "rules" / "retail" / "b.rules").write_text("")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "c.rules").write_text("")
    folder = str(tmp_path)
    # up from the file's directory while the parent holds .rules files, not above the folder
    assert ruleset_root(str(tmp_path / "rules" / "retail" / "b.rules"), [folder]) == str(tmp_path / "rules")
    assert ruleset_root(str(tmp_path / "other" / "c.rules"), [folder]) == str(tmp_path / "other")
    (tmp_path / "top.rules").write_text("")
    assert ruleset_root(str(tmp_path / "rules" / "retail" / "b.rules"), [folder]) == folder
    assert ruleset_root(str(tmp_path / "rules" / "retail" / "b.rules"), [str(tmp_path / "rules")]) == str(
        tmp_path / "rules"
    )
    # a configured root wins
    configured = [str(tmp_path / "rules" / "retail")]
    assert ruleset_root(str(tmp_path / "rules" / "retail" / "b.rules"), [folder], configured) == configured[0]
    # no workspace folder: the file's directory
    assert ruleset_root(str(tmp_path / "other" / "c.rules"), []) == str(tmp_path / "other")


def test_a_second_source_of_findings_is_one_entry_and_its_places_are_in_the_files(monkeypatch):
    from nba.dsl import nodes as n
    from nba.engine.lsp import analysis as lsp_analysis
    from nba.engine.lsp.findings import WARNING, Finding

    def every_rule(analysis):  # a lint-like source: a warning at each rule's id
        for module in analysis.modules:
            for decl in module.declarations:
                if isinstance(decl, n.Rule):
                    yield Finding(decl.pos, f"rule {decl.id}", WARNING, "demo")

    monkeypatch.setattr(lsp_analysis, "FINDING_SOURCES", [every_rule])
    cart = str(EXAMPLES / "cart.rules")
    text = (EXAMPLES / "cart.rules").read_text(encoding="utf-8")
    found = ruleset_of(EXAMPLES).analyze({cart: "\n\n" + text}).findings[cart]
    line = text.split("\n").index('rule cart_reminder_email "Abandoned cart reminder"') + 1 + 2
    assert [(f.pos.line, f.pos.column, f.severity, f.code) for f in found][0] == (line, 6, WARNING, "demo")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_rules_name_that_is_no_regular_file_is_reported_as_the_loader_does_without_blocking(tmp_path):
    shutil.copy(EXAMPLES / "segments.rules", tmp_path / "segments.rules")
    os.mkfifo(tmp_path / "pipe.rules")  # opened as an ordinary file, it would block
    expected = loader_findings(tmp_path)
    assert [(p, line) for p, line, _c, _m in expected] == [("pipe.rules", 1)]
    assert lsp_findings(ruleset_of(tmp_path), {}) == expected
