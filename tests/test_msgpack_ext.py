"""Pure tests of Tarantool's msgpack extension types (``tarantool_pool.msgpack_ext``).

What they prove:

* DECIMAL (ext 1): the four encodings verified against a live server
  (iproto.md section 14) are produced by ``pack_ext`` and read back by
  ``unpack_ext``; negative, positive, zero and 38-digit values round-trip;
  NaN, Infinity and 39 digits are refused with ValueError.
* UUID (ext 2): ``d8 02`` + the 16 RFC 4122 bytes, both directions.
* DATETIME (ext 4): round trips keep the instant, microseconds and the UTC
  offset; a whole-second UTC instant is the 8-byte ``d7 04`` form.
* INTERVAL (ext 6): round trips, and golden bytes derived by hand from the
  spec (uint8 count, then uint8 field id + msgpack int per non-zero field).
* ERROR (ext 3): decodes into ErrorInfo objects in stack order.
* Unknown ext types and unknown Python types are passed through / refused.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from decimal import Decimal
from typing import Any

import msgpack
import pytest

from tarantool_pool.msgpack_ext import ErrorInfo, Interval, pack_ext, unpack_ext


def pack(value: object) -> bytes:
    data: bytes = msgpack.packb(value, default=pack_ext, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=unpack_ext, raw=False, strict_map_key=False)


# -- DECIMAL --------------------------------------------------------------------------------

DECIMAL_GOLDEN = [
    pytest.param(Decimal("-12.345"), "d6 01 03 12 34 5d", id="-12.345"),
    pytest.param(Decimal("100"), "c7 03 01 00 10 0c", id="100"),
    pytest.param(Decimal("0.001"), "d5 01 03 1c", id="0.001"),
    pytest.param(Decimal("1E+5"), "d5 01 fb 1c", id="1E+5"),
]


@pytest.mark.parametrize("value, golden", DECIMAL_GOLDEN)
def test_decimal_packs_to_the_servers_bytes(value: Decimal, golden: str) -> None:
    assert pack(value) == bytes.fromhex(golden)


@pytest.mark.parametrize("value, golden", DECIMAL_GOLDEN)
def test_decimal_unpacks_from_the_servers_bytes(value: Decimal, golden: str) -> None:
    decoded = unpack(bytes.fromhex(golden))
    assert isinstance(decoded, Decimal)
    assert decoded == value
    assert decoded.as_tuple().exponent == value.as_tuple().exponent


@pytest.mark.parametrize("text", [
    "0", "-0", "1", "-1", "12.34", "-0.000001", "3.14159", "1E+30", "-7E-20",
    "12345678901234567890123456789012345678",
    "-1234567890123456789.0123456789012345678",
    "0.00000000000000000000000000000000000001",
])
def test_decimal_round_trips(text: str) -> None:
    value = Decimal(text)
    decoded = unpack(pack(value))
    assert decoded == value
    assert decoded.is_signed() == value.is_signed()


@pytest.mark.parametrize("sign_nibble, expected", [
    (0xA, Decimal("5")), (0xC, Decimal("5")), (0xE, Decimal("5")), (0xF, Decimal("5")),
    (0xB, Decimal("-5")), (0xD, Decimal("-5")),
])
def test_decimal_accepts_every_bcd_sign_nibble(sign_nibble: int, expected: Decimal) -> None:
    # ext 1, payload: scale 0, one byte = digit 5 + sign nibble
    assert unpack(bytes([0xD5, 0x01, 0x00, 0x50 | sign_nibble])) == expected


@pytest.mark.parametrize("text", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_decimal_refuses_non_finite_values(text: str) -> None:
    with pytest.raises(ValueError):
        pack(Decimal(text))


def test_decimal_refuses_39_digits() -> None:
    with pytest.raises(ValueError, match="38"):
        pack(Decimal("123456789012345678901234567890123456789"))


# -- UUID -----------------------------------------------------------------------------------

def test_uuid_golden_bytes_both_ways() -> None:
    value = uuid.UUID("12345678-9abc-4def-8123-456789abcdef")
    golden = bytes.fromhex("d8 02 12 34 56 78 9a bc 4d ef 81 23 45 67 89 ab cd ef")
    assert pack(value) == golden
    assert unpack(golden) == value


def test_uuid_of_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError):
        unpack_ext(2, b"\x00" * 15)


# -- DATETIME -------------------------------------------------------------------------------

UTC = dt.timezone.utc
PLUS_3 = dt.timezone(dt.timedelta(hours=3))


@pytest.mark.parametrize("value", [
    pytest.param(dt.datetime(2024, 2, 29, 12, 30, 45, tzinfo=UTC), id="utc"),
    pytest.param(dt.datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=UTC), id="microseconds"),
    pytest.param(dt.datetime(2024, 2, 29, 12, 30, 45, 500, tzinfo=PLUS_3), id="plus_03_00"),
    pytest.param(dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), id="before_epoch"),
])
def test_datetime_round_trips_with_its_offset(value: dt.datetime) -> None:
    decoded = unpack(pack(value))
    assert isinstance(decoded, dt.datetime)
    assert decoded == value
    assert decoded.utcoffset() == value.utcoffset()
    assert decoded.microsecond == value.microsecond


def test_datetime_whole_second_utc_golden_bytes() -> None:
    value = dt.datetime(1970, 1, 1, 0, 0, 10, tzinfo=UTC)
    golden = bytes.fromhex("d7 04") + struct.pack("<q", 10)
    assert golden.hex(" ") == "d7 04 0a 00 00 00 00 00 00 00"
    assert pack(value) == golden
    assert unpack(golden) == value


def test_datetime_with_offset_uses_the_16_byte_form() -> None:
    # 2024-01-01T03:00:00+03:00 is 2024-01-01T00:00:00Z = 1704067200 s; nsec 0; offset 180 min
    value = dt.datetime(2024, 1, 1, 3, 0, 0, tzinfo=PLUS_3)
    golden = bytes.fromhex("d8 04") + struct.pack("<qihh", 1704067200, 0, 180, 0)
    assert pack(value) == golden
    decoded = unpack(golden)
    assert decoded == value and decoded.utcoffset() == dt.timedelta(hours=3)


def test_naive_datetime_is_sent_as_utc() -> None:
    naive = dt.datetime(1970, 1, 1, 0, 0, 10)
    assert pack(naive) == pack(naive.replace(tzinfo=UTC))


@pytest.mark.parametrize("size", [0, 7, 9, 15, 17])
def test_datetime_payload_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError):
        unpack_ext(4, b"\x00" * size)


# -- INTERVAL -------------------------------------------------------------------------------

INTERVAL_GOLDEN = [
    # n=4: year 1, month 2, day 3, adjust 1 (none, the default)
    pytest.param(Interval(year=1, month=2, day=3), "c7 09 06 04 00 01 01 02 03 03 08 01", id="ymd"),
    # n=3: month -1 (negative fixint), hour 25, nsec 1000000 (uint32); adjust 0 is omitted
    pytest.param(Interval(month=-1, hour=25, nsec=1_000_000, adjust=0),
                 "c7 0b 06 03 01 ff 04 19 07 ce 00 0f 42 40", id="negative_and_wide"),
    # n=2: week -3, adjust 2 (last)
    pytest.param(Interval(week=-3, adjust=2), "c7 05 06 02 02 fd 08 02", id="week_last"),
    # n=1: nothing but the default adjust
    pytest.param(Interval(), "c7 03 06 01 08 01", id="empty"),
    # n=0: everything zero, adjust excess
    pytest.param(Interval(adjust=0), "d4 06 00", id="all_zero"),  # 1-byte payload: fixext 1
]


@pytest.mark.parametrize("value, golden", INTERVAL_GOLDEN)
def test_interval_golden_bytes_both_ways(value: Interval, golden: str) -> None:
    assert pack(value) == bytes.fromhex(golden)
    assert unpack(bytes.fromhex(golden)) == value


def test_interval_round_trips_every_field() -> None:
    value = Interval(year=-2, month=14, week=3, day=-40, hour=100, minute=-61, sec=3600, nsec=999_999_999,
                     adjust=2)
    assert unpack(pack(value)) == value


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x02\x00\x01", id="truncated"),
    pytest.param(b"\x01\x09\x01", id="unknown_field_id"),
    pytest.param(b"\x01\x00\x01\x00", id="trailing_bytes"),
])
def test_malformed_interval_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        unpack_ext(6, payload)


# -- ERROR ----------------------------------------------------------------------------------

def test_error_ext_golden_bytes_decode_to_error_info() -> None:
    # c7 <len> 03, payload {0: [{0: "T", 2: 5, 1: "f", 3: "m", 4: 0, 5: 36}]}
    payload = bytes.fromhex("81 00 91 86 00 a1 54 02 05 01 a1 66 03 a1 6d 04 00 05 24")
    golden = bytes([0xC7, len(payload), 0x03]) + payload
    assert unpack(golden) == [ErrorInfo(type="T", file="f", line=5, message="m", errno=0, code=36)]


def test_error_ext_keeps_stack_order_and_fields() -> None:
    effect = {0x05: 1234, 0x03: "effect", 0x00: "CustomError", 0x02: 10, 0x01: "a.lua", 0x04: 0,
              0x06: {"custom_type": "MyError"}, 0x10: "unknown key, ignored"}
    cause = {0x00: "ClientError", 0x01: "b.c", 0x02: 20, 0x03: "cause", 0x04: 2, 0x05: 3}
    data = pack(msgpack.ExtType(3, msgpack.packb({0x00: [effect, cause]})))
    stack = unpack(data)
    assert stack == [
        ErrorInfo("CustomError", "a.lua", 10, "effect", 0, 1234, {"custom_type": "MyError"}),
        ErrorInfo("ClientError", "b.c", 20, "cause", 2, 3, {}),
    ]


@pytest.mark.parametrize("raw", [{}, {0: "not a list"}, {0: ["not a map"]}, [1, 2]])
def test_malformed_error_ext_is_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        unpack_ext(3, msgpack.packb(raw))


# -- unknown types --------------------------------------------------------------------------

def test_unknown_ext_type_comes_back_as_exttype() -> None:
    assert unpack(bytes.fromhex("d4 2a 07")) == msgpack.ExtType(42, b"\x07")
    assert unpack_ext(5, b"zstd") == msgpack.ExtType(5, b"zstd")


@pytest.mark.parametrize("value, type_name", [(object(), "object"), ({1}, "set"), (dt.date(2024, 1, 1), "date")])
def test_unknown_python_type_is_refused_naming_the_type(value: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        pack(value)
