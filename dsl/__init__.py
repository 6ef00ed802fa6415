"""The rule language: rule text -> parse tree -> syntax tree -> checked ruleset -> compiled ruleset."""

from nba.dsl.compiler import CompiledRuleset
from nba.dsl.loader import load_ruleset, load_text, rule_files
from nba.dsl.source import Diagnostic, LoadError, Position

__all__ = ["CompiledRuleset", "Diagnostic", "LoadError", "Position", "load_ruleset", "load_text", "rule_files"]
