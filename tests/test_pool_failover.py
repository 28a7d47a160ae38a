"""ConnectionPool under faults: killed, frozen, stopped and restarted
instances, role changes, and how health is reported.

Every test that breaks the cluster takes ``fresh_cluster`` first, so the
pools it made are closed (``make_pool`` teardown) before the cluster is
restored.  Routing is checked by asking the instances who they are.

Readiness is never a sleep loop: ``pool.wait(mode=...)`` where a mode
expresses the condition, else :func:`wait_for`, a documented poll with a
deadline that returns the moment the condition holds.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import random
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster import NAMES, Cluster

from tarantool_pool.connection_pool import ConnectionPool, Mode
from tarantool_pool.errors import PoolTopologyError, ReadOnlyError, RequestTimeoutError
from tarantool_pool.pool import RoundRobinStrategy, Status
from tarantool_pool.pool.strategy import role_of

pytestmark = pytest.mark.timeout(120)

_keys = itertools.count(random.randrange(1 << 40) + (1 << 42))


def new_key() -> int:
    """A test_int primary key that no other test of this session uses."""
    return next(_keys)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> float:
    """Readiness helper: check ``predicate`` every ``interval`` s until it is truthy.

    Returns the seconds it took (the measurement some tests assert on);
    fails the test naming ``what`` once ``timeout`` seconds have passed.
    Used for conditions that have no event to wait on (a unit's state, a
    server's data).
    """
    started = time.monotonic()
    deadline = started + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not true within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tarantool_pool-")}




class Units:
    """The pool's view of each instance, by instance name.

    A unit's ``state`` is published a moment before the routing snapshot is
    rebuilt from it, so :meth:`role` names a role only once both agree (else
    "changing"): a test that saw "down" can rely on the next request not
    being routed there.
    """

    def __init__(self, pool: ConnectionPool, cluster: Cluster) -> None:
        self.pool = pool
        self.key = {name: inst.uri for name, inst in cluster.instances.items()}

    def status(self, name: str) -> Status:
        return self.pool.pool[self.key[name]].state.status

    def role(self, name: str) -> str:
        unit = self.pool.pool[self.key[name]]
        strategy = self.pool.strategy
        assert isinstance(strategy, RoundRobinStrategy)
        by_role = strategy.snapshot.by_role
        routed = "rw" if unit in by_role["rw"] else "ro" if unit in by_role["ro"] else "down"
        return routed if routed == role_of(unit.state) else "changing"

    def down(self, name: str) -> bool:
        return self.role(name) == "down"

    def up(self, name: str) -> bool:
        return self.role(name) in ("rw", "ro")


def who(pool: ConnectionPool, mode: Mode, **kwargs: Any) -> str:
    """The name of the instance that served one ``whoami`` call in ``mode``."""
    return str(pool.call("whoami", mode=mode, **kwargs)[0]["name"])


# ----------------------------------------------------------------------------
# master failure


@pytest.mark.timeout(180)
def test_master_killed_and_replica_promoted_writes_resume_within_refresh_delay_plus_1s_prefer_ro_never_fails(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    refresh_delay = 0.5
    pool = make_pool(refresh_delay=refresh_delay, socket_timeout=2)
    units = Units(pool, c)
    assert who(pool, Mode.RW) == "inst1"

    stop_reading = threading.Event()
    reading = threading.Event()
    lock = threading.Lock()
    served: Counter[str] = Counter()
    failures: list[tuple[float, BaseException]] = []

    def reader() -> None:
        for number in itertools.count():
            if stop_reading.is_set() or number >= 1_000_000:
                return
            try:
                name = who(pool, Mode.PREFER_RO)
                with lock:
                    served[name] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                with lock:
                    failures.append((time.monotonic(), exc))
            if number == 20:
                reading.set()

    thread = threading.Thread(target=reader, name="test-prefer-ro-reader")
    thread.start()
    try:
        assert reading.wait(10), "the reader did not get going"
        c.kill("inst1")
        killed_at = time.monotonic()
        detect = wait_for(lambda: units.down("inst1"), 2, "the pool saw the master die")
        with pytest.raises(PoolTopologyError, match=r"RW"):
            pool.insert("test_int", [new_key(), "no master"])

        promoted_at = time.monotonic()  # measured from the start of the promotion
        c.set_read_only("inst2", False)
        pool.wait(mode=Mode.RW, timeout=refresh_delay + 1)
        rw_seconds = time.monotonic() - promoted_at
        key = new_key()
        pool.insert("test_int", [key, "after failover"])
        write_seconds = time.monotonic() - promoted_at
        assert who(pool, Mode.RW) == "inst2"
        assert c.admin("inst2", f"box.space.test_int:get({key})") == [key, "after failover"]

        # Keep reading a little after the switch: PREFER_RO now has only inst3.
        def reads() -> int:
            with lock:
                return sum(served.values())

        mark = reads()
        wait_for(lambda: reads() >= mark + 50, 10, "reads after the failover")
    finally:
        stop_reading.set()
        thread.join(10)
    print(f"\nfailover: master death seen in {detect:.3f} s, pool.wait(RW) returned {rw_seconds:.3f} s "
          f"and the first write succeeded {write_seconds:.3f} s after promotion "
          f"({time.monotonic() - killed_at:.1f} s since kill); {sum(served.values())} PREFER_RO reads")
    assert not thread.is_alive()
    assert failures == [], failures[:3]
    assert set(served) <= {"inst2", "inst3"}, served
    assert write_seconds <= refresh_delay + 1


@pytest.mark.timeout(120)
def test_refresh_that_read_box_info_before_the_connection_died_does_not_revive_the_unit(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool],
        caplog: pytest.LogCaptureFixture) -> None:
    """A race: the worker reads box.info, the master is killed (the connection's reader
    thread marks the unit down), then the worker applies what it had read.

    The stall between reading and applying is made deterministic by wrapping the unit's
    connection ``call`` so the worker parks on an Event right after its box.info reply.
    """
    c = fresh_cluster
    caplog.set_level(logging.INFO, logger="tarantool_pool")
    pool = make_pool(refresh_delay=0.2)
    units = Units(pool, c)
    unit = pool.pool[units.key["inst1"]]
    read_box_info = threading.Event()
    resume = threading.Event()
    real_call = unit.conn.call

    def call_then_stall(func_name: str, *args: Any, **kwargs: Any) -> Any:
        reply = real_call(func_name, *args, **kwargs)
        if func_name == "box.info" and not read_box_info.is_set():
            read_box_info.set()
            resume.wait(10)
        return reply

    unit.conn.call = call_then_stall  # type: ignore[method-assign]
    try:
        assert read_box_info.wait(5), "the worker did not refresh"
        c.kill("inst1")
        wait_for(lambda: units.down("inst1"), 2, "the pool saw the master die")
        caplog.clear()
    finally:
        resumed_at = time.monotonic()
        resume.set()
    # The stalled refresh finishes now, then the refresh the disconnect asked for runs.
    refreshes: set[float] = set()

    def two_refreshes_after_resume() -> bool:
        if unit.last_refresh is not None and unit.last_refresh > resumed_at:
            refreshes.add(unit.last_refresh)
        return len(refreshes) >= 2

    wait_for(two_refreshes_after_resume, 5, "the stalled refresh and the next one finished")
    revived = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{unit.name}: down -> ")]
    assert revived == [], f"a dead master was marked up again: {revived}"
    assert units.down("inst1")


@pytest.mark.timeout(120)
def test_prefer_rw_falls_back_to_replicas_while_the_master_is_down(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=0.3)
    units = Units(pool, c)
    c.kill("inst1")
    wait_for(lambda: units.down("inst1"), 2, "the pool saw the master die")
    assert {who(pool, Mode.PREFER_RW) for _ in range(2)} == {"inst2", "inst3"}
    with pytest.raises(PoolTopologyError) as info:
        pool.call("whoami", mode=Mode.RW)
    assert f"{c.instances['inst1'].uri} down" in str(info.value)
    c.start("inst1")
    pool.wait(mode=Mode.RW, timeout=5)
    assert who(pool, Mode.PREFER_RW) == "inst1"


@pytest.mark.timeout(120)
def test_prefer_ro_falls_back_to_the_master_only_while_both_replicas_are_down(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=0.3)
    units = Units(pool, c)
    c.stop("inst2")
    wait_for(lambda: units.down("inst2"), 2, "the pool saw inst2 stop")
    assert {who(pool, Mode.PREFER_RO) for _ in range(4)} == {"inst3"}
    c.stop("inst3")
    wait_for(lambda: units.down("inst3"), 2, "the pool saw inst3 stop")
    assert {who(pool, Mode.PREFER_RO) for _ in range(4)} == {"inst1"}
    with pytest.raises(PoolTopologyError, match=r"RO"):
        pool.call("whoami", mode=Mode.RO)
    c.start("inst3")
    pool.wait(mode=Mode.RO, timeout=5)
    assert {who(pool, Mode.PREFER_RO) for _ in range(4)} == {"inst3"}


@pytest.mark.timeout(120)
def test_lost_connection_marks_the_unit_down_at_once_not_at_the_next_refresh(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=60)  # no periodic refresh during this test
    units = Units(pool, c)
    c.kill("inst3")
    seconds = wait_for(lambda: units.down("inst3"), 1, "inst3 marked down")
    assert seconds < 1
    assert {who(pool, Mode.RO) for _ in range(4)} == {"inst2"}


# ----------------------------------------------------------------------------
# a frozen replica


@pytest.mark.timeout(120)
def test_frozen_replica_times_out_at_the_deadline_then_goes_unhealthy_and_any_skips_it(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    socket_timeout = refresh_delay = 0.5
    pool = make_pool(socket_timeout=socket_timeout, refresh_delay=refresh_delay)
    units = Units(pool, c)
    assert pool.refresh_timeout == socket_timeout
    assert {who(pool, Mode.RO) for _ in range(2)} == {"inst2", "inst3"}

    c.freeze("inst3")
    frozen_at = time.monotonic()
    # RO alternates between the two replicas, so one of the next two calls goes to inst3.
    timed_out: list[float] = []
    for _ in range(2):
        started = time.monotonic()
        try:
            assert who(pool, Mode.RO) == "inst2"
        except RequestTimeoutError:
            timed_out.append(time.monotonic() - started)
    assert len(timed_out) == 1, "no request reached the frozen replica"
    assert socket_timeout - 0.01 <= timed_out[0] <= socket_timeout + 0.5, timed_out

    wait_for(lambda: units.down("inst3"),
             refresh_delay + pool.refresh_timeout + 0.5, "the frozen replica marked unhealthy")
    unhealthy = time.monotonic() - frozen_at
    assert pool.pool[units.key["inst3"]].state.status is Status.UNHEALTHY
    assert f"{units.key['inst3']} down" in pool.describe()
    names: Counter[str] = Counter()
    for _ in range(60):
        started = time.monotonic()
        names[who(pool, Mode.ANY)] += 1
        assert time.monotonic() - started < socket_timeout
    assert set(names) == {"inst1", "inst2"}, names
    print(f"\nfrozen replica: request timed out after {timed_out[0]:.3f} s (deadline {socket_timeout} s), "
          f"unit unhealthy {unhealthy:.3f} s after the freeze")

    c.thaw("inst3")
    wait_for(lambda: units.up("inst3"), refresh_delay + pool.refresh_timeout + 2,
             "the thawed replica healthy again")
    assert {who(pool, Mode.RO) for _ in range(2)} == {"inst2", "inst3"}


# ----------------------------------------------------------------------------
# instances that are down, then come up


@pytest.mark.timeout(120)
def test_instance_down_at_start_does_not_fail_connect_and_joins_once_started(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    c.stop("inst3")
    started = time.monotonic()
    pool = make_pool(("inst1", "inst3"), refresh_delay=0.3)
    assert time.monotonic() - started < 2
    units = Units(pool, c)
    assert units.down("inst3")
    assert units.role("inst1") == "rw"
    with pytest.raises(PoolTopologyError) as info:
        pool.call("whoami", mode=Mode.RO)
    assert f"{c.instances['inst3'].uri} down" in str(info.value)
    with pytest.raises(PoolTopologyError):
        pool.wait(mode=Mode.RO, timeout=0.5)

    c.start("inst3")
    up_at = time.monotonic()
    pool.wait(mode=Mode.RO, timeout=0.3 + 5)
    print(f"\ninst3 serving RO {time.monotonic() - up_at:.3f} s after it started")
    assert units.up("inst3")
    assert {who(pool, Mode.RO) for _ in range(3)} == {"inst3"}


@pytest.mark.timeout(180)
def test_full_cluster_restart_pool_recovers_by_itself_and_serves_rw_and_ro(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=0.3)
    units = Units(pool, c)
    for name in NAMES:
        c.stop(name)
    wait_for(lambda: all(units.down(n) for n in NAMES), 3, "every unit down")
    for mode in Mode:
        with pytest.raises(PoolTopologyError):
            pool.call("whoami", mode=mode)

    for name in NAMES:
        c.start(name)
    up_at = time.monotonic()
    pool.wait(mode=Mode.RW, timeout=10)
    wait_for(lambda: all(units.up(n) for n in NAMES), 10, "every unit healthy")
    print(f"\nfull restart: pool healthy {time.monotonic() - up_at:.3f} s after the last start")
    assert who(pool, Mode.RW) == "inst1"
    assert {who(pool, Mode.RO) for _ in range(2)} == {"inst2", "inst3"}
    key = new_key()
    pool.insert("test_int", [key, "after restart"])
    wait_for(lambda: all(pool.select("test_int", key, mode=Mode.RO).data == [[key, "after restart"]]
                         for _ in range(2)), 10, "the write replicated to both replicas")


# ----------------------------------------------------------------------------
# role changes


@pytest.mark.timeout(120)
def test_role_change_is_followed_within_refresh_delay_plus_refresh_timeout(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    refresh_delay = 0.5
    pool = make_pool(refresh_delay=refresh_delay)
    units = Units(pool, c)
    bound = refresh_delay + pool.refresh_timeout

    # Each time is measured from the start of the role change (set_read_only returns
    # only once the instance reports the new role).
    demoted_at = time.monotonic()
    c.set_read_only("inst1", True)
    wait_for(lambda: units.role("inst1") == "ro", bound, "the pool saw inst1 demoted")
    demoted = time.monotonic() - demoted_at
    with pytest.raises(PoolTopologyError, match=r"RW"):
        pool.call("whoami", mode=Mode.RW)

    promoted_at = time.monotonic()
    c.set_read_only("inst2", False)
    pool.wait(mode=Mode.RW, timeout=bound)
    promoted = time.monotonic() - promoted_at
    print(f"\nrole change: demotion seen in {demoted:.3f} s, promotion in {promoted:.3f} s (bound {bound} s)")
    assert demoted <= bound and promoted <= bound
    assert who(pool, Mode.RW) == "inst2"
    assert {who(pool, Mode.RO) for _ in range(2)} == {"inst1", "inst3"}
    key = new_key()
    pool.insert("test_int", [key, "new master"])
    assert c.admin("inst2", f"box.space.test_int:get({key})") == [key, "new master"]


@pytest.mark.timeout(120)
def test_read_only_refusal_refreshes_the_unit_at_once(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    # refresh_delay 60: only the refusal can make the pool look again.  No retries and no selection wait:
    # the old fail-at-once behaviour (tests of the retrying behaviour are in test_pool_retries.py).
    pool = make_pool(refresh_delay=60, max_retries=0, selection_timeout=0)
    units = Units(pool, c)
    c.set_read_only("inst1", True)
    assert units.role("inst1") == "rw"  # the pool has not looked yet
    with pytest.raises(ReadOnlyError):
        pool.insert("test_int", [new_key(), "refused"])
    seconds = wait_for(lambda: units.role("inst1") == "ro", pool.refresh_timeout + 0.5,
                       "the refused unit refreshed")
    assert seconds < pool.refresh_timeout + 0.5
    with pytest.raises(PoolTopologyError):
        pool.insert("test_int", [new_key(), "no master"])


# ----------------------------------------------------------------------------
# health reporting


@pytest.mark.timeout(120)
def test_health_goes_to_the_logger_rate_limited_while_an_instance_stays_down(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool],
        caplog: pytest.LogCaptureFixture) -> None:
    c = fresh_cluster
    caplog.set_level(logging.DEBUG, logger="tarantool_pool")
    refresh_delay = 0.1
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        pool = make_pool(refresh_delay=refresh_delay)
        unit = pool.pool[c.instances["inst3"].uri]

        def lines() -> list[logging.LogRecord]:
            """Records at INFO and above that name inst3's unit."""
            return [r for r in caplog.records
                    if r.name == "tarantool_pool" and r.levelno >= logging.INFO and unit.name in r.getMessage()]

        caplog.clear()
        c.stop("inst3")
        refreshes: set[float] = set()

        def ten_refreshes_while_down() -> bool:
            if unit.state.status is Status.UNHEALTHY and unit.last_refresh is not None:
                refreshes.add(unit.last_refresh)
            return len(refreshes) >= 10

        wait_for(ten_refreshes_while_down, 10 * refresh_delay + 5, "10 refreshes of the stopped instance")
        while_down = lines()
        caplog.clear()
        c.start("inst3")
        pool.wait(mode=Mode.RO, timeout=5)
        wait_for(lambda: unit.state.status is Status.HEALTHY, 5, "inst3 healthy again")
        back_up = lines()
    text = "\n".join(f"{r.levelname} {r.getMessage()}" for r in while_down)
    # The change to down, then at most one "still unhealthy" per distinct problem.
    assert while_down and while_down[0].levelno == logging.WARNING and "-> down" in while_down[0].getMessage()
    assert all(r.levelno == logging.WARNING for r in while_down), text
    assert len(while_down) <= 3, f"{len(while_down)} lines for {len(refreshes)} refreshes:\n{text}"
    assert any(r.levelno == logging.INFO and "down -> ro" in r.getMessage() for r in back_up), back_up
    assert [str(w.message) for w in warned] == []


# ----------------------------------------------------------------------------
# close while a worker is connecting (a server that greets late or never)


class SlowGreeter:
    """A TCP server that accepts and sends a Tarantool greeting after ``delay`` s (never if None)."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.clients: list[socket.socket] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="test-slow-greeter", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.clients.append(client)
            if self.delay is not None:
                threading.Thread(target=self._greet, args=(client,), daemon=True).start()

    def _greet(self, client: socket.socket) -> None:
        if self.closed.wait(self.delay):
            return
        version = b"Tarantool 2.6.0 (Binary) 00000000-0000-0000-0000-000000000000".ljust(63) + b"\n"
        salt = base64.b64encode(os.urandom(32)).ljust(63) + b"\n"
        try:
            client.sendall(version + salt)
        except OSError:
            pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def slow_greeter(request: pytest.FixtureRequest) -> Iterator[SlowGreeter]:
    server = SlowGreeter(request.param)
    yield server
    server.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("slow_greeter", [1.0], indirect=True)
def test_close_during_a_workers_connect_leaves_no_live_connection_behind(slow_greeter: SlowGreeter) -> None:
    """close() while the worker waits for a greeting that comes 1 s later.

    The connect then succeeds after close(); the pool must not keep that
    connection (and its reader thread) alive.
    """
    before = pool_threads()
    pool = ConnectionPool([{"host": "127.0.0.1", "port": slow_greeter.port}], connect_now=False,
                          refresh_delay=0.2, connection_timeout=5)
    connecting = threading.Thread(target=pool.connect, name="test-connect")
    connecting.start()
    wait_for(lambda: slow_greeter.clients, 2, "the worker connected to the server")
    pool.close()
    connecting.join(10)
    wait_for(lambda: not (pool_threads() - before), 3,
             "every thread of the pool ended after the late greeting")
    assert all(unit.conn.is_closed() for unit in pool.pool.values())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("slow_greeter", [None], indirect=True)
def test_close_joins_a_worker_stuck_in_connect_within_two_seconds(slow_greeter: SlowGreeter) -> None:
    before = pool_threads()
    pool = ConnectionPool([{"host": "127.0.0.1", "port": slow_greeter.port}], connect_now=False,
                          refresh_delay=0.2, connection_timeout=6)
    connecting = threading.Thread(target=pool.connect, name="test-connect")
    connecting.start()
    wait_for(lambda: slow_greeter.clients, 2, "the worker connected to the server")
    started = time.monotonic()
    pool.close()
    closed_in = time.monotonic() - started
    left = pool_threads() - before
    connecting.join(10)
    wait_for(lambda: not (pool_threads() - before), 10, "the pool's threads ended at last")
    assert closed_in < 2.1
    assert not left, sorted(t.name for t in left)
