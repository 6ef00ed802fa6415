"""A round's commits, sent to their nodes in parts while the round is still deciding; the
replies read once, at the end of the round.

The commits are most of Redis's work for a batch (the once script, ~20 µs each). Sent as
they are made, Redis runs the first ones while this process decides the rest: its core
and ours at work at once, instead of one after the other (the wait for a batch's commits
was a third of its time). It is safe because a round reads the state of all its customers
before it decides any, and a commit writes only its own customer's keys, which the round
does not read again from Redis (a customer's later entries in the round are decided on
the state kept here). Each node's commits go on one connection, so Redis runs them in the
order they were made, and the ``after`` of the once script holds as before.
"""

from __future__ import annotations

import logging
from typing import Any

from nba.engine.store import StoreUnavailable
from nba.engine.store.redis.protocol import COMMIT_ONCE_SCRIPT, CONNECTION_ERRORS, pack_commands

log = logging.getLogger("nba.consume")

# Commits sent in one write: Redis starts on them while the next ones are decided. Each
# write wakes Redis; on a machine with no core to spare it then runs in the consumer's
# place (measured at 32: ~5% more consumer CPU per entry than one write, no gain in
# wall time), so a batch of 200 goes in four writes, not seven.
PART = 64
LOAD_SCRIPT = pack_commands([("SCRIPT", "LOAD", COMMIT_ONCE_SCRIPT)])


class NodeCommits:
    """One node's commits of the round: sent, and made but not sent yet."""

    __slots__ = ("address", "link", "owed", "indexes", "unsent", "sent", "loading", "error", "rider")

    def __init__(self, address):
        self.address = address
        self.link = None
        self.owed: list[tuple] = []  # writes sent on the link before (without waiting): their replies come first
        self.indexes: list[int] = []  # the round's positions of this node's commits, in order
        self.unsent: list[tuple] = []
        self.sent = 0  # commands sent, the script load and a rider included
        self.loading = False  # the first write loads the once script
        self.error: StoreUnavailable | None = None
        self.rider = None


class StreamedCommits:
    """Commits added one by one (with the node each goes to), sent every ``part``;
    ``replies`` sends the rest and reads every reply."""

    def __init__(self, store, timeout_s: float, loaded: set, part: int | None = None):
        self.store = store
        self.timeout_s = timeout_s
        self.loaded = loaded  # nodes known to hold the once script (shared with the decider)
        self.part = part or PART
        self.nodes: dict[Any, NodeCommits] = {}
        self.count = 0

    def add(self, address, command: tuple) -> None:
        node = self.nodes.get(address)
        if node is None:
            node = self.nodes[address] = NodeCommits(address)
        node.indexes.append(self.count)
        node.unsent.append(command)
        self.count += 1
        if len(node.unsent) >= self.part:
            self.send(node)

    def send(self, node: NodeCommits, rider=None) -> None:
        commands, node.unsent = node.unsent, []
        if node.error is not None:
            return
        packed, count = pack_commands(commands), len(commands)
        if rider is not None:
            packed, count = packed + rider.packed, count + len(rider.commands)
            node.rider = rider
        store = self.store
        try:
            if node.link is None:
                node.link = (store.sync_nodes.get(node.address) or store.sync_node(node.address)).acquire()
                node.owed, node.link.unread = node.link.unread, []
                if node.address not in self.loaded:
                    node.loading = True
                    packed, count = LOAD_SCRIPT + packed, count + 1
            node.link.send(packed, self.timeout_s)
            node.sent += count
        except StoreUnavailable as exc:  # could not connect
            node.error = exc
        except CONNECTION_ERRORS as error:
            node.error = self.failed(node, error)

    def failed(self, node: NodeCommits, error: BaseException) -> StoreUnavailable:
        """The link is dropped (never reused half-way); what its failure means to the store."""
        try:
            self.store.link_failed(node.link, node.address, error)
        except StoreUnavailable as exc:
            return exc
        raise AssertionError("link_failed returns only by raising")  # pragma: no cover

    def replies(self, rider=None) -> list:
        """Send what is left (``rider`` last on its node, when the round commits there) and
        the reply of each commit added, in order (None: not known: not sent, or the link
        failed, so it may have been applied or not)."""
        out: list = [None] * self.count
        for node in self.nodes.values():
            self.send(node, rider if rider is not None and rider.address == node.address else None)
            if node.error is None:
                self.receive(node, out)
            if node.error is not None:
                self.loaded.discard(node.address)
                log.warning("redis %s:%s: committing failed: %s", node.address[0], node.address[1], node.error)
                if node.rider is not None:
                    node.rider.error = node.error
        return out

    def receive(self, node: NodeCommits, out: list) -> None:
        link = node.link
        try:
            replies = link.receive(len(node.owed) + node.sent)
        except CONNECTION_ERRORS as error:
            node.error = self.failed(node, error)
            return
        self.store.sync_nodes[node.address].release(link)
        for command, reply in zip(node.owed, replies):
            self.store.late_reply(command, reply)
        replies = replies[len(node.owed) :]
        if node.loading:
            if not isinstance(replies[0], Exception):
                self.loaded.add(node.address)
            replies = replies[1:]
        if node.rider is not None:
            replies, node.rider.replies = replies[: len(node.indexes)], replies[len(node.indexes) :]
        for index, reply in zip(node.indexes, replies):
            out[index] = reply
