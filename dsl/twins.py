"""Pick the Cython twin of a hot-path module when it is built, the pure-Python one otherwise.

As msgpack-python and aiohttp do: ``setup.py`` compiles ``dsl/runtime.py`` to
``dsl._runtime_c`` and ``engine/procedure.py`` to ``engine._procedure_c`` from the very
same source, so both twins behave the same by construction. Set ``NBA_PURE_PYTHON=1``
to use the pure-Python twins even when the extensions are built.
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
    if os.path.getmtime(pure_spec.origin) > os.path.getmtime(compiled_spec.origin):
        warnings.warn(
            f"{compiled} is older than {pure_spec.origin}; using the pure-Python twin "
            "(rebuild with: python setup.py build_ext --inplace)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


runtime = pick("dsl.runtime", "dsl._runtime_c")
IMPLEMENTATION = "cython" if runtime.__name__.endswith("_c") else "python"
