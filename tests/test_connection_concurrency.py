"""Many threads on one tarantool_pool.Connection: pipelining, deadlines, close().

Each test shares ONE Connection between its threads and proves that every
caller gets its own reply (or its own error) and nothing else.  The servers
are the session's replica set; nothing here breaks an instance.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from support import connect, reader_threads

from tarantool_pool import (
    Connection,
    ConnectionClosedError,
    NetworkError,
    RequestTimeoutError,
)
from tarantool_pool import protocol as p

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_leaked_readers")]

_keys = itertools.count(random.SystemRandom().randrange(3 * 10**12, 4 * 10**12, 10**7))


def requests_received(cluster: Any, name: str = "inst1") -> int:
    """IPROTO requests the instance has read off the network so far (never decreases)."""
    return int(cluster.admin(name, "box.stat.net().REQUESTS.total"))


def wait_received(cluster: Any, at_least: int, name: str = "inst1", timeout: float = 10) -> None:
    """Wait until the instance has received ``at_least`` requests in total."""
    cluster.wait_until(name, f"box.stat.net().REQUESTS.total >= {at_least}", timeout=timeout)


def run_threads(count: int, target: Callable[[int], None], join_timeout: float) -> None:
    """Start ``count`` threads together (a barrier) and join them all within ``join_timeout``."""
    barrier = threading.Barrier(count)

    def body(tid: int) -> None:
        barrier.wait(timeout=30)
        target(tid)

    threads = [threading.Thread(target=body, args=(tid,), name=f"test-worker-{tid}") for tid in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + join_timeout
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads still running after {join_timeout}s: {hung}"


class Failures:
    """Thread-safe collection of what went wrong in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[str] = []

    def add(self, text: str) -> None:
        with self._lock:
            self.items.append(text)


# -- pipelining ---------------------------------------------------------------------------

def test_32_threads_x_1000_calls_on_one_connection_get_only_their_own_replies(
        cluster: Any, conn: Connection) -> None:
    threads, calls = 32, 1000
    link = conn._link
    connections_before = cluster.admin("inst1", "box.stat.net().CONNECTIONS.total")
    wrong = Failures()
    errors = Failures()
    done = [0] * threads

    def worker(tid: int) -> None:
        for i in range(calls):
            tag = f"{tid}:{i}:{os.urandom(4).hex()}"
            try:
                data = conn.call("echo", tid, i, tag).data
            except Exception as exc:  # every error counts: there must be none
                errors.add(f"thread {tid} call {i}: {exc!r}")
                continue
            if data != [tid, i, tag]:
                wrong.add(f"thread {tid} call {i} got {data!r}")
            done[tid] += 1

    run_threads(threads, worker, join_timeout=100)
    assert wrong.items == [], f"{len(wrong.items)} replies went to the wrong caller: {wrong.items[:5]}"
    assert errors.items == [], f"{len(errors.items)} calls failed: {errors.items[:5]}"
    assert done == [calls] * threads
    # All of it went over the one link: no reconnect, no extra connection on the server.
    assert conn._link is link
    assert cluster.admin("inst1", "box.stat.net().CONNECTIONS.total") == connections_before


def test_replies_that_overtake_each_other_still_reach_their_own_callers(conn: Connection) -> None:
    wrong = Failures()
    sleep_then_echo = "require('fiber').sleep((...)) return select(2, ...)"

    def worker(tid: int) -> None:
        rng = random.Random(tid)
        for i in range(40):
            delay = rng.choice([0, 0, 0.001, 0.005, 0.02])  # later requests often answered first
            data = conn.eval(sleep_then_echo, delay, tid, i).data
            if data != [tid, i]:
                wrong.add(f"thread {tid} call {i} got {data!r}")

    run_threads(32, worker, join_timeout=60)
    assert wrong.items == []


def test_concurrent_pushes_reach_only_their_own_callers(conn: Connection) -> None:
    failures = Failures()

    def worker(tid: int) -> None:
        n = 1 + tid % 7
        for _ in range(50):
            pushes: list[Any] = []
            result = conn.call("push", n, on_push=lambda data, ctx: ctx.append(data), on_push_ctx=pushes)
            if pushes != [[i] for i in range(1, n + 1)] or result.data != [n]:
                failures.add(f"thread {tid}: pushes {pushes!r}, result {result.data!r}")

    run_threads(16, worker, join_timeout=60)
    assert failures.items == []


def test_mixed_requests_from_many_threads_all_get_their_own_results(cluster: Any, conn: Connection) -> None:
    failures = Failures()
    base = next(_keys)
    for _ in range(16 * 100):
        next(_keys)

    def worker(tid: int) -> None:
        for i in range(100):
            key = base + tid * 100 + i
            try:
                inserted = conn.insert("test_int", [key, f"t{tid}", i]).data
                selected = conn.select("test_int", key).data
                updated = conn.update("test_int", key, [("+", "value", 1)]).data
                evaluated = conn.eval("return ... * 2", key).data
            except Exception as exc:
                failures.add(f"thread {tid} step {i}: {exc!r}")
                continue
            expected = [[key, f"t{tid}", i]]
            if (inserted, selected, updated, evaluated) != (expected, expected, [[key, f"t{tid}", i + 1]], [key * 2]):
                failures.add(f"thread {tid} step {i}: {inserted!r} {selected!r} {updated!r} {evaluated!r}")

    run_threads(16, worker, join_timeout=60)
    assert failures.items == []
    assert cluster.admin("inst1", f"box.space.test_int:count({base}, {{iterator = 'GE'}})") >= 1600


def test_threads_meeting_a_new_space_share_one_schema_reload(
        cluster: Any, conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    conn.ping()
    conn.select("test_int", 0)  # the schema is loaded, without the space below
    name = f"shared_reload_{os.getpid()}_{random.SystemRandom().randrange(10**6)}"
    cluster.admin("inst1", f"box.schema.space.create('{name}'):create_index('pk')")
    link = conn._link
    assert link is not None
    schema_reads = []
    original = link.send

    def spy(data: bytes) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(data[5:])  # one framed request: 0xce + uint32 size, header, body
        header, body = next(unpacker), next(unpacker, None)
        if header[p.KEY_CODE] == p.SELECT and body[p.KEY_SPACE_ID] == 281:  # _vspace
            schema_reads.append(body)
        original(data)

    monkeypatch.setattr(link, "send", spy)
    failures = Failures()

    def worker(tid: int) -> None:
        try:
            if conn.insert(name, [tid, "by name"]).data != [[tid, "by name"]]:
                failures.add(f"thread {tid}: wrong insert result")
        except Exception as exc:
            failures.add(f"thread {tid}: {exc!r}")

    try:
        run_threads(16, worker, join_timeout=30)
        assert failures.items == []
        assert cluster.admin("inst1", f"box.space.{name}:count()") == 16
        assert len(schema_reads) == 1, "concurrent callers must share one schema load"
    finally:
        cluster.admin("inst1", f"box.space.{name}:drop()")


# -- deadlines ----------------------------------------------------------------------------

def test_a_request_past_its_deadline_times_out_and_its_late_reply_is_dropped(
        conn: Connection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tarantool_pool")
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        conn.call("sleep", 2, timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.8
    assert conn.ping(notime=True) == "Success"  # the same connection answers right after

    # The late reply ([2]) arrives about 1.7 s from now, while these requests are in flight.
    stop = threading.Event()
    wrong = Failures()

    def echo_until_stopped(tid: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            data = conn.call("echo", tid, i).data
            if data != [tid, i]:
                wrong.add(f"echo {tid}/{i} got {data!r}")

    echoers = [threading.Thread(target=echo_until_stopped, args=(tid,)) for tid in range(4)]
    for thread in echoers:
        thread.start()
    try:
        assert conn.call("sleep", 2.5).data == [2.5]  # outlives the late reply of sleep(2)
    finally:
        stop.set()
        for thread in echoers:
            thread.join(timeout=10)
    assert wrong.items == []
    assert any("dropped a late or unknown reply" in r.getMessage() for r in caplog.records), \
        "the late reply never arrived, so the test proved nothing"


def test_many_timeouts_mixed_with_normal_calls(conn: Connection) -> None:
    failures = Failures()

    def worker(tid: int) -> None:
        for i in range(5):
            if tid % 2:
                started = time.monotonic()
                try:
                    conn.call("sleep", 1, timeout=0.2)
                    failures.add(f"thread {tid}: sleep(1) with a 0.2 s deadline returned")
                except RequestTimeoutError:
                    if time.monotonic() - started > 0.7:
                        failures.add(f"thread {tid}: timed out late")
            else:
                for j in range(50):
                    data = conn.call("echo", tid, i, j).data
                    if data != [tid, i, j]:
                        failures.add(f"thread {tid}: {data!r}")

    run_threads(16, worker, join_timeout=60)
    assert failures.items == []
    assert conn.call("sleep", 1.2).data == [1.2]  # late replies of the sleeps above all drained


def test_socket_timeout_is_the_default_deadline(cluster: Any) -> None:
    with connect(cluster, socket_timeout=0.3) as short:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            short.call("sleep", 2)
        assert 0.3 <= time.monotonic() - started < 0.8
        assert short.call("sleep", 0.5, timeout=2).data == [0.5]  # a per-call timeout overrides it
        assert short.ping(notime=True) == "Success"


# -- close() ------------------------------------------------------------------------------

def test_close_fails_in_flight_callers_at_once_and_later_calls(cluster: Any) -> None:
    before = reader_threads()
    connection = connect(cluster)
    connection.ping()
    mine = reader_threads() - before
    assert len(mine) == 1
    received = requests_received(cluster)
    outcomes: dict[int, tuple[BaseException | None, float]] = {}
    closed_at: list[float] = []

    def waiter(tid: int) -> None:
        error: BaseException | None = None
        try:
            connection.call("sleep", 5, timeout=10)
        except BaseException as exc:  # recorded, checked below
            error = exc
        outcomes[tid] = (error, time.monotonic())

    threads = [threading.Thread(target=waiter, args=(tid,)) for tid in range(4)]
    for thread in threads:
        thread.start()
    wait_received(cluster, received + 4)  # all four are in the server's hands
    closed_at.append(time.monotonic())
    connection.close()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
    for tid, (error, finished) in sorted(outcomes.items()):
        assert isinstance(error, ConnectionClosedError), (tid, error)
        assert finished - closed_at[0] < 1.0, f"caller {tid} failed {finished - closed_at[0]:.2f}s after close()"

    assert connection.is_closed()
    for later in (lambda: connection.ping(), lambda: connection.call("echo", 1),
                  lambda: connection.select("test_int", 0), lambda: connection.insert("test_int", [1, "x"])):
        with pytest.raises(ConnectionClosedError):
            later()
    connection.close()  # idempotent
    for thread in mine:
        thread.join(timeout=3)
    left = [t.name for t in mine if t.is_alive()]
    assert left == [], f"reader thread left after close(): {left}"
    assert "closed" in repr(connection)


def test_close_from_another_thread_while_many_threads_send(cluster: Any) -> None:
    """Callers racing close() (some mid-send) all fail with ConnectionClosedError; none hangs."""
    errors = Failures()
    for _ in range(5):  # the race is timing-dependent: several rounds make a miss unlikely
        connection = connect(cluster)
        busy = threading.Event()
        counter = itertools.count()  # calls answered this round, all threads together

        def worker(tid: int, connection: Connection = connection, busy: threading.Event = busy,
                   counter: Iterator[int] = counter) -> None:
            while True:
                try:
                    if connection.call("echo", tid).data != [tid]:
                        errors.add(f"thread {tid}: wrong reply")
                except NetworkError as exc:
                    if not isinstance(exc, ConnectionClosedError):
                        errors.add(f"thread {tid}: {exc!r}")
                    return
                if next(counter) == 200:
                    busy.set()

        threads = [threading.Thread(target=worker, args=(tid,)) for tid in range(12)]
        for thread in threads:
            thread.start()
        assert busy.wait(timeout=10)
        connection.close()
        for thread in threads:
            thread.join(timeout=5)
        assert not any(t.is_alive() for t in threads), "a caller hung after close()"
    assert errors.items == []


def test_requests_after_close_do_not_reconnect(cluster: Any) -> None:
    connection = connect(cluster)
    connection.close()
    received = requests_received(cluster)
    connections = cluster.admin("inst1", "box.stat.net().CONNECTIONS.total")
    with pytest.raises(ConnectionClosedError):
        connection.call("echo", 1)
    assert cluster.admin("inst1", "box.stat.net().CONNECTIONS.total") == connections
    assert requests_received(cluster) == received


def closed_port() -> int:
    """A local port nobody listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_close_stops_a_caller_that_is_retrying_to_reconnect() -> None:
    port = closed_port()
    connection = Connection("127.0.0.1", port, connect_now=False, reconnect_max_attempts=10_000,
                            reconnect_delay=0.02, socket_timeout=30)
    outcome: list[BaseException] = []
    failed = threading.Event()

    def caller() -> None:
        try:
            connection.ping()
        except BaseException as exc:  # recorded, checked below
            outcome.append(exc)
        failed.set()

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        # The caller is now retrying (connection refused) within its 30 s deadline.
        assert not failed.wait(timeout=0.5), f"gave up early: {outcome}"
        closed_at = time.monotonic()
        connection.close()
        assert failed.wait(timeout=2), "close() did not stop the reconnecting caller"
        assert time.monotonic() - closed_at < 2
        assert isinstance(outcome[0], ConnectionClosedError), outcome
        with pytest.raises(ConnectionClosedError):
            connection.ping()
    finally:
        connection.close()
        thread.join(timeout=5)
