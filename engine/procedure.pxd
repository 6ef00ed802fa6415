cimport cython
# Static types for the Cython twin of engine/procedure.py (Cython's pure-Python mode:
# this file augments the .py source, which stays the one definition of the procedure).


cdef class Outcome:
    cdef public object choices
    cdef public object write
    cdef public object passed_over
    cdef public object errors
    cdef public object trace


@cython.locals(outcome=Outcome)
cdef Outcome new_outcome(list choices, object write, list passed_over, list errors, object trace)
