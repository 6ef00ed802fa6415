"""The rule language: rule text -> parse tree -> syntax tree -> checked ruleset -> compiled ruleset."""

import dsl.twins  # noqa: F401 - first: it decides which twin of the hot-path modules loads
from dsl.compiler import CompiledRuleset
from dsl.loader import load_ruleset, load_text, rule_files
from dsl.source import Diagnostic, LoadError, Position

__all__ = ["CompiledRuleset", "Diagnostic", "LoadError", "Position", "load_ruleset", "load_text", "rule_files"]
