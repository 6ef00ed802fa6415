"""Pieces of the language server that need no client: ranges in UTF-16, the tables of
functions kept in step with the checker's."""

from __future__ import annotations

from lsprotocol import types as lsp

from nba.dsl.checker import BUILTIN_EVENT_FIELDS, FUNCTIONS
from nba.dsl.source import Position
from nba.engine.lsp.analysis import Finding
from nba.engine.lsp.features import Document, diagnostics
from nba.engine.lsp.symbols import BUILTIN_EVENT_DOCS, FUNCTION_DOCS
from nba.engine.lsp.text import char_index, token_span, utf16_column, word_at


def test_every_function_of_the_checker_has_a_signature_and_every_builtin_field_a_doc():
    assert set(FUNCTION_DOCS) == set(FUNCTIONS)
    assert set(BUILTIN_EVENT_DOCS) == set(BUILTIN_EVENT_FIELDS)


def test_ranges_count_utf16_code_units():
    # "🎁" is one character of the rule language and two UTF-16 code units
    text = 'rule gift "🎁 é" when event.nope == 1\n'
    column = text.index("event.nope") + 1  # the rule language counts characters from 1
    (diagnostic,) = diagnostics(Document("/r.rules", text), [Finding(Position("/r.rules", 1, column), "unknown")])
    start = text.index("event.nope") + 1  # one more code unit for the emoji
    assert diagnostic.range == lsp.Range(lsp.Position(0, start), lsp.Position(0, start + len("event.nope")))
    assert utf16_column("a🎁b", 2) == 3 and char_index("a🎁b", 3) == 2


def test_token_spans():
    line = 'x == "a \\" b" and 30m < 2026-11-27T09:30:00Z and event . tier and 10%'

    def span(at: str) -> str:
        start, end = token_span(line, line.index(at))
        return line[start:end]

    assert span('"a') == '"a \\" b"'
    assert span("30m") == "30m"
    assert span("2026") == "2026-11-27T09:30:00Z"
    assert span("event") == "event . tier"
    assert span("10%") == "10%"
    assert span("==") == "=="


def test_the_word_at_the_cursor():
    line = "  when event.cart_value > 30m and lower(profile.tier) == x"
    word = word_at(line, line.index("cart_value") + 3)
    assert (word.text, word.qualifiers, word.called) == ("cart_value", ("event",), False)
    assert word_at(line, line.index("lower") + 1).called
    assert word_at(line, line.index("30m") + 2) is None  # the unit of a duration is no name
