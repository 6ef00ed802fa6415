"""Rule text for fuzzing the loader: generated from the grammar (dsl/grammar.lark) and
mutated from the rule files in rules/ (bytes and tokens), with the property every
input must satisfy. Used by tests/test_dsl_fuzz.py (bounded, fixed seeds) and by
scripts/fuzz_rules.py (longer runs).

The property: the loader loads the text, or raises ``LoadError`` whose every error
points inside the file (PATH:LINE:COLUMN, LINE from 1 to the file's lines, COLUMN from 1
to one past the line's end, PATH one of the ruleset's files); never another exception.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.extra import lark as hypothesis_lark

from nba.dsl import LoadError, load_ruleset, load_text
from nba.dsl.syntax import parser

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "rules").glob("*.rules"))
SEED_TEXTS = {path.name: path.read_bytes() for path in RULE_FILES}

NAMES = ["vip", "cart", "buy", "page_view", "amount", "tier", "x", "a", "s", "e", "lower", "count", "matches"]
HUGE = ["1" + "0" * 400, "1" + "0" * 4301, "9" * 309, "1" + "0" * 300 + ".5", "0." + "0" * 500 + "1"]
# pieces a token mutation inserts: keywords, operators, odd literals, odd characters
VOCABULARY = [
    "rule",
    "segment",
    "policy",
    "on",
    "set",
    "when",
    "then",
    "via",
    "with",
    "priority",
    "cap",
    "per",
    "holdout",
    "active",
    "from",
    "to",
    "end",
    "and",
    "or",
    "not",
    "in",
    "within",
    "where",
    "if",
    "else",
    "true",
    "false",
    "null",
    "default",
    "profile",
    "event",
    "all",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    ":",
    "=",
    "==",
    "!=",
    "<",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    '"',
    '"\\q"',
    "'x'",
    "&&",
    "||",
    "!",
    "7d",
    "0s",
    "10%",
    "120%",
    "2026-02-30",
    "2026-11-27T09:30:00Z",
    "count(buy within 1d)",
    'matches(event.x, "[")',
    "profile.x",
    "event.type",
    "\n",
    "\t",
    "\r",
    "\ufeff",
    "\u00e9",
    "\U0001f600",
    "\x00",
    "#",
    "((((((((((",
    "))))))))))",
    *HUGE,
]
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\d[\w.:+-]*|\w+|==|!=|<=|>=|\S|\s+')


class _SpacedGrammar(hypothesis_lark.LarkStrategy):
    """The grammar's sentences with white space between every two tokens (hypothesis puts
    the ignored tokens only now and then, and then most keywords run into the next name)."""

    def gen_ignore(self, data, draw_state):
        draw_state.append(data.draw(st.sampled_from([" ", "\n", "  ", " # note\n", "\n\n"])))


def _explicit() -> dict:
    return {
        "NAME": st.sampled_from(NAMES)
        | st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda name: name not in VOCABULARY),
        "NUMBER": st.sampled_from(["0", "1", "2.5", "100", *HUGE]),
        "SIGNED_NUMBER": st.sampled_from(["0", "1", "-2", "3", "1.5", *HUGE]),
        "STRING": st.sampled_from(['"a"', '"vip"', '"[a-z]+"', '"("', '"\\n"', '"\\u"', '""']),
    }


def grammar_texts() -> st.SearchStrategy[str]:
    """Rule text generated from dsl/grammar.lark (mostly valid syntax, any meaning)."""
    grammar = parser()
    try:
        return _SpacedGrammar(grammar, None, _explicit(), st.characters(codec="utf-8"))
    except TypeError:  # another hypothesis version: its own generator, without the spacing
        return hypothesis_lark.from_lark(grammar, explicit=_explicit())


@st.composite
def byte_mutants(draw) -> tuple[str, bytes]:
    """(file name, bytes) of one file of rules/ with a few byte-level changes."""
    name = draw(st.sampled_from(sorted(SEED_TEXTS)))
    data = bytearray(SEED_TEXTS[name])
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "truncate"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "duplicate":
            end = min(len(data), at + draw(st.integers(1, 200)))
            data[at:at] = data[at:end]
        else:
            del data[at:]
    return name, bytes(data)


@st.composite
def token_mutants(draw) -> tuple[str, str]:
    """(file name, text) of one file of rules/ with tokens deleted, repeated, swapped or
    replaced by keywords, operators and odd literals."""
    name = draw(st.sampled_from(sorted(SEED_TEXTS)))
    tokens = TOKEN.findall(SEED_TEXTS[name].decode("utf-8"))
    for _ in range(draw(st.integers(1, 6))):
        if not tokens:
            break
        at = draw(st.integers(0, len(tokens) - 1))
        kind = draw(st.sampled_from(["delete", "repeat", "swap", "replace", "insert"]))
        if kind == "delete":
            del tokens[at]
        elif kind == "repeat":
            tokens[at:at] = [tokens[at]] * draw(st.integers(1, 50))
        elif kind == "swap":
            other = draw(st.integers(0, len(tokens) - 1))
            tokens[at], tokens[other] = tokens[other], tokens[at]
        elif kind == "replace":
            tokens[at] = draw(st.sampled_from(VOCABULARY))
        else:
            tokens[at:at] = [" ", draw(st.sampled_from(VOCABULARY)), " "]
    return name, "".join(tokens)


def check_text(text: str, name: str = "fuzz.rules") -> None:
    """The property, for one text loaded as one file."""
    try:
        load_text(text, name)
    except LoadError as exc:
        check_positions(exc, {name: text})


def check_directory(directory: Path, files: dict[str, bytes]) -> None:
    """The property, for a ruleset directory holding ``files`` (name -> bytes)."""
    for old in directory.glob("*.rules"):
        old.unlink()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    try:
        load_ruleset(directory)
    except LoadError as exc:
        texts = {}
        for name, data in files.items():
            try:
                texts[os.path.join(directory, name)] = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                texts[os.path.join(directory, name)] = ""
        check_positions(exc, texts)


def check_positions(exc: LoadError, texts: dict[str, str]) -> None:
    assert exc.diagnostics, "a LoadError without an error"
    for diagnostic in exc.diagnostics:
        pos = diagnostic.pos
        assert pos.path in texts, (pos.path, list(texts))
        lines = texts[pos.path].split("\n")
        assert 1 <= pos.line <= max(len(lines), 1), (str(pos), diagnostic.message)
        line = lines[pos.line - 1] if pos.line <= len(lines) else ""
        assert 1 <= pos.column <= len(line) + 1, (str(pos), len(line), diagnostic.message)
        assert diagnostic.message and len(diagnostic.message) < 2000, diagnostic.message
    exc.report()  # the report renders


def timed(check, *args, limit_s: float):
    """Run ``check(*args)``; AssertionError when it takes longer than ``limit_s``."""
    started = time.perf_counter()
    check(*args)
    elapsed = time.perf_counter() - started
    assert elapsed < limit_s, f"took {elapsed:.1f} s"
