"""The process-wide pool, with_pool, mode-bound views and pinned sessions (tarantool_pool/helpers.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import tarantool_pool
from tarantool_pool import (
    ConnectionPool,
    DatabaseError,
    InterfaceError,
    Mode,
    ModeBoundPool,
    PoolSession,
    PoolTopologyError,
)


@pytest.fixture(autouse=True)
def no_process_pool() -> Iterator[None]:
    tarantool_pool.shutdown()
    yield
    tarantool_pool.shutdown()


@pytest.fixture
def pool(cluster: Any) -> Iterator[ConnectionPool]:
    with ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password, refresh_delay=0.2) as made:
        yield made


def whoami(target: Any, **kwargs: Any) -> str:
    name: str = target.call("whoami", **kwargs)[0]["name"]
    return name


def test_instance_before_initialize_is_a_clear_error() -> None:
    with pytest.raises(InterfaceError, match="not initialized.*initialize"):
        tarantool_pool.instance()


def test_initialize_replaces_and_closes_the_previous_pool(cluster: Any) -> None:
    first = tarantool_pool.initialize(cluster.addrs(), user=cluster.user, password=cluster.password)
    assert tarantool_pool.instance() is first
    second = tarantool_pool.initialize(cluster.addrs(), user=cluster.user, password=cluster.password)
    assert tarantool_pool.instance() is second and first.is_closed() and not second.is_closed()
    tarantool_pool.shutdown()
    assert second.is_closed()
    with pytest.raises(InterfaceError):
        tarantool_pool.instance()
    tarantool_pool.shutdown()  # twice is fine


def test_failed_initialize_keeps_the_previous_pool(cluster: Any) -> None:
    first = tarantool_pool.initialize(cluster.addrs(), user=cluster.user, password=cluster.password)
    with pytest.raises(tarantool_pool.ConfigurationError):
        tarantool_pool.initialize(["nohost"])
    assert tarantool_pool.instance() is first and not first.is_closed()


def test_with_pool_passes_the_process_pool(cluster: Any) -> None:
    @tarantool_pool.with_pool()
    def master(pool: Any = None) -> str:  # a default keeps type checkers happy at call sites
        return whoami(pool, mode=Mode.RW)

    @tarantool_pool.with_pool(mode=Mode.RO, arg="db")
    def replica(suffix: str, *, db: Any = None) -> str:
        assert isinstance(db, ModeBoundPool) and db.mode is Mode.RO
        return whoami(db) + suffix

    with pytest.raises(InterfaceError):
        master()
    tarantool_pool.initialize(cluster.addrs(), user=cluster.user, password=cluster.password)
    assert master() == "inst1"
    assert {replica("!") for _ in range(4)} <= {"inst2!", "inst3!"}
    own = tarantool_pool.instance()
    assert master(pool=own) == "inst1"  # a caller's own value is kept


def test_with_pool_needs_parentheses() -> None:
    with pytest.raises(TypeError, match="with_pool takes arguments"):
        @tarantool_pool.with_pool  # type: ignore[arg-type]
        def broken(pool: Any) -> None:
            pass
    with pytest.raises(ValueError, match="mode must be"):
        tarantool_pool.with_pool(mode="rw")  # type: ignore[arg-type]


def test_mode_bound_view(pool: ConnectionPool) -> None:
    ro = ModeBoundPool(pool, Mode.RO)
    assert {whoami(ro) for _ in range(4)} <= {"inst2", "inst3"}
    assert whoami(ro, mode=Mode.RW) == "inst1"  # an explicit mode wins
    assert ro.eval("return box.info.ro")[0] is True
    assert ro.ping(notime=True) == "Success"
    assert ro.select("test_int", [], limit=1) is not None
    assert set(ro.get_stats()["instances"]) == set(pool.pool)  # other attributes come from the pool
    rw = ModeBoundPool(pool, Mode.RW)
    rw.replace("test_int", [9101, "bound", None])
    assert rw.select("test_int", [9101])[0][1] == "bound"
    rw.delete("test_int", [9101])


def test_session_pins_one_instance(pool: ConnectionPool) -> None:
    assert len({whoami(pool, mode=Mode.RO) for _ in range(6)}) == 2  # the pool alone round-robins
    with pool.session(mode=Mode.RO) as session:
        names = {whoami(session) for _ in range(10)}
        assert len(names) == 1 and names <= {"inst2", "inst3"}
        assert session.name is not None and session.name in pool.pool


def test_rw_session_writes_and_reads_on_the_master(pool: ConnectionPool) -> None:
    with pool.session() as session:
        assert session.mode is Mode.RW
        session.replace("test_int", [9102, "session", None])
        assert session.select("test_int", [9102])[0][1] == "session"
        session.update("test_int", [9102], [["=", 1, "updated"]])
        assert session.select("test_int", [9102], mode=Mode.RO)[0][1] == "updated"  # mode= is ignored
        assert {whoami(session) for _ in range(5)} == {"inst1"}
        assert session.execute("SELECT 1").data == [[1]]
        session.delete("test_int", [9102])
        assert session.select("test_int", [9102]).data == []
        assert session.ping(notime=True) == "Success"


def test_session_judges_a_failed_write_as_the_pool_does(pool: ConnectionPool) -> None:
    """A synchronous write that missed its quorum may still commit later: through a session, as
    through the pool, it is an unknown outcome (never a plain failure, never retried)."""
    from tarantool_pool.errors import SyncQuorumTimeoutError, UnknownOutcomeError

    with pytest.raises(UnknownOutcomeError) as through_pool:
        pool.call("raise_code", 216, "quorum timed out", mode=Mode.RW)
    with pool.session(Mode.RW) as session:
        with pytest.raises(UnknownOutcomeError) as through_session:
            session.call("raise_code", 216, "quorum timed out")
    for info in (through_pool, through_session):
        assert isinstance(info.value.__cause__, SyncQuorumTimeoutError)


def test_session_outside_with_raises(pool: ConnectionPool) -> None:
    session = pool.session(Mode.ANY)
    assert isinstance(session, PoolSession)
    with pytest.raises(InterfaceError, match="with block"):
        whoami(session)
    with session:
        whoami(session)
    with pytest.raises(InterfaceError, match="session is over"):
        whoami(session)
    with pytest.raises(InterfaceError, match="entered once"):
        session.__enter__()


def test_session_on_a_removed_instance_raises(cluster: Any) -> None:
    with ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password) as pool:
        with pool.session(Mode.RO) as session:
            pinned = session.name
            assert pinned is not None
            pool.remove(pinned)
            with pytest.raises(PoolTopologyError, match=f"pinned to {pinned}.*removed"):
                whoami(session)


def test_session_with_no_fitting_instance(cluster: Any) -> None:
    with ConnectionPool(cluster.addrs()[1:], user=cluster.user, password=cluster.password) as pool:
        with pytest.raises(PoolTopologyError):
            pool.session(Mode.RW, selection_timeout=0).__enter__()


@pytest.mark.slow
def test_session_does_not_move_when_its_instance_dies(fresh_cluster: Any) -> None:
    cluster = fresh_cluster
    with ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password,
                        refresh_delay=0.2) as pool:
        with pool.session(Mode.RO) as session:
            name = whoami(session)
            cluster.kill(name)
            deadline = time.monotonic() + 5
            failures = 0
            while time.monotonic() < deadline and failures < 3:
                try:
                    assert whoami(session) == name  # never another replica
                except DatabaseError:
                    failures += 1
                    time.sleep(0.05)
            assert failures == 3
        assert whoami(pool, mode=Mode.RO) != name  # the pool itself moves on
