"""The crud API (``crud_*`` methods) against the real replica set.

The server side is test-cluster/crud.lua, a one-replica-set stand-in of the
crud router (wire contract: /work/shared/reference/crud.md).  Every method is
called through a Connection to the master and through a ConnectionPool, with
``mode=Mode.RW`` and with the default mode (``Mode.ANY``).  Writes are checked
by reading the space directly on the instance (``cluster.admin``, which does not
use our client); reads are checked against rows inserted the same way.

The ``*_many`` calls are in test_crud_many.py.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster import Cluster

from tarantool_pool import Connection, ConnectionPool, CrudError, CrudResult, Mode
from tarantool_pool.errors import (
    AccessDeniedError,
    CrudModuleError,
    CrudModuleManyError,
    DatabaseError,
    NoSuchProcedureError,
    ProcLuaError,
)

pytestmark = pytest.mark.timeout(60)

GRANTS_HINT = "Ensure that you're calling crud.router and user has sufficient grants"
CUSTOMERS_FIELDS = ["id", "bucket_id", "name", "age"]
DEVELOPERS_FIELDS = ["id", "bucket_id", "name", "surname", "age"]
NO_SPACE = "no_such_space"

_keys = itertools.count(random.randrange(1 << 30) + (1 << 40))


def new_key() -> int:
    """A primary key no other test of this session uses (far above the seeded ids)."""
    return next(_keys)


# ----------------------------------------------------------------------------
# clients


class Client:
    """Calls ``crud_*`` on a Connection or a pool; for a pool, adds ``mode=`` unless it is the default."""

    def __init__(self, name: str, target: Any, mode: Mode | None = None) -> None:
        self.name = name
        self.target = target
        self.mode = mode

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        method = getattr(self.target, attr)
        if self.mode is None:
            return method  # type: ignore[no-any-return]
        return lambda *args, **kwargs: method(*args, mode=self.mode, **kwargs)

    def __repr__(self) -> str:
        return self.name


def connect(cluster: Cluster, name: str = "inst1", user: str | None = None,
            password: str | None = None) -> Connection:
    inst = cluster.instances[name]
    return Connection(inst.host, inst.port, user=user or cluster.user, password=password or cluster.password)


@pytest.fixture(scope="module")
def conn(cluster: Cluster) -> Iterator[Connection]:
    """A Connection to inst1, the read-write master."""
    connection = connect(cluster)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def pool(cluster: Cluster) -> Iterator[ConnectionPool]:
    """A pool over all three instances."""
    with ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password) as whole:
        yield whole


@pytest.fixture(scope="module")
def master_pool(cluster: Cluster) -> Iterator[ConnectionPool]:
    """A pool of the master alone: the default mode (ANY) can only reach the master."""
    with ConnectionPool([cluster.instances["inst1"].addr], user=cluster.user, password=cluster.password) as only:
        yield only


@pytest.fixture(scope="module")
def replica_pool(cluster: Cluster) -> Iterator[ConnectionPool]:
    """A pool of the two read-only replicas."""
    addrs = [cluster.instances[name].addr for name in ("inst2", "inst3")]
    with ConnectionPool(addrs, user=cluster.user, password=cluster.password) as replicas:
        yield replicas


def make_client(request: pytest.FixtureRequest, name: str) -> Client:
    if name == "connection":
        return Client(name, request.getfixturevalue("conn"))
    if name == "pool-rw":
        return Client(name, request.getfixturevalue("pool"), Mode.RW)
    if name == "pool-ro":
        return Client(name, request.getfixturevalue("pool"), Mode.RO)
    if name == "pool-default":
        return Client(name, request.getfixturevalue("pool"))
    if name == "master-pool-default":
        return Client(name, request.getfixturevalue("master_pool"))
    raise AssertionError(name)


WRITERS = ["connection", "pool-rw", "master-pool-default"]
READERS = ["connection", "pool-rw", "pool-default", "pool-ro"]


@pytest.fixture(params=WRITERS)
def writer(request: pytest.FixtureRequest) -> Client:
    """A client whose writes reach the master."""
    return make_client(request, request.param)


@pytest.fixture(params=READERS)
def reader(request: pytest.FixtureRequest) -> Client:
    """A client for reads; the pool ones may (default) or must (RO) read a replica."""
    return make_client(request, request.param)


# ----------------------------------------------------------------------------
# direct access to the instances (not through our client)


def lua_json(value: Any) -> str:
    """A Lua expression decoding ``value`` from JSON (null becomes box.NULL)."""
    return f"require('json').decode([==[{json.dumps(value)}]==])"


def stored(cluster: Cluster, space: str, key: Any, instance: str = "inst1") -> Any:
    """The tuple under ``key`` as the instance itself sees it (None when absent)."""
    return cluster.admin(instance, f"box.space.{space}:get({lua_json(key)})")


def put(cluster: Cluster, space: str, rows: list[list[Any]]) -> None:
    cluster.admin("inst1", f"for _, t in ipairs({lua_json(rows)}) do box.space.{space}:replace(t) end")


def truncate(cluster: Cluster, space: str) -> None:
    cluster.admin("inst1", f"box.space.{space}:truncate()")


def names(metadata: list[dict[str, Any]]) -> list[str]:
    return [field["name"] for field in metadata]


def bucket_of(cluster: Cluster, *key_parts: Any) -> int:
    """vshard's bucket id of a primary key, computed on the server (strcrc32, 3000 buckets)."""
    joined = " .. ".join(f"tostring({lua_json(part)})" for part in key_parts)
    return int(cluster.admin("inst1", f"require('digest').crc32({joined}) % 3000 + 1"))


# Seeded `customers` for the read tests: two customers aged 30, two named Bob.
SEED = [
    [1, 11, "Alice", 25],
    [2, 12, "Bob", 30],
    [3, 13, "Carol", 35],
    [4, 14, "Bob", 47],
    [5, 15, "Eve", 30],
    [6, 16, "Frank", 52],
]


@pytest.fixture
def seeded(cluster: Cluster) -> list[list[Any]]:
    """`customers` holds exactly SEED, on every instance."""
    truncate(cluster, "customers")
    put(cluster, "customers", SEED)
    cluster.wait_synced(timeout=10)
    return SEED


def by_age(rows: list[list[Any]], descending: bool = False) -> list[list[Any]]:
    """Rows in age_index scan order: (age, id) ascending, or descending for < and <=."""
    return sorted(rows, key=lambda row: (row[3], row[0]), reverse=descending)


# ----------------------------------------------------------------------------
# single-tuple writes: results


def test_insert_returns_crud_result_with_metadata_and_the_stored_row(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    result = writer.crud_insert("customers", [key, None, "Elizabeth", 23])
    assert isinstance(result, CrudResult)
    assert names(result.metadata) == CUSTOMERS_FIELDS
    assert result.metadata[0] == {"name": "id", "type": "unsigned"}
    assert result.metadata[3] == {"name": "age", "type": "number", "is_nullable": True}
    assert result.rows == [[key, bucket_of(cluster, key), "Elizabeth", 23]]
    assert stored(cluster, "customers", key) == result.rows[0]


def test_insert_with_fields_returns_only_those_columns(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    result = writer.crud_insert("customers", [key, None, "Fields", 40], {"fields": ["name", "id"]})
    assert names(result.metadata) == ["name", "id"]
    assert result.rows == [["Fields", key]]
    assert stored(cluster, "customers", key)[2:] == ["Fields", 40]  # the whole tuple was written


def test_insert_takes_bucket_id_from_opts_and_rejects_a_conflicting_one(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    assert writer.crud_insert("customers", [key, None, "Bucket", 1], {"bucket_id": 7}).rows[0][1] == 7
    assert stored(cluster, "customers", key)[1] == 7
    other = new_key()
    with pytest.raises(CrudModuleError) as caught:
        writer.crud_insert("customers", [other, 5, "Bucket", 1], {"bucket_id": 6})
    assert "different bucket_id values: 5 and 6" in caught.value.extra_info_error.err
    assert stored(cluster, "customers", other) is None


def test_insert_fills_bucket_id_with_vshard_strcrc32_of_the_primary_key(cluster: Cluster, conn: Connection) -> None:
    truncate(cluster, "developers")
    got = {key: conn.crud_insert("developers", [key, None, f"dev{key}"]).rows[0][1] for key in (1, 2, 3, 10)}
    assert got == {1: 477, 2: 401, 3: 2804, 10: 569}  # crud.md section 7, bucket_count 3000


def test_insert_object_flattens_the_object_by_the_space_format(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    result = writer.crud_insert_object("developers", {"id": key, "name": "Ada", "age": 36})
    assert isinstance(result, CrudResult)
    assert names(result.metadata) == DEVELOPERS_FIELDS
    row = [key, bucket_of(cluster, key), "Ada", None, 36]
    assert result.rows == [row]
    assert stored(cluster, "developers", key) == row


def test_get_of_a_written_row_through_the_writer(writer: Client) -> None:
    key = new_key()
    row = writer.crud_insert("customers", [key, None, "Got", 19]).rows[0]
    result = writer.crud_get("customers", key)
    assert isinstance(result, CrudResult)
    assert result.rows == [row]


def test_update_applies_operations_and_returns_the_new_row(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    put(cluster, "customers", [[key, 9, "Upd", 20]])
    result = writer.crud_update("customers", key, [["+", "age", 5], ["=", "name", "Updated"]])
    assert isinstance(result, CrudResult)
    assert names(result.metadata) == CUSTOMERS_FIELDS
    assert result.rows == [[key, 9, "Updated", 25]]
    assert stored(cluster, "customers", key) == [key, 9, "Updated", 25]


def test_update_of_a_missing_key_returns_no_rows(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    result = writer.crud_update("customers", key, [["+", "age", 1]])
    assert result.rows == []
    assert stored(cluster, "customers", key) is None


def test_update_of_a_primary_key_field_raises_update_error(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    put(cluster, "customers", [[key, 9, "Pk", 20]])
    with pytest.raises(CrudModuleError) as caught:
        writer.crud_update("customers", key, [["=", "id", key + 1]])
    error = caught.value.extra_info_error
    assert error.class_name == "UpdateError"
    assert error.err.startswith("Failed to update: ")
    assert "primary_index" in error.err
    assert stored(cluster, "customers", key) == [key, 9, "Pk", 20]


def test_delete_returns_the_deleted_row_then_nothing(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    put(cluster, "customers", [[key, 9, "Del", 20]])
    result = writer.crud_delete("customers", key)
    assert isinstance(result, CrudResult)
    assert result.rows == [[key, 9, "Del", 20]]
    assert stored(cluster, "customers", key) is None
    assert writer.crud_delete("customers", key).rows == []


def test_replace_inserts_then_overwrites(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    bucket = bucket_of(cluster, key)
    first = writer.crud_replace("customers", [key, None, "Rep", 1])
    assert isinstance(first, CrudResult)
    assert first.rows == [[key, bucket, "Rep", 1]]
    second = writer.crud_replace("customers", [key, None, "Replaced", None])
    assert second.rows == [[key, bucket, "Replaced", None]]
    assert stored(cluster, "customers", key) == [key, bucket, "Replaced", None]


def test_replace_object_inserts_then_overwrites(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    bucket = bucket_of(cluster, key)
    first = writer.crud_replace_object("developers", {"id": key, "name": "Grace", "surname": "Hopper"})
    assert first.rows == [[key, bucket, "Grace", "Hopper", None]]
    second = writer.crud_replace_object("developers", {"id": key, "name": "Grace", "age": 85})
    assert isinstance(second, CrudResult)
    assert second.rows == [[key, bucket, "Grace", None, 85]]
    assert stored(cluster, "developers", key) == [key, bucket, "Grace", None, 85]


def test_upsert_inserts_when_absent_and_applies_operations_when_present(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    bucket = bucket_of(cluster, key)
    result = writer.crud_upsert("customers", [key, None, "Ups", 10], [["+", "age", 1]])
    assert isinstance(result, CrudResult)
    assert names(result.metadata) == CUSTOMERS_FIELDS
    assert result.rows == []  # upsert never returns rows
    assert stored(cluster, "customers", key) == [key, bucket, "Ups", 10]
    assert writer.crud_upsert("customers", [key, None, "Ups", 10], [["+", "age", 1]]).rows == []
    assert stored(cluster, "customers", key) == [key, bucket, "Ups", 11]


def test_upsert_object_inserts_when_absent_and_applies_operations_when_present(
        cluster: Cluster, writer: Client) -> None:
    key = new_key()
    bucket = bucket_of(cluster, key)
    result = writer.crud_upsert_object("developers", {"id": key, "name": "Linus", "age": 20}, [["+", "age", 2]])
    assert isinstance(result, CrudResult)
    assert result.rows == []
    assert names(result.metadata) == DEVELOPERS_FIELDS
    writer.crud_upsert_object("developers", {"id": key, "name": "Linus", "age": 20}, [["+", "age", 2]])
    assert stored(cluster, "developers", key) == [key, bucket, "Linus", None, 22]


def test_two_part_primary_key_is_given_as_a_list(cluster: Cluster, writer: Client) -> None:
    user = new_key()
    row = [user, "main", bucket_of(cluster, user, "main"), 100]
    assert writer.crud_insert("accounts", [user, "main", None, 100]).rows == [row]
    assert writer.crud_get("accounts", [user, "main"]).rows == [row]
    assert writer.crud_update("accounts", [user, "main"], [["-", "balance", 30]]).rows[0][3] == 70
    assert writer.crud_delete("accounts", [user, "main"]).rows[0][3] == 70
    assert stored(cluster, "accounts", [user, "main"]) is None


@pytest.mark.parametrize("method, call", [
    ("insert", lambda c, k: c.crud_insert("customers", [k, None, "NoRet", 1], {"noreturn": True})),
    ("insert_object", lambda c, k: c.crud_insert_object("customers", {"id": k, "name": "NoRet", "age": 1},
                                                        {"noreturn": True})),
    ("replace", lambda c, k: c.crud_replace("customers", [k, None, "NoRet", 1], {"noreturn": True})),
    ("replace_object", lambda c, k: c.crud_replace_object("customers", {"id": k, "name": "NoRet", "age": 1},
                                                          {"noreturn": True})),
    ("upsert", lambda c, k: c.crud_upsert("customers", [k, None, "NoRet", 1], [], {"noreturn": True})),
    ("upsert_object", lambda c, k: c.crud_upsert_object("customers", {"id": k, "name": "NoRet", "age": 1}, [],
                                                        {"noreturn": True})),
])
def test_noreturn_write_returns_none_and_the_row_is_written(
        cluster: Cluster, writer: Client, method: str, call: Callable[[Client, int], Any]) -> None:
    key = new_key()
    assert call(writer, key) is None
    assert stored(cluster, "customers", key)[2:] == ["NoRet", 1]


def test_noreturn_update_and_delete_return_none_and_take_effect(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    put(cluster, "customers", [[key, 9, "NoRet", 1]])
    assert writer.crud_update("customers", key, [["=", "age", 2]], {"noreturn": True}) is None
    assert stored(cluster, "customers", key) == [key, 9, "NoRet", 2]
    assert writer.crud_delete("customers", key, {"noreturn": True}) is None
    assert stored(cluster, "customers", key) is None


# ----------------------------------------------------------------------------
# single-tuple writes: errors


def test_duplicate_key_raises_crud_module_error_carrying_an_insert_error(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    put(cluster, "customers", [[key, 9, "Dup", 20]])
    with pytest.raises(CrudModuleError) as caught:
        writer.crud_insert("customers", [key, None, "Dup again", 21])
    exc = caught.value
    assert isinstance(exc, DatabaseError)
    error = exc.extra_info_error
    assert isinstance(error, CrudError)
    assert error.class_name == "InsertError"
    assert error.err.startswith("Failed to insert: ")
    assert "Duplicate key exists" in error.err
    assert error.str == f"InsertError: {error.err}"
    assert isinstance(error.file, str) and isinstance(error.line, int)
    assert "Duplicate key exists" in str(exc)
    assert stored(cluster, "customers", key) == [key, 9, "Dup", 20]


def test_duplicate_object_raises_insert_error(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    put(cluster, "developers", [[key, 9, "Dup", None, None]])
    with pytest.raises(CrudModuleError) as caught:
        writer.crud_insert_object("developers", {"id": key, "name": "Again"})
    assert caught.value.extra_info_error.class_name == "InsertError"
    assert "Duplicate key exists" in caught.value.extra_info_error.err


@pytest.mark.parametrize("obj, message", [
    ({"name": "Unknown", "nickname": "x"}, 'Unknown field "nickname" is specified'),
    ({"surname": "Nameless"}, "Field \"name\" isn't nullable"),
])
def test_object_that_does_not_fit_the_format_raises_a_flatten_error(
        cluster: Cluster, writer: Client, obj: dict[str, Any], message: str) -> None:
    key = new_key()
    for call in (writer.crud_insert_object, writer.crud_replace_object):
        with pytest.raises(CrudModuleError) as caught:
            call("developers", {"id": key, **obj})
        assert caught.value.extra_info_error.err.startswith("Failed to flatten object: ")
        assert message in caught.value.extra_info_error.err
    with pytest.raises(CrudModuleError, match=message):
        writer.crud_upsert_object("developers", {"id": key, **obj}, [])
    assert stored(cluster, "developers", key) is None


def test_write_of_a_wrong_field_type_raises_with_the_box_message(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    for call, class_name in ((lambda: writer.crud_replace("customers", [key, None, 42, 1]), "ReplaceError"),
                             (lambda: writer.crud_upsert("customers", [key, None, 42, 1], []), "UpsertError"),
                             (lambda: writer.crud_upsert_object("customers", {"id": key, "name": 42}, []),
                              "UpsertError")):
        with pytest.raises(CrudModuleError) as caught:
            call()
        error = caught.value.extra_info_error
        assert error.class_name == class_name
        assert "Tuple field 3 type does not match one required by operation" in error.err
    assert stored(cluster, "customers", key) is None


def test_insert_into_a_space_without_bucket_id_index_fails(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    with pytest.raises(CrudModuleError) as caught:
        writer.crud_insert("no_bucket", [key, "x"])
    assert caught.value.extra_info_error.class_name == "InsertError"
    assert '"bucket_id" index is not found' in caught.value.extra_info_error.err
    assert stored(cluster, "no_bucket", key) is None


WRITES_TO_MISSING_SPACE = [
    ("InsertError", lambda c: c.crud_insert(NO_SPACE, [1, None, "x", 1])),
    ("InsertError", lambda c: c.crud_insert_object(NO_SPACE, {"id": 1})),
    ("UpdateError", lambda c: c.crud_update(NO_SPACE, 1, [["=", "age", 1]])),
    ("DeleteError", lambda c: c.crud_delete(NO_SPACE, 1)),
    ("ReplaceError", lambda c: c.crud_replace(NO_SPACE, [1, None, "x", 1])),
    ("ReplaceError", lambda c: c.crud_replace_object(NO_SPACE, {"id": 1})),
    ("UpsertError", lambda c: c.crud_upsert(NO_SPACE, [1, None, "x", 1], [])),
    ("UpsertError", lambda c: c.crud_upsert_object(NO_SPACE, {"id": 1}, [])),
    ("TruncateError", lambda c: c.crud_truncate(NO_SPACE)),
]
READS_OF_MISSING_SPACE = [
    ("GetError", lambda c: c.crud_get(NO_SPACE, 1)),
    ("SelectError", lambda c: c.crud_select(NO_SPACE)),
    ("BorderError", lambda c: c.crud_min(NO_SPACE)),
    ("BorderError", lambda c: c.crud_max(NO_SPACE, "primary_index")),
    ("CountError", lambda c: c.crud_count(NO_SPACE)),
    ("LenError", lambda c: c.crud_len(NO_SPACE)),
]


@pytest.mark.parametrize("class_name, call", WRITES_TO_MISSING_SPACE,
                         ids=[c for c, _ in WRITES_TO_MISSING_SPACE])
def test_write_to_a_missing_space_raises_the_operation_error(
        writer: Client, class_name: str, call: Callable[[Client], Any]) -> None:
    with pytest.raises(CrudModuleError) as caught:
        call(writer)
    error = caught.value.extra_info_error
    assert isinstance(error, CrudError)
    assert (error.class_name, error.err) == (class_name, f'Space "{NO_SPACE}" doesn\'t exist')


@pytest.mark.parametrize("class_name, call", READS_OF_MISSING_SPACE,
                         ids=[c for c, _ in READS_OF_MISSING_SPACE])
def test_read_of_a_missing_space_raises_the_operation_error(
        reader: Client, class_name: str, call: Callable[[Client], Any]) -> None:
    with pytest.raises(CrudModuleError) as caught:
        call(reader)
    error = caught.value.extra_info_error
    assert (error.class_name, error.err) == (class_name, f'Space "{NO_SPACE}" doesn\'t exist')


def test_unknown_option_is_a_lua_error_not_a_crud_error(cluster: Cluster, writer: Client) -> None:
    key = new_key()
    with pytest.raises(ProcLuaError) as caught:
        writer.crud_insert("customers", [key, None, "Opt", 1], {"no_such_option": 1})
    assert not isinstance(caught.value, CrudModuleError)
    assert caught.value.code == 32
    assert "unexpected argument opts.no_such_option to crud.insert" in caught.value.message
    assert GRANTS_HINT not in caught.value.message
    assert stored(cluster, "customers", key) is None


# ----------------------------------------------------------------------------
# reads: get, select, min, max, count, len


def test_get_returns_the_row_or_no_rows(seeded: list[list[Any]], reader: Client) -> None:
    result = reader.crud_get("customers", 3)
    assert isinstance(result, CrudResult)
    assert names(result.metadata) == CUSTOMERS_FIELDS
    assert result.rows == [[3, 13, "Carol", 35]]
    assert reader.crud_get("customers", 999).rows == []


def test_get_with_fields_returns_only_those_columns(seeded: list[list[Any]], reader: Client) -> None:
    result = reader.crud_get("customers", 4, {"fields": ["age", "name"]})
    assert names(result.metadata) == ["age", "name"]
    assert result.rows == [[47, "Bob"]]


def test_get_with_a_key_of_the_wrong_type_raises_get_error(seeded: list[list[Any]], reader: Client) -> None:
    with pytest.raises(CrudModuleError) as caught:
        reader.crud_get("customers", "three")
    assert caught.value.extra_info_error.class_name == "GetError"
    assert caught.value.extra_info_error.err.startswith("Failed to get: ")


def test_select_without_conditions_returns_every_row_in_primary_key_order(
        seeded: list[list[Any]], reader: Client) -> None:
    result = reader.crud_select("customers")
    assert isinstance(result, CrudResult)
    assert names(result.metadata) == CUSTOMERS_FIELDS
    assert result.rows == SEED


def test_select_ge_on_an_indexed_field_scans_that_index_ascending(seeded: list[list[Any]], reader: Client) -> None:
    rows = reader.crud_select("customers", [[">=", "age", 30]]).rows
    assert rows == by_age([row for row in SEED if row[3] >= 30])
    assert [row[0] for row in rows] == [2, 5, 3, 4, 6]


def test_select_le_scans_the_index_descending(seeded: list[list[Any]], reader: Client) -> None:
    rows = reader.crud_select("customers", [["<=", "age", 35]]).rows
    assert rows == by_age([row for row in SEED if row[3] <= 35], descending=True)


def test_select_eq_on_an_unindexed_field_filters(seeded: list[list[Any]], reader: Client) -> None:
    assert reader.crud_select("customers", [["==", "name", "Bob"]]).rows == [[2, 12, "Bob", 30], [4, 14, "Bob", 47]]
    assert reader.crud_select("customers", [["==", "name", "Nobody"]]).rows == []


def test_select_conditions_are_anded(seeded: list[list[Any]], reader: Client) -> None:
    rows = reader.crud_select("customers", [["==", "name", "Bob"], [">", "age", 30]]).rows
    assert rows == [[4, 14, "Bob", 47]]


def test_select_first_limits_the_rows(seeded: list[list[Any]], reader: Client) -> None:
    assert reader.crud_select("customers", [[">=", "age", 30]], {"first": 2}).rows == [SEED[1], SEED[4]]
    assert reader.crud_select("customers", None, {"first": 1}).rows == [SEED[0]]


def test_select_after_pages_through_the_result(seeded: list[list[Any]], reader: Client) -> None:
    conditions = [[">=", "age", 30]]
    everything = reader.crud_select("customers", conditions).rows
    pages: list[list[list[Any]]] = []
    after = None
    while True:
        opts: dict[str, Any] = {"first": 2}
        if after is not None:
            opts["after"] = after
        page = reader.crud_select("customers", conditions, opts).rows
        if not page:
            break
        if pages:
            assert page[0] == everything[everything.index(pages[-1][-1]) + 1]  # starts right after page 1's last
        pages.append(page)
        after = page[-1]
        assert len(pages) <= 5, "paging does not advance"
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [row for page in pages for row in page] == everything


def test_select_negative_first_with_after_returns_the_previous_page(seeded: list[list[Any]], reader: Client) -> None:
    conditions = [[">=", "age", 30]]
    page1 = reader.crud_select("customers", conditions, {"first": 2}).rows
    page2 = reader.crud_select("customers", conditions, {"first": 2, "after": page1[-1]}).rows
    assert reader.crud_select("customers", conditions, {"first": -2, "after": page2[0]}).rows == page1


def test_select_negative_first_without_after_raises_select_error(seeded: list[list[Any]], reader: Client) -> None:
    with pytest.raises(CrudModuleError) as caught:
        reader.crud_select("customers", None, {"first": -1})
    assert caught.value.extra_info_error.class_name == "SelectError"
    assert "Negative first should be specified only with after option" in caught.value.extra_info_error.err


def test_select_fields_metadata_describes_the_returned_columns(seeded: list[list[Any]], reader: Client) -> None:
    result = reader.crud_select("customers", [[">=", "age", 30]], {"fields": ["name"]})
    # Requested fields, then the scan index and primary key fields not listed.
    assert names(result.metadata) == ["name", "age", "id"]
    assert result.metadata[1] == {"name": "age", "type": "number", "is_nullable": True}
    assert all(len(row) == len(result.metadata) for row in result.rows)
    assert result.rows == [[row[2], row[3], row[0]] for row in by_age([r for r in SEED if r[3] >= 30])]


def test_select_fields_rows_work_as_after(seeded: list[list[Any]], reader: Client) -> None:
    opts = {"fields": ["name"], "first": 2}
    page1 = reader.crud_select("customers", [[">=", "age", 30]], opts).rows
    page2 = reader.crud_select("customers", [[">=", "age", 30]], {**opts, "after": page1[-1]}).rows
    assert [row[2] for row in page1 + page2] == [2, 5, 3, 4]


@pytest.mark.parametrize("conditions, opts, message", [
    ([["~", "age", 1]], None, "Failed to parse conditions"),
    ([["~", "age", 1], [">=", "age", 1]], None, "Failed to parse conditions"),
    (None, {"fields": ["nope"]}, "Space format doesn't contain field named \"nope\""),
])
def test_select_with_bad_conditions_or_fields_raises(
        seeded: list[list[Any]], reader: Client, conditions: Any, opts: Any, message: str) -> None:
    with pytest.raises(CrudModuleError) as caught:
        reader.crud_select("customers", conditions, opts)
    assert isinstance(caught.value.extra_info_error, CrudError)
    assert message in caught.value.extra_info_error.err


def test_min_and_max_return_the_border_rows_of_an_index(seeded: list[list[Any]], reader: Client) -> None:
    smallest = reader.crud_min("customers", "age_index")
    assert isinstance(smallest, CrudResult)
    assert names(smallest.metadata) == CUSTOMERS_FIELDS
    assert smallest.rows == [[1, 11, "Alice", 25]]
    assert reader.crud_max("customers", "age_index").rows == [[6, 16, "Frank", 52]]
    assert reader.crud_min("customers").rows == [SEED[0]]  # no index: the primary one
    assert reader.crud_max("customers", "primary_index").rows == [SEED[-1]]
    assert reader.crud_max("customers", 2).rows == [[6, 16, "Frank", 52]]  # index by number


def test_min_and_max_with_fields_return_exactly_those_fields(seeded: list[list[Any]], reader: Client) -> None:
    result = reader.crud_max("customers", "age_index", {"fields": ["name"]})
    assert names(result.metadata) == ["name"]
    assert result.rows == [["Frank"]]
    assert reader.crud_min("customers", "age_index", {"fields": ["id", "age"]}).rows == [[1, 25]]


def test_min_and_max_of_an_empty_space_return_no_rows(cluster: Cluster, reader: Client) -> None:
    truncate(cluster, "no_bucket")
    cluster.wait_synced(timeout=10)
    assert reader.crud_min("no_bucket").rows == []
    assert reader.crud_max("no_bucket").rows == []


def test_min_of_an_unknown_index_raises_border_error(seeded: list[list[Any]], reader: Client) -> None:
    with pytest.raises(CrudModuleError) as caught:
        reader.crud_min("customers", "no_such_index")
    error = caught.value.extra_info_error
    assert (error.class_name, error.err) == ("BorderError",
                                             'Index "no_such_index" of space "customers" doesn\'t exist')


def test_count_returns_an_int_of_matching_rows(seeded: list[list[Any]], reader: Client) -> None:
    assert reader.crud_count("customers") == 6
    count = reader.crud_count("customers", [[">=", "age", 30]])
    assert type(count) is int and count == 5
    assert reader.crud_count("customers", [["==", "name", "Bob"]]) == 2
    assert reader.crud_count("customers", [["<", "age", 0]]) == 0


def test_count_with_bad_conditions_raises(seeded: list[list[Any]], reader: Client) -> None:
    with pytest.raises(CrudModuleError, match="Failed to parse conditions"):
        reader.crud_count("customers", [["~", "age", 1]])


def test_len_returns_an_int_of_all_rows(seeded: list[list[Any]], reader: Client) -> None:
    size = reader.crud_len("customers")
    assert type(size) is int and size == len(SEED)


# ----------------------------------------------------------------------------
# truncate, storage_info, stats, unflatten_rows


def test_truncate_returns_true_and_empties_the_space_everywhere(
        cluster: Cluster, seeded: list[list[Any]], writer: Client) -> None:
    assert writer.crud_truncate("customers") is True
    assert cluster.admin("inst1", "box.space.customers:len()") == 0
    cluster.wait_synced(timeout=10)
    for name in ("inst2", "inst3"):
        assert cluster.admin(name, "box.space.customers:len()") == 0
    assert writer.crud_len("customers") == 0


def test_storage_info_maps_the_answering_instance_uuid_to_running(cluster: Cluster, reader: Client) -> None:
    uuids = {name: cluster.admin(name, "box.info.uuid") for name in cluster.instances}
    info = reader.crud_storage_info()
    assert isinstance(info, dict) and len(info) == 1
    (uuid, state), = info.items()
    assert uuid in uuids.values()
    assert state["status"] == "running"
    assert state["is_master"] is (uuid == uuids["inst1"])
    if reader.name in ("connection", "pool-rw"):
        assert uuid == uuids["inst1"]
    if reader.name == "pool-ro":
        assert uuid != uuids["inst1"]


@pytest.fixture
def stats_on(cluster: Cluster) -> Iterator[None]:
    """crud statistics switched on (and reset) on every instance, off afterwards."""
    for name in cluster.instances:
        cluster.admin(name, "crud.cfg{stats = true} crud.reset_stats()")
    yield
    for name in cluster.instances:
        cluster.admin(name, "crud.cfg{stats = false}")


def test_stats_are_empty_when_off(cluster: Cluster, reader: Client) -> None:
    for name in cluster.instances:
        cluster.admin(name, "crud.cfg{stats = false}")
    result = reader.crud_stats()
    assert isinstance(result, CrudResult)
    assert vars(result) == {}
    assert vars(reader.crud_stats("customers")) == {}


def test_stats_count_operations_per_space_and_label(stats_on: None, writer: Client) -> None:
    before = writer.crud_stats("customers")
    count_before = before.insert["ok"]["count"] if hasattr(before, "insert") else 0
    writer.crud_insert("customers", [new_key(), None, "Stat", 1])
    after = writer.crud_stats("customers")
    assert isinstance(after, CrudResult)
    assert after.insert["ok"]["count"] == count_before + 1
    assert set(after.insert) == {"ok", "error"}
    everything = writer.crud_stats()
    assert everything.spaces["customers"]["insert"]["ok"]["count"] == count_before + 1


def test_stats_through_the_pool_default_mode_read_the_answering_instance(
        cluster: Cluster, stats_on: None, pool: ConnectionPool) -> None:
    for name in cluster.instances:  # one counted crud.get on every instance, made there directly
        cluster.admin(name, "crud.get('customers', 1)")
    for _ in range(len(cluster.instances)):
        result = pool.crud_stats("customers")
        assert result.get["ok"]["count"] == 1
        assert pool.crud_stats().spaces["customers"]["get"]["ok"]["count"] == 1


def test_unflatten_rows_turns_rows_into_dicts_by_metadata(seeded: list[list[Any]], reader: Client) -> None:
    result = reader.crud_select("customers", [["==", "name", "Bob"]])
    objects = reader.crud_unflatten_rows(result.rows, result.metadata)
    assert objects == [
        {"id": 2, "bucket_id": 12, "name": "Bob", "age": 30},
        {"id": 4, "bucket_id": 14, "name": "Bob", "age": 47},
    ]
    assert objects == [{m["name"]: v for m, v in zip(result.metadata, row)} for row in result.rows]
    assert reader.crud_unflatten_rows([], result.metadata) == []


# ----------------------------------------------------------------------------
# grants, missing functions, routing by mode


ALL_CALLS: dict[str, Callable[[Any], Any]] = {
    "insert": lambda c: c.crud_insert("customers", [1, None, "x", 1]),
    "insert_object": lambda c: c.crud_insert_object("customers", {"id": 1, "name": "x"}),
    "insert_many": lambda c: c.crud_insert_many("customers", [[1, None, "x", 1]]),
    "insert_object_many": lambda c: c.crud_insert_object_many("customers", [{"id": 1, "name": "x"}]),
    "get": lambda c: c.crud_get("customers", 1),
    "update": lambda c: c.crud_update("customers", 1, [["=", "age", 1]]),
    "delete": lambda c: c.crud_delete("customers", 1),
    "replace": lambda c: c.crud_replace("customers", [1, None, "x", 1]),
    "replace_object": lambda c: c.crud_replace_object("customers", {"id": 1, "name": "x"}),
    "replace_many": lambda c: c.crud_replace_many("customers", [[1, None, "x", 1]]),
    "replace_object_many": lambda c: c.crud_replace_object_many("customers", [{"id": 1, "name": "x"}]),
    "upsert": lambda c: c.crud_upsert("customers", [1, None, "x", 1], []),
    "upsert_object": lambda c: c.crud_upsert_object("customers", {"id": 1, "name": "x"}, []),
    "upsert_many": lambda c: c.crud_upsert_many("customers", [[[1, None, "x", 1], []]]),
    "upsert_object_many": lambda c: c.crud_upsert_object_many("customers", [[{"id": 1, "name": "x"}, []]]),
    "select": lambda c: c.crud_select("customers", [[">=", "age", 1]]),
    "min": lambda c: c.crud_min("customers", "age_index"),
    "max": lambda c: c.crud_max("customers", "age_index"),
    "count": lambda c: c.crud_count("customers"),
    "len": lambda c: c.crud_len("customers"),
    "truncate": lambda c: c.crud_truncate("customers"),
    "storage_info": lambda c: c.crud_storage_info(),
    "stats": lambda c: c.crud_stats(),
    "unflatten_rows": lambda c: c.crud_unflatten_rows([[1]], [{"name": "id"}]),
}


def test_all_calls_cover_every_crud_method_of_the_client() -> None:
    client_side = {"iterate"}  # crud_iterate pages over crud.select: tests/test_streaming.py
    methods = {name[len("crud_"):] for name in dir(Connection) if name.startswith("crud_")} - client_side
    assert methods == set(ALL_CALLS)
    assert methods == {name[len("crud_"):] for name in dir(ConnectionPool) if name.startswith("crud_")} - client_side


@pytest.fixture(scope="module")
def limited(cluster: Cluster) -> Iterator[list[Connection]]:
    """Connections (master, replica) of the user `limited`, who may not execute any function.

    No pool: a pool's user must be able to call box.info, which `limited` cannot.
    """
    connections = [connect(cluster, name, user="limited", password="limited-password") for name in ("inst1", "inst2")]
    yield connections
    for connection in connections:
        connection.close()


@pytest.mark.parametrize("function", sorted(ALL_CALLS))
def test_call_without_execute_grant_raises_access_denied_with_the_hint(
        limited: list[Connection], function: str) -> None:
    for connection in limited:
        with pytest.raises(AccessDeniedError) as caught:
            ALL_CALLS[function](connection)
        exc = caught.value
        assert exc.code == 42
        assert f"Execute access to function 'crud.{function}' is denied for user 'limited'" in exc.message
        assert exc.message.endswith(". " + GRANTS_HINT)
        assert GRANTS_HINT in str(exc)
        assert isinstance(exc.__cause__, AccessDeniedError) and GRANTS_HINT not in exc.__cause__.message


@pytest.fixture
def crud_len_removed(cluster: Cluster) -> Iterator[None]:
    """`crud.len` is not defined on any instance (as on a node without crud.router); restored afterwards."""
    removed = []
    try:
        for name in cluster.instances:
            cluster.admin(name, "rawset(_G, 'test_crud_saved_len', crud.len) crud.len = nil")
            removed.append(name)
        yield
    finally:
        for name in removed:
            cluster.admin(name, "crud.len = test_crud_saved_len rawset(_G, 'test_crud_saved_len', nil)")


def test_missing_crud_function_raises_no_such_procedure_with_the_hint(
        crud_len_removed: None, conn: Connection, pool: ConnectionPool) -> None:
    for client in (Client("connection", conn), Client("pool-default", pool), Client("pool-rw", pool, Mode.RW),
                   Client("pool-ro", pool, Mode.RO)):
        with pytest.raises(NoSuchProcedureError) as caught:
            client.crud_len("customers")
        assert caught.value.code == 33
        assert caught.value.message == f"Procedure 'crud.len' is not defined. {GRANTS_HINT}", client
        assert client.crud_count("customers") >= 0  # the other functions are still there


WRITES: dict[str, Callable[[Any, int], Any]] = {
    "insert": lambda c, k: c.crud_insert("customers", [k, None, "x", 1]),
    "insert_object": lambda c, k: c.crud_insert_object("customers", {"id": k, "name": "x"}),
    "update": lambda c, k: c.crud_update("customers", k, [["=", "age", 1]]),
    "delete": lambda c, k: c.crud_delete("customers", k),
    "replace": lambda c, k: c.crud_replace("customers", [k, None, "x", 1]),
    "replace_object": lambda c, k: c.crud_replace_object("customers", {"id": k, "name": "x"}),
    "upsert": lambda c, k: c.crud_upsert("customers", [k, None, "x", 1], []),
    "upsert_object": lambda c, k: c.crud_upsert_object("customers", {"id": k, "name": "x"}, []),
    "truncate": lambda c, k: c.crud_truncate("customers"),
}
MANY_WRITES: dict[str, Callable[[Any, int], Any]] = {
    "insert_many": lambda c, k: c.crud_insert_many("customers", [[k, None, "x", 1]]),
    "insert_object_many": lambda c, k: c.crud_insert_object_many("customers", [{"id": k, "name": "x"}]),
    "replace_many": lambda c, k: c.crud_replace_many("customers", [[k, None, "x", 1]]),
    "replace_object_many": lambda c, k: c.crud_replace_object_many("customers", [{"id": k, "name": "x"}]),
    "upsert_many": lambda c, k: c.crud_upsert_many("customers", [[[k, None, "x", 1], []]]),
    "upsert_object_many": lambda c, k: c.crud_upsert_object_many("customers", [[{"id": k, "name": "x"}, []]]),
}


@pytest.mark.parametrize("function", sorted(WRITES))
def test_write_in_default_mode_on_replicas_raises_a_read_only_crud_error(
        cluster: Cluster, replica_pool: ConnectionPool, function: str) -> None:
    key = new_key()
    put(cluster, "customers", [[key, 9, "Kept", 5]])
    cluster.wait_synced(timeout=10)
    with pytest.raises(CrudModuleError) as caught:
        WRITES[function](replica_pool, key)
    assert "read-only" in caught.value.extra_info_error.err
    assert "read-only" in str(caught.value)
    assert stored(cluster, "customers", key) == [key, 9, "Kept", 5]
    assert replica_pool.crud_get("customers", key).rows == [[key, 9, "Kept", 5]]  # reads are fine there


@pytest.mark.parametrize("function", sorted(MANY_WRITES))
def test_many_write_in_default_mode_on_replicas_reports_read_only_per_tuple(
        cluster: Cluster, replica_pool: ConnectionPool, function: str) -> None:
    key = new_key()
    with pytest.raises(CrudModuleManyError) as caught:
        MANY_WRITES[function](replica_pool, key)
    assert caught.value.success_list is None
    assert len(caught.value.errors_list) == 1
    assert "read-only" in caught.value.errors_list[0].err
    assert stored(cluster, "customers", key) is None


@pytest.mark.parametrize("function", sorted(WRITES.keys() - {"truncate"}) + sorted(MANY_WRITES))
def test_write_in_mode_rw_through_the_whole_pool_always_reaches_the_master(
        cluster: Cluster, pool: ConnectionPool, function: str) -> None:
    call = {**WRITES, **MANY_WRITES}[function]
    for _ in range(len(cluster.instances)):  # round robin over all three would reach a replica
        key = new_key()
        if function in ("update", "delete"):
            put(cluster, "customers", [[key, 9, "x", 0]])
        call(Client("pool-rw", pool, Mode.RW), key)  # raises if a replica got it
        if function == "delete":
            expected = None
        elif function == "update":
            expected = [key, 9, "x", 1]
        else:
            expected = [key, bucket_of(cluster, key), "x", None if "object" in function else 1]
        assert stored(cluster, "customers", key) == expected


def test_writes_in_default_mode_through_the_whole_pool_may_land_on_a_replica(
        cluster: Cluster, pool: ConnectionPool) -> None:
    written, refused = [], []
    for _ in range(2 * len(cluster.instances)):
        key = new_key()
        try:
            pool.crud_insert("customers", [key, None, "Any", 1])
            written.append(key)
        except CrudModuleError as exc:
            assert "read-only" in exc.extra_info_error.err
            refused.append(key)
    assert written and refused
    assert all(stored(cluster, "customers", key) is not None for key in written)
    assert all(stored(cluster, "customers", key) is None for key in refused)
