"""Customer state in Redis, or in a Redis Cluster, behind the ``Store`` interface.

Key layout (``P`` is the key prefix, ``nba`` by default; ``C`` the customer id)::

    P:{C}:p        hash        the profile: field -> value as text (see ``encode_profile_value``)
    P:{C}:h:TYPE   sorted set  past events of TYPE: score = time,
                               member = msgpack [time, n, {kept fields}]
    P:{C}:c        sorted set  contacts: score = time,
                               member = msgpack [time, n, rule, action, channel]
    P:{C}:m        hash        k = the score of the newest contact trimmed away ("-inf": none yet)
    P:{C}:x:KEY    string      the record of an idempotency key (``nba consume``: KEY is
                               STREAM:GROUP:ENTRY-ID), the decision made; with a TTL

All of a customer's keys share the hash tag ``{C}``: they live in one Cluster slot, so one
pipeline reads them and one Lua script writes them. A decision reads with one pipeline
(HGETALL + one ZREVRANGEBYSCORE of the newest events per needed history type + one
ZRANGEBYSCORE for the contacts and HGET of ``k``) and writes with one more: plain commands
(ZADD, trims, HSET) when it records no contact, one EVALSHA of ``COMMIT_SCRIPT``, which
checks the caps and records atomically, when it does. Members carry their time exactly as
given (an int stays an int) and a number ``n`` the writing process makes (a clock, unique
to the process: ``encoding.MemberNumbers``), so no two are equal and the events of one
instant keep their order.

Modules: ``encoding`` (profile text, msgpack members) and ``protocol`` (keys, the commit
script, the requests of a ruleset packed once as templates, replies, cluster redirects)
do no I/O; ``sync_io`` and ``async_io`` move the bytes; ``store`` is ``RedisStore``, which
drives both transports with the same requests and reply handling.

Transport: redis-py connections (they connect, speak TLS for ``rediss://``, AUTH with the
URL's user and password, SELECT the database; RESP2 unless the URL says ``protocol=3``, which
makes it HELLO 3; docs/redis-security.md) with the hiredis parser, but no redis-py code per round trip: a
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
from nba.engine.store.redis.protocol import COMMIT_SCRIPT, COMMIT_SHA, Codec, KeyLayout, RedisAccessDenied, Retention
from nba.engine.store.redis.store import RedisStore

__all__ = [
    "COMMIT_SCRIPT",
    "COMMIT_SHA",
    "Codec",
    "KeyLayout",
    "RedisAccessDenied",
    "RedisStore",
    "Retention",
    "decode_profile",
    "decode_profile_value",
    "encode_profile",
    "encode_profile_value",
    "pack_member",
    "unpack_member",
]
