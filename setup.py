"""Builds the Cython twins of the hot path (see nba/twins.py).

The repository's folders install under one import name: ``dsl/`` as ``nba.dsl`` and
``engine/`` as ``nba.engine`` (``package-dir`` in pyproject.toml). Each module of
``nba.twins.COMPILED`` is compiled from its own ``.py`` (Cython's pure-Python mode, with
static types from a ``.pxd`` of the same name where there is one) into an extension of
the same name beside it, so the two twins cannot drift apart. The modules of
``CYTHON_ONLY`` are written in Cython (their pure-Python twin is another technique).
Without Cython or a C compiler the package still installs and runs on the pure-Python twins.
"""

import ast
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
# Cython finds a cimported module's .pxd by its full name on the include path
# (`from nba.dsl.runtime cimport EvalContext` -> nba/dsl/runtime.pxd); the folders are
# not laid out that way in the repository, so the build makes that layout of links.
INCLUDE = os.path.join(HERE, "build", "cython-include")


def twins_constant(name: str):
    """A constant of ``nba/twins.py``, read from its source (the package is not importable here)."""
    with open(os.path.join(HERE, "nba", "twins.py"), encoding="utf-8") as source:
        tree = ast.parse(source.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"nba/twins.py has no {name}")


def module_name(path: str) -> str:
    return "nba." + path[:-3].replace("/", ".")  # as nba.twins.module_name


def declarations(path: str) -> list[str]:
    pxd = path[:-3] + ".pxd"
    return [pxd] if os.path.exists(os.path.join(HERE, pxd)) else []


def drop_foreign_c_files(modules: dict[str, str]) -> None:
    """A ``.c`` generated for another module name (these twins were built as ``dsl.runtime``
    before they installed as ``nba.dsl.runtime``) looks up to date to Cython but would build
    an extension that Python cannot import under its new name: remove it so it is generated
    again. ``modules``: module name -> source path."""
    for name, path in modules.items():
        c_file = os.path.join(HERE, path.rsplit(".", 1)[0] + ".c")
        if not os.path.exists(c_file):
            continue
        with open(c_file, encoding="utf-8", errors="replace") as generated:
            head = generated.read(4096)
        if f'"module_name": "{name}"' not in head:
            os.remove(c_file)


def include_layout() -> str:
    """``build/cython-include/nba/{dsl,engine}`` linked to the repository's folders."""
    package = os.path.join(INCLUDE, "nba")
    os.makedirs(package, exist_ok=True)
    open(os.path.join(package, "__init__.pxd"), "a").close()
    for folder in ("dsl", "engine"):
        link = os.path.join(package, folder)
        if not os.path.islink(link):
            os.symlink(os.path.join(HERE, folder), link)
    return INCLUDE


def extensions():
    if os.environ.get("NBA_NO_CYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    paths = list(twins_constant("COMPILED"))
    cython_only = twins_constant("CYTHON_ONLY")
    drop_foreign_c_files({**{module_name(path): path for path in paths}, **cython_only})
    modules = [Extension(module_name(path), [path], depends=declarations(path)) for path in paths]
    modules += [Extension(name, [path]) for name, path in cython_only.items()]
    return cythonize(
        modules,
        language_level=3,
        include_path=[include_layout()],
        # boundscheck: these modules index what came from outside (Redis state another
        # service wrote, frames, events): an index past a hostile list's end must be an
        # IndexError (then a clear error for its sender), never a read of memory past it
        compiler_directives={"binding": True, "boundscheck": True, "wraparound": True},
        quiet=True,
        nthreads=os.cpu_count() or 1,
    )


class ParallelBuildExt(build_ext):
    """``build_ext`` compiling the extensions on every core unless told (``-j N``): ``pip
    install`` and ``pip wheel`` give no ``-j``, and the C compiler, one module at a time,
    was most of an install's minutes."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


setup(ext_modules=extensions(), cmdclass={"build_ext": ParallelBuildExt})
