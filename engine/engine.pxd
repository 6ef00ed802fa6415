cimport cython
from nba.engine.procedure cimport Outcome
from nba.engine.turns cimport CustomerTurns

# Static types for the Cython twin of engine/engine.py (Cython's pure-Python mode: this
# file augments the .py source). A decision on a store that waits is an object driven by
# the store's callbacks; as an extension type its fields are C struct members.


cdef class Attempts:
    cdef public object engine
    cdef public object ruleset
    cdef public dict checked
    cdef public int limit
    cdef public bint explain
    cdef public bint dry_run
    cdef public int attempts
    cdef public Outcome outcome
    cdef public bint degraded

    @cython.locals(outcome=Outcome)
    cpdef object read(self, object state)
    cpdef bint committed(self, object committed)


cdef class DecisionThen(Attempts):
    cdef public object customer_id
    cdef public object then
    cdef public CustomerTurns turns
    cdef public bint told
    cdef public object store

    cpdef void succeed(self)
    cpdef void fail(self, BaseException error)
