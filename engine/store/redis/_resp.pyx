# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Redis commands packed as RESP in C: the compiled twin of ``hiredis.pack_command``.

``hiredis.pack_command`` formats every length with ``sprintf`` into a growing buffer: about
3 µs for the commit's EVALSHA of some thirty arguments, one of the larger costs of a
decision on Redis. Here each argument's bytes are found first (a ``str``'s UTF-8 form is
cached in the string itself; a ``bytes`` is used as it is; an ``int`` is written in
decimal, a ``float`` as its ``repr``), then the whole command is written into one
``bytes`` of the exact size. Anything else (a subclass, a bool, a ``memoryview``, a list) goes to
``hiredis.pack_command`` for the whole command, so the two give the same bytes and the
same errors for every input (tests/test_resp.py checks both on random commands).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy

import hiredis

cdef extern from "Python.h":
    bint PyUnicode_CheckExact(object)
    bint PyBytes_CheckExact(object)
    bint PyLong_CheckExact(object)
    bint PyFloat_CheckExact(object)
    bint PyTuple_CheckExact(object)
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL

DEF STACK_ARGS = 48  # arguments whose places fit on the stack (more: allocated)


cdef struct Part:
    const char* data
    Py_ssize_t size
    char digits[24]  # a whole number's decimal form, when ``data`` points here


cdef inline int decimal_size(Py_ssize_t n) noexcept:
    cdef int digits = 1
    while n >= 10:
        n //= 10
        digits += 1
    return digits


cdef inline char* write_decimal(char* at, Py_ssize_t n) noexcept:
    """``n`` (>= 0) in decimal at ``at``; returns the end."""
    cdef int digits = decimal_size(n)
    cdef char* end = at + digits
    cdef char* p = end
    while True:
        p -= 1
        p[0] = <char> (48 + n % 10)
        n //= 10
        if n == 0:
            break
    return end


cdef inline Py_ssize_t write_whole(char* at, long long value) noexcept:
    """``value`` in decimal at ``at``; returns its size."""
    cdef unsigned long long magnitude
    cdef char reversed_digits[24]
    cdef int count = 0, i, start = 0
    if value < 0:
        at[0] = 45  # '-'
        start = 1
        magnitude = <unsigned long long> (-(value + 1)) + 1
    else:
        magnitude = <unsigned long long> value
    while True:
        reversed_digits[count] = <char> (48 + magnitude % 10)
        count += 1
        magnitude //= 10
        if magnitude == 0:
            break
    for i in range(count):
        at[start + i] = reversed_digits[count - 1 - i]
    return start + count


cdef inline char* write_head(char* at, char mark, Py_ssize_t n) noexcept:
    at[0] = mark
    at = write_decimal(at + 1, n)
    at[0] = 13
    at[1] = 10
    return at + 2


cdef object pack_into_parts(object command, Part* parts, list held):
    """Fills ``parts``; returns the packed size, or None when hiredis must do it."""
    cdef Py_ssize_t n = len(command)
    cdef Py_ssize_t i, size
    cdef Py_ssize_t total = 1 + decimal_size(n) + 2
    cdef long long whole
    cdef int overflow
    cdef const char* data
    for i in range(n):
        arg = command[i]
        if PyUnicode_CheckExact(arg):
            data = PyUnicode_AsUTF8AndSize(arg, &size)
        elif PyBytes_CheckExact(arg):
            data = PyBytes_AS_STRING(arg)
            size = PyBytes_GET_SIZE(arg)
        elif PyLong_CheckExact(arg) or PyFloat_CheckExact(arg):
            overflow = 1
            if PyLong_CheckExact(arg):
                whole = PyLong_AsLongLongAndOverflow(arg, &overflow)
            if overflow == 0:
                size = write_whole(parts[i].digits, whole)
                data = parts[i].digits
            else:
                text = str(arg).encode() if PyLong_CheckExact(arg) else repr(arg).encode()
                held.append(text)
                data = PyBytes_AS_STRING(text)
                size = PyBytes_GET_SIZE(text)
        else:
            return None
        parts[i].data = data
        parts[i].size = size
        total += 1 + decimal_size(size) + 2 + size + 2
    return total


def pack_command(command) -> bytes:
    """``hiredis.pack_command(command)``: a tuple of arguments as one RESP array."""
    cdef Part stack_parts[STACK_ARGS]
    cdef Part* parts = stack_parts
    cdef Py_ssize_t n, i
    cdef char* at
    if not PyTuple_CheckExact(command) or len(command) == 0:
        return hiredis.pack_command(command)
    n = len(command)
    if n > STACK_ARGS:
        parts = <Part*> PyMem_Malloc(n * sizeof(Part))
        if parts == NULL:
            raise MemoryError()
    held: list = []  # the bytes of numbers, alive until copied
    try:
        total = pack_into_parts(command, parts, held)
        if total is None:
            return hiredis.pack_command(command)
        out = PyBytes_FromStringAndSize(NULL, total)
        at = PyBytes_AS_STRING(out)
        at = write_head(at, 42, n)  # '*'
        for i in range(n):
            at = write_head(at, 36, parts[i].size)  # '$'
            memcpy(at, parts[i].data, parts[i].size)
            at += parts[i].size
            at[0] = 13
            at[1] = 10
            at += 2
        return out
    finally:
        if parts != stack_parts:
            PyMem_Free(parts)


def pack_commands(commands) -> bytes:
    """Several commands back to back (a pipeline)."""
    if len(commands) == 1:
        return pack_command(commands[0])
    return b"".join([pack_command(command) for command in commands])
