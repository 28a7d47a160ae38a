"""Pure tests of the sans-IO IPROTO codec in ``tarantool_pool.protocol``.

What they prove (no server involved):

* ``Decoder`` turns hand-written server frames (``ce`` + big-endian uint32
  size, header map ``{0: status, 1: sync, 5: schema_version}``, body map) into
  the right ``Frame`` whether the bytes arrive whole, one byte at a time, or
  many frames in one feed; it also accepts the other msgpack uint forms of the
  size prefix.
* Malformed input always raises ``ProtocolError`` (never another exception)
  and the decoder stays failed afterwards.
* ``Encoder.frame`` output decodes back to the header and body it was given,
  its size prefix is the payload length, and unpackable values raise
  ``EncodingError`` naming their type.  Body builders put each field under
  the key the protocol wants (UPDATE ops under 0x21, UPSERT ops under 0x28,
  SQL binds with their ``:`` prefix).
* ``parse_greeting`` reads a real-shaped greeting and refuses anything else.
* ``chap_sha1_scramble`` matches the chap-sha1 definition computed here.

Reference: shared/reference/iproto.md sections 1-2, 5-9, 11.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
from decimal import Decimal
from typing import Any

import msgpack
import pytest

from tarantool_pool import protocol as p
from tarantool_pool.errors import EncodingError, ProtocolError
from tarantool_pool.msgpack_ext import decode_error_stack, unpack_ext
from tarantool_pool.protocol import NEED_DATA, Decoder, Encoder, Frame

# -- golden server frames, written byte by byte ------------------------------------------


def server_frame(header: bytes, body: bytes = b"") -> bytes:
    """The server's framing: 0xce + uint32 big-endian size of header+body."""
    return b"\xce" + struct.pack(">I", len(header) + len(body)) + header + body


def header_26(status: int, sync: int, schema_version: int) -> bytes:
    """A 2.6 response header: 3-entry map with fixed-width 0xce/0xcf/0xce values."""
    return (b"\x83"
            + b"\x00\xce" + struct.pack(">I", status)
            + b"\x01\xcf" + struct.pack(">Q", sync)
            + b"\x05\xce" + struct.pack(">I", schema_version))


# {0x30: [[1, "Alice", True], [2, "Bob", None]]}
SELECT_BODY = (b"\x81\x30\x92"
               b"\x93\x01\xa5Alice\xc3"
               b"\x93\x02\xa3Bob\xc0")

ERROR_MESSAGE = "Space '99999' does not exist"
# {0x31: message, 0x52: {0: [{0: type, 2: line, 1: file, 3: message, 4: errno, 5: code}]}}
# (keys of the stack entry in the order 2.6 emits them: 0, 2, 1, 3, 4, 5)
ERROR_BODY = (b"\x82"
              b"\x31\xbc" + ERROR_MESSAGE.encode()
              + b"\x52\x81\x00\x91\x86"
              b"\x00\xabClientError"
              b"\x02\xcd\x04\x25"
              b"\x01\xadspace_cache.h"
              b"\x03\xbc" + ERROR_MESSAGE.encode()
              + b"\x04\x00"
              b"\x05\x24")

# {0x30: [50]} -- a box.session.push(50)
CHUNK_BODY = b"\x81\x30\x91\x32"

# {0x32: [{0: "ID", 1: "integer"}, {0: "NM", 1: "string"}], 0x30: [[1, "a"]]}
SQL_SELECT_BODY = (b"\x82"
                   b"\x32\x92"
                   b"\x82\x00\xa2ID\x01\xa7integer"
                   b"\x82\x00\xa2NM\x01\xa6string"
                   b"\x30\x91\x92\x01\xa1a")

# {0x42: {0: 2, 1: [1, 2]}} -- INSERT of two rows into an AUTOINCREMENT table
SQL_INFO_BODY = b"\x81\x42\x82\x00\x02\x01\x92\x01\x02"

GOLDEN = {
    "select_ok": (
        server_frame(header_26(0, 7, 80), SELECT_BODY),
        Frame(sync=7, status=0, schema_version=80, body={0x30: [[1, "Alice", True], [2, "Bob", None]]}),
    ),
    "error_no_such_space": (
        server_frame(header_26(0x8000 | 36, 8, 80), ERROR_BODY),
        Frame(sync=8, status=0x8024, schema_version=80, body={
            0x31: ERROR_MESSAGE,
            0x52: {0: [{0: "ClientError", 1: "space_cache.h", 2: 1061, 3: ERROR_MESSAGE, 4: 0, 5: 36}]},
        }),
    ),
    "chunk_push": (
        server_frame(header_26(128, 9, 80), CHUNK_BODY),
        Frame(sync=9, status=128, schema_version=80, body={0x30: [50]}),
    ),
    "ping_empty_body": (
        # written out completely, size prefix included: 23-byte header + 1-byte body
        bytes.fromhex("ce 00000018"
                      "83 00 ce 00000000 01 cf 000000000000000a 05 ce 00000050"
                      "80"),
        Frame(sync=10, status=0, schema_version=80, body={}),
    ),
    "ping_no_body": (
        server_frame(header_26(0, 11, 80)),
        Frame(sync=11, status=0, schema_version=80, body={}),
    ),
    "sql_select_metadata": (
        server_frame(header_26(0, 12, 81), SQL_SELECT_BODY),
        Frame(sync=12, status=0, schema_version=81, body={
            0x32: [{0: "ID", 1: "integer"}, {0: "NM", 1: "string"}],
            0x30: [[1, "a"]],
        }),
    ),
    "sql_info": (
        server_frame(header_26(0, 13, 82), SQL_INFO_BODY),
        Frame(sync=13, status=0, schema_version=82, body={0x42: {0: 2, 1: [1, 2]}}),
    ),
}


def feed_whole(decoder: Decoder, data: bytes) -> list[Frame]:
    decoder.feed(data)
    return drain(decoder)


def feed_bytewise(decoder: Decoder, data: bytes) -> list[Frame]:
    """Feed one byte at a time, collecting frames as soon as they complete."""
    frames: list[Frame] = []
    for i in range(len(data)):
        decoder.feed(data[i:i + 1])
        frames.extend(drain(decoder))
    return frames


def drain(decoder: Decoder) -> list[Frame]:
    frames = []
    while (frame := decoder.next_frame()) is not NEED_DATA:
        frames.append(frame)
    return frames


FEEDERS = {"whole": feed_whole, "bytewise": feed_bytewise}


# -- Decoder: well-formed input ------------------------------------------------------------

@pytest.mark.parametrize("feeding", sorted(FEEDERS))
@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_decoder_reads_golden_frame(case: str, feeding: str) -> None:
    data, expected = GOLDEN[case]
    frames = FEEDERS[feeding](Decoder(), data)
    assert frames == [expected]


def test_golden_ping_size_prefix_is_the_payload_length() -> None:
    # guards the one frame whose size prefix was written by hand
    data = GOLDEN["ping_empty_body"][0]
    assert struct.unpack(">I", data[1:5])[0] == len(data) - 5


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_decoder_returns_need_data_until_the_last_byte(case: str) -> None:
    data, expected = GOLDEN[case]
    decoder = Decoder()
    assert decoder.next_frame() is NEED_DATA
    decoder.feed(data[:-1])
    assert decoder.next_frame() is NEED_DATA
    decoder.feed(data[-1:])
    assert decoder.next_frame() == expected
    assert decoder.next_frame() is NEED_DATA


@pytest.mark.parametrize("feeding", sorted(FEEDERS))
def test_decoder_reads_many_frames_from_one_stream_in_order(feeding: str) -> None:
    cases = sorted(GOLDEN)
    stream = b"".join(GOLDEN[case][0] for case in cases)
    frames = FEEDERS[feeding](Decoder(), stream)
    assert frames == [GOLDEN[case][1] for case in cases]


def test_decoder_keeps_a_partial_frame_after_a_complete_one() -> None:
    first, first_frame = GOLDEN["select_ok"]
    second, second_frame = GOLDEN["error_no_such_space"]
    decoder = Decoder()
    decoder.feed(first + second[:7])
    assert decoder.next_frame() == first_frame
    assert decoder.next_frame() is NEED_DATA
    decoder.feed(second[7:])
    assert decoder.next_frame() == second_frame


# header {0: 0, 1: 5} + body {} = 6 bytes of payload
SMALL_PAYLOAD = b"\x82\x00\x00\x01\x05" + b"\x80"


@pytest.mark.parametrize("prefix", [
    pytest.param(b"\x06", id="positive_fixint"),
    pytest.param(b"\xcc\x06", id="uint8"),
    pytest.param(b"\xcd\x00\x06", id="uint16"),
    pytest.param(b"\xce\x00\x00\x00\x06", id="uint32"),
    pytest.param(b"\xcf" + (6).to_bytes(8, "big"), id="uint64"),
])
@pytest.mark.parametrize("feeding", sorted(FEEDERS))
def test_decoder_accepts_any_msgpack_uint_size_prefix(prefix: bytes, feeding: str) -> None:
    frames = FEEDERS[feeding](Decoder(), prefix + SMALL_PAYLOAD)
    assert frames == [Frame(sync=5, status=0, schema_version=0, body={})]


def test_decoder_defaults_missing_sync_and_schema_version_to_zero() -> None:
    frames = feed_whole(Decoder(), b"\x04" + b"\x81\x00\x00" + b"\x80")
    assert frames == [Frame(sync=0, status=0, schema_version=0, body={})]


def test_error_frame_exposes_code_and_decodable_error_stack() -> None:
    (frame,) = feed_whole(Decoder(), GOLDEN["error_no_such_space"][0])
    assert frame.is_error
    assert frame.error_code == 36
    (info,) = decode_error_stack(frame.body[0x52])
    assert (info.type, info.code, info.line, info.message) == ("ClientError", 36, 1061, ERROR_MESSAGE)


def test_chunk_and_ok_frames_are_not_errors() -> None:
    chunk = GOLDEN["chunk_push"][1]
    ok = GOLDEN["select_ok"][1]
    assert (chunk.is_error, chunk.status) == (False, p.STATUS_CHUNK)
    assert (ok.is_error, ok.error_code) == (False, 0)


def test_decoder_returns_unknown_ext_types_as_exttype() -> None:
    # {0x30: [ext 42 b"xyz"]} -- fixext is only for 1/2/4/8/16 bytes, so ext8: c7 03 2a
    body = b"\x81\x30\x91\xc7\x03\x2axyz"
    (frame,) = feed_whole(Decoder(), server_frame(header_26(0, 1, 1), body))
    assert frame.body[0x30] == [msgpack.ExtType(42, b"xyz")]


def test_decoder_turns_known_ext_types_into_python_values() -> None:
    the_uuid = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    # {0x30: [[decimal -12.345, uuid]]}
    body = b"\x81\x30\x91\x92" + bytes.fromhex("d6 01 03 12 34 5d") + b"\xd8\x02" + the_uuid.bytes
    (frame,) = feed_whole(Decoder(), server_frame(header_26(0, 1, 1), body))
    assert frame.body[0x30] == [[Decimal("-12.345"), the_uuid]]


# -- Decoder: malformed input --------------------------------------------------------------

VALID_HEADER = b"\x82\x00\x00\x01\x01"  # {0: 0, 1: 1}

def fixint_sized(payload: bytes) -> bytes:
    """A frame whose (positive fixint) size prefix is right; only the content is bad."""
    assert len(payload) < 128
    return bytes([len(payload)]) + payload


MALFORMED = {
    "size_zero": b"\x00" + VALID_HEADER,
    "size_negative_fixint": b"\xff" + VALID_HEADER,
    "size_negative_int8": b"\xd0\x80" + VALID_HEADER,
    "size_is_a_string": b"\xa1\x05" + VALID_HEADER,
    "size_is_a_float": b"\xcb" + struct.pack(">d", 5.0) + VALID_HEADER,
    "header_is_an_array": fixint_sized(b"\x93\x00\x01\x02"),
    "header_is_a_string": fixint_sized(b"\xa3abc"),
    "header_without_status": fixint_sized(b"\x81\x01\x01"),
    "header_status_is_a_string": fixint_sized(b"\x81\x00\xa1x"),
    "header_sync_is_a_string": fixint_sized(b"\x82\x00\x00\x01\xa1x"),
    "body_is_an_array": fixint_sized(VALID_HEADER + b"\x91\x01"),
    "body_is_a_string": fixint_sized(VALID_HEADER + b"\xa1x"),
    "bytes_after_body_within_frame": fixint_sized(VALID_HEADER + b"\x80\x01\x02"),
    "header_longer_than_declared_size": b"\x03" + VALID_HEADER,
    "never_used_byte_0xc1": fixint_sized(VALID_HEADER + b"\xc1"),
    "bad_decimal_sign_nibble": fixint_sized(VALID_HEADER + b"\x81\x30\xd5\x01\x03\x11"),
    "uuid_of_wrong_length": fixint_sized(VALID_HEADER + b"\x81\x30\xd6\x02abcd"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("feeding", sorted(FEEDERS))
def test_malformed_frame_raises_protocol_error(case: str, feeding: str) -> None:
    with pytest.raises(ProtocolError):
        FEEDERS[feeding](Decoder(), MALFORMED[case])


# {0: 0, 1: 1} + {0x30: [[1, "aaaaaaaaaaaaaa"]]}, declared 3 bytes longer than the header only
BODY_PAST_SIZE = (b"\x08" + VALID_HEADER + b"\x81\x30\x91\x92\x01\xaeaaaaaaaaaaaaaa")


def test_body_longer_than_declared_size_raises_protocol_error_when_fed_whole() -> None:
    with pytest.raises(ProtocolError, match="declared size"):
        feed_whole(Decoder(), BODY_PAST_SIZE)


def test_body_longer_than_declared_size_never_yields_a_frame_when_fed_bytewise() -> None:
    decoder = Decoder()
    frames: list[Frame] = []
    with pytest.raises(ProtocolError):
        for i in range(len(BODY_PAST_SIZE)):
            decoder.feed(BODY_PAST_SIZE[i:i + 1])
            while (frame := decoder.next_frame()) is not NEED_DATA:
                frames.append(frame)
    assert frames == []


def test_frame_declared_above_max_frame_size_is_refused() -> None:
    decoder = Decoder(max_frame_size=64)
    decoder.feed(b"\xcc\x41")  # 65 bytes announced: refused before they arrive
    with pytest.raises(ProtocolError, match="64"):
        decoder.next_frame()


def test_frame_of_exactly_max_frame_size_is_accepted() -> None:
    body = b"\x81\x30\xd9\x36" + b"x" * 54  # {0x30: "x" * 54}: 58 bytes
    assert len(VALID_HEADER + body) == 63
    data = b"\x3f" + VALID_HEADER + body
    assert feed_whole(Decoder(max_frame_size=63), data) == [Frame(1, 0, 0, {0x30: "x" * 54})]


@pytest.mark.parametrize("case", ["size_zero", "header_is_an_array", "body_is_an_array"])
def test_decoder_stays_failed_after_a_protocol_error(case: str) -> None:
    decoder = Decoder()
    decoder.feed(MALFORMED[case])
    with pytest.raises(ProtocolError) as first:
        drain(decoder)
    good = GOLDEN["ping_empty_body"][0]
    with pytest.raises(ProtocolError) as on_feed:
        decoder.feed(good)
    with pytest.raises(ProtocolError) as on_next:
        decoder.next_frame()
    assert on_feed.value is first.value
    assert on_next.value is first.value


# -- Encoder ------------------------------------------------------------------------------

def unpack_request(data: bytes) -> tuple[int, list[Any]]:
    """(size prefix, [header, body?]) of one encoded request, checked to be exactly one frame."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, ext_hook=unpack_ext)
    unpacker.feed(data)
    size = unpacker.unpack()
    start = unpacker.tell()
    objects = list(unpacker)
    assert unpacker.tell() - start == size
    return size, objects


def test_encoder_frame_decodes_back_to_header_and_body() -> None:
    body = p.select_body(512, 1, ["x", 2], 3, 100, p.ITERATORS["GE"])
    size, (header, decoded_body) = unpack_request(Encoder().frame(p.SELECT, 77, body, schema_version=9))
    assert header == {0x00: p.SELECT, 0x01: 77, 0x05: 9}
    assert decoded_body == {0x10: 512, 0x11: 1, 0x20: ["x", 2], 0x13: 3, 0x12: 100, 0x14: 5}


@pytest.mark.parametrize("sync", [0, 1, 127, 128, 65536, 2**32 - 1, 2**32, 2**64 - 1])
@pytest.mark.parametrize("schema_version", [0, 1, 2**32 - 1, 2**32])
@pytest.mark.parametrize("body", [None, p.call_body("f", [1])])
def test_encoder_frame_header_holds_any_sync_and_schema_version(sync: int, schema_version: int,
                                                                 body: dict[int, Any] | None) -> None:
    size, objects = unpack_request(Encoder().frame(p.CALL, sync, body, schema_version=schema_version))
    expected = {0x00: p.CALL, 0x01: sync, **({0x05: schema_version} if schema_version else {})}
    assert objects == ([expected] if body is None else [expected, body])


def test_encoder_frame_uses_the_servers_five_byte_size_prefix() -> None:
    data = Encoder().frame(p.CALL, 1, p.call_body("f", [1, 2, 3]))
    assert data[0] == 0xCE
    assert struct.unpack(">I", data[1:5])[0] == len(data) - 5


def test_encoder_frame_without_body_is_header_only() -> None:
    assert p.ping_body() is None  # type: ignore[func-returns-value]
    data = Encoder().frame(p.PING, 3, None)
    size, objects = unpack_request(data)
    assert objects == [{0x00: p.PING, 0x01: 3}]
    assert size == len(data) - 5


def test_encoder_omits_schema_version_zero() -> None:
    _, (header, _) = unpack_request(Encoder().frame(p.EVAL, 4, p.eval_body("return 1", [])))
    assert p.KEY_SCHEMA_VERSION not in header


def test_encoder_frames_decode_with_the_decoder() -> None:
    data = Encoder().frame(p.INSERT, 21, p.insert_body(512, [1, "a", Decimal("1.5")]))
    assert feed_whole(Decoder(), data) == [Frame(21, p.INSERT, 0, {0x10: 512, 0x21: [1, "a", Decimal("1.5")]})]


def test_encoder_sends_str_as_msgpack_str_and_bytes_as_bin() -> None:
    encoder = Encoder()
    assert encoder.pack("ab") == b"\xa2ab"
    assert encoder.pack(b"ab") == b"\xc4\x02ab"


@pytest.mark.parametrize("value, type_name", [(object(), "object"), ({1, 2}, "set")])
def test_unpackable_body_raises_encoding_error_naming_the_type(value: object, type_name: str) -> None:
    with pytest.raises(EncodingError, match=rf"\b{type_name}\b"):
        Encoder().frame(p.INSERT, 1, p.insert_body(512, [1, value]))
    with pytest.raises(EncodingError, match=rf"\b{type_name}\b"):
        Encoder().pack([value])


def test_encoding_error_is_also_a_type_error() -> None:
    with pytest.raises(TypeError):
        Encoder().pack(object())


def test_update_ops_go_under_tuple_key() -> None:
    ops = [["=", 1, "x"], ["+", 2, 5]]
    _, (header, body) = unpack_request(Encoder().frame(p.UPDATE, 2, p.update_body(512, 0, [7], ops)))
    assert header[0x00] == p.UPDATE
    assert body == {0x10: 512, 0x11: 0, 0x20: [7], 0x21: ops}
    assert 0x28 not in body


def test_upsert_ops_go_under_ops_key_and_tuple_under_tuple_key() -> None:
    ops = [["+", 2, 1]]
    _, (header, body) = unpack_request(Encoder().frame(p.UPSERT, 2, p.upsert_body(512, [7, "a", 0], ops)))
    assert header[0x00] == p.UPSERT
    assert body == {0x10: 512, 0x21: [7, "a", 0], 0x28: ops}


def test_execute_body_with_positional_params() -> None:
    body = p.execute_body("SELECT ?, ?", [1, "two"])
    assert body == {0x40: "SELECT ?, ?", 0x41: [1, "two"], 0x2B: []}


def test_execute_body_with_named_params_adds_colon_unless_prefixed() -> None:
    body = p.execute_body("SELECT :a, :b, @c", {"a": 1, ":b": 2, "@c": 3})
    assert body[0x41] == [{":a": 1}, {":b": 2}, {"@c": 3}]


def test_execute_body_by_statement_id_uses_stmt_id_key() -> None:
    body = p.execute_body(123456, None)
    assert body == {0x43: 123456, 0x41: [], 0x2B: []}


def test_execute_frame_carries_named_binds_as_one_entry_maps() -> None:
    data = Encoder().frame(p.EXECUTE, 5, p.execute_body("SELECT ?, :a", [5]))
    _, (_, body) = unpack_request(data)
    assert body[0x41] == [5]
    data = Encoder().frame(p.EXECUTE, 5, p.execute_body("SELECT :a", {"a": None}))
    _, (_, body) = unpack_request(data)
    assert body[0x41] == [{":a": None}]


def test_auth_body_carries_mechanism_and_scramble() -> None:
    assert p.auth_body("alice", b"s" * 20) == {0x23: "alice", 0x21: ["chap-sha1", b"s" * 20]}
    assert p.auth_body("guest", None) == {0x23: "guest", 0x21: []}


# -- greeting ------------------------------------------------------------------------------

INSTANCE_UUID = "c1f12c5a-3e42-4f8f-8cd3-9b5d7a2d1e00"
SALT = bytes(range(100, 132))  # 32 bytes


def greeting(first_line: str, second_line: bytes) -> bytes:
    """Two 64-byte lines, each padded with spaces to 63 bytes and ended with a newline."""
    return first_line.encode().ljust(63) + b"\n" + second_line.ljust(63) + b"\n"


def test_parse_greeting_reads_version_uuid_and_salt() -> None:
    data = greeting(f"Tarantool 2.6.0 (Binary) {INSTANCE_UUID}", base64.b64encode(SALT))
    assert len(data) == 128 and data[63:64] == b"\n" and data[127:] == b"\n"
    parsed = p.parse_greeting(data)
    assert parsed.version == (2, 6, 0)
    assert parsed.protocol == "Binary"
    assert parsed.uuid == INSTANCE_UUID
    assert parsed.salt == SALT


def test_parse_greeting_keeps_version_suffix_as_text_only() -> None:
    data = greeting("Tarantool 2.10.4-83-gc6b2129 (Binary)", base64.b64encode(SALT))
    parsed = p.parse_greeting(data)
    assert parsed.version == (2, 10, 4)
    assert parsed.version_text == "2.10.4-83-gc6b2129"


def test_parse_greeting_refuses_lua_console() -> None:
    data = greeting("Tarantool 2.6.0 (Lua console)", b"type 'help' for interactive help")
    with pytest.raises(ProtocolError, match="Lua console"):
        p.parse_greeting(data)


@pytest.mark.parametrize("length", [0, 64, 127, 129])
def test_parse_greeting_refuses_wrong_length(length: int) -> None:
    data = greeting(f"Tarantool 2.6.0 (Binary) {INSTANCE_UUID}", base64.b64encode(SALT))
    data = (data * 2)[:length]
    with pytest.raises(ProtocolError, match="128"):
        p.parse_greeting(data)


@pytest.mark.parametrize("data", [
    pytest.param(greeting("HTTP/1.1 400 Bad Request", b"Content-Length: 0"), id="http"),
    pytest.param(b"\x00" * 128, id="zeros"),
    pytest.param(bytes(range(128)), id="binary"),
    pytest.param(greeting(f"Tarantool 2.6.0 (Binary) {INSTANCE_UUID}", b"!!not base64!!"), id="bad_salt"),
    pytest.param(greeting(f"Tarantool 2.6.0 (Binary) {INSTANCE_UUID}", base64.b64encode(b"short")),
                 id="short_salt"),
])
def test_parse_greeting_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        p.parse_greeting(data)


# -- chap-sha1 -----------------------------------------------------------------------------

def expected_scramble(salt: bytes, password: str) -> bytes:
    """chap-sha1 from its definition (iproto.md section 9), independent of the library."""
    step1 = hashlib.sha1(password.encode("utf-8")).digest()
    step2 = hashlib.sha1(step1).digest()
    step3 = hashlib.sha1(salt[:20] + step2).digest()
    return bytes(a ^ b for a, b in zip(step1, step3))


@pytest.mark.parametrize("password", ["secret", "", "pässwörd"])
def test_chap_sha1_scramble_matches_the_definition(password: str) -> None:
    scramble = p.chap_sha1_scramble(SALT, password)
    assert len(scramble) == 20
    assert scramble == expected_scramble(SALT, password)


def test_chap_sha1_scramble_uses_only_the_first_20_salt_bytes() -> None:
    other_tail = SALT[:20] + b"\xff" * 12
    assert p.chap_sha1_scramble(SALT, "pw") == p.chap_sha1_scramble(other_tail, "pw")
    assert p.chap_sha1_scramble(SALT, "pw") != p.chap_sha1_scramble(b"\xff" + SALT[1:], "pw")
