"""Streaming reads (``iterate`` / ``crud_iterate``) against the real replica set.

The rows live in a space of their own (``stream_test``, shaped like
``test_int``: ``id`` unsigned primary, ``name`` string with the non-unique
``by_name`` index), created and filled by one admin Lua call on the master and
dropped at the end, so rows other tests leave in ``test_int`` do not matter.
Names repeat in groups of ~135 rows, larger than the batch size, so the
non-unique paging has to carry a group across pages.  Every select a client
sends is counted by wrapping its ``select`` (the index lookup selects the
system spaces by number and is counted apart).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import Cluster

from tarantool_pool import Connection, ConnectionPool, Mode

pytestmark = pytest.mark.timeout(120)

SPACE = "stream_test"
EMPTY = "stream_empty"
ROWS = 5000
GROUPS = 37
BATCH = 128


def name_of(i: int) -> str:
    return "n%03d" % (i % GROUPS)


def master(cluster: Cluster) -> str:
    return next(name for name in sorted(cluster.instances) if cluster.admin(name, "box.info.ro") is False)


@pytest.fixture(scope="module")
def stream_space(cluster: Cluster) -> Iterator[str]:
    leader = master(cluster)
    cluster.admin(leader, f"""
        for _, name in ipairs({{'{SPACE}', '{EMPTY}'}}) do
            if box.space[name] then box.space[name]:drop() end
            local s = box.schema.space.create(name, {{format = {{
                {{name = 'id', type = 'unsigned'}}, {{name = 'name', type = 'string'}},
                {{name = 'value', type = 'any', is_nullable = true}}}}}})
            s:create_index('primary', {{type = 'TREE', parts = {{'id'}}}})
            s:create_index('by_name', {{type = 'TREE', unique = false, parts = {{'name'}}}})
        end
        box.begin()
        for i = 1, {ROWS} do
            box.space.{SPACE}:insert{{i, string.format('n%03d', i % {GROUPS}), i * 10}}
        end
        box.commit()
        return box.space.{SPACE}:len()
    """, timeout=30)
    cluster.wait_synced(30)
    try:
        yield SPACE
    finally:
        leader = master(cluster)
        cluster.admin(leader, f"box.space.{SPACE}:drop() box.space.{EMPTY}:drop()", timeout=30)


class SelectSpy:
    """Wraps ``target.select``: counts the selects of the streamed space, remembers their kwargs."""

    def __init__(self, target: Any) -> None:
        self.inner = target.select
        self.calls: list[dict[str, Any]] = []
        self.lookups = 0
        target.select = self

    def __call__(self, space: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(space, str):
            self.calls.append(kwargs)
        else:
            self.lookups += 1
        return self.inner(space, *args, **kwargs)


@pytest.fixture
def conn(cluster: Cluster, stream_space: str) -> Iterator[Connection]:
    inst = cluster.instances[master(cluster)]
    connection = Connection(inst.host, inst.port, user=cluster.user, password=cluster.password)
    try:
        yield connection
    finally:
        connection.close()


def by_name_order(ids: list[int], descending: bool = False) -> list[int]:
    return sorted(ids, key=lambda i: (name_of(i), i), reverse=descending)


def ids_of(rows: list[Any]) -> list[int]:
    return [row[0] for row in rows]


def test_primary_ascending_every_row_once_in_order(conn: Connection) -> None:
    spy = SelectSpy(conn)
    rows = list(conn.iterate(SPACE, batch_size=BATCH))
    assert ids_of(rows) == list(range(1, ROWS + 1))
    assert [row[1] for row in rows[:3]] == [name_of(1), name_of(2), name_of(3)]
    assert len(spy.calls) == math.ceil(ROWS / BATCH)
    assert all(call["limit"] == BATCH for call in spy.calls)
    assert [call["iterator"] for call in spy.calls[:2]] == ["GE", "GT"]
    assert spy.lookups == 2  # _vspace and _vindex, once per iteration


def test_secondary_non_unique_every_row_once_in_order(conn: Connection) -> None:
    spy = SelectSpy(conn)
    ids = ids_of(list(conn.iterate(SPACE, index="by_name", batch_size=BATCH)))
    assert len(ids) == len(set(ids)) == ROWS
    assert ids == by_name_order(list(range(1, ROWS + 1)))
    # Every full page brings batch_size new rows: the count is the same as for a unique index.
    assert math.ceil(ROWS / BATCH) <= len(spy.calls) <= math.ceil(ROWS / BATCH) + 1
    assert max(call["limit"] for call in spy.calls) <= BATCH + ROWS // GROUPS + 1


@pytest.mark.parametrize("batch_size", [1, 7, 135, 136, ROWS, ROWS + 1])
def test_secondary_batch_sizes_around_the_group_size(conn: Connection, batch_size: int) -> None:
    ids = ids_of(list(conn.iterate(SPACE, None, index=1, batch_size=batch_size)))
    assert ids == by_name_order(list(range(1, ROWS + 1)))


def test_descending_iterators(conn: Connection) -> None:
    assert ids_of(list(conn.iterate(SPACE, 4001, iterator="LT", batch_size=BATCH))) == list(range(4000, 0, -1))
    assert ids_of(list(conn.iterate(SPACE, [4001], iterator="le", batch_size=BATCH))) == list(range(4001, 0, -1))
    ids = ids_of(list(conn.iterate(SPACE, "n010", index="by_name", iterator="LE", batch_size=50)))
    expected = [i for i in by_name_order(list(range(1, ROWS + 1)), descending=True) if name_of(i) <= "n010"]
    assert ids == expected


def test_gt_from_a_key(conn: Connection) -> None:
    assert ids_of(list(conn.iterate(SPACE, ROWS - 300, iterator="GT", batch_size=BATCH))) == \
        list(range(ROWS - 299, ROWS + 1))
    ids = ids_of(list(conn.iterate(SPACE, "n030", index="by_name", iterator="GT", batch_size=40)))
    assert ids == [i for i in by_name_order(list(range(1, ROWS + 1))) if name_of(i) > "n030"]


def test_eq_pages_within_the_prefix(conn: Connection) -> None:
    spy = SelectSpy(conn)
    ids = ids_of(list(conn.iterate(SPACE, "n005", index="by_name", iterator="EQ", batch_size=16)))
    assert ids == [i for i in range(1, ROWS + 1) if i % GROUPS == 5]
    assert len(spy.calls) <= math.ceil(len(ids) / 16) + 1
    ids = ids_of(list(conn.iterate(SPACE, "n005", index="by_name", iterator="REQ", batch_size=16)))
    assert ids == [i for i in range(ROWS, 0, -1) if i % GROUPS == 5]


def test_eq_on_a_full_unique_key_is_one_request(conn: Connection) -> None:
    spy = SelectSpy(conn)
    assert list(conn.iterate(SPACE, 42, iterator="EQ", batch_size=1)) == [[42, name_of(42), 420]]
    assert list(conn.iterate(SPACE, ROWS + 1, iterator="EQ")) == []
    assert len(spy.calls) == 2


def test_empty_space_yields_nothing(conn: Connection) -> None:
    spy = SelectSpy(conn)
    assert list(conn.iterate(EMPTY, batch_size=BATCH)) == []
    assert list(conn.iterate(EMPTY, index="by_name", iterator="LE")) == []
    assert len(spy.calls) == 2


def test_only_one_page_is_fetched_ahead(conn: Connection) -> None:
    spy = SelectSpy(conn)
    stream = conn.iterate(SPACE, batch_size=BATCH)
    assert spy.calls == []  # nothing is sent before the first next()
    first = [next(stream) for _ in range(BATCH)]
    assert ids_of(first) == list(range(1, BATCH + 1))
    assert len(spy.calls) == 1
    next(stream)
    assert len(spy.calls) == 2
    stream.close()


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5, "10", None])
def test_bad_batch_size(conn: Connection, batch_size: Any) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        conn.iterate(SPACE, batch_size=batch_size)


@pytest.mark.parametrize("iterator", ["OVERLAPS", "BITS_ALL_SET", "NEIGHBOR", "nope", 5, None])
def test_bad_iterator(conn: Connection, iterator: Any) -> None:
    with pytest.raises(ValueError, match="pages with iterator"):
        conn.iterate(SPACE, iterator=iterator)


def test_bad_key_and_index(conn: Connection) -> None:
    with pytest.raises(ValueError, match="key must be"):
        conn.iterate(SPACE, {"id": 1})
    with pytest.raises(ValueError, match="key has 2 parts"):
        list(conn.iterate(SPACE, [1, 2]))
    with pytest.raises(Exception, match="no index"):
        list(conn.iterate(SPACE, index="missing"))
    with pytest.raises(Exception, match="no space"):
        list(conn.iterate("no_such_space"))


def test_pool_iterate_read_only_after_replication(cluster: Cluster, stream_space: str) -> None:
    cluster.wait_synced(30)
    pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    try:
        pool.wait(Mode.RO, timeout=10)
        spy = SelectSpy(pool)
        ids = ids_of(list(pool.iterate(SPACE, index="by_name", batch_size=500, mode=Mode.RO, timeout=10)))
        assert ids == by_name_order(list(range(1, ROWS + 1)))
        assert {call["mode"] for call in spy.calls} == {Mode.RO}
        assert len(spy.calls) == ROWS // 500 + 1
        assert ids_of(list(pool.iterate(SPACE, 10, iterator="LT"))) == list(range(9, 0, -1))
        assert list(pool.iterate(EMPTY, mode=Mode.ANY)) == []
        with pytest.raises(ValueError):
            pool.iterate(SPACE, batch_size=0)
    finally:
        pool.close()


# -- crud_iterate --------------------------------------------------------------------------


@pytest.fixture
def customer_ids(cluster: Cluster) -> Iterator[list[int]]:
    base = random.randrange(1 << 30) + (1 << 41)
    ids = list(range(base, base + 50))
    leader = master(cluster)
    cluster.admin(leader, f"for i = {ids[0]}, {ids[-1]} do "
                          f"box.space.customers:insert{{i, 1, 'C' .. i, i % 90}} end")
    cluster.wait_synced(30)
    try:
        yield ids
    finally:
        cluster.admin(master(cluster), f"for i = {ids[0]}, {ids[-1]} do box.space.customers:delete(i) end")


@pytest.mark.parametrize("target", ["connection", "pool"])
def test_crud_iterate(cluster: Cluster, customer_ids: list[int], target: str) -> None:
    if target == "connection":
        inst = cluster.instances[master(cluster)]
        client: Any = Connection(inst.host, inst.port, user=cluster.user, password=cluster.password)
    else:
        client = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    pages: list[dict[str, Any]] = []
    inner = client.crud_select

    def spy(space: str, conditions: Any, opts: dict[str, Any], **kwargs: Any) -> Any:
        pages.append(dict(opts))
        return inner(space, conditions, opts, **kwargs)

    client.crud_select = spy
    try:
        first, last = customer_ids[0], customer_ids[-1]
        rows = list(client.crud_iterate("customers", [[">=", "id", first]], batch_size=7))
        assert ids_of(rows) == customer_ids
        assert len(pages) == math.ceil(len(customer_ids) / 7) + (len(customer_ids) % 7 == 0)
        assert all(page["first"] == 7 for page in pages)
        assert "after" not in pages[0] and pages[1]["after"][0] == customer_ids[6]

        descending = [["<=", "id", last], [">=", "id", first]]
        assert ids_of(list(client.crud_iterate("customers", descending, batch_size=8))) == customer_ids[::-1]

        after_row = rows[9]
        opts = {"after": after_row, "fields": ["id", "name"]}
        rows = list(client.crud_iterate("customers", [[">=", "id", first]], batch_size=5, opts=opts))
        assert ids_of(rows) == customer_ids[10:]
        assert opts == {"after": after_row, "fields": ["id", "name"]}  # the caller's opts are not changed

        assert list(client.crud_iterate("customers", [[">", "id", last]], batch_size=5)) == []
        with pytest.raises(ValueError, match="batch_size"):
            client.crud_iterate("customers", batch_size=0)
        with pytest.raises(ValueError, match="first"):
            client.crud_iterate("customers", opts={"first": 3})
    finally:
        client.close()


# -- the asyncio facade: the same pagers, driven by awaited requests ----------------------------


async def collect(rows: Any) -> list[Any]:
    return [row async for row in rows]


def test_aio_pool_iterate_yields_what_the_sync_pool_yields_page_by_page(cluster: Cluster, stream_space: str) -> None:
    from support import run

    from tarantool_pool import aio

    cluster.wait_synced(30)
    sync_pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    pool = aio.ConnectionPool.from_sync(sync_pool)
    try:
        spy = SelectSpy(pool)
        cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            ((SPACE,), {"batch_size": BATCH}),
            ((SPACE,), {"index": "by_name", "batch_size": 100, "mode": Mode.RO}),  # groups span pages
            ((SPACE, "n010"), {"index": "by_name", "iterator": "LE", "batch_size": 50}),
            ((SPACE, "n005"), {"index": "by_name", "iterator": "EQ", "batch_size": 40}),
            ((SPACE, 4001), {"iterator": "LT", "batch_size": BATCH}),
            ((EMPTY,), {}),
        ]
        pages_of_first_case: list[dict[str, Any]] = []
        for args, kwargs in cases:
            expected = ids_of(list(sync_pool.iterate(*args, **kwargs)))
            spy.calls.clear()
            assert ids_of(run(collect(pool.iterate(*args, **kwargs)))) == expected, (args, kwargs)
            pages_of_first_case = pages_of_first_case or list(spy.calls)
        # Paged: one awaited select per page of BATCH rows, never the whole space at once.
        assert len(pages_of_first_case) == math.ceil(ROWS / BATCH)
        assert all(call["limit"] == BATCH for call in pages_of_first_case)
        with pytest.raises(ValueError, match="batch_size"):
            pool.iterate(SPACE, batch_size=0)  # checked at the call, before anything is awaited
        with pytest.raises(ValueError, match="iterator"):
            pool.iterate(SPACE, iterator="BITS_ALL_SET")
    finally:
        sync_pool.close()


def test_aio_connection_iterate_and_crud_iterate(cluster: Cluster, stream_space: str,
                                                 customer_ids: list[int]) -> None:
    from support import run

    from tarantool_pool import aio

    inst = cluster.instances[master(cluster)]

    async def scenario() -> None:
        async with aio.Connection(inst.host, inst.port, user=cluster.user, password=cluster.password) as conn:
            rows = await collect(conn.iterate(SPACE, index="by_name", batch_size=BATCH))
            assert ids_of(rows) == by_name_order(list(range(1, ROWS + 1)))
            first = customer_ids[0]
            crud_rows = await collect(conn.crud_iterate("customers", [[">=", "id", first]], batch_size=7))
            assert ids_of(crud_rows) == customer_ids
            opts = {"after": crud_rows[9]}
            later = await collect(conn.crud_iterate("customers", [[">=", "id", first]], batch_size=5, opts=opts))
            assert ids_of(later) == customer_ids[10:]
            with pytest.raises(ValueError, match="first"):
                conn.crud_iterate("customers", opts={"first": 3})

    run(scenario())
