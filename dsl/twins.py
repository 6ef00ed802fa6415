"""Which twin the rule language runs: the compiled ``runtime`` or its source, and the C matcher.

The machinery that picks a twin for every hot-path module is ``nba.twins`` (neutral
ground for ``nba.dsl`` and ``nba.engine``); this module says what it picked for the
language: ``runtime`` (the value semantics the generated code calls), ``matchvm`` (the
Cython rule matcher, or None: then the compiler generates Python matchers) and
``IMPLEMENTATION`` ("cython" or "python"). The whole test suite runs on both twins.
"""

from __future__ import annotations

from nba.dsl import runtime  # through the finder nba/__init__.py installed
from nba.twins import is_compiled, pick_extension

# The rule matcher: interprets each bucket's compact form (dsl/matchplan.py) in C; without
# it the compiler generates Python matchers instead. It reads the compiled runtime's
# EvalContext, so it goes with the compiled runtime.
matchvm = pick_extension("nba.dsl._matchvm") if is_compiled(runtime) else None
IMPLEMENTATION = "cython" if is_compiled(runtime) else "python"
