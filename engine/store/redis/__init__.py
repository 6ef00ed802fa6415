"""Customer state in Redis, or in a Redis Cluster, behind the ``Store`` interface.

Key layout (``P`` is the key prefix, ``nba`` by default; ``C`` the customer id)::

    P:{C}:p        hash        the profile: field -> value as text (see ``encode_profile_value``)
    P:{C}:h:TYPE   sorted set  past events of TYPE: score = time,
                               member = msgpack [time, sequence, {kept fields}]
    P:{C}:c        sorted set  contacts: score = time,
                               member = msgpack [time, sequence, rule, action, channel]
    P:{C}:m        hash        t = the newest time recorded, n = the last sequence number

All of a customer's keys share the hash tag ``{C}``: they live in one Cluster slot, so one
pipeline reads them and one Lua script writes them. A decision reads with one pipeline
(HGETALL + one ZRANGEBYSCORE per needed history type + one for the contacts) and writes
with one EVALSHA of ``COMMIT_SCRIPT``, which checks the caps and records atomically.
Members carry their time exactly as given (an int stays an int) and a per-customer
sequence number, so no two are equal and the events of one instant keep their order.

Modules: ``encoding`` (profile text, msgpack members) and ``protocol`` (keys, the commit
script, the requests of a ruleset packed once as templates, replies, cluster redirects)
do no I/O; ``sync_io`` and ``async_io`` move the bytes; ``store`` is ``RedisStore``, which
drives both transports with the same requests and reply handling.

Transport: redis-py connections (they connect, authenticate, speak TLS, select the
database, say HELLO 3) with the hiredis parser, but no redis-py code per round trip: a
read is one byte string filled in from a per-ruleset template (``protocol.Codec``), sent
with one ``sendall`` on the connection's socket, and its replies are parsed by the
connection's own hiredis reader (redis-py's ``read_response`` when the parser is not
hiredis's). The sync path takes connections from a per-node free list; the asyncio path
shares one pipelined connection per node and event loop between all concurrent callers.
A connection that fails or times out half-way through a round trip is never reused.
Figures: README.md, "In Redis".
"""

from nba.engine.store.redis.encoding import (
    decode_profile,
    decode_profile_value,
    encode_profile,
    encode_profile_value,
    pack_member,
    unpack_member,
)
from nba.engine.store.redis.protocol import COMMIT_SCRIPT, COMMIT_SHA, Codec, KeyLayout, Retention
from nba.engine.store.redis.store import RedisStore

__all__ = [
    "COMMIT_SCRIPT",
    "COMMIT_SHA",
    "Codec",
    "KeyLayout",
    "RedisStore",
    "Retention",
    "decode_profile",
    "decode_profile_value",
    "encode_profile",
    "encode_profile_value",
    "pack_member",
    "unpack_member",
]
