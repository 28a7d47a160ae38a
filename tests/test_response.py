"""Pure tests of what a decoded reply becomes: a ``Response``, or a ``DatabaseError``.

What they prove:

* ``Response`` is a read-only sequence over the body's DATA: ``len``,
  indexing, slicing, iteration, equality with a list (and with another
  Response); a body without DATA gives ``data is None`` and an empty sequence.
* SQL replies: ``rowcount``, ``affected_row_count`` and ``autoincrement_ids``
  come from SQL_INFO, ``metadata`` turns METADATA into column dicts, and
  PREPARE fields (``stmt_id``, ``params_count``, ``params``) are exposed.
* ``DatabaseError.from_server`` maps server error codes to their classes
  (and an unknown code to plain ``DatabaseError``) with ``.code``/``.message``.
* A reply decoded with ``use_list=False`` still has one item per tuple.
"""

from __future__ import annotations

import struct

import msgpack
import pytest

from tarantool_pool import errors
from tarantool_pool.protocol import Decoder, Frame
from tarantool_pool.response import Response


def response(body: dict[int, object], *, sync: int = 1, status: int = 0, schema_version: int = 80) -> Response:
    return Response(Frame(sync=sync, status=status, schema_version=schema_version, body=body))


ROWS = [[1, "Alice", True], [2, "Bob", None], [3, "Carol", False]]


# -- sequence behaviour --------------------------------------------------------------------

def test_response_is_a_sequence_of_the_data_rows() -> None:
    reply = response({0x30: ROWS})
    assert len(reply) == 3
    assert reply[0] == [1, "Alice", True]
    assert reply[-1] == [3, "Carol", False]
    assert reply[1:] == ROWS[1:]
    assert list(reply) == ROWS
    assert [row[1] for row in reply] == ["Alice", "Bob", "Carol"]
    assert reply.data == ROWS


def test_response_index_out_of_range_raises_index_error() -> None:
    with pytest.raises(IndexError):
        response({0x30: ROWS})[3]


def test_response_equals_a_list_or_tuple_of_the_same_rows() -> None:
    reply = response({0x30: ROWS})
    assert reply == ROWS
    assert reply == tuple(ROWS)
    assert reply != ROWS[:2]
    assert reply != [[1, "Alice", True]] + ROWS[1:2] + [[3, "Carol", True]]


def test_responses_compare_by_data() -> None:
    assert response({0x30: ROWS}, sync=1) == response({0x30: ROWS}, sync=2)
    assert response({0x30: ROWS}) != response({0x30: ROWS[:1]})


def test_response_is_unhashable_like_a_list() -> None:
    with pytest.raises(TypeError):
        hash(response({0x30: ROWS}))


@pytest.mark.parametrize("body", [{}, {0x42: {0: 1}}])
def test_body_without_data_gives_none_and_an_empty_sequence(body: dict[int, object]) -> None:
    reply = response(body)
    assert reply.data is None
    assert len(reply) == 0
    assert list(reply) == []
    assert reply == []
    with pytest.raises(IndexError):
        reply[0]


def test_empty_data_is_an_empty_list_not_none() -> None:
    reply = response({0x30: []})
    assert reply.data == []
    assert len(reply) == 0


def test_response_exposes_header_fields() -> None:
    reply = response({0x30: []}, sync=42, status=0, schema_version=91)
    assert (reply.sync, reply.code, reply.schema_version) == (42, 0, 91)
    assert (reply.return_code, reply.return_message) == (0, "")
    assert reply.body == {0x30: []}


def test_rowcount_of_a_select_is_the_number_of_rows() -> None:
    reply = response({0x30: ROWS})
    assert reply.rowcount == 3
    assert reply.affected_row_count is None
    assert reply.autoincrement_ids is None
    assert reply.metadata is None


def test_response_from_use_list_false_decoder_has_one_item_per_row() -> None:
    payload = msgpack.packb({0: 0, 1: 1, 5: 80}) + msgpack.packb({0x30: [[1, "a"], [2, "b"]]})
    decoder = Decoder(use_list=False)
    decoder.feed(b"\xce" + struct.pack(">I", len(payload)) + payload)
    frame = decoder.next_frame()
    assert frame is not None
    reply = Response(frame)
    assert len(reply) == 2
    assert reply[0] == (1, "a")


# -- SQL -----------------------------------------------------------------------------------

def test_sql_info_gives_rowcount_and_autoincrement_ids() -> None:
    reply = response({0x42: {0: 2, 1: [7, 8]}})
    assert reply.affected_row_count == 2
    assert reply.rowcount == 2
    assert reply.autoincrement_ids == [7, 8]
    assert reply.sql_info == {0: 2, 1: [7, 8]}


def test_sql_info_without_generated_ids() -> None:
    reply = response({0x42: {0: 1}})  # CREATE TABLE
    assert (reply.affected_row_count, reply.rowcount, reply.autoincrement_ids) == (1, 1, None)


def test_sql_info_with_zero_rows_is_zero_not_the_row_count() -> None:
    reply = response({0x42: {0: 0}})
    assert reply.affected_row_count == 0
    assert reply.rowcount == 0


def test_metadata_becomes_column_dicts() -> None:
    reply = response({
        0x32: [{0: "ID", 1: "integer"},
               {0: "NM", 1: "string", 2: "unicode_ci", 3: True, 4: False, 5: None}],
        0x30: [[1, "a"], [2, "b"]],
    })
    assert reply.metadata == [
        {"name": "ID", "type": "integer"},
        {"name": "NM", "type": "string", "collation": "unicode_ci", "is_nullable": True,
         "is_autoincrement": False, "span": None},
    ]
    assert reply.rowcount == 2
    assert reply == [[1, "a"], [2, "b"]]


def test_prepare_reply_exposes_statement_and_parameters() -> None:
    reply = response({0x43: 3_000_000_001, 0x34: 2, 0x33: [{0: "?", 1: "ANY"}, {0: ":nm", 1: "ANY"}]})
    assert reply.stmt_id == 3_000_000_001
    assert reply.params_count == 2
    assert reply.params == [{"name": "?", "type": "ANY"}, {"name": ":nm", "type": "ANY"}]


# -- errors from the server ----------------------------------------------------------------

@pytest.mark.parametrize("code, error_class", [
    (3, errors.DuplicateKeyError),
    (7, errors.ReadOnlyError),
    (33, errors.NoSuchProcedureError),
    (36, errors.NoSuchSpaceError),
    (42, errors.AccessDeniedError),
    (45, errors.NoSuchUserError),
    (47, errors.PasswordMismatchError),
    (116, errors.LoadingError),
])
def test_from_server_maps_codes_to_classes(code: int, error_class: type[errors.DatabaseError]) -> None:
    error = errors.DatabaseError.from_server(code, f"message {code}", extra_info=["stack"])
    assert type(error) is error_class
    assert (error.code, error.message, error.extra_info) == (code, f"message {code}", ["stack"])
    assert str(error) == f"({code}) message {code}"


@pytest.mark.parametrize("code", [45, 47])
def test_auth_failures_are_authentication_errors(code: int) -> None:
    error = errors.DatabaseError.from_server(code, "refused")
    assert isinstance(error, errors.AuthenticationError)
    assert isinstance(error, errors.DatabaseError)


@pytest.mark.parametrize("code", [0, 9, 1234, 32767])
def test_unknown_code_gives_plain_database_error(code: int) -> None:
    error = errors.DatabaseError.from_server(code, "user error")
    assert type(error) is errors.DatabaseError
    assert (error.code, error.message) == (code, "user error")


def test_read_only_error_is_catchable_by_its_dbapi_category() -> None:
    with pytest.raises(errors.OperationalError):
        raise errors.DatabaseError.from_server(7, "Can't modify data because this instance is in read-only mode.")
