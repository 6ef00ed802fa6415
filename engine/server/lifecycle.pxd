from nba.engine.server.dispatch cimport Dispatcher

# Static types for the Cython twin of engine/server/lifecycle.py (Cython's pure-Python
# mode): the server's queue of requests waiting for the store, run for every request.


cdef class Server:
    cdef public object engine
    cdef public object settings
    cdef public object rules_path
    cdef public object store
    cdef public object worker
    cdef public object tokens
    cdef public object stats
    cdef public object limiter
    cdef public Dispatcher dispatcher
    cdef public object reloader
    cdef public set connections
    cdef public Py_ssize_t max_connections
    cdef public Py_ssize_t buffered_bytes
    cdef public bint stopping
    cdef public object address
    cdef public object metrics_address
    cdef public object _server
    cdef public set _tasks
    cdef public list _background
    cdef public Py_ssize_t _active
    cdef public Py_ssize_t _max_concurrency
    cdef public object _backlog
    cdef public object _ready
    cdef public bint _starting
    cdef public object _metrics_http
    cdef public object _stopped
    cdef public object _trimmer

    cpdef void submit(self, object conn, object req, double started)
    cpdef void _run(self, object conn, object req, double started)
    cpdef void _answered(self, object conn, object req, double started, dict response)
    cpdef void _next(self)


cdef class Answer:
    cdef public Server server
    cdef public object conn
    cdef public object req
    cdef public double started
    cdef public bint given
