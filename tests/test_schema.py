"""Pure tests of ``tarantool_pool.schema.Schema`` built from hand-made system-view rows.

What they prove:

* ``Schema.from_rows`` reads ``_vspace`` rows and ``_vindex`` rows in the
  new layout (map parts and compact ``[field_no, type]`` parts) and in the
  old 1.6 layout (unique flag, part count, flattened parts), and resolves
  space, index and field names to their numbers.
* Unknown space, index and field names raise ``SchemaError`` naming the
  missing name.
* Rows as a non-default Decoder delivers them still resolve: ``encoding=None``
  (bytes everywhere, map keys included) and ``use_list=False`` (tuples) do.

Row layouts: shared/reference/iproto.md section 10.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest

from tarantool_pool.errors import SchemaError
from tarantool_pool.protocol import Decoder
from tarantool_pool.schema import IndexInfo, Schema

CUSTOMERS = [512, 1, "customers", "memtx", 0, {},
             [{"name": "id", "type": "unsigned"},
              {"name": "name", "type": "string"},
              {"name": "age", "type": "number", "is_nullable": True}]]
ORDERS = [513, 1, "orders", "vinyl", 0, {"group_id": 1}, []]
LEGACY = [514, 1, "legacy", "memtx", 0, "temporary"]  # 1.6: flags is a string, no format

SPACE_ROWS = [CUSTOMERS, ORDERS, LEGACY]
INDEX_ROWS = [
    # new layout, compact parts
    [512, 0, "primary", "tree", {"unique": True}, [[0, "unsigned"]]],
    # new layout, map parts (with a collation id, as the server sends them)
    [512, 1, "by_name", "tree", {"unique": False}, [{"field": 1, "type": "string", "collation": 2},
                                                    {"field": 2, "type": "number", "is_nullable": True}]],
    [513, 0, "pk", "hash", {"unique": True}, [[0, "unsigned"]]],
    # old 1.6 layout: unique 1, two parts flattened
    [514, 0, "pk", "TREE", 1, 2, 0, "NUM", 1, "STR"],
    [514, 3, "by_x", "HASH", 0, 1, 4, "NUM"],
]


@pytest.fixture
def schema() -> Schema:
    return Schema.from_rows(SPACE_ROWS, INDEX_ROWS, version=84)


def test_schema_keeps_its_version(schema: Schema) -> None:
    assert schema.version == 84


@pytest.mark.parametrize("name, space_id", [("customers", 512), ("orders", 513), ("legacy", 514)])
def test_space_names_resolve_to_ids(schema: Schema, name: str, space_id: int) -> None:
    assert schema.space_id(name) == space_id
    assert schema.space(name).space_id == space_id
    assert schema.space(space_id).name == name


def test_space_info_carries_engine_and_format(schema: Schema) -> None:
    info = schema.space("customers")
    assert info.engine == "memtx"
    assert [entry["name"] for entry in info.format] == ["id", "name", "age"]
    assert schema.space("orders").engine == "vinyl"


@pytest.mark.parametrize("space, index, index_id", [
    ("customers", "primary", 0), ("customers", "by_name", 1), ("orders", "pk", 0),
    ("legacy", "pk", 0), ("legacy", "by_x", 3), (512, "by_name", 1),
])
def test_index_names_resolve_to_ids(schema: Schema, space: str | int, index: str, index_id: int) -> None:
    assert schema.index_id(space, index) == index_id


def test_index_numbers_pass_through(schema: Schema) -> None:
    assert schema.index_id("customers", 7) == 7


def test_new_layout_compact_parts(schema: Schema) -> None:
    assert schema.space("customers").indexes["primary"] == IndexInfo(512, 0, "primary", "tree", True,
                                                                     ((0, "unsigned"),))


def test_new_layout_map_parts(schema: Schema) -> None:
    index = schema.space("customers").indexes["by_name"]
    assert index.parts == ((1, "string"), (2, "number"))
    assert index.unique is False
    assert schema.space("customers").indexes[1] is index


def test_old_layout_flattened_parts(schema: Schema) -> None:
    pk = schema.space("legacy").indexes["pk"]
    assert (pk.type, pk.unique, pk.parts) == ("TREE", True, ((0, "NUM"), (1, "STR")))
    by_x = schema.space("legacy").indexes[3]
    assert (by_x.name, by_x.unique, by_x.parts) == ("by_x", False, ((4, "NUM"),))


@pytest.mark.parametrize("field, number", [("id", 0), ("name", 1), ("age", 2)])
def test_field_names_resolve_to_zero_based_numbers(schema: Schema, field: str, number: int) -> None:
    assert schema.field_number("customers", field) == number
    assert schema.field_number(512, field) == number


def test_contains_knows_names_and_ids(schema: Schema) -> None:
    assert "customers" in schema and 513 in schema
    assert "nope" not in schema and 9999 not in schema


def test_unknown_space_id_still_works_for_view_rights(schema: Schema) -> None:
    assert schema.space_id(9999) == 9999
    assert schema.space(9999).space_id == 9999


def test_unknown_space_name_raises_schema_error_naming_it(schema: Schema) -> None:
    with pytest.raises(SchemaError, match="no_such_space"):
        schema.space("no_such_space")
    with pytest.raises(SchemaError, match="no_such_space"):
        schema.space_id("no_such_space")
    with pytest.raises(SchemaError, match="no_such_space"):
        schema.index_id("no_such_space", "primary")


def test_unknown_index_name_raises_schema_error_naming_it(schema: Schema) -> None:
    with pytest.raises(SchemaError, match="no_such_index") as caught:
        schema.index_id("customers", "no_such_index")
    assert "customers" in str(caught.value)


def test_index_of_another_space_is_not_found(schema: Schema) -> None:
    with pytest.raises(SchemaError, match="by_name"):
        schema.index_id("orders", "by_name")


def test_unknown_field_name_raises_schema_error_naming_it(schema: Schema) -> None:
    with pytest.raises(SchemaError, match="no_such_field"):
        schema.field_number("customers", "no_such_field")


def test_space_without_format_has_no_field_names(schema: Schema) -> None:
    for space in ("orders", "legacy"):
        with pytest.raises(SchemaError, match="'id'"):
            schema.field_number(space, "id")


def test_empty_schema_knows_no_space_names() -> None:
    empty = Schema.from_rows([], [], version=1)
    with pytest.raises(SchemaError, match="customers"):
        empty.space_id("customers")


# -- rows as a non-default Decoder delivers them -----------------------------------------------

def decoded_rows(decoder: Decoder, rows: list[list[object]]) -> Any:
    """Send rows through the real Decoder, as Connection does when it loads the schema."""
    payload = msgpack.packb({0: 0, 1: 1, 5: 84}) + msgpack.packb({0x30: rows})
    decoder.feed(b"\xce" + struct.pack(">I", len(payload)) + payload)
    frame = decoder.next_frame()
    assert frame is not None
    return frame.body[0x30]


def test_rows_from_default_decoder_resolve_field_names() -> None:
    schema = Schema.from_rows(decoded_rows(Decoder(), SPACE_ROWS), decoded_rows(Decoder(), INDEX_ROWS), 84)
    assert schema.field_number("customers", "age") == 2


def test_rows_from_use_list_false_decoder_resolve_field_names() -> None:
    spaces = decoded_rows(Decoder(use_list=False), SPACE_ROWS)
    indexes = decoded_rows(Decoder(use_list=False), INDEX_ROWS)
    schema = Schema.from_rows(spaces, indexes, 84)
    assert schema.field_number("customers", "age") == 2


def test_rows_from_raw_decoder_resolve_names_fields_and_index_parts() -> None:
    # Connection(encoding=None): every str in the rows, map keys included, arrives as bytes
    spaces = decoded_rows(Decoder(encoding=None), SPACE_ROWS)
    indexes = decoded_rows(Decoder(encoding=None), INDEX_ROWS)
    schema = Schema.from_rows(spaces, indexes, 84)
    assert schema.space_id("customers") == 512
    assert schema.index_id("customers", "by_name") == 1
    assert schema.field_number("customers", "age") == 2
    by_name = schema.space("customers").indexes["by_name"]
    assert (by_name.unique, by_name.parts) == (False, ((1, "string"), (2, "number")))
    assert schema.space("customers").indexes["primary"].unique is True
