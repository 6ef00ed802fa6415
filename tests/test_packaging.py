"""The package as users get it: one import name, every package folder installed, no benchmarks."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import nba.dsl.twins as language

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def package_folders() -> set[str]:
    """Every folder of the product with an __init__.py, by the package name it installs as."""
    names = {"nba"}
    for folder in ("dsl", "engine"):
        for directory, _subdirs, files in os.walk(ROOT / folder):
            if "__init__.py" in files and "__pycache__" not in directory:
                relative = Path(directory).relative_to(ROOT).as_posix()
                names.add("nba." + relative.replace("/", "."))
    return names


def test_every_package_folder_is_installed():
    assert set(SETUPTOOLS["packages"]) == package_folders()


def test_the_benchmarks_are_not_installed():
    assert not any(name.split(".")[0] == "benchmarks" or ".benchmarks" in name for name in SETUPTOOLS["packages"])


def test_the_product_never_imports_its_benchmarks_or_the_language_the_engine():
    for folder, forbidden in (("dsl", ("benchmarks", "engine", "nba.engine")), ("engine", ("benchmarks",))):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                for name in names:
                    assert not any(name == f or name.startswith(f + ".") for f in forbidden), f"{path}: imports {name}"


def test_the_public_names_come_from_nba():
    import nba

    assert nba.Engine.__module__ == "nba.engine.engine"
    assert nba.load_ruleset.__module__ == "nba.dsl.loader"
    assert nba.Client.__name__ == "Client"
    with pytest.raises(AttributeError):
        nba.no_such_name  # noqa: B018


def test_importing_the_language_does_not_import_the_engine():
    code = "import sys, nba.dsl; print(any(m.startswith('nba.engine') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(
    language.IMPLEMENTATION != "cython", reason="the wheel's compiled twins are checked on the Cython run"
)
def test_an_installed_wheel_runs_its_compiled_twins(tmp_path):
    """pip writes each .py a moment after its .so: the installed package must still load the
    compiled twins (the staleness check by modification time belongs to a checkout only)."""
    # Built from a copy of the checkout without its build/ folder, whose leftovers (a build
    # of another layout) setuptools would pack into the wheel; the generated .c files come
    # along, so only the C compiler runs again.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "node_modules", "__pycache__", ".hypothesis", "*.so", "*.egg-info"
        ),
    )
    wheels = tmp_path / "wheels"
    # the C compiler without optimisation: this test is about what loads, not how fast
    # (-O0 comes after Python's own -O3, so it wins); a few times quicker
    build_env = {**os.environ, "CFLAGS": (os.environ.get("CFLAGS", "") + " -O0").strip()}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
        env=build_env,
    )
    (wheel,) = wheels.glob("nba-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not (target / "benchmarks").exists() and not (target / "engine").exists() and not (target / "dsl").exists()
    code = (
        "import sys, json, importlib\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        "import nba.twins as t, nba.dsl.twins as d\n"
        "assert t.CHECKOUT is None, t.CHECKOUT\n"
        "loaded = {n: t.is_compiled(importlib.import_module(n)) for n in t.COMPILED_MODULES}\n"
        "print(json.dumps([d.IMPLEMENTATION, d.matchvm is not None, loaded, __import__('nba').__file__]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NBA_PURE_PYTHON", "PYTHONPATH")}
    done = subprocess.run(
        [sys.executable, "-I", "-W", "error::RuntimeWarning", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    import json

    implementation, has_matcher, loaded, package_file = json.loads(done.stdout)
    assert package_file.startswith(str(target))
    assert implementation == "cython" and has_matcher and all(loaded.values()), loaded
