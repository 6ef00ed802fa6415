cimport cython
from nba.engine.protocol cimport FrameDecoder, Request
from nba.engine.server.dispatch cimport Dispatcher
from nba.engine.server.stats cimport ServerStats

# Static types for the Cython twin of engine/server/connection.py (Cython's pure-Python
# mode: this file augments the .py source). A connection's fields are read and written
# several times for every request: as an extension type they are C struct members.


cdef class Connection:
    cdef public object server
    cdef public Dispatcher dispatcher
    cdef public ServerStats stats
    cdef public object limiter
    cdef public FrameDecoder decoder
    cdef public Py_ssize_t max_in_flight
    cdef public object allowed
    cdef public object role
    cdef public object _decide_map
    cdef public object transport
    cdef public object peer
    cdef public Py_ssize_t in_flight
    cdef public double last_seen
    cdef public object _frame_since
    cdef public Py_ssize_t _buffered
    cdef public Py_ssize_t _peak_buffered
    cdef public bint _counted
    cdef public double _mark
    cdef public object _pack
    cdef public list _out
    cdef public object _flush_handle
    cdef public bint _reading
    cdef public bint _write_paused
    cdef public bint _fatal
    cdef public bint _close_when_done
    cdef public dict _waiting
    cdef public object _done
    cdef public object _loop

    @cython.locals(decoder=FrameDecoder, out=list, latencies=list, mark=double, now=double)
    cpdef void _process_input(self)
    cpdef void _handle(self, object obj, double started)
    cpdef void _update_reading(self)
    cpdef Py_ssize_t _account(self)
    cpdef void _start(self, Request req, double started)
    cpdef object complete(self, Request req, dict response, double started)
    cpdef void _finish(self, dict response, str op, double started)
    cpdef void _send(self, dict response, str op, double started)
    cpdef void _flush(self)
    cpdef void _close_if_done(self)
