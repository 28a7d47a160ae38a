"""Integration tests of tarantool_pool.Connection against the real replica set.

Every request type, every error class the server maps to, authentication,
schema reloads after DDL, str/bytes handling and big or non-ASCII values, all
through one :class:`~tarantool_pool.Connection` talking to ``inst1`` (the
read-write master) unless a test says otherwise.  What the server did is
checked through the harness's own control channel (``cluster.admin``), never
only through the client under test.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import traceback
from typing import Any

import msgpack
import pytest
from support import connect

from tarantool_pool import (
    AccessDeniedError,
    AuthenticationError,
    Connection,
    DatabaseError,
    DuplicateKeyError,
    EncodingError,
    ErrorInfo,
    NoSuchProcedureError,
    NoSuchSpaceError,
    NoSuchUserError,
    ProcLuaError,
    ReadOnlyError,
    SchemaError,
)
from tarantool_pool import protocol as p

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leaked_readers")]

ER_FIELD_TYPE = 23
ER_WRONG_QUERY_ID = 211

# test_int primary keys private to this module (other modules use other ranges).
_keys = itertools.count(random.SystemRandom().randrange(10**12, 2 * 10**12, 10**7))
_names = itertools.count(1)


def new_key() -> int:
    return next(_keys)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_names)}_{random.SystemRandom().randrange(10**6)}"


def admin_tuple(cluster: Any, key: int, space: str = "test_int", name: str = "inst1") -> Any:
    """The tuple as the server has it (None when absent), read through the control channel."""
    return cluster.admin(name, f"local t = box.space.{space}:get({key}) return t and t:totable() or box.NULL")


def decode_requests(data: bytes) -> list[tuple[int, Any]]:
    """(request type, body) of every framed request in ``data``."""
    requests = []
    pos = 0
    while pos < len(data):
        assert data[pos] == 0xCE, "requests are framed with a uint32 size"
        size = int.from_bytes(data[pos + 1:pos + 5], "big")
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(data[pos + 5:pos + 5 + size])
        items = list(unpacker)
        requests.append((items[0][p.KEY_CODE], items[1] if len(items) > 1 else None))
        pos += 5 + size
    return requests


class SentRequests:
    """Records every request written to a connection's current link."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, connection: Connection) -> None:
        link = connection._link
        assert link is not None and link.alive
        original = link.send
        self.requests: list[tuple[int, Any]] = []

        def spy(data: bytes) -> None:
            self.requests.extend(decode_requests(data))
            original(data)

        monkeypatch.setattr(link, "send", spy)

    @property
    def codes(self) -> list[int]:
        return [code for code, _ in self.requests]

    def only_schema_reads(self) -> bool:
        """True when nothing but the schema's own SELECTs of _vspace/_vindex went out."""
        return all(code == p.SELECT and body[p.KEY_SPACE_ID] in (281, 289) for code, body in self.requests)


# -- every request type ------------------------------------------------------------------

def test_ping_returns_round_trip_seconds_or_success(conn: Connection) -> None:
    seconds = conn.ping()
    assert isinstance(seconds, float) and 0 <= seconds < 5
    assert conn.ping(notime=True) == "Success"


def test_select_by_primary_key_returns_only_that_tuple(cluster: Any, conn: Connection) -> None:
    key = new_key()
    cluster.admin("inst1", f"box.space.test_int:insert{{{key}, 'one', 'v'}}")
    cluster.admin("inst1", f"box.space.test_int:insert{{{key + 1}, 'two'}}")
    assert conn.select("test_int", key).data == [[key, "one", "v"]]
    assert conn.select("test_int", [key + 1]).data == [[key + 1, "two"]]
    assert conn.select("test_int", new_key() + 1000).data == []


def test_select_by_secondary_index_name_finds_every_match(cluster: Any, conn: Connection) -> None:
    name = unique_name("by-name")
    keys = [new_key() for _ in range(3)]
    for key in keys[:2]:
        cluster.admin("inst1", f"box.space.test_int:insert{{{key}, '{name}'}}")
    cluster.admin("inst1", f"box.space.test_int:insert{{{keys[2]}, '{name}-other'}}")
    rows = conn.select("test_int", name, index="by_name").data
    assert sorted(rows) == [[keys[0], name], [keys[1], name]]


def test_select_offset_limit_and_iterator_names(cluster: Any, conn: Connection) -> None:
    keys = [new_key() for _ in range(10)]
    assert keys == list(range(keys[0], keys[0] + 10))
    cluster.admin("inst1", f"for i = {keys[0]}, {keys[-1]} do box.space.test_int:insert{{i, 'range'}} end")
    first = keys[0]
    ge = conn.select("test_int", first + 2, iterator="GE", offset=1, limit=3)
    assert [row[0] for row in ge] == [first + 3, first + 4, first + 5]
    lt = conn.select("test_int", first + 5, iterator="lt", limit=2)  # names are case-insensitive
    assert [row[0] for row in lt] == [first + 4, first + 3]
    gt_by_number = conn.select("test_int", first + 8, iterator=p.ITERATORS["GT"], limit=5)
    assert [row[0] for row in gt_by_number][:1] == [first + 9]
    assert conn.select("test_int", first, iterator="GE", limit=0).data == []


def test_insert_stores_the_tuple_and_returns_it(cluster: Any, conn: Connection) -> None:
    key = new_key()
    response = conn.insert("test_int", [key, "inserted", {"nested": [1, 2]}])
    assert response.data == [[key, "inserted", {"nested": [1, 2]}]]
    assert admin_tuple(cluster, key) == [key, "inserted", {"nested": [1, 2]}]


def test_replace_overwrites_an_existing_tuple(cluster: Any, conn: Connection) -> None:
    key = new_key()
    conn.replace("test_int", (key, "first"))
    response = conn.replace("test_int", (key, "second", 2))
    assert response.data == [[key, "second", 2]]
    assert admin_tuple(cluster, key) == [key, "second", 2]


def test_update_by_field_number_and_by_field_name(cluster: Any, conn: Connection) -> None:
    key = new_key()
    cluster.admin("inst1", f"box.space.test_int:insert{{{key}, 'before', 10}}")
    by_number = conn.update("test_int", key, [("=", 1, "after")])  # 0-based: field 1 is 'name'
    assert by_number.data == [[key, "after", 10]]
    by_name = conn.update("test_int", key, [("+", "value", 5), ("=", "name", "renamed")])
    assert by_name.data == [[key, "renamed", 15]]
    assert admin_tuple(cluster, key) == [key, "renamed", 15]
    assert conn.update("test_int", new_key() + 1000, [("=", "name", "x")]).data == []


def test_upsert_inserts_then_applies_its_operations(cluster: Any, conn: Connection) -> None:
    key = new_key()
    assert conn.upsert("test_int", [key, "upserted", 1], [("+", "value", 5)]).data == []
    assert admin_tuple(cluster, key) == [key, "upserted", 1]
    conn.upsert("test_int", [key, "ignored", 1], [("+", 2, 5)])
    conn.upsert("test_int", [key, "ignored", 1], [("+", "value", 10)])
    assert admin_tuple(cluster, key) == [key, "upserted", 16]


def test_delete_returns_the_removed_tuple(cluster: Any, conn: Connection) -> None:
    key = new_key()
    cluster.admin("inst1", f"box.space.test_int:insert{{{key}, 'doomed'}}")
    assert conn.delete("test_int", key).data == [[key, "doomed"]]
    assert admin_tuple(cluster, key) is None
    assert conn.delete("test_int", key).data == []


def test_call_return_shapes(conn: Connection) -> None:
    assert conn.call("echo", 1, "two", [3]).data == [1, "two", [3]]
    assert conn.call("echo").data == []
    assert conn.call("echo", None).data == [None]
    assert conn.call("echo", {"a": 1, "b": [1, 2]}).data == [{"a": 1, "b": [1, 2]}]
    whoami = conn.call("whoami").data
    assert len(whoami) == 1 and whoami[0]["name"] == "inst1" and whoami[0]["ro"] is False
    assert conn.call("sleep", 0).data == [0]


def test_call_with_one_list_argument_passes_it_as_the_argument_list(conn: Connection) -> None:
    assert conn.call("echo", [1, 2, 3]).data == [1, 2, 3]
    assert conn.call("echo", (4, 5)).data == [4, 5]
    assert conn.call("echo", [[1, 2, 3]]).data == [[1, 2, 3]]  # a list as the only argument


def test_eval_passes_arguments_and_returns_every_value(conn: Connection) -> None:
    assert conn.eval("return select('#', ...), ...", 1, "a", [2]).data == [3, 1, "a", [2]]
    assert conn.eval("return nil").data == [None]
    assert conn.eval("return").data == []
    assert conn.eval("return {x = {1, 2}}, 'tail'").data == [{"x": [1, 2]}, "tail"]
    assert conn.eval("return box.session.user()").data == ["test"]


def test_execute_sql_ddl_dml_and_select_with_positional_and_named_params(cluster: Any, conn: Connection) -> None:
    table = unique_name("T_SQL").upper()
    created = conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, name STRING)")
    try:
        assert created.affected_row_count == 1
        assert cluster.admin("inst1", f"box.space.{table} ~= nil") is True
        inserted = conn.execute(f"INSERT INTO {table} (name) VALUES (?), (?)", ["alpha", "beta"])
        assert inserted.affected_row_count == 2
        assert inserted.autoincrement_ids == [1, 2]
        assert inserted.rowcount == 2
        named = conn.execute(f"INSERT INTO {table} (id, name) VALUES (:id, :name)", {"id": 10, "name": "gamma"})
        assert named.affected_row_count == 1 and named.autoincrement_ids is None
        rows = conn.execute(f"SELECT id, name AS nm FROM {table} WHERE id >= ? ORDER BY id", [2])
        assert rows.data == [[2, "beta"], [10, "gamma"]]
        assert rows.metadata == [{"name": "ID", "type": "integer"}, {"name": "NM", "type": "string"}]
        assert rows.affected_row_count is None
        by_name = conn.execute(f"SELECT name FROM {table} WHERE name = :n", {":n": "alpha"})
        assert by_name.data == [["alpha"]]
    finally:
        conn.execute(f"DROP TABLE {table}")
    assert cluster.admin("inst1", f"box.space.{table} == nil") is True


def test_prepare_execute_by_statement_id_and_unprepare(conn: Connection) -> None:
    key = new_key()
    conn.insert("test_int", [key, "prepared"])
    prepared = conn.prepare('SELECT "name" FROM "test_int" WHERE "id" = ?')
    assert isinstance(prepared.stmt_id, int)
    assert prepared.params_count == 1
    assert conn.execute(prepared.stmt_id, [key]).data == [["prepared"]]
    assert conn.execute(prepared.stmt_id, [key + 10**6]).data == []
    conn.unprepare(prepared.stmt_id)
    with pytest.raises(DatabaseError) as caught:
        conn.execute(prepared.stmt_id, [key])
    assert caught.value.code == ER_WRONG_QUERY_ID


def test_space_handle_runs_requests_on_its_space(cluster: Any, conn: Connection) -> None:
    key = new_key()
    space = conn.space("test_int")
    space.insert([key, "handle"])
    assert space.select(key).data == [[key, "handle"]]
    assert space.update(key, [("=", "value", 1)]).data == [[key, "handle", 1]]
    assert space.delete(key).data == [[key, "handle", 1]]
    assert admin_tuple(cluster, key) is None


def test_on_push_receives_every_push_in_order_before_the_result(conn: Connection) -> None:
    pushes: list[Any] = []
    contexts: list[Any] = []
    context = object()

    def on_push(data: Any, ctx: Any) -> None:
        pushes.append(data)
        contexts.append(ctx)

    response = conn.call("push", 3, on_push=on_push, on_push_ctx=context)
    assert pushes == [[1], [2], [3]]  # like tarantool-python: the push's DATA list
    assert all(ctx is context for ctx in contexts)
    assert response.data == [3]
    assert conn.call("push", 2).data == [2]  # without a callback pushes are ignored


# -- error classes ----------------------------------------------------------------------

def test_duplicate_key_error_carries_the_decoded_error_stack(conn: Connection) -> None:
    key = new_key()
    conn.insert("test_int", [key, "original"])
    with pytest.raises(DuplicateKeyError) as caught:
        conn.insert("test_int", [key, "duplicate"])
    error = caught.value
    assert error.code == 3
    assert "Duplicate key exists in unique index 'primary' in space 'test_int'" in error.message
    assert isinstance(error.extra_info, list) and error.extra_info
    top = error.extra_info[0]
    assert isinstance(top, ErrorInfo)
    assert top.code == 3 and top.type == "ClientError" and top.message == error.message
    assert conn.select("test_int", key).data == [[key, "original"]]


def test_write_on_a_replica_raises_read_only_error(cluster: Any) -> None:
    key = new_key()
    with connect(cluster, "inst2") as replica:
        with pytest.raises(ReadOnlyError) as caught:
            replica.insert("test_int", [key, "nope"])
        assert caught.value.code == 7
        assert "read-only" in caught.value.message
    assert admin_tuple(cluster, key, name="inst2") is None


def test_unknown_function_raises_no_such_procedure_error(conn: Connection) -> None:
    with pytest.raises(NoSuchProcedureError) as caught:
        conn.call("no_such_function_anywhere")
    assert caught.value.code == 33
    assert caught.value.message == "Procedure 'no_such_function_anywhere' is not defined"


def test_unknown_space_id_raises_no_such_space_error(conn: Connection) -> None:
    with pytest.raises(NoSuchSpaceError) as caught:
        conn.select(99999)
    assert caught.value.code == 36
    assert caught.value.message == "Space '99999' does not exist"


def test_user_without_read_rights_gets_access_denied(cluster: Any) -> None:
    space_id = cluster.admin("inst1", "box.space.test_int.id")
    with connect(cluster, user="limited", password="limited-password") as limited:
        with pytest.raises(AccessDeniedError) as caught:
            limited.select(space_id)
        assert caught.value.code == 42
        assert "test_int" in caught.value.message and "limited" in caught.value.message
        assert caught.value.extra_info[0].type == "AccessDeniedError"


def test_guest_gets_access_denied_for_eval(cluster: Any) -> None:
    with connect(cluster, user=None, password=None) as guest:
        assert guest.ping(notime=True) == "Success"
        with pytest.raises(AccessDeniedError) as caught:
            guest.eval("return 1")
        assert "guest" in caught.value.message


def test_lua_error_raises_proc_lua_error_with_its_message(conn: Connection) -> None:
    with pytest.raises(ProcLuaError) as caught:
        conn.call("raise", "boom-from-lua")
    error = caught.value
    assert error.code == 32
    assert "boom-from-lua" in error.message
    assert error.extra_info[0].type == "LuajitError"
    assert "boom-from-lua" in error.extra_info[0].message


def test_user_error_code_passes_through(conn: Connection) -> None:
    with pytest.raises(DatabaseError) as caught:
        conn.call("raise_code", 4321, "custom failure")
    error = caught.value
    assert type(error) is DatabaseError  # no class is registered for a user's code
    assert error.code == 4321
    assert error.message == "custom failure"
    assert str(error) == "(4321) custom failure"
    assert error.extra_info[0].code == 4321
    assert conn.ping(notime=True) == "Success"


@pytest.mark.parametrize("request_by_name", [
    pytest.param(lambda c: c.select("no_such_space_here"), id="space"),
    pytest.param(lambda c: c.insert("no_such_space_here", [1, "x"]), id="space-insert"),
    pytest.param(lambda c: c.select("test_int", 1, index="no_such_index"), id="index"),
    pytest.param(lambda c: c.delete("test_int", 1, index="no_such_index"), id="index-delete"),
    pytest.param(lambda c: c.update("test_int", 1, [("=", "no_such_field", 1)]), id="field"),
    pytest.param(lambda c: c.upsert("test_int", [1, "x"], [("=", "no_such_field", 1)]), id="field-upsert"),
])
def test_unknown_names_raise_schema_error_without_sending_the_request(
        conn: Connection, monkeypatch: pytest.MonkeyPatch, request_by_name: Any) -> None:
    conn.select("test_int", 0)  # the schema is loaded
    sent = SentRequests(monkeypatch, conn)
    with pytest.raises(SchemaError) as caught:
        request_by_name(conn)
    assert "no_such" in str(caught.value)
    # At most the one schema reload a new name deserves; never the request itself.
    assert sent.only_schema_reads(), sent.codes
    assert len(sent.requests) <= 2
    assert conn.ping(notime=True) == "Success"


@pytest.mark.parametrize("bad_request, error_class", [
    pytest.param(lambda c: c.select("test_int", limit=-1), ValueError, id="negative-limit"),
    pytest.param(lambda c: c.select("test_int", offset=-5), ValueError, id="negative-offset"),
    pytest.param(lambda c: c.select("test_int", 1, iterator="SIDEWAYS"), ValueError, id="unknown-iterator"),
    pytest.param(lambda c: c.select("test_int", {"id": 1}), ValueError, id="dict-key"),
    pytest.param(lambda c: c.update("test_int", 1, [("=",)]), ValueError, id="short-operation"),
    pytest.param(lambda c: c.insert("test_int", "not a tuple"), ValueError, id="string-tuple"),
    pytest.param(lambda c: c.insert("test_int", [1, "x", object()]), EncodingError, id="unpackable-insert"),
    pytest.param(lambda c: c.call("echo", object()), EncodingError, id="unpackable-call"),
    pytest.param(lambda c: c.select(512, [object()]), EncodingError, id="unpackable-key"),
    pytest.param(lambda c: c.execute("SELECT ?", {1: "x"}), TypeError, id="bad-sql-param-name"),
    pytest.param(lambda c: c.ping(timeout=-1), ValueError, id="negative-timeout"),
])
def test_bad_arguments_raise_before_anything_is_sent(
        conn: Connection, monkeypatch: pytest.MonkeyPatch, bad_request: Any, error_class: type) -> None:
    conn.select("test_int", 0)  # connected, schema loaded
    sent = SentRequests(monkeypatch, conn)
    with pytest.raises(error_class):
        bad_request(conn)
    assert sent.requests == []
    assert conn.call("echo", "still fine").data == ["still fine"]


def test_encoding_error_is_an_interface_error_and_a_type_error() -> None:
    from tarantool_pool import InterfaceError
    assert issubclass(EncodingError, InterfaceError) and issubclass(EncodingError, TypeError)


# -- authentication ----------------------------------------------------------------------

def test_authentication_succeeds_as_the_configured_user(cluster: Any) -> None:
    with connect(cluster) as authenticated:
        assert authenticated.call("box.session.user").data == ["test"]
    with connect(cluster, user="limited", password="limited-password") as limited:
        assert limited.ping(notime=True) == "Success"


def test_wrong_password_raises_the_servers_message_and_never_the_password(cluster: Any) -> None:
    secret = "Wr0ng-S3cret-p4ssw0rd"
    with pytest.raises(AuthenticationError) as caught:
        connect(cluster, password=secret)
    error = caught.value
    assert error.code == 47
    assert error.message == "Incorrect password supplied for user 'test'"
    rendered = [str(error), repr(error), repr(error.args), error.message,
                repr(error.extra_info),
                "".join(traceback.format_exception(type(error), error, error.__traceback__))]
    for text in rendered:
        assert secret not in text
    assert "Incorrect password supplied for user 'test'" in str(error)


def test_wrong_password_on_a_lazy_connection_fails_its_first_request(cluster: Any) -> None:
    secret = "another-wr0ng-secret"
    lazy = connect(cluster, password=secret, connect_now=False, reconnect_max_attempts=0)
    try:
        with pytest.raises(AuthenticationError) as caught:
            lazy.ping()
        assert secret not in str(caught.value) and secret not in repr(caught.value.args)
    finally:
        lazy.close()


def test_unknown_user_raises_no_such_user_error(cluster: Any) -> None:
    with pytest.raises(NoSuchUserError) as caught:
        connect(cluster, user="nobody_at_all", password="whatever-pw")
    assert isinstance(caught.value, AuthenticationError)
    assert caught.value.code == 45
    assert caught.value.message == "User 'nobody_at_all' is not found"
    assert "whatever-pw" not in repr(caught.value.args)


# -- schema reload after DDL ------------------------------------------------------------

def test_a_space_created_after_the_schema_was_loaded_is_usable_by_name_at_once(
        cluster: Any, conn: Connection) -> None:
    conn.select("test_int", 0)  # the schema is loaded now
    name = unique_name("created_later")
    conn.eval("local s = box.schema.space.create(..., {format = {{name = 'id', type = 'unsigned'},"
              " {name = 'label', type = 'string'}}}) s:create_index('pk')", name)
    try:
        assert conn.insert(name, [1, "first"]).data == [[1, "first"]]
        assert conn.update(name, 1, [("=", "label", "changed")]).data == [[1, "changed"]]
        assert conn.select(name, 1, index="pk").data == [[1, "changed"]]
        assert admin_tuple(cluster, 1, space=name) == [1, "changed"]
    finally:
        cluster.admin("inst1", f"box.space.{name}:drop()")


def test_a_table_created_by_sql_is_usable_by_name_at_once(conn: Connection) -> None:
    conn.select("test_int", 0)
    table = unique_name("T_LATER").upper()
    conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v STRING)")
    try:
        conn.insert(table, [7, "seven"])
        assert conn.select(table, 7).data == [[7, "seven"]]
        assert conn.update(table, 7, [("=", "V", "SEVEN")]).data == [[7, "SEVEN"]]
    finally:
        conn.execute(f"DROP TABLE {table}")


def create_space(cluster: Any, name: str, fields: list[str], space_id: int | None = None) -> int:
    """Create a space (fields of type any, the first unsigned) with index 'pk'; return its id."""
    options: dict[str, Any] = {"format": [{"name": field, "type": "unsigned" if n == 0 else "any",
                                           "is_nullable": n > 0} for n, field in enumerate(fields)]}
    if space_id is not None:
        options["id"] = space_id
    lua = (f"local s = box.schema.space.create('{name}', require('json').decode([[{json.dumps(options)}]])) "
           "s:create_index('pk') return s.id")
    return int(cluster.admin("inst1", lua))


def test_a_space_recreated_with_a_new_id_is_used_after_one_resend(
        cluster: Any, conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique_name("recreated")
    old_id = create_space(cluster, name, ["id", "a"])
    try:
        conn.insert(name, [1, "old"])  # the schema now maps the name to old_id
        assert conn._schema is not None and conn._schema.space_id(name) == old_id
        cluster.admin("inst1", f"box.space.{name}:drop()")
        new_id = create_space(cluster, name, ["id", "b"], space_id=old_id + 1000)
        sent = SentRequests(monkeypatch, conn)
        assert conn.insert(name, [2, "new"]).data == [[2, "new"]]
        assert conn.update(name, 2, [("=", "b", "by new field")]).data == [[2, "by new field"]]
        assert cluster.admin("inst1", f"box.space.{name}:select{{}}") == [[2, "by new field"]]
        inserts = [body[p.KEY_SPACE_ID] for code, body in sent.requests if code == p.INSERT]
        assert inserts == [old_id, new_id]  # stale id answered "wrong schema version", re-sent once
    finally:
        cluster.admin("inst1", f"if box.space.{name} then box.space.{name}:drop() end")


def test_a_space_recreated_with_the_same_id_but_other_fields_is_not_mistaken(
        cluster: Any, conn: Connection) -> None:
    name = unique_name("refielded")
    old_id = create_space(cluster, name, ["id", "x", "y"])
    try:
        conn.insert(name, [1, "x1", "y1"])
        cluster.admin("inst1", f"box.space.{name}:drop()")
        create_space(cluster, name, ["id", "y", "x"], space_id=old_id)
        cluster.admin("inst1", f"box.space.{name}:insert{{1, 'new-y', 'new-x'}}")
        # 'y' is field 2 in the cached schema but field 1 now: the stale request must not land.
        assert conn.update(name, 1, [("=", "y", "Y")]).data == [[1, "Y", "new-x"]]
    finally:
        cluster.admin("inst1", f"if box.space.{name} then box.space.{name}:drop() end")


# -- values: str/bytes, size, unicode -------------------------------------------------

def test_str_round_trips_as_str_and_bytes_in_an_any_field_as_bytes(cluster: Any, conn: Connection) -> None:
    key = new_key()
    conn.insert("test_int", [key, "text", b"\x00\xffbinary"])
    row = conn.select("test_int", key).data[0]
    assert row == [key, "text", b"\x00\xffbinary"]
    assert type(row[1]) is str and type(row[2]) is bytes
    # The stored tuple's last field is msgpack bin (0xc4, length 8), not a string.
    tail = cluster.admin("inst1", f"local raw = require('msgpack').encode(box.space.test_int:get({key})) "
                                  "return {raw:byte(#raw - 9, #raw - 8)}")
    assert tail == [0xC4, 8]


def test_bytes_into_a_string_field_are_rejected_by_the_server(cluster: Any, conn: Connection) -> None:
    key = new_key()
    with pytest.raises(DatabaseError) as caught:
        conn.insert("test_int", [key, b"bytes are not a string"])
    assert caught.value.code == ER_FIELD_TYPE
    assert admin_tuple(cluster, key) is None


def test_encoding_none_gives_bytes_for_strings(cluster: Any) -> None:
    key = new_key()
    cluster.admin("inst1", f"box.space.test_int:insert{{{key}, 'as-bytes', 'v'}}")
    with connect(cluster, encoding=None) as raw:
        assert raw.select("test_int", key).data == [[key, b"as-bytes", b"v"]]
        assert raw.call("echo", "abc").data == [b"abc"]
        assert raw.update("test_int", key, [("=", "value", "by name")]).data == [[key, b"as-bytes", b"by name"]]
        with pytest.raises(DuplicateKeyError) as caught:
            raw.insert("test_int", [key, "dup"])
        assert isinstance(caught.value.message, str) and "Duplicate key" in caught.value.message


def test_a_one_megabyte_tuple_round_trips(cluster: Any, conn: Connection) -> None:
    key = new_key()
    # memtx_max_tuple_size is 1 MiB (1,048,576 bytes, header included): a 1,000,000-byte field fits.
    text = "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=1_000_000))
    assert conn.insert("test_int", [key, text]).data == [[key, text]]
    assert conn.select("test_int", key).data == [[key, text]]
    assert cluster.admin("inst1", f"#box.space.test_int:get({key})[2]") == 1_000_000
    big = text * 4  # a call result is no tuple: 4 MB, many times the client's receive buffer
    assert conn.call("echo", big, text).data == [big, text]


def test_unicode_round_trips(cluster: Any, conn: Connection) -> None:
    key = new_key()
    text = "emoji 😀🎉 CJK 漢字かな한국어 RTL שלום combining é"
    conn.insert("test_int", [key, text, {"ключ": "значение 🚀"}])
    assert conn.select("test_int", key).data == [[key, text, {"ключ": "значение 🚀"}]]
    assert cluster.admin("inst1", f"box.space.test_int:get({key})[2]") == text
    assert conn.select("test_int", text, index="by_name").data[0][0] == key
    assert conn.call("echo", text).data == [text]


def test_non_utf8_lua_string_arrives_losslessly_and_does_not_break_the_shared_connection(
        conn: Connection) -> None:
    # Lua strings are bytes; 2.6 sends them as msgpack str even when they are not UTF-8.
    waiter_result: list[Any] = []
    waiter = threading.Thread(target=lambda: waiter_result.append(conn.call("sleep", 0.3).data))
    waiter.start()
    value = conn.eval("return '\\255\\254ok'").data[0]
    waiter.join(5)
    assert value.encode("utf-8", "surrogateescape") == b"\xff\xfeok"
    assert waiter_result == [[0.3]]  # the other caller on the same link got its own reply
    assert conn.ping(notime=True) == "Success"
