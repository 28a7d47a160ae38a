"""ConnectionPool failover against the real replica set: what is retried,
what is not, how long a request waits for an instance, and what the
application sees while the master dies, is demoted, or a replica freezes.

The rules under test are those of tarantool_pool/pool/failover.py and
routing.py:

- a request that never reached a server is retried elsewhere, reads and
  writes alike;
- a read (select, ping, ``idempotent=True`` calls) is also retried after a
  timeout or a lost connection;
- a sent write whose outcome is unknown raises UnknownOutcomeError and is
  never retried;
- retries are bounded by ``max_retries`` and the request's deadline, counted
  in ``get_stats()`` and announced to listeners as RETRY events;
- a request waits up to ``selection_timeout`` for an instance that fits its
  mode.

Every test that breaks the cluster takes ``fresh_cluster``.  Helpers come
from test_pool_failover.py; :class:`Events` (a recording listener) is shared
with test_pool_topology.py.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from cluster import Cluster
from support import ThreadGroup
from test_pool_failover import Units, new_key, wait_for, who

from tarantool_pool.connection_pool import ConnectionPool, Mode
from tarantool_pool.errors import (
    ConnectionClosedError,
    DuplicateKeyError,
    NetworkError,
    PoolTopologyError,
    RequestTimeoutError,
    UnknownOutcomeError,
    UnknownOutcomeTimeoutError,
)
from tarantool_pool.pool import EventKind, PoolEvent, PoolUnit

pytestmark = pytest.mark.timeout(120)



class Events:
    """A pool listener that records every event; tests wait on it instead of polling."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.events: list[PoolEvent] = []

    def __call__(self, event: PoolEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def of(self, kind: EventKind, instance: str | None = None) -> list[PoolEvent]:
        with self._changed:
            return [e for e in self.events if e.kind is kind and (instance is None or e.instance == instance)]

    def wait(self, kind: EventKind, instance: str | None = None, timeout: float = 5.0,
             where: Callable[[PoolEvent], bool] = lambda event: True) -> PoolEvent:
        """The first matching event (already seen or coming within ``timeout``); fails the test otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.kind is kind and (instance is None or event.instance == instance) and where(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(e.kind.value, e.instance, e.detail) for e in self.events]
                    pytest.fail(f"no {kind.value} event for {instance or 'any instance'} within {timeout} s; "
                                f"seen: {seen}")
                self._changed.wait(remaining)


def unit_of(pool: ConnectionPool, cluster: Cluster, name: str) -> PoolUnit:
    return pool.pool[cluster.instances[name].uri]


def stats_of(pool: ConnectionPool, cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(pool.get_stats()["instances"][cluster.instances[name].uri])


def hide_connection_loss(unit: PoolUnit) -> list[BaseException]:
    """Keep the pool unaware that ``unit``'s connection dies: the unit keeps its role.

    Normally the connection's reader thread marks the unit down the moment
    the link dies, so only a request that picked the unit in the instant
    before can find the link dead.  Hiding the loss holds that instant open:
    the next request routed there fails before it is written
    (``request_sent is False``), which is the path under test.  The failed
    request's own refresh then marks the unit down as usual.
    """
    lost: list[BaseException] = []
    unit.conn.on_disconnect = lost.append
    return lost


def define_counted_sleep(cluster: Cluster, names: tuple[str, ...], function: str) -> None:
    """Define ``function(s)`` on the instances: counts its calls in a global, then sleeps s seconds."""
    counter = f"{function}_calls"
    for name in names:
        cluster.admin(name, f"""
            rawset(_G, '{counter}', 0)
            rawset(_G, '{function}', function(seconds)
                rawset(_G, '{counter}', rawget(_G, '{counter}') + 1)
                require('fiber').sleep(seconds)
                return seconds
            end)
            return true""")


def calls_of(cluster: Cluster, name: str, function: str) -> int:
    return int(cluster.admin(name, f"rawget(_G, '{function}_calls') or 0"))


# ----------------------------------------------------------------------------
# a request that never reached a server is retried, reads and writes alike


def _select_ro(pool: ConnectionPool, key: int) -> Any:
    return pool.select("test_int", key, mode=Mode.RO).data


def _non_idempotent_call_ro(pool: ConnectionPool, key: int) -> Any:
    return who(pool, Mode.RO)  # idempotent=False: classified like a write


def _insert_rw(pool: ConnectionPool, key: int) -> Any:
    return pool.insert("test_int", [key, "never sent first"]).data


@pytest.mark.timeout(120)
@pytest.mark.parametrize("request_kind, victim, survivor, send", [
    ("select RO", "inst3", "inst2", _select_ro),
    ("non-idempotent call RO", "inst3", "inst2", _non_idempotent_call_ro),
    ("insert RW", "inst1", "inst2", _insert_rw),
], ids=["select", "call", "insert"])
def test_request_that_never_reached_a_killed_instance_is_retried_on_another_suitable_one(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool], request_kind: str, victim: str,
        survivor: str, send: Callable[[ConnectionPool, int], Any]) -> None:
    c = fresh_cluster
    # refresh_delay 30: the pool's view only changes when a test step or a failed request asks for it.
    pool = make_pool(refresh_delay=30)
    units = Units(pool, c)
    events = Events()
    pool.add_listener(events)
    if victim == "inst1":
        # A write can only be retried on another master: make inst2 one too (unique keys, no conflict).
        c.set_read_only("inst2", False)
        unit_of(pool, c, "inst2").request_refresh()
        wait_for(lambda: units.role("inst2") == "rw", 5, "the pool saw inst2 promoted")
    dead = unit_of(pool, c, victim)
    lost = hide_connection_loss(dead)
    c.kill(victim)
    wait_for(lambda: lost, 5, f"{victim}'s connection died")
    assert units.role(victim) in ("rw", "ro"), "the pool must still route to the dead instance"

    # Round robin over two candidates of a stable snapshot: one of two requests goes to the dead one.
    keys = [new_key(), new_key()]
    results = [send(pool, key) for key in keys]

    retries = events.of(EventKind.RETRY)
    assert retries, f"no {request_kind} was routed to the dead {victim}"
    assert {e.instance for e in retries} == {dead.name}, retries
    for event in retries:
        error = event.detail["error"]
        assert isinstance(error, NetworkError) and error.request_sent is False, repr(error)
    assert stats_of(pool, c, victim)["retries"] == len(retries)
    assert stats_of(pool, c, survivor)["retries"] == 0
    if send is _select_ro:
        assert results == [[], []]
    elif send is _non_idempotent_call_ro:
        assert results == [survivor, survivor]
    else:
        # Applied exactly once each, on the surviving master (a second insert would be a duplicate).
        for key, result in zip(keys, results):
            assert result == [[key, "never sent first"]]
            assert c.admin(survivor, f"box.space.test_int:get({key})") == [key, "never sent first"]
            with pytest.raises(DuplicateKeyError):
                pool.insert("test_int", [key, "again"])


# ----------------------------------------------------------------------------
# reads are retried after a timeout or a lost connection; sent writes are not


def _select(pool: ConnectionPool) -> Any:
    return pool.select("test_int", new_key(), mode=Mode.RO, timeout=2).data


def _ping(pool: ConnectionPool) -> Any:
    return pool.ping(mode=Mode.RO, timeout=2)


def _idempotent_call(pool: ConnectionPool) -> Any:
    return who(pool, Mode.RO, idempotent=True, timeout=2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("read", [_select, _ping, _idempotent_call], ids=["select", "ping", "idempotent-call"])
def test_read_that_timed_out_on_a_frozen_replica_is_retried_on_the_other_within_its_deadline(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool], read: Callable[[ConnectionPool], Any]) -> None:
    c = fresh_cluster
    attempt_timeout = 0.25
    pool = make_pool(refresh_delay=30, read_attempt_timeout=attempt_timeout)
    events = Events()
    pool.add_listener(events)
    frozen = unit_of(pool, c, "inst3")
    c.freeze("inst3")
    durations = []
    results = []
    for _ in range(2):  # round robin: one of the two goes to the frozen replica first
        started = time.monotonic()
        results.append(read(pool))
        durations.append(time.monotonic() - started)

    retries = events.of(EventKind.RETRY)
    assert retries and {e.instance for e in retries} == {frozen.name}, retries
    assert all(isinstance(e.detail["error"], RequestTimeoutError) for e in retries), retries
    assert stats_of(pool, c, "inst3")["timeouts"] >= 1
    assert stats_of(pool, c, "inst3")["retries"] == len(retries)
    assert max(durations) >= attempt_timeout - 0.01, "no read waited for the frozen replica"
    assert max(durations) < 2, durations  # the request's own deadline
    if read is _idempotent_call:
        assert results == ["inst2", "inst2"]
    elif read is _select:
        assert results == [[], []]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent-retried", "non-idempotent-unknown-outcome"])
def test_call_in_flight_when_its_replica_is_killed_is_retried_only_if_idempotent(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool], idempotent: bool) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=30)
    events = Events()
    pool.add_listener(events)
    define_counted_sleep(c, ("inst2", "inst3"), "tc_retry_probe")
    outcomes: dict[int, Any] = {}

    def sleeper(number: int) -> None:
        try:
            outcomes[number] = pool.call("tc_retry_probe", 1.0, mode=Mode.RO, idempotent=idempotent).data
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[number] = exc

    # Two concurrent calls on a stable snapshot: round robin puts one on each replica.
    threads = [threading.Thread(target=sleeper, args=(n,), name=f"test-sleeper-{n}") for n in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: calls_of(c, "inst2", "tc_retry_probe") == 1 and calls_of(c, "inst3", "tc_retry_probe") == 1,
             5, "one call running on each replica")
    c.kill("inst3")
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)

    errors = [o for o in outcomes.values() if isinstance(o, BaseException)]
    assert sum(o == [1.0] for o in outcomes.values()) == 2 - len(errors), outcomes
    if idempotent:
        assert errors == []
        retry = events.wait(EventKind.RETRY, unit_of(pool, c, "inst3").name, timeout=0)
        assert isinstance(retry.detail["error"], ConnectionClosedError)
        assert retry.detail["error"].request_sent is not False  # it was sent: only a read may be retried
        assert calls_of(c, "inst2", "tc_retry_probe") == 2  # its own call, then the retried one
    else:
        assert len(errors) == 1, outcomes
        error = errors[0]
        assert isinstance(error, UnknownOutcomeError) and not isinstance(error, RequestTimeoutError), repr(error)
        assert isinstance(error.__cause__, ConnectionClosedError)
        assert events.of(EventKind.RETRY) == []
        unknown = events.wait(EventKind.UNKNOWN_OUTCOME, unit_of(pool, c, "inst3").name, timeout=0)
        assert unknown.detail["error"] is error.__cause__
        assert calls_of(c, "inst2", "tc_retry_probe") == 1  # not re-run on the other replica


@pytest.mark.timeout(60)
def test_sent_write_that_times_out_raises_unknown_outcome_timeout_and_runs_exactly_once(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=30)
    events = Events()
    pool.add_listener(events)
    define_counted_sleep(c, ("inst1",), "tc_write_probe")
    started = time.monotonic()
    with pytest.raises(UnknownOutcomeError) as info:
        pool.call("tc_write_probe", 2, mode=Mode.RW, timeout=0.3)
    elapsed = time.monotonic() - started
    error = info.value
    assert isinstance(error, RequestTimeoutError) and isinstance(error, UnknownOutcomeTimeoutError)
    assert isinstance(error.__cause__, RequestTimeoutError)
    assert 0.29 <= elapsed < 0.8, elapsed
    # It ran once: a retry would have gone to the only master again and counted a second call.
    assert calls_of(c, "inst1", "tc_write_probe") == 1
    assert events.of(EventKind.RETRY) == []
    assert [event.detail["error"] for event in events.of(EventKind.UNKNOWN_OUTCOME)] == [error.__cause__]
    master = stats_of(pool, c, "inst1")
    assert (master["retries"], master["timeouts"], master["errors"]) == (0, 1, 1), master


@pytest.mark.timeout(60)
def test_same_call_marked_idempotent_is_retried_until_its_deadline(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    """The counterpart of the test above: ``idempotent=True`` makes the timed-out call retryable."""
    c = fresh_cluster
    pool = make_pool(refresh_delay=30, read_attempt_timeout=0.2)
    events = Events()
    pool.add_listener(events)
    define_counted_sleep(c, ("inst1",), "tc_idem_probe")
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError) as info:
        pool.call("tc_idem_probe", 2, mode=Mode.RW, timeout=0.9, idempotent=True)
    elapsed = time.monotonic() - started
    assert not isinstance(info.value, UnknownOutcomeError)
    assert elapsed < 1.3, elapsed
    runs = calls_of(c, "inst1", "tc_idem_probe")
    master = stats_of(pool, c, "inst1")
    assert runs >= 2, "an idempotent call that timed out was not retried"
    assert master["requests"] == runs and master["retries"] >= runs - 1, (runs, master)
    assert len(events.of(EventKind.RETRY)) == master["retries"]


# ----------------------------------------------------------------------------
# max_retries, selection_timeout


@pytest.mark.timeout(60)
def test_max_retries_zero_lets_a_read_that_hit_a_frozen_replica_fail(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    pool = make_pool(refresh_delay=30, read_attempt_timeout=0.25, max_retries=0)
    events = Events()
    pool.add_listener(events)
    c.freeze("inst3")
    outcomes: list[Any] = []
    for _ in range(2):  # round robin: one of the two goes to the frozen replica
        try:
            outcomes.append(who(pool, Mode.RO, idempotent=True, timeout=2))
        except RequestTimeoutError as exc:
            outcomes.append(exc)
    assert sum(isinstance(o, RequestTimeoutError) for o in outcomes) >= 1, outcomes
    assert "inst2" in outcomes
    assert events.of(EventKind.RETRY) == []
    assert all(s["retries"] == 0 for s in pool.get_stats()["instances"].values())


@pytest.mark.timeout(60)
def test_selection_timeout_zero_fails_at_once_with_topology_error_while_there_is_no_master(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    c.kill("inst1")
    pool = make_pool(refresh_delay=0.2, selection_timeout=0)
    default_pool = make_pool(refresh_delay=0.2)
    per_call: tuple[tuple[ConnectionPool, dict[str, Any]], ...] = ((pool, {}), (default_pool, {"selection_timeout": 0}))
    for candidate, kwargs in per_call:
        started = time.monotonic()
        with pytest.raises(PoolTopologyError, match=r"RW"):
            candidate.insert("test_int", [new_key(), "no master"], **kwargs)
        assert time.monotonic() - started < 1.0  # well under the default 2 s selection wait it must skip
    # Reads are not affected: replicas fit RO.
    assert who(pool, Mode.RO) in ("inst2", "inst3")


@pytest.mark.timeout(60)
def test_default_selection_timeout_waits_for_a_master_promoted_half_a_second_later(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    c.kill("inst1")
    pool = make_pool(refresh_delay=0.2)
    assert pool.selection_timeout == 2.0
    promote = threading.Timer(0.5, c.set_read_only, args=("inst2", False))
    key = new_key()
    started = time.monotonic()
    promote.start()
    try:
        pool.insert("test_int", [key, "waited for a master"])
        elapsed = time.monotonic() - started
    finally:
        promote.join(10)
    print(f"\nselection: the write waited {elapsed:.3f} s for the master promoted at 0.5 s")
    assert 0.5 <= elapsed < 2.0, elapsed
    assert c.admin("inst2", f"box.space.test_int:get({key})") == [key, "waited for a master"]


# ----------------------------------------------------------------------------
# the application's view while the master dies or steps down


class Writers(ThreadGroup):
    """``count`` threads inserting unique keys tagged ``tag`` through the pool until stopped.

    Each outcome is recorded with the monotonic times the insert started and
    ended: ``acked`` (key, started, ended), ``unknown`` (key, started, error)
    and ``failed`` (key, started, error) for anything else.
    """

    def __init__(self, pool: ConnectionPool, count: int, tag: str, max_writes: int = 1_000_000) -> None:
        self.pool = pool
        self.tag = tag
        self.max_writes = max_writes
        self.acked: list[tuple[int, float, float]] = []
        self.unknown: list[tuple[int, float, BaseException]] = []
        self.failed: list[tuple[int, float, BaseException]] = []
        super().__init__(count, "writer")

    def _run(self) -> None:
        for _ in range(self.max_writes):
            if self.stop.is_set():
                return
            key = new_key()
            started = time.monotonic()
            try:
                self.pool.insert("test_int", [key, self.tag])
            except UnknownOutcomeError as exc:
                with self.lock:
                    self.unknown.append((key, started, exc))
            except Exception as exc:  # noqa: BLE001 - any other failure is what the tests look for
                with self.lock:
                    self.failed.append((key, started, exc))
            else:
                ended = time.monotonic()
                with self.lock:
                    self.acked.append((key, started, ended))

    def acked_after(self, moment: float) -> list[tuple[int, float, float]]:
        with self.lock:
            return [entry for entry in self.acked if entry[2] > moment]

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def keys_on(cluster: Cluster, name: str, tag: str) -> set[int]:
    """The keys of test_int rows named ``tag`` on one instance (read by the admin channel)."""
    rows = cluster.admin(name, f"box.space.test_int.index.by_name:select({{'{tag}'}})", timeout=10)
    return {int(row[0]) for row in rows or []}


@pytest.mark.timeout(180)
def test_master_killed_then_replica_promoted_16_writers_see_only_unknown_outcomes_and_resume_within_1s(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    refresh_delay = 0.5  # how soon the pool can learn of the promotion: below the 1 s bound
    pool = make_pool(refresh_delay=refresh_delay, selection_timeout=5, socket_timeout=10)
    units = Units(pool, c)
    tag = f"kill-{secrets.token_hex(4)}"
    with Writers(pool, 16, tag) as writers:
        wait_for(lambda: writers.count() >= 500, 20, "500 writes before the kill")
        c.kill("inst1")
        killed_at = time.monotonic()
        wait_for(lambda: units.down("inst1"), 2, "the pool saw the master die")
        noticed_at = time.monotonic()
        c.set_read_only("inst2", False)
        promoted_at = time.monotonic()  # set_read_only returns once inst2 reports ro == false
        wait_for(lambda: len(writers.acked_after(promoted_at)) >= 500, 20, "500 writes after the promotion")
    first_after = min(ended for _, _, ended in writers.acked_after(promoted_at))
    pause = first_after - promoted_at
    outage = first_after - killed_at

    assert writers.failed == [], writers.failed[:3]
    # Unknown outcomes only for writes sent before the pool saw the master die (at most one per writer).
    assert len(writers.unknown) <= 16
    assert all(started < noticed_at for _, started, _ in writers.unknown), writers.unknown
    assert all(isinstance(error.__cause__, NetworkError) for _, _, error in writers.unknown)

    # Writes that started after the pool saw the death can only have gone to the new master: all there now.
    on_new_master = keys_on(c, "inst2", tag)
    acked = {key for key, _, _ in writers.acked}
    unknown = {key for key, _, _ in writers.unknown}
    routed_to_new = {key for key, started, _ in writers.acked if started > noticed_at}
    assert routed_to_new - on_new_master == set(), "writes acknowledged by the new master are missing on it"
    assert on_new_master <= acked | unknown
    # Replication is asynchronous: what inst1 acknowledged in its last moments may not have reached inst2
    # before the SIGKILL.  It is in inst1's WAL, and comes over once inst1 is back (as a replica).
    not_replicated = len(acked - on_new_master)
    c.start("inst1", read_only=True)
    wait_for(lambda: acked <= keys_on(c, "inst2", tag), 10,
             "every acknowledged write on the new master once the old one rejoined")
    unknown_applied = len(unknown & keys_on(c, "inst2", tag))
    print(f"\nmaster kill: {len(acked)} writes acknowledged ({len(writers.acked_after(promoted_at))} after the "
          f"promotion), {len(writers.unknown)} unknown outcomes ({unknown_applied} of them applied); "
          f"{not_replicated} acknowledged by inst1 reached inst2 only after inst1 rejoined; "
          f"pool saw the death {noticed_at - killed_at:.3f} s after the kill; writes resumed {pause:.3f} s "
          f"after the promotion ({outage:.3f} s after the kill)")
    assert pause < 1.0, pause


@pytest.mark.timeout(120)
def test_demoted_master_refusals_refresh_at_once_and_writes_move_to_the_promoted_replica_without_errors(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    # refresh_delay 30: without the refusals the pool would not look again during this test.
    pool = make_pool(refresh_delay=30, selection_timeout=5)
    units = Units(pool, c)
    events = Events()
    pool.add_listener(events)
    tag = f"demote-{secrets.token_hex(4)}"
    with Writers(pool, 8, tag) as writers:
        wait_for(lambda: writers.count() >= 300, 20, "300 writes before the switch")
        c.set_read_only("inst2", False)  # the replica is promoted first: the pool does not know yet
        assert units.role("inst2") == "ro"
        demoting_at = time.monotonic()
        c.set_read_only("inst1", True)
        demoted_at = time.monotonic()  # set_read_only returns once inst1 reports ro == true
        events.wait(EventKind.ROLE_CHANGED, units.key["inst1"], timeout=2)
        wait_for(lambda: len(writers.acked_after(demoted_at)) >= 300, 20, "300 writes after the demotion")
    first_after = min(ended for _, _, ended in writers.acked_after(demoted_at))

    assert writers.failed == [], writers.failed[:3]
    assert writers.unknown == [], writers.unknown[:3]
    assert units.role("inst1") == "ro" and units.role("inst2") == "rw"
    refused = [e for e in events.of(EventKind.RETRY, units.key["inst1"]) if e.at > demoting_at]
    assert refused, "no write met the demoted master's refusal"
    assert all(e.detail["error"].code == 7 for e in refused), refused  # ER_READONLY: not applied
    # Every acknowledged write is on the new master exactly once (inserts: a re-applied one would be refused).
    acked = [key for key, _, _ in writers.acked]
    assert len(set(acked)) == len(acked)
    wait_for(lambda: set(acked) <= keys_on(c, "inst2", tag), 10, "every acknowledged write on inst2")
    print(f"\ndemotion: {len(refused)} refused writes retried; writes resumed {first_after - demoted_at:.3f} s "
          f"after the demotion (refresh_delay 30 s)")
    assert first_after - demoted_at < 1.0


@pytest.mark.timeout(120)
def test_frozen_replica_with_read_attempt_timeout_costs_no_failed_read_in_ro_or_any(
        fresh_cluster: Cluster, make_pool: Callable[..., ConnectionPool]) -> None:
    c = fresh_cluster
    deadline = 1.5
    pool = make_pool(refresh_delay=0.5, read_attempt_timeout=0.3, socket_timeout=deadline)
    units = Units(pool, c)
    lock = threading.Lock()
    stop = threading.Event()
    served: Counter[str] = Counter()
    slowest = [0.0]
    failures: list[BaseException] = []

    def reader(mode: Mode) -> None:
        for _ in range(1_000_000):
            if stop.is_set():
                return
            started = time.monotonic()
            try:
                name = who(pool, mode, idempotent=True)
            except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                with lock:
                    failures.append(exc)
                continue
            elapsed = time.monotonic() - started
            with lock:
                served[name] += 1
                slowest[0] = max(slowest[0], elapsed)

    threads = [threading.Thread(target=reader, args=(mode,), name=f"test-reader-{n}")
               for n, mode in enumerate([Mode.RO, Mode.ANY] * 4)]
    for thread in threads:
        thread.start()

    def total() -> int:
        with lock:
            return sum(served.values())

    try:
        wait_for(lambda: total() >= 200, 10, "200 reads before the freeze")
        c.freeze("inst3")
        wait_for(lambda: units.down("inst3"), 0.5 + pool.refresh_timeout + 1, "the frozen replica marked down")
        mark = total()
        wait_for(lambda: total() >= mark + 500, 10, "500 reads after the replica was marked down")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    retries = stats_of(pool, c, "inst3")["retries"]
    print(f"\nfrozen replica: {total()} reads, {retries} retried after a timeout on inst3, "
          f"slowest {slowest[0]:.3f} s (deadline {deadline} s)")
    assert failures == [], failures[:3]
    assert retries >= 1, "no read reached the frozen replica"
    assert slowest[0] < deadline


def test_a_synchronous_write_that_missed_its_quorum_is_an_unknown_outcome_not_a_failure() -> None:
    # Tarantool 2.6 can commit such a write later on a promoted replica (the chaos test saw it),
    # so a write must not be reported as failed, and must not be retried.
    from tarantool_pool.errors import SyncQuorumTimeoutError, SyncRollbackError
    from tarantool_pool.pool.failover import Verdict, classify, unknown_outcome

    for error in (SyncQuorumTimeoutError(216, "Quorum collection for a synchronous transaction is timed out"),
                  SyncRollbackError(217, "A rollback for a synchronous transaction is received")):
        assert classify(error, is_read=False) is Verdict.UNKNOWN_OUTCOME
        assert classify(error, is_read=True) is Verdict.RAISE
        wrapped = unknown_outcome(error, "127.0.0.1:3301")
        assert isinstance(wrapped, UnknownOutcomeError) and wrapped.__cause__ is error
        assert "outcome of the write is unknown" in str(wrapped)
