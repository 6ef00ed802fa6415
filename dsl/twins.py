"""Pick the Cython twin of a hot-path module when it is built, the pure-Python one otherwise.

As msgpack-python and aiohttp do: ``setup.py`` compiles ``dsl/runtime.py`` to
``dsl._runtime_c`` and ``engine/procedure.py`` to ``engine._procedure_c`` from the very
same source, so both twins behave the same by construction. The rule matcher
``dsl/_matchvm.pyx`` is Cython only: its pure-Python twin is the generated Python
matchers (dsl/compiler.py), and the whole test suite runs on both. Set
``NBA_PURE_PYTHON=1`` to use the pure-Python twins even when the extensions are built.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from types import ModuleType

PURE_PYTHON = os.environ.get("NBA_PURE_PYTHON", "").strip().lower() not in ("", "0", "false", "no")


def pick(pure: str, compiled: str) -> ModuleType:
    if not PURE_PYTHON and _built_and_current(pure, compiled):
        try:
            return importlib.import_module(compiled)
        except ImportError:
            pass
    return importlib.import_module(pure)


def _built_and_current(pure: str, compiled: str) -> bool:
    """False when the extension is missing or older than its source (rebuild it:
    ``python setup.py build_ext --inplace``); a stale twin would not behave the same."""
    compiled_spec = importlib.util.find_spec(compiled)
    pure_spec = importlib.util.find_spec(pure)
    if compiled_spec is None or not compiled_spec.origin or pure_spec is None or not pure_spec.origin:
        return False
    declarations = os.path.join(os.path.dirname(pure_spec.origin), compiled.rsplit(".", 1)[-1] + ".pxd")
    sources = [pure_spec.origin] + ([declarations] if os.path.exists(declarations) else [])
    newest = max(sources, key=os.path.getmtime)
    if os.path.getmtime(newest) > os.path.getmtime(compiled_spec.origin):
        warnings.warn(
            f"{compiled} is older than {newest}; using the pure-Python twin "
            "(rebuild with: python setup.py build_ext --inplace)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def pick_extension(compiled: str, source: str) -> ModuleType | None:
    """A Cython-only module (its pure-Python twin is another technique, chosen by the
    caller when this gives None): None with NBA_PURE_PYTHON, or when it is not built
    or older than its ``.pyx`` source (relative to this package's parent)."""
    if PURE_PYTHON:
        return None
    spec = importlib.util.find_spec(compiled)
    if spec is None or not spec.origin:
        return None
    source_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), source)
    if os.path.exists(source_path) and os.path.getmtime(source_path) > os.path.getmtime(spec.origin):
        warnings.warn(
            f"{compiled} is older than {source_path}; using the pure-Python twin "
            "(rebuild with: python setup.py build_ext --inplace)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    try:
        return importlib.import_module(compiled)
    except ImportError:
        return None


runtime = pick("dsl.runtime", "dsl._runtime_c")
# The rule matcher: interprets each bucket's compact form (dsl/matchplan.py) in C; without
# it the compiler generates Python matchers instead.
# (it reads the compiled runtime's EvalContext, so it goes with the compiled runtime)
matchvm = pick_extension("dsl._matchvm", "dsl/_matchvm.pyx") if runtime.__name__.endswith("_c") else None
IMPLEMENTATION = "cython" if runtime.__name__.endswith("_c") else "python"
