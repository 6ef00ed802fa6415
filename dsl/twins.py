"""Pick the Cython twin of a hot-path module when it is built, the pure-Python one otherwise.

As msgpack-python and aiohttp do: ``setup.py`` compiles ``dsl/runtime.py`` to
``dsl._runtime_c`` and ``engine/procedure.py`` to ``engine._procedure_c`` from the very
same source, so both twins behave the same by construction. Set ``NBA_PURE_PYTHON=1``
to use the pure-Python twins even when the extensions are built.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_PYTHON = os.environ.get("NBA_PURE_PYTHON", "").strip().lower() not in ("", "0", "false", "no")


def pick(pure: str, compiled: str) -> ModuleType:
    if not PURE_PYTHON:
        try:
            return importlib.import_module(compiled)
        except ImportError:
            pass
    return importlib.import_module(pure)


runtime = pick("dsl.runtime", "dsl._runtime_c")
IMPLEMENTATION = "cython" if runtime.__name__.endswith("_c") else "python"
