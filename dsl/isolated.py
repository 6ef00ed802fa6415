"""Loading a ruleset in a child process, so that the caller's threads and event loop keep running.

A load is parse, check, code generation and ``compile()`` of the generated functions:
CPU work that holds the GIL (``compile()`` of a 52,000-rule ruleset held it for seconds
at a time), so a worker thread would still stall the event loop. Here a child Python
process does all of it and sends back, through a pipe:

- the ruleset's recipe (``dsl.compiler.RulesetRecipe``: plain data, pickled), and
- the code objects of the generated functions, one per chunk of source (``marshal``);

and the parent only unmarshals the code, runs it (which defines the functions) and links
the recipe to them: a few percent of the load's time, in steps short enough that the
awaitable form returns to the event loop between them. A ruleset that does not load
raises the same ``LoadError`` as ``load_ruleset``; a child that dies raises
``RulesetLoadFailed``.

The child runs the same interpreter with the same import path, and the parent's choice
of twin (``NBA_PURE_PYTHON``), so that the code and the plans it sends are the ones the
parent would make.
"""

from __future__ import annotations

import asyncio
import marshal
import os
import pickle
import struct
import subprocess
import sys
import time
from contextlib import contextmanager

from nba.dsl import twins
from nba.dsl.compiler import CompiledRuleset, link, link_buckets, link_namespace, link_rules
from nba.dsl.explain import ExplainersFromSource
from nba.dsl.source import LoadError


@contextmanager
def collector_paused():
    """The loader's (imported when used: nba.dsl.loader imports this module)."""
    from nba.dsl.loader import collector_paused as paused

    with paused():
        yield


# the child's module, whatever the package is installed as (dsl or nba.dsl)
_CHILD_MODULE = __name__
_HEADER = struct.Struct("!Q")
# the parent links this many rules between two returns to the event loop
LINK_STEP = 500


class RulesetLoadFailed(RuntimeError):
    """The child process that loads a ruleset failed without a load error (it crashed,
    was killed, or answered something unreadable)."""


# ---- the child ----------------------------------------------------------------------------


def child_main() -> int:
    """Load the ruleset named on the command line; write the answer to stdout.

    The answer is a pickled index (8 bytes of length first), then the parts it lists, raw:
    each part is unpickled or unmarshalled on its own by the parent, in its own step."""
    from nba.dsl.loader import _PICKED, compile_recipe, read_sources, recipe_of_sources

    root, implementation = sys.argv[1], sys.argv[2]
    matcher_vm = None if implementation == "python" else _PICKED
    parts: list[bytes] = []
    try:
        paths, sources, diagnostics = read_sources(root)
        recipe = recipe_of_sources(sources, diagnostics, matcher_vm)
        code = compile_recipe(recipe, sources, diagnostics)
        source = ("\n\n".join(recipe.functions) + "\n").encode("utf-8", "surrogatepass")
        recipe.functions = []
        recipe.compiler = None  # the checked ruleset stays here: explanations need it (see the docs)
        head, rule_parts, bucket_parts = _parts(recipe)
        code_parts = [marshal.dumps(chunk) for chunk in code]
        parts = [source, head, *rule_parts, *bucket_parts, *code_parts]
        index = ("ok", paths, len(rule_parts), len(bucket_parts), len(code_parts), [len(part) for part in parts])
    except LoadError as exc:
        wanted = {d.pos.path for d in exc.diagnostics}
        index = ("error", exc.diagnostics, {path: lines for path, lines in exc.sources.items() if path in wanted})
    data = pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL)
    out = sys.stdout.buffer
    out.write(_HEADER.pack(len(data)))
    out.write(data)
    for part in parts:
        out.write(part)
    out.flush()
    return 0


def _parts(recipe) -> tuple[bytes, list[bytes], list[bytes]]:
    """The recipe in pieces that each unpickle quickly: the rules and the buckets apart,
    LINK_STEP rules (or their worth of buckets) a piece, and the rest."""
    rules, buckets = recipe.rules, list(recipe.buckets.items())
    recipe.rules, recipe.buckets = [], {}
    head = pickle.dumps(recipe, protocol=pickle.HIGHEST_PROTOCOL)
    rule_parts = [
        pickle.dumps(rules[i : i + LINK_STEP], protocol=pickle.HIGHEST_PROTOCOL)
        for i in range(0, len(rules), LINK_STEP)
    ]
    bucket_parts, part, size = [], [], 0
    for item in buckets:
        part.append(item)
        size += len(item[1][0])
        if size >= LINK_STEP:
            bucket_parts.append(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))
            part, size = [], 0
    if part:
        bucket_parts.append(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))
    return head, rule_parts, bucket_parts


# ---- the parent ---------------------------------------------------------------------------


def _command(root: str) -> tuple[list[str], dict]:
    implementation = "cython" if twins.matchvm is not None else "python"
    code = f"import sys; sys.path[:0] = {[p for p in sys.path if p]!r}; from {_CHILD_MODULE} import child_main; sys.exit(child_main())"
    env = dict(os.environ)
    env["NBA_PURE_PYTHON"] = "1" if twins.IMPLEMENTATION == "python" else "0"
    return [sys.executable, "-c", code, root, implementation], env


def _answer(stdout: bytes, stderr: bytes, returncode: int):
    """The child's answer: ("ok", paths, rule parts, bucket parts, code parts, [parts as
    memoryviews]); LoadError as the child found it; RulesetLoadFailed when it failed."""
    if returncode != 0 or len(stdout) < _HEADER.size:
        detail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {returncode}"]
        raise RulesetLoadFailed(f"the process loading the ruleset failed: {detail[0]}")
    view = memoryview(stdout)
    (size,) = _HEADER.unpack_from(view)
    start = _HEADER.size + size
    if len(view) < start:
        raise RulesetLoadFailed("the process loading the ruleset answered an incomplete result")
    index = pickle.loads(view[_HEADER.size : start])
    if index[0] == "error":
        raise LoadError(index[1], index[2])
    parts = []
    for length in index[5]:
        parts.append(view[start : start + length])
        start += length
    if start != len(view):
        raise RulesetLoadFailed("the process loading the ruleset answered an incomplete result")
    return index[:5] + (parts,)


def load_ruleset_in_subprocess(root: str | os.PathLike, timeout: float | None = None) -> CompiledRuleset:
    """``load_ruleset(root)``, with the parse, check and compile done by a child process.

    Blocking; for an event loop use ``load_ruleset_async``. ``timeout``: seconds the child
    may take (then it is killed and RulesetLoadFailed is raised)."""
    command, env = _command(os.fspath(root))
    try:
        done = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RulesetLoadFailed(f"loading the ruleset took more than {timeout} s") from None
    steps = _link_steps(_answer(done.stdout, done.stderr, done.returncode), str(root))
    with collector_paused():
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value


async def load_ruleset_async(root: str | os.PathLike, timeout: float | None = None) -> CompiledRuleset:
    """``load_ruleset(root)`` without stalling the running event loop: the load runs in a
    child process, and the parent's share (unmarshal the code, define the functions, link)
    runs in short steps with a return to the loop between them."""
    command, env = _command(os.fspath(root))
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise RulesetLoadFailed(f"loading the ruleset took more than {timeout} s") from None
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    steps = _link_steps(_answer(stdout, stderr, process.returncode), str(root))
    del stdout
    # The cyclic garbage collector is paused while the ruleset is linked: a full collection
    # scans every object of the process, the new ruleset's included, and one in the middle
    # of the steps stalled the loop for 250 ms (52,000 rules); the steps themselves stay under
    # 50 ms. It runs again (as it would after any load) once the ruleset is made.
    with collector_paused():
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return finished.value
            await asyncio.sleep(0)  # the loop runs between two steps


def _link_steps(answer, root: str):
    """Unpickle, unmarshal, define the functions and link, one short step per ``yield``;
    the ruleset is the generator's return value."""
    _status, paths, n_rules, n_buckets, _n_code, parts = answer
    source = str(parts[0], "utf-8", "surrogatepass")
    yield
    recipe = pickle.loads(parts[1])
    rule_parts = parts[2 : 2 + n_rules]
    bucket_parts = parts[2 + n_rules : 2 + n_rules + n_buckets]
    chunks = parts[2 + n_rules + n_buckets :]
    yield
    namespace = link_namespace(recipe, [])
    for chunk in chunks:
        exec(marshal.loads(chunk), namespace)  # noqa: S102 - generated from a checked ruleset, by this package
        yield
    rules: list = []
    for part in rule_parts:
        rules += link_rules(pickle.loads(part), namespace, recipe.policies)
        yield
    buckets: dict = {}
    for part in bucket_parts:
        buckets.update(link_buckets(pickle.loads(part), namespace))
        yield
    ruleset = link(recipe, [], namespace=namespace, rules=rules, buckets=buckets)
    ruleset.paths = paths
    ruleset.python_source = source
    # The checked tree stayed in the child: explanations load the rules again, in this
    # process, the first time one is asked for (dsl/explain.py).
    ruleset.explainer = ExplainersFromSource(root, [rule.id for rule in rules])
    return ruleset


def measure(root: str) -> dict:
    """Seconds of each phase of a load in this process (for the benchmark)."""
    from nba.dsl.loader import compile_recipe, read_sources, recipe_of_sources

    started = time.perf_counter()
    paths, sources, diagnostics = read_sources(root)
    recipe = recipe_of_sources(sources, diagnostics)
    built = time.perf_counter()
    code = compile_recipe(recipe, sources, diagnostics)
    compiled = time.perf_counter()
    link(recipe, code)
    linked = time.perf_counter()
    return {"parse_check_generate_s": built - started, "compile_s": compiled - built, "link_s": linked - compiled}


__all__ = ["RulesetLoadFailed", "load_ruleset_async", "load_ruleset_in_subprocess"]
