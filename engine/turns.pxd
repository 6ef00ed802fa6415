# Static types for the Cython twin of engine/turns.py (Cython's pure-Python mode): every
# decision on a store that waits takes and gives back its customer's turn.


cdef class CustomerTurns:
    cdef public object loop
    cdef public dict waiting

    cpdef void take_then(self, str customer_id, object start)
    cpdef void give_back(self, str customer_id)
