"""Files -> compiled ruleset: find the rule files, parse each, check them together, compile.

A ruleset is one file, or a directory searched recursively for ``*.rules`` files, read
in the order of their paths relative to the root (Unicode code points); dsl/files.py
finds and reads them (regular files only, of a bounded size).
"""

from __future__ import annotations

import gc
import os

from dsl import nodes as n
from dsl.checker import check
from dsl.files import RULE_SUFFIX, RuleFileError, decode_rule_text, files_under, read_rule_file, rule_files
from dsl.compiler import CompiledRuleset, compile_ruleset
from dsl.folding import report_constant_errors
from dsl.source import Diagnostics, LoadError, Position
from dsl.syntax import parse_module

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
            sources[path] = decode_rule_text(read_rule_file(path))
        except UnicodeDecodeError as exc:
            diagnostics.error(Position(path, 1, 1), f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})")
        except RuleFileError as exc:
            diagnostics.error(Position(path, 1, 1), str(exc))
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
        report_constant_errors(checked, diagnostics.error)
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
    from dsl.source import Diagnostic

    return Diagnostic(Position(path, 1, 1), message)
