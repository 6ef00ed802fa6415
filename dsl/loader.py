"""Files -> compiled ruleset: find the rule files, parse each, check them together, compile.

A ruleset is one file, or a directory searched recursively for ``*.rules`` files, read
in the order of their paths relative to the root (Unicode code points); dsl/files.py
finds and reads them (regular files only, of a bounded size).
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager

from nba.dsl import nodes as n
from nba.dsl.checker import check
from nba.dsl.codegen import compile_functions
from nba.dsl.compiler import _PICKED, CompiledRuleset, RulesetRecipe, link, ruleset_recipe
from nba.dsl.files import RULE_SUFFIX, RuleFileError, decode_rule_text, read_rule_file, rule_files
from nba.dsl.folding import report_constant_errors
from nba.dsl.source import Diagnostics, LoadError, Position
from nba.dsl.syntax import parse_module


def load_ruleset(root: str | os.PathLike) -> CompiledRuleset:
    """Load, check and compile a ruleset; raise ``LoadError`` with every error found."""
    paths, sources, diagnostics = read_sources(root)
    ruleset = load_sources(sources, diagnostics)
    ruleset.paths = paths
    return ruleset


def read_sources(root: str | os.PathLike) -> tuple[list[str], dict[str, str], Diagnostics]:
    """The rule files of a ruleset, their text, and the errors of those that cannot be read."""
    root = os.fspath(root)
    if not os.path.lexists(root):
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
    return paths, sources, diagnostics


def load_text(text: str, name: str = "<rules>") -> CompiledRuleset:
    """Load a ruleset from one string (tests, tools); errors name ``name`` as the file."""
    return load_sources({name: text}, Diagnostics())


TOO_DEEP = (
    "an expression is nested too deeply to load; split it into segments, or test a list of values with `in [...]`"
)


def load_sources(sources: dict[str, str], diagnostics: Diagnostics) -> CompiledRuleset:
    with collector_paused():
        recipe = _recipe(sources, diagnostics, _PICKED)
        code = compile_recipe(recipe, sources, diagnostics)
        try:
            ruleset = link(recipe, code)
            recipe.functions.clear()  # compiled; the source stays in `python_source`
            return ruleset
        except RecursionError:
            diagnostics.error(_first(sources), TOO_DEEP)
            raise _fail(sources, diagnostics) from None


def recipe_of_sources(sources: dict[str, str], diagnostics: Diagnostics, matcher_vm=_PICKED) -> RulesetRecipe:
    """Parse, check and generate the code of a ruleset (as data); LoadError with every error."""
    with collector_paused():
        return _recipe(sources, diagnostics, matcher_vm)


@contextmanager
def collector_paused():
    """A load allocates millions of objects that all stay alive until it ends: the cyclic
    garbage collector would scan them again and again (10,000 rules load in half the time
    without it). Nothing here makes reference cycles that outlive the load."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _first(sources: dict[str, str]) -> Position:
    return Position(next(iter(sources), "<rules>"), 1, 1)


def _fail(sources: dict[str, str], diagnostics: Diagnostics) -> LoadError:
    return LoadError(diagnostics.items, {path: text.splitlines() for path, text in sources.items()})


def _recipe(sources: dict[str, str], diagnostics: Diagnostics, matcher_vm) -> RulesetRecipe:
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
    try:
        checked = check(modules, diagnostics, tuple(path for path in sources if path not in parsed))
        report_constant_errors(checked, diagnostics.error)
    except RecursionError:
        diagnostics.error(_first(sources), TOO_DEEP)
    if diagnostics:
        raise _fail(sources, diagnostics)
    try:
        return ruleset_recipe(checked, matcher_vm)
    except RecursionError:
        diagnostics.error(_first(sources), TOO_DEEP)
        raise _fail(sources, diagnostics) from None


def compile_recipe(recipe: RulesetRecipe, sources: dict[str, str], diagnostics: Diagnostics) -> list:
    """The code objects of a recipe's generated functions; LoadError when Python cannot
    compile them (an expression nested too deeply)."""
    try:
        return compile_functions(recipe.functions, "<rules>")
    except RecursionError:
        pass
    except SyntaxError as exc:  # Python's own limit on nested parentheses in the generated code
        if "too many nested" not in str(exc):
            raise
    diagnostics.error(_first(sources), TOO_DEEP)
    raise _fail(sources, diagnostics)


def _diagnostic(path: str, message: str):
    from nba.dsl.source import Diagnostic

    return Diagnostic(Position(path, 1, 1), message)


# Loading without stalling the caller (a child process does the work): dsl/isolated.py.
from nba.dsl.isolated import RulesetLoadFailed, load_ruleset_async, load_ruleset_in_subprocess  # noqa: E402

__all__ = [
    "RulesetLoadFailed",
    "load_ruleset",
    "load_ruleset_async",
    "load_ruleset_in_subprocess",
    "load_text",
    "read_sources",
    "rule_files",
]
