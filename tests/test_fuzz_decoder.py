"""Fuzzing the sans-IO response decoder (``tarantool_pool.protocol.Decoder``).

What must hold for ANY bytes a server (or something pretending to be one)
sends, fed whole or in arbitrary chunks:

* ``next_frame()`` only ever returns a well-formed :class:`Frame` or
  NEED_DATA, or raises :class:`ProtocolError`; never another exception, and
  after an error the decoder stays failed with that same error.
* Chunking never changes the outcome: the same frames come out, and the
  stream ends in the same way (waiting for data, or an error).
* Valid frames round-trip exactly, including every extension type, and
  frames that precede a corruption are still delivered.
* Work and memory are bounded by the input: each example finishes within a
  wall-clock bound, a frame above ``max_frame_size`` is refused before its
  bytes arrive (the error names the size and the limit), a frame's content
  is never read past its declared size, and huge lengths declared inside a
  small frame (arrays, maps, str, bin, ext) allocate nothing big.

Hypothesis runs derandomized and without an example database, so every
run (and CI) tries the same examples.
"""

from __future__ import annotations

import datetime as dt
import struct
import time
import tracemalloc
from decimal import Decimal
from typing import Any, Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tarantool_pool.errors import ProtocolError
from tarantool_pool.msgpack_ext import (
    EXT_DATETIME,
    EXT_DECIMAL,
    EXT_ERROR,
    EXT_INTERVAL,
    EXT_UUID,
    Interval,
    pack_ext,
)
from tarantool_pool.protocol import NEED_DATA, Decoder, Frame

pytestmark = pytest.mark.timeout(120)

EXAMPLE_SECONDS = 2.0  # wall-clock bound of one example (hypothesis' own deadline is off: CI jitter)
KNOWN_EXT = (EXT_DECIMAL, EXT_UUID, EXT_ERROR, EXT_DATETIME, EXT_INTERVAL)
SMALL_LIMIT = 65536  # max_frame_size of the decoders most examples use
PADDING = b"z" * 5000  # makes a frame larger than the decoder decodes in its stream (4 kB)

FUZZ = settings(max_examples=500, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_FEW = settings(FUZZ, max_examples=300)


# -- running the decoder ---------------------------------------------------------------------

class Outcome:
    """What a decoder made of a stream: the frames it yielded and how it ended."""

    def __init__(self, frames: list[Frame], error: ProtocolError | None) -> None:
        self.frames = frames
        self.error = error

    @property
    def end(self) -> str:
        return "need_data" if self.error is None else "protocol_error"

    def key(self) -> tuple[list[str], str]:
        # repr, not ==: a corrupted float may decode as NaN, which is not equal to itself.
        return [repr(frame) for frame in self.frames], self.end


def check_frame(frame: Any) -> None:
    assert isinstance(frame, Frame), f"next_frame() returned {type(frame).__name__}: {frame!r:.200}"
    assert type(frame.sync) is int
    assert type(frame.status) is int
    assert type(frame.schema_version) is int
    assert type(frame.body) is dict


def run(decoder: Decoder, chunks: list[bytes]) -> Outcome:
    """Feed chunks one by one, draining frames after each; anything but ProtocolError propagates."""
    frames: list[Frame] = []
    started = time.monotonic()
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while True:
                frame = decoder.next_frame()
                if frame is NEED_DATA:
                    break
                check_frame(frame)
                frames.append(frame)
    except ProtocolError as error:
        assert str(error), "a ProtocolError must say what was wrong"
        # A failed decoder stays failed, with the same error, whatever comes next.
        with pytest.raises(ProtocolError) as again:
            decoder.next_frame()
        assert again.value is error
        with pytest.raises(ProtocolError) as on_feed:
            decoder.feed(b"\x00")
        assert on_feed.value is error
        outcome = Outcome(frames, error)
    else:
        outcome = Outcome(frames, None)
    elapsed = time.monotonic() - started
    assert elapsed < EXAMPLE_SECONDS, f"decoding {sum(map(len, chunks))} bytes took {elapsed:.2f} s"
    return outcome


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


DecoderFactory = Callable[[], Decoder]

decoder_factories = st.sampled_from([
    lambda: Decoder(max_frame_size=SMALL_LIMIT),
    lambda: Decoder(encoding=None, max_frame_size=SMALL_LIMIT),
    lambda: Decoder(use_list=False, max_frame_size=SMALL_LIMIT),
    lambda: Decoder(),  # the default 256 MiB limit: declared lengths must still cost nothing
])
# Decoders whose frames compare equal to the values packed (text as str, arrays as lists).
text_decoder_factories = st.sampled_from([lambda: Decoder(max_frame_size=SMALL_LIMIT), lambda: Decoder()])
cut_lists = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=24)


def whole_and_chunked(factory: DecoderFactory, data: bytes, cuts: list[int]) -> tuple[Outcome, Outcome]:
    whole = run(factory(), [data])
    chunked = run(factory(), split(data, cuts))
    assert chunked.key() == whole.key(), "chunking changed what the decoder made of the same bytes"
    return whole, chunked


# -- building frames -------------------------------------------------------------------------

def size_prefix(size: int, form: int) -> bytes:
    """One of msgpack's unsigned-integer encodings of ``size`` (form 0 is the smallest one)."""
    forms = []
    if size < 0x80:
        forms.append(bytes([size]))
    if size <= 0xFF:
        forms.append(b"\xcc" + struct.pack(">B", size))
    if size <= 0xFFFF:
        forms.append(b"\xcd" + struct.pack(">H", size))
    if size <= 0xFFFFFFFF:
        forms.append(b"\xce" + struct.pack(">I", size))
    forms.append(b"\xcf" + struct.pack(">Q", size))
    return forms[form % len(forms)]


def frame_bytes(header: bytes, body: bytes = b"", form: int = 3) -> bytes:
    return size_prefix(len(header) + len(body), form) + header + body


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=pack_ext)  # type: ignore[no-any-return]


HEADER = pack({0: 0, 1: 7, 5: 42})

keys = st.one_of(st.integers(min_value=0, max_value=0x60), st.text(max_size=6))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.decimals(min_value=-(10**20), max_value=10**20, places=6, allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
    st.builds(Interval, year=st.integers(-5000, 5000), month=st.integers(-100, 100),
              day=st.integers(-(2**31), 2**31 - 1), nsec=st.integers(0, 999_999_999),
              adjust=st.integers(0, 2)),
    st.builds(msgpack.ExtType, st.integers(0, 127).filter(lambda code: code not in KNOWN_EXT),
              st.binary(max_size=12)),
)
values = st.recursive(scalars | st.just([]) | st.just({}),
                      lambda inner: st.lists(inner, min_size=1, max_size=4)
                      | st.dictionaries(keys, inner, min_size=1, max_size=4),
                      max_leaves=10)


@st.composite
def valid_frames(draw: st.DrawFn) -> tuple[bytes, Frame]:
    """A frame as a server could send it, and the Frame it must decode to."""
    status = draw(st.sampled_from([0, 128, 0x8000 | 36, 0x8000 | 109]) | st.integers(0, 2**32 - 1))
    sync = draw(st.integers(0, 2**64 - 1))
    schema_version = draw(st.integers(0, 2**32 - 1))
    header: dict[int, Any] = {0: status}
    if draw(st.booleans()):
        header[1] = sync
    else:
        sync = 0
    if draw(st.booleans()):
        header[5] = schema_version
    else:
        schema_version = 0
    body = draw(st.none() | st.dictionaries(keys, values, max_size=4))
    if body is not None and draw(st.integers(0, 3)) == 0:
        body[0x31] = PADDING  # now and then a large frame, decoded on its own bytes
    data = frame_bytes(pack(header), b"" if body is None else pack(body), draw(st.integers(0, 4)))
    return data, Frame(sync, status, schema_version, body or {})


valid_streams = st.lists(valid_frames(), min_size=1, max_size=4)


# -- hostile content inside a frame whose size prefix is right -------------------------------

def container(kind: str, count: int, present: bytes) -> bytes:
    heads = {"array16": (b"\xdc", ">H"), "array32": (b"\xdd", ">I"), "map16": (b"\xde", ">H"),
             "map32": (b"\xdf", ">I")}
    head, fmt = heads[kind]
    return head + struct.pack(fmt, min(count, 2 ** (8 * struct.calcsize(fmt)) - 1)) + present


def raw_len(kind: str, declared: int, present: bytes) -> bytes:
    heads = {"str8": (b"\xd9", ">B"), "str16": (b"\xda", ">H"), "str32": (b"\xdb", ">I"),
             "bin8": (b"\xc4", ">B"), "bin16": (b"\xc5", ">H"), "bin32": (b"\xc6", ">I")}
    head, fmt = heads[kind]
    limit = 2 ** (8 * struct.calcsize(fmt)) - 1
    return head + struct.pack(fmt, min(declared, limit)) + present


def ext(code: int, payload: bytes, declared: int | None = None) -> bytes:
    """An ext object; ``declared`` overrides the payload length written in its header."""
    size = len(payload) if declared is None else declared
    fixed = {1: b"\xd4", 2: b"\xd5", 4: b"\xd6", 8: b"\xd7", 16: b"\xd8"}
    if declared is None and size in fixed:
        return fixed[size] + struct.pack(">b", code) + payload
    if size <= 0xFF:
        return b"\xc7" + struct.pack(">Bb", size, code) + payload
    if size <= 0xFFFF:
        return b"\xc8" + struct.pack(">Hb", size, code) + payload
    return b"\xc9" + struct.pack(">Ib", min(size, 0xFFFFFFFF), code) + payload


huge = st.integers(min_value=0, max_value=2**32 - 1) | st.sampled_from([2**32 - 1, 2**31, 2**28, 65535])
few_bytes = st.binary(max_size=24)
ext_payloads = st.one_of(
    st.binary(max_size=40),
    # near-valid payloads: right lengths, wrong content
    st.binary(min_size=8, max_size=8), st.binary(min_size=16, max_size=16),
    st.builds(lambda head, rest: head + rest, st.sampled_from([b"\x00", b"\x7f", b"\xcc\x05", b"\xd0\x80"]),
              st.binary(max_size=20)),
    st.builds(lambda inner: pack(inner), values),  # any msgpack value where MP_ERROR wants its map
    st.builds(lambda n, rest: bytes([n]) + rest, st.integers(0, 255), st.binary(max_size=20)),  # interval count
)

hostile_values = st.one_of(
    st.builds(container, st.sampled_from(["array16", "array32", "map16", "map32"]), huge, few_bytes),
    st.builds(raw_len, st.sampled_from(["str8", "str16", "str32", "bin8", "bin16", "bin32"]), huge, few_bytes),
    st.builds(ext, st.sampled_from(KNOWN_EXT), ext_payloads),
    st.builds(ext, st.integers(-128, 127), st.binary(max_size=24)),
    st.builds(ext, st.integers(-128, 127), st.binary(max_size=8), huge),
    st.builds(lambda n, items: bytes([0x80 | n]) + items, st.integers(1, 15), few_bytes),  # truncated fixmap
    st.builds(lambda depth, tail: b"\x91" * depth + tail, st.integers(1, 2000), few_bytes),  # deep nesting
    few_bytes,
)
hostile_headers = st.one_of(
    st.builds(pack, values),  # any value where the header map should be
    st.builds(lambda status: pack({0: status, 1: 1}), values),  # a status of the wrong type
    st.builds(lambda sync: pack({0: 0, 1: sync}), values),  # a sync of the wrong type
    st.builds(lambda schema: pack({0: 0, 1: 1, 5: schema}), values),
    st.just(HEADER),
)


@st.composite
def hostile_frames(draw: st.DrawFn) -> bytes:
    header = draw(hostile_headers)
    where = draw(st.sampled_from(["body_value", "body_itself", "header_only"]))
    if where == "header_only":
        body = b""
    elif where == "body_itself":
        body = draw(hostile_values)
    elif draw(st.booleans()):
        body = b"\x81\x30" + draw(hostile_values)
    else:  # the same in a frame large enough to be decoded on its own bytes
        body = b"\x82\x31" + pack(PADDING) + b"\x30" + draw(hostile_values)
    return frame_bytes(header, body, draw(st.integers(0, 4)))


# -- mutations of a valid stream ---------------------------------------------------------------

@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, Frame]], int]:
    """A valid stream damaged once: (bytes, [(frame length, expected frame)], offset of the damage)."""
    frames = draw(valid_streams)
    data = b"".join(raw for raw, _ in frames)
    expected = [(len(raw), frame) for raw, frame in frames]
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "size", "splice"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    elif kind == "truncate":
        data = data[:at]
    elif kind == "insert":
        data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    elif kind == "delete":
        data = data[:at] + data[at + draw(st.integers(1, 16)):]
    else:
        # Rewrite one frame: a wrong size prefix, or a hostile frame spliced in its place.
        index = draw(st.integers(0, len(frames) - 1))
        at = sum(len(raw) for raw, _ in frames[:index])
        raw = frames[index][0]
        if kind == "size":
            payload = raw[len(size_prefix_of(raw)):]
            replacement = draw(st.one_of(
                st.builds(size_prefix, st.integers(0, 2**64 - 1), st.integers(0, 4)),
                st.builds(pack, values),  # not an integer at all
                st.binary(min_size=1, max_size=12),
            )) + payload
        else:
            replacement = draw(hostile_frames())
        data = data[:at] + replacement + data[at + len(raw):]
    return data, expected, at


def size_prefix_of(raw: bytes) -> bytes:
    head = raw[0]
    return raw[:1 + {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(head, 0)]


# -- the properties --------------------------------------------------------------------------

@FUZZ
@given(factory=decoder_factories, data=st.binary(max_size=1024), cuts=cut_lists)
def test_random_bytes_only_yield_frames_need_data_or_protocol_error(factory: DecoderFactory, data: bytes,
                                                                     cuts: list[int]) -> None:
    whole_and_chunked(factory, data, cuts)


@FUZZ
@given(factory=decoder_factories, prefix=st.sampled_from([b"", b"\xce", b"\xce\x00\x00\x00", b"\x05\x82"]),
       data=st.binary(max_size=512), cuts=cut_lists)
def test_random_bytes_after_a_plausible_prefix_never_escape_as_other_errors(factory: DecoderFactory, prefix: bytes,
                                                                            data: bytes, cuts: list[int]) -> None:
    whole_and_chunked(factory, prefix + data, cuts)


@FUZZ_FEW
@given(stream=valid_streams, cuts=cut_lists)
def test_valid_frames_round_trip_exactly_whole_and_in_any_chunks(stream: list[tuple[bytes, Frame]],
                                                                  cuts: list[int]) -> None:
    data = b"".join(raw for raw, _ in stream)
    expected = [frame for _, frame in stream]
    whole, chunked = whole_and_chunked(lambda: Decoder(max_frame_size=SMALL_LIMIT), data, cuts)
    assert whole.error is None, f"a valid stream was refused: {whole.error}"
    assert whole.frames == expected
    assert chunked.frames == expected


@FUZZ
@given(factory=text_decoder_factories, mutated=mutated_streams(), cuts=cut_lists)
def test_mutated_valid_frames_yield_the_intact_frames_before_the_damage_then_stop_cleanly(
        factory: DecoderFactory, mutated: tuple[bytes, list[tuple[int, Frame]], int], cuts: list[int]) -> None:
    data, expected, damaged_at = mutated
    whole, _ = whole_and_chunked(factory, data, cuts)
    # Every frame that ends before the first damaged byte is delivered, unchanged and in order.
    intact, end = [], 0
    for length, frame in expected:
        end += length
        if end > damaged_at:
            break
        intact.append(frame)
    assert whole.frames[:len(intact)] == intact


@FUZZ
@given(factory=decoder_factories, frames=st.lists(hostile_frames(), min_size=1, max_size=3), cuts=cut_lists)
def test_hostile_content_in_correctly_sized_frames_yields_frames_or_protocol_error(
        factory: DecoderFactory, frames: list[bytes], cuts: list[int]) -> None:
    whole_and_chunked(factory, b"".join(frames), cuts)


@FUZZ_FEW
@given(code=st.sampled_from(KNOWN_EXT), payload=ext_payloads, cuts=cut_lists)
def test_bad_payloads_of_every_known_extension_type_yield_a_value_or_protocol_error(
        code: int, payload: bytes, cuts: list[int]) -> None:
    data = frame_bytes(HEADER, b"\x81\x30" + ext(code, payload))
    whole, _ = whole_and_chunked(lambda: Decoder(max_frame_size=SMALL_LIMIT), data, cuts)
    if whole.error is not None:
        assert "malformed response" in str(whole.error) or "declared size" in str(whole.error)


@FUZZ_FEW
@given(code=st.integers(0, 127).filter(lambda code: code not in KNOWN_EXT), payload=st.binary(max_size=64))
def test_unknown_extension_types_come_back_as_exttype(code: int, payload: bytes) -> None:
    data = frame_bytes(HEADER, b"\x81\x30" + ext(code, payload))
    outcome = run(Decoder(max_frame_size=SMALL_LIMIT), [data])
    assert outcome.error is None
    assert outcome.frames == [Frame(7, 0, 42, {0x30: msgpack.ExtType(code, payload)})]


@FUZZ_FEW
@given(declared=st.integers(min_value=SMALL_LIMIT + 1, max_value=2**64 - 1), form=st.integers(0, 4))
def test_frame_declared_above_max_frame_size_is_refused_before_its_bytes_arrive(declared: int, form: int) -> None:
    decoder = Decoder(max_frame_size=SMALL_LIMIT)
    decoder.feed(size_prefix(declared, form))  # only the prefix: the frame itself never comes
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    assert str(declared) in str(refused.value) and str(SMALL_LIMIT) in str(refused.value)


# -- bounded memory, with the library's default (256 MiB) frame limit ----------------------------

def peak_bytes_while(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def decode_expecting_error(data: bytes) -> None:
    decoder = Decoder()
    decoder.feed(data)
    with pytest.raises(ProtocolError):
        decoder.next_frame()


HUGE_DECLARATIONS = {
    "array32": b"\xdd\xff\xff\xff\xff\x01",
    "array32_under_the_frame_limit": b"\xdd" + struct.pack(">I", 200_000_000) + b"\x01",
    "array16": b"\xdc\xff\xff\x01",
    "map32": b"\xdf" + struct.pack(">I", 100_000_000) + b"\x01\x02",
    "str32": b"\xdb" + struct.pack(">I", 200_000_000) + b"abc",
    "bin32": b"\xc6" + struct.pack(">I", 200_000_000) + b"abc",
    "ext32": b"\xc9" + struct.pack(">Ib", 200_000_000, 1) + b"abc",
    "nested_arrays": (b"\xdd" + struct.pack(">I", 100_000_000)) * 200,
}


@pytest.mark.parametrize("case", sorted(HUGE_DECLARATIONS))
def test_huge_length_declared_inside_a_small_frame_is_refused_at_once_allocating_nothing_big(case: str) -> None:
    data = frame_bytes(HEADER, b"\x81\x30" + HUGE_DECLARATIONS[case])
    peak = peak_bytes_while(lambda: decode_expecting_error(data))
    assert peak < 4 * 1024 * 1024, f"{len(data)}-byte frame made the decoder allocate {peak} bytes"


def test_a_large_frame_with_huge_declared_lengths_allocates_in_proportion_to_its_size() -> None:
    # A 20 kB body (above the size decoded in the stream) that then declares an array of 200 million.
    body = b"\x82\x31" + raw_len("bin32", 20_000, b"y" * 20_000) + b"\x30\xdd" + struct.pack(">I", 200_000_000)
    data = frame_bytes(HEADER, body)
    peak = peak_bytes_while(lambda: decode_expecting_error(data))
    assert peak < 20 * len(data) + 4 * 1024 * 1024, f"{len(data)}-byte frame made the decoder allocate {peak} bytes"


def test_content_past_the_declared_size_is_an_error_not_a_wait_for_more() -> None:
    # The frame says 14 bytes; its body claims an array of 200 million: the decoder must fail as
    # soon as the 14 bytes are in, not keep accepting (and holding) whatever the server streams.
    frame = frame_bytes(HEADER, b"\x81\x30\xdd" + struct.pack(">I", 200_000_000))
    decoder = Decoder()
    decoder.feed(frame)
    fed = [0]

    def stream_more() -> None:
        with pytest.raises(ProtocolError):
            decoder.next_frame()
            for _ in range(30):
                decoder.feed(b"\x01" * 1_000_000)
                fed[0] += 1_000_000
                decoder.next_frame()

    peak = peak_bytes_while(stream_more)
    assert fed[0] == 0, f"the decoder accepted {fed[0]} more bytes for a {len(frame)}-byte frame"
    assert peak < 4 * 1024 * 1024, f"the decoder held {peak} bytes for a {len(frame)}-byte frame"


def test_body_cut_short_inside_a_small_frame_fails_once_the_frame_is_in() -> None:
    # {0x30: [1, 2, 3]} missing its last element, in a frame whose size covers only what is there.
    decoder = Decoder()
    decoder.feed(frame_bytes(HEADER, b"\x81\x30\x93\x01\x02"))
    with pytest.raises(ProtocolError, match="declared size"):
        decoder.next_frame()


def test_body_cut_short_inside_a_large_frame_fails_once_the_frame_is_in() -> None:
    body = b"\x82\x31" + raw_len("bin16", 10_000, b"y" * 10_000) + b"\x30\x93\x01\x02"
    decoder = Decoder()
    decoder.feed(frame_bytes(HEADER, body))
    with pytest.raises(ProtocolError, match="declared size"):
        decoder.next_frame()


def test_size_prefix_that_declares_a_huge_container_is_refused_at_once() -> None:
    decoder = Decoder()
    decoder.feed(b"\xdd" + struct.pack(">I", 200_000_000))
    with pytest.raises(ProtocolError, match="size prefix is not a msgpack unsigned integer"):
        decoder.next_frame()


def test_size_prefix_that_is_not_an_integer_is_refused_within_nine_bytes() -> None:
    decoder = Decoder()
    decoder.feed(b"\xdb" + struct.pack(">I", 100) + b"abc")  # a 100-byte string as the "size"
    assert decoder.next_frame() is NEED_DATA  # 8 bytes: fewer than the longest integer takes
    decoder.feed(b"d")
    with pytest.raises(ProtocolError, match="size prefix is not a msgpack unsigned integer"):
        decoder.next_frame()


def test_error_names_the_declared_size_and_the_limit() -> None:
    decoder = Decoder()
    decoder.feed(b"\xce\xff\xff\xff\xff")
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    assert str(2**32 - 1) in str(refused.value)
    assert str(256 * 1024 * 1024) in str(refused.value)


@pytest.mark.parametrize("declared", [0, 1, 5])
def test_frame_declared_smaller_than_its_header_is_refused(declared: int) -> None:
    decoder = Decoder()
    decoder.feed(size_prefix(declared, 0) + HEADER + b"\x80")
    with pytest.raises(ProtocolError):
        decoder.next_frame()


@pytest.mark.parametrize("value", [
    Decimal("-12.345"), Decimal("1e-30"), Interval(year=1, nsec=5, adjust=2),
    dt.datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=dt.timezone.utc),
])
def test_valid_extension_values_survive_being_fed_one_byte_at_a_time(value: Any) -> None:
    data = frame_bytes(HEADER, pack({0x30: [value]}))
    outcome = run(Decoder(), [data[i:i + 1] for i in range(len(data))])
    assert outcome.error is None
    assert outcome.frames == [Frame(7, 0, 42, {0x30: [value]})]
