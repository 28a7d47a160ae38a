"""Sans-IO IPROTO codec: bytes in, bytes out.

Rule: no sockets, no threads, no clocks.  ``Encoder`` turns requests into
framed bytes; ``Decoder.feed(data)`` takes whatever the network delivered and
``Decoder.next_frame()`` returns one complete :class:`Frame` at a time, or
``NEED_DATA`` (h11's shape).  Every malformed input becomes ``ProtocolError``
and leaves the decoder dead: a peer that sent garbage gets no second chance.
A frame is decoded only once all the bytes its size prefix declares are
buffered, and never past them, so that size (at most ``max_frame_size``)
bounds what one frame can cost.

Reference: shared/reference/iproto.md (verified against Tarantool 2.6.0).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, NamedTuple, NoReturn, Sequence

import msgpack

from .errors import EncodingError, ProtocolError
from .msgpack_ext import pack_ext, unpack_ext

# Request types (header key 0x00 in a request).
SELECT: Final = 1
INSERT: Final = 2
REPLACE: Final = 3
UPDATE: Final = 4
DELETE: Final = 5
CALL_16: Final = 6
AUTH: Final = 7
EVAL: Final = 8
UPSERT: Final = 9
CALL: Final = 10
EXECUTE: Final = 11
PREPARE: Final = 13
PING: Final = 64
ID: Final = 73

# Response statuses.
STATUS_OK: Final = 0
STATUS_CHUNK: Final = 128  # out-of-band push (box.session.push), same sync as the request
STATUS_ERROR_FLAG: Final = 0x8000

# Header keys.
KEY_CODE: Final = 0x00
KEY_SYNC: Final = 0x01
KEY_SCHEMA_VERSION: Final = 0x05

# Body keys.
KEY_SPACE_ID: Final = 0x10
KEY_INDEX_ID: Final = 0x11
KEY_LIMIT: Final = 0x12
KEY_OFFSET: Final = 0x13
KEY_ITERATOR: Final = 0x14
KEY_INDEX_BASE: Final = 0x15
KEY_KEY: Final = 0x20
KEY_TUPLE: Final = 0x21
KEY_FUNCTION_NAME: Final = 0x22
KEY_USER_NAME: Final = 0x23
KEY_EXPR: Final = 0x27
KEY_OPS: Final = 0x28
KEY_OPTIONS: Final = 0x2B
KEY_DATA: Final = 0x30
KEY_ERROR_24: Final = 0x31
KEY_METADATA: Final = 0x32
KEY_BIND_METADATA: Final = 0x33
KEY_BIND_COUNT: Final = 0x34
KEY_SQL_TEXT: Final = 0x40
KEY_SQL_BIND: Final = 0x41
KEY_SQL_INFO: Final = 0x42
KEY_STMT_ID: Final = 0x43
KEY_ERROR: Final = 0x52
KEY_VERSION: Final = 0x54
KEY_FEATURES: Final = 0x55

# SQL_INFO keys and METADATA column keys.
SQL_INFO_ROW_COUNT: Final = 0x00
SQL_INFO_AUTOINCREMENT_IDS: Final = 0x01
FIELD_NAME: Final = 0x00
FIELD_TYPE: Final = 0x01

# Error codes the transport layer itself reacts to.
ER_UNKNOWN_REQUEST_TYPE: Final = 48
ER_WRONG_SCHEMA_VERSION: Final = 109

# Select iterators, by name (tarantool-python accepts names and numbers).
ITERATORS: Final = {
    "EQ": 0, "REQ": 1, "ALL": 2, "LT": 3, "LE": 4, "GE": 5, "GT": 6,
    "BITS_ALL_SET": 7, "BITS_ANY_SET": 8, "BITS_ALL_NOT_SET": 9,
    "OVERLAPS": 10, "NEIGHBOR": 11,
}

SELECT_NO_LIMIT: Final = 0xFFFFFFFF
GREETING_SIZE: Final = 128
DEFAULT_MAX_FRAME_SIZE: Final = 256 * 1024 * 1024

NEED_DATA: Final = None  # next_frame() result when a whole frame is not buffered yet
_MAX_SIZE_PREFIX: Final = 9  # the longest msgpack unsigned integer (0xcf + 8 bytes)
_SMALL_FRAME: Final = 4096  # bytes; a frame up to this size is decoded in the stream, see Decoder


# -- greeting and authentication -------------------------------------------------

@dataclass(frozen=True)
class Greeting:
    """The server's 128-byte hello: who it is and the salt for chap-sha1."""

    version: tuple[int, int, int]
    version_text: str
    protocol: str
    uuid: str
    salt: bytes


_GREETING_LINE = re.compile(r"Tarantool\s+(\d+)\.(\d+)\.(\d+)(\S*)\s+\(([^)]*)\)\s*(\S*)")


def parse_greeting(data: bytes) -> Greeting:
    """Parse the 128-byte greeting; refuse anything that is not a binary IPROTO port."""
    if len(data) != GREETING_SIZE:
        raise ProtocolError(0, f"greeting must be {GREETING_SIZE} bytes, got {len(data)}")
    first_line = data[:64].decode("ascii", "replace")
    match = _GREETING_LINE.match(first_line)
    if match is None:
        raise ProtocolError(0, f"not a Tarantool server: greeting starts with {first_line.strip()[:40]!r}")
    major, minor, patch, suffix, protocol, instance_uuid = match.groups()
    if protocol != "Binary":
        raise ProtocolError(
            0, f"the port speaks {protocol!r}, not the binary protocol (is it an admin console port?)"
        )
    try:
        salt = base64.b64decode(data[64:].strip(), validate=True)
    except ValueError as exc:
        raise ProtocolError(0, "greeting salt is not valid base64") from exc
    if len(salt) < 20:
        raise ProtocolError(0, f"greeting salt is {len(salt)} bytes, expected at least 20")
    version = (int(major), int(minor), int(patch))
    return Greeting(version, f"{major}.{minor}.{patch}{suffix}", protocol, instance_uuid, salt)


def chap_sha1_scramble(salt: bytes, password: str) -> bytes:
    """The 20-byte proof of the password: SHA1(p) xor SHA1(salt[:20] + SHA1(SHA1(p)))."""
    password_hash = hashlib.sha1(password.encode("utf-8")).digest()
    stored_hash = hashlib.sha1(password_hash).digest()
    salted = hashlib.sha1(salt[:20] + stored_hash).digest()
    return bytes(x ^ y for x, y in zip(password_hash, salted))


# -- encoding ----------------------------------------------------------------------

_SIZE_PREFIX = struct.Struct(">BI")
# The usual request start, packed in one go: the size prefix, then the header map
# {CODE: positive fixint, SYNC: uint32} (+ SCHEMA_VERSION: uint32).  msgpack lets an integer
# take a wider form than its smallest; the server reads any form.
_HEAD = struct.Struct(">BIBBBBBI")
_HEAD_SIZE = _HEAD.size - 5
_HEAD_SCHEMA = struct.Struct(">BIBBBBBIBBI")
_HEAD_SCHEMA_SIZE = _HEAD_SCHEMA.size - 5
_UINT32_END = 1 << 32


class Encoder:
    """Builds framed request bytes.  Stateless apart from its settings: thread-safe."""

    def __init__(self, encoding: str | None = "utf-8") -> None:
        self._packb = partial(msgpack.packb, use_bin_type=encoding is not None, default=pack_ext)

    def pack(self, value: Any) -> bytes:
        """Pack one value the way requests carry it (also checks it can be sent at all)."""
        try:
            return self._packb(value)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodingError(f"cannot encode the request: {exc}") from exc

    def frame(self, code: int, sync: int, body: dict[int, Any] | None, schema_version: int = 0) -> bytes:
        """Header + optional body, with the 5-byte size prefix the server itself uses."""
        if 0 <= code < 0x80 and 0 <= sync < _UINT32_END and 0 <= schema_version < _UINT32_END:
            # Every request of a link's first 4 billion: one struct call instead of a dict and a packb.
            packed = self.pack(body) if body is not None else b""
            if schema_version:
                return _HEAD_SCHEMA.pack(0xCE, _HEAD_SCHEMA_SIZE + len(packed), 0x83, KEY_CODE, code, KEY_SYNC,
                                         0xCE, sync, KEY_SCHEMA_VERSION, 0xCE, schema_version) + packed
            return _HEAD.pack(0xCE, _HEAD_SIZE + len(packed), 0x82, KEY_CODE, code, KEY_SYNC, 0xCE, sync) + packed
        header: dict[int, Any] = {KEY_CODE: code, KEY_SYNC: sync}
        if schema_version:
            header[KEY_SCHEMA_VERSION] = schema_version
        payload: bytes = self._packb(header)
        if body is not None:
            payload += self.pack(body)
        return _SIZE_PREFIX.pack(0xCE, len(payload)) + payload


def ping_body() -> None:
    return None


def select_body(space_id: int, index_id: int, key: Sequence[Any], offset: int, limit: int,
                iterator: int) -> dict[int, Any]:
    return {KEY_SPACE_ID: space_id, KEY_INDEX_ID: index_id, KEY_LIMIT: limit, KEY_OFFSET: offset,
            KEY_ITERATOR: iterator, KEY_KEY: key}


def insert_body(space_id: int, values: Sequence[Any]) -> dict[int, Any]:
    """Body of INSERT and REPLACE."""
    return {KEY_SPACE_ID: space_id, KEY_TUPLE: values}


def update_body(space_id: int, index_id: int, key: Sequence[Any], ops: Sequence[Any]) -> dict[int, Any]:
    # Legacy quirk: UPDATE carries its operations under TUPLE, not OPS.
    return {KEY_SPACE_ID: space_id, KEY_INDEX_ID: index_id, KEY_KEY: key, KEY_TUPLE: ops}


def upsert_body(space_id: int, values: Sequence[Any], ops: Sequence[Any]) -> dict[int, Any]:
    return {KEY_SPACE_ID: space_id, KEY_TUPLE: values, KEY_OPS: ops}


def delete_body(space_id: int, index_id: int, key: Sequence[Any]) -> dict[int, Any]:
    return {KEY_SPACE_ID: space_id, KEY_INDEX_ID: index_id, KEY_KEY: key}


def call_body(function_name: str, args: Sequence[Any]) -> dict[int, Any]:
    """Body of CALL and CALL_16."""
    return {KEY_FUNCTION_NAME: function_name, KEY_TUPLE: args}


def eval_body(expr: str, args: Sequence[Any]) -> dict[int, Any]:
    return {KEY_EXPR: expr, KEY_TUPLE: args}


def execute_body(query: str | int, params: Any) -> dict[int, Any]:
    """EXECUTE by SQL text or by prepared statement id; ``params`` as in :func:`sql_binds`."""
    body: dict[int, Any] = {KEY_STMT_ID: query} if isinstance(query, int) else {KEY_SQL_TEXT: query}
    body[KEY_SQL_BIND] = sql_binds(params)
    body[KEY_OPTIONS] = []
    return body


def prepare_body(query: str | int) -> dict[int, Any]:
    """PREPARE an SQL text, or (given a statement id) unprepare it."""
    return {KEY_STMT_ID: query} if isinstance(query, int) else {KEY_SQL_TEXT: query}


def auth_body(user: str, scramble: bytes | None) -> dict[int, Any]:
    """AUTH with chap-sha1; ``scramble=None`` re-authenticates as a password-less user."""
    tuple_value: list[Any] = [] if scramble is None else ["chap-sha1", scramble]
    return {KEY_USER_NAME: user, KEY_TUPLE: tuple_value}


def id_body(version: int, features: Sequence[int]) -> dict[int, Any]:
    return {KEY_VERSION: version, KEY_FEATURES: list(features)}


def sql_binds(params: Any) -> list[Any]:
    """SQL parameters: a sequence binds ``?`` in order; a mapping binds names.

    A mapping key may be given with or without its prefix (``"name"`` binds
    ``:name``; ``"@name"`` and ``":name"`` are sent as they are), because the
    server wants the prefix inside a one-entry map.
    """
    if params is None:
        return []
    if isinstance(params, dict):
        binds = []
        for name, value in params.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"SQL parameter names must be non-empty strings, got {name!r}")
            binds.append({name if name[0] in ":@$" else ":" + name: value})
        return binds
    if isinstance(params, (list, tuple)):
        return list(params)
    raise TypeError(f"SQL params must be a list, a tuple or a dict, got {type(params).__name__}")


# -- decoding ----------------------------------------------------------------------

class Frame(NamedTuple):
    """One decoded response packet (a NamedTuple: cheap to build on the hot path)."""

    sync: int
    status: int
    schema_version: int
    body: dict[Any, Any]

    @property
    def is_error(self) -> bool:
        return self.status >= STATUS_ERROR_FLAG

    @property
    def error_code(self) -> int:
        return self.status & (STATUS_ERROR_FLAG - 1)


class Decoder:
    """Incremental response decoder: ``feed(bytes)``, then ``next_frame()`` until NEED_DATA."""

    def __init__(self, encoding: str | None = "utf-8", max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 use_list: bool = True) -> None:
        self._max_frame_size = max_frame_size
        self._options: dict[str, Any] = {
            "raw": encoding is None,
            "use_list": use_list,
            # Lua strings are bytes: one that is not UTF-8 must not kill a link shared by every caller.
            # Decoded losslessly (recover with s.encode("utf-8", "surrogateescape")), like os.fsdecode.
            "unicode_errors": "surrogateescape",
            "strict_map_key": False,
            "ext_hook": unpack_ext,
        }
        # The stream unpacker holds the received bytes and decodes size prefixes, headers and the
        # bodies of small frames, so no length it accepts may be longer than a small frame (older
        # msgpack versions allocate a declared array length at once).  A larger body is decoded on its own
        # bytes: then every length it declares is bounded by its own size.
        self._unpacker = msgpack.Unpacker(
            max_buffer_size=max_frame_size + 1024 * 1024,
            max_str_len=_SMALL_FRAME, max_bin_len=_SMALL_FRAME, max_ext_len=_SMALL_FRAME,
            max_array_len=_SMALL_FRAME, max_map_len=_SMALL_FRAME,
            **self._options,
        )
        self._unpack_body = partial(msgpack.unpackb, **self._options)
        self._fed = 0  # bytes fed so far: a stream offset, like Unpacker.tell()
        self._frame_start = 0  # stream offset where the current frame's size prefix starts
        self._frame_end: int | None = None  # stream offset where the current frame ends
        self._failed: ProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the server."""
        if self._failed is not None:
            raise self._failed
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull as exc:
            self._fail(f"more than {self._max_frame_size} bytes buffered without a complete frame", exc)
        self._fed += len(data)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or NEED_DATA (None)."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next_frame()
        except ProtocolError:
            raise
        except Exception as exc:  # any decode failure of untrusted bytes is a protocol error
            self._fail(f"malformed response: {type(exc).__name__}: {exc}", exc)

    def _next_frame(self) -> Frame | None:
        unpacker = self._unpacker
        frame_end = self._frame_end
        if frame_end is None:
            if self._fed == self._frame_start:  # nothing buffered (the usual end of a batch): no raise
                return NEED_DATA
            try:
                size = unpacker.unpack()
            except msgpack.OutOfData:
                if self._fed - self._frame_start < _MAX_SIZE_PREFIX:
                    return NEED_DATA
                size = None  # that many bytes and still no whole object: not an integer
            except Exception:  # noqa: BLE001 - whatever it is, it is not a size
                size = None
            if type(size) is not int:
                self._fail("bad frame size: the size prefix is not a msgpack unsigned integer")
            if size <= 0:
                self._fail(f"bad frame size {size}")
            if size > self._max_frame_size:
                self._fail(f"frame of {size} bytes exceeds the {self._max_frame_size}-byte limit")
            frame_end = self._frame_end = unpacker.tell() + size
        if self._fed < frame_end:
            # Nothing of a frame is decoded before all of it is here, so its declared size bounds
            # what it can cost: content that runs past the size is an error, not a wait for more.
            return NEED_DATA
        header = self._unpack_within(frame_end)
        if type(header) is not dict or type(header.get(KEY_CODE)) is not int:
            self._fail(f"frame header is not a map with a status: {header!r:.80}")
        body: Any = {}
        header_end = unpacker.tell()
        if header_end < frame_end:
            if frame_end - self._frame_start <= _SMALL_FRAME:
                body = self._unpack_within(frame_end)
                if unpacker.tell() != frame_end:
                    self._fail("frame has bytes after its body")
            else:
                body = self._decode_body(unpacker.read_bytes(frame_end - header_end))
            if type(body) is not dict:
                self._fail(f"frame body is not a map: {body!r:.80}")
        self._frame_end = None
        self._frame_start = frame_end
        sync = header.get(KEY_SYNC, 0)
        schema_version = header.get(KEY_SCHEMA_VERSION, 0)
        if type(sync) is not int or type(schema_version) is not int:
            self._fail("frame header has a non-integer sync or schema version")
        return Frame(sync, header[KEY_CODE], schema_version, body)

    def _unpack_within(self, frame_end: int) -> Any:
        """The next object from the stream, which must end inside the (whole, buffered) frame."""
        try:
            value = self._unpacker.unpack()
        except msgpack.OutOfData:
            self._fail("frame content runs past its declared size")
        if self._unpacker.tell() > frame_end:
            self._fail("frame content runs past its declared size")
        return value

    def _decode_body(self, data: bytes) -> Any:
        try:
            return self._unpack_body(data)
        except msgpack.ExtraData as exc:
            self._fail("frame has bytes after its body", exc)
        except Exception as exc:
            if self._cut_short(data):
                self._fail("frame content runs past its declared size", exc)
            raise

    def _cut_short(self, data: bytes) -> bool:
        """Slow path, for a body that failed to decode: does it claim more bytes than it has?"""
        probe = msgpack.Unpacker(max_buffer_size=len(data), **self._options)
        probe.feed(data)
        try:
            probe.unpack()
        except msgpack.OutOfData:
            return True
        except Exception:  # noqa: BLE001 - malformed otherwise: the caller re-raises the first error
            return False
        return False

    def _fail(self, message: str, cause: BaseException | None = None) -> NoReturn:
        self._failed = ProtocolError(0, message)
        raise self._failed from cause
