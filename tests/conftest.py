"""Pytest fixtures that give tests the real Tarantool replica set.

The cluster comes from ``test-cluster/cluster.py``: three tarantool
processes on free ports of 127.0.0.1 (``inst1`` read-write, ``inst2`` and
``inst3`` read-only replicas), started once per test session.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

CLUSTER_DIR = Path(__file__).resolve().parent.parent / "test-cluster"
if str(CLUSTER_DIR) not in sys.path:
    sys.path.insert(0, str(CLUSTER_DIR))

from cluster import Cluster, tarantool_binary


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The session's replica set, up and replicating; stopped at the end."""
    if tarantool_binary() is None:
        pytest.fail("tarantool is not installed (not on PATH, no /usr/bin/tarantool): "
                    "the tests need a real Tarantool; `make test` installs it",
                    pytrace=False)
    instance = Cluster()
    try:
        instance.up()
        yield instance
    finally:
        instance.down()


@pytest.fixture
def fresh_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """The session cluster in its initial shape, restored again afterwards.

    For tests that stop, kill, freeze or promote instances.
    """
    cluster.restore()
    yield cluster
    cluster.restore()


@pytest.fixture
def addrs(cluster: Cluster) -> list[dict[str, Any]]:
    """``[{'host': ..., 'port': ...}, ...]`` of inst1, inst2, inst3."""
    return cluster.addrs()


@pytest.fixture
def no_leaked_readers() -> Iterator[None]:
    """Every connection a test opens (or fails to open) must leave no reader thread behind.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("no_leaked_readers")``.
    """
    from support import reader_threads

    before = reader_threads()
    yield
    leaked = reader_threads() - before
    for thread in leaked:
        thread.join(timeout=3)
    alive = sorted(t.name for t in leaked if t.is_alive())
    assert not alive, f"reader threads left running: {alive}"


@pytest.fixture
def conn(cluster: Cluster) -> Iterator[Any]:
    """A Connection to inst1 (the master) as the test user, closed after the test."""
    from support import connect

    connection = connect(cluster)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def aconn(cluster: Cluster) -> Iterator[Any]:
    """An aio.Connection to inst1 (the master) as the test user, connected; closed after the test."""
    from support import run

    from tarantool_pool import aio

    connection = aio.Connection(cluster.instances["inst1"].host, cluster.instances["inst1"].port,
                                user=cluster.user, password=cluster.password)
    run(connection.connect())
    try:
        yield connection
    finally:
        run(connection.close())


@pytest.fixture
def make_pool(cluster: Cluster) -> Iterator[Callable[..., Any]]:
    """Factory ``make_pool(where=None, **kwargs)`` of ConnectionPools as the test user, closed after the test.

    ``where``: None for every instance, or a sequence of instance names
    ("inst1", ...) and/or ``{"host": ..., "port": ...}`` dicts.
    """
    from tarantool_pool import ConnectionPool

    pools: list[Any] = []

    def make(where: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("user", cluster.user)
        kwargs.setdefault("password", cluster.password)
        addrs = cluster.addrs() if where is None else [
            cluster.instances[entry].addr if isinstance(entry, str) else entry for entry in where]
        pool = ConnectionPool(addrs, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
