"""The hot path's two twins: each module compiled by Cython from its own ``.py``, or that ``.py``.

As msgpack-python and aiohttp do, the package ships Cython and pure-Python code that
behave the same, and picks at import. Here both twins come from the very same source:
``setup.py`` compiles each module of ``COMPILED`` (the value semantics, the procedure,
the engine, the stores, the Redis client, ...) in Cython's pure-Python mode, with static
types from a ``.pxd`` of the same name where there is one (``dsl/runtime.pxd``), into an
extension beside its source (``dsl/runtime.cpython-311-x86_64-linux-gnu.so`` beside
``dsl/runtime.py``). Python imports an extension before a source of the same name, so a
built tree runs compiled, and no importer needs to know.

``TwinFinder`` (installed first on ``sys.meta_path`` by ``nba/__init__.py``, so before any
module of ``nba.dsl`` or ``nba.engine`` loads) loads the ``.py`` instead when
``NBA_PURE_PYTHON=1`` is set and, in a source checkout only, when the extension is older
than its source or its ``.pxd`` (a stale twin would not behave the same: it warns,
rebuild with ``python setup.py build_ext --inplace``). An installed wheel is never
"stale": pip writes each ``.py`` a moment after its ``.so``, so comparing their times
there would always pick the pure twin (issue 19).

This module is neutral ground: ``nba.dsl`` and ``nba.engine`` both use it, and it imports
neither. Which twin the rule language runs (``IMPLEMENTATION``, the C rule matcher) is
``nba.dsl.twins``'s to say.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from types import ModuleType

PURE_PYTHON = os.environ.get("NBA_PURE_PYTHON", "").strip().lower() not in ("", "0", "false", "no")

# The modules setup.py compiles (paths relative to the repository), the hot path: an
# event's check, the state read, the rules, the procedure, the state write, the decision,
# and the stores and Redis client around them, and the server's request path (a
# connection, the ops, the queue of requests waiting for the store, the counters). The
# rest of the server stays interpreted (``python -m nba.engine.server`` runs its ``__main__``,
# which an extension cannot be).
COMPILED = (
    "dsl/runtime.py",
    "engine/procedure.py",
    "engine/engine.py",
    "engine/events.py",
    "engine/decision.py",
    "engine/state.py",
    "engine/store/interface.py",
    "engine/stats.py",
    "engine/holdout.py",
    "engine/turns.py",
    "engine/protocol.py",
    "engine/store/memory.py",
    "engine/store/redis/encoding.py",
    "engine/store/redis/protocol.py",
    "engine/store/redis/near_cache.py",
    "engine/store/redis/store.py",
    "engine/store/redis/sync_io.py",
    "engine/store/redis/async_io.py",
    "engine/server/connection.py",
    "engine/server/dispatch.py",
    "engine/server/lifecycle.py",
    "engine/server/stats.py",
)
# Written in Cython; the pure-Python twin is another technique (the generated Python
# matchers; hiredis.pack_command). Module name -> source, relative to the repository.
CYTHON_ONLY = {
    "nba.dsl._matchvm": "dsl/_matchvm.pyx",
    "nba.engine.store.redis._resp": "engine/store/redis/_resp.pyx",
}


def module_name(path: str) -> str:
    """``engine/store/memory.py`` -> ``nba.engine.store.memory``: the repository's folders
    ``dsl/`` and ``engine/`` install as ``nba.dsl`` and ``nba.engine``."""
    return "nba." + path[:-3].replace("/", ".")


COMPILED_MODULES = tuple(module_name(path) for path in COMPILED)
_COMPILED_NAMES = frozenset(COMPILED_MODULES)
# The repository root when this is a source checkout (setup.py beside the nba/ folder);
# None in an installed package, where no extension is ever older than its source.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKOUT = _CHECKOUT if os.path.exists(os.path.join(_CHECKOUT, "setup.py")) else None


class TwinFinder(importlib.abc.MetaPathFinder):
    """Finds a compiled module's ``.py`` twin when it must not run compiled."""

    def find_spec(self, fullname: str, path, target=None):
        if fullname not in _COMPILED_NAMES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return spec  # not built: the source, as the path finder found it
        base = os.path.join(os.path.dirname(spec.origin), fullname.rpartition(".")[2])
        source = base + ".py"
        if not os.path.exists(source):
            return spec
        if PURE_PYTHON or (CHECKOUT and _stale(spec.origin, [source, base + ".pxd"])):
            return importlib.util.spec_from_file_location(fullname, source)
        return spec


def _stale(extension: str, sources: list[str]) -> bool:
    newest = max((path for path in sources if os.path.exists(path)), key=os.path.getmtime)
    if os.path.getmtime(newest) <= os.path.getmtime(extension):
        return False
    warnings.warn(
        f"{os.path.basename(extension)} is older than {newest}; using the pure-Python twin "
        "(rebuild with: python setup.py build_ext --inplace)",
        RuntimeWarning,
        stacklevel=2,
    )
    return True


def install() -> None:
    if not any(isinstance(finder, TwinFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, TwinFinder())


def is_compiled(module: ModuleType) -> bool:
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def pick_extension(compiled: str) -> ModuleType | None:
    """A Cython-only module of ``CYTHON_ONLY`` (its pure-Python twin is another technique,
    chosen by the caller when this gives None): None with NBA_PURE_PYTHON, when it is not
    built, or, in a source checkout, when it is older than its ``.pyx``."""
    if PURE_PYTHON:
        return None
    spec = importlib.util.find_spec(compiled)
    if spec is None or not spec.origin:
        return None
    if CHECKOUT:
        source_path = os.path.join(CHECKOUT, CYTHON_ONLY[compiled])
        if os.path.exists(source_path) and _stale(spec.origin, [source_path]):
            return None
    try:
        return importlib.import_module(compiled)
    except ImportError:
        return None
