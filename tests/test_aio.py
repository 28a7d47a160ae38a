"""tarantool_pool.aio against the real replica set: the same API and the same results as the sync classes.

Every request method of the sync pool (and of the sync Connection) exists on
the asyncio twin as a coroutine with the same signature, and answers the
same request with a value of the same type and content; errors are the
same classes.  No pytest-asyncio: each test drives its coroutine with
:func:`run` (``asyncio.run`` with an overall bound), which also means a pool
is used from many successive event loops, as an application may.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from cluster import Cluster
from support import run

from tarantool_pool import Connection, ConnectionPool, CrudResult, Mode, Response, aio
from tarantool_pool import protocol as p
from tarantool_pool.aio.wire import LoopLink
from tarantool_pool.errors import (
    CrudModuleError,
    DuplicateKeyError,
    InterfaceError,
    NoSuchProcedureError,
    PoolClosedError,
    PoolTopologyError,
    SchemaError,
    UnknownOutcomeError,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_leaked_readers")]


# test_int / developers primary keys private to this module.
_keys = itertools.count(random.SystemRandom().randrange(3 * 10**12, 4 * 10**12, 10**7))


def new_key() -> int:
    return next(_keys)


@pytest.fixture(scope="module")
def sync_pool(cluster: Cluster) -> Iterator[ConnectionPool]:
    with ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password) as pool:
        yield pool


@pytest.fixture(scope="module")
def apool(cluster: Cluster) -> Iterator[aio.ConnectionPool]:
    """An aio pool of its own (its own units and connections), used from one event loop per test."""
    pool = aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    run(pool.connect())
    yield pool
    run(pool.close())


# ----------------------------------------------------------------------------
# the same API


def public_methods(cls: type) -> dict[str, Any]:
    return {name: value for name, value in inspect.getmembers(cls) if not name.startswith("_") and callable(value)}


def parameters(function: Any) -> list[tuple[str, Any, Any, Any]]:
    """(name, kind, default, annotation) of each parameter after ``self``."""
    params = list(inspect.signature(function).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(param.name, param.kind, param.default, param.annotation) for param in params]


# Sync-only on purpose (docs/asyncio.md): streaming generators and pinned sessions.
POOL_SYNC_ONLY: set[str] = set()
CONNECTION_SYNC_ONLY = {"space", "ensure_connected", "wait_idle"}
STREAMING = {"iterate", "crud_iterate"}  # plain methods returning async iterators (tests/test_streaming.py)
NOT_COROUTINES = {"from_sync", "add", "add_listener", "remove_listener", "describe", "discover", "get_stats",
                  "is_closed", "flush_schema", "session"} | STREAMING


@pytest.mark.parametrize("sync_class, aio_class, sync_only", [
    (ConnectionPool, aio.ConnectionPool, POOL_SYNC_ONLY),
    (Connection, aio.Connection, CONNECTION_SYNC_ONLY),
], ids=["pool", "connection"])
def test_every_sync_method_has_an_async_twin_with_the_same_signature(
        sync_class: type, aio_class: type, sync_only: set[str]) -> None:
    sync_methods = public_methods(sync_class)
    aio_methods = public_methods(aio_class)
    assert sync_only <= set(sync_methods)
    missing = set(sync_methods) - sync_only - set(aio_methods)
    assert not missing, f"no async twin: {sorted(missing)}"
    for name in sorted(set(sync_methods) - sync_only):
        assert parameters(aio_methods[name]) == parameters(sync_methods[name]), name
    assert parameters(aio_class.__init__) == parameters(sync_class.__init__)
    assert inspect.signature(aio_class.__init__).return_annotation == "None"


def test_request_methods_are_coroutines_and_keep_the_sync_default_modes(cluster: Cluster) -> None:
    pool = aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password, connect_now=False)
    try:
        for name in set(public_methods(aio.ConnectionPool)) - NOT_COROUTINES:
            assert inspect.iscoroutinefunction(getattr(pool, name)), name
        for name in NOT_COROUTINES & set(public_methods(aio.ConnectionPool)):
            assert not inspect.iscoroutinefunction(getattr(pool, name)), name

        def default_mode(method: str) -> Any:
            return inspect.signature(getattr(aio.ConnectionPool, method)).parameters["mode"].default

        for method in ("insert", "replace", "update", "upsert", "delete"):
            assert default_mode(method) is Mode.RW, method
        assert default_mode("select") is Mode.ANY
        for method in ("call", "eval", "execute", "ping"):
            assert default_mode(method) is None, method
            with pytest.raises(ValueError, match="specify 'mode'"):
                run(getattr(pool, method)("x"))
    finally:
        run(pool.close())


def test_async_with_connects_serves_and_closes_the_pool(cluster: Cluster) -> None:
    async def scenario() -> aio.ConnectionPool:
        async with aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password) as pool:
            assert "rw" in pool.describe()
            assert (await pool.call("whoami", mode=Mode.RW))[0]["name"] == "inst1"
            assert (await pool.call("whoami", mode=Mode.RO))[0]["name"] in ("inst2", "inst3")
        return pool

    pool = run(scenario())
    assert pool.is_closed() and pool.sync.is_closed()
    assert pool.get_stats()["closed"] is True
    with pytest.raises(PoolClosedError):
        run(pool.call("echo", 1, mode=Mode.ANY))


def test_from_sync_shares_the_engine_units_and_counters(sync_pool: ConnectionPool) -> None:
    pool = aio.ConnectionPool.from_sync(sync_pool)
    assert pool.sync is sync_pool
    before = sum(unit["requests"] for unit in sync_pool.get_stats()["instances"].values())
    assert run(pool.call("echo", "shared", mode=Mode.ANY)).data == ["shared"]
    after = sum(unit["requests"] for unit in pool.get_stats()["instances"].values())
    assert after == before + 1


# ----------------------------------------------------------------------------
# the same results


def same(expected: Any, got: Any) -> None:
    """Same type and same content (a Response by its data and SQL fields, a crud result by its fields)."""
    assert type(got) is type(expected), (expected, got)
    if isinstance(expected, Response):
        assert got.data == expected.data
        assert (got.rowcount, got.return_code) == (expected.rowcount, expected.return_code)
        if expected.body.get(p.KEY_SQL_INFO) is not None:
            assert got.affected_row_count == expected.affected_row_count
    elif isinstance(expected, CrudResult):
        assert vars(got) == vars(expected)
    elif not isinstance(expected, float):  # ping(): a round trip in seconds
        assert got == expected


# (name, admin Lua that resets the state before each run, the call with a key)
Case = tuple[str, str, Callable[[Any, int], Any]]
CASES: list[Case] = [
    ("ping", "", lambda c, k: c.ping(notime=True, mode=Mode.ANY)),
    ("ping seconds", "", lambda c, k: c.ping(mode=Mode.RW)),
    ("call", "", lambda c, k: c.call("echo", k, "x", [1, 2], mode=Mode.ANY)),
    ("call one list argument", "", lambda c, k: c.call("echo", [k, "x"], mode=Mode.RO)),
    ("eval", "", lambda c, k: c.eval("return ..., box.info.ro", k, mode=Mode.RW)),
    ("execute", "", lambda c, k: c.execute("SELECT ? AS a, ? AS b", [k, "x"], mode=Mode.ANY)),
    ("execute write", "box.space.test_int:delete({k})",
     lambda c, k: c.execute('INSERT INTO "test_int" VALUES (?, ?, NULL)', [k, "sql"], mode=Mode.RW)),
    ("select by name", "box.space.test_int:replace{{{k}, 'n{k}'}}",
     lambda c, k: c.select("test_int", k, mode=Mode.RW)),
    ("select index iterator limit", "box.space.test_int:replace{{{k}, 'n{k}'}}",
     lambda c, k: c.select("test_int", [f"n{k}"], index="by_name", iterator="GE", limit=1, mode=Mode.RW)),
    ("select by number", "box.space.test_int:replace{{{k}, 'n{k}'}}",
     lambda c, k: c.select(512, [k], index=0, mode=Mode.RW)),
    ("insert", "box.space.test_int:delete({k})", lambda c, k: c.insert("test_int", [k, "ins", {"a": 1}])),
    ("replace", "box.space.test_int:replace{{{k}, 'old'}}", lambda c, k: c.replace("test_int", (k, "new"))),
    ("update by field name", "box.space.test_int:replace{{{k}, 'old', 1}}",
     lambda c, k: c.update("test_int", k, [("=", "name", "upd"), ("+", 2, 41)])),
    ("upsert", "box.space.test_int:replace{{{k}, 'old', 1}}",
     lambda c, k: c.upsert("test_int", [k, "ups", 0], [("+", "value", 1)])),
    ("delete", "box.space.test_int:replace{{{k}, 'gone'}}", lambda c, k: c.delete("test_int", k)),
    ("crud_insert", "box.space.developers:delete({k})",
     lambda c, k: c.crud_insert("developers", [k, None, "Ada", None, 36], mode=Mode.RW)),
    ("crud_insert_object", "box.space.developers:delete({k})",
     lambda c, k: c.crud_insert_object("developers", {"id": k, "name": "Ada"}, mode=Mode.RW)),
    ("crud_insert_many", "box.space.developers:delete({k}) box.space.developers:delete({k} + 1)",
     lambda c, k: c.crud_insert_many("developers", [[k, None, "A", None, 1], [k + 1, None, "B", None, 2]],
                                     mode=Mode.RW)),
    ("crud_insert_object_many", "box.space.developers:delete({k})",
     lambda c, k: c.crud_insert_object_many("developers", [{"id": k, "name": "A"}], mode=Mode.RW)),
    ("crud_replace", "box.space.developers:delete({k})",
     lambda c, k: c.crud_replace("developers", [k, None, "R", None, 1], mode=Mode.RW)),
    ("crud_replace_many", "box.space.developers:delete({k})",
     lambda c, k: c.crud_replace_many("developers", [[k, None, "R", None, 1]], mode=Mode.RW)),
    ("crud_replace_object_many", "box.space.developers:delete({k})",
     lambda c, k: c.crud_replace_object_many("developers", [{"id": k, "name": "R"}], mode=Mode.RW)),
    ("crud_upsert_object", "box.space.developers:delete({k})",
     lambda c, k: c.crud_upsert_object("developers", {"id": k, "name": "U", "age": 1}, [["+", "age", 1]],
                                       mode=Mode.RW)),
    ("crud_upsert_many", "box.space.developers:delete({k})",
     lambda c, k: c.crud_upsert_many("developers", [[[k, None, "U", None, 1], [["+", "age", 1]]]], mode=Mode.RW)),
    ("crud_upsert_object_many", "box.space.developers:delete({k})",
     lambda c, k: c.crud_upsert_object_many("developers", [[{"id": k, "name": "U", "age": 1}, [["+", "age", 1]]]],
                                            mode=Mode.RW)),
    ("crud_get", "box.space.developers:delete({k})",
     lambda c, k: c.crud_get("developers", k, mode=Mode.RW)),
    ("crud_select", "", lambda c, k: c.crud_select("customers", [[">=", "id", 0]], {"first": 2}, mode=Mode.RW)),
    ("crud_update", "box.space.developers:delete({k})",
     lambda c, k: c.crud_update("developers", k, [["=", "age", 1]], mode=Mode.RW)),
    ("crud_replace_object", "box.space.developers:delete({k})",
     lambda c, k: c.crud_replace_object("developers", {"id": k, "name": "Grace", "age": 85}, mode=Mode.RW)),
    ("crud_upsert", "box.space.developers:delete({k})",
     lambda c, k: c.crud_upsert("developers", [k, None, "L", None, 20], [["+", "age", 2]], mode=Mode.RW)),
    ("crud_delete", "box.space.developers:delete({k})",
     lambda c, k: c.crud_delete("developers", k, mode=Mode.RW)),
    ("crud_count", "", lambda c, k: c.crud_count("customers", [[">=", "id", 0]], mode=Mode.RW)),
    ("crud_len", "", lambda c, k: c.crud_len("customers", mode=Mode.RW)),
    ("crud_min", "", lambda c, k: c.crud_min("customers", "primary_index", mode=Mode.RW)),
    ("crud_max", "", lambda c, k: c.crud_max("customers", "primary_index", mode=Mode.RW)),
    ("crud_truncate", "", lambda c, k: c.crud_truncate("no_bucket", mode=Mode.RW)),
    ("crud_storage_info", "", lambda c, k: c.crud_storage_info(mode=Mode.RW)),
    ("crud_stats", "", lambda c, k: c.crud_stats(mode=Mode.RW)),
    ("crud_unflatten_rows", "",
     lambda c, k: c.crud_unflatten_rows([[k, "x"]], [{"name": "id"}, {"name": "name"}])),
]


def test_the_cases_cover_every_request_method_of_the_sync_pool() -> None:
    requests = {name for name in public_methods(ConnectionPool)
                if name in ("ping", "call", "eval", "execute", "select", "insert", "replace", "update", "upsert",
                            "delete") or name.startswith("crud_")} - POOL_SYNC_ONLY - STREAMING
    assert requests == {case[0].split()[0] for case in CASES}


@pytest.mark.parametrize("name, reset, call", CASES, ids=[case[0] for case in CASES])
def test_every_method_answers_like_the_sync_pool(
        cluster: Cluster, sync_pool: ConnectionPool, apool: aio.ConnectionPool,
        name: str, reset: str, call: Callable[[Any, int], Any]) -> None:
    key = new_key()
    if reset:
        cluster.admin("inst1", reset.format(k=key))
    expected = call(sync_pool, key)
    if reset:
        cluster.admin("inst1", reset.format(k=key))
    got = run(call(apool, key))
    same(expected, got)


ERROR_CASES: list[Case] = [
    ("duplicate key", "box.space.test_int:replace{{{k}, 'x'}}", lambda c, k: c.insert("test_int", [k, "dup"])),
    ("unknown space", "", lambda c, k: c.select("no_such_space", k)),
    ("unknown function", "", lambda c, k: c.call("no_such_function", mode=Mode.RW)),
    ("crud error", "box.space.developers:replace{{{k}, 1, 'x'}}",
     lambda c, k: c.crud_insert("developers", [k, None, "again", None, 1], mode=Mode.RW)),
    ("bad argument", "", lambda c, k: c.select("test_int", key={"not": "a key"})),
    ("bad mode", "", lambda c, k: c.select("test_int", k, mode="fast")),
]


@pytest.mark.parametrize("name, reset, call", ERROR_CASES, ids=[case[0] for case in ERROR_CASES])
def test_errors_are_the_same_classes_with_the_same_messages(
        cluster: Cluster, sync_pool: ConnectionPool, apool: aio.ConnectionPool,
        name: str, reset: str, call: Callable[[Any, int], Any]) -> None:
    key = new_key()
    if reset:
        cluster.admin("inst1", reset.format(k=key))
    with pytest.raises(Exception) as expected:
        call(sync_pool, key)
    with pytest.raises(Exception) as got:
        run(call(apool, key))
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value)
    assert isinstance(expected.value, (DuplicateKeyError, SchemaError, NoSuchProcedureError, CrudModuleError,
                                       ValueError)), repr(expected.value)


def test_no_instance_for_the_mode_raises_topology_error_after_the_selection_deadline(cluster: Cluster) -> None:
    replicas = [cluster.instances[name].addr for name in ("inst2", "inst3")]

    async def scenario() -> None:
        async with aio.ConnectionPool(replicas, user=cluster.user, password=cluster.password) as pool:
            with pytest.raises(PoolTopologyError, match="RW"):
                await pool.insert("test_int", [new_key(), "nowhere"], selection_timeout=0)
            with pytest.raises(PoolTopologyError, match="RW"):
                await pool.insert("test_int", [new_key(), "nowhere"], selection_timeout=0.2)
            with pytest.raises(PoolTopologyError, match="RW"):
                await pool.wait(Mode.RW, timeout=0.2)
            await pool.wait(Mode.RO, timeout=5)
            assert (await pool.call("whoami", mode=Mode.PREFER_RW))[0]["name"] in ("inst2", "inst3")

    run(scenario())


# ----------------------------------------------------------------------------
# aio.Connection, schema by name


def test_connection_async_with_and_every_request_type(cluster: Cluster, conn: Connection) -> None:
    inst = cluster.instances["inst1"]
    key = new_key()

    async def scenario() -> None:
        async with aio.Connection(inst.host, inst.port, user=cluster.user, password=cluster.password) as aconn:
            assert await aconn.ping(notime=True) == "Success"
            same(conn.call("echo", 1, "a"), await aconn.call("echo", 1, "a"))
            same(conn.eval("return 1 + ...", 2), await aconn.eval("return 1 + ...", 2))
            same(conn.insert("test_int", [key, "one"]), await aconn.replace("test_int", [key, "one"]))
            same(conn.select("test_int", key), await aconn.select("test_int", key))
            same(conn.update("test_int", key, [("=", "name", "two")]),
                 await aconn.update("test_int", key, [("=", "name", "two")]))
            same(conn.execute("SELECT 1 AS x"), await aconn.execute("SELECT 1 AS x"))
            prepared = await aconn.prepare("SELECT ? AS y")
            same(conn.execute("SELECT 5 AS y"), await aconn.execute(prepared.stmt_id, [5]))
            await aconn.unprepare(prepared.stmt_id)
            same(conn.crud_get("customers", 1), await aconn.crud_get("customers", 1))
            deleted = await aconn.delete("test_int", key)
            assert isinstance(deleted, Response) and deleted.data == [[key, "two"]]
            assert conn.select("test_int", key).data == []
            assert aconn.in_flight == 0
        assert aconn.is_closed()

    run(scenario())


def test_fresh_connection_loads_the_schema_once_for_many_concurrent_requests_by_name(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = cluster.instances["inst1"]
    key = new_key()
    cluster.admin("inst1", f"box.space.test_int:replace{{{key}, 'named'}}")
    sent: list[int] = []

    async def scenario() -> None:
        aconn = aio.Connection(inst.host, inst.port, user=cluster.user, password=cluster.password)
        try:
            await aconn.connect()
            link = aconn.sync._link
            assert link is not None
            original = link.send  # the schema loads go out on the sync link
            original_on_loop = LoopLink.send  # the requests on this loop's own socket

            def spy(data: bytes) -> None:
                sent.extend(space_ids(data))
                original(data)

            def spy_on_loop(self: LoopLink, data: bytes) -> None:
                sent.extend(space_ids(data))
                original_on_loop(self, data)

            monkeypatch.setattr(link, "send", spy)
            monkeypatch.setattr(LoopLink, "send", spy_on_loop)
            results = await asyncio.gather(*(aconn.select("test_int", key, index="primary") for _ in range(50)))
            assert all(result.data == [[key, "named"]] for result in results)
        finally:
            await aconn.close()

    run(scenario())
    assert sent.count(281) == 1 and sent.count(289) == 1, sent  # _vspace, _vindex: one load
    assert sent.count(512) == 50


def space_ids(data: bytes) -> list[int]:
    """The space id of every SELECT framed in ``data``."""
    found = []
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    items = list(unpacker)
    # size, header, body, size, header, body, ...
    for header, body in zip(items[1::3], items[2::3]):
        if header[p.KEY_CODE] == p.SELECT:
            found.append(body[p.KEY_SPACE_ID])
    return found


def test_a_space_recreated_with_a_new_id_is_used_after_one_resend_on_the_async_path(
        cluster: Cluster, conn: Connection) -> None:
    name = f"aio_recreated_{os.getpid()}_{random.SystemRandom().randrange(10**6)}"

    def create(fields: list[str], space_id: int | None = None) -> int:
        options: dict[str, Any] = {"format": [{"name": field, "type": "unsigned" if n == 0 else "any",
                                               "is_nullable": n > 0} for n, field in enumerate(fields)]}
        if space_id is not None:
            options["id"] = space_id
        return int(cluster.admin("inst1", f"local s = box.schema.space.create('{name}', require('json').decode("
                                          f"[[{json.dumps(options)}]])) s:create_index('pk') return s.id"))

    old_id = create(["id", "a"])
    aconn = aio.Connection.from_sync(conn)
    try:
        run(aconn.insert(name, [1, "old"]))  # the schema now maps the name to old_id
        assert conn._schema is not None and conn._schema.space_id(name) == old_id
        cluster.admin("inst1", f"box.space.{name}:drop()")
        new_id = create(["id", "b"], space_id=old_id + 1000)
        assert run(aconn.insert(name, [2, "new"])).data == [[2, "new"]]  # ER 109, reload, re-sent once
        assert run(aconn.update(name, 2, [("=", "b", "by new field")])).data == [[2, "by new field"]]
        assert conn._schema is not None and conn._schema.space_id(name) == new_id
        assert cluster.admin("inst1", f"box.space.{name}:select{{}}") == [[2, "by new field"]]
    finally:
        cluster.admin("inst1", f"if box.space.{name} then box.space.{name}:drop() end")


# -- sessions: async with pool.session(mode) ---------------------------------------------------


def test_async_session_pins_one_instance_and_ignores_mode_per_call(apool: aio.ConnectionPool) -> None:
    async def scenario() -> None:
        async def who(target: Any, **kwargs: Any) -> str:
            return str((await target.call("whoami", **kwargs)).data[0]["name"])

        assert len({await who(apool, mode=Mode.RO) for _ in range(6)}) == 2  # the pool alone round-robins
        async with apool.session(mode=Mode.RO) as session:
            names = {await who(session) for _ in range(10)}
            assert len(names) == 1 and names <= {"inst2", "inst3"}
            assert session.name in apool.sync.pool
        key = new_key()
        async with apool.session() as session:  # RW by default: the master
            assert session.mode is Mode.RW
            assert {await who(session, mode=Mode.RO) for _ in range(4)} == {"inst1"}  # mode= is ignored
            await session.replace("test_int", [key, "session", None])
            await session.update("test_int", [key], [["=", 1, "updated"]])
            assert (await session.select("test_int", [key], limit=1)).data[0][1] == "updated"
            assert (await session.execute("SELECT 1")).data == [[1]]
            assert (await session.eval("return ...", 7)).data == [7]
            await session.upsert("test_int", [key, "x", None], [["=", 1, "upserted"]])
            assert (await session.select("test_int", key)).data[0][1] == "upserted"
            await session.delete("test_int", [key])
            assert (await session.select("test_int", [key])).data == []
            assert await session.ping(notime=True) == "Success"
            with pytest.raises(TypeError, match="offest"):
                await session.call("whoami", offest=1)
            with pytest.raises(UnknownOutcomeError):  # a write that missed its quorum: as through the pool
                await session.call("raise_code", 216, "quorum timed out")

    run(scenario())


def test_async_session_refuses_use_outside_its_block_and_a_second_entry(apool: aio.ConnectionPool) -> None:
    async def scenario() -> None:
        session = apool.session(Mode.ANY)
        with pytest.raises(InterfaceError, match="with block"):
            await session.ping()
        async with session:
            await session.ping()
        with pytest.raises(InterfaceError, match="session is over"):
            await session.ping()
        with pytest.raises(InterfaceError, match="entered once"):
            await session.__aenter__()

    run(scenario())


def test_async_session_never_moves_when_its_instance_stops_fitting(cluster: Cluster) -> None:
    from tarantool_pool.pool import InstanceState, Status

    async def scenario() -> None:
        async with aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password,
                                      refresh_delay=60) as pool:
            async with pool.session(Mode.RW) as session:
                await session.ping()
                unit = pool.sync.pool[str(session.name)]
                unit._set_state(InstanceState(Status.HEALTHY, True), None)  # the pool now sees it read-only
                with pytest.raises(PoolTopologyError, match="never moves"):
                    await session.ping()
            async with aio.ConnectionPool(cluster.addrs()[1:], user=cluster.user, password=cluster.password) as ro:
                with pytest.raises(PoolTopologyError):
                    await ro.session(Mode.RW, selection_timeout=0).__aenter__()

    run(scenario())
