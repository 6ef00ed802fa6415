"""Files -> compiled ruleset: find the rule files, parse each, check them together, compile.

A ruleset is one file, or a directory searched recursively for ``*.rules`` files, read
in the order of their paths relative to the root (Unicode code points).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

from nba.dsl import nodes as n
from nba.dsl.checker import check
from nba.dsl.compiler import CompiledRuleset, compile_ruleset
from nba.dsl.source import Diagnostics, LoadError, Position
from nba.dsl.syntax import parse_module

RULE_SUFFIX = ".rules"


def rule_files(root: str | os.PathLike) -> list[str]:
    """The rule files of a ruleset, in declaration order, as paths that start with ``root``."""
    root = os.fspath(root)
    if os.path.isfile(root):
        return [root]
    return files_under(root, RULE_SUFFIX)


def files_under(root: str, suffix: str) -> list[str]:
    """Files below ``root`` whose names end in ``suffix``, in the order of their paths relative
    to ``root`` (Unicode code points), as paths that start with ``root``."""
    found = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(suffix):
                full = os.path.join(directory, name)
                found.append((Path(os.path.relpath(full, root)).as_posix(), full))
    return [full for _rel, full in sorted(found)]


def load_ruleset(root: str | os.PathLike) -> CompiledRuleset:
    """Load, check and compile a ruleset; raise ``LoadError`` with every error found."""
    root = os.fspath(root)
    if not os.path.exists(root):
        raise LoadError([_diagnostic(root, f"no such file or directory: {root}")], {})
    paths = rule_files(root)
    if not paths:
        raise LoadError([_diagnostic(root, f"no {RULE_SUFFIX} files in {root}")], {})
    sources: dict[str, str] = {}
    diagnostics = Diagnostics()
    for path in paths:
        try:
            sources[path] = Path(path).read_text(encoding="utf-8-sig")  # a leading BOM is not text
        except UnicodeDecodeError as exc:
            diagnostics.error(Position(path, 1, 1), f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})")
        except OSError as exc:
            diagnostics.error(Position(path, 1, 1), f"cannot read the file: {exc.strerror}")
    ruleset = load_sources(sources, diagnostics)
    ruleset.paths = paths
    return ruleset


def load_text(text: str, name: str = "<rules>") -> CompiledRuleset:
    """Load a ruleset from one string (tests, tools); errors name ``name`` as the file."""
    return load_sources({name: text}, Diagnostics())


TOO_DEEP = (
    "an expression is nested too deeply to load; split it into segments, "
    "or test a list of values with `in [...]`"
)


def load_sources(sources: dict[str, str], diagnostics: Diagnostics) -> CompiledRuleset:
    # A load allocates millions of objects that all stay alive until it ends: the cyclic
    # garbage collector would scan them again and again (10,000 rules load in half the time
    # without it). Nothing here makes reference cycles that outlive the load.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(sources, diagnostics)
    finally:
        if collecting:
            gc.enable()


def _load(sources: dict[str, str], diagnostics: Diagnostics) -> CompiledRuleset:
    modules: list[n.Module] = []
    for path, text in sources.items():
        try:
            module = parse_module(path, text, diagnostics)
        except RecursionError:
            diagnostics.error(Position(path, 1, 1), TOO_DEEP)
            continue
        if module is not None:
            modules.append(module)
    parsed = {module.path for module in modules}
    first = Position(next(iter(sources), "<rules>"), 1, 1)
    try:
        checked = check(modules, diagnostics, tuple(path for path in sources if path not in parsed))
    except RecursionError:
        diagnostics.error(first, TOO_DEEP)
    if diagnostics:
        raise LoadError(diagnostics.items, {path: text.splitlines() for path, text in sources.items()})
    try:
        return compile_ruleset(checked)
    except RecursionError:
        pass
    except SyntaxError as exc:  # Python's own limit on nested parentheses in the generated code
        if "too many nested" not in str(exc):
            raise
    diagnostics.error(first, TOO_DEEP)
    raise LoadError(diagnostics.items, {path: text.splitlines() for path, text in sources.items()})


def _diagnostic(path: str, message: str):
    from nba.dsl.source import Diagnostic

    return Diagnostic(Position(path, 1, 1), message)
