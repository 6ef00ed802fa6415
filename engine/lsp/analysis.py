"""One ruleset as an editor sees it: the files on disk with the open buffers over them,
parsed and checked together, and every finding (an error of the checker, a warning of
lint) with its place.

Parsing is the costly step (Lark on every character), so each file is parsed in pieces,
one declaration each, kept while their text stays the same (``chunks``): a keystroke
re-parses the declaration being typed in; the rules whose nodes did not change keep the
findings of their last check (``rulecheck``) and of their last lint (``lint``). See
benchmarks/bench_lsp.py. Only ``dsl`` is used here, never the engine.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Mapping

from nba.dsl import nodes as n
from nba.dsl.checker import CheckedRuleset
from nba.dsl.files import RuleFileError, decode_rule_text, read_rule_file, rule_files
from nba.dsl.lint import LintMemo
from nba.dsl.loader import TOO_DEEP
from nba.dsl.source import Diagnostics, Position
from nba.engine.lsp.chunks import FileParse, PieceCache, place
from nba.engine.lsp.findings import Finding
from nba.engine.lsp.lint import lint_findings
from nba.engine.lsp.rulecheck import RuleChecks
from nba.engine.lsp.symbols import Index, build_index


@dataclass
class Analysis:
    """The result of one check of a ruleset."""

    root: str
    sources: dict[str, str]  # path -> text, in declaration order
    modules: list[n.Module]  # the files that parsed
    checked: CheckedRuleset
    # for hover, completion and symbols: each file's declarations that parse, also while
    # another declaration of the file does not (as it often does not mid-typing)
    known_modules: list[n.Module] = field(default_factory=list)
    findings: dict[str, list[Finding]] = field(default_factory=dict)  # path -> findings, in place order
    offsets: dict[str, tuple[str, int]] = field(default_factory=dict)  # see chunks.place
    piece_texts: dict[str, str] = field(default_factory=dict)  # piece name -> text (see chunks)
    # lint's results of the last check of this ruleset, reused where they hold (see lint)
    lint_memo: LintMemo = field(default_factory=LintMemo)
    lint_at: float | None = None  # the time lint's `expired` compares with; None: now

    def place(self, pos: Position) -> Position:
        """Where a node of this analysis is, in its file."""
        return place(pos, self.offsets)

    @cached_property
    def index(self) -> Index:
        """What the ruleset declares, built on first use (a keystroke's check does not need it)."""
        return build_index(self.known_modules)

    def module(self, path: str) -> n.Module | None:
        """The declarations of the file that parse (their nodes' places go through ``place``)."""
        for module in self.known_modules:
            if module.path == path:
                return module
        return None


# Each source of findings takes a finished analysis (its sources, modules, the checked
# ruleset, and in ``findings`` the checker's errors) and gives more findings, in places of
# the analysis's nodes (``Analysis.place`` moves them into their files). The checker's
# errors are always there; lint's warnings (``nba lint``, severity WARNING, with their
# code) are the one entry of this list.
FindingSource = Callable[[Analysis], Iterable[Finding]]
FINDING_SOURCES: list[FindingSource] = [lint_findings]


def normal_path(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def ruleset_root(path: str, workspace_folders: Iterable[str], configured: Iterable[str] = ()) -> str:
    """The directory whose ruleset the file ``path`` belongs to.

    A configured ruleset root that holds the file wins (the deepest one). Otherwise: the
    file's own directory, extended upwards while the parent directory also holds ``.rules``
    files directly, never above the workspace folder that holds the file. So a workspace
    folder that is itself a ruleset is one ruleset, and in a repository whose rules live in
    ``rules/`` the ruleset is ``rules/``, not every ``.rules`` file of the repository.
    """
    path = normal_path(path)
    holders = [normal_path(c) for c in configured if _inside(path, normal_path(c))]
    if holders:
        return max(holders, key=len)
    directory = os.path.dirname(path)
    folders = [normal_path(f) for f in workspace_folders if _inside(path, normal_path(f))]
    top = max(folders, key=len) if folders else directory
    while directory != top and _inside(directory, top):
        parent = os.path.dirname(directory)
        if parent == directory or not _holds_rules(parent):
            break
        directory = parent
    return directory


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _holds_rules(directory: str) -> bool:
    try:
        return any(entry.is_file() and entry.name.endswith(".rules") for entry in os.scandir(directory))
    except OSError:
        return False


class Ruleset:
    """A ruleset root and the parses of its files, kept between checks. ``lint_at``: the
    time lint's ``expired`` compares with (``nba lint --at``); None: the time of each check."""

    def __init__(self, root: str, lint_at: float | None = None):
        self.root = normal_path(root)
        self.lint_at = lint_at
        self._pieces: dict[str, PieceCache] = {}
        self._checks = RuleChecks()
        self._lint_memo = LintMemo()
        self._disk: dict[str, tuple[tuple[int, int], str | None, str | None]] = {}

    def holds(self, path: str) -> bool:
        return _inside(normal_path(path), self.root)

    def sources(self, buffers: Mapping[str, str]) -> tuple[dict[str, str], list[Finding]]:
        """Every file's text in declaration order (open buffers win over the disk), and the
        files that cannot be read."""
        paths = set(rule_files(self.root)) if os.path.isdir(self.root) else set()
        paths.update(p for p in buffers if self.holds(p) and p.endswith(".rules"))
        ordered = sorted(paths, key=lambda p: Path(os.path.relpath(p, self.root)).as_posix())
        texts: dict[str, str] = {}
        unreadable: list[Finding] = []
        for path in ordered:
            if path in buffers:
                texts[path] = buffers[path].removeprefix("\ufeff")  # as the loader reads files
                continue
            text, problem = self._read(path)
            if text is not None:
                texts[path] = text
            else:
                unreadable.append(Finding(Position(path, 1, 1), problem or "cannot read the file"))
        return texts, unreadable

    def _read(self, path: str) -> tuple[str | None, str | None]:
        try:
            stat = os.stat(path)
        except OSError as exc:
            return None, f"cannot read the file: {exc.strerror}"
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._disk.get(path)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        try:  # as the loader reads: regular files only, never blocking, of a bounded size
            text, problem = decode_rule_text(read_rule_file(path)), None
        except UnicodeDecodeError as exc:
            text, problem = None, f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
        except RuleFileError as exc:
            text, problem = None, str(exc)
        self._disk[path] = (key, text, problem)
        return text, problem

    def parse(self, path: str, text: str) -> FileParse:
        cache = self._pieces.get(path)
        if cache is None:
            cache = self._pieces[path] = PieceCache(path)
        return cache.parse(text)

    def analyze(self, buffers: Mapping[str, str]) -> Analysis:
        """Parse what changed, check everything, gather every finding."""
        collecting = gc.isenabled()
        gc.disable()  # as the loader does: a parse makes many objects and no cycles
        try:
            return self._analyze(buffers)
        finally:
            if collecting:
                gc.enable()

    def _analyze(self, buffers: Mapping[str, str]) -> Analysis:
        sources, unreadable = self.sources(buffers)
        for gone in set(self._pieces) - set(sources):
            del self._pieces[gone]
        parsed = {path: self.parse(path, text) for path, text in sources.items()}
        modules = [p.module for p in parsed.values() if p.module is not None]
        unparsed = tuple(path for path, p in parsed.items() if p.module is None)
        diagnostics = Diagnostics()
        for p in parsed.values():
            diagnostics.items.extend(p.errors)
        try:
            checked = self._checks.check(modules, diagnostics, unparsed)
        except RecursionError:
            checked = CheckedRuleset()
            self._checks = RuleChecks()
            diagnostics.error(Position(next(iter(sources), self.root), 1, 1), TOO_DEEP)
        offsets = {name: where for p in parsed.values() for name, where in p.offsets.items()}
        piece_texts = {name: text for p in parsed.values() for name, text in p.texts.items()}
        outlines = [p.outline for p in parsed.values()]
        analysis = Analysis(
            self.root,
            sources,
            modules,
            checked,
            outlines,
            offsets=offsets,
            piece_texts=piece_texts,
            lint_memo=self._lint_memo,
            lint_at=self.lint_at,
        )
        errors = [Finding(d.pos, d.message) for d in diagnostics.items] + unreadable
        analysis.findings = by_path(analysis, errors)
        more = [finding for source in FINDING_SOURCES for finding in source(analysis)]
        if more:
            analysis.findings = by_path(analysis, errors + more)
        return analysis


def by_path(analysis: Analysis, findings: list[Finding]) -> dict[str, list[Finding]]:
    """The findings in their files (every file of the analysis has a list), in place order."""
    sources = analysis.sources
    placed: dict[str, list[Finding]] = {path: [] for path in sources}
    for finding in findings:
        if finding.pos.path not in sources:
            finding = replace(finding, pos=analysis.place(finding.pos))
        placed.setdefault(finding.pos.path, []).append(finding)
    for items in placed.values():
        items.sort(key=lambda f: (f.pos.line, f.pos.column))
    return placed
