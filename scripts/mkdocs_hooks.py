"""MkDocs hook: lay the package out as it installs, for the API reference.

The repository keeps ``dsl/`` and ``engine/`` at the top and installs them as ``nba.dsl``
and ``nba.engine`` (pyproject.toml's package-dir). mkdocstrings reads source files by
their package path, so this makes ``build/api-src/nba/`` with links to the real folders
and points mkdocstrings there (``paths: [build/api-src]`` in mkdocs.yml). It copies the
sources (``.py`` and ``.pxd`` only): mkdocstrings follows links to where they point, and
would look for ``nba/engine`` beside the real ``nba/__init__.py``.
"""

from __future__ import annotations

import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUT = os.path.join(ROOT, "build", "api-src", "nba")
SOURCES = {"dsl": "dsl", "engine": "engine"}  # folder in the layout -> folder of the repository


def lay_out() -> None:
    shutil.rmtree(LAYOUT, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "nba"), LAYOUT, ignore=_not_source)
    for name, folder in SOURCES.items():
        shutil.copytree(os.path.join(ROOT, folder), os.path.join(LAYOUT, name), ignore=_not_source)


def _not_source(directory: str, names: list[str]) -> list[str]:
    return [
        name
        for name in names
        if not name.endswith((".py", ".pxd"))
        and not os.path.isdir(os.path.join(directory, name))
        or name == "__pycache__"
    ]


# When MkDocs loads this hook, before the plugins read their configuration: mkdocstrings
# drops a search path that does not exist yet when it reads it.
lay_out()
