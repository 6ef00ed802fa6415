from nba.engine.protocol cimport Request

# Static types for the Cython twin of engine/server/dispatch.py (Cython's pure-Python mode).


cdef class Dispatcher:
    cdef public object server
    cdef public object engine
    cdef public bint blocking
    cdef public object stats
    cdef public object limiter
    cdef public object decide_map
    cdef public object decide_map_then

    cpdef bint answers_at_once(self, Request req)
    cpdef dict answer(self, Request req)
    cpdef void start(self, Request req, object respond)
    cpdef dict error(self, object request_id, str op, BaseException exc)


cdef class Decided:
    cdef public Dispatcher dispatcher
    cdef public object request_id
    cdef public object respond
