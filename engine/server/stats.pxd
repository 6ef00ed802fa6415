# Static types for the Cython twin of engine/server/stats.py (Cython's pure-Python mode):
# the server's counters, bumped for every request.


cdef class ServerStats:
    cdef public double started
    cdef public dict requests
    cdef public dict errors
    cdef public Py_ssize_t connections
    cdef public Py_ssize_t connections_total
    cdef public Py_ssize_t reloads
    cdef public Py_ssize_t reloads_failed
    cdef public dict refused
    cdef public dict limits
    cdef public bint keep_histogram
    cdef public list _samples
    cdef public Py_ssize_t _count
    cdef public Py_ssize_t _folded
    cdef public double _sum
    cdef public list _buckets

    cpdef void observe(self, str op, double seconds)
    cpdef void error(self, str code)
