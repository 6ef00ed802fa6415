cimport cython

# Static types for the Cython twin of engine/store/redis/async_io.py (Cython's pure-Python
# mode: this file augments the .py source, which stays the one definition). A request's
# Pending and its link are read and written for every reply: as extension types, their
# fields are C struct members, not dictionary lookups through the class.


cdef class Pending:
    cdef public int count
    cdef public object future
    cdef public object commands
    cdef public list replies
    cdef public double timeout_s
    cdef public double deadline
    cdef public double hard_limit
    cdef public int turns_left
    cdef public object callback
    cdef public bint settled

    cpdef bint waits(self)
    cpdef void answer(self, object on_late_reply)
    cpdef void fail(self, BaseException error)


cdef void call_back(object callback, list replies, BaseException error)


cdef class Watchdog:
    cdef public object loop
    cdef public object link
    cdef public object handle
    cdef public double armed_for

    cpdef void watch(self, Pending pending)
    cpdef void arm(self, double at)


cdef class AsyncLink:
    cdef public object conn
    cdef public object on_late_reply
    cdef public object on_lost
    cdef public object waiting
    cdef public list outgoing
    cdef public bint closed
    cdef public bint urgent
    cdef public bint flush_scheduled
    cdef public object delay_handle
    cdef public object loop
    cdef public object thread
    cdef public double last_reply_at
    cdef public object transport
    cdef public Watchdog watchdog
    cdef public object parser
    cdef public object reader
    cdef public long tracking

    cpdef void enqueue(self, Pending pending, bytes packed, bint waited=*)

    @cython.locals(pending=Pending, now=double)
    cpdef void written(self, int count)

    @cython.locals(pending=Pending, replies=list)
    cpdef void received(self, bytes data)
