"""The crud ``*_many`` calls against the real replica set: results, partial
failures (CrudModuleManyError), stop_on_error and rollback_on_error.

Clients, fixtures and helpers are those of test_crud.py (a Connection to the
master, a pool with ``mode=Mode.RW`` and a master-only pool in the default
mode).  Stored rows are read directly on the master with ``cluster.admin``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from cluster import Cluster
from test_crud import (  # noqa: F401 - conn, master_pool, pool: fixtures `writer` builds on
    CUSTOMERS_FIELDS,
    NO_SPACE,
    WRITERS,
    Client,
    bucket_of,
    conn,
    make_client,
    master_pool,
    names,
    new_key,
    pool,
    put,
    stored,
)

from tarantool_pool import CrudError, CrudResult
from tarantool_pool.errors import CrudModuleManyError, DatabaseError

pytestmark = pytest.mark.timeout(60)

DUPLICATE = "Duplicate key exists"
WRONG_TYPE = "Tuple field 3 type does not match one required by operation"
NOT_PERFORMED = "Operation with tuple was not performed"
ROLLED_BACK = "Operation with tuple was rollback"


class Many(NamedTuple):
    """One of the six ``*_many`` methods and the shape of its items."""

    method: str
    objects: bool  # items are dicts, flattened by the space format
    upsert: bool  # items are [tuple_or_object, operations]; the result has no rows
    error_class: str  # class of the errors raised before the storage (flatten, empty input, ...)

    def item(self, key: int, name: Any, age: Any) -> Any:
        data = {"id": key, "name": name, "age": age} if self.objects else [key, None, name, age]
        return [data, [["+", "age", 100]]] if self.upsert else data

    def call(self, client: Client, items: list[Any], opts: dict[str, Any] | None = None,
             space: str = "customers") -> Any:
        return getattr(client, "crud_" + self.method)(space, items, opts)

    def failing_item(self, key: int) -> Any:
        """An item the storage rejects: a duplicate for insert (the key is put first), else a wrong type."""
        return self.item(key, "Bad", 2) if self.method.startswith("insert") else self.item(key, 42, 2)

    @property
    def failure_text(self) -> str:
        return DUPLICATE if self.method.startswith("insert") else WRONG_TYPE


MANY = [
    Many("insert_many", False, False, "InsertManyError"),
    Many("insert_object_many", True, False, "InsertManyError"),
    Many("replace_many", False, False, "ReplaceManyError"),
    Many("replace_object_many", True, False, "ReplaceManyError"),
    Many("upsert_many", False, True, "UpsertManyError"),
    Many("upsert_object_many", True, True, "UpsertManyError"),
]
OBJECT_MANY = [many for many in MANY if many.objects]


def ids(values: list[Many]) -> list[str]:
    return [many.method for many in values]


def row(cluster: Cluster, key: int, name: Any, age: Any) -> list[Any]:
    """A customers row as crud stores it (bucket_id filled from the key)."""
    return [key, bucket_of(cluster, key), name, age]


def prepare_failure(cluster: Cluster, many: Many, key: int) -> list[Any] | None:
    """Make ``failing_item(key)`` fail; return what is stored under ``key`` before the call."""
    if many.method.startswith("insert"):
        put(cluster, "customers", [[key, 9, "Old", 1]])
        return [key, 9, "Old", 1]
    return None


def assert_success_list(cluster: Cluster, many: Many, success: Any, expected_rows: list[list[Any]]) -> None:
    assert isinstance(success, CrudResult)
    assert names(success.metadata) == CUSTOMERS_FIELDS
    if many.upsert:
        assert not hasattr(success, "rows")  # upsert_many returns metadata only
    else:
        assert success.rows == expected_rows


@pytest.fixture(params=WRITERS)
def writer(request: pytest.FixtureRequest) -> Client:
    """A client whose writes reach the master (as in test_crud.py)."""
    return make_client(request, request.param)


# ----------------------------------------------------------------------------
# success


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_many_writes_every_item_and_returns_the_rows(cluster: Cluster, writer: Client, many: Many) -> None:
    keys = [new_key() for _ in range(3)]
    result = many.call(writer, [many.item(key, f"N{i}", i) for i, key in enumerate(keys)])
    expected = [row(cluster, key, f"N{i}", i) for i, key in enumerate(keys)]
    assert_success_list(cluster, many, result, expected)
    assert [stored(cluster, "customers", key) for key in keys] == expected


@pytest.mark.parametrize("many", [m for m in MANY if not m.method.startswith("insert")],
                         ids=ids([m for m in MANY if not m.method.startswith("insert")]))
def test_replace_and_upsert_many_change_existing_rows(cluster: Cluster, writer: Client, many: Many) -> None:
    key = new_key()
    put(cluster, "customers", [[key, bucket_of(cluster, key), "Old", 1]])
    result = many.call(writer, [many.item(key, "New", 5)])
    if many.upsert:  # the operations apply to the stored row
        assert stored(cluster, "customers", key) == row(cluster, key, "Old", 101)
    else:
        assert result.rows == [row(cluster, key, "New", 5)]
        assert stored(cluster, "customers", key) == row(cluster, key, "New", 5)


def test_insert_many_with_fields_returns_only_those_columns(cluster: Cluster, writer: Client) -> None:
    keys = [new_key(), new_key()]
    result = writer.crud_insert_many("customers", [[key, None, "F", 3] for key in keys], {"fields": ["id", "name"]})
    assert names(result.metadata) == ["id", "name"]
    assert result.rows == [[key, "F"] for key in keys]
    assert all(stored(cluster, "customers", key) == row(cluster, key, "F", 3) for key in keys)


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_many_with_noreturn_returns_none_and_writes(cluster: Cluster, writer: Client, many: Many) -> None:
    keys = [new_key(), new_key()]
    assert many.call(writer, [many.item(key, "NoRet", 7) for key in keys], {"noreturn": True}) is None
    assert [stored(cluster, "customers", key) for key in keys] == [row(cluster, key, "NoRet", 7) for key in keys]


# ----------------------------------------------------------------------------
# partial failure


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_partial_failure_raises_many_error_with_successes_and_per_item_errors(
        cluster: Cluster, writer: Client, many: Many) -> None:
    good1, bad, good2 = new_key(), new_key(), new_key()
    before = prepare_failure(cluster, many, bad)
    items = [many.item(good1, "A", 1), many.failing_item(bad), many.item(good2, "B", 3)]
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, items)
    exc = caught.value
    assert isinstance(exc, DatabaseError)
    assert_success_list(cluster, many, exc.success_list, [row(cluster, good1, "A", 1), row(cluster, good2, "B", 3)])
    assert len(exc.errors_list) == 1
    error = exc.errors_list[0]
    assert isinstance(error, CrudError)
    assert many.failure_text in error.err
    assert error.str.endswith(error.err)
    # operation_data is the failed tuple after flattening, with bucket_id filled
    assert error.operation_data == row(cluster, bad, "Bad" if many.failure_text == DUPLICATE else 42, 2)
    assert many.failure_text in str(exc)
    assert stored(cluster, "customers", good1) == row(cluster, good1, "A", 1)
    assert stored(cluster, "customers", good2) == row(cluster, good2, "B", 3)
    assert stored(cluster, "customers", bad) == before


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_when_every_item_fails_the_success_list_is_none(cluster: Cluster, writer: Client, many: Many) -> None:
    bad1, bad2 = new_key(), new_key()
    prepare_failure(cluster, many, bad1)
    prepare_failure(cluster, many, bad2)
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, [many.failing_item(bad1), many.failing_item(bad2)])
    assert caught.value.success_list is None
    assert [e.operation_data[0] for e in caught.value.errors_list] == [bad1, bad2]
    assert all(many.failure_text in e.err for e in caught.value.errors_list)


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_partial_failure_with_noreturn_has_no_success_list(cluster: Cluster, writer: Client, many: Many) -> None:
    good, bad = new_key(), new_key()
    prepare_failure(cluster, many, bad)
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, [many.item(good, "A", 1), many.failing_item(bad)], {"noreturn": True})
    assert caught.value.success_list is None
    assert [e.operation_data[0] for e in caught.value.errors_list] == [bad]
    assert stored(cluster, "customers", good) == row(cluster, good, "A", 1)


@pytest.mark.parametrize("many", OBJECT_MANY, ids=ids(OBJECT_MANY))
def test_object_that_cannot_be_flattened_is_reported_with_the_original_object(
        cluster: Cluster, writer: Client, many: Many) -> None:
    good1, bad, good2 = new_key(), new_key(), new_key()
    nameless = {"id": bad, "age": 2}
    items = [many.item(good1, "A", 1), [nameless, []] if many.upsert else nameless, many.item(good2, "B", 3)]
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, items)
    assert_success_list(cluster, many, caught.value.success_list,
                        [row(cluster, good1, "A", 1), row(cluster, good2, "B", 3)])
    error, = caught.value.errors_list
    assert error.class_name == many.error_class
    assert "Field \"name\" isn't nullable" in error.err
    assert error.operation_data == nameless
    assert stored(cluster, "customers", bad) is None


# ----------------------------------------------------------------------------
# stop_on_error, rollback_on_error


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_stop_on_error_keeps_earlier_items_and_skips_later_ones(
        cluster: Cluster, writer: Client, many: Many) -> None:
    good, bad, later1, later2 = new_key(), new_key(), new_key(), new_key()
    before = prepare_failure(cluster, many, bad)
    items = [many.item(good, "A", 1), many.failing_item(bad), many.item(later1, "C", 3), many.item(later2, "D", 4)]
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, items, {"stop_on_error": True})
    exc = caught.value
    assert_success_list(cluster, many, exc.success_list, [row(cluster, good, "A", 1)])
    assert [e.operation_data[0] for e in exc.errors_list] == [bad, later1, later2]
    assert many.failure_text in exc.errors_list[0].err
    assert all(NOT_PERFORMED in e.err for e in exc.errors_list[1:])
    assert exc.errors_list[1].operation_data == row(cluster, later1, "C", 3)
    assert stored(cluster, "customers", good) == row(cluster, good, "A", 1)
    assert stored(cluster, "customers", bad) == before
    assert stored(cluster, "customers", later1) is None
    assert stored(cluster, "customers", later2) is None


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_rollback_on_error_undoes_the_successful_items(cluster: Cluster, writer: Client, many: Many) -> None:
    good1, bad, good2 = new_key(), new_key(), new_key()
    before = prepare_failure(cluster, many, bad)
    items = [many.item(good1, "A", 1), many.failing_item(bad), many.item(good2, "B", 3)]
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, items, {"rollback_on_error": True})
    exc = caught.value
    assert exc.success_list is None
    assert [e.operation_data[0] for e in exc.errors_list] == [bad, good1, good2]
    assert many.failure_text in exc.errors_list[0].err
    assert all(ROLLED_BACK in e.err for e in exc.errors_list[1:])
    assert stored(cluster, "customers", good1) is None
    assert stored(cluster, "customers", good2) is None
    assert stored(cluster, "customers", bad) == before


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_stop_and_rollback_on_error_together_write_nothing(cluster: Cluster, writer: Client, many: Many) -> None:
    good, bad, later = new_key(), new_key(), new_key()
    prepare_failure(cluster, many, bad)
    items = [many.item(good, "A", 1), many.failing_item(bad), many.item(later, "C", 3)]
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, items, {"stop_on_error": True, "rollback_on_error": True})
    exc = caught.value
    assert exc.success_list is None
    assert [e.operation_data[0] for e in exc.errors_list] == [bad, later, good]
    assert NOT_PERFORMED in exc.errors_list[1].err
    assert ROLLED_BACK in exc.errors_list[2].err
    assert stored(cluster, "customers", good) is None
    assert stored(cluster, "customers", later) is None


# ----------------------------------------------------------------------------
# errors before any item is tried


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_empty_input_raises_many_error_asking_for_at_least_one_item(writer: Client, many: Many) -> None:
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, [])
    assert caught.value.success_list is None
    error, = caught.value.errors_list
    assert isinstance(error, CrudError)
    assert error.class_name == many.error_class
    assert error.err == f"At least one {'object' if many.objects else 'tuple'} expected"


@pytest.mark.parametrize("many", MANY, ids=ids(MANY))
def test_many_on_a_missing_space_raises_many_error(writer: Client, many: Many) -> None:
    with pytest.raises(CrudModuleManyError) as caught:
        many.call(writer, [many.item(new_key(), "x", 1)], space=NO_SPACE)
    assert caught.value.success_list is None
    error, = caught.value.errors_list
    assert (error.class_name, error.err) == (many.error_class, f'Space "{NO_SPACE}" doesn\'t exist')
