"""One customer's decisions take turns within an event loop, in the order they arrive.

Two events of one customer decided at once on a shared store (Redis) would each read the
state before the other's write: the second would not count the first in its aggregates,
and when both choose a capped action one of them finds its cap taken at commit and must
read and decide again. Both cost a caller latency (the retry is a whole decision more) and
the first changes what is decided. Within one process the engine can avoid both: a
decision for a customer that already has one in flight waits for it to finish, then reads
the state it left. Across processes the store's atomic commit still keeps every cap.

The uncontended path costs one dict lookup, a store and a delete, and never suspends.
``ThreadTurns`` does the same for threads sharing one engine through the blocking API
(there the order among threads that arrive together is the lock's).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, Callable


class CustomerTurns:
    """Per event loop: customer id -> the decisions waiting for their turn (``None`` while
    only one is in flight): futures their tasks await, or functions to call."""

    __slots__ = ("loop", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.waiting: dict[str, deque[asyncio.Future] | None] = {}

    def take(self, customer_id: str) -> asyncio.Future | None:
        """None when the turn is the caller's at once; else a future to await for it."""
        waiting = self.waiting
        if customer_id not in waiting:
            waiting[customer_id] = None
            return None
        queue = waiting[customer_id]
        if queue is None:
            queue = waiting[customer_id] = deque()
        turn = self.loop.create_future()
        queue.append(turn)
        return turn

    def take_then(self, customer_id: str, start: Callable[[], Any]) -> None:
        """``take`` for a caller with no task to suspend: ``start()`` now when the turn is the
        caller's at once, else from the event loop once it is."""
        waiting = self.waiting
        if customer_id not in waiting:
            waiting[customer_id] = None
            start()
            return
        queue = waiting[customer_id]
        if queue is None:
            queue = waiting[customer_id] = deque()
        queue.append(start)

    async def wait(self, turn: asyncio.Future, customer_id: str) -> None:
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed over, then cancelled: pass it on
                self.give_back(customer_id)
            raise

    def give_back(self, customer_id: str) -> None:
        """The caller's decision is done: the next waiting one (if any) goes."""
        waiting = self.waiting
        queue = waiting.get(customer_id)
        while queue:
            turn = queue.popleft()
            if not isinstance(turn, asyncio.Future):  # take_then's
                self.loop.call_soon(turn)
                return
            if not turn.done():  # a waiter cancelled meanwhile has left the queue
                turn.set_result(None)
                return
        waiting.pop(customer_id, None)


def turns_for(by_loop: dict, loop: asyncio.AbstractEventLoop) -> CustomerTurns:
    """The loop's ``CustomerTurns`` in ``by_loop``; those of closed loops are dropped."""
    turns = by_loop.get(loop)
    if turns is None:
        for old in [old for old in by_loop if old.is_closed()]:
            del by_loop[old]
        turns = by_loop[loop] = CustomerTurns(loop)
    return turns


class ThreadTurns:
    """Customer id -> [its lock, how many threads hold or wait for it]."""

    __slots__ = ("guard", "held")

    def __init__(self):
        self.guard = threading.Lock()
        self.held: dict[str, list] = {}

    def take(self, customer_id: str) -> None:
        with self.guard:
            entry = self.held.get(customer_id)
            if entry is None:
                entry = self.held[customer_id] = [threading.Lock(), 0]
            entry[1] += 1
        entry[0].acquire()

    def give_back(self, customer_id: str) -> None:
        with self.guard:
            entry = self.held[customer_id]
            entry[1] -= 1
            if entry[1] == 0:
                del self.held[customer_id]
        entry[0].release()
