"""tarantool_pool.aio under concurrency: pipelining, several event loops, deadlines, cancellation, close.

Requests are held on the servers by a *gate*: a fiber channel on every
instance that the test's eval waits on until the test closes it.  While the
gate is shut, no reply can come back, so "N requests are in flight at once"
is a state the test can wait for and observe (the pool's ``in_flight``)
instead of a timing.  Readiness is always a condition polled with a
deadline (:func:`until`), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import Cluster
from support import run, until

from tarantool_pool import ConnectionPool, Mode, aio
from tarantool_pool.errors import (
    PoolClosedError,
    RequestTimeoutError,
    UnknownOutcomeTimeoutError,
)
from tarantool_pool.pool import EventKind

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_leaked_readers")]


HELD = "local gate = rawget(_G, (...)) if gate ~= nil then gate:get(20) end return select(2, ...)"
_gates = itertools.count(random.SystemRandom().randrange(10**6))


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tarantool_pool-")}


class Gate:
    """A channel named ``name`` on every instance; requests evaluating HELD wait on it until ``open()``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.name = f"aio_gate_{next(_gates)}"
        for instance in cluster.instances:
            cluster.admin(instance, f"rawset(_G, '{self.name}', require('fiber').channel()) return true")

    def open(self) -> None:
        for instance in self.cluster.instances:
            self.cluster.admin(instance, f"local gate = rawget(_G, '{self.name}') if gate then gate:close() end")

    def remove(self) -> None:
        self.open()
        for instance in self.cluster.instances:
            self.cluster.admin(instance, f"rawset(_G, '{self.name}', nil) return true")


@pytest.fixture
def gate(cluster: Cluster) -> Iterator[Gate]:
    shut = Gate(cluster)
    try:
        yield shut
    finally:
        shut.remove()


@pytest.fixture
def apool(cluster: Cluster) -> Iterator[aio.ConnectionPool]:
    pool = aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    run(pool.connect())
    try:
        yield pool
    finally:
        run(pool.close())


def in_flight(pool: aio.ConnectionPool) -> int:
    """Requests sent and not answered yet, over every instance (what each link's pending map holds)."""
    return sum(instance["in_flight"] for instance in pool.get_stats()["instances"].values())


def running_on_servers(pool: ConnectionPool, cluster: Cluster) -> int:
    """Requests the servers are executing now, over every instance (read through the control channel)."""
    return sum(int(cluster.admin(name, "box.stat.net().REQUESTS.current")) for name in cluster.instances)


# ----------------------------------------------------------------------------
# pipelining


def test_gather_of_1000_calls_is_pipelined_and_each_caller_gets_its_own_value(
        cluster: Cluster, apool: aio.ConnectionPool, gate: Gate) -> None:
    """All 1,000 requests are in flight at once (none can be answered while the gate is shut),
    then each caller gets exactly its own argument back."""
    count = 1000
    peak = 0
    baseline = running_on_servers(apool.sync, cluster)

    async def until_on_servers(number: int) -> None:
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(running_on_servers, apool.sync, cluster) < baseline + number:
            assert time.monotonic() < deadline, f"{number} requests running on the servers within 30 s"

    async def scenario() -> list[Any]:
        nonlocal peak
        calls = asyncio.gather(*(apool.eval(HELD, gate.name, "caller", number, mode=Mode.ANY)
                                 for number in range(count)))

        def all_sent() -> bool:
            nonlocal peak
            peak = max(peak, in_flight(apool))
            return peak >= count

        await until(all_sent, 30, f"{count} requests in flight at once")
        await until_on_servers(count)  # and all of them reached the servers: executing, held by the gate
        await asyncio.to_thread(gate.open)
        return [response.data for response in await calls]

    replies = run(scenario())
    assert peak >= count  # a client that waits for each reply before the next request peaks at 1
    assert replies == [["caller", number] for number in range(count)]
    assert in_flight(apool) <= len(apool.sync.pool)  # at most a health refresh each


def test_1000_concurrent_sleeps_of_100_ms_take_far_less_than_their_sum(apool: aio.ConnectionPool) -> None:
    async def scenario() -> float:
        started = time.monotonic()
        replies = await asyncio.gather(*(apool.call("sleep", 0.1, mode=Mode.ANY) for _ in range(1000)))
        assert all(reply.data == [0.1] for reply in replies)
        return time.monotonic() - started

    seconds = run(scenario())
    print(f"\n1,000 x sleep(0.1) via asyncio.gather: {seconds:.2f} s (serially: 100 s)")
    assert seconds < 10  # proves concurrency, not speed


def test_two_event_loops_in_two_threads_share_one_pool_and_get_only_their_own_replies(
        apool: aio.ConnectionPool, gate: Gate) -> None:
    per_loop = 300
    results: dict[str, Any] = {}
    started = threading.Barrier(3, timeout=30)

    def loop_thread(tag: str) -> None:
        async def calls() -> list[Any]:
            pending = asyncio.gather(*(apool.eval(HELD, gate.name, tag, number, mode=Mode.ANY)
                                       for number in range(per_loop)))
            await asyncio.sleep(0)  # let every call send
            await asyncio.to_thread(started.wait)
            return [response.data for response in await pending]

        try:
            results[tag] = run(calls())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            results[tag] = exc

    threads = [threading.Thread(target=loop_thread, args=(tag,), name=f"test-loop-{tag}") for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    started.wait()
    run(until(lambda: in_flight(apool) >= 2 * per_loop, 30, "both loops' requests in flight at once"))
    gate.open()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    for tag in ("a", "b"):
        assert results[tag] == [[tag, number] for number in range(per_loop)], repr(results[tag])[:300]


def test_sync_threads_and_an_event_loop_share_one_pool(
        sync_and_aio: tuple[ConnectionPool, aio.ConnectionPool]) -> None:
    sync_pool, pool = sync_and_aio
    mismatches: list[Any] = []
    stop = threading.Event()

    def sync_caller(tag: int) -> None:
        for number in itertools.count():
            if stop.is_set():
                return
            reply = sync_pool.call("echo", tag, number, mode=Mode.ANY).data
            if reply != [tag, number]:
                mismatches.append(reply)

    threads = [threading.Thread(target=sync_caller, args=(tag,), name=f"test-sync-{tag}") for tag in range(4)]
    for thread in threads:
        thread.start()
    try:
        async def calls() -> list[Any]:
            return [r.data for r in await asyncio.gather(*(pool.call("echo", "aio", n, mode=Mode.ANY)
                                                           for n in range(2000)))]
        replies = run(calls())
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert replies == [["aio", number] for number in range(2000)]
    assert mismatches == []


@pytest.fixture
def sync_and_aio(cluster: Cluster) -> Iterator[tuple[ConnectionPool, aio.ConnectionPool]]:
    sync_pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)
    try:
        yield sync_pool, aio.ConnectionPool.from_sync(sync_pool)
    finally:
        sync_pool.close()


# ----------------------------------------------------------------------------
# deadlines and cancellation


def late_replies(caplog: pytest.LogCaptureFixture) -> int:
    return sum("dropped a late or unknown reply" in record.getMessage() for record in caplog.records)


def test_a_request_past_its_deadline_raises_and_its_late_reply_goes_nowhere(
        aconn: aio.Connection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tarantool_pool")

    async def scenario() -> None:
        link = aconn.sync._link
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="no reply within the deadline"):
            await aconn.call("sleep", 1.5, timeout=0.2)
        assert time.monotonic() - started < 1.5  # raised at its deadline, not when the reply came
        assert aconn.in_flight == 0  # forgotten: nothing waits for that reply any more
        assert (await aconn.call("echo", "still serving")).data == ["still serving"]
        await until(lambda: late_replies(caplog) >= 1, 10, "the late reply arrived and was dropped")
        assert (await aconn.call("echo", "after the late reply")).data == ["after the late reply"]
        assert aconn.sync._link is link and link is not None and link.alive

    run(scenario())


def test_pool_deadlines_raise_the_same_errors_as_the_sync_pool(
        sync_and_aio: tuple[ConnectionPool, aio.ConnectionPool]) -> None:
    sync_pool, pool = sync_and_aio
    unknown: list[str] = []
    sync_pool.add_listener(lambda event: unknown.append(event.instance)
                           if event.kind is EventKind.UNKNOWN_OUTCOME else None)
    with pytest.raises(UnknownOutcomeTimeoutError):  # a call is not idempotent: its outcome is unknown
        sync_pool.call("sleep", 1.5, mode=Mode.RW, timeout=0.2)
    with pytest.raises(UnknownOutcomeTimeoutError):
        run(pool.call("sleep", 1.5, mode=Mode.RW, timeout=0.2))
    assert len(unknown) == 2, unknown  # both paths tell the listeners (and so the metrics)
    with pytest.raises(RequestTimeoutError) as sync_read:  # a read: retried while its deadline allows
        sync_pool.call("sleep", 1.5, mode=Mode.ANY, timeout=0.2, idempotent=True)
    with pytest.raises(RequestTimeoutError) as async_read:
        run(pool.call("sleep", 1.5, mode=Mode.ANY, timeout=0.2, idempotent=True))
    assert type(async_read.value) is type(sync_read.value)
    assert run(pool.call("echo", 1, mode=Mode.RW)).data == [1]


def test_cancelling_an_awaiting_task_forgets_its_request_and_the_link_serves_on(
        aconn: aio.Connection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tarantool_pool")

    async def scenario() -> None:
        link = aconn.sync._link
        pushed = asyncio.Event()
        task = asyncio.ensure_future(aconn.eval("box.session.push('sleeping') return sleep(...)", 1.0,
                                                on_push=lambda message, ctx: pushed.set()))
        await asyncio.wait_for(pushed.wait(), 10)  # the push ran on this loop: the request is on the server
        assert aconn.in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert aconn.in_flight == 0
        assert (await aconn.call("echo", "after cancel")).data == ["after cancel"]
        await until(lambda: late_replies(caplog) >= 1, 10, "the cancelled request's reply was dropped")
        assert aconn.sync._link is link and link is not None and link.alive

    run(scenario())


# ----------------------------------------------------------------------------
# close


def test_close_fails_requests_in_flight_at_once_and_leaves_no_thread(cluster: Cluster, gate: Gate) -> None:
    before = pool_threads()
    pool = aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password)

    async def scenario() -> tuple[list[Any], float]:
        await pool.connect()
        calls = asyncio.gather(*(pool.eval(HELD, gate.name, number, mode=Mode.ANY) for number in range(60)),
                               return_exceptions=True)
        await until(lambda: in_flight(pool) >= 60, 30, "60 requests in flight")
        closed_at = time.monotonic()
        await pool.close()
        outcomes = await calls
        return outcomes, time.monotonic() - closed_at

    outcomes, seconds = run(scenario())
    assert all(isinstance(outcome, PoolClosedError) for outcome in outcomes), outcomes[:3]
    assert seconds < 5  # the gate holds them for 20 s
    assert not (pool_threads() - before), sorted(t.name for t in pool_threads() - before)


def test_close_fails_callers_waiting_for_an_instance_at_once(cluster: Cluster) -> None:
    replicas = [cluster.instances[name].addr for name in ("inst2", "inst3")]
    pool = aio.ConnectionPool(replicas, user=cluster.user, password=cluster.password)

    async def scenario() -> tuple[list[Any], float]:
        await pool.connect()
        writes = asyncio.gather(*(pool.insert("test_int", [number, "no master"], selection_timeout=30)
                                  for number in range(10)), return_exceptions=True)
        await until(lambda: pool._router.watch._waiting, 10, "writers waiting for a master")
        closed_at = time.monotonic()
        await pool.close()
        outcomes = await writes
        return outcomes, time.monotonic() - closed_at

    outcomes, seconds = run(scenario())
    assert all(isinstance(outcome, PoolClosedError) for outcome in outcomes), outcomes[:3]
    assert seconds < 5  # they would have waited 30 s for a master


def test_a_slow_awaited_request_is_reported_to_the_listeners(cluster: Cluster) -> None:
    slow: list[tuple[str, Any]] = []

    async def scenario() -> None:
        async with aio.ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password,
                                      slow_request_threshold=0.1) as pool:
            pool.add_listener(lambda event: slow.append((event.instance, event.detail["method"]))
                              if event.kind is EventKind.SLOW_REQUEST else None)
            await pool.call("echo", 1, mode=Mode.RW)  # fast: not reported
            await pool.call("sleep", 0.2, mode=Mode.RW)
            assert slow == [(cluster.instances["inst1"].uri, "call")]

    run(scenario())
