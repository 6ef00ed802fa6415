"""The Redis protocol of the store, without I/O: keys, the commit script, requests packed
per ruleset (``Codec``), replies and cluster redirects, URLs and the slot table.

The sync (``sync_io``) and asyncio (``async_io``) transports move these bytes; the store
(``store``) drives both with the same requests and the same reply handling.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import ssl
import time as clock
from dataclasses import dataclass, field
from random import getrandbits
from typing import Any, Callable, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import msgpack
import redis.asyncio.connection as async_connection
import redis.connection as sync_connection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from nba.dsl.needs import StateNeeds
from nba.engine.state import NEVER_TRIMMED, CapCheck, Contact, CustomerState, StateWrite
from nba.engine.store.interface import StoreUnavailable
from nba.engine.store.memory import trim_contacts
from nba.engine.store.redis.encoding import (
    MEMBER_NUMBERS,
    contact_parts,
    decode_contacts,
    decode_history,
    decode_profile,
    encode_profile,
    encode_profile_value,
    event_parts,
    exclusive_after,
    pack_member,
    read_kept_from,
    score_text,
)
from nba.twins import pick_extension

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


def base_of(key: str) -> str:
    """The customer's key base (``P:{C}``) of one of its keys (``P:{C}:p``, ``P:{C}:h:TYPE``,
    ...: what follows the base names no ``}``); "" for a key of no customer."""
    return key[: key.rfind("}:") + 1]


# ---------------------------------------------------------------------------------------
# Writing a decision
#
# A write that records no contact (most decisions: the event kept for its type's history,
# maybe profile updates) cannot be refused by a cap, so it needs no script: plain
# commands (``Codec.plain_commands``), sent without waiting for their replies:
#     ZADD history; ZREMRANGEBYSCORE history up to (time - window);
#     [ZREMRANGEBYRANK history (all but the newest max_events)]; [PEXPIRE history]
#     HSET profile (the on updates); [PEXPIRE profile]
# The trim by time is made at every write: what it removes is what the in-memory store
# removes, and a late event's read could see it. The trim by count only once in 16 writes
# at random: a read takes the newest max_events of its window (``Codec``), which is what
# the in-memory store keeps, however many more the key holds for a while.
# A write that records contacts a cap or policy counts is one EVALSHA of the commit script
# below, which checks the caps and records atomically. A write of contacts no check counts
# is plain commands (ZADD of the contacts, untrimmed) but for one in 16 at random, which
# runs the script: it trims the contacts from the newest one's time, so what the plain
# writes left is trimmed then, and a read trims it meanwhile (``trim_contacts``) to what
# the in-memory store keeps; the script's checks raise the mark ``k`` they use the same
# way. Members are msgpack arrays, their number ``n`` made by the writing process
# (``encoding.MemberNumbers``: a uint64 after the time, whose last byte the script may
# change to make a member unique). A key's TTL is set again only when the TTL this
# process set last no longer covers the retention from now (``Expiries``);
# every TTL set is the retention's plus a slack, so a later one only extends.
#
# The commit script
# KEYS: meta, contacts, profile, [history of the event's type]
# ARGV: n_checks, (scope, key as msgpack, allowed, start, stop) * n_checks,
#       n_contacts, (score, member) * n_contacts,
#       event score, event member or "",
#       n_sets, (field, value) * n_sets,
#       contact keep (s), max_contacts, contacts TTL ms ("0": not now), meta TTL ms,
#       history cutoff, history rank stop ("": not now), history TTL ms ("0": not now),
#       profile TTL ms ("0": none, or not now)
# ``allowed`` is a cap's limit minus the new contacts it counts; the window is
# ``(start, stop)``, ``time -/+ window`` (computed by the caller), and so is the history
# cutoff (``time - keep``: each write trims its history from its own time, never from a
# newer one); the contacts are trimmed from the newest contact's time minus their keep. The key
# of a rule's or a channel's check is msgpack, as the members hold it. A ``ZADD`` that
# answers 0 found the member there already (another process's, with the same number):
# the script changes the number's last byte and adds again. Each argument costs Redis
# about 900 instructions and each redis.call about 8,000 (callgrind): the script takes
# few of both.
# The meta hash's ``k`` is the score of the newest contact ever trimmed ("-inf" until
# one is): a cap check whose window starts before it cannot hold (a contact it counts
# may be gone), as ``CapCheck.holds`` says. The meta hash has no other field the engine
# uses; the first write with contacts makes it, so that a customer's keys that exist
# stay the same while they record (a script whose keys exist in part is refused with
# TRYAGAIN while a Cluster slot migrates). A garbled ``k`` refuses every write with
# contacts (the read reports it too).
# A key of another type than the script expects (another service wrote it) fails the
# script without anything written (``BADSTATE key``): the meta hash is read first, and a
# write that fails after others takes theirs back (the members it added were new).
# Returns 1 when recorded, 0 when a cap check failed (and nothing was written).

COMMIT_SCRIPT = r"""
local meta_key, contacts_key, profile_key, history_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function wrong(key, kind)
  return redis.error_reply('BADSTATE ' .. key .. ' is a ' .. redis.call('TYPE', key)['ok'] .. ', not a ' .. kind)
end

local n_checks = tonumber(ARGV[1])
local i = 2 + 5 * n_checks
local n_contacts = tonumber(ARGV[i])
local tail = i + 2 * n_contacts + 3
tail = tail + 1 + 2 * tonumber(ARGV[tail])  -- after the profile's sets: the contacts' keep
local keep, max_contacts = tonumber(ARGV[tail]), tonumber(ARGV[tail + 1])

-- a score as Redis writes it ('inf', '-inf' or a number)
local function score(text)
  return tonumber(text) or (text == 'inf' and math.huge) or -math.huge
end

local kept_from, new_meta = -math.huge, false
if n_contacts > 0 then
  local mark = redis.pcall('HGET', meta_key, 'k')
  if type(mark) == 'table' then return wrong(meta_key, 'hash') end
  if not mark then
    new_meta = true
  elseif mark ~= '-inf' then
    kept_from = tonumber(mark)
    if kept_from == nil or kept_from ~= kept_from or kept_from == math.huge then return 0 end
  end
end
local marked = kept_from  -- the mark as stored: written again when the trims below raise it

-- Writes of contacts no cap counts add them without trimming (plain commands): what the
-- in-memory store would have trimmed since (older than the newest contact's time minus
-- the keep, or beyond the newest max_contacts) raises the mark the checks use, as the
-- engine's read does; a contact a window counts cannot be among them without the mark
-- refusing the window.
if n_checks > 0 then
  local newest = redis.call('ZRANGE', contacts_key, -1, -1, 'WITHSCORES')
  if newest[2] then
    local due = redis.call('ZREVRANGEBYSCORE', contacts_key, score(newest[2]) - keep, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if due[2] and score(due[2]) > kept_from then kept_from = score(due[2]) end
    local beyond = redis.call('ZRANGE', contacts_key, -(max_contacts + 1), -(max_contacts + 1), 'WITHSCORES')
    if beyond[2] and score(beyond[2]) > kept_from then kept_from = score(beyond[2]) end
  end
end

for at = 2, 1 + 5 * n_checks, 5 do
  local start, stop = ARGV[at + 3], ARGV[at + 4]
  if tonumber(start) < kept_from then return 0 end
  local scope, key, count = ARGV[at], ARGV[at + 1], 0
  if scope == 'all' then
    count = redis.call('ZCOUNT', contacts_key, '(' .. start, '(' .. stop)
  else
    -- A member as this engine writes it (msgpack [time, uint64 n, rule, action, channel],
    -- the time a float or an int of 32 bits, names of up to 31 bytes) is matched on its
    -- bytes, at the rule's or the channel's place: half the instructions of unpacking it.
    -- Any other (an older member number, a long name, another service's) is unpacked;
    -- one that cannot be read counts.
    local slot, plain = (scope == 'rule') and 3 or 5, cmsgpack.unpack(key)
    local size = #key
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', contacts_key, '(' .. start, '(' .. stop)) do
      local matched, kind = nil, string.byte(member, 2)
      local at = (kind == 0xcb and 11) or (kind == 0xce and 7)  -- where n starts
      if at and string.byte(member, 1) == 0x95 and string.byte(member, at) == 0xcf then
        at = at + 9
        if slot == 5 then
          local rule = string.byte(member, at)
          local action = rule and rule >= 0xa0 and rule <= 0xbf and string.byte(member, at + 1 + rule - 0xa0)
          at = action and action >= 0xa0 and action <= 0xbf and at + 2 + rule - 0xa0 + action - 0xa0
        end
        if at and at + size - 1 <= #member then matched = string.sub(member, at, at + size - 1) == key end
      end
      if matched == nil then
        local ok, contact = pcall(cmsgpack.unpack, member)
        matched = not ok or type(contact) ~= 'table' or contact[slot] == plain
      end
      if matched then count = count + 1 end
    end
  end
  if count > tonumber(ARGV[at + 2]) then return 0 end
end

local added = {}  -- key, member, ...: taken back if a later write fails
local function undo()
  for a = 1, #added, 2 do redis.call('ZREM', added[a], added[a + 1]) end
end

-- The member with the last byte of its number changed: the number (a uint64, 9 bytes)
-- follows the array's header and the time (nil after a time of 65 bits or more).
local function renumbered(member)
  local kind = string.byte(member, 2)
  local size = (kind < 0x80 or kind >= 0xe0) and 1 or ({[0xca] = 5, [0xcb] = 9, [0xcc] = 2, [0xcd] = 3, [0xce] = 5,
    [0xcf] = 9, [0xd0] = 2, [0xd1] = 3, [0xd2] = 5, [0xd3] = 9})[kind]
  if size == nil then return nil end
  local last = 2 + size + 8
  return string.sub(member, 1, last - 1) .. string.char((string.byte(member, last) + 1) % 256) .. string.sub(member, last + 1)
end

local function add(key, score, member)
  for _ = 1, 256 do
    local new = redis.pcall('ZADD', key, score, member)
    if new == 1 then
      added[#added + 1] = key
      added[#added + 1] = member
      return nil
    elseif new ~= 0 then
      undo()
      return wrong(key, 'zset')
    end
    member = renumbered(member)
    if member == nil then break end
  end
  undo()
  return redis.error_reply('BADSTATE ' .. key .. ' holds every member this write could add')
end

i = i + 1
for _ = 1, n_contacts do
  local failed = add(contacts_key, ARGV[i], ARGV[i + 1])
  if failed then return failed end
  i = i + 2
end
local event_kept = history_key ~= nil and ARGV[i + 1] ~= ''
if event_kept then
  local failed = add(history_key, ARGV[i], ARGV[i + 1])
  if failed then return failed end
end
i = i + 2
local n_sets = tonumber(ARGV[i])
i = i + 1
if n_sets > 0 then
  if type(redis.pcall('HSET', profile_key, unpack(ARGV, i, i + 2 * n_sets - 1))) == 'table' then
    undo()
    return wrong(profile_key, 'hash')
  end
  i = i + 2 * n_sets
end

if n_contacts > 0 then
  local contacts_ttl = ARGV[i + 2]
  local function note(range)
    local at = score(range[2])
    if at > kept_from then kept_from = at end
  end
  -- trimmed from the newest contact's time (the ones just added, unless a later event's
  -- are there), as the in-memory store trims
  local newest = redis.call('ZRANGE', contacts_key, -1, -1, 'WITHSCORES')
  local cutoff = score(newest[2]) - keep
  local newest_trimmed = redis.call('ZREVRANGEBYSCORE', contacts_key, cutoff, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if newest_trimmed[2] then
    note(newest_trimmed)
    redis.call('ZREMRANGEBYSCORE', contacts_key, '-inf', cutoff)
  end
  local first_kept_out = redis.call('ZRANGE', contacts_key, -(max_contacts + 1), -(max_contacts + 1), 'WITHSCORES')
  if first_kept_out[2] then
    note(first_kept_out)
    redis.call('ZREMRANGEBYRANK', contacts_key, 0, -(max_contacts + 1))
  end
  local trimmed = kept_from > marked
  if trimmed then
    redis.call('HSET', meta_key, 'k', string.format('%.17g', kept_from))
  elseif new_meta then
    redis.call('HSET', meta_key, 'k', '-inf')
  end
  if contacts_ttl ~= '0' then redis.call('PEXPIRE', contacts_key, contacts_ttl) end
  if trimmed or new_meta or contacts_ttl ~= '0' then redis.call('PEXPIRE', meta_key, ARGV[i + 3]) end
end
if event_kept then
  redis.call('ZREMRANGEBYSCORE', history_key, '-inf', ARGV[i + 4])
  if ARGV[i + 5] ~= '' then redis.call('ZREMRANGEBYRANK', history_key, 0, ARGV[i + 5]) end
  if ARGV[i + 6] ~= '0' then redis.call('PEXPIRE', history_key, ARGV[i + 6]) end
end
if n_sets > 0 and ARGV[i + 7] ~= '0' then redis.call('PEXPIRE', profile_key, ARGV[i + 7]) end
return 1
"""

COMMIT_SHA = hashlib.sha1(COMMIT_SCRIPT.encode()).hexdigest()

# The commit once per idempotency key (``nba consume``: the input entry's id), around the
# commit script, whose text it holds unchanged:
# KEYS: the key's record (in the customer's slot), [the record of the key committed just
#       before it, with ``after``], then the commit script's KEYS
# ARGV: the record to keep (the decision made), its TTL in ms, "1" to run the commit script
#       or "0" (nothing to write but the record), ``after``: "1" or "0", ``mark``, then the
#       commit script's ARGV
# Returns {2, record kept} when the key was committed before (nothing written, the
# record's TTL untouched); 3 (nothing written) with ``after`` when the record before it
# does not start with ``mark`` (that commit, made on the same state, did not land);
# else the commit script's reply, and on 1 the record is kept.
COMMIT_ONCE_SCRIPT = (
    r"""
local done_key, record, record_ttl_ms, with_commit, after, mark = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local previous = redis.call('GET', done_key)
if previous then return {2, previous} end
local skip = 1
if after == '1' then
  skip = 2
  local before = redis.call('GET', KEYS[2])
  if not before or string.sub(before, 1, #mark) ~= mark then return 3 end
end
local function shifted(list, by)
  local out = {}
  for n = by + 1, #list do out[n - by] = list[n] end
  return out
end
local function commit(KEYS, ARGV)
"""
    + COMMIT_SCRIPT
    + r"""
end
local result = 1
if with_commit == '1' then result = commit(shifted(KEYS, skip), shifted(ARGV, 5)) end
if result == 1 then redis.call('SET', done_key, record, 'PX', record_ttl_ms) end
return result
"""
)

COMMIT_ONCE_SHA = hashlib.sha1(COMMIT_ONCE_SCRIPT.encode()).hexdigest()
ALREADY_COMMITTED = 2  # the first element of the once script's reply for a key committed before
NOT_AFTER = 3  # the once script's reply when the commit it was to follow did not land


def commit_once_command(
    commit: tuple | None, done_key: str, record: bytes | str, record_ttl_ms: int, after: tuple[str, bytes] | None = None
) -> tuple:
    """``commit`` (an EVALSHA of the commit script, or None for a write with nothing to
    record) as an EVALSHA of the once script that keeps ``record`` at ``done_key``;
    with ``after`` (a record's key, a mark), only if that record starts with the mark."""
    n_keys = commit[2] if commit is not None else 0
    keys = (done_key, after[0]) if after is not None else (done_key,)
    head = ("EVALSHA", COMMIT_ONCE_SHA, n_keys + len(keys), *keys)
    flags = ("1" if commit is not None else "0", "1" if after is not None else "0", after[1] if after else "")
    if commit is None:
        return (*head, record, record_ttl_ms, *flags)
    return (*head, *commit[3 : 3 + n_keys], record, record_ttl_ms, *flags, *commit[3 + n_keys :])


def cap_arguments(checks: list[CapCheck], new: list[Contact], time: float) -> list | None:
    """The script's arguments for the cap checks; None when the new contacts alone exceed one.

    Like MemoryStore, caps are checked only when the write records contacts.
    """
    if not new:
        return [0]
    args: list = [len(checks)]
    for check in checks:
        allowed = check.limit
        for contact in new:
            if check.matches(contact):
                allowed -= 1
        if allowed < 0:
            return None
        args += (
            check.scope,
            pack_member(check.key) if check.scope != "all" else "",  # as the members hold it
            allowed,
            score_text(time - check.window),
            score_text(time + check.window),
        )
    return args


def ttl_ms(seconds: float, grace_s: float) -> int:
    return max(1, math.ceil((seconds + grace_s) * 1000))


TTL_SLACK = 8  # a TTL set is the retention's plus an eighth of it ...
TTL_SLACK_MAX_MS = 300_000  # ... and at most 5 minutes more


def with_slack(needed_ms: int) -> int:
    """The TTL to set for a key that must live ``needed_ms`` from now: a little more, so
    that the writes of the next while need not set it again (``Expiries``)."""
    return needed_ms + min(needed_ms // TTL_SLACK, TTL_SLACK_MAX_MS)


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
        """Milliseconds a key must live after a write: history, contacts and meta; the profile's (0: for ever)."""
        profile_ms = ttl_ms(self.profile_ttl_s, 0) if self.profile_ttl_s else 0
        return ttl_ms(needs.retention, self.grace_s), profile_ms


EXPIRIES_KEPT = 65_536  # keys whose TTL a process remembers setting; then it starts over


class Expiries:
    """When the TTLs this process set run out, so that a write sets a key's TTL again
    only when the one set before no longer covers the retention from now.

    A customer's keys would otherwise get a ``PEXPIRE`` at each write. Every TTL set is
    ``with_slack`` of the retention, the same in every process of a ruleset, so a TTL
    set later only extends the key's life: what one process set stays a lower bound.
    Forgotten (``forget``) when a node connects anew (a restarted Redis lost its keys,
    and keys written again have no TTL until set) and when a write was lost.
    """

    __slots__ = ("until", "size")

    def __init__(self, size: int = EXPIRIES_KEPT):
        self.until: dict[str, float] = {}  # key -> time.monotonic() in ms when the TTL set runs out
        self.size = size

    def due(self, key: str, needed_ms: int, now_ms: float) -> int:
        """The TTL (ms) to set on ``key`` with this write, or 0: the one set before still covers ``needed_ms``."""
        until = self.until.get(key)
        if until is not None and until - now_ms >= needed_ms:
            return 0
        ttl = with_slack(needed_ms)
        if len(self.until) >= self.size:
            self.until.clear()
        self.until[key] = now_ms + ttl
        return ttl

    def forget(self) -> None:
        self.until.clear()

    def forget_key(self, key: str) -> None:
        self.until.pop(key, None)


HGET_KEPT = b"*3\r\n$4\r\nHGET\r\n$%d\r\n%b:m\r\n$1\r\nk\r\n"
ZRANGE_HEAD = b"*4\r\n$13\r\nZRANGEBYSCORE\r\n$%d\r\n%b"
ZRANGE_TAIL = b"\r\n$%d\r\n(%b\r\n$4\r\n+inf\r\n"
NEWEST_HEAD = b"*7\r\n$16\r\nZREVRANGEBYSCORE\r\n$%d\r\n%b"
NEWEST_TAIL = b"\r\n$4\r\n+inf\r\n$%d\r\n(%b\r\n$5\r\nLIMIT\r\n$1\r\n0\r\n"
RANK_TRIM_ONE_IN_BITS = 4  # a write trims its history to the newest max_events once in 2**4 (reads never see more)
# A write of contacts no cap or policy counts is plain commands, but for once in 2**4 at
# random: the commit script then trims what the others added (reads see them as trimmed).
CONTACT_TRIM_ONE_IN_BITS = 4


class Codec:
    """One ruleset's needs as Redis requests and replies, made once per needs (no I/O).

    The read of a customer is one byte string: a template of the whole pipeline (HGETALL,
    a ZREVRANGEBYSCORE of the newest ``max_events_per_type`` in the window per needed
    history type, a ZRANGEBYSCORE of the contacts and the trim mark) filled in with the
    customer's key base and the window bounds by one ``%`` format. Reading the newest
    ``max_events_per_type`` is what lets writes trim a history by count only now and
    then: a history of more events is read as the in-memory store keeps it. A commit is plain
    commands, or the commit script's EVALSHA when it records contacts; how each event
    type is kept (its history key, window, limits) is made once.
    """

    __slots__ = (
        "needs",
        "schema",
        "history",
        "windows",
        "suffix_sizes",
        "with_contacts",
        "count",
        "template",
        "tails",
        "retention",
        "ttls",
        "needed_ttl",
        "needed_profile_ttl",
        "ttl",
        "profile_ttl",
        "contact_keep",
        "contact_keep_text",
    )

    def __init__(self, needs: StateNeeds, retention: Retention):
        self.needs = needs
        self.schema = needs.profile_schema
        self.retention = retention
        self.ttls = retention.ttls(needs)
        self.needed_ttl, self.needed_profile_ttl = self.ttls  # ms a key must live after a write
        self.ttl, self.profile_ttl = with_slack(self.needed_ttl), with_slack(self.needed_profile_ttl)  # ms set
        self.contact_keep = float(needs.contact_keep)
        self.contact_keep_text = score_text(self.contact_keep)
        self.history = [(event_type, need.fields) for event_type, need in needs.history.items()]
        self.windows = [float(need.window) for need in needs.history.values()]
        suffixes = [f":h:{event_type}".encode() for event_type in needs.history]
        self.with_contacts = needs.contact_window > 0
        if self.with_contacts:
            self.windows.append(float(needs.contact_window))
            suffixes.append(b":c")
        self.suffix_sizes = [len(suffix) for suffix in suffixes]
        self.count = 1 + len(suffixes) + self.with_contacts  # with contacts: HGET meta k, last
        newest = str(retention.max_events_per_type).encode()
        limit = b"$%d\r\n%b\r\n" % (len(newest), newest)
        parts = [b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%b:p\r\n"]
        parts += [
            NEWEST_HEAD + suffix.replace(b"%", b"%%") + NEWEST_TAIL + limit for suffix in suffixes[: len(needs.history)]
        ]
        if self.with_contacts:
            parts.append(ZRANGE_HEAD + b":c" + ZRANGE_TAIL)
            parts.append(HGET_KEPT)
        self.template = b"".join(parts)
        self.tails: dict[str, tuple] = {}

    # -- the read

    def read_request(self, base: bytes, time: float) -> bytes:
        """The packed read of the customer whose keys start with ``base``."""
        size = len(base)
        args: list = [size + 2, base]
        for window, extra in zip(self.windows, self.suffix_sizes):
            bound = score_text(time - window).encode()
            args += (size + extra, base, len(bound) + 1, bound)
        if self.with_contacts:
            args += (size + 2, base)
        return self.template % tuple(args)

    def read_commands(self, base: str, time: float) -> list[tuple]:
        """The same read as command tuples (for ASKING after a cluster redirect)."""
        commands: list[tuple] = [("HGETALL", base + ":p")]
        newest = self.retention.max_events_per_type
        for event_type, _fields in self.history:
            bound = exclusive_after(time - self.needs.history[event_type].window)
            commands.append(("ZREVRANGEBYSCORE", f"{base}:h:{event_type}", "+inf", bound, "LIMIT", 0, newest))
        if self.with_contacts:
            commands.append(("ZRANGEBYSCORE", base + ":c", exclusive_after(time - self.needs.contact_window), "+inf"))
            commands.append(("HGET", base + ":m", "k"))
        return commands

    def read_keys(self, base: str) -> list[str]:
        """The key each reply of the read is about (for messages about unreadable state)."""
        keys = [base + ":p"] + [f"{base}:h:{event_type}" for event_type, _fields in self.history]
        return keys + [base + ":c", base + ":m"] if self.with_contacts else keys

    def decode_read(self, replies: list) -> CustomerState:
        """The replies of the read as state; ``BadState`` naming the position of the reply
        that cannot be read (state another service wrote)."""
        position = 0
        try:
            profile = decode_profile(replies[0], self.schema)
            history = {}
            for event_type, fields in self.history:
                position += 1
                raw = replies[position]
                if raw:
                    history[event_type] = decode_history(raw[::-1], fields)  # read newest first
            if not self.with_contacts:
                return CustomerState(profile, history, [])
            position += 1
            contacts = decode_contacts(replies[position]) if replies[position] else []
            position += 1
            kept = replies[position]
            state = CustomerState(profile, history, contacts, NEVER_TRIMMED if kept is None else read_kept_from(kept))
            if contacts:  # what plain writes added untrimmed, trimmed here as the script will
                trim_contacts(state, self.contact_keep, self.retention.max_contacts)
            return state
        except BAD_STATE_ERRORS as error:
            raise BadState(position, error) from None

    # -- the commit

    def kept(self, event_type: str) -> tuple:
        """How a write of ``event_type`` keeps its event, made once per type: (history
        suffix, or None when the type is not kept; its window; ZREMRANGEBYRANK's stop)."""
        cached = self.tails.get(event_type)
        if cached is None:
            need = self.needs.history.get(event_type)
            kept = need is not None and need.keep > 0
            cached = (
                f":h:{event_type}" if kept else None,
                float(need.keep) if kept else 0.0,
                -(self.retention.max_events_per_type + 1),
            )
            if len(self.tails) < 1024:  # event types are the ruleset's: a handful
                self.tails[event_type] = cached
        return cached

    def commit_commands(
        self, base: str, write: StateWrite, expiries: Expiries | None = None, now_ms: float = 0.0
    ) -> list[tuple] | None:
        """The commands of ``write``: the commit script's EVALSHA when it records contacts
        a cap or policy counts (or, once in ``2**CONTACT_TRIM_ONE_IN_BITS`` at random, that
        no check counts: the script trims them), else plain commands (none for a write with
        nothing to keep); None when its own contacts exceed a cap. TTLs as ``expiries``
        says (None: set every one)."""
        if write.contacts and self.with_contacts and (write.cap_checks or not getrandbits(CONTACT_TRIM_ONE_IN_BITS)):
            command = self.commit_command(base, write, expiries, now_ms)
            return None if command is None else [command]
        return self.plain_commands(base, write, expiries, now_ms)

    def plain_commands(
        self, base: str, write: StateWrite, expiries: Expiries | None = None, now_ms: float = 0.0
    ) -> list[tuple]:
        """A write that records no contact a check counts, as plain commands: ZADD of its
        contacts (untrimmed: the next commit script trims them, and a read sees them as
        trimmed meanwhile) and of the event, the trims of its type's history, HSET of the
        profile updates, and the TTLs due."""
        commands: list[tuple] = []
        if write.contacts and self.with_contacts:
            key = base + ":c"
            commands.append(("ZADD", key, *contact_members(write.contacts)))
            ttl = self.ttl if expiries is None else expiries.due(key, self.needed_ttl, now_ms)
            if ttl:
                commands.append(("PEXPIRE", key, ttl))
                commands.append(("PEXPIRE", base + ":m", ttl))  # the trim mark lives as long
        suffix, window, rank_stop = self.kept(write.event_type)
        record = write.event_record
        if suffix is not None and record is not None:
            key = base + suffix
            time = float(write.time)
            head, tail = event_parts(write.time, record)
            commands.append(("ZADD", key, score_text(time), head + MEMBER_NUMBERS.next_packed() + tail))
            commands.append(("ZREMRANGEBYSCORE", key, "-inf", score_text(time - window)))
            if not getrandbits(RANK_TRIM_ONE_IN_BITS):
                commands.append(("ZREMRANGEBYRANK", key, 0, rank_stop))
            ttl = self.ttl if expiries is None else expiries.due(key, self.needed_ttl, now_ms)
            if ttl:
                commands.append(("PEXPIRE", key, ttl))
        profile_set = write.profile_set
        if profile_set:
            key = base + ":p"
            schema = self.schema
            command = ["HSET", key]
            for name, value in profile_set.items():
                command += (name, encode_profile_value(value, schema.get(name)))
            commands.append(tuple(command))
            if self.needed_profile_ttl:
                ttl = self.profile_ttl if expiries is None else expiries.due(key, self.needed_profile_ttl, now_ms)
                if ttl:
                    commands.append(("PEXPIRE", key, ttl))
        return commands

    def commit_command(
        self, base: str, write: StateWrite, expiries: Expiries | None = None, now_ms: float = 0.0
    ) -> tuple | None:
        """The EVALSHA of the commit script for ``write``; None when it cannot hold (a cap
        exceeded by its own contacts). TTLs as ``expiries`` says (None: set every one)."""
        contacts = write.contacts if self.with_contacts else []  # else trimmed at once
        caps = cap_arguments(write.cap_checks, contacts, write.time) if contacts else NO_CAPS
        if caps is None:
            return None
        suffix, window, rank_stop = self.kept(write.event_type)
        time = float(write.time)
        record = write.event_record
        numbers = MEMBER_NUMBERS
        contacts_key = base + ":c"
        if suffix is not None and record is not None:
            history_key = base + suffix
            args = ["EVALSHA", COMMIT_SHA, 4, base + ":m", contacts_key, base + ":p", history_key, *caps, len(contacts)]
        else:
            history_key = None
            args = ["EVALSHA", COMMIT_SHA, 3, base + ":m", contacts_key, base + ":p", *caps, len(contacts)]
        args += contact_members(contacts)
        if history_key is not None:
            head, tail = event_parts(write.time, record)
            args += (score_text(time), head + numbers.next_packed() + tail)
        else:
            args += ("", "")
        profile_set = write.profile_set
        args.append(len(profile_set))
        if profile_set:
            schema = self.schema
            for name, value in profile_set.items():
                args += (name, encode_profile_value(value, schema.get(name)))
        ttl, needed = self.ttl, self.needed_ttl
        due = None if expiries is None else expiries.due
        args += (
            self.contact_keep_text,
            self.retention.max_contacts,
            (ttl if due is None else due(contacts_key, needed, now_ms)) if contacts else 0,
            ttl,
            score_text(time - window),
            "" if getrandbits(RANK_TRIM_ONE_IN_BITS) else rank_stop,
            (ttl if due is None else due(history_key, needed, now_ms)) if history_key is not None else 0,
            self.profile_ttl_due(base, profile_set, expiries, now_ms),
        )
        return tuple(args)

    def profile_ttl_due(self, base: str, profile_set: dict, expiries: Expiries | None, now_ms: float) -> int:
        if not profile_set or not self.needed_profile_ttl:
            return 0
        if expiries is None:
            return self.profile_ttl
        return expiries.due(base + ":p", self.needed_profile_ttl, now_ms)


NO_CAPS = (0,)


def contact_members(contacts: list[Contact]) -> list:
    """Score and member of each contact, one after the other (a ZADD's, or the commit
    script's), each member numbered by this process."""
    numbers = MEMBER_NUMBERS
    out: list = []
    for contact in contacts:
        head, tail = contact_parts(contact)
        out += (score_text(contact.time), head + numbers.next_packed() + tail)
    return out


def plan_put_profile(
    keys: KeyLayout, customer_id: str, profile: dict, needs: StateNeeds, retention: Retention
) -> list[tuple]:
    key = keys.profile(customer_id)
    commands: list[tuple] = [("MULTI",), ("DEL", key)]
    if profile:
        flat = [part for pair in encode_profile(profile, needs.profile_schema).items() for part in pair]
        commands.append(("HSET", key, *flat))
        if retention.profile_ttl_s:
            commands.append(("PEXPIRE", key, with_slack(ttl_ms(retention.profile_ttl_s, 0))))
    commands.append(("EXEC",))
    return commands


# ---------------------------------------------------------------------------------------
# Connections

CONNECTION_ERRORS = (RedisError, OSError, asyncio.TimeoutError, EOFError)


class NodeDown(StoreUnavailable):
    """A node refused or lost the connection (not merely slow): its slots may have moved."""


class RedisAccessDenied(NodeDown):
    """Redis was reached but refused this engine: a wrong user or password, an ACL without
    a command or key the engine needs, a TLS certificate not trusted (either way), a CA
    file that cannot be read.

    ``RedisStore`` raises it when it starts, so that a mistake in the URL is one clear
    error at start; later (a password changed under a running engine) it is a
    ``StoreUnavailable`` like any other: decisions are degraded, and it is logged once.
    The message never holds the password.
    """


# redis-py's own classes for AUTH/HELLO refusals (WRONGPASS, NOAUTH) and ACL refusals (NOPERM)
ACCESS_ERRORS = (AuthenticationError, AuthenticationWrongNumberOfArgsError, NoPermissionError)
# Reasons in OpenSSL's errors (redis-py keeps only their text) that a TLS setting is wrong,
# not that Redis is away: an untrusted or missing certificate, TLS spoken to a plain port.
TLS_REFUSALS = ("CERTIFICATE", "UNKNOWN_CA", "WRONG_VERSION_NUMBER", "HANDSHAKE_FAILURE")


def refusal_reason(error: BaseException) -> str | None:
    """Why Redis refused the engine, when ``error`` (of a connect, or a reply) says it did;
    None when Redis was merely unreachable, slow or gone."""
    seen = 0
    while error is not None and seen < 10:
        seen += 1
        if isinstance(error, ACCESS_ERRORS):
            return f"{type(error).__name__}: {error}"
        if isinstance(error, ssl.SSLEOFError):  # the server hung up in the TLS handshake
            return (
                "the TLS connection was closed by the server during the handshake "
                "(does it require a client certificate: ssl_certfile, ssl_keyfile?)"
            )
        if isinstance(error, ssl.SSLError) and any(reason in str(error) for reason in TLS_REFUSALS):
            if "CERTIFICATE_REQUIRED" in str(error):
                return f"TLS: {error}: the server wants a client certificate (ssl_certfile, ssl_keyfile)"
            return f"TLS: {error}"
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return f"a TLS file of the URL cannot be read: {error}"
        error = error.__cause__ or error.__context__
    return None


def connect_failure(endpoint: "Endpoint", error: BaseException) -> NodeDown:
    """What to raise for a failed connect (or handshake) to ``endpoint``: RedisAccessDenied
    when Redis refused the engine, else NodeDown."""
    reason = refusal_reason(error)
    if reason is not None:
        return RedisAccessDenied(
            f"redis {endpoint.host}:{endpoint.port} refused this engine: {reason} "
            "(check the user, password and TLS options of the redis URL, and the user's ACL)"
        )
    return NodeDown(f"cannot connect to redis: {error}")


class RefusalLog:
    """Logs a node's refusal once (and again only when the reason changes), not per retry."""

    __slots__ = ("last",)

    def __init__(self):
        self.last: str | None = None

    def failed(self, failure: StoreUnavailable) -> None:
        if isinstance(failure, RedisAccessDenied) and str(failure) != self.last:
            self.last = str(failure)
            log.error("%s; decisions are made without state until it accepts the engine", failure)

    def succeeded(self) -> None:
        if self.last is not None:
            self.last = None
            log.warning("redis accepts the engine again")


@dataclass(slots=True)
class Endpoint:
    """Where one Redis node listens, and the redis-py connection options for it."""

    host: str
    port: int
    options: dict  # for redis.connection.Connection (or SSLConnection)
    async_options: dict  # for redis.asyncio.connection.Connection (or SSLConnection)

    address: tuple[str, int] = field(init=False)  # (host, port)

    def __post_init__(self):
        self.address = (self.host, self.port)


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


def is_try_again(reply: Any) -> bool:
    """TRYAGAIN: a script's keys are split between two nodes while their slot migrates."""
    return isinstance(reply, TryAgainError)


def cluster_is_changing(reply: Any) -> bool:
    """An answer that says the slot table is out of date or the cluster is failing over:
    CLUSTERDOWN (a master failed, not yet replaced), READONLY (a write reached a replica,
    the old master demoted), LOADING (a node restarting)."""
    return isinstance(reply, (ClusterDownError, ReadOnlyError, BusyLoadingError))


def worth_resending(reply: Any) -> bool:
    """A write's failure that a resend a moment later may get past."""
    return isinstance(
        reply,
        (
            NoScriptError,
            MovedError,
            AskError,
            TryAgainError,
            ClusterDownError,
            ReadOnlyError,
            BusyLoadingError,
            NodeDown,
        ),
    )


class Backoff:
    """After a failed connect, calls fail fast for ``interval_s`` instead of waiting on it."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.until = 0.0

    def check(self) -> None:
        if self.until and clock.monotonic() < self.until:
            raise NodeDown("redis is down; retrying shortly")

    def failed(self) -> None:
        self.until = clock.monotonic() + self.interval_s

    def succeeded(self) -> None:
        self.until = 0.0


def _hiredis_pack_commands(commands: list[tuple]) -> bytes:
    return b"".join([hiredis.pack_command(command) for command in commands])


# Commands as RESP bytes: in C (engine/store/redis/_resp.pyx, the same bytes, several times
# faster), or by hiredis on the pure-Python twin and when the extension is not built.
_resp = pick_extension("nba.engine.store.redis._resp")
pack_command: Callable[[tuple], bytes] = _resp.pack_command if _resp is not None else hiredis.pack_command
pack_commands: Callable[[list], bytes] = _resp.pack_commands if _resp is not None else _hiredis_pack_commands


PING = pack_commands([("PING",)])


# ---------------------------------------------------------------------------------------
# Topology: one server, or a cluster's slot table


URL_OPTIONS = {  # query parameter -> (RedisStore option, conversion)
    "latency_budget_ms": ("latency_budget_s", lambda text: float(text) / 1000),
    "write_timeout_ms": ("write_timeout_s", lambda text: float(text) / 1000),
    "key_prefix": ("key_prefix", str),
    "wait_for_writes": ("wait_for_writes", lambda text: text.lower() in ("1", "true", "yes")),
    "near_cache": ("near_cache", lambda text: near_cache_size(text)),  # defined below
}


def near_cache_size(text: str) -> int:
    """``near_cache=N``: customers the near cache holds (0: none); ValueError otherwise."""
    try:
        size = int(text)
    except ValueError:
        size = -1
    if size < 0:
        raise ValueError(f"near_cache must be a whole number of customers (0: no near cache), not {text!r}")
    return size


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
    """Host, port and the redis-py connection options (sync, asyncio) of ``url``; RESP2 (hiredis builds a map reply as a dict at four times the cost of a flat list).

    ``redis://[user[:password]@]host[:port][/db]`` or ``rediss://...`` (TLS) with redis-py's
    query parameters (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``,
    ``ssl_check_hostname``, ...). redis-py's connections do the handshake: TLS, then AUTH
    (or HELLO with ``protocol=3``), then SELECT. Raises ValueError for an option the
    connection does not take (an ``ssl_*`` option on a ``redis://`` URL, a misspelt one).
    """
    try:
        options = sync_connection.parse_url(url)
        async_options = async_connection.parse_url(url)
    except ValueError as error:
        raise ValueError(f"bad redis URL: {error}") from None
    host = options.pop("host", "127.0.0.1")
    port = int(options.pop("port", 6379))
    for each, default_class in ((options, sync_connection.Connection), (async_options, async_connection.Connection)):
        each.pop("host", None)
        each.pop("port", None)
        each.setdefault("protocol", 2)
        try:  # made, not connected: checks the options now rather than on each connect
            each.get("connection_class", default_class)(
                host=host, port=port, **{name: value for name, value in each.items() if name != "connection_class"}
            )
        except (TypeError, ValueError) as error:
            hint = " (ssl_* options need a rediss:// URL)" if "ssl" in str(error) else ""
            raise ValueError(f"bad redis URL option: {error}{hint}") from None
    return host, port, options, async_options


SLOT_COUNT = 16384


def parse_cluster_slots(reply: list, seed_host: str) -> tuple[list, list]:
    """CLUSTER SLOTS as (the master of each slot, ``None`` where unassigned; every node named).

    A node announced without an address (``""``, ``"?"``) is on the seed's host. The table
    is a list filled a range at a time: a dict of 16,384 slots took 1-2 ms to build.
    """
    table: list = [None] * SLOT_COUNT
    nodes: list = []
    for entry in reply:
        start, end = int(entry[0]), int(entry[1])
        addresses = [node_address(node, seed_host) for node in entry[2:]]
        table[start : end + 1] = [addresses[0]] * (end - start + 1)
        nodes += addresses
    return table, list(dict.fromkeys(nodes))


def node_address(node: list, seed_host: str) -> tuple[str, int]:
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    return (seed_host if host in ("", "?") else host), int(node[1])


REFRESH_GIVEN_UP_S = 5.0  # a slot table fetch still in flight after this is taken for lost


class Topology:
    """Which node holds which customer: the URL's server, or a cluster's slot owner.

    The slot table of a cluster is fetched again (``CLUSTER SLOTS``) when it may be out of
    date: a node went down, a slot moved, the cluster answered CLUSTERDOWN. Never inside a
    request once the cluster is known: requests mark the table ``stale`` and the store
    fetches it in the background (``refresh_due``/``refreshed``/``refresh_failed``): one
    fetch at a time, at most one per ``refresh_interval_s``, and while no node answers,
    at intervals doubling up to ``max_backoff_s``. While a slot's owner is known to be
    down the table stays stale (a replica is about to be promoted), so it is fetched
    again every interval until the slot has a live owner.
    """

    def __init__(self, seed: Endpoint, refresh_interval_s: float = 0.25, max_backoff_s: float = 2.0):
        self.seed = seed
        self.cluster: bool | None = None  # None: not found out yet
        self.slots: list = []  # SLOT_COUNT entries in a cluster: each slot's master (host, port) or None
        self.nodes: list = []  # every node CLUSTER SLOTS named, replicas too
        self.down: set = set()  # addresses of the nodes known to be down
        self.stale = False
        self.refreshing = False  # a fetch is in flight
        self.refresh_started_at = 0.0
        self.next_refresh_at = 0.0  # time.monotonic(): no fetch before
        self.failed_refreshes = 0  # in a row
        self.fetches = 0  # CLUSTER SLOTS sent to refresh the table, in all
        self.refresh_interval_s = refresh_interval_s
        self.max_backoff_s = max_backoff_s
        self.changes = 0  # slot tables learnt and slots moved, in all (the near cache starts over at each)

    def address_for(self, key: str) -> tuple[str, int]:
        if not self.cluster:
            return self.seed.address
        return self.slots[key_slot(key.encode())] or self.seed.address

    def masters(self) -> list[tuple[str, int]]:
        """The slot owners, in slot order."""
        return list(dict.fromkeys(address for address in self.slots if address is not None))

    def learn(self, reply: Any) -> None:
        """Record what ``CLUSTER SLOTS`` answered (an error: not a cluster)."""
        self.changes += 1
        if isinstance(reply, ResponseError):
            self.cluster = False
            self.slots, self.nodes = [], []
        else:
            self.cluster = True
            self.slots, self.nodes = parse_cluster_slots(reply, self.seed.host)
            if self.down:  # a node no longer in the cluster is no longer down
                self.down.intersection_update([*self.nodes, self.seed.address])
        self.stale = self.owner_down()

    def owner_down(self) -> bool:
        down = self.down
        return bool(down) and any(address in down for address in self.masters())

    def moved(self, redirect: Redirect) -> None:
        """A MOVED: this slot now, the rest of the table soon (a reshard moves many)."""
        if self.cluster:
            self.slots[redirect.slot] = redirect.address
            self.stale = True
            self.changes += 1

    def lost(self, address: tuple[str, int]) -> None:
        """A node failed: in a cluster, the table is fetched again (not by this request)."""
        if self.cluster:
            self.stale = True

    # -- the refresh policy (the store does the I/O)

    def refresh_due(self, now: float) -> bool:
        """Whether to start a fetch now; if so, it is counted as in flight.

        A fetch in flight for longer than ``REFRESH_GIVEN_UP_S`` is taken for lost (its
        event loop closed under it, or this is a forked child of the process fetching)."""
        if not self.stale or now < self.next_refresh_at:
            return False
        if self.refreshing and now - self.refresh_started_at < REFRESH_GIVEN_UP_S:
            return False
        self.refreshing, self.refresh_started_at = True, now
        return True

    def refreshed(self, reply: Any, now: float) -> None:
        self.refreshing = False
        self.failed_refreshes = 0
        self.next_refresh_at = now + self.refresh_interval_s
        self.learn(reply)

    def refresh_failed(self, now: float) -> None:
        self.refreshing = False
        self.failed_refreshes += 1
        backoff = self.refresh_interval_s * 2 ** min(self.failed_refreshes, 16)
        self.next_refresh_at = now + min(self.max_backoff_s, backoff)

    def refresh_candidates(self) -> list[tuple[str, int]]:
        """Whom to ask for the table: nodes not known to be down first (the seed among them)."""
        known = list(dict.fromkeys([*self.nodes, self.seed.address]))
        down = self.down
        return [address for address in known if address not in down] + [address for address in known if address in down]

    def candidates(self) -> list[tuple[str, int]]:
        known = dict.fromkeys([self.seed.address, *self.nodes])
        return list(known)

    # -- nodes going down and coming back

    def node_down(self, address: tuple[str, int]) -> bool:
        """True when this is news (the node was not known to be down)."""
        if address in self.down:
            return False
        self.down.add(address)
        if self.cluster:
            self.stale = True
        return True

    def node_up(self, address: tuple[str, int]) -> bool:
        if address not in self.down:
            return False
        self.down.discard(address)
        return True


MAX_REDIRECTS = 3


def with_asking(commands: list[tuple], asking: bool) -> list[tuple]:
    """After an ASK: ASKING before each command (it lets only the next one in)."""
    if not asking:
        return commands
    return [part for command in commands for part in (("ASKING",), command)]


def without_asking(replies: list, asking: bool) -> list:
    return replies[1::2] if asking else replies


def has_error(replies: list) -> bool:
    """Whether Redis answered one of ``replies`` with an error (redis-py's exception objects:
    most are ResponseErrors, LOADING is a ConnectionError)."""
    for reply in replies:
        if isinstance(reply, RedisError):
            return True
    return False


CLUSTER_SLOTS = pack_commands([("CLUSTER", "SLOTS")])


def follow_redirects(
    topology: Topology, packed: bytes, count: int, commands: list[tuple] | Callable[[], list[tuple]], replies: list
):
    """The round trips after one whose ``replies`` hold an error, without I/O.

    A generator: it yields ``(address, packed, count)`` for each round trip to make, is
    sent that round trip's replies, and returns the call's replies. MOVED: the slot lives
    elsewhere now; the table learns it and the whole request goes there. ASK (the slot
    is being migrated): only the commands asked about go to the target, each after
    ASKING. Other errors are the caller's to see.
    """
    for attempt in range(MAX_REDIRECTS):
        moved = moved_in(replies)
        if moved is None:
            asked = asked_in(replies)
            if asked:
                commands = commands() if callable(commands) else commands
                target = as_redirect(replies[asked[0]]).address
                asking = with_asking([commands[i] for i in asked], True)
                answers = yield target, pack_commands(asking), len(asking)
                fill_in(replies, asked, without_asking(answers, True))
            return replies
        topology.moved(moved)
        if attempt == MAX_REDIRECTS - 1:
            break
        replies = yield moved.address, packed, count
    raise StoreUnavailable("redis cluster keeps redirecting")


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


def decoded_state(codec: Codec, replies: list, base: str) -> CustomerState:
    """The replies of a read as state; StoreUnavailable (not a crash) when Redis answered
    with an error or a key holds what the engine cannot read (another service wrote it):
    the decision is degraded, so no cap is exceeded, and the log names the key."""
    for position, reply in enumerate(replies):
        if isinstance(reply, ResponseError):
            unreadable(codec.read_keys(base)[position], reply)
    try:
        return codec.decode_read(replies)
    except BadState as bad:
        unreadable(codec.read_keys(base)[bad.position], bad.error)


def unreadable(key: str, error: BaseException) -> NoReturn:
    if not isinstance(error, ResponseError) or str(error).startswith("WRONGTYPE"):
        log.warning("unreadable state in redis at %s: %s", key, describe(error))  # written by another service?
        raise StoreUnavailable(f"unreadable state in redis at {key}: {describe(error)}") from None
    raise StoreUnavailable(f"redis: {error}") from None


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


class BadState(Exception):
    """A reply of a read that cannot be read as state, at ``position`` in the read."""

    def __init__(self, position: int, error: BaseException):
        super().__init__(position, error)
        self.position = position
        self.error = error


BAD_STATE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    RecursionError,
    OverflowError,
    UnicodeDecodeError,
    msgpack.UnpackException,
)


def once_reply(reply: Any) -> tuple[int, bytes | None]:
    """The once script's reply as (1: committed, 0: refused by a cap, ``ALREADY_COMMITTED``
    or ``NOT_AFTER``; the record kept before, with ``ALREADY_COMMITTED``)."""
    if isinstance(reply, list):
        if len(reply) == 2 and reply[0] == ALREADY_COMMITTED:
            return ALREADY_COMMITTED, reply[1]
        raise StoreUnavailable(f"redis: unexpected reply to a commit: {reply!r}")
    if reply in (0, 1, NOT_AFTER):
        return reply, None
    raise StoreUnavailable(f"redis: unexpected reply to a commit: {reply!r}")


def eval_instead(command: tuple) -> tuple:
    """An EVALSHA of the commit script as an EVAL (which also loads it)."""
    if command[0] != "EVALSHA":
        return command
    return ("EVAL", COMMIT_ONCE_SCRIPT if command[1] == COMMIT_ONCE_SHA else COMMIT_SCRIPT, *command[2:])


def checked(replies: list) -> list:
    """The replies, or StoreUnavailable when Redis answered one with an error."""
    for reply in replies:
        if isinstance(reply, RedisError):
            raise StoreUnavailable(f"redis: {reply}")
    return replies
