"""tarantool_pool.aio under faults: a killed master, a demotion, a dead connection.

Each test takes ``fresh_cluster`` (restored before and after) and closes its
pools before the fixture restores the cluster.  Readiness is a condition
polled with a deadline (:func:`until`), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from cluster import Cluster
from support import connect, run, until

from tarantool_pool import Mode, aio
from tarantool_pool.errors import NetworkError, PoolTopologyError
from tarantool_pool.pool.strategy import role_of

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("no_leaked_readers")]


_keys = itertools.count(random.SystemRandom().randrange(5 * 10**12, 6 * 10**12, 10**7))


def new_key() -> int:
    return next(_keys)


def role(pool: aio.ConnectionPool, cluster: Cluster, name: str) -> str:
    return role_of(pool.sync.pool[cluster.instances[name].uri].state)


async def who(pool: aio.ConnectionPool, mode: Mode) -> str:
    return str((await pool.call("whoami", mode=mode))[0]["name"])


class Readers:
    """``count`` coroutines reading in PREFER_RO mode until stopped; who served, and every failure."""

    def __init__(self, pool: aio.ConnectionPool, count: int = 4) -> None:
        self.pool = pool
        self.served: Counter[str] = Counter()
        self.failures: list[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._read()) for _ in range(count)]

    async def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.served[await who(self.pool, Mode.PREFER_RO)] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                self.failures.append(exc)

    @property
    def reads(self) -> int:
        return sum(self.served.values())

    async def more(self, count: int, what: str) -> None:
        mark = self.reads
        await until(lambda: self.reads >= mark + count, 20, what)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def test_master_killed_async_writes_wait_for_the_promoted_replica_and_reads_never_fail(
        fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    pool = aio.ConnectionPool(c.addrs(), user=c.user, password=c.password, refresh_delay=0.5, socket_timeout=2)
    key = new_key()
    figures: dict[str, float] = {}

    async def scenario() -> Readers:
        await pool.connect()
        assert await who(pool, Mode.RW) == "inst1"
        readers = Readers(pool)
        try:
            await readers.more(20, "reads before the kill")
            await asyncio.to_thread(c.kill, "inst1")
            await until(lambda: role(pool, c, "inst1") == "down", 5, "the pool saw the master die")
            with pytest.raises(PoolTopologyError, match="RW"):
                await pool.insert("test_int", [new_key(), "no master"], selection_timeout=0)

            # A write now waits for a master, within its selection deadline, without blocking the loop.
            write = asyncio.ensure_future(pool.insert("test_int", [key, "after failover"], selection_timeout=20))
            await until(lambda: pool._router.watch._waiting, 5, "the write waits for a master")
            await readers.more(20, "reads while the write waits")
            assert not write.done()

            promoted_at = time.monotonic()
            await asyncio.to_thread(c.set_read_only, "inst2", False)
            assert (await write).data == [[key, "after failover"]]
            figures["write"] = time.monotonic() - promoted_at
            assert await who(pool, Mode.RW) == "inst2"
            await readers.more(50, "reads after the failover")
        finally:
            await readers.stop()
            await pool.close()
        return readers

    readers = run(scenario())
    print(f"\naio failover: the waiting write completed {figures['write']:.3f} s after the promotion; "
          f"{readers.reads} PREFER_RO reads, served by {dict(readers.served)}")
    assert readers.failures == [], readers.failures[:3]
    assert set(readers.served) <= {"inst2", "inst3"}
    assert c.admin("inst2", f"box.space.test_int:get({key})") == [key, "after failover"]


def test_demotion_under_async_writes_moves_them_to_the_new_master_without_a_failure(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    pool = aio.ConnectionPool(c.addrs(), user=c.user, password=c.password, refresh_delay=0.5,
                              selection_timeout=10)
    acknowledged: list[int] = []
    failures: list[BaseException] = []

    async def scenario() -> None:
        await pool.connect()
        stop = asyncio.Event()

        async def writer() -> None:
            while not stop.is_set():
                key = new_key()
                try:
                    await pool.insert("test_int", [key, "demotion"])
                    acknowledged.append(key)
                except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                    failures.append(exc)

        writers = [asyncio.ensure_future(writer()) for _ in range(8)]
        try:
            await until(lambda: len(acknowledged) >= 50, 20, "writes before the demotion")
            await asyncio.to_thread(c.set_read_only, "inst1", True)
            mark = len(acknowledged)
            await asyncio.to_thread(c.set_read_only, "inst2", False)
            await until(lambda: len(acknowledged) >= mark + 50, 20, "writes after the promotion")
        finally:
            stop.set()
            await asyncio.gather(*writers)
            await pool.close()

    run(scenario())
    assert failures == [], failures[:3]
    c.wait_synced(timeout=20)
    missing = c.admin("inst2", f"local n = 0 for _, key in ipairs(require('json').decode('{acknowledged}')) do "
                               "if box.space.test_int:get(key) == nil then n = n + 1 end end return n", timeout=10)
    assert missing == 0, f"{missing} of {len(acknowledged)} acknowledged writes are not on the new master"


def test_a_dead_connection_fails_the_awaited_request_with_the_sync_paths_error(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    sync_conn = connect(c, "inst3")
    aconn = aio.Connection.from_sync(connect(c, "inst3"))
    sync_outcome: dict[str, Any] = {}
    sync_pushed = threading.Event()

    def sync_caller() -> None:
        try:
            sync_conn.eval("box.session.push(1) return sleep(...)", 10, on_push=lambda m, ctx: sync_pushed.set())
        except Exception as exc:  # noqa: BLE001 - compared below
            sync_outcome["error"] = exc

    async def scenario() -> tuple[BaseException, float]:
        pushed = asyncio.Event()
        call = asyncio.ensure_future(aconn.eval("box.session.push(1) return sleep(...)", 10,
                                                on_push=lambda m, ctx: pushed.set()))
        await asyncio.wait_for(pushed.wait(), 10)
        assert await asyncio.to_thread(sync_pushed.wait, 10)
        killed_at = time.monotonic()
        await asyncio.to_thread(c.kill, "inst3")
        with pytest.raises(NetworkError) as failed:
            await call
        return failed.value, time.monotonic() - killed_at

    thread = threading.Thread(target=sync_caller, name="test-sync-caller")
    thread.start()
    try:
        error, seconds = run(scenario())
        thread.join(10)
        assert not thread.is_alive()
        assert type(error) is type(sync_outcome["error"]), (error, sync_outcome)
        assert seconds < 5  # the call would have slept 10 s
    finally:
        sync_conn.close()
        run(aconn.close())
