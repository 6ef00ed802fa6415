cimport cython

# Declarations for the Cython twin of dsl/runtime.py (pure-Python mode augmentation):
# the per-decision context is a C struct-backed class there, cheap to make and to read.

cdef class EvalContext:
    cdef public object ev
    cdef public object pr
    cdef public object t
    cdef public object etype
    cdef public object hist
    cdef public object aggs
    cdef public object segs


@cython.locals(x=EvalContext)
cpdef EvalContext new_context(dict ev, dict pr, object t, object etype, object hist)
