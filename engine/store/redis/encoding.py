"""The values in Redis: profile fields as text another service can write, history and
contact members as msgpack. No I/O."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import struct
import threading
from functools import partial
from time import time_ns
from typing import Any

import msgpack

from nba.dsl.runtime import parse_time
from nba.engine.state import Contact, History

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
    """``value`` as JSON; ValueError for a NaN or an infinity (which JSON has no text for).

    A number or a string is written here as the encoder writes it: ``json.dumps`` with
    options makes an encoder per call, 1.9 µs for a number against 0.1 µs (most of a
    profile update's cost, callgrind, ``nba bench server-ticks``)."""
    kind = value.__class__
    if kind is float:
        if value != value or value == INFINITY or value == -INFINITY:
            raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
        return float.__repr__(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return _JSON_STRING(value)
    return _JSON_ENCODER.encode(value)


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_JSON_STRING = json.encoder.encode_basestring  # what that encoder writes a str with


def read_json(text: str) -> Any:
    """JSON text's value. ``NaN`` and ``Infinity``, which Python's reader would take, are
    not JSON: a plain ``HSET`` of ``NaN`` is the text "NaN", not a number no event could hold."""
    return _JSON_DECODER.decode(text)


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


_JSON_DECODER = json.JSONDecoder(parse_constant=_not_json)  # made once: json.loads with options makes one per call


def parses_as_json(text: str) -> bool:
    try:
        read_json(text)
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
    if value.__class__ in (str, int, float, bool) or value is None or read_json(text) == value:
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
        return unpack_member(base64.b64decode(text[1 + len(MSGPACK_MARK) :]))
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
    """JSON text as its value, anything else as the text itself."""
    try:
        return read_json(text)
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
    """An HGETALL reply (a map in RESP3, a flat list in RESP2) to the profile.

    A declared field's value is read once per distinct text (up to ``FIELD_VALUES_KEPT``
    of them per field): a customer's profile is read again at each of their events, and
    most of its fields have not changed. Only values that cannot change are kept
    (strings, numbers, bools, null), never a list.
    """
    if raw.__class__ is dict:
        raw = [item for pair in raw.items() for item in pair]
    readers: dict = field_readers(schema)
    profile: dict = {}
    seen: dict
    for i in range(0, len(raw) - 1, 2):  # by index: a third fewer instructions than zip over slices
        name = raw[i]
        value = raw[i + 1]
        known = readers.get(name)
        if known is None:
            profile[name.decode()] = decode_profile_value(value, None)
            continue
        name, reader, seen = known
        read = seen.get(value, UNSEEN)
        if read is UNSEEN:
            if value[:1] == ESCAPE_BYTE:
                read = unescaped(value.decode())
            else:
                read = reader(value)
                if read is None:
                    read = decode_undeclared(value.decode())
            if read.__class__ in IMMUTABLE and len(seen) < FIELD_VALUES_KEPT:
                seen[value] = read
        profile[name] = read
    return profile


UNSEEN = object()
IMMUTABLE = frozenset({str, int, float, bool, type(None)})
FIELD_VALUES_KEPT = 256


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


FIELD_READERS: dict[int, tuple[dict, dict]] = {}  # id(schema) -> (schema, {field bytes: (name, reader, seen)})


def field_readers(schema: dict[str, str]) -> dict[bytes, tuple[str, Any, dict]]:
    """Per declared field: its name, its reader of raw bytes, and the values read so far
    ({raw: value}); made once per schema."""
    cached = FIELD_READERS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    readers = {name.encode(): (name, BYTES_READERS.get(kind, bytes.decode), {}) for name, kind in schema.items()}
    if len(FIELD_READERS) > 64:
        FIELD_READERS.clear()
    FIELD_READERS[id(schema)] = (schema, readers)
    return readers


# ---------------------------------------------------------------------------------------
# History and contacts: msgpack members of sorted sets


BIG_INT = 1  # msgpack ext type: an int beyond 64 bits, as its decimal digits


def pack_member(value: Any) -> bytes:
    try:
        pack = PACKERS.pack
    except AttributeError:  # this thread's first
        pack = PACKERS.pack = msgpack.Packer(use_bin_type=True, buf_size=4096).pack
    try:
        return pack(value)  # starts afresh after an error
    except OverflowError:
        return msgpack.packb(big_ints_as_ext(value), use_bin_type=True)


# A packer per thread, used for every call (``msgpack.packb`` makes a new one, with a 256
# KiB buffer, per call; a packer's buffer must not be shared by two threads at once).
PACKERS = threading.local()


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


class MemberNumbers:
    """The ``n`` of the members this process writes, made here rather than in Redis.

    A write that records no contact then needs no script (a plain ``ZADD``), and one that
    does needs no counter in Redis: the number is the wall clock in microseconds, made
    strictly increasing in this process (a hybrid logical clock), shifted left 12 bits,
    with a random tag of this process in those bits. Packed as a msgpack uint64 (the
    number is above 2**32, so always 9 bytes), the bytes sort as the numbers do: members
    of one instant keep the order they were recorded in by one process, and by several
    processes the order of their clocks. Two processes could make the same number only
    with the same tag in the same microsecond; the commit script, which records
    contacts, makes its members unique anyway (``ZADD`` answers 0 for a member that
    exists: it changes the last byte and adds again).
    """

    __slots__ = ("last", "tag", "lock")

    def __init__(self):
        self.last = 0
        self.forked()

    def forked(self) -> None:
        """A tag of its own (and a lock no thread of the parent may hold) in a forked child."""
        self.lock = threading.Lock()
        self.tag = int.from_bytes(os.urandom(2), "big") & TAG_MASK

    def next_packed(self) -> bytes:
        """The next number as msgpack bytes (``\\xcf`` and 8 bytes, big-endian)."""
        now = time_ns() // 1000
        lock = self.lock
        lock.acquire()  # not `with`: a third of this function's instructions, compiled
        last = self.last
        if now <= last:
            now = last + 1
        self.last = now
        lock.release()
        return PACK_UINT64((now << TAG_BITS) | self.tag)


TAG_BITS = 12
TAG_MASK = (1 << TAG_BITS) - 1
UINT64 = b"\xcf"
PACK_UINT64 = partial(struct.Struct(">BQ").pack, 0xCF)  # msgpack's uint64, in one call
MEMBER_NUMBERS = MemberNumbers()  # the process's; a forked child draws a tag of its own
os.register_at_fork(after_in_child=MEMBER_NUMBERS.forked)


def event_parts(time: float, record: dict) -> tuple[bytes, bytes]:
    """Head and tail of a history member ``[time, sequence, {fields}]``."""
    return b"\x93" + pack_member(time), pack_member(record)


def contact_parts(contact: Contact) -> tuple[bytes, bytes]:
    """Head and tail of a contact member ``[time, sequence, rule, action, channel]``."""
    tail = pack_member((contact.rule, contact.action, contact.channel))[1:]  # without its array header
    return b"\x95" + pack_member(contact.time), tail


def unpack_members(raw: list) -> list:
    """Every member of a ZRANGEBYSCORE reply, unpacked in one msgpack call (as one array)."""
    if not raw:
        return []
    return msgpack.unpackb(
        b"\xdd" + len(raw).to_bytes(4, "big") + b"".join(raw), strict_map_key=False, ext_hook=ext_hook
    )


def decode_history(raw: list, fields: tuple[str, ...]) -> History:
    """The members of a history reply as columns. Plain comprehensions: compiled, they
    cost a third of ``map`` over ``itemgetter`` and ``dict.get``. A member of another
    shape (written by another service) raises TypeError, ValueError or AttributeError."""
    entries = unpack_members(raw)
    columns = {}
    for name in fields:
        columns[name] = [entry[2].get(name) for entry in entries]
    times = [entry[0] for entry in entries]
    for when in times:
        if when.__class__ is not float and (when.__class__ is not int or not -MAX_TIME < when < MAX_TIME):
            raise TypeError(f"a past event's time must be a number, not {when!r:.80}")
    return History(times, columns)


def decode_contacts(raw: list) -> list[Contact]:
    """The members of a contacts reply; TypeError or ValueError for a member that is not
    ``[time, sequence, rule, action, channel]`` of the right kinds (another service's)."""
    contacts = []
    for time, _sequence, rule, action, channel in unpack_members(raw):
        if (
            time.__class__ is not float
            and (time.__class__ is not int or not -MAX_TIME < time < MAX_TIME)
            or rule.__class__ is not str
            or action.__class__ is not str
            or channel is not None
            and channel.__class__ is not str
        ):
            raise TypeError(
                f"a contact must be [time, sequence, rule, action, channel], not "
                f"{[time, _sequence, rule, action, channel]!r:.120}"
            )
        contacts.append(Contact(time, rule, action, channel))
    return contacts


MAX_TIME = 1 << 62  # an int time beyond it is no time an event had (and no C double holds it exactly)


def read_kept_from(raw: bytes) -> float:
    """The meta hash's ``k`` (the newest trimmed contact's score), read as strictly as the
    commit script reads it; ValueError when it is not a finite number."""
    if KEPT_TEXT.fullmatch(raw) is None:
        raise ValueError(f"k must be a number, not {raw[:80]!r}")
    value = float(raw)
    if value != value or value == INFINITY:
        raise ValueError(f"k must be a finite number, not {raw[:80]!r}")
    return value


KEPT_TEXT = re.compile(rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|-inf")
INFINITY = float("inf")


def score_text(value: float) -> str:
    """A score (or a range bound) as Redis reads it: the float in hexadecimal (``0x1.ac57feb6bf9bcp+30``).

    Exact, as ``repr`` is, and Redis reads it the same way (its scores, bounds and the
    commit script's ``tonumber`` go through C's ``strtod``, which reads hexadecimal
    floats). Not ``repr``: its shortest-digits algorithm was a tenth of the server's
    instructions per decision (five or six scores and bounds per write); ``hex`` costs
    under half as much."""
    return float(value).hex()


def exclusive_after(time: float) -> str:
    """A ZRANGEBYSCORE bound: strictly after ``time`` (exact)."""
    return "(" + score_text(time)
