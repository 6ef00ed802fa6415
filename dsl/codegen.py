"""Checked expressions -> Python source, collected into one module per ruleset.

In the spirit of Jinja2's code generator: every rule condition, priority, parameter,
segment and aggregate becomes Python source; the module is compiled once with
``compile()`` and its functions are what the engine calls. Each generated function takes
the decision's ``EvalContext`` (``context``) and starts by loading its inputs into locals
(``CONTEXT_LOCALS``): the ``event``, the ``profile`` and ``now`` (the event's time); it
reads the history and the per-decision caches of segments and aggregates from the context.

Where a kind is known when the rules load (a literal operand), the generated code takes
an inline fast path and calls a ``dsl.runtime`` helper only in the unusual case; the
helpers define the semantics either way.
"""

from __future__ import annotations

import math
from itertools import count

from nba.dsl import nodes as n
from nba.dsl.twins import runtime as rt

_BINARY_HELPERS = {
    "==": "_eq",
    "!=": "_ne",
    "<": "_lt",
    "<=": "_le",
    ">": "_gt",
    ">=": "_ge",
    "in": "_in",
    "not in": "_not_in",
    "+": "_add",
    "-": "_sub",
    "*": "_mul",
    "/": "_div",
    "%": "_mod",
}
_ORDERING = ("<", "<=", ">", ">=")
# The first line of every generated function: the context's inputs as local variables (a
# local is read faster than an attribute, and most functions read them more than once).
CONTEXT_LOCALS = "event = context.event; profile = context.profile; now = context.now"
_ARITHMETIC_FAST = ("+", "-", "*")


class ModuleBuilder:
    """Accumulates the generated functions and constants of one ruleset."""

    def __init__(self) -> None:
        self.functions: list[str] = []
        self.constants: dict[str, object] = {}
        self._constant_names: dict[tuple, str] = {}
        self._temps = count()
        self.segment_functions: dict[str, str] = {}
        self.aggregate_functions: dict[str, str] = {}  # body -> function name
        # constants made when the module is linked: the Cython matcher's programs (name ->
        # their plan) and its functions (name -> its attribute name)
        self.programs: dict[str, object] = {}
        self.vm_functions: dict[str, str] = {}

    def temp(self) -> str:
        return f"_t{next(self._temps)}"

    def constant(self, value, prefix: str = "_K") -> str:
        key = (prefix, type(value).__name__, repr(value))
        name = self._constant_names.get(key)
        if name is None:
            name = f"{prefix}{len(self._constant_names)}"
            self._constant_names[key] = name
            self.constants[name] = value
        return name

    def add_function(self, source: str) -> None:
        self.functions.append(source)

    def source(self) -> str:
        return "\n\n".join(self.functions) + "\n"


# Generated functions are compiled in chunks of about this much source: compile() of one
# 13.7 MB module (52,000 rules) took 7.3 s and its syntax tree a gigabyte at once; in
# chunks the tree of one chunk lives at a time, and a loader that runs the chunks' code
# elsewhere (dsl/isolated.py) can stop between them.
CHUNK_CHARS = 256 * 1024


def source_chunks(functions: list[str], chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """The generated functions as module sources of about ``chunk_chars`` each, in order."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for function in functions:
        current.append(function)
        size += len(function) + 2
        if size >= chunk_chars:
            chunks.append("\n\n".join(current) + "\n")
            current, size = [], 0
    if current or not chunks:
        chunks.append("\n\n".join(current) + "\n")
    return chunks


def compile_functions(functions: list[str], filename: str) -> list:
    """The code objects of the generated functions' modules (see ``source_chunks``)."""
    return [compile(chunk, filename, "exec") for chunk in source_chunks(functions)]


def run_code(code_objects: list, namespace: dict) -> dict:
    """Run the generated modules' code in ``namespace`` (which defines their functions)."""
    for code in code_objects:
        exec(code, namespace)  # noqa: S102 - the source is generated from a checked ruleset
    return namespace


def runtime_namespace() -> dict:
    from bisect import bisect_right

    return {
        "_EvalError": rt.EvalError,
        "_NUM": rt.NUMBER_CLASSES,
        "_SIMPLE": frozenset({str, int, float}),
        "_INF": math.inf,
        "_bisect_right": bisect_right,
        "_eq": rt.eq,
        "_ne": rt.ne,
        "_lt": rt.lt,
        "_le": rt.le,
        "_gt": rt.gt,
        "_ge": rt.ge,
        "_in": rt.member,
        "_not_in": rt.not_member,
        "_add": rt.add,
        "_sub": rt.sub,
        "_mul": rt.mul,
        "_div": rt.div,
        "_mod": rt.mod,
        "_col": rt.column,
        "_rank": rt.rank,
        "_neg": rt.neg,
        "_get": rt.get,
        "_truth": rt.truth,
        "_distinct_key": rt.distinct_key,
        **{f"_fn_{name}": fn for name, fn in rt.FUNCTIONS.items()},
    }


def is_sure_bool(expr: n.Expr) -> bool:
    """True when the expression can only give ``True`` or ``False`` (never null)."""
    if isinstance(expr, n.Binary):
        return expr.op in ("and", "or", "==", "!=", "<", "<=", ">", ">=", "in", "not in")
    if isinstance(expr, n.Unary):
        return expr.op == "not"
    if isinstance(expr, n.SegmentRef):
        return True
    if isinstance(expr, n.Literal):
        return isinstance(expr.value, bool)
    return False


def literal_source(value, module: ModuleBuilder) -> str:
    if value is None or isinstance(value, (bool, str, int)):
        return repr(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "_INF" if value > 0 else "(-_INF)"
        return repr(value)
    return module.constant(value)


class ExprGen:
    """Python source for the expressions of one generated function.

    ``past`` maps a past event's field to its variable (inside an aggregate). Every
    ``event.FIELD`` and ``profile.FIELD`` the function reads is loaded once, into a local
    variable, by the function's prologue (``prologue()``): a rule set that tests
    ``event.amount`` in twenty rules reads it once.
    """

    def __init__(self, module: ModuleBuilder, aggregate: "callable", past: dict[str, str] | None = None):
        self.module = module
        self.aggregate_call = aggregate
        self.past = past
        self.loads: dict[tuple[str, str], str] = {}  # (root, field) -> local variable
        self.flags: dict[tuple[str, str], str] = {}  # (local variable, "num" | "str") -> flag variable

    def prologue(self, indent: str = "    ") -> str:
        """The lines that load the fields the generated expressions read (may be empty)."""
        lines = []
        for (root, name), variable in self.loads.items():
            source = "event" if root == "event" else "profile"
            lines.append(f"{indent}{variable} = {source}.get({name!r})\n")
        for (variable, kind), flag in self.flags.items():
            test = "in _NUM" if kind == "num" else "is str"
            lines.append(f"{indent}{flag} = {variable}.__class__ {test}\n")
        return "".join(lines)

    def kind_test(self, first: str, name: str, kind: str) -> str:
        """A test that the value (evaluated by ``first``, then held in ``name``) is a number
        (``num``: never a bool) or a string (``str``). For a loaded field the test is made once,
        in the prologue."""
        if (None, name) != (None, first) or name not in self.loads.values():
            return f"{first}.__class__ {'in _NUM' if kind == 'num' else 'is str'}"
        flag = self.flags.get((name, kind))
        if flag is None:
            flag = self.flags[(name, kind)] = f"{name}_{kind}"
        return flag

    def load(self, root: str, name: str) -> str:
        variable = self.loads.get((root, name))
        if variable is None:
            variable = f"_{root[0]}{len(self.loads)}_{name}"
            self.loads[(root, name)] = variable
        return variable

    def bind(self, source: str) -> tuple[str, str]:
        """(an expression that evaluates ``source``, a name that holds its value after)."""
        if source.isidentifier():
            return source, source
        temp = self.module.temp()
        return f"({temp} := {source})", temp

    # -- entry points --

    def value(self, expr: n.Expr) -> str:
        return getattr(self, f"gen_{type(expr).__name__}")(expr)

    def cond(self, expr: n.Expr, what: str = "a condition") -> str:
        """The expression as a Python bool: null is false, any other non-bool an EvalError."""
        if is_sure_bool(expr):
            return self.value(expr)
        first, name = self.bind(self.value(expr))
        return f"({first} is True or ({name} is not False and {name} is not None and _truth({name}, {what!r})))"

    # -- nodes --

    def gen_Literal(self, expr: n.Literal) -> str:
        return literal_source(expr.value, self.module)

    def gen_ListExpr(self, expr: n.ListExpr) -> str:
        return "[" + ", ".join(self.value(item) for item in expr.items) + "]"

    def gen_Field(self, expr: n.Field) -> str:
        if not expr.path:
            return {"event": "event", "profile": "profile"}.get(expr.root, "None")
        head, *rest = expr.path
        if expr.root == "event":
            source = "now" if head == "time" else self.load("event", head)
        elif expr.root == "profile":
            source = self.load("profile", head)
        else:
            source = self.past[head]
        for name in rest:
            source = f"_get({source}, {name!r})"
        return source

    def gen_SegmentRef(self, expr: n.SegmentRef) -> str:
        return f"{self.module.segment_functions[expr.name]}(context)"

    def gen_Member(self, expr: n.Member) -> str:
        return f"_get({self.value(expr.target)}, {expr.name!r})"

    def gen_Unary(self, expr: n.Unary) -> str:
        if expr.op == "not":
            return f"(not {self.cond(expr.operand, '`not`')})"
        return f"_neg({self.value(expr.operand)})"

    def gen_IfExpr(self, expr: n.IfExpr) -> str:
        return f"({self.value(expr.then)} if {self.cond(expr.cond, '`if`')} else {self.value(expr.other)})"

    def gen_Call(self, expr: n.Call) -> str:
        args = [self.value(arg) for arg in expr.args]
        if expr.name == "matches":
            pattern = expr.args[1]
            compiled = self.module.constant(rt.compile_pattern(pattern.value), "_RX")
            args = [args[0], compiled]
        return f"_fn_{expr.name}({', '.join(args)})"

    def gen_Aggregate(self, expr: n.Aggregate) -> str:
        return f"{self.aggregate_call(expr)}(context)"

    def gen_Binary(self, expr: n.Binary) -> str:
        op = expr.op
        if op == "and":
            return self.logic(expr, "and")
        if op == "or":
            return self.logic(expr, "or")
        left, right = expr.left, expr.right
        if op in ("==", "!="):
            return self.equality(op, left, right)
        if op in _ORDERING:
            return self.ordering(op, left, right)
        if op in ("in", "not in"):
            return self.membership(op, left, right)
        if op in _ARITHMETIC_FAST and isinstance(right, n.Literal) and rt.is_number(right.value):
            first, name = self.bind(self.value(left))
            literal = self.value(right)
            return f"({name} {op} {literal} if {self.kind_test(first, name, 'num')} else {_BINARY_HELPERS[op]}({name}, {literal}))"
        return f"{_BINARY_HELPERS[op]}({self.value(left)}, {self.value(right)})"

    def logic(self, expr: n.Binary, op: str) -> str:
        left = expr.left
        right_source = self.cond(expr.right, f"`{op}`")
        if isinstance(left, n.Literal) and isinstance(left.value, bool):
            return right_source  # folded: `true and X` / `false or X`
        return f"({self.cond(left, f'`{op}`')} {op} {right_source})"

    def equality(self, op: str, left: n.Expr, right: n.Expr) -> str:
        if isinstance(left, n.Literal) and not isinstance(right, n.Literal):
            left, right = right, left
        source = self.value(left)
        if isinstance(right, n.Literal):
            value = right.value
            negate = op == "!="
            if value is None:
                return f"({source} is {'not ' if negate else ''}None)"
            if isinstance(value, bool):
                return f"({source} is {'not ' if negate else ''}{value!r})"
            if isinstance(value, str):
                return f"({source} {op} {value!r})"
            if rt.is_number(value):
                first, name = self.bind(source)
                literal = literal_source(value, self.module)
                if first == name and name in self.loads.values():
                    test = f"({self.kind_test(name, name, 'num')} and {name} == {literal})"
                else:
                    test = f"({first} == {literal} and {name}.__class__ is not bool)"
                return f"(not {test})" if negate else test
        return f"{_BINARY_HELPERS[op]}({source}, {self.value(right)})"

    def ordering(self, op: str, left: n.Expr, right: n.Expr) -> str:
        helper = _BINARY_HELPERS[op]
        if isinstance(right, n.Literal) and (rt.is_number(right.value) or isinstance(right.value, str)):
            first, name = self.bind(self.value(left))
            literal = literal_source(right.value, self.module)
            guard = self.kind_test(first, name, "num" if rt.is_number(right.value) else "str")
            return f"({name} {op} {literal} if {guard} else {helper}({name}, {literal}))"
        return f"{helper}({self.value(left)}, {self.value(right)})"

    def membership(self, op: str, left: n.Expr, right: n.Expr) -> str:
        helper = _BINARY_HELPERS[op]
        if (
            isinstance(right, n.Literal)
            and isinstance(right.value, list)
            and right.value
            and all(isinstance(item, str) for item in right.value)
        ):
            strings = self.module.constant(frozenset(right.value), "_S")
            items = self.module.constant(right.value, "_L")
            first, name = self.bind(self.value(left))
            return f"({name} {op} {strings} if {self.kind_test(first, name, 'str')} else {helper}({name}, {items}))"
        return f"{helper}({self.value(left)}, {self.value(right)})"
