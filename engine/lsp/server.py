"""`nba lsp`: the Language Server Protocol over stdio for `.rules` files, on pygls.

Each open file belongs to a ruleset (see ``analysis.ruleset_root``). On open and on every
change, that ruleset is checked with the open buffers over the files on disk, and the
findings of every one of its files are published (an edit in one file can break another).
Changes that come faster than checks are coalesced: a check starts once no change has come
for ``debounceMs`` (default 0: on the next turn of the event loop, which already folds a
burst of queued changes into one check).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from nba.engine.lsp import features
from nba.engine.lsp.analysis import Analysis, Ruleset, normal_path, ruleset_root

NAME = "nba-lsp"
VERSION = "1"
log = logging.getLogger(__name__)


class RulesServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(NAME, VERSION, text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.rulesets: dict[str, Ruleset] = {}
        self.analyses: dict[str, Analysis] = {}  # root -> the latest analysis
        self.published: dict[str, set[str]] = {}  # root -> paths that have findings shown
        self.configured_roots: list[str] = []
        self.debounce_s = 0.0
        self.pending: dict[str, asyncio.TimerHandle | asyncio.Handle] = {}

    # -- which ruleset --

    def folders(self) -> list[str]:
        paths = [to_fs_path(f.uri) for f in self.workspace.folders.values()]
        if not paths and self.workspace.root_path:
            paths = [self.workspace.root_path]
        return [p for p in paths if p]

    def ruleset_for(self, path: str) -> Ruleset:
        root = ruleset_root(path, self.folders(), self.configured_roots)
        if root not in self.rulesets:
            self.rulesets[root] = Ruleset(root)
        return self.rulesets[root]

    def buffers(self, ruleset: Ruleset) -> dict[str, str]:
        out = {}
        for uri, document in self.workspace.text_documents.items():
            path = to_fs_path(uri)
            if path and ruleset.holds(path):
                out[normal_path(path)] = document.source
        return out

    # -- checking --

    def analysis_for(self, path: str) -> Analysis:
        """The latest analysis of the file's ruleset, made now if a change is still pending."""
        ruleset = self.ruleset_for(path)
        if ruleset.root in self.pending or ruleset.root not in self.analyses:
            self.check_now(ruleset.root)
        return self.analyses[ruleset.root]

    def schedule(self, path: str) -> None:
        root = self.ruleset_for(path).root
        handle = self.pending.pop(root, None)
        if handle is not None:
            handle.cancel()
        loop = asyncio.get_running_loop()
        if self.debounce_s > 0:
            self.pending[root] = loop.call_later(self.debounce_s, self.check_now, root)
        else:
            self.pending[root] = loop.call_soon(self.check_now, root)

    def check_now(self, root: str) -> None:
        handle = self.pending.pop(root, None)
        if handle is not None:
            handle.cancel()
        ruleset = self.rulesets[root]
        analysis = ruleset.analyze(self.buffers(ruleset))
        self.analyses[root] = analysis
        self.publish(analysis)

    def publish(self, analysis: Analysis) -> None:
        shown = self.published.get(analysis.root, set())
        now = {path for path, found in analysis.findings.items() if found}
        opened = set(self.buffers(self.rulesets[analysis.root]))  # an open file hears it is clean too
        for path in sorted(now | shown | opened):
            found = analysis.findings.get(path, [])
            uri = from_fs_path(path)
            document = self.workspace.text_documents.get(uri)
            text = document.source if document is not None else analysis.sources.get(path, "")
            self.text_document_publish_diagnostics(
                lsp.PublishDiagnosticsParams(
                    uri=uri,
                    diagnostics=features.diagnostics(features.Document(path, text), found),
                    version=document.version if document is not None else None,
                )
            )
        self.published[analysis.root] = now

    def context(self, uri: str, position: lsp.Position) -> features.Context | None:
        path = to_fs_path(uri)
        if not path:
            return None
        path = normal_path(path)
        analysis = self.analysis_for(path)
        text = self.workspace.get_text_document(uri).source
        return features.Context(analysis, analysis.index, features.Document(path, text), position)

    def configure(self, options: Any) -> None:
        if not isinstance(options, dict):
            return
        roots = options.get("rulesets")
        if isinstance(roots, list):
            self.configured_roots = [normal_path(r) for r in roots if isinstance(r, str) and r]
        debounce = options.get("debounceMs")
        if isinstance(debounce, (int, float)) and not isinstance(debounce, bool) and 0 <= debounce <= 5000:
            self.debounce_s = debounce / 1000
        self.rulesets.clear()
        self.analyses.clear()


server = RulesServer()


@server.feature(lsp.INITIALIZE)
def initialize(ls: RulesServer, params: lsp.InitializeParams) -> None:
    ls.configure(params.initialization_options)


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: RulesServer, params: lsp.DidOpenTextDocumentParams) -> None:
    _changed(ls, params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: RulesServer, params: lsp.DidChangeTextDocumentParams) -> None:
    _changed(ls, params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: RulesServer, params: lsp.DidCloseTextDocumentParams) -> None:
    _changed(ls, params.text_document.uri)  # the file on disk counts again


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: RulesServer, params: lsp.DidSaveTextDocumentParams) -> None:
    _changed(ls, params.text_document.uri)


@server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: RulesServer, params: lsp.DidChangeWatchedFilesParams) -> None:
    roots = set()
    for change in params.changes:
        path = to_fs_path(change.uri)
        if path and path.endswith(".rules"):
            roots.add(ls.ruleset_for(normal_path(path)).root)
    for root in roots:
        if root in ls.analyses:  # only rulesets someone is looking at
            ls.check_now(root)


def _changed(ls: RulesServer, uri: str) -> None:
    path = to_fs_path(uri)
    if path and path.endswith(".rules"):
        ls.schedule(normal_path(path))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: RulesServer, params: lsp.HoverParams) -> lsp.Hover | None:
    ctx = ls.context(params.text_document.uri, params.position)
    return features.hover(ctx) if ctx else None


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: RulesServer, params: lsp.DefinitionParams) -> list[lsp.Location]:
    ctx = ls.context(params.text_document.uri, params.position)
    return features.definition(ctx, from_fs_path) if ctx else []


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[".", '"']))
def completion(ls: RulesServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    ctx = ls.context(params.text_document.uri, params.position)
    return lsp.CompletionList(is_incomplete=False, items=features.completion(ctx) if ctx else [])


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbols(ls: RulesServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    path = to_fs_path(params.text_document.uri)
    if not path:
        return []
    path = normal_path(path)
    analysis = ls.analysis_for(path)
    text = ls.workspace.get_text_document(params.text_document.uri).source
    return features.document_symbols(analysis, features.Document(path, text))


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="nba lsp: %(message)s")
    server.start_io()
    return 0
