"""Hover, go to definition, completion and document symbols, computed from an analysis of
the ruleset and the text of the open buffer. Positions in and out are the protocol's
(lines from 0, columns in UTF-16 code units)."""

from __future__ import annotations

import re
from typing import Callable

from lsprotocol import types as lsp

from nba.dsl import nodes as n
from nba.dsl.checker import BUILTIN_EVENT_FIELDS, FUNCTIONS, SCHEMA_KINDS
from nba.dsl.source import Position
from nba.engine.lsp.analysis import Analysis
from nba.engine.lsp.chunks import DECLARATION_START
from nba.engine.lsp.findings import WARNING, Finding
from nba.engine.lsp.symbols import AGGREGATE_DOCS, BUILTIN_EVENT_DOCS, FUNCTION_DOCS, KEYWORDS, Index
from nba.engine.lsp.text import (
    Word,
    char_index,
    in_string_or_comment,
    qualifiers_before,
    token_span,
    utf16_column,
    word_at,
)

ToUri = Callable[[str], str]


class Document:
    """One buffer's lines, for converting between the protocol's positions and the rule
    language's (lines and columns from 1, in characters)."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.lines = text.split("\n")

    def line(self, number: int) -> str:
        """Line ``number`` (from 0), without its line break; "" past the end."""
        if 0 <= number < len(self.lines):
            return self.lines[number].rstrip("\r")
        return ""

    def protocol_position(self, line: int, index: int) -> lsp.Position:
        return lsp.Position(line=line, character=utf16_column(self.line(line), index))

    def token_range(self, pos: Position) -> lsp.Range:
        """The range of the token at a place the rule language names (line, column from 1)."""
        line = max(pos.line - 1, 0)
        start, end = token_span(self.line(line), max(pos.column - 1, 0))
        return lsp.Range(self.protocol_position(line, start), self.protocol_position(line, end))

    def cursor(self, position: lsp.Position) -> tuple[str, int]:
        """The cursor's line text and character index in it."""
        text = self.line(position.line)
        return text, char_index(text, position.character)


# ---- diagnostics -------------------------------------------------------------------------


def diagnostics(document: Document, findings: list[Finding]) -> list[lsp.Diagnostic]:
    return [
        lsp.Diagnostic(
            range=document.token_range(f.pos),
            message=f.message,
            severity=lsp.DiagnosticSeverity.Warning if f.severity == WARNING else lsp.DiagnosticSeverity.Error,
            code=f.code,
            source=f.source,
        )
        for f in findings
    ]


# ---- what is under the cursor --------------------------------------------------------------


class Context:
    """A buffer, the analysis of its ruleset and the declaration the cursor is in."""

    def __init__(self, analysis: Analysis, index: Index, document: Document, position: lsp.Position):
        self.analysis = analysis
        self.index = index
        self.document = document
        self.line_text, self.index_in_line = document.cursor(position)
        self.position = position

    def event_types(self) -> frozenset[str] | None:
        """The event types the declaration at the cursor is about; None: any.

        Read from the text, not the syntax tree, since the declaration being typed in often
        does not parse: an `on TYPE` block's type, or every type a rule tests with
        `event.type == "..."` or `event.type in [...]`.
        """
        lines = self.document.lines
        start = min(self.position.line, len(lines) - 1)
        while start > 0 and not DECLARATION_START.match(lines[start]):
            start -= 1
        end = start + 1
        while end < len(lines) and not DECLARATION_START.match(lines[end]):
            end += 1
        on_block = re.match(r"on\s+([A-Za-z_][A-Za-z0-9_]*)", lines[start]) if lines else None
        if on_block:
            return frozenset({on_block.group(1)})
        code = "\n".join(_code(line) for line in lines[start:end])
        types: set[str] = set()
        for match in _TYPE_TEST.finditer(code):
            if match.group(1) is not None:
                types.add(match.group(1))
            else:
                types.update(re.findall(r'"([^"\\]*)"', match.group(2)))
        return frozenset(types) or None

    def word(self) -> Word | None:
        return word_at(self.line_text, self.index_in_line)


_TYPE_TEST = re.compile(r'\bevent\s*\.\s*type\s*(?:==\s*"([^"\\]*)"|in\s*\[([^\]]*)\])')


def _code(line: str) -> str:
    """The line without its comment."""
    for index, ch in enumerate(line):
        if ch == "#" and in_string_or_comment(line, index) is None:
            return line[:index]
    return line


def _markdown(text: str) -> lsp.MarkupContent:
    return lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text)


def _kind(schema_type: str) -> str:
    return schema_type if SCHEMA_KINDS.get(schema_type) == schema_type else f"{schema_type} (a number)"


# ---- hover -------------------------------------------------------------------------------


def hover(ctx: Context) -> lsp.Hover | None:
    word = ctx.word()
    if word is None or in_string_or_comment(ctx.line_text, word.start) == "comment":
        return None
    text = _hover_text(ctx, word)
    if text is None:
        return None
    line = ctx.position.line
    return lsp.Hover(
        contents=_markdown(text),
        range=lsp.Range(
            ctx.document.protocol_position(line, word.start), ctx.document.protocol_position(line, word.end)
        ),
    )


def _hover_text(ctx: Context, word: Word) -> str | None:
    index = ctx.index
    if in_string_or_comment(ctx.line_text, word.start) == "string":
        return _event_type_text(index, word.text) if word.text in index.event_types else None
    quals = word.qualifiers
    if quals == ("event",):
        return _event_field_text(index, word.text, ctx.event_types())
    if quals == ("profile",):
        f = index.profile_fields.get(word.text)
        if f is None:
            return f"`profile.{word.text}`: not declared in the `profile` schema"
        return f"```\nprofile.{f.name}: {f.type}\n```\nA field of the customer's profile (`{_kind(f.type)}`)."
    if len(quals) == 1 and quals[0] in index.event_schemas:
        return _event_field_text(index, word.text, frozenset(quals))
    if quals:
        return None
    if word.called and (word.text in FUNCTION_DOCS or word.text in AGGREGATE_DOCS):
        return _function_text(word.text)
    if word.text in index.segments:
        return _segment_text(ctx, index.segments[word.text])
    if _after_keyword(ctx.line_text, word.start, "set"):
        f = index.profile_fields.get(word.text)
        if f is not None:
            return f"```\nprofile.{f.name}: {f.type}\n```\nA field of the customer's profile, set by this `on` block."
    if word.text in index.event_types:
        return _event_type_text(index, word.text)
    return None


def _after_keyword(line: str, start: int, keyword: str) -> bool:
    return re.search(rf"(?:^|[^A-Za-z0-9_.]){keyword}\s+$", line[:start]) is not None


def _event_field_text(index: Index, name: str, types: frozenset[str] | None) -> str:
    if name in BUILTIN_EVENT_FIELDS:
        kind = "time" if name == "time" else BUILTIN_EVENT_FIELDS[name]
        return f"```\nevent.{name}: {kind}\n```\nBuilt in: {BUILTIN_EVENT_DOCS[name]}."
    declared = index.event_fields(types).get(name) or index.event_fields(None).get(name, [])
    if not declared:
        where = "the event schemas" if types is None else "the schema of " + ", ".join(f"`{t}`" for t in sorted(types))
        return f"`event.{name}`: not declared in {where}"
    lines = [f"event.{name}: {f.type}    # event {event_type}" for event_type, f in declared]
    return "```\n" + "\n".join(lines) + "\n```\nA field of the event being decided."


def _event_type_text(index: Index, event_type: str) -> str:
    schema = index.event_schemas.get(event_type)
    if schema is None:
        return f"Event type `{event_type}` (no schema declares its fields)."
    fields = "\n".join(f"  {f.name}: {f.type}" for f in schema.fields)
    return f"```\nevent {event_type} {{\n{fields}\n}}\n```"


def _function_text(name: str) -> str:
    parts = []
    if name in AGGREGATE_DOCS:
        signature, doc = AGGREGATE_DOCS[name]
        parts.append(f"```\n{signature}\n```\nAn aggregate over the customer's history: {doc}")
    if name in FUNCTION_DOCS:
        signature, doc = FUNCTION_DOCS[name]
        result = FUNCTIONS[name][3]
        result = "any value" if result == "any" else f"a {result}" if result != "bool" else "a bool"
        parts.append(f"```\n{signature} -> {result}\n```\n{doc}")
    return "\n\n".join(parts)


def _segment_text(ctx: Context, segment: n.Segment) -> str:
    pos = ctx.analysis.place(segment.pos)
    source = ctx.analysis.sources.get(pos.path, "")
    text = declaration_text(source, pos, _starts(ctx.analysis, pos.path))
    return f"```\n{text}\n```\nA segment (declared in `{_short(ctx.analysis, pos.path)}`)."


def _short(analysis: Analysis, path: str) -> str:
    import os

    return os.path.relpath(path, analysis.root)


def _starts(analysis: Analysis, path: str) -> list[int]:
    module = analysis.module(path)
    return [analysis.place(d.pos).line for d in module.declarations] if module else []


def declaration_lines(lines: list[str], first: int, starts: list[int]) -> tuple[int, int]:
    """The lines (from 1, both included) of the declaration whose first line is ``first``:
    up to the next declaration, less trailing blank lines and comments."""
    following = [s for s in starts if s > first]
    last = (min(following) - 1) if following else len(lines)
    while last > first and (not lines[last - 1].strip() or lines[last - 1].lstrip().startswith("#")):
        last -= 1
    return first, last


def declaration_text(source: str, pos: Position, starts: list[int]) -> str:
    lines = source.split("\n")
    first, last = declaration_lines(lines, pos.line, starts)
    return "\n".join(line.rstrip() for line in lines[first - 1 : last])


# ---- go to definition ----------------------------------------------------------------------


def definition(ctx: Context, to_uri: ToUri) -> list[lsp.Location]:
    word = ctx.word()
    if word is None:
        return []
    places = _definition_places(ctx, word)
    out = []
    for pos in map(ctx.analysis.place, places):
        source = ctx.analysis.sources.get(pos.path, "")
        out.append(lsp.Location(uri=to_uri(pos.path), range=Document(pos.path, source).token_range(pos)))
    return out


def _definition_places(ctx: Context, word: Word) -> list[Position]:
    index = ctx.index
    where = in_string_or_comment(ctx.line_text, word.start)
    if where == "comment":
        return []
    if where == "string":
        schema = index.event_schemas.get(word.text)
        return [schema.pos] if schema else []
    quals = word.qualifiers
    if quals == ("event",):
        types = ctx.event_types()
        found = index.event_fields(types).get(word.text) or index.event_fields(None).get(word.text, [])
        return [f.pos for _t, f in found]
    if quals == ("profile",):
        f = index.profile_fields.get(word.text)
        return [f.pos] if f else []
    if len(quals) == 1 and quals[0] in index.event_schemas:
        found = index.event_fields(frozenset(quals)).get(word.text, [])
        return [f.pos for _t, f in found]
    if quals:
        return []
    if word.text in index.segments and not word.called:
        return [index.segments[word.text].pos]
    if _after_keyword(ctx.line_text, word.start, "set") and word.text in index.profile_fields:
        return [index.profile_fields[word.text].pos]
    if word.text in index.event_schemas:
        return [index.event_schemas[word.text].pos]
    return []


# ---- completion --------------------------------------------------------------------------


def completion(ctx: Context) -> list[lsp.CompletionItem]:
    line, cursor = ctx.line_text, ctx.index_in_line
    where = in_string_or_comment(line, cursor)
    if where == "comment":
        return []
    index = ctx.index
    if where == "string":
        return [_item(t, lsp.CompletionItemKind.Event, "event type") for t in sorted(index.event_types)]
    partial = re.search(r"[A-Za-z_][A-Za-z0-9_]*$", line[:cursor])
    start = partial.start() if partial else cursor
    quals = qualifiers_before(line, start)
    if quals == ("event",):
        return _event_field_items(index, ctx.event_types())
    if quals == ("profile",):
        return [_item(f.name, lsp.CompletionItemKind.Field, f.type) for f in index.profile_fields.values()]
    if len(quals) == 1 and quals[0] in index.event_schemas:
        return _event_field_items(index, frozenset(quals), builtins=False)
    if quals:
        return []
    before = line[:start]
    if _after_keyword(before, len(before), "set"):
        return [_item(f.name, lsp.CompletionItemKind.Field, f.type) for f in index.profile_fields.values()]
    if _after_keyword(before, len(before), "on") or re.search(
        r"\b(count|sum|avg|min|max|distinct|since)\s*\(\s*$", before
    ):
        return [_item(t, lsp.CompletionItemKind.Event, "event type") for t in sorted(index.event_types)]
    if _after_keyword(before, len(before), "via") or _after_keyword(before, len(before), "policy"):
        return [_item(c, lsp.CompletionItemKind.EnumMember, "channel") for c in sorted(index.channels)]
    items = [_item(k, lsp.CompletionItemKind.Keyword, "keyword") for k in KEYWORDS]
    items += [_item(name, lsp.CompletionItemKind.Variable, "segment") for name in sorted(index.segments)]
    for name in sorted(set(FUNCTION_DOCS) | set(AGGREGATE_DOCS)):
        signature = (FUNCTION_DOCS.get(name) or AGGREGATE_DOCS[name])[0]
        items.append(_item(name, lsp.CompletionItemKind.Function, signature, _function_text(name)))
    items += [_item(t, lsp.CompletionItemKind.Event, "event type") for t in sorted(index.event_types)]
    return items


def _event_field_items(index: Index, types: frozenset[str] | None, builtins: bool = True) -> list[lsp.CompletionItem]:
    items = []
    if builtins:
        items += [
            _item(name, lsp.CompletionItemKind.Field, f"built in: {BUILTIN_EVENT_DOCS[name]}")
            for name in BUILTIN_EVENT_FIELDS
        ]
    fields = index.event_fields(types) or index.event_fields(None)
    for name, declared in fields.items():
        if name in BUILTIN_EVENT_FIELDS:
            continue
        detail = ", ".join(f"{f.type} in {t}" for t, f in declared)
        items.append(_item(name, lsp.CompletionItemKind.Field, detail))
    return items


def _item(label: str, kind: lsp.CompletionItemKind, detail: str, doc: str | None = None) -> lsp.CompletionItem:
    return lsp.CompletionItem(label=label, kind=kind, detail=detail, documentation=_markdown(doc) if doc else None)


# ---- document symbols ----------------------------------------------------------------------


def document_symbols(analysis: Analysis, document: Document) -> list[lsp.DocumentSymbol]:
    module = analysis.module(document.path)
    if module is None:
        return []
    place = analysis.place
    starts = [place(d.pos).line for d in module.declarations]
    out = []
    for decl in module.declarations:
        described = _describe(decl)
        if described is None:
            continue
        name, kind, detail = described
        children = None
        if isinstance(decl, (n.ProfileSchema, n.EventSchema)):
            children = [
                _symbol(document, f.name, lsp.SymbolKind.Field, f.type, place(f.pos), (place(f.pos).line,) * 2)
                for f in decl.fields
            ]
        pos = place(decl.pos)
        lines = declaration_lines(document.lines, pos.line, starts)
        out.append(_symbol(document, name, kind, detail, pos, lines, children))
    return out


def _describe(decl: n.Node) -> tuple[str, lsp.SymbolKind, str | None] | None:
    if isinstance(decl, n.Rule):
        return decl.id, lsp.SymbolKind.Function, decl.title or "rule"
    if isinstance(decl, n.Segment):
        return decl.id, lsp.SymbolKind.Variable, "segment"
    if isinstance(decl, n.Policy):
        return decl.label, lsp.SymbolKind.Constant, f"cap {decl.limit}"
    if isinstance(decl, n.ProfileSchema):
        return "profile", lsp.SymbolKind.Struct, "profile schema"
    if isinstance(decl, n.EventSchema):
        return f"event {decl.event_type}", lsp.SymbolKind.Struct, "event schema"
    if isinstance(decl, n.OnUpdate):
        return f"on {decl.event_type}", lsp.SymbolKind.Event, "profile updates"
    if isinstance(decl, n.Default):
        return "default", lsp.SymbolKind.Constant, decl.then.action
    return None


def _symbol(document, name, kind, detail, pos: Position, lines: tuple[int, int], children=None) -> lsp.DocumentSymbol:
    selection = document.token_range(pos)
    first, last = lines
    start = lsp.Position(line=first - 1, character=0)
    end = document.protocol_position(last - 1, len(document.line(last - 1)))
    if (end.line, end.character) < (selection.end.line, selection.end.character):
        end = selection.end
    return lsp.DocumentSymbol(
        name=name, kind=kind, detail=detail, range=lsp.Range(start, end), selection_range=selection, children=children
    )
