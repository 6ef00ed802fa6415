cimport cython

# Declarations for the Cython twin of dsl/runtime.py (pure-Python mode augmentation):
# the per-decision context is a C struct-backed class there, cheap to make and to read.

cdef class EvalContext:
    cdef public object event
    cdef public object profile
    cdef public object now
    cdef public object event_type
    cdef public object history
    cdef public object aggregates
    cdef public object segments


@cython.locals(context=EvalContext)
cpdef EvalContext new_context(dict event, dict profile, object now, object event_type, object history)
