"""Tarantool's msgpack extension types: pure value conversions, no I/O.

Rule: ``pack_ext`` turns a Python value into ``msgpack.ExtType`` (or raises
``TypeError`` naming the value's type), ``unpack_ext`` turns an extension back
into a Python value; unknown extension types come back as ``msgpack.ExtType``
untouched, and malformed payloads raise ``ValueError`` (the decoder turns that
into ``ProtocolError``).

=========  ====  ===========================================  =========
type       code  Python value                                 server
=========  ====  ===========================================  =========
DECIMAL    1     ``decimal.Decimal``                          2.3+
UUID       2     ``uuid.UUID``                                2.4.1+
ERROR      3     ``list[ErrorInfo]`` (decode only)            2.4.1+
DATETIME   4     ``datetime.datetime``                        2.10+
INTERVAL   6     :class:`Interval`                            2.10+
=========  ====  ===========================================  =========
"""

from __future__ import annotations

import datetime as _dt
import decimal
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgpack

EXT_DECIMAL = 1
EXT_UUID = 2
EXT_ERROR = 3
EXT_DATETIME = 4
EXT_INTERVAL = 6

_DECIMAL_MAX_DIGITS = 38
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


@dataclass(frozen=True)
class ErrorInfo:
    """One entry of a server error stack (MP_ERROR), newest first in a stack."""

    type: str
    file: str
    line: int
    message: str
    errno: int
    code: int
    fields: dict[str, Any] = field(default_factory=dict)


# MP_ERROR map keys.
_ERROR_STACK = 0x00
_ERROR_KEYS = {0x00: "type", 0x01: "file", 0x02: "line", 0x03: "message", 0x04: "errno", 0x05: "code", 0x06: "fields"}


def decode_error_stack(raw: Any) -> list[ErrorInfo]:
    """Decode an MP_ERROR map (body key 0x52 or ext 3 payload) into ErrorInfo objects."""
    if not isinstance(raw, dict) or not isinstance(raw.get(_ERROR_STACK), list):
        raise ValueError("MP_ERROR: expected a map with a STACK array")
    stack = []
    for entry in raw[_ERROR_STACK]:
        if not isinstance(entry, dict):
            raise ValueError("MP_ERROR: a stack entry is not a map")
        values = {name: entry.get(key) for key, name in _ERROR_KEYS.items()}
        fields = values["fields"] if isinstance(values["fields"], dict) else {}
        stack.append(
            ErrorInfo(
                type=_as_text(values["type"]),
                file=_as_text(values["file"]),
                line=values["line"] if isinstance(values["line"], int) else 0,
                message=_as_text(values["message"]),
                errno=values["errno"] if isinstance(values["errno"], int) else 0,
                code=values["code"] if isinstance(values["code"], int) else 0,
                fields=fields,
            )
        )
    return stack


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


# -- DECIMAL -------------------------------------------------------------------

def encode_decimal(value: decimal.Decimal) -> bytes:
    """Payload of ext 1: msgpack int scale, then packed BCD with a sign nibble."""
    if not value.is_finite():
        raise ValueError(f"Tarantool decimals cannot hold {value}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    digits = tuple(digits)
    # Strip leading zeros but keep at least one digit.
    first_nonzero = next((i for i, d in enumerate(digits) if d), len(digits) - 1)
    digits = digits[first_nonzero:]
    if len(digits) > _DECIMAL_MAX_DIGITS:
        raise ValueError(f"Tarantool decimals hold at most {_DECIMAL_MAX_DIGITS} digits, {value} has {len(digits)}")
    nibbles = list(digits) + [0xD if sign else 0xC]
    if len(nibbles) % 2:
        nibbles.insert(0, 0)
    bcd = bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))
    scale: bytes = msgpack.packb(-exponent)
    return scale + bcd


def decode_decimal(payload: bytes) -> decimal.Decimal:
    """Inverse of :func:`encode_decimal`."""
    scale, offset = _read_msgpack_int(payload)
    bcd = payload[offset:]
    if not bcd:
        raise ValueError("DECIMAL: no digits")
    nibbles = []
    for byte in bcd:
        nibbles.append(byte >> 4)
        nibbles.append(byte & 0x0F)
    sign_nibble = nibbles.pop()
    if sign_nibble in (0xB, 0xD):
        sign = 1
    elif sign_nibble in (0xA, 0xC, 0xE, 0xF):
        sign = 0
    else:
        raise ValueError(f"DECIMAL: bad sign nibble {sign_nibble:#x}")
    if any(n > 9 for n in nibbles):
        raise ValueError("DECIMAL: a digit nibble is above 9")
    return decimal.Decimal((sign, tuple(nibbles) or (0,), -scale))


def _read_msgpack_int(data: bytes) -> tuple[int, int]:
    """Read one msgpack integer at the start of ``data``: (value, bytes used)."""
    if not data:
        raise ValueError("expected a msgpack integer, got nothing")
    head = data[0]
    if head <= 0x7F:
        return head, 1
    if head >= 0xE0:
        return head - 0x100, 1
    formats = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
    fmt = formats.get(head)
    if fmt is None:
        raise ValueError(f"expected a msgpack integer, got byte {head:#x}")
    size = struct.calcsize(fmt)
    if len(data) < 1 + size:
        raise ValueError("truncated msgpack integer")
    return struct.unpack_from(fmt, data, 1)[0], 1 + size


# -- DATETIME ------------------------------------------------------------------

def encode_datetime(value: _dt.datetime) -> bytes:
    """Payload of ext 4: int64 seconds, then (if any is non-zero) nsec, tzoffset, tzindex."""
    if value.tzinfo is None:
        # A naive datetime is taken as UTC, like Tarantool's datetime.new() default.
        value = value.replace(tzinfo=_dt.timezone.utc)
    offset = value.utcoffset() or _dt.timedelta(0)
    tzoffset = int(offset.total_seconds() // 60)
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    nsec = delta.microseconds * 1000
    if nsec or tzoffset:
        return struct.pack("<qihh", seconds, nsec, tzoffset, 0)
    return struct.pack("<q", seconds)


def decode_datetime(payload: bytes) -> _dt.datetime:
    """Inverse of :func:`encode_datetime` (tzindex is ignored: the offset is kept)."""
    if len(payload) == 8:
        (seconds,), nsec, tzoffset = struct.unpack("<q", payload), 0, 0
    elif len(payload) == 16:
        seconds, nsec, tzoffset, _tzindex = struct.unpack("<qihh", payload)
    else:
        raise ValueError(f"DATETIME: payload of {len(payload)} bytes, expected 8 or 16")
    tz = _dt.timezone(_dt.timedelta(minutes=tzoffset)) if tzoffset else _dt.timezone.utc
    try:
        moment = _EPOCH + _dt.timedelta(seconds=seconds, microseconds=nsec // 1000)
    except OverflowError as exc:
        raise ValueError(f"DATETIME: {seconds} s is out of Python's range") from exc
    return moment.astimezone(tz)


# -- INTERVAL ------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """A Tarantool datetime interval (ext 6, servers 2.10+)."""

    year: int = 0
    month: int = 0
    week: int = 0
    day: int = 0
    hour: int = 0
    minute: int = 0
    sec: int = 0
    nsec: int = 0
    adjust: int = 1  # 0 excess, 1 none (Tarantool's default), 2 last


_INTERVAL_FIELDS = ("year", "month", "week", "day", "hour", "minute", "sec", "nsec", "adjust")


def encode_interval(value: Interval) -> bytes:
    """Payload of ext 6: a count, then (field id, msgpack int) pairs for non-zero fields."""
    pairs = [(i, getattr(value, name)) for i, name in enumerate(_INTERVAL_FIELDS) if getattr(value, name)]
    out = bytearray([len(pairs)])
    for field_id, number in pairs:
        out.append(field_id)
        out += msgpack.packb(number)
    return bytes(out)


def decode_interval(payload: bytes) -> Interval:
    """Inverse of :func:`encode_interval`."""
    if not payload:
        raise ValueError("INTERVAL: empty payload")
    count, offset = payload[0], 1
    values: dict[str, int] = {"adjust": 0}
    for _ in range(count):
        if offset >= len(payload):
            raise ValueError("INTERVAL: truncated")
        field_id = payload[offset]
        if field_id >= len(_INTERVAL_FIELDS):
            raise ValueError(f"INTERVAL: unknown field id {field_id}")
        number, used = _read_msgpack_int(payload[offset + 1:])
        values[_INTERVAL_FIELDS[field_id]] = number
        offset += 1 + used
    if offset != len(payload):
        raise ValueError("INTERVAL: trailing bytes")
    return Interval(**values)


# -- the hooks msgpack calls -----------------------------------------------------

def pack_ext(value: Any) -> msgpack.ExtType:
    """``default=`` hook of the packer."""
    if isinstance(value, decimal.Decimal):
        return msgpack.ExtType(EXT_DECIMAL, encode_decimal(value))
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(EXT_UUID, value.bytes)
    if isinstance(value, _dt.datetime):
        return msgpack.ExtType(EXT_DATETIME, encode_datetime(value))
    if isinstance(value, Interval):
        return msgpack.ExtType(EXT_INTERVAL, encode_interval(value))
    raise TypeError(f"cannot send a value of type {type(value).__name__} to Tarantool: {value!r:.80}")


def unpack_ext(code: int, payload: bytes) -> Any:
    """``ext_hook=`` of the unpacker."""
    if code == EXT_DECIMAL:
        return decode_decimal(payload)
    if code == EXT_UUID:
        if len(payload) != 16:
            raise ValueError(f"UUID: payload of {len(payload)} bytes, expected 16")
        return uuid.UUID(bytes=payload)
    if code == EXT_ERROR:
        return decode_error_stack(msgpack.unpackb(payload, raw=False, strict_map_key=False))
    if code == EXT_DATETIME:
        return decode_datetime(payload)
    if code == EXT_INTERVAL:
        return decode_interval(payload)
    return msgpack.ExtType(code, payload)
