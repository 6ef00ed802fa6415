"""Builds the Cython twins of the hot path (see dsl/twins.py).

Each module of ``dsl.twins.COMPILED`` is compiled from its own ``.py`` (Cython's
pure-Python mode, with static types from a ``.pxd`` of the same name where there is one)
into an extension of the same name beside it, so the two twins cannot drift apart. The
rule matcher (dsl/_matchvm.pyx) is written in Cython; its pure-Python twin is the
generated Python matchers. Without Cython or a C compiler the package still installs and
runs on the pure-Python twins.
"""

import ast
import os

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# Written in Cython; the pure-Python twin is another technique (see dsl/twins.py).
CYTHON_ONLY = {
    "dsl._matchvm": "dsl/_matchvm.pyx",
    "engine.store.redis._resp": "engine/store/redis/_resp.pyx",  # its twin: hiredis.pack_command
}


def compiled_modules() -> list[str]:
    """``dsl.twins.COMPILED``, read from its source (the package is not importable here)."""
    with open(os.path.join(HERE, "dsl", "twins.py"), encoding="utf-8") as source:
        tree = ast.parse(source.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPILED" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("dsl/twins.py has no COMPILED list")


def declarations(path: str) -> list[str]:
    pxd = path[:-3] + ".pxd"
    return [pxd] if os.path.exists(os.path.join(HERE, pxd)) else []


def drop_foreign_c_files(paths: list[str]) -> None:
    """A ``.c`` generated for another module name (these twins were once built as
    ``dsl._runtime_c`` from the same ``dsl/runtime.py``) looks up to date to Cython but
    would build an extension Python cannot import: remove it so it is generated again."""
    for path in paths:
        c_file = os.path.join(HERE, path[:-3] + ".c")
        if not os.path.exists(c_file):
            continue
        init = "PyInit_" + os.path.basename(path)[:-3]
        with open(c_file, encoding="utf-8", errors="replace") as generated:
            if init + "(" not in generated.read():
                os.remove(c_file)


def extensions():
    if os.environ.get("NBA_NO_CYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    paths = compiled_modules()
    drop_foreign_c_files(paths)
    modules = [Extension(path[:-3].replace("/", "."), [path], depends=declarations(path)) for path in paths]
    modules += [Extension(name, [path]) for name, path in CYTHON_ONLY.items()]
    return cythonize(
        modules,
        language_level=3,
        compiler_directives={"binding": True, "boundscheck": False, "wraparound": True},
        quiet=True,
        nthreads=os.cpu_count() or 1,
    )


setup(ext_modules=extensions())
