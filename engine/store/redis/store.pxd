# Static types for the Cython twin of engine/store/redis/store.py (Cython's pure-Python
# mode): the callbacks that carry a read's or a commit's replies on to the decision.


cdef class LinkReply:
    cdef public object store
    cdef public object address
    cdef public object then


cdef class ReadReplies(LinkReply):
    cdef public bytes packed
    cdef public object codec
    cdef public str base
    cdef public double time
    cdef public object link
    cdef public long tracking


cdef class CommitReply(LinkReply):
    cdef public str base
    cdef public list commands
    cdef public object needs
    cdef public object write
