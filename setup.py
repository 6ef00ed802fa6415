"""Builds the Cython twins of the hot path (see dsl/twins.py).

Each twin extension is compiled from the same file as its pure-Python twin, so the two
cannot drift apart; the rule matcher (dsl/_matchvm.pyx) is written in Cython and its
pure-Python twin is the generated Python matchers. Without Cython or a C compiler the package still installs and
runs on the pure-Python twins.
"""

import os

from setuptools import Extension, setup

TWINS = {
    "dsl._runtime_c": "dsl/runtime.py",
    "engine._procedure_c": "engine/procedure.py",
}
# Written in Cython; the pure-Python twin is another technique (see dsl/twins.py).
CYTHON_ONLY = {
    "dsl._matchvm": "dsl/_matchvm.pyx",
}


def declarations(name: str) -> list[str]:
    path = name.replace(".", "/") + ".pxd"
    return [path] if os.path.exists(path) else []


def extensions():
    if os.environ.get("NBA_NO_CYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    # a twin's static types live in a .pxd named after the extension (dsl/_runtime_c.pxd)
    modules = [Extension(name, [path], depends=declarations(name)) for name, path in TWINS.items()]
    modules += [Extension(name, [path]) for name, path in CYTHON_ONLY.items()]
    return cythonize(
        modules,
        language_level=3,
        compiler_directives={"binding": False, "boundscheck": False, "wraparound": True},
        quiet=True,
    )


setup(ext_modules=extensions())
