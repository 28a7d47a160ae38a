"""ConnectionPool topology features against the real replica set: the
replication-lag filter of reads, adding and removing instances under load,
discovering the replica set from one address, a graceful close, and what
``get_stats()`` and event listeners report.

Routing is checked by asking the instances who they are (``whoami``) and,
where "no request at all" must hold, by the server's own request counters
(``box.stat()``, read through the admin channel).  Tests that break the
cluster take ``fresh_cluster``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from cluster import Cluster
from support import ThreadGroup
from test_pool_failover import Units, new_key, wait_for, who
from test_pool_retries import Events, stats_of, unit_of

from tarantool_pool.connection_pool import ConnectionPool, Mode
from tarantool_pool.errors import (
    ConfigurationError,
    PoolClosedError,
    PoolTopologyError,
    UnknownOutcomeTimeoutError,
)
from tarantool_pool.pool import EventKind, PoolEvent

pytestmark = pytest.mark.timeout(120)



def calls_served(cluster: Cluster, name: str) -> int:
    """CALL requests the instance has served since it started (its own counter)."""
    return int(cluster.admin(name, "box.stat().CALL.total"))


class Readers(ThreadGroup):
    """``count`` threads calling ``whoami`` in ``mode`` until stopped; records (started, ended, name)."""

    def __init__(self, pool: ConnectionPool, count: int, mode: Mode) -> None:
        self.pool = pool
        self.mode = mode
        self.served: list[tuple[float, float, str]] = []
        self.failures: list[BaseException] = []
        super().__init__(count, "reader")

    join_timeout = 10.0

    def _run(self) -> None:
        for _ in range(1_000_000):
            if self.stop.is_set():
                return
            started = time.monotonic()
            try:
                name = who(self.pool, self.mode)
            except Exception as exc:  # noqa: BLE001 - any failure is what the tests look for
                with self.lock:
                    self.failures.append(exc)
                continue
            ended = time.monotonic()
            with self.lock:
                self.served.append((started, ended, name))

    def count(self) -> int:
        with self.lock:
            return len(self.served)

    def names(self, started_after: float = 0.0, ended_before: float = math.inf) -> Counter[str]:
        with self.lock:
            return Counter(name for started, ended, name in self.served
                           if started > started_after and ended < ended_before)


# ----------------------------------------------------------------------------
# the replication-lag filter


@pytest.mark.timeout(120)
def test_reads_with_max_lag_skip_a_replica_whose_replication_is_paused_and_prefer_ro_falls_back_to_master(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=0.2)
    inst2, inst3 = unit_of(pool, c, "inst2").name, unit_of(pool, c, "inst3").name

    def lag(name: str) -> float | None:
        return pool.get_stats()["instances"][name]["lag"]  # type: ignore[no-any-return]

    # Both replicas follow the master closely: both serve lag-bounded reads.
    wait_for(lambda: lag(inst2) is not None and lag(inst3) is not None, 2, "both replicas' lag known")
    assert all(0 <= (lag(name) or 0) < 0.5 for name in (inst2, inst3)), pool.get_stats()
    assert {who(pool, Mode.RO, max_lag=0.5) for _ in range(4)} == {"inst2", "inst3"}

    c.admin("inst3", "box.cfg{replication = {}}")  # inst3 stops following anyone (restore() repairs it)
    key = new_key()
    pool.insert("test_int", [key, "written while inst3 lags"])
    wait_for(lambda: lag(inst3) == math.inf, 2, "the pool saw inst3 stop following the master")
    wait_for(lambda: c.admin("inst2", f"box.space.test_int:get({key})") is not None, 5, "inst2 has the write")

    served = Counter(who(pool, Mode.RO, max_lag=0.5) for _ in range(20))
    assert served == {"inst2": 20}, served
    # The bound is what keeps reads fresh: inst2 has the write, inst3 does not.
    for _ in range(6):
        assert pool.select("test_int", key, mode=Mode.RO, max_lag=0.5).data == [[key, "written while inst3 lags"]]
    assert c.admin("inst3", f"box.space.test_int:get({key})") is None
    # Without a bound inst3 still serves, and a pool-wide default bound works like the per-call one.
    assert {who(pool, Mode.RO) for _ in range(4)} == {"inst2", "inst3"}
    bounded = make_pool(refresh_delay=0.2, max_lag=0.5)
    wait_for(lambda: bounded.get_stats()["instances"][inst3]["lag"] == math.inf, 2, "the second pool saw the lag")
    assert {who(bounded, Mode.RO) for _ in range(6)} == {"inst2"}
    assert {who(bounded, Mode.ANY) for _ in range(6)} <= {"inst1", "inst2"}

    c.admin("inst2", "box.cfg{replication = {}}")
    wait_for(lambda: lag(inst2) == math.inf, 2, "the pool saw inst2 stop following the master")
    assert {who(pool, Mode.PREFER_RO, max_lag=0.5) for _ in range(4)} == {"inst1"}
    assert {who(pool, Mode.PREFER_RO) for _ in range(4)} == {"inst2", "inst3"}
    with pytest.raises(PoolTopologyError, match=r"max_lag"):
        pool.call("whoami", mode=Mode.RO, max_lag=0.5, selection_timeout=0)


# ----------------------------------------------------------------------------
# runtime add / remove / discover


@pytest.mark.timeout(120)
def test_remove_and_add_back_a_replica_under_8_readers_any_no_read_fails_and_none_reaches_it_while_removed(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=0.5)
    units = Units(pool, c)
    events = Events()
    pool.add_listener(events)
    name3 = c.instances["inst3"].uri
    with Readers(pool, 8, Mode.ANY) as readers:
        wait_for(lambda: readers.names()["inst3"] >= 20, 10, "inst3 serving reads")

        pool.remove(name3)
        removed_at = time.monotonic()
        assert name3 not in pool.pool and name3 not in pool.get_stats()["instances"]
        served_before = calls_served(c, "inst3")
        mark = readers.count()
        wait_for(lambda: readers.count() >= mark + 500, 10, "500 reads after the remove")
        assert calls_served(c, "inst3") == served_before, "inst3 served requests after it was removed"
        readd_at = time.monotonic()

        unit = pool.add(c.instances["inst3"].addr)
        assert unit.name == name3
        wait_for(lambda: units.up("inst3"), 5, "the added inst3 healthy")
        wait_for(lambda: readers.names(started_after=readd_at)["inst3"] >= 20, 10, "inst3 serving reads again")
    while_removed = readers.names(started_after=removed_at, ended_before=readd_at)
    print(f"\nremove/add: {readers.count()} reads, {sum(while_removed.values())} while inst3 was out: "
          f"{dict(while_removed)}")
    assert readers.failures == [], readers.failures[:3]
    assert set(while_removed) == {"inst1", "inst2"}, while_removed
    # Not even tried there: a request routed to the closed unit would fail unsent and be retried elsewhere.
    assert [e for e in events.events if e.instance == name3 and removed_at <= e.at < readd_at] == []
    assert events.of(EventKind.RETRY) == []

    with pytest.raises(ConfigurationError, match=r"not in the pool"):
        pool.remove("127.0.0.1:1")
    with pytest.raises(ConfigurationError, match=r"already in the pool"):
        pool.add(c.instances["inst3"].addr)


@pytest.mark.timeout(60)
def test_discover_from_the_master_alone_adds_both_replicas_which_then_serve(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = cluster
    pool = make_pool(("inst1",), refresh_delay=0.5)
    with pytest.raises(PoolTopologyError):
        pool.call("whoami", mode=Mode.RO, selection_timeout=0)

    added = pool.discover()
    assert sorted(added) == sorted([c.instances["inst2"].uri, c.instances["inst3"].uri]), added
    assert sorted(pool.pool) == sorted(inst.uri for inst in c.instances.values())
    pool.wait(mode=Mode.RO, timeout=5)
    units = Units(pool, c)
    wait_for(lambda: units.up("inst2") and units.up("inst3"), 5, "both discovered replicas healthy")
    assert {who(pool, Mode.RO) for _ in range(4)} == {"inst2", "inst3"}
    assert pool.discover() == []  # every member is known now


# ----------------------------------------------------------------------------
# graceful close


@pytest.mark.timeout(60)
def test_close_with_drain_timeout_lets_4_sleeps_in_flight_finish_and_refuses_new_calls_at_once(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool(refresh_delay=30)
    outcomes: dict[int, Any] = {}

    def sleeper(number: int) -> None:
        try:
            outcomes[number] = pool.call("sleep", 0.5, mode=Mode.ANY).data
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[number] = exc

    threads = [threading.Thread(target=sleeper, args=(n,), name=f"test-sleeper-{n}") for n in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    wait_for(lambda: sum(unit.in_flight for unit in pool.pool.values()) == 4, 2, "4 calls in flight")

    closer = threading.Thread(target=pool.close, kwargs={"drain_timeout": 3}, name="test-closer")
    closer.start()
    wait_for(lambda: pool.get_stats()["closed"], 1, "close() started")
    refused_in = []
    for _ in range(3):
        asked = time.monotonic()
        with pytest.raises(PoolClosedError):
            pool.call("echo", 1, mode=Mode.ANY)
        refused_in.append(time.monotonic() - asked)
    assert closer.is_alive(), "close() did not wait for the calls in flight"
    closer.join(5)
    closed_in = time.monotonic() - started
    for thread in threads:
        thread.join(5)
    print(f"\nclose: drained 4 calls of sleep(0.5) in {closed_in:.3f} s; new calls refused in "
          f"{max(refused_in) * 1000:.2f} ms at most")
    assert outcomes == {n: [0.5] for n in range(4)}, outcomes
    assert not closer.is_alive()
    assert 0.45 <= closed_in < 3, closed_in
    assert max(refused_in) < 0.05, refused_in
    assert pool.is_closed()


# ----------------------------------------------------------------------------
# stats and events


@pytest.mark.timeout(60)
def test_get_stats_reports_role_status_counters_refresh_age_rtt_and_lag_per_instance(
        cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = cluster
    refresh_delay = 0.3
    pool = make_pool(refresh_delay=refresh_delay)
    for _ in range(6):
        who(pool, Mode.ANY)
    slow = threading.Thread(target=pool.call, args=("sleep", 0.5), kwargs={"mode": Mode.RW}, name="test-slow")
    slow.start()
    wait_for(lambda: stats_of(pool, c, "inst1")["in_flight"] == 1, 2, "the sleep in flight on inst1")
    slow.join(5)
    with pytest.raises(UnknownOutcomeTimeoutError):
        pool.call("sleep", 0.3, mode=Mode.RW, timeout=0.1)

    stats = pool.get_stats()
    assert stats["closed"] is False
    assert sorted(stats["instances"]) == sorted(inst.uri for inst in c.instances.values())
    roles = {"inst1": "rw", "inst2": "ro", "inst3": "ro"}
    for name, role in roles.items():
        s = stats_of(pool, c, name)
        assert s["role"] == role and s["status"] == "HEALTHY", s
        assert s["in_flight"] <= 1, s  # no user request is left in flight; a box.info refresh may be
        assert s["retries"] == 0, s
        assert 0 <= s["last_refresh_age"] < refresh_delay + pool.refresh_timeout, s
        assert 0 < s["rtt"] < 0.5, s
        assert s["last_error"] is None, s
        if role == "rw":
            assert s["lag"] == 0.0
        else:
            assert 0 <= s["lag"] < 1, s
    master = stats_of(pool, c, "inst1")
    assert master["requests"] >= 4 and (master["errors"], master["timeouts"]) == (1, 1), master
    assert sum(stats_of(pool, c, n)["requests"] for n in roles) == 6 + 2
    assert all(stats_of(pool, c, n)["errors"] == 0 for n in ("inst2", "inst3"))


@pytest.mark.timeout(120)
def test_listeners_hear_down_up_role_change_and_slow_request_and_a_raising_listener_breaks_nothing(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool], caplog: pytest.LogCaptureFixture) -> None:
    c = fresh_cluster
    caplog.set_level(logging.ERROR, logger="tarantool_pool")
    pool = make_pool(refresh_delay=0.2, slow_request_threshold=0.3)
    units = Units(pool, c)
    broken_calls: list[PoolEvent] = []

    def broken(event: PoolEvent) -> None:
        broken_calls.append(event)
        raise RuntimeError("a faulty metrics hook")

    events = Events()
    pool.add_listener(broken)  # first: its failure must not keep the next listener from hearing
    pool.add_listener(events)

    assert pool.call("sleep", 0.4, mode=Mode.RW).data == [0.4]
    slow = events.wait(EventKind.SLOW_REQUEST, units.key["inst1"], timeout=0)
    assert slow.detail["method"] == "call" and slow.detail["seconds"] >= 0.4, slow
    pool.call("echo", 1, mode=Mode.RW)
    assert len(events.of(EventKind.SLOW_REQUEST)) == 1, "a fast request was reported slow"

    c.kill("inst3")
    down = events.wait(EventKind.INSTANCE_DOWN, units.key["inst3"], timeout=2)
    assert down.detail["role"] == "ro" and down.detail["reason"], down
    assert stats_of(pool, c, "inst3")["role"] == "down" and stats_of(pool, c, "inst3")["status"] == "UNHEALTHY"
    assert stats_of(pool, c, "inst3")["last_error"]
    c.start("inst3")
    up = events.wait(EventKind.INSTANCE_UP, units.key["inst3"], timeout=5)
    assert up.detail["role"] == "ro", up

    c.set_read_only("inst1", True)
    c.set_read_only("inst2", False)
    demoted = events.wait(EventKind.ROLE_CHANGED, units.key["inst1"], timeout=2)
    promoted = events.wait(EventKind.ROLE_CHANGED, units.key["inst2"], timeout=2)
    assert (demoted.detail["old"], demoted.detail["new"]) == ("rw", "ro"), demoted
    assert (promoted.detail["old"], promoted.detail["new"]) == ("ro", "rw"), promoted
    assert who(pool, Mode.RW) == "inst2"

    # The raising listener heard everything too, and each of its failures was logged, not raised.
    assert len(broken_calls) == len(events.events)
    failures = [r for r in caplog.records if "listener" in r.getMessage() and "failed" in r.getMessage()]
    assert len(failures) == len(broken_calls)


def test_state_changes_within_a_role_emit_no_event_and_role_moves_emit_exactly_one() -> None:
    """A member unhealthy for a new reason is still down: no second INSTANCE_DOWN (metrics count events)."""
    from tarantool_pool.pool.strategy import InstanceState, Status

    pool = ConnectionPool([{"host": "127.0.0.1", "port": 1}], connect_now=False)
    events = Events()
    pool.add_listener(events)
    unit = next(iter(pool.pool.values()))
    down, master, replica = InstanceState(), InstanceState(Status.HEALTHY, False), InstanceState(Status.HEALTHY, True)
    orphan = InstanceState(Status.UNHEALTHY, True)  # box.info.status 'orphan': down, with ro known
    steps = [(down, orphan), (orphan, master), (master, master), (master, replica), (replica, down), (down, down)]
    for old, new in steps:
        pool._on_state_change(unit, old, new)
    assert [event.kind for event in events.of(EventKind.INSTANCE_DOWN)] == [EventKind.INSTANCE_DOWN]
    assert [event.detail["role"] for event in events.of(EventKind.INSTANCE_UP)] == ["rw"]
    assert [(e.detail["old"], e.detail["new"]) for e in events.of(EventKind.ROLE_CHANGED)] == [("rw", "ro")]
    pool.close()
