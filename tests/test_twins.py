"""nba/twins.py and dsl/twins.py: every hot-path module runs compiled, or every one runs from its source."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import nba.dsl.twins as language
import nba.twins as twins

ROOT = Path(__file__).resolve().parent.parent


def loaded_compiled(environment: dict) -> dict[str, bool]:
    """In a fresh interpreter: module name -> whether it loaded from an extension."""
    code = (
        "import importlib, json, nba.twins as t, nba.dsl.twins\n"
        "print(json.dumps({n: t.is_compiled(importlib.import_module(n)) for n in t.COMPILED_MODULES}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NBA_PURE_PYTHON"}
    env.update(environment)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    import json

    return json.loads(done.stdout)


def test_every_listed_module_exists_as_a_source_file():
    for path in twins.COMPILED:
        assert (ROOT / path).is_file(), path


def test_with_nba_pure_python_every_module_loads_from_its_source():
    assert not any(loaded_compiled({"NBA_PURE_PYTHON": "1"}).values())


@pytest.mark.skipif(language.IMPLEMENTATION != "cython", reason="the Cython twins are not built")
def test_built_every_module_loads_compiled():
    loaded = loaded_compiled({})
    assert all(loaded.values()), [name for name, compiled in loaded.items() if not compiled]


@pytest.mark.skipif(language.IMPLEMENTATION != "cython", reason="the Cython twins are not built")
def test_built_the_cython_only_extensions_load_too():
    from nba.engine.store.redis import protocol

    assert language.matchvm is not None  # dsl/_matchvm.pyx, the rule matcher
    assert protocol._resp is not None  # engine/store/redis/_resp.pyx, the RESP packer


def test_this_process_runs_one_twin_throughout():
    modules = [importlib.import_module(name) for name in twins.COMPILED_MODULES]
    assert {twins.is_compiled(module) for module in modules} == {language.IMPLEMENTATION == "cython"}


def test_an_extension_older_than_its_source_or_declarations_is_stale(tmp_path):
    extension, source, declarations = tmp_path / "m.so", tmp_path / "m.py", tmp_path / "m.pxd"
    for number, path in enumerate((source, declarations, extension)):
        path.write_text("")
        os.utime(path, (1000 + number, 1000 + number))
    assert not twins._stale(str(extension), [str(source), str(declarations), str(tmp_path / "none.pxd")])
    os.utime(declarations, (2000, 2000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert twins._stale(str(extension), [str(source), str(declarations)])
    assert "older than" in str(caught[0].message) and "build_ext --inplace" in str(caught[0].message)
