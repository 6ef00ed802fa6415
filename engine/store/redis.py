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

Transport: redis-py connections (they connect, authenticate, speak TLS, select the
database, say HELLO 3) with the hiredis parser. A round trip is one packed write of
commands packed by ``hiredis.pack_command`` and the replies parsed in bulk by the
connection's own hiredis reader (one ``read_response`` per reply when the parser is not
hiredis's): redis-py's ``Pipeline`` object costs ~2x more per round trip. The sync path
takes connections from a per-node free list; the asyncio path shares one pipelined
connection per node and event loop between all concurrent callers. A connection that
fails or times out half-way through a round trip is never reused. Figures: README.md, "In Redis".
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import os
import time as clock
from collections import deque
from itertools import repeat
from operator import itemgetter
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import msgpack
import redis.asyncio.connection as async_connection
import redis.connection as sync_connection
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError, RedisError, ResponseError

from dsl.runtime import parse_time
from engine.state import (
    CapCheck,
    Contact,
    CustomerState,
    History,
    StateNeeds,
    StateWrite,
    Store,
    StoreUnavailable,
)

log = logging.getLogger("nba.store.redis")

# ---------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Names of one customer's keys; every one carries the hash tag ``{customer_id}``."""

    prefix: str = "nba"

    def base(self, customer_id: str) -> str:
        return f"{self.prefix}:{{{customer_id}}}"

    def profile(self, customer_id: str) -> str:
        return self.base(customer_id) + ":p"

    def contacts(self, customer_id: str) -> str:
        return self.base(customer_id) + ":c"

    def history(self, customer_id: str, event_type: str) -> str:
        return f"{self.base(customer_id)}:h:{event_type}"

    def meta(self, customer_id: str) -> str:
        return self.base(customer_id) + ":m"


# ---------------------------------------------------------------------------------------
# Profile encoding: plain text a service can write with HSET
#
#   string  the text itself                 number  a number: 12, 12.5, 1e+100
#   bool    true / false                    time    a number (epoch seconds) or RFC 3339 text
#   list    a JSON array                    undeclared fields: JSON when the text parses as
#                                           JSON, else the text itself
# Declared fields are read as an event's declared fields are (engine.events.read_as):
# "12" is the int 12, "12.5" the float, "2026-11-27T09:30:00Z" a time in epoch seconds.
# A value that does not fit its field's declared kind (null included) is written as NUL
# followed by its JSON, which every reader decodes back to that exact value.

ESCAPE = "\x00"
MSGPACK_MARK = "b64:"  # after ESCAPE: base64 of msgpack (JSON text never starts with "b")


def is_number(value: Any) -> bool:
    return value.__class__ is int or value.__class__ is float


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def encode_undeclared(value: Any) -> str:
    if value.__class__ is str and not parses_as_json(value) and not value.startswith(ESCAPE):
        return value
    return exact_json(value) or escaped(value)


def exact_json(value: Any) -> str | None:
    """``value`` as JSON text when that reads back as exactly ``value``; else None."""
    try:
        text = json_text(value)
    except (TypeError, ValueError):  # bytes, say
        return None
    if value.__class__ in (str, int, float, bool) or value is None or json.loads(text) == value:
        return text
    return None  # a tuple, a map with keys that are not strings, a NaN in a list...


def escaped(value: Any) -> str:
    """NUL, then the value's JSON; or ``b64:`` and its msgpack when JSON cannot hold it."""
    text = exact_json(value)
    if text is not None:
        return ESCAPE + text
    return ESCAPE + MSGPACK_MARK + base64.b64encode(pack_member(value)).decode()


def unescaped(text: str) -> Any:
    if text.startswith(MSGPACK_MARK, 1):
        return unpack_member(base64.b64decode(text[1 + len(MSGPACK_MARK):]))
    return json.loads(text[1:])


def fits_kind(value: Any, kind: str) -> bool:
    if kind == "string":
        return value.__class__ is str and not value.startswith(ESCAPE)
    if kind in ("number", "time"):
        return is_number(value) and math.isfinite(value)
    if kind == "bool":
        return value.__class__ is bool
    if kind == "list":
        return value.__class__ is list
    return False


def encode_profile_value(value: Any, kind: str | None) -> str:
    """The text stored in the profile hash for ``value`` of a field declared ``kind``."""
    if kind is None:
        return encode_undeclared(value)
    if not fits_kind(value, kind):
        return escaped(value)
    if kind == "string":
        return value
    if kind == "bool":
        return "true" if value else "false"
    if kind == "list":
        return exact_json(value) or escaped(value)
    return json_text(value)


def decode_undeclared(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_number(text: str) -> Any:
    """A number from text the way an event's declared number field reads it; None if not one."""
    if text.isdigit():  # the common case, and always an int
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    stripped = text.strip()
    return int(stripped) if stripped.lstrip("+-").isdigit() else number


def read_time(text: str) -> Any:
    number = read_number(text)
    return number if number is not None else parse_time(text)


def read_list(text: str) -> Any:
    value = decode_undeclared(text)
    return value if value.__class__ is list else None


READERS = {  # kind -> text to value, None when the text is not of that kind
    "number": read_number,
    "time": read_time,
    "bool": {"true": True, "false": False}.get,
    "list": read_list,
}


def decode_profile_value(raw: bytes | str, kind: str | None) -> Any:
    """The value of a profile field as stored (by the engine or a plain HSET)."""
    text = raw.decode() if raw.__class__ is bytes else raw
    if text.startswith(ESCAPE):
        return unescaped(text)
    if kind is None:
        return decode_undeclared(text)
    if kind == "string":
        return text
    value = READERS[kind](text)
    return decode_undeclared(text) if value is None else value


def encode_profile(profile: dict, schema: dict[str, str]) -> dict[str, str]:
    return {name: encode_profile_value(value, schema.get(name)) for name, value in profile.items()}


def decode_profile(raw: Any, schema: dict[str, str]) -> dict:
    """An HGETALL reply (a map in RESP3, a flat list in RESP2) to the profile."""
    pairs = raw.items() if raw.__class__ is dict else zip(raw[::2], raw[1::2])
    readers = field_readers(schema)
    profile = {}
    for name, value in pairs:
        known = readers.get(name)
        if known is None:
            profile[name.decode()] = decode_profile_value(value, None)
            continue
        name, reader = known
        if value[:1] == ESCAPE_BYTE:
            profile[name] = unescaped(value.decode())
            continue
        read = reader(value)
        profile[name] = decode_undeclared(value.decode()) if read is None else read
    return profile


ESCAPE_BYTE = ESCAPE.encode()


def read_number_bytes(raw: bytes) -> Any:
    return int(raw) if raw.isdigit() else read_number(raw.decode())  # bytes: ASCII digits only


def read_time_bytes(raw: bytes) -> Any:
    return int(raw) if raw.isdigit() else read_time(raw.decode())


BYTES_READERS = {  # kind -> raw bytes to value, None when not of that kind
    "string": bytes.decode,
    "number": read_number_bytes,
    "time": read_time_bytes,
    "bool": {b"true": True, b"false": False}.get,
    "list": lambda raw: read_list(raw.decode()),
}


FIELD_READERS: dict[int, tuple[dict, dict]] = {}  # id(schema) -> (schema, {field bytes: (name, reader)})


def field_readers(schema: dict[str, str]) -> dict[bytes, tuple[str, Any]]:
    """Per declared field, its name and reader of raw bytes, made once per schema."""
    cached = FIELD_READERS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    readers = {name.encode(): (name, BYTES_READERS.get(kind, bytes.decode)) for name, kind in schema.items()}
    if len(FIELD_READERS) > 64:
        FIELD_READERS.clear()
    FIELD_READERS[id(schema)] = (schema, readers)
    return readers


# ---------------------------------------------------------------------------------------
# History and contacts: msgpack members of sorted sets


BIG_INT = 1  # msgpack ext type: an int beyond 64 bits, as its decimal digits


def pack_member(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except OverflowError:
        return msgpack.packb(big_ints_as_ext(value), use_bin_type=True)


def big_ints_as_ext(value: Any) -> Any:
    if value.__class__ is int and not -(2**63) <= value < 2**64:
        return msgpack.ExtType(BIG_INT, str(value).encode())
    if isinstance(value, dict):
        return {key: big_ints_as_ext(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [big_ints_as_ext(item) for item in value]
    return value


def ext_hook(code: int, data: bytes) -> Any:
    return int(data) if code == BIG_INT else msgpack.ExtType(code, data)


def unpack_member(member: bytes) -> Any:
    return msgpack.unpackb(member, strict_map_key=False, ext_hook=ext_hook)


def event_parts(time: float, record: dict) -> tuple[bytes, bytes]:
    """Head and tail of a history member ``[time, sequence, {fields}]``."""
    return b"\x93" + pack_member(time), pack_member(record)


def contact_parts(contact: Contact) -> tuple[bytes, bytes]:
    """Head and tail of a contact member ``[time, sequence, rule, action, channel]``."""
    tail = pack_member((contact.rule, contact.action, contact.channel))[1:]  # without its array header
    return b"\x95" + pack_member(contact.time), tail


def unpack_members(raw: list) -> list:
    """Every member of a ZRANGEBYSCORE reply, unpacked.

    A member never changes once written (its sequence number makes it unique), so the
    members this process has unpacked before are taken from ``MEMBER_CACHE``: a customer's
    history is read again at each of their events. The others are unpacked in one call,
    as one msgpack array.
    """
    cache = MEMBER_CACHE
    entries = list(map(cache.get, raw))
    if None not in entries:
        return entries
    missing = [member for member, entry in zip(raw, entries) if entry is None]
    unpacked = msgpack.unpackb(b"\xdd" + len(missing).to_bytes(4, "big") + b"".join(missing),
                               strict_map_key=False, ext_hook=ext_hook)
    if len(cache) + len(missing) > MEMBER_CACHE_SIZE:
        cache.clear()
    cache.update(zip(missing, unpacked))
    fresh = iter(unpacked)
    return [entry if entry is not None else next(fresh) for entry in entries]


MEMBER_CACHE: dict[bytes, list] = {}  # member -> unpacked; never changed by a reader
MEMBER_CACHE_SIZE = 65_536  # members (some 10 MiB at most), then it starts over


def decode_history(raw: list, fields: tuple[str, ...]) -> History:
    entries = unpack_members(raw)
    records = list(map(THIRD, entries))
    columns = {name: list(map(dict.get, records, repeat(name))) for name in fields}
    return History(list(map(FIRST, entries)), columns)


FIRST, THIRD = itemgetter(0), itemgetter(2)


def decode_contacts(raw: list) -> list[Contact]:
    return [Contact(time, rule, action, channel) for time, _sequence, rule, action, channel in unpack_members(raw)]


def exclusive_after(time: float) -> str:
    """A ZRANGEBYSCORE bound: strictly after ``time`` (repr of a float is exact)."""
    return "(" + repr(float(time))


# ---------------------------------------------------------------------------------------
# The commit script
#
# KEYS: meta, contacts, profile, [history of the event's type]
# ARGV: time,
#       n_checks, (scope, key, allowed, start) * n_checks,
#       n_contacts, (score, head, tail) * n_contacts,
#       event head or "", event tail or "",
#       n_sets, (field, value) * n_sets,
#       contact_keep, history_keep, max_contacts, max_events, ttl_ms, profile_ttl_ms
# ``allowed`` is a cap's limit minus the new contacts it counts; ``start`` is ``time -
# window`` (computed by the caller), the window being (start, time]. A member is
# ``head .. msgpack(sequence number) .. tail``: the caller packs its time into the head
# and its fields into the tail; the script numbers members per customer, so that no two
# are equal and members of one instant keep the order they were recorded in.
# Trimming is relative to the newest time recorded for the customer, as MemoryStore does.
# Returns 1 when recorded, 0 when a cap check failed (and nothing was written).

COMMIT_SCRIPT = r"""
local meta_key, contacts_key, profile_key, history_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = ARGV[1]
local i = 2

local function count_existing(scope, key, start)
  if scope == 'all' then
    return redis.call('ZCOUNT', contacts_key, '(' .. start, now)
  end
  local slot = (scope == 'rule') and 3 or 5
  local count = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', contacts_key, '(' .. start, now)) do
    local contact = cmsgpack.unpack(member)
    if contact[slot] == key then count = count + 1 end
  end
  return count
end

local n_checks = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_checks do
  local scope, key, allowed, start = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  i = i + 4
  if count_existing(scope, key, start) > allowed then return 0 end
end

local meta = redis.call('HMGET', meta_key, 't', 'n')
local newest = now
if meta[1] and tonumber(meta[1]) > tonumber(now) then newest = meta[1] end
local sequence = tonumber(meta[2] or '0')

local function add(key, score, head, tail)
  sequence = sequence + 1
  redis.call('ZADD', key, score, head .. cmsgpack.pack(sequence) .. tail)
end

local n_contacts = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_contacts do
  add(contacts_key, ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end

local event_head, event_tail = ARGV[i], ARGV[i + 1]; i = i + 2
local event_kept = history_key ~= nil and event_head ~= ''
if event_kept then add(history_key, now, event_head, event_tail) end

local n_sets = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_sets do
  redis.call('HSET', profile_key, ARGV[i], ARGV[i + 1])
  i = i + 2
end

local contact_keep, history_keep = ARGV[i], ARGV[i + 1]
local max_contacts, max_events = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
local ttl_ms, profile_ttl_ms = ARGV[i + 4], tonumber(ARGV[i + 5])

local function trim(key, keep, max_count)
  local cutoff = tonumber(newest) - tonumber(keep)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.17g', cutoff))
  redis.call('ZREMRANGEBYRANK', key, 0, -(max_count + 1))
  redis.call('PEXPIRE', key, ttl_ms)
end

if n_contacts > 0 then trim(contacts_key, contact_keep, max_contacts) end
if event_kept then trim(history_key, history_keep, max_events) end
redis.call('HSET', meta_key, 't', newest, 'n', sequence)
redis.call('PEXPIRE', meta_key, ttl_ms)
if profile_ttl_ms > 0 and n_sets > 0 then redis.call('PEXPIRE', profile_key, profile_ttl_ms) end
return 1
"""

COMMIT_SHA = hashlib.sha1(COMMIT_SCRIPT.encode()).hexdigest()


def cap_arguments(checks: list[CapCheck], new: list[Contact], time: float) -> list | None:
    """The script's arguments for the cap checks; None when the new contacts alone exceed one.

    Like MemoryStore, caps are checked only when the write records contacts.
    """
    if not new:
        return [0]
    args: list = [len(checks)]
    for check in checks:
        allowed = check.limit - sum(1 for contact in new if check.matches(contact))
        if allowed < 0:
            return None
        args += [check.scope, check.key or "", allowed, repr(float(time - check.window))]
    return args


def ttl_ms(seconds: float, grace_s: float) -> int:
    return max(1, math.ceil((seconds + grace_s) * 1000))


# ---------------------------------------------------------------------------------------
# Read and commit as commands (no I/O)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long recorded state is kept: in event time (trimming) and wall-clock time (TTLs)."""

    grace_s: float = 60.0  # added to every TTL
    profile_ttl_s: float | None = None  # None: profiles never expire
    max_events_per_type: int = 10_000  # per customer, like MemoryStore
    max_contacts: int = 10_000

    def ttls(self, needs: StateNeeds) -> tuple[int, int]:
        """Milliseconds: the TTL of history, contacts and meta; the profile's (0: none)."""
        profile_ms = ttl_ms(self.profile_ttl_s, 0) if self.profile_ttl_s else 0
        return ttl_ms(needs.retention, self.grace_s), profile_ms


ZRANGE_HEAD = b"*4\r\n$13\r\nZRANGEBYSCORE\r\n$%d\r\n%b"
ZRANGE_TAIL = b"\r\n$%d\r\n(%b\r\n$4\r\n+inf\r\n"


class Codec:
    """One ruleset's needs as Redis requests and replies, made once per needs (no I/O).

    The read of a customer is one byte string: a template of the whole pipeline (HGETALL,
    then a ZRANGEBYSCORE per needed history type and for the contacts) filled in with the
    customer's key base and the window bounds by one ``%`` format. A commit is the
    EVALSHA command, its per-event-type tail (windows, limits, TTLs) made once.
    """

    __slots__ = ("needs", "schema", "history", "windows", "suffix_sizes", "with_contacts",
                 "count", "template", "tails", "retention", "ttls")

    def __init__(self, needs: StateNeeds, retention: Retention):
        self.needs = needs
        self.schema = needs.profile_schema
        self.retention = retention
        self.ttls = retention.ttls(needs)
        self.history = [(event_type, need.fields) for event_type, need in needs.history.items()]
        self.windows = [float(need.window) for need in needs.history.values()]
        suffixes = [f":h:{event_type}".encode() for event_type in needs.history]
        self.with_contacts = needs.contact_window > 0
        if self.with_contacts:
            self.windows.append(float(needs.contact_window))
            suffixes.append(b":c")
        self.suffix_sizes = [len(suffix) for suffix in suffixes]
        self.count = 1 + len(suffixes)
        parts = [b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%b:p\r\n"]
        parts += [ZRANGE_HEAD + suffix.replace(b"%", b"%%") + ZRANGE_TAIL for suffix in suffixes]
        self.template = b"".join(parts)
        self.tails: dict[str, tuple] = {}

    # -- the read

    def read_request(self, base: bytes, time: float) -> bytes:
        """The packed read of the customer whose keys start with ``base``."""
        size = len(base)
        args: list = [size + 2, base]
        for window, extra in zip(self.windows, self.suffix_sizes):
            bound = repr(time - window).encode()  # a float: its repr is exact
            args += (size + extra, base, len(bound) + 1, bound)
        return self.template % tuple(args)

    def read_commands(self, base: str, time: float) -> list[tuple]:
        """The same read as command tuples (for ASKING after a cluster redirect)."""
        commands: list[tuple] = [("HGETALL", base + ":p")]
        for event_type, _fields in self.history:
            commands.append(("ZRANGEBYSCORE", f"{base}:h:{event_type}", exclusive_after(time - self.needs.history[event_type].window), "+inf"))
        if self.with_contacts:
            commands.append(("ZRANGEBYSCORE", base + ":c", exclusive_after(time - self.needs.contact_window), "+inf"))
        return commands

    def decode_read(self, replies: list) -> CustomerState:
        profile = decode_profile(replies[0], self.schema)
        history = {}
        position = 1
        for event_type, fields in self.history:
            raw = replies[position]
            position += 1
            if raw:
                history[event_type] = decode_history(raw, fields)
        contacts = decode_contacts(replies[position]) if self.with_contacts and replies[position] else []
        return CustomerState(profile, history, contacts)

    # -- the commit

    def tail(self, event_type: str) -> tuple:
        """(history suffix or None when the type is not kept, the script's last arguments)."""
        cached = self.tails.get(event_type)
        if cached is None:
            need = self.needs.history.get(event_type)
            kept = need is not None and need.window > 0
            retention = self.retention
            cached = (f":h:{event_type}" if kept else None,
                      (repr(float(self.needs.contact_window)), repr(float(need.window if need else 0.0)),
                       retention.max_contacts, retention.max_events_per_type, *self.ttls))
            if len(self.tails) < 1024:  # event types are the ruleset's: a handful
                self.tails[event_type] = cached
        return cached

    def commit_command(self, base: str, write: StateWrite) -> tuple | None:
        """The EVALSHA command of ``write``; None when it cannot hold (a cap exceeded by itself)."""
        contacts = write.contacts if self.with_contacts else []  # else trimmed at once
        caps = cap_arguments(write.cap_checks, contacts, write.time) if contacts else NO_CAPS
        if caps is None:
            return None
        suffix, tail = self.tail(write.event_type)
        time = repr(float(write.time))
        if suffix is not None and write.event_record is not None:
            args = ["EVALSHA", COMMIT_SHA, 4, base + ":m", base + ":c", base + ":p", base + suffix, time,
                    *caps, len(contacts)]
            for contact in contacts:
                args += (repr(float(contact.time)), *contact_parts(contact))
            args += event_parts(write.time, write.event_record)
        else:
            args = ["EVALSHA", COMMIT_SHA, 3, base + ":m", base + ":c", base + ":p", time, *caps, len(contacts)]
            for contact in contacts:
                args += (repr(float(contact.time)), *contact_parts(contact))
            args += ("", "")
        profile_set = write.profile_set
        args.append(len(profile_set))
        if profile_set:
            schema = self.schema
            for name, value in profile_set.items():
                args += (name, encode_profile_value(value, schema.get(name)))
        args += tail
        return tuple(args)


NO_CAPS = (0,)


def plan_put_profile(keys: KeyLayout, customer_id: str, profile: dict, needs: StateNeeds,
                     retention: Retention) -> list[tuple]:
    key = keys.profile(customer_id)
    commands: list[tuple] = [("MULTI",), ("DEL", key)]
    if profile:
        flat = [part for pair in encode_profile(profile, needs.profile_schema).items() for part in pair]
        commands.append(("HSET", key, *flat))
        if retention.profile_ttl_s:
            commands.append(("PEXPIRE", key, ttl_ms(retention.profile_ttl_s, 0)))
    commands.append(("EXEC",))
    return commands


# ---------------------------------------------------------------------------------------
# Connections

CONNECTION_ERRORS = (RedisError, OSError, asyncio.TimeoutError, EOFError)


@dataclass(slots=True)
class Endpoint:
    """Where one Redis node listens, and the redis-py connection options for it."""

    host: str
    port: int
    options: dict  # for redis.connection.Connection (or SSLConnection)
    async_options: dict  # for redis.asyncio.connection.Connection (or SSLConnection)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


class Redirect(Exception):
    """A MOVED or ASK reply: the slot lives on another node."""

    def __init__(self, kind: str, slot: int, host: str, port: int):
        super().__init__(f"{kind} {slot} {host}:{port}")
        self.kind = kind
        self.slot = slot
        self.address = (host, port)


def as_redirect(reply: Any) -> Redirect | None:
    """A MOVED or ASK error reply (redis-py's ``MovedError``/``AskError``) as a Redirect."""
    if isinstance(reply, (MovedError, AskError)):
        kind = "MOVED" if isinstance(reply, MovedError) else "ASK"
        return Redirect(kind, reply.slot_id, reply.host, int(reply.port))
    return None


def is_noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)


class Backoff:
    """After a failed connect, calls fail fast for ``interval_s`` instead of waiting on it."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.until = 0.0

    def check(self) -> None:
        if self.until and clock.monotonic() < self.until:
            raise StoreUnavailable("redis is down; retrying shortly")

    def failed(self) -> None:
        self.until = clock.monotonic() + self.interval_s

    def succeeded(self) -> None:
        self.until = 0.0


class SyncLink:
    """A redis-py connection, and the writes sent on it whose replies are still unread.

    Once connected, a round trip skips redis-py: one ``sendall`` of the packed commands on
    the connection's socket, and its hiredis reader fed from ``recv_into`` a buffer of
    the link's own (redis-py's ``read_response`` when the parser is not hiredis's).
    """

    __slots__ = ("conn", "unread", "sock", "reader", "timeout_s", "buffer")

    def __init__(self, conn):
        self.conn = conn
        self.unread: list[tuple] = []
        self.sock = conn._sock
        self.reader = getattr(getattr(conn, "_parser", None), "_reader", None)
        self.timeout_s: float | None = None
        self.buffer = bytearray(65536) if self.reader is not None else None

    def send(self, packed: bytes, timeout_s: float) -> None:
        if timeout_s != self.timeout_s:
            self.sock.settimeout(timeout_s)
            self.timeout_s = timeout_s
        self.sock.sendall(packed)

    def receive(self, count: int) -> list:
        """``count`` replies (errors in place, as redis-py's exception objects)."""
        reader = self.reader
        if reader is None:  # not the hiredis parser
            return [read_reply(self.conn) for _ in range(count)]
        replies: list = []
        while len(replies) < count:
            reply = reader.gets()
            if reply is NOT_ENOUGH_DATA or reply is False:
                size = self.sock.recv_into(self.buffer)
                if not size:
                    raise ConnectionError("redis closed the connection")
                reader.feed(self.buffer, 0, size)
            else:
                replies.append(reply)
        return replies

    def close(self) -> None:
        self.conn.disconnect()


class SyncNode:
    """A free list of connected links to one node (thread-safe by the GIL)."""

    def __init__(self, endpoint: Endpoint, connect_timeout_s: float, setup_timeout_s: float,
                 retry_interval_s: float):
        self.endpoint = endpoint
        self.connect_timeout_s = connect_timeout_s
        self.setup_timeout_s = setup_timeout_s  # the handshake and the script load after a connect
        self.free: list[SyncLink] = []
        self.pid = os.getpid()
        self.backoff = Backoff(retry_interval_s)

    def acquire(self) -> SyncLink:
        if self.pid != os.getpid():  # forked: the parent's connections are not ours to use
            self.free, self.pid = [], os.getpid()
        try:
            return self.free.pop()
        except IndexError:
            return self.connect()

    def connect(self) -> SyncLink:
        self.backoff.check()
        options = dict(self.endpoint.options, host=self.endpoint.host, port=self.endpoint.port,
                       socket_connect_timeout=self.connect_timeout_s, socket_timeout=self.setup_timeout_s)
        conn_class = options.pop("connection_class", sync_connection.Connection)
        conn = conn_class(**options)
        try:
            conn.connect()
            conn.send_command("SCRIPT", "LOAD", COMMIT_SCRIPT)  # so writes sent without waiting find it
            conn.read_response()
        except CONNECTION_ERRORS as error:
            self.backoff.failed()
            conn.disconnect()
            raise StoreUnavailable(f"cannot connect to redis: {error}") from error
        self.backoff.succeeded()
        return SyncLink(conn)

    def release(self, link: SyncLink) -> None:
        self.free.append(link)

    def close(self, on_late_reply: Callable[[tuple, Any], None], timeout_s: float) -> None:
        """Read the replies still owed (the writes they answer were sent), then disconnect."""
        free, self.free = self.free, []
        for link in free:
            try:
                if link.unread:
                    round_trip(link, PING, 1, timeout_s, on_late_reply)
            except CONNECTION_ERRORS:
                pass
            link.close()


def pack_commands(commands: list[tuple]) -> bytes:
    return b"".join([hiredis.pack_command(command) for command in commands])


PING = pack_commands([("PING",)])


def read_reply(conn) -> Any:
    try:
        return conn.read_response(disconnect_on_error=False)
    except ResponseError as error:
        return error


def round_trip(link: SyncLink, packed: bytes, count: int, timeout_s: float,
               on_late_reply: Callable[[tuple, Any], None]) -> list:
    """Send ``packed`` (``count`` commands) in one write and read every reply (errors in place).

    The replies owed to writes sent earlier on this link come first: they go to
    ``on_late_reply``.
    """
    link.send(packed, timeout_s)
    unread = link.unread
    if not unread:
        return link.receive(count)
    link.unread = []
    try:
        replies = link.receive(len(unread) + count)
    except BaseException:
        link.unread = unread  # the link is dropped by the caller anyway
        raise
    for command, reply in zip(unread, replies):
        on_late_reply(command, reply)
    return replies[len(unread):]


def send_only(link: SyncLink, packed: bytes, commands: list[tuple], timeout_s: float) -> None:
    """Send ``packed`` (``commands``) without waiting; the replies are read on the link's next round trip."""
    link.send(packed, timeout_s)
    link.unread.extend(commands)


@dataclass(slots=True)
class Pending:
    """A request waiting on a shared connection for its ``count`` replies.

    A caller awaits ``future``; a write sent without waiting has ``commands`` instead,
    and its replies go to the link's ``on_late_reply``.
    """

    count: int
    future: asyncio.Future | None
    commands: list[tuple] | None = None
    replies: list = field(default_factory=list)


class Deadline:
    """Fails a waiting request when Redis has not answered it within ``timeout_s``.

    The budget is for Redis, not for this process: when the deadline passes, the answer
    may already be in the socket, unread because the event loop was busy with other
    callers. So the request fails only once the loop has also taken ``LOOP_TURNS`` more
    turns (each one reads the socket and runs the reader) without an answer, or at the
    hard limit of ``LOOP_LAG_LIMIT`` budgets. On an idle loop those turns take
    microseconds; without them a saturated loop would make every decision degraded.
    """

    __slots__ = ("loop", "future", "hard_limit", "handle")

    def __init__(self, loop, future: asyncio.Future, timeout_s: float):
        self.loop = loop
        self.future = future
        now = loop.time()
        self.hard_limit = now + timeout_s * LOOP_LAG_LIMIT
        self.handle = loop.call_at(now + timeout_s, self.expire, LOOP_TURNS)

    def expire(self, turns_left: int) -> None:
        if self.future.done():
            return
        if turns_left and self.loop.time() < self.hard_limit:
            self.handle = self.loop.call_soon(self.expire, turns_left - 1)
            return
        self.future.set_exception(StoreUnavailable("redis answered too late"))

    def cancel(self) -> None:
        self.handle.cancel()


LOOP_TURNS = 3
LOOP_LAG_LIMIT = 20  # a busy loop may stretch the budget this many times, no more


class AsyncLink:
    """One connection shared by every concurrent caller of an event loop.

    Callers' requests are written back to back (pipelined) and their replies come back in
    the same order; a reader task hands each caller its own. A caller that gives up (its
    timeout) leaves its replies to be read and dropped, so the connection never gets out
    of step; a broken connection fails every waiting caller and is replaced.
    """

    def __init__(self, conn, on_late_reply: Callable[[tuple, Any], None]):
        self.conn = conn
        self.on_late_reply = on_late_reply
        self.waiting: deque[Pending] = deque()
        self.outgoing: list[bytes] = []  # requests not yet written: one write per loop turn
        self.closed = False
        self.loop = asyncio.get_running_loop()
        writer = getattr(conn, "_writer", None)
        self.writer = writer if hasattr(writer, "transport") else None
        self.reader = self.loop.create_task(self.read_replies())

    def enqueue(self, pending: Pending, packed: bytes) -> None:
        if self.closed:
            raise StoreUnavailable("redis connection lost")
        self.waiting.append(pending)
        self.outgoing.append(packed)
        if len(self.outgoing) == 1:
            if self.writer is not None:
                self.loop.call_soon(self.flush_now)
            else:
                self.loop.create_task(self.flush())

    def send_only(self, packed: bytes, commands: list[tuple]) -> None:
        self.enqueue(Pending(len(commands), None, commands), packed)

    async def request(self, packed: bytes, count: int, timeout_s: float) -> list:
        loop = asyncio.get_running_loop()
        pending = Pending(count, loop.create_future())
        self.enqueue(pending, packed)
        deadline = Deadline(loop, pending.future, timeout_s)
        try:
            return await pending.future
        finally:
            deadline.cancel()

    def flush_now(self) -> None:
        """Write every request queued since the last flush in one go (fewer syscalls under load).

        Straight to the stream's transport, which buffers what the socket does not take at
        once: no task per write. A lost connection shows up in the reader, which fails
        every waiting request.
        """
        outgoing, self.outgoing = self.outgoing, []
        if self.closed or not outgoing:
            return
        if self.writer.transport.is_closing():
            self.fail(ConnectionError("redis connection closed"))
            return
        try:
            self.writer.write(b"".join(outgoing))
        except CONNECTION_ERRORS as error:
            self.fail(error)

    async def flush(self) -> None:
        """``flush_now`` through redis-py, for a connection without a stream writer."""
        outgoing, self.outgoing = self.outgoing, []
        if self.closed or not outgoing:
            return
        try:
            await self.conn.send_packed_command(outgoing, check_health=False)
        except CONNECTION_ERRORS as error:
            self.fail(error)

    async def read_replies(self) -> None:
        try:
            parser = getattr(self.conn, "_parser", None)
            if hasattr(parser, "_reader") and hasattr(parser, "_stream"):
                await self.read_replies_in_bulk(parser._reader, parser._stream)
            while True:  # the redis-py parser is not hiredis's: one reply at a time
                try:
                    reply = await self.conn.read_response(disconnect_on_error=False)
                except ResponseError as error:
                    reply = error
                self.deliver(reply)
        except BaseException as error:  # noqa: BLE001 - the connection is gone either way
            self.fail(error)
            if isinstance(error, asyncio.CancelledError):
                raise

    async def read_replies_in_bulk(self, reader, stream: asyncio.StreamReader) -> None:
        """Every reply a chunk of bytes holds, parsed by the connection's own hiredis reader.

        redis-py's ``read_response`` costs a few microseconds per reply; under load one
        chunk holds the replies of many callers. Error replies come out of the reader as
        redis-py's exception objects (``MovedError``, ``NoScriptError``, ...), as they do
        through ``read_response``.
        """
        incomplete, gets, waiting = NOT_ENOUGH_DATA, reader.gets, self.waiting
        while True:
            reply = gets()
            while reply is not incomplete and reply is not False:
                pending = waiting[0]  # deliver(reply), inline
                replies = pending.replies
                replies.append(reply)
                if len(replies) >= pending.count:
                    self.complete()
                reply = gets()
            data = await stream.read(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            reader.feed(data)

    def deliver(self, reply: Any) -> None:
        pending = self.waiting[0]
        pending.replies.append(reply)
        if len(pending.replies) >= pending.count:
            self.complete()

    def complete(self) -> None:
        """The first waiting request has all its replies: hand them over."""
        pending = self.waiting.popleft()
        if pending.future is None:
            for command, late in zip(pending.commands, pending.replies):
                self.on_late_reply(command, late)
        elif not pending.future.done():
            pending.future.set_result(pending.replies)

    def fail(self, error: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        lost = StoreUnavailable(f"redis connection lost: {error!r}")
        written = len(self.waiting) - len(self.outgoing)  # the first ones were written
        for position, pending in enumerate(self.waiting):
            if pending.future is None:
                if position >= written:  # never written: surely lost (a written one: unknown)
                    for command in pending.commands:
                        self.on_late_reply(command, lost)
            elif not pending.future.done():
                pending.future.set_exception(lost)
        self.waiting.clear()
        self.outgoing = []
        asyncio.get_running_loop().create_task(discard_async(self.conn))

    async def close(self, timeout_s: float) -> None:
        """Wait (a while) for the replies still owed, then disconnect."""
        if self.waiting and not self.closed:
            try:
                await self.request(PING, 1, timeout_s)
            except StoreUnavailable:
                pass
        self.reader.cancel()
        self.fail(ConnectionError("closed"))
        await discard_async(self.conn)


class AsyncNode:
    """The asyncio side of one node: a shared ``AsyncLink`` per event loop, opened on demand.

    A connect runs in the background (with a patient timeout): a caller waits for it at
    most its own timeout, and the callers after it find the connection ready. The very
    first connect of an event loop (a server starting) is waited for a little longer,
    ``COLD_START_WAIT_S``, so that the first decisions are not made without state only
    because the connection was not open yet.
    """

    def __init__(self, endpoint: Endpoint, connect_timeout_s: float, setup_timeout_s: float,
                 retry_interval_s: float, on_late_reply: Callable[[tuple, Any], None]):
        self.endpoint = endpoint
        self.connect_timeout_s = connect_timeout_s
        self.setup_timeout_s = setup_timeout_s
        self.on_late_reply = on_late_reply
        self.loop = None
        self.link: AsyncLink | None = None
        self.connecting: asyncio.Task | None = None
        self.warm = False  # a link was opened on this loop before
        self.backoff = Backoff(retry_interval_s)

    async def request(self, packed: bytes, count: int, timeout_s: float) -> list:
        link = self.link
        if link is None or link.closed or self.loop is not asyncio.get_running_loop():
            link = await self.get_link(timeout_s)
        return await link.request(packed, count, timeout_s)

    async def send_only(self, packed: bytes, commands: list[tuple], timeout_s: float) -> None:
        link = self.link
        if link is None or link.closed or self.loop is not asyncio.get_running_loop():
            link = await self.get_link(timeout_s)
        link.send_only(packed, commands)

    async def get_link(self, timeout_s: float) -> AsyncLink:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # links of another (maybe closed) loop are forgotten
            self.loop, self.link, self.connecting, self.warm = loop, None, None, False
        if self.link is not None and not self.link.closed:
            return self.link
        self.backoff.check()
        if self.connecting is None:
            self.connecting = loop.create_task(self.open_link())
            self.connecting.add_done_callback(retrieve_exception)
        wait_s = timeout_s if self.warm else max(timeout_s, COLD_START_WAIT_S)
        try:
            async with asyncio.timeout(wait_s):
                return await asyncio.shield(self.connecting)
        except TimeoutError as error:
            raise StoreUnavailable("redis: connecting took too long") from error

    async def open_link(self) -> AsyncLink:
        options = dict(self.endpoint.async_options, host=self.endpoint.host, port=self.endpoint.port,
                       socket_connect_timeout=self.connect_timeout_s, socket_timeout=self.setup_timeout_s)
        conn_class = options.pop("connection_class", async_connection.Connection)
        conn = conn_class(**options)
        try:
            await conn.connect()
            await conn.send_command("SCRIPT", "LOAD", COMMIT_SCRIPT)  # so writes sent without waiting find it
            await conn.read_response()
        except CONNECTION_ERRORS as error:
            self.backoff.failed()
            await discard_async(conn)
            raise StoreUnavailable(f"cannot connect to redis: {error}") from error
        finally:
            self.connecting = None
        conn.socket_timeout = None  # callers time out on their own; the reader waits forever
        self.backoff.succeeded()
        self.link = AsyncLink(conn, self.on_late_reply)
        self.warm = True
        return self.link

    async def close(self, timeout_s: float) -> None:
        link, self.link = self.link, None
        if link is not None and self.loop is asyncio.get_running_loop():
            await link.close(timeout_s)


def retrieve_exception(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


async def discard_async(conn) -> None:
    try:
        await conn.disconnect(nowait=True)
    except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
        pass


# ---------------------------------------------------------------------------------------
# Topology: one server, or a cluster's slot table


URL_OPTIONS = {  # query parameter -> (RedisStore option, conversion)
    "latency_budget_ms": ("latency_budget_s", lambda text: float(text) / 1000),
    "write_timeout_ms": ("write_timeout_s", lambda text: float(text) / 1000),
    "key_prefix": ("key_prefix", str),
    "wait_for_writes": ("wait_for_writes", lambda text: text.lower() in ("1", "true", "yes")),
}


def store_options_in(url: str) -> tuple[str, dict]:
    """``url`` without the store's own query parameters, and those as RedisStore options.

    ``redis://host:6379/0?latency_budget_ms=5`` sets the budget where only a URL can be
    given (``nba replay --redis``, ``nba serve --redis``).
    """
    parts = urlsplit(url)
    kept, options = [], {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in URL_OPTIONS:
            option, convert = URL_OPTIONS[name]
            options[option] = convert(value)
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), options


def connection_options(url: str) -> tuple[str, int, dict, dict]:
    """Host, port and the redis-py connection options (sync, asyncio) of ``url``; RESP3."""
    options = sync_connection.parse_url(url)
    async_options = async_connection.parse_url(url)
    host = options.pop("host", "127.0.0.1")
    port = int(options.pop("port", 6379))
    for each in (options, async_options):
        each.pop("host", None)
        each.pop("port", None)
        each.setdefault("protocol", 3)
    return host, port, options, async_options


def parse_cluster_slots(reply: list, seed_host: str) -> dict[int, tuple[str, int]]:
    """CLUSTER SLOTS to ``{slot: (host, port)}`` of each slot's master.

    A master announced without an address (``""``, ``"?"``) is on the seed's host.
    """
    table = {}
    for entry in reply:
        start, end, master = entry[0], entry[1], entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else master[0]
        if host in ("", "?"):
            host = seed_host
        for slot in range(start, end + 1):
            table[slot] = (host, int(master[1]))
    return table


class Topology:
    """Which node holds which customer: the URL's server, or a cluster's slot owner."""

    def __init__(self, seed: Endpoint):
        self.seed = seed
        self.cluster: bool | None = None  # None: not found out yet
        self.slots: dict[int, tuple[str, int]] = {}

    def address_for(self, key: str) -> tuple[str, int]:
        if not self.cluster:
            return self.seed.address
        return self.slots.get(key_slot(key.encode()), self.seed.address)

    def learn(self, reply: Any) -> None:
        """Record what ``CLUSTER SLOTS`` answered (an error: not a cluster)."""
        if isinstance(reply, ResponseError):
            self.cluster = False
            self.slots = {}
        else:
            self.cluster = True
            self.slots = parse_cluster_slots(reply, self.seed.host)

    def moved(self, redirect: Redirect) -> None:
        self.slots[redirect.slot] = redirect.address

    def lost(self, address: tuple[str, int]) -> None:
        """A node failed: in a cluster, ask for the slot table again on the next call."""
        if self.cluster:
            self.cluster = None

    def candidates(self) -> list[tuple[str, int]]:
        known = dict.fromkeys([self.seed.address, *self.slots.values()])
        return list(known)


MAX_REDIRECTS = 3
SYNC_SETUP_TIMEOUT_S = 0.1  # a sync caller waits this long at most for a new connection's handshake
COLD_START_WAIT_S = 0.1  # how long the first callers of an event loop wait for its first connection


def with_asking(commands: list[tuple], asking: bool) -> list[tuple]:
    """After an ASK: ASKING before each command (it lets only the next one in)."""
    if not asking:
        return commands
    return [part for command in commands for part in (("ASKING",), command)]


def without_asking(replies: list, asking: bool) -> list:
    return replies[1::2] if asking else replies


def has_error(replies: list) -> bool:
    for reply in replies:
        if isinstance(reply, ResponseError):
            return True
    return False


CLUSTER_SLOTS = pack_commands([("CLUSTER", "SLOTS")])


def moved_in(replies: list) -> Redirect | None:
    for reply in replies:
        if isinstance(reply, MovedError):
            return as_redirect(reply)
    return None


def asked_in(replies: list) -> list[int]:
    """Indexes of the replies that are ASK redirects."""
    return [index for index, reply in enumerate(replies) if isinstance(reply, AskError)]


def fill_in(replies: list, indexes: list[int], answers: list) -> None:
    for index, answer in zip(indexes, answers):
        replies[index] = answer


# ---------------------------------------------------------------------------------------
# The store


class RedisStore(Store):
    """Customers' state in Redis; a Redis Cluster is found out and used by itself.

    ``latency_budget_s`` bounds the state read: past it (or with Redis down) ``read``
    raises ``StoreUnavailable`` and the engine decides without state. ``write_timeout_s``
    bounds a commit, ``io_timeout_s`` the profile calls, ``connect_timeout_s`` a connect;
    after a failed connect, calls fail fast for ``retry_interval_s`` before trying again.

    A write that no cap or policy checks cannot be refused, so unless
    ``wait_for_writes`` it is sent without waiting for its reply (read on the connection's
    next round trip, which sees the write: Redis answers one connection in order). A
    decision then costs one round trip; a write that Redis turns down later is retried
    where it can be (script not loaded, slot moved) and else counted in ``lost_writes``.

    Retention is MemoryStore's: each history type keeps its longest window, contacts the
    longest cap or policy window, relative to the newest time recorded for the customer,
    and at most ``max_events_per_type`` / ``max_contacts`` entries. History, contacts and
    the meta key expire ``retention + ttl_grace_s`` after the customer's last write;
    profiles only with ``profile_ttl_s``.
    """


    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        latency_budget_s: float = 0.001,
        write_timeout_s: float = 0.05,
        io_timeout_s: float = 1.0,
        connect_timeout_s: float = 0.01,
        retry_interval_s: float = 0.1,
        key_prefix: str = "nba",
        ttl_grace_s: float = 60.0,
        profile_ttl_s: float | None = None,
        max_events_per_type: int = 10_000,
        max_contacts: int = 10_000,
        wait_for_writes: bool = False,
        connect_now: bool = True,
    ):
        self.url = url
        url, from_url = store_options_in(url)
        latency_budget_s = from_url.get("latency_budget_s", latency_budget_s)
        write_timeout_s = from_url.get("write_timeout_s", write_timeout_s)
        key_prefix = from_url.get("key_prefix", key_prefix)
        self.wait_for_writes = from_url.get("wait_for_writes", wait_for_writes)
        self.lost_writes = 0  # writes sent without waiting that Redis did not apply
        self.resending: set[asyncio.Task] = set()
        self.codecs: dict[int, Codec] = {}  # id(needs) -> its codec
        self.last_base: tuple[str | None, str, bytes] = (None, "", b"")  # customer id, its key base (text, bytes)
        self.latency_budget_s = latency_budget_s
        self.write_timeout_s = write_timeout_s
        self.io_timeout_s = io_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry_interval_s = retry_interval_s
        self.keys = KeyLayout(key_prefix)
        self.retention = Retention(ttl_grace_s, profile_ttl_s, max_events_per_type, max_contacts)
        host, port, self.options, self.async_options = connection_options(url)
        self.topology = Topology(Endpoint(host, port, self.options, self.async_options))
        self.sync_nodes: dict[tuple[str, int], SyncNode] = {}
        self.async_nodes: dict[tuple[str, int], AsyncNode] = {}
        if connect_now:
            self.try_discover()

    # -- topology and nodes

    def try_discover(self) -> bool:
        """Find out whether the URL names a cluster (and its slots); False if unreachable."""
        try:
            self.discover()
        except StoreUnavailable:
            return False
        return True

    def discover(self, timeout_s: float | None = None) -> None:
        """Ask the seed node (or any node known before) for ``CLUSTER SLOTS``."""
        failure: StoreUnavailable | None = None
        for address in self.topology.candidates():
            try:
                [reply] = self.exchange(address, CLUSTER_SLOTS, 1, timeout_s or self.io_timeout_s)
            except StoreUnavailable as error:
                failure = error
                continue
            self.topology.learn(reply)
            return
        raise failure or StoreUnavailable("redis: no node to ask")

    async def discover_async(self, timeout_s: float | None = None) -> None:
        failure: StoreUnavailable | None = None
        for address in self.topology.candidates():
            try:
                [reply] = await self.exchange_async(address, CLUSTER_SLOTS, 1, timeout_s or self.io_timeout_s)
            except StoreUnavailable as error:
                failure = error
                continue
            self.topology.learn(reply)
            return
        raise failure or StoreUnavailable("redis: no node to ask")

    def endpoint(self, address: tuple[str, int]) -> Endpoint:
        return Endpoint(address[0], address[1], self.options, self.async_options)

    def sync_node(self, address: tuple[str, int]) -> SyncNode:
        node = self.sync_nodes.get(address)
        if node is None:
            node = SyncNode(self.endpoint(address), self.connect_timeout_s,
                            max(self.connect_timeout_s, SYNC_SETUP_TIMEOUT_S), self.retry_interval_s)
            self.sync_nodes[address] = node
        return node

    def async_node(self, address: tuple[str, int]) -> AsyncNode:
        node = self.async_nodes.get(address)
        if node is None:
            node = AsyncNode(self.endpoint(address), max(self.connect_timeout_s, self.io_timeout_s),
                             self.io_timeout_s, self.retry_interval_s, self.late_reply_async)
            self.async_nodes[address] = node
        return node

    # -- round trips

    def exchange(self, address: tuple[str, int], packed: bytes, count: int, timeout_s: float) -> list:
        """One round trip to one node: ``packed`` holds ``count`` commands.

        A connection that fails half-way is dropped, never reused.
        """
        node = self.sync_nodes.get(address) or self.sync_node(address)
        link = node.acquire()
        try:
            replies = round_trip(link, packed, count, timeout_s, self.late_reply)
        except CONNECTION_ERRORS as error:  # writes still unanswered on it were sent: most likely applied
            self.link_failed(link, address, error)
        node.release(link)
        return replies

    def send_to(self, address: tuple[str, int], packed: bytes, commands: list[tuple], timeout_s: float) -> None:
        """Send ``commands`` (packed) to one node without waiting for their replies."""
        node = self.sync_nodes.get(address) or self.sync_node(address)
        link = node.acquire()
        try:
            send_only(link, packed, commands, timeout_s)
        except CONNECTION_ERRORS as error:
            self.link_failed(link, address, error)
        node.release(link)

    def link_failed(self, link: SyncLink, address: tuple[str, int], error: BaseException) -> NoReturn:
        link.close()
        self.topology.lost(address)
        raise StoreUnavailable(f"redis {address[0]}:{address[1]}: {error}") from error

    async def exchange_async(self, address: tuple[str, int], packed: bytes, count: int, timeout_s: float) -> list:
        node = self.async_nodes.get(address) or self.async_node(address)
        try:
            return await node.request(packed, count, timeout_s)
        except StoreUnavailable:
            self.topology.lost(address)
            raise

    async def send_to_async(self, address: tuple[str, int], packed: bytes, commands: list[tuple],
                            timeout_s: float) -> None:
        node = self.async_nodes.get(address) or self.async_node(address)
        try:
            await node.send_only(packed, commands, timeout_s)
        except StoreUnavailable:
            self.topology.lost(address)
            raise

    # -- writes sent without waiting: their replies arrive later

    def late_reply(self, command: tuple, reply: Any) -> None:
        """A write sent without waiting was answered: resend it where it must go, or count it lost."""
        if reply == 1:
            return
        if is_noscript(reply) or as_redirect(reply) is not None:
            try:
                self.call(command[3], [eval_instead(command)], self.write_timeout_s)
                return
            except StoreUnavailable:
                pass
        self.write_lost(reply)

    def late_reply_async(self, command: tuple, reply: Any) -> None:
        if reply == 1:
            return
        if is_noscript(reply) or as_redirect(reply) is not None:
            task = asyncio.get_running_loop().create_task(self.resend_async(command))
            self.resending.add(task)
            task.add_done_callback(self.resending.discard)
            return
        self.write_lost(reply)

    async def resend_async(self, command: tuple) -> None:
        try:
            await self.call_async(command[3], [eval_instead(command)], self.write_timeout_s)
        except StoreUnavailable as error:
            self.write_lost(error)

    def write_lost(self, why: Any) -> None:
        self.lost_writes += 1
        log.warning("a state write sent without waiting was lost: %s", why)

    def call(self, key: str, commands: list[tuple], timeout_s: float) -> list:
        """``commands`` (all on ``key``'s slot) in one round trip, following cluster redirects."""
        return self.call_packed(key, pack_commands(commands), len(commands), timeout_s, commands)

    def call_packed(self, key: str, packed: bytes, count: int, timeout_s: float,
                    commands: list[tuple] | Callable[[], list[tuple]]) -> list:
        """``packed`` (``count`` commands, all on ``key``'s slot) in one round trip.

        ``commands`` are the same commands as tuples (or a function making them), for the
        rare round trips that cannot resend the packed bytes as they are. MOVED: the slot
        lives elsewhere now; the table learns it and all is sent there. ASK (the slot is
        being migrated): only the commands asked about go to the target.
        """
        topology = self.topology
        if topology.cluster is None:
            self.discover(timeout_s)
        address = topology.address_for(key)
        for _ in range(MAX_REDIRECTS):
            replies = self.exchange(address, packed, count, timeout_s)
            if not has_error(replies):
                return replies
            moved = moved_in(replies)
            if moved is None:
                asked = asked_in(replies)
                if asked:
                    commands = commands() if callable(commands) else commands
                    target = as_redirect(replies[asked[0]]).address
                    asking = with_asking([commands[i] for i in asked], True)
                    answers = self.exchange(target, pack_commands(asking), len(asking), timeout_s)
                    fill_in(replies, asked, without_asking(answers, True))
                return replies
            topology.moved(moved)
            address = moved.address
        raise StoreUnavailable("redis cluster keeps redirecting")

    async def call_async(self, key: str, commands: list[tuple], timeout_s: float) -> list:
        return await self.call_packed_async(key, pack_commands(commands), len(commands), timeout_s, commands)

    async def call_packed_async(self, key: str, packed: bytes, count: int, timeout_s: float,
                                commands: list[tuple] | Callable[[], list[tuple]]) -> list:
        topology = self.topology
        if topology.cluster is None:
            await self.discover_async(timeout_s)
        address = topology.address_for(key)
        for _ in range(MAX_REDIRECTS):
            replies = await self.exchange_async(address, packed, count, timeout_s)
            if not has_error(replies):
                return replies
            moved = moved_in(replies)
            if moved is None:
                asked = asked_in(replies)
                if asked:
                    commands = commands() if callable(commands) else commands
                    target = as_redirect(replies[asked[0]]).address
                    asking = with_asking([commands[i] for i in asked], True)
                    answers = await self.exchange_async(target, pack_commands(asking), len(asking), timeout_s)
                    fill_in(replies, asked, without_asking(answers, True))
                return replies
            topology.moved(moved)
            address = moved.address
        raise StoreUnavailable("redis cluster keeps redirecting")

    # -- the Store interface

    def codec(self, needs: StateNeeds) -> Codec:
        """The needs' codec, made once per ruleset's needs."""
        codec = self.codecs.get(id(needs))
        if codec is None or codec.needs is not needs:
            if len(self.codecs) > 16:
                self.codecs.clear()
            codec = self.codecs[id(needs)] = Codec(needs, self.retention)
        return codec

    def base(self, customer_id: str) -> tuple[str | None, str, bytes]:
        """(customer id, the start of its keys as text and as bytes); the last one is kept."""
        last = self.last_base
        if last[0] == customer_id:
            return last
        text = self.keys.base(customer_id)
        last = self.last_base = (customer_id, text, text.encode())
        return last

    def ttls(self, needs: StateNeeds) -> tuple[int, int]:
        """``retention.ttls(needs)``, computed once per ruleset's needs."""
        return self.codec(needs).ttls

    def read(self, customer_id: str, needs: StateNeeds, time: float) -> CustomerState:
        codec = self.codec(needs)
        _, base, base_bytes = self.base(customer_id)
        replies = self.call_packed(base, codec.read_request(base_bytes, time), codec.count, self.latency_budget_s,
                                   lambda: codec.read_commands(base, time))
        return decoded_state(codec, replies, customer_id)

    async def read_async(self, customer_id: str, needs: StateNeeds, time: float) -> CustomerState:
        codec = self.codec(needs)
        _, base, base_bytes = self.base(customer_id)
        replies = await self.call_packed_async(base, codec.read_request(base_bytes, time), codec.count,
                                               self.latency_budget_s, lambda: codec.read_commands(base, time))
        return decoded_state(codec, replies, customer_id)

    def commit(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        if write.is_empty:
            return True
        base = self.base(customer_id)[1]
        command = self.codec(needs).commit_command(base, write)
        if command is None:
            return False
        if self.may_send_only(write):
            self.send_only(base, command)
            return True
        [reply] = self.call(base, [command], self.write_timeout_s)
        if is_noscript(reply):
            [reply] = self.call(base, [eval_instead(command)], self.write_timeout_s)
        return checked([reply])[0] == 1

    async def commit_async(self, customer_id: str, needs: StateNeeds, write: StateWrite) -> bool:
        if write.is_empty:
            return True
        base = self.base(customer_id)[1]
        command = self.codec(needs).commit_command(base, write)
        if command is None:
            return False
        if self.may_send_only(write):
            await self.send_only_async(base, command)
            return True
        [reply] = await self.call_async(base, [command], self.write_timeout_s)
        if is_noscript(reply):
            [reply] = await self.call_async(base, [eval_instead(command)], self.write_timeout_s)
        return checked([reply])[0] == 1

    def may_send_only(self, write: StateWrite) -> bool:
        """A write no cap can refuse: unless told to wait, send it and go on."""
        return not self.wait_for_writes and not (write.contacts and write.cap_checks)

    def send_only(self, key: str, command: tuple) -> None:
        if self.topology.cluster is None:
            self.discover(self.write_timeout_s)
        self.send_to(self.topology.address_for(key), hiredis.pack_command(command), [command], self.write_timeout_s)

    async def send_only_async(self, key: str, command: tuple) -> None:
        if self.topology.cluster is None:
            await self.discover_async(self.write_timeout_s)
        await self.send_to_async(self.topology.address_for(key), hiredis.pack_command(command), [command],
                                 self.write_timeout_s)

    def get_profile(self, customer_id: str, needs: StateNeeds) -> dict:
        key = self.keys.profile(customer_id)
        [raw] = checked(self.call(key, [("HGETALL", key)], self.io_timeout_s))
        return decode_profile(raw, needs.profile_schema)

    async def get_profile_async(self, customer_id: str, needs: StateNeeds) -> dict:
        key = self.keys.profile(customer_id)
        [raw] = checked(await self.call_async(key, [("HGETALL", key)], self.io_timeout_s))
        return decode_profile(raw, needs.profile_schema)

    def put_profile(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        commands = plan_put_profile(self.keys, customer_id, profile, needs, self.retention)
        checked(self.call(self.keys.profile(customer_id), commands, self.io_timeout_s))

    async def put_profile_async(self, customer_id: str, profile: dict, needs: StateNeeds) -> None:
        commands = plan_put_profile(self.keys, customer_id, profile, needs, self.retention)
        checked(await self.call_async(self.keys.profile(customer_id), commands, self.io_timeout_s))

    def close(self) -> None:
        """Read the replies still owed to writes sent without waiting, and disconnect."""
        for node in list(self.sync_nodes.values()):
            node.close(self.late_reply, self.write_timeout_s)

    async def close_async(self) -> None:
        self.close()
        for node in list(self.async_nodes.values()):
            await node.close(self.write_timeout_s)


def decoded_state(codec: Codec, replies: list, customer_id: str) -> CustomerState:
    """The replies of a read as state; StoreUnavailable (not a crash) when they cannot be read."""
    try:
        return codec.decode_read(checked(replies))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, msgpack.UnpackException) as error:
        log.warning("customer %r: unreadable state in redis: %r", customer_id, error)  # written by hand?
        raise StoreUnavailable(f"unreadable state for customer {customer_id!r}: {error!r}") from error


def eval_instead(command: tuple) -> tuple:
    """An EVALSHA of the commit script as an EVAL (which also loads it)."""
    return ("EVAL", COMMIT_SCRIPT, *command[2:]) if command[0] == "EVALSHA" else command


def checked(replies: list) -> list:
    """The replies, or StoreUnavailable when Redis answered one with an error."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise StoreUnavailable(f"redis: {reply}")
    return replies
