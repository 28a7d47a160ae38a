"""ConnectionPool against the real replica set: the compatible API, routing,
configuration errors, topology errors and close semantics.

Every test asks the instances who they are (the ``whoami`` Lua function of
test-cluster/instance.lua) instead of trusting the pool's own view.  Tests
here do not inject faults; see test_pool_failover.py for those.
"""

from __future__ import annotations

import inspect
import itertools
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cluster import Cluster
from support import READER_PREFIX, wait_for

from tarantool_pool import Connection, Response
from tarantool_pool.connection_pool import ConnectionPool, Mode, PoolTolopogyError
from tarantool_pool.errors import ConfigurationError, PoolClosedError, PoolTopologyError
from tarantool_pool.pool import PoolUnit, RoundRobinStrategy, Status

pytestmark = pytest.mark.timeout(120)

_keys = itertools.count(random.randrange(1 << 40) + (1 << 41))


def new_key() -> int:
    """A test_int primary key that no other test of this session uses."""
    return next(_keys)


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tarantool_pool-")}


def unused_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (the kernel just handed it out)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])




def who(pool: ConnectionPool, mode: Any) -> str:
    """The name of the instance that served one ``whoami`` call in ``mode``."""
    return str(pool.call("whoami", mode=mode)[0]["name"])


def key_of(cluster: Cluster, name: str) -> str:
    return cluster.instances[name].uri


# ----------------------------------------------------------------------------
# the compatible API


@pytest.mark.timeout(10)
def test_compatible_import_path_exports_pool_mode_and_misspelled_topology_error() -> None:
    import tarantool_pool
    import tarantool_pool.connection_pool as compat

    assert compat.ConnectionPool is tarantool_pool.ConnectionPool
    assert compat.Mode is tarantool_pool.Mode
    assert compat.PoolTolopogyError is PoolTopologyError
    assert "PoolTolopogyError" in compat.__all__


@pytest.mark.timeout(10)
def test_mode_values_match_tarantool_python() -> None:
    assert {m.name: m.value for m in Mode} == {"ANY": 1, "RW": 2, "RO": 3, "PREFER_RW": 4, "PREFER_RO": 5}


@pytest.mark.timeout(10)
def test_constructor_parameters_and_defaults_match_tarantool_python() -> None:
    expected = [
        ("addrs", inspect.Parameter.empty), ("user", None), ("password", None), ("socket_timeout", None),
        ("reconnect_max_attempts", 0), ("reconnect_delay", 0), ("connect_now", True), ("encoding", "utf-8"),
        ("call_16", False), ("connection_timeout", None), ("strategy_class", RoundRobinStrategy),
        ("refresh_delay", 1), ("fetch_schema", True),
    ]
    params = list(inspect.signature(ConnectionPool.__init__).parameters.values())[1:]
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == expected
    # Anything beyond the compatible list must be keyword-only, so positional calls keep working.
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[len(expected):])


@pytest.mark.timeout(10)
def test_request_methods_default_modes_and_require_mode_where_compatible_api_does() -> None:
    def default_mode(method: str) -> Any:
        return inspect.signature(getattr(ConnectionPool, method)).parameters["mode"].default

    for method in ("insert", "replace", "update", "upsert", "delete"):
        assert default_mode(method) is Mode.RW, method
    assert default_mode("select") is Mode.ANY
    for method in ("call", "eval", "execute", "ping"):
        assert default_mode(method) is None, method


@pytest.mark.timeout(120)
def test_pool_maps_host_port_to_units_with_connections(cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    assert sorted(pool.pool) == sorted(inst.uri for inst in cluster.instances.values())
    for name, unit in pool.pool.items():
        assert isinstance(unit, PoolUnit)
        assert isinstance(unit.conn, Connection)
        assert f"{unit.conn.host}:{unit.conn.port}" == name
        assert unit.state.status is Status.HEALTHY
    assert repr(pool).count(" rw") == 1 and repr(pool).count(" ro") == 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method, args", [
    ("call", ("echo", 1)),
    ("eval", ("return 1",)),
    ("execute", ("SELECT 1",)),
    ("ping", ()),
])
def test_call_eval_execute_ping_without_mode_raise_value_error(
        make_pool: Callable[..., ConnectionPool], method: str, args: tuple[Any, ...]) -> None:
    pool = make_pool()
    with pytest.raises(ValueError) as info:
        getattr(pool, method)(*args)
    assert str(info.value) == "Please, specify 'mode' keyword argument"


@pytest.mark.timeout(120)
def test_ping_returns_seconds_or_success(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    for mode in Mode:
        seconds = pool.ping(mode=mode)
        assert isinstance(seconds, float) and 0 <= seconds < 5
        assert pool.ping(notime=True, mode=mode) == "Success"


@pytest.mark.timeout(120)
def test_results_are_connection_responses(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    key = new_key()
    results = [
        pool.call("echo", 1, "two", mode=Mode.ANY),
        pool.eval("return ...", 3, 4, mode=Mode.RO),
        pool.execute("SELECT 1 + 1", mode=Mode.ANY),
        pool.insert("test_int", [key, "resp"]),
        pool.select("test_int", key, mode=Mode.RW),
        pool.delete("test_int", key),
    ]
    assert all(isinstance(r, Response) for r in results)
    assert results[0].data == [1, "two"]
    assert list(results[1]) == [3, 4]
    assert results[2].data == [[2]]
    assert results[3].data == results[4].data == results[5].data == [[key, "resp"]]


@pytest.mark.timeout(120)
def test_write_methods_default_to_rw_and_select_to_any(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    """Proved by behaviour: a pool of the two replicas only cannot write by default but reads."""
    replicas = make_pool([cluster.instances["inst2"].addr, cluster.instances["inst3"].addr])
    key = new_key()
    writes: list[Callable[[], Any]] = [
        lambda: replicas.insert("test_int", [key, "x"]),
        lambda: replicas.replace("test_int", [key, "x"]),
        lambda: replicas.update("test_int", key, [("=", 1, "y")]),
        lambda: replicas.upsert("test_int", [key, "x"], [("=", 1, "y")]),
        lambda: replicas.delete("test_int", key),
    ]
    for write in writes:
        with pytest.raises(PoolTopologyError, match=r"\bRW\b"):
            write()
    assert replicas.select("test_int", key).data == []  # ANY: served by a replica
    assert who(replicas, Mode.ANY) in {"inst2", "inst3"}


@pytest.mark.timeout(120)
def test_crud_and_write_methods_work_with_names_and_select_takes_offset_limit_index_iterator(
        make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    base = new_key()
    label = f"sel-{base}"
    for i in range(5):
        pool.insert("test_int", [base + i, label, i])
    try:
        rows = pool.select("test_int", label, index="by_name", offset=1, limit=2, iterator="EQ", mode=Mode.RW)
        assert [row[0] for row in rows] == [base + 1, base + 2]
        rows = pool.select("test_int", base + 3, iterator="GE", limit=10, mode=Mode.RW)
        assert [row[0] for row in rows][:2] == [base + 3, base + 4]
        rows = pool.select("test_int", base + 2, index=0, iterator="LT", limit=2, mode=Mode.RW)
        assert [row[0] for row in rows] == [base + 1, base]
        assert pool.update("test_int", base, [("+", "value", 10)]).data == [[base, label, 10]]
        assert pool.upsert("test_int", [base, label, 0], [("+", 2, 5)]).data == []
        assert pool.replace("test_int", [base + 1, "replaced"]).data == [[base + 1, "replaced"]]
        assert pool.select("test_int", base, mode=Mode.RW).data == [[base, label, 15]]
    finally:
        for i in range(5):
            pool.delete("test_int", base + i)


# ----------------------------------------------------------------------------
# read/write split and round robin


@pytest.mark.timeout(120)
def test_rw_always_reaches_the_master(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    assert {who(pool, Mode.RW) for _ in range(12)} == {"inst1"}


@pytest.mark.timeout(120)
def test_prefer_rw_reaches_the_master_while_it_is_up(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    assert {who(pool, Mode.PREFER_RW) for _ in range(12)} == {"inst1"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode_name, expected", [
    ("RO", {"inst2", "inst3"}),
    ("PREFER_RO", {"inst2", "inst3"}),
    ("ANY", {"inst1", "inst2", "inst3"}),
])
def test_n_consecutive_calls_visit_all_n_instances_of_the_role(
        make_pool: Callable[..., ConnectionPool], mode_name: str, expected: set[str]) -> None:
    pool = make_pool()
    mode = Mode[mode_name]
    n = len(expected)
    for _ in range(4):  # every window of n consecutive calls, not just the first
        window = [who(pool, mode) for _ in range(n)]
        assert set(window) == expected, window


@pytest.mark.timeout(120)
def test_mode_accepts_its_number_and_rejects_unknown_values(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    assert who(pool, 2) == "inst1"
    assert who(pool, 3) in {"inst2", "inst3"}
    for bad in (0, 6, "RW", True, None):
        with pytest.raises(ValueError):
            pool.call("whoami", mode=bad)  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_write_through_pool_is_readable_through_ro_after_replication(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    key = new_key()
    pool.insert("test_int", [key, "replicated"])
    seen: set[str] = set()

    def both_replicas_have_it() -> bool:
        # Round robin over the two replicas: each answer says who served it.
        name, row = list(pool.eval(f"local row = box.space.test_int:get({key}) "
                              "return whoami().name, row and row:totable() or box.NULL", mode=Mode.RO))
        if row == [key, "replicated"]:
            seen.add(name)
        return seen == {"inst2", "inst3"}

    wait_for(both_replicas_have_it, 10, "the row reached both replicas through the pool's RO reads")
    for _ in range(4):
        assert pool.select("test_int", key, mode=Mode.RO).data == [[key, "replicated"]]
    pool.delete("test_int", key)


# ----------------------------------------------------------------------------
# configuration errors


GOOD = {"host": "127.0.0.1", "port": 3301}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("addrs, words", [
    ([], ["addrs", "non-empty"]),
    ([GOOD, {"host": "127.0.0.1", "port": 0}], ["addrs[1]", "port", "0"]),
    ([GOOD, {"host": "127.0.0.1", "port": 70000}], ["addrs[1]", "port", "70000"]),
    ([GOOD, {"host": "127.0.0.1", "port": "abc"}], ["addrs[1]", "port", "'abc'"]),
    ([GOOD, {"host": "127.0.0.1", "port": 3302, "weight": 3}], ["addrs[1]", "unknown key", "weight"]),
    ([GOOD, {"port": 3302}], ["addrs[1]", "missing", "host"]),
    ([GOOD, {"host": "127.0.0.1", "port": "3301"}], ["addrs[1]", "127.0.0.1:3301", "twice"]),
], ids=["empty", "port-0", "port-70000", "port-abc", "unknown-key", "missing-host", "duplicate"])
def test_bad_addrs_raise_configuration_error_naming_entry_and_field(
        addrs: list[dict[str, Any]], words: list[str]) -> None:
    before = pool_threads()
    with pytest.raises(ConfigurationError) as info:
        ConnectionPool(addrs, user="test", password="x", connect_now=False)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert pool_threads() <= before  # nothing was started


@pytest.mark.timeout(10)
@pytest.mark.parametrize("value", [0, -1, "1"])
def test_bad_refresh_delay_raises_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="refresh_delay"):
        ConnectionPool([GOOD], refresh_delay=value, connect_now=False)


# ----------------------------------------------------------------------------
# no instance fits the mode


@pytest.mark.timeout(120)
def test_no_master_raises_topology_error_naming_mode_and_each_role(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    dead = {"host": "127.0.0.1", "port": unused_port()}
    pool = make_pool([cluster.instances["inst2"].addr, cluster.instances["inst3"].addr, dead],
                     connection_timeout=1)
    with pytest.raises(PoolTolopogyError) as info:
        pool.call("whoami", mode=Mode.RW)
    message = str(info.value)
    assert "RW" in message
    assert f"{key_of(cluster, 'inst2')} ro" in message
    assert f"{key_of(cluster, 'inst3')} ro" in message
    assert f"127.0.0.1:{dead['port']} down" in message
    # The replicas still serve every mode that may use them.
    assert who(pool, Mode.PREFER_RW) in {"inst2", "inst3"}
    assert who(pool, Mode.RO) in {"inst2", "inst3"}


@pytest.mark.timeout(120)
def test_no_replica_raises_topology_error_for_ro_and_prefer_ro_falls_back(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool([cluster.instances["inst1"].addr])
    with pytest.raises(PoolTopologyError) as info:
        pool.call("whoami", mode=Mode.RO)
    assert "RO" in str(info.value) and f"{key_of(cluster, 'inst1')} rw" in str(info.value)
    assert who(pool, Mode.PREFER_RO) == "inst1"


@pytest.mark.timeout(120)
def test_wait_raises_topology_error_after_its_timeout(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool([cluster.instances["inst2"].addr])
    started = time.monotonic()
    with pytest.raises(PoolTopologyError, match=r"RW.*ro"):
        pool.wait(mode=Mode.RW, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    pool.wait(mode=Mode.RO, timeout=0.1)  # fits at once


# ----------------------------------------------------------------------------
# close semantics


@pytest.mark.timeout(120)
def test_close_of_never_connected_pool_works_and_starts_nothing(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    before = pool_threads()
    pool = make_pool(connect_now=False)
    assert pool_threads() == before
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 0.5
    assert pool_threads() == before
    assert pool.is_closed()
    with pytest.raises(PoolClosedError):
        pool.call("whoami", mode=Mode.ANY)
    with pytest.raises(PoolClosedError):
        pool.connect()
    pool.close()  # idempotent


@pytest.mark.timeout(120)
def test_connect_later_when_connect_now_is_false(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool(connect_now=False)
    with pytest.raises(PoolTopologyError):
        pool.call("whoami", mode=Mode.ANY)
    pool.connect()
    assert who(pool, Mode.RW) == "inst1"


CLOSED_CALLS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("call", lambda pool, mode: pool.call("echo", 1, mode=mode.ANY)),
    ("eval", lambda pool, mode: pool.eval("return 1", mode=mode.RO)),
    ("execute", lambda pool, mode: pool.execute("SELECT 1", mode=mode.RW)),
    ("ping", lambda pool, mode: pool.ping(mode=mode.PREFER_RO)),
    ("select", lambda pool, mode: pool.select("test_int", 1)),
    ("insert", lambda pool, mode: pool.insert("test_int", [1, "a"])),
    ("replace", lambda pool, mode: pool.replace("test_int", [1, "a"])),
    ("update", lambda pool, mode: pool.update("test_int", 1, [("=", 1, "b")])),
    ("upsert", lambda pool, mode: pool.upsert("test_int", [1, "a"], [("=", 1, "b")])),
    ("delete", lambda pool, mode: pool.delete("test_int", 1)),
    ("wait", lambda pool, mode: pool.wait(mode=mode.RW, timeout=5)),
    ("connect", lambda pool, mode: pool.connect()),
]


@pytest.mark.timeout(120)
def test_after_close_every_call_raises_pool_closed_error_at_once(make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    assert who(pool, Mode.RW) == "inst1"
    pool.close()
    assert pool.is_closed()
    for name, request in CLOSED_CALLS:
        started = time.monotonic()
        try:
            request(pool, Mode)
        except PoolClosedError:
            pass
        else:
            pytest.fail(f"{name}() after close() did not raise")
        assert time.monotonic() - started < 1.0, name  # at once: no selection wait, no I/O (a loaded CI box is slow)


@pytest.mark.timeout(120)
def test_close_joins_every_thread_within_two_seconds(make_pool: Callable[..., ConnectionPool]) -> None:
    before = pool_threads()
    pool = make_pool(refresh_delay=0.2)
    for mode in Mode:
        who(pool, mode)
    ours = pool_threads() - before
    assert len(ours) == 6  # a worker and a connection reader per instance
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 2.0
    assert not (pool_threads() - before), sorted(t.name for t in pool_threads() - before)
    assert not any(t.is_alive() for t in ours)


def test_a_refresh_racing_close_never_reopens_the_connection(make_pool: Callable[..., ConnectionPool]) -> None:
    """close() can land after a refresh passed its "still running" check and before it reconnects.

    We stage that window exactly: the unit's connection is closed (what stop() does) while the
    unit still counts as running, then the refresh runs.  It must not open a new link (a reader
    thread nobody will ever close).
    """
    pool = make_pool(refresh_delay=60)
    unit = next(iter(pool.pool.values()))
    assert unit.first_refresh_done.wait(10)
    readers_before = {t for t in pool_threads() if t.name.startswith(READER_PREFIX)}
    unit.conn.close()
    assert unit.request_processing_enabled  # the worker's view: it has not seen stop() yet
    unit.refresh()
    assert unit.conn.is_closed(), "the refresh reopened a connection that close() had closed"
    assert unit.state.status is Status.UNHEALTHY
    readers_after = {t for t in pool_threads() if t.name.startswith(READER_PREFIX)}
    assert not (readers_after - readers_before), sorted(t.name for t in readers_after - readers_before)


@pytest.mark.timeout(120)
def test_in_flight_call_fails_at_once_when_the_pool_closes(make_pool: Callable[..., ConnectionPool]) -> None:
    """A ``sleep(5)`` running on the server ends with PoolClosedError right after close().

    The call pushes a message before sleeping: its on_push callback is the
    event that says the request is in flight.
    """
    pool = make_pool()
    in_flight = threading.Event()
    outcome: dict[str, Any] = {}

    def caller() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = pool.eval("box.session.push('sleeping') return sleep(...)", 5, mode=Mode.ANY,
                                          on_push=lambda message, ctx: in_flight.set())
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever it is
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=caller, name="test-in-flight")
    thread.start()
    assert in_flight.wait(5), "the sleep request never reached the server"
    closed_at = time.monotonic()
    pool.close()
    thread.join(5)
    assert not thread.is_alive()
    assert "result" not in outcome
    assert isinstance(outcome["error"], PoolClosedError), repr(outcome["error"])
    assert time.monotonic() - closed_at < 1.0
    assert outcome["seconds"] < 2.0


@pytest.mark.timeout(120)
def test_in_flight_sleep_calls_in_many_threads_all_fail_at_once_on_close(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    """``call('sleep', 5)`` from 6 threads over every instance; close() ends them all quickly.

    The calls are in flight once the servers count 6 more running iproto
    requests (``box.stat.net().REQUESTS.current``, read through the harness).
    """
    def running_requests() -> int:
        return sum(int(cluster.admin(name, "box.stat.net().REQUESTS.current")) for name in cluster.instances)

    pool = make_pool()
    baseline = running_requests()
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            pool.call("sleep", 5, mode=Mode.ANY)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=caller, name=f"test-sleeper-{i}") for i in range(6)]
    for thread in threads:
        thread.start()
    wait_for(lambda: running_requests() >= baseline + 6, 5, "6 sleep calls running on the servers")
    closed_at = time.monotonic()
    pool.close()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - closed_at < 1.5
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 6
    assert all(isinstance(e, PoolClosedError) for e in errors), errors
