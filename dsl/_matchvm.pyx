# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The Cython matcher: tests a bucket's rules by interpreting their compact form.

The compiled twin of the generated Python matchers (dsl/compiler.py builds both from the
same checked rules; dsl/matchplan.py defines the form). ``BucketProgram(plan)`` is called
like a generated matcher, ``program(context, errors)``, and gives the indexes of the rules
that hold in the bucket's order, lazily, so a ranked decision stops testing at its limit.

A field is read at most once per decision, on first use, into a slot that keeps its
kind and, for a number, its value as a C double; comparisons with a literal then run in
C. The unusual cases (a null, a value of another kind, a whole number beyond 2**53) go
through the very ``dsl.runtime`` helper the generated code calls, so both twins give
the same results and raise the same errors. Sub-conditions without an atom call their
generated Python function.
"""

cimport cython
from nba.dsl.runtime cimport EvalContext
from cpython.dict cimport PyDict_GetItemWithError
from cpython.exc cimport PyErr_Occurred
from cpython.list cimport PyList_GET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject, PyObject_RichCompareBool
from cpython.set cimport PySet_Contains
from libc.string cimport memcmp

cdef extern from "Python.h":
    bint PyFloat_CheckExact(object)
    bint PyLong_CheckExact(object)
    bint PyUnicode_CheckExact(object)
    double PyFloat_AS_DOUBLE(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    int PyUnicode_KIND(object)
    void* PyUnicode_DATA(object)

# Node kinds: the numbers of dsl/matchplan.py.
DEF K_FALSE = 0
DEF K_TRUE = 1
DEF K_AND = 2
DEF K_OR = 3
DEF K_NOT = 4
DEF K_PYTHON = 5
DEF K_NUMBER_ORDER = 6
DEF K_STRING_ORDER = 7
DEF K_STRING_EQ = 8
DEF K_NUMBER_EQ = 9
DEF K_IS = 10
DEF K_IN_STRINGS = 11
DEF K_TRUTH = 12
DEF K_EQ_BOUND = 13  # a past field == a value of the decision's (its slot index in ``number``)

# Slot kinds once loaded.
DEF S_UNLOADED = 0
DEF S_NUMBER = 1  # a float, or an int that converts exactly: ``number`` holds it
DEF S_STRING = 2
DEF S_OTHER = 3  # null, bool, a big int, a list, a map: the helpers decide

DEF ROOT_EVENT = 0
DEF ROOT_PROFILE = 1
DEF ROOT_TIME = 2
DEF ROOT_PAST = 3
DEF ROOT_BOUND = 4

DEF EXACT = 9007199254740992  # 2**53
DEF INLINE_SLOTS = 32  # fields a bucket reads without allocating per decision


cdef struct Node:
    int kind
    int size
    int slot
    int op
    double number
    PyObject* obj
    PyObject* obj2
    PyObject* obj3


cdef struct Entry:
    Py_ssize_t rule
    double active_from
    double active_to
    int node
    # the usual condition, atoms joined by `and` (or one atom): nodes first .. first + count
    # (count 0: another condition, tested from ``node``)
    int first
    int count


cdef struct Slot:
    int kind
    double number
    PyObject* value  # borrowed from the event or profile dict, which outlive the decision


from sys import intern


cdef class BucketProgram:
    """One bucket's rules, ready to test: ``program(context, errors)`` -> matching rule indexes."""

    cdef Node* nodes
    cdef Entry* entries
    cdef int n_nodes
    cdef int n_entries
    cdef int n_slots
    cdef int* slot_roots
    cdef tuple slot_names
    cdef list keep  # the objects the nodes point at

    def __cinit__(self, plan):
        cdef int i
        self.nodes = NULL
        self.entries = NULL
        self.slot_roots = NULL
        self.keep = []
        nodes = plan.nodes
        entries = plan.entries
        self.n_nodes = len(nodes)
        self.n_entries = len(entries)
        self.n_slots = len(plan.slots)
        self.nodes = <Node*> PyMem_Malloc(max(self.n_nodes, 1) * sizeof(Node))
        self.entries = <Entry*> PyMem_Malloc(max(self.n_entries, 1) * sizeof(Entry))
        self.slot_roots = <int*> PyMem_Malloc(max(self.n_slots, 1) * sizeof(int))
        if self.nodes == NULL or self.entries == NULL or self.slot_roots == NULL:
            raise MemoryError()
        self.slot_names = tuple(intern(name) for _root, name in plan.slots)
        for i, (root, _name) in enumerate(plan.slots):
            self.slot_roots[i] = root
        for i, node in enumerate(nodes):
            kind, size, slot, op, number, obj, obj2, obj3 = node
            self.nodes[i].kind = kind
            self.nodes[i].size = size
            self.nodes[i].slot = slot
            self.nodes[i].op = op
            self.nodes[i].number = number
            self.nodes[i].obj = self._hold(obj)
            self.nodes[i].obj2 = self._hold(obj2)
            self.nodes[i].obj3 = self._hold(obj3)
        for i, entry in enumerate(entries):
            self.entries[i].rule = entry.rule
            self.entries[i].active_from = entry.active_from
            self.entries[i].active_to = entry.active_to
            self.entries[i].node = entry.node
            self.entries[i].first = 0
            self.entries[i].count = 0
            head = nodes[entry.node]
            if head[0] >= K_NUMBER_ORDER:
                self.entries[i].first = entry.node
                self.entries[i].count = 1
            elif head[0] == K_AND and all(nodes[k][0] >= K_NUMBER_ORDER for k in range(entry.node + 1, entry.node + head[1])):
                self.entries[i].first = entry.node + 1
                self.entries[i].count = head[1] - 1

    cdef PyObject* _hold(self, obj):
        self.keep.append(obj)
        return <PyObject*> obj

    def __dealloc__(self):
        PyMem_Free(self.nodes)
        PyMem_Free(self.entries)
        PyMem_Free(self.slot_roots)

    def __call__(self, context, list errors):
        return start(self, context, errors)

    def start(self, dict event, dict profile, now, event_type, history, list errors):
        """``self(context, errors)`` with the context made here: the matches hold it as
        ``.context``."""
        cdef EvalContext context = EvalContext.__new__(EvalContext)
        context.event = event
        context.profile = profile
        context.now = now
        context.event_type = event_type
        context.history = history
        context.aggregates = {}
        context.segments = {}
        return start(self, context, errors)

    @property
    def size(self):
        """(rules, nodes, slots)"""
        return (self.n_entries, self.n_nodes, self.n_slots)


@cython.freelist(16)
cdef class Matches:
    """The rules of one bucket that hold for one decision, found as they are asked for."""

    cdef BucketProgram program
    cdef readonly object context  # the decision's EvalContext
    cdef list errors
    cdef dict event
    cdef dict profile
    cdef object now
    cdef double now_number
    cdef int position
    cdef list columns  # row filters: the past events' columns, one per slot
    cdef Py_ssize_t row
    cdef Slot* slots
    cdef Slot inline_slots[INLINE_SLOTS]

    def __dealloc__(self):
        if self.slots != &self.inline_slots[0]:
            PyMem_Free(self.slots)

    def __iter__(self):
        return self


    def __next__(self):
        cdef BucketProgram program = self.program
        cdef Entry* entry = NULL
        cdef Py_ssize_t found = -1
        while self.position < program.n_entries:
            try:
                found = self.next_match()
            except Exception as exc:  # a rule's error never stops the decision
                self.errors.append((program.entries[self.position - 1].rule, exc))
                continue
            if found >= 0:
                return found
            break
        raise StopIteration

    cdef Py_ssize_t next_match(self) except -2:
        """The next rule that holds (its index), or -1; an error leaves ``position`` just
        past the rule that raised it."""
        cdef BucketProgram program = self.program
        cdef Node* nodes = program.nodes
        cdef Entry* entry
        cdef Node* node
        cdef Slot* slot
        cdef int held, k
        while self.position < program.n_entries:
            entry = &program.entries[self.position]
            self.position += 1
            if not (entry.active_from <= self.now_number and self.now_number < entry.active_to):
                continue
            if entry.count == 0:
                if test(self, nodes, entry.node):
                    return entry.rule
                continue
            held = 1
            for k in range(entry.first, entry.first + entry.count):
                node = &nodes[k]
                slot = &self.slots[node.slot]
                if slot.kind == S_UNLOADED:
                    slot = load(self, node.slot)
                # the common cases inline; atom() has them all
                if node.kind == K_STRING_EQ and slot.kind == S_STRING:
                    held = same_string(slot.value, node.obj) ^ node.op
                elif node.kind == K_NUMBER_ORDER and slot.kind == S_NUMBER:
                    held = compare(slot.number, node.number, node.op)
                else:
                    held = atom(self, node)
                if not held:
                    break
            if held:
                return entry.rule
        return -1


cdef Matches start(BucketProgram program, EvalContext context, list errors):
    cdef Matches matches = Matches.__new__(Matches)
    matches.context = context
    matches.errors = errors
    matches.event = context.event
    matches.profile = context.profile
    matches.now = context.now
    matches.now_number = <double> matches.now
    return with_slots(matches, program)


cdef Matches with_slots(Matches matches, BucketProgram program):
    cdef int i
    matches.program = program
    matches.position = 0
    if program.n_slots <= INLINE_SLOTS:
        matches.slots = &matches.inline_slots[0]
    else:
        matches.slots = <Slot*> PyMem_Malloc(program.n_slots * sizeof(Slot))
        if matches.slots == NULL:
            raise MemoryError()
    for i in range(program.n_slots):
        matches.slots[i].kind = S_UNLOADED
    return matches


cdef Slot* load(Matches m, int index) except NULL:
    """The slot of a field, read from the event or profile on first use."""
    cdef Slot* slot = &m.slots[index]
    cdef PyObject* found
    cdef object value
    cdef long long whole
    cdef int overflow = 0
    cdef int root = m.program.slot_roots[index]
    if root == ROOT_PAST:
        found = PyList_GET_ITEM(<list> PyList_GET_ITEM(m.columns, index), m.row)
    elif root == ROOT_BOUND:
        found = PyList_GET_ITEM(m.columns, index)
    elif root == ROOT_TIME:
        found = <PyObject*> m.now
    else:
        found = PyDict_GetItemWithError(m.event if root == ROOT_EVENT else m.profile, m.program.slot_names[index])
        if found == NULL:
            if PyErr_Occurred():
                return NULL
            found = <PyObject*> None
    slot.value = found
    value = <object> found
    if PyFloat_CheckExact(value):
        slot.kind = S_NUMBER
        slot.number = PyFloat_AS_DOUBLE(value)
    elif PyLong_CheckExact(value):
        whole = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and -EXACT <= whole <= EXACT:
            slot.kind = S_NUMBER
            slot.number = <double> whole
        else:
            slot.kind = S_OTHER
    elif PyUnicode_CheckExact(value):
        slot.kind = S_STRING
    else:
        slot.kind = S_OTHER
    return slot


cdef int test(Matches m, Node* nodes, int at) except -1:
    """1 when the condition starting at node ``at`` holds, else 0."""
    cdef Node* node = &nodes[at]
    cdef int kind = node.kind
    cdef int i, child, held
    if kind == K_AND:
        child = at + 1
        for i in range(node.slot):  # slot: the number of children
            node = &nodes[child]
            held = atom(m, node) if node.kind >= K_NUMBER_ORDER else test(m, nodes, child)
            if not held:
                return 0
            child += node.size
        return 1
    if kind == K_OR:
        child = at + 1
        for i in range(node.slot):
            node = &nodes[child]
            held = atom(m, node) if node.kind >= K_NUMBER_ORDER else test(m, nodes, child)
            if held:
                return 1
            child += node.size
        return 0
    if kind >= K_NUMBER_ORDER:
        return atom(m, node)
    if kind == K_TRUE:
        return 1
    if kind == K_FALSE:
        return 0
    if kind == K_NOT:
        return 0 if test(m, nodes, at + 1) else 1
    if kind == K_PYTHON:
        return 1 if (<object> node.obj)(m.context) else 0
    raise AssertionError(f"unknown node kind {kind}")


cdef inline int atom(Matches m, Node* node) except -1:
    """1 when the atom (a field against a literal) holds, else 0."""
    cdef int kind = node.kind
    cdef int held
    cdef Slot* other
    cdef Slot* slot = &m.slots[node.slot]
    if slot.kind == S_UNLOADED:
        slot = load(m, node.slot)
    if kind == K_STRING_EQ:
        if slot.kind == S_STRING:
            held = same_string(slot.value, node.obj)
        else:
            held = PyObject_RichCompareBool(<object> slot.value, <object> node.obj, 2)
        return held ^ node.op
    if kind == K_NUMBER_ORDER:
        if slot.kind == S_NUMBER:
            return compare(slot.number, node.number, node.op)
        return 1 if (<object> node.obj2)(<object> slot.value, <object> node.obj) else 0
    if kind == K_IN_STRINGS:
        if slot.kind == S_STRING:
            return PySet_Contains(<object> node.obj, <object> slot.value) ^ node.op
        return 1 if (<object> node.obj3)(<object> slot.value, <object> node.obj2) else 0
    if kind == K_NUMBER_EQ:
        # only numbers equal a number (a whole number beyond 2**53 never equals a
        # literal within it)
        held = slot.kind == S_NUMBER and slot.number == node.number
        return held ^ node.op
    if kind == K_IS:
        return (slot.value == node.obj) ^ node.op
    if kind == K_STRING_ORDER:
        if slot.kind == S_STRING:
            return PyObject_RichCompareBool(<object> slot.value, <object> node.obj, node.op)
        return 1 if (<object> node.obj2)(<object> slot.value, <object> node.obj) else 0
    if kind == K_EQ_BOUND:
        other = &m.slots[<int> node.number]
        if other.kind == S_UNLOADED:
            other = load(m, <int> node.number)
        if slot.kind == S_STRING and other.kind == S_STRING:
            held = same_string(slot.value, other.value)
        else:
            held = 1 if (<object> node.obj2)(<object> slot.value, <object> other.value) else 0
        return held ^ node.op
    if kind == K_TRUTH:
        if slot.value == <PyObject*> True:
            return 1
        if slot.value == <PyObject*> False or slot.value == <PyObject*> None:
            return 0
        return 1 if (<object> node.obj2)(<object> slot.value, <object> node.obj) else 0
    raise AssertionError(f"unknown node kind {kind}")


cdef inline int same_string(PyObject* a, PyObject* b) noexcept:
    """Two exact (so canonical, PEP 393) str objects equal?"""
    cdef Py_ssize_t length
    cdef int kind
    if a == b:
        return 1
    length = PyUnicode_GET_LENGTH(<object> a)
    if length != PyUnicode_GET_LENGTH(<object> b):
        return 0
    kind = PyUnicode_KIND(<object> a)
    if kind != PyUnicode_KIND(<object> b):
        return 0
    return memcmp(PyUnicode_DATA(<object> a), PyUnicode_DATA(<object> b), length * kind) == 0


cdef inline int compare(double a, double b, int op) noexcept:
    if op == 0:
        return a < b
    if op == 1:
        return a <= b
    if op == 4:
        return a > b
    return a >= b


# ---- row filters: an aggregate's `where` over the past events' columns -----------------

cdef Matches start_rows(BucketProgram where, list columns, Py_ssize_t lo, Py_ssize_t hi):
    """A context that reads slot i from ``columns[i][row]``, once each column is checked."""
    cdef Matches rows = Matches.__new__(Matches)
    cdef Py_ssize_t i
    if len(columns) != where.n_slots:
        raise ValueError(f"a row filter of {where.n_slots} columns was given {len(columns)}")
    if lo < 0:
        raise ValueError("rows start at 0")
    for i in range(where.n_slots):
        if where.slot_roots[i] == ROOT_PAST:
            columns[i] = rows_of(columns[i], hi)
    rows.columns = columns
    return with_slots(rows, where)


cdef list rows_of(column, Py_ssize_t hi):
    """The column as a list (one that is not, a tuple say, is copied), checked to hold row hi - 1."""
    cdef list out = column if type(column) is list else list(column)
    if len(out) < hi:
        raise IndexError(f"a column of {len(out)} rows has no row {hi - 1}")
    return out


cdef inline int row_holds(Matches rows, Py_ssize_t row) except -1:
    cdef int i
    rows.row = row
    for i in range(rows.program.n_slots):
        rows.slots[i].kind = S_UNLOADED
    return test(rows, rows.program.nodes, 0)


def count_rows(BucketProgram where, list columns, Py_ssize_t lo, Py_ssize_t hi):
    """How many of the rows ``lo`` to ``hi`` (excluded) the `where` holds for."""
    cdef Matches rows = start_rows(where, columns, lo, hi)
    cdef Py_ssize_t row, total = 0
    for row in range(lo, hi):
        total += row_holds(rows, row)
    return total


def select_rows(BucketProgram where, list columns, Py_ssize_t lo, Py_ssize_t hi, values):
    """The items of ``values`` in the rows ``lo`` to ``hi`` the `where` holds for, in order."""
    cdef Matches rows = start_rows(where, columns, lo, hi)
    cdef Py_ssize_t row
    cdef list out = []
    values = rows_of(values, hi)
    for row in range(lo, hi):
        if row_holds(rows, row):
            out.append(<object> PyList_GET_ITEM(values, row))
    return out


def last_row(BucketProgram where, list columns, Py_ssize_t lo, Py_ssize_t hi):
    """The last of the rows ``lo`` to ``hi`` (excluded) the `where` holds for, or -1."""
    cdef Matches rows = start_rows(where, columns, lo, hi)
    cdef Py_ssize_t row
    for row in range(hi - 1, lo - 1, -1):
        if row_holds(rows, row):
            return row
    return -1


# The accumulating kernels: each does what the generated loop's step does, row by row in
# the same order, so the results are the same Python numbers and sets.

def sum_rows(BucketProgram where, list columns, Py_ssize_t lo, Py_ssize_t hi, values):
    """(sum, count) of the numbers of ``values`` in the rows the `where` holds for."""
    cdef Matches rows = start_rows(where, columns, lo, hi)
    cdef list items = rows_of(values, hi)
    cdef Py_ssize_t row, count = 0
    total = 0
    for row in range(lo, hi):
        if row_holds(rows, row):
            value = <object> PyList_GET_ITEM(items, row)
            if type(value) is int or type(value) is float:
                total = total + value
                count += 1
    return total, count


def min_rows(BucketProgram where, list columns, Py_ssize_t lo, Py_ssize_t hi, values):
    """The least number of ``values`` in the rows the `where` holds for, or None."""
    cdef Matches rows = start_rows(where, columns, lo, hi)
    cdef list items = rows_of(values, hi)
    cdef Py_ssize_t row
    best = None
    for row in range(lo, hi):
        if row_holds(rows, row):
            value = <object> PyList_GET_ITEM(items, row)
            if (type(value) is int or type(value) is float) and (best is None or value < best):
                best = value
    return best


def max_rows(BucketProgram where, list columns, Py_ssize_t lo, Py_ssize_t hi, values):
    """The greatest number of ``values`` in the rows the `where` holds for, or None."""
    cdef Matches rows = start_rows(where, columns, lo, hi)
    cdef list items = rows_of(values, hi)
    cdef Py_ssize_t row
    best = None
    for row in range(lo, hi):
        if row_holds(rows, row):
            value = <object> PyList_GET_ITEM(items, row)
            if (type(value) is int or type(value) is float) and (best is None or value > best):
                best = value
    return best


def distinct_rows(BucketProgram where, list columns, Py_ssize_t lo, Py_ssize_t hi, values, set seen, distinct_key):
    """Adds to ``seen`` the values (not null) of the rows the `where` holds for: strings and
    numbers as they are, anything else by ``distinct_key``."""
    cdef Matches rows = start_rows(where, columns, lo, hi)
    cdef list items = rows_of(values, hi)
    cdef Py_ssize_t row
    for row in range(lo, hi):
        if row_holds(rows, row):
            value = <object> PyList_GET_ITEM(items, row)
            if value is None:
                continue
            if type(value) is str or type(value) is int or type(value) is float:
                seen.add(value)
            else:
                seen.add(distinct_key(value))
