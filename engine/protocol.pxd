cimport cython

# Static types for the Cython twin of engine/protocol.py (Cython's pure-Python mode: this
# file augments the .py source): the frame decoder and the parsed request, read and made
# for every request.


cdef class FrameDecoder:
    cdef public Py_ssize_t max_frame_bytes
    cdef public bytearray _buf
    cdef public Py_ssize_t _pos

    @cython.locals(buf=bytearray, pos=Py_ssize_t, size=Py_ssize_t, end=Py_ssize_t)
    cpdef object next_frame(self)


cdef class Request:
    cdef public object id
    cdef public str op
    cdef public object event
    cdef public object limit
    cdef public bint explain
    cdef public bint dry_run
    cdef public object customer_id
    cdef public object profile
    cdef public object token
