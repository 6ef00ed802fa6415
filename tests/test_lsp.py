"""`nba lsp` driven by a real LSP client over stdio (pytest-lsp starts `python -m nba.engine.lsp`):
the example ruleset, copied to a temporary workspace, with buffers that differ from disk."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pygls.uris import from_fs_path
from pytest_lsp import ClientServerConfig, LanguageClient

from nba.dsl.lint import lint_path

from polling import eventually

EXAMPLES = Path(__file__).resolve().parent.parent / "rules"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "rules", ignore=shutil.ignore_patterns("tests"))
    return tmp_path


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "nba.engine.lsp"]))
async def client(lsp_client: LanguageClient, workspace: Path):
    await lsp_client.initialize_session(
        lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(),
            workspace_folders=[lsp.WorkspaceFolder(uri=from_fs_path(str(workspace)), name="shop")],
        )
    )
    yield
    await lsp_client.shutdown_session()


def uri_of(workspace: Path, name: str) -> str:
    return from_fs_path(str(workspace / "rules" / name))


def open_file(client: LanguageClient, workspace: Path, name: str, text: str | None = None) -> str:
    uri = uri_of(workspace, name)
    if text is None:
        text = (workspace / "rules" / name).read_text(encoding="utf-8")
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="nba-rules", version=1, text=text))
    )
    return uri


def change(client: LanguageClient, uri: str, version: int, text: str, at: lsp.Range | None = None) -> None:
    event = (
        lsp.TextDocumentContentChangePartial(range=at, text=text)
        if at
        else lsp.TextDocumentContentChangeWholeDocument(text=text)
    )
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version), content_changes=[event]
        )
    )


async def published(client: LanguageClient, uri: str, expected) -> list[lsp.Diagnostic]:
    """Waits until the diagnostics published for ``uri`` satisfy ``expected``, and returns them."""

    def as_expected() -> tuple[list[lsp.Diagnostic]] | None:
        current = client.diagnostics.get(uri)
        if current is not None and expected(current):
            return (list(current),)  # a tuple: true also when no diagnostic is expected
        return None

    [diagnostics] = await eventually(
        as_expected, lambda: f"diagnostics as expected for {uri} (last: {client.diagnostics.get(uri)})"
    )
    return diagnostics


def position_of(text: str, needle: str, offset: int = 0) -> lsp.Position:
    """The position of ``needle`` (plus ``offset`` characters) in ``text`` (ASCII)."""
    index = text.index(needle) + offset
    line = text.count("\n", 0, index)
    return lsp.Position(line=line, character=index - (text.rfind("\n", 0, index) + 1))


@pytest.mark.asyncio
async def test_an_error_on_open_has_its_range_and_the_fix_clears_it(client: LanguageClient, workspace: Path):
    disk = (workspace / "rules" / "cart.rules").read_text(encoding="utf-8")
    broken = disk.replace("and event.cart_value > 50", "and event.cart_valeu > 50")
    uri = open_file(client, workspace, "cart.rules", broken)  # the buffer, not the disk, is checked
    found = await published(client, uri, lambda d: len(d) > 0)
    assert len(found) == 1
    (diagnostic,) = found
    start = position_of(broken, "event.cart_valeu")
    assert diagnostic.range == lsp.Range(start, lsp.Position(start.line, start.character + len("event.cart_valeu")))
    assert diagnostic.severity == lsp.DiagnosticSeverity.Error
    assert "cart_valeu" in diagnostic.message and "cart_value" in diagnostic.message  # the closest known name

    typo = position_of(broken, "cart_valeu", len("cart_val"))
    change(client, uri, 2, "ue", lsp.Range(typo, lsp.Position(typo.line, typo.character + 2)))  # valeu -> value
    assert await published(client, uri, lambda d: len(d) == 0) == []


@pytest.mark.asyncio
async def test_a_syntax_error_is_reported_at_the_token(client: LanguageClient, workspace: Path):
    text = (workspace / "rules" / "cart.rules").read_text(encoding="utf-8")
    broken = text.replace('when event.type == "cart_abandoned"', 'when event.type = "cart_abandoned"', 1)
    uri = open_file(client, workspace, "cart.rules", broken)
    (diagnostic,) = await published(client, uri, lambda d: len(d) > 0)
    start = position_of(broken, '= "cart_abandoned"')
    assert diagnostic.range == lsp.Range(start, lsp.Position(start.line, start.character + 1))
    assert "==" in diagnostic.message

    # a later declaration that loses its `end`: the error moves to the next `rule`
    no_end = text.replace("  holdout 10%\nend\n", "  holdout 10%\n", 1)
    change(client, uri, 2, no_end)
    (diagnostic,) = await published(client, uri, lambda d: len(d) == 1 and "end" in d[0].message)
    assert diagnostic.range.start == position_of(no_end, "rule cart_banner_web")


@pytest.mark.asyncio
async def test_an_edit_in_one_buffer_shows_errors_in_the_files_that_depend_on_it(
    client: LanguageClient, workspace: Path
):
    segments = (workspace / "rules" / "segments.rules").read_text(encoding="utf-8")
    uri = open_file(
        client, workspace, "segments.rules", segments.replace("segment vip =", "segment very_important =", 1)
    )
    browse = uri_of(workspace, "browse.rules")  # not open: its disk text is checked with the buffer
    found = await published(client, browse, lambda d: len(d) > 0)
    assert all("vip" in d.message for d in found)
    assert {d.range.start.line for d in found} == {6, 18}  # `if vip then` and `and vip`
    change(client, uri, 2, segments)
    assert await published(client, browse, lambda d: len(d) == 0) == []


@pytest.mark.asyncio
async def test_an_unsaved_new_file_is_part_of_the_ruleset(client: LanguageClient, workspace: Path):
    text = 'rule new_one\n  when event.type == "page_view" and vip and unknown_segment\n  then x via web\nend\n'
    uri = open_file(client, workspace, "new.rules", text)  # not on disk
    (diagnostic,) = await published(client, uri, lambda d: len(d) > 0)
    assert "unknown_segment" in diagnostic.message  # and `vip`, declared on disk, is known
    assert diagnostic.range.start == position_of(text, "unknown_segment")


@pytest.mark.asyncio
async def test_hover(client: LanguageClient, workspace: Path):
    text = (workspace / "rules" / "cart.rules").read_text(encoding="utf-8")
    uri = open_file(client, workspace, "cart.rules")
    await published(client, uri, lambda d: len(d) == 0)

    async def hover(needle: str, offset: int = 0) -> str:
        result = await client.text_document_hover_async(
            lsp.HoverParams(lsp.TextDocumentIdentifier(uri=uri), position_of(text, needle, offset))
        )
        assert result is not None, needle
        return result.contents.value

    assert "event.cart_value: number" in await hover("event.cart_value > 50", len("event.c"))
    assert "cart_abandoned" in await hover("event.cart_value > 50", len("event.c"))
    segment = await hover("email_ok")
    assert "segment email_ok = profile.email_opt_in == true" in segment
    assert "count(TYPE [where CONDITION] within DURATION)" in await hover("count(purchase")
    assert "event cart_abandoned {" in await hover('"cart_abandoned"', 3)  # an event type, in its string

    profile_text = (workspace / "rules" / "profile_updates.rules").read_text(encoding="utf-8")
    profile_uri = open_file(client, workspace, "profile_updates.rules")
    needle = "profile.lifetime_value"
    result = await client.text_document_hover_async(
        lsp.HoverParams(
            lsp.TextDocumentIdentifier(uri=profile_uri), position_of(profile_text, needle, len("profile.l"))
        )
    )
    assert "profile.lifetime_value: number" in result.contents.value
    coalesce = await client.text_document_hover_async(
        lsp.HoverParams(lsp.TextDocumentIdentifier(uri=profile_uri), position_of(profile_text, "coalesce(", 2))
    )
    assert "coalesce(a, b, ...)" in coalesce.contents.value


@pytest.mark.asyncio
async def test_go_to_definition_across_files(client: LanguageClient, workspace: Path):
    text = (workspace / "rules" / "cart.rules").read_text(encoding="utf-8")
    schema = (workspace / "rules" / "schema.rules").read_text(encoding="utf-8")
    segments = (workspace / "rules" / "segments.rules").read_text(encoding="utf-8")
    uri = open_file(client, workspace, "cart.rules")

    async def definition(needle: str, offset: int = 0) -> list[lsp.Location]:
        return await client.text_document_definition_async(
            lsp.DefinitionParams(lsp.TextDocumentIdentifier(uri=uri), position_of(text, needle, offset))
        )

    (segment,) = await definition("email_ok", 3)
    assert segment.uri == uri_of(workspace, "segments.rules")
    assert segment.range.start == position_of(segments, "email_ok =")
    (field,) = await definition("event.cart_value > 50", len("event.cart"))
    assert field.uri == uri_of(workspace, "schema.rules")
    assert field.range.start == position_of(schema, "cart_value: number")
    (event_type,) = await definition('"cart_abandoned"', 2)
    assert event_type.range.start == position_of(schema, "cart_abandoned {")
    assert await definition("# Abandoned") == []


@pytest.mark.asyncio
async def test_completion(client: LanguageClient, workspace: Path):
    text = (workspace / "rules" / "cart.rules").read_text(encoding="utf-8")
    typing = text.replace("   and email_ok\n", "   and event.\n   and profile.\n   and email_ok\n", 1)
    uri = open_file(client, workspace, "cart.rules", typing)  # a syntax error now: completion still works

    async def labels(needle: str, offset: int) -> set[str]:
        result = await client.text_document_completion_async(
            lsp.CompletionParams(lsp.TextDocumentIdentifier(uri=uri), position_of(typing, needle, offset))
        )
        return {item.label for item in result.items}

    after_event = await labels("and event.\n", len("and event."))
    assert {"cart_value", "items", "type", "customer_id", "time"} <= after_event
    assert "category" not in after_event  # a page_view field: this rule is about cart_abandoned
    after_profile = await labels("and profile.\n", len("and profile."))
    assert {"tier", "lifetime_value", "email_opt_in", "last_purchase_at"} <= after_profile
    anywhere = await labels("   and email_ok", len("   and "))
    assert {"when", "then", "holdout", "within"} <= anywhere  # keywords
    assert {"vip", "email_ok", "push_ok"} <= anywhere  # segments of another file
    assert {"coalesce", "matches", "count", "since"} <= anywhere  # functions and aggregates
    assert {"page_view", "purchase", "cart_abandoned"} <= anywhere  # event types
    assert "cart_value" not in anywhere


@pytest.mark.asyncio
async def test_document_symbols(client: LanguageClient, workspace: Path):
    uri = open_file(client, workspace, "cart.rules")
    text = (workspace / "rules" / "cart.rules").read_text(encoding="utf-8")
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri=uri))
    )
    assert [(s.name, s.kind) for s in symbols] == [
        ("cart_reminder_email", lsp.SymbolKind.Function),
        ("cart_banner_web", lsp.SymbolKind.Function),
    ]
    first = symbols[0]
    assert first.selection_range.start == position_of(text, "cart_reminder_email")
    assert first.range.start.line == position_of(text, "rule cart_reminder_email").line
    assert first.range.end.line == position_of(text, "  holdout 10%\nend", len("  holdout 10%\n")).line

    schema_uri = open_file(client, workspace, "schema.rules")
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri=schema_uri))
    )
    names = [s.name for s in symbols]
    assert names[0] == "profile" and "event page_view" in names and "event purchase" in names
    assert symbols[0].kind == lsp.SymbolKind.Struct
    assert "tier" in [c.name for c in symbols[0].children]

    segments_uri = open_file(client, workspace, "segments.rules")
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri=segments_uri))
    )
    assert [(s.name, s.kind) for s in symbols][:2] == [
        ("vip", lsp.SymbolKind.Variable),
        ("email_ok", lsp.SymbolKind.Variable),
    ]
    policies_uri = open_file(client, workspace, "policies.rules")
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri=policies_uri))
    )
    assert any(s.name.startswith("policy ") and s.kind == lsp.SymbolKind.Constant for s in symbols)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "nba.engine.cli", "lsp"]))
async def cli_client(lsp_client: LanguageClient, workspace: Path):
    result = await lsp_client.initialize_session(
        lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(),
            workspace_folders=[lsp.WorkspaceFolder(uri=from_fs_path(str(workspace)), name="shop")],
            initialization_options={"debounceMs": 50},
        )
    )
    lsp_client.server_info = result
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio
async def test_nba_lsp_is_the_server(cli_client: LanguageClient, workspace: Path):
    result = cli_client.server_info
    assert result.server_info.name == "nba-lsp"
    capabilities = result.capabilities
    assert capabilities.hover_provider and capabilities.definition_provider and capabilities.document_symbol_provider
    assert "." in capabilities.completion_provider.trigger_characters
    uri = open_file(cli_client, workspace, "lifecycle.rules", "rule broken\n  when nothing_here\n  then x\nend\n")
    (diagnostic,) = await published(cli_client, uri, lambda d: len(d) > 0)  # with a debounce too
    assert diagnostic.range == lsp.Range(lsp.Position(1, 7), lsp.Position(1, 19))


LINTED = """rule dead "Never fires"
  when event.type == "page_view"
   and event.category == "shoes"
   and event.category == "bags"
  then nothing via web
end

rule doubled
  when event.type == "purchase" and event.amount > 100 and event.amount > 50
  then thanks via email
end

rule gone
  when event.type == "page_view"
  then old_offer via web
  active from 2020-01-01 to 2020-02-01
end
"""


def lint_of(workspace: Path, name: str) -> list[tuple]:
    """`nba lint`'s warnings for one file of the workspace's ruleset: (line, column, code, message)."""
    warnings, _sources = lint_path(workspace / "rules")
    path = str(workspace / "rules" / name)
    return [(w.pos.line, w.pos.column, w.code, w.message) for w in warnings if w.pos.path == path]


def as_lint(diagnostics: list[lsp.Diagnostic]) -> list[tuple]:
    """Diagnostics as `nba lint` places them (lines and columns from 1)."""
    return [(d.range.start.line + 1, d.range.start.character + 1, d.code, d.message) for d in diagnostics]


@pytest.mark.asyncio
async def test_lint_warnings_are_shown_errors_hide_them_and_fixes_clear_them(client: LanguageClient, workspace: Path):
    (workspace / "rules" / "linted.rules").write_text(LINTED, encoding="utf-8")
    expected = lint_of(workspace, "linted.rules")
    assert [code for _l, _c, code, _m in expected] == ["never-matches", "redundant-condition", "expired"]
    uri = open_file(client, workspace, "linted.rules")
    found = await published(client, uri, lambda d: len(d) == 3)
    assert all(d.severity == lsp.DiagnosticSeverity.Warning and d.source == "nba lint" for d in found)
    # as `nba lint` says them (the time in `expired`'s message is the time of each check)
    assert as_lint(found)[:2] == expected[:2] and as_lint(found)[2][:3] == expected[2][:3]
    when = position_of(LINTED, 'when event.type == "page_view"\n   and')
    assert found[0].range == lsp.Range(when, lsp.Position(when.line, when.character + len("when")))
    redundant = position_of(LINTED, "event.amount > 50")
    assert found[1].range == lsp.Range(
        redundant, lsp.Position(redundant.line, redundant.character + len("event.amount"))
    )
    # the example ruleset's own warnings (its Black Friday rules are over), in a file not open
    campaigns = uri_of(workspace, "campaigns.rules")
    over = [(line, column, code) for line, column, code, _m in lint_of(workspace, "campaigns.rules")]
    assert [code for _l, _c, code in over] == ["expired", "expired"]
    shown = await published(client, campaigns, lambda d: len(d) == 2)
    assert [(line, column, code) for line, column, code, _m in as_lint(shown)] == over

    # an error: only the error is shown, here and in the other files
    broken = "\n" + LINTED.replace("then thanks via email", "then thanks via", 1)
    change(client, uri, 2, broken)
    (error,) = await published(client, uri, lambda d: len(d) == 1 and d[0].severity == lsp.DiagnosticSeverity.Error)
    assert error.source == "nba" and error.code is None
    assert await published(client, campaigns, lambda d: len(d) == 0) == []

    # the error fixed, a line still added above: the warnings are back, moved down a line
    change(client, uri, 3, "\n" + LINTED)
    found = await published(client, uri, lambda d: len(d) == 3)
    assert [line for line, *_ in as_lint(found)] == [line + 1 for line, *_ in expected]
    assert len(await published(client, campaigns, lambda d: len(d) == 2)) == 2

    # each fixed in turn: its warning goes
    fixed = "\n" + LINTED.replace(' and event.category == "bags"', "").replace(" and event.amount > 50", "")
    change(client, uri, 4, fixed)
    (left,) = await published(client, uri, lambda d: len(d) == 1)
    assert left.code == "expired"
    change(client, uri, 5, fixed.replace("2020-02-01", "2999-02-01"))
    assert await published(client, uri, lambda d: len(d) == 0) == []
