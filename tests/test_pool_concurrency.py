"""ConnectionPool under many threads, and what an idle pool costs.

The pool's promise (pool/pool.py, transport.py): many caller threads share
each unit's pipelined Connection, every request gets its own reply slot, so
a reply reaches only its own caller; an idle pool blocks instead of polling.
"""

from __future__ import annotations

import resource
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tarantool_pool.connection_pool import ConnectionPool, Mode
from tarantool_pool.errors import PoolClosedError

THREADS = 64
CALLS_PER_THREAD = 500




def cpu_seconds() -> float:
    """CPU time (user + system) of this whole process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.timeout(300)
def test_64_threads_x_500_echo_calls_over_every_mode_get_only_their_own_replies(
        make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()
    modes = list(Mode)
    start = threading.Barrier(THREADS, timeout=30)
    lock = threading.Lock()
    mismatches: list[tuple[Any, Any]] = []
    errors: list[BaseException] = []
    served: Counter[Mode] = Counter()

    def worker(number: int) -> None:
        local_bad: list[tuple[Any, Any]] = []
        local_errors: list[BaseException] = []
        local_served: Counter[Mode] = Counter()
        start.wait()
        for i in range(CALLS_PER_THREAD):
            mode = modes[(number + i) % len(modes)]
            args = [number, i, f"t{number}-c{i}", {"n": number * CALLS_PER_THREAD + i}]
            try:
                reply = pool.call("echo", *args, mode=mode)
            except Exception as exc:  # noqa: BLE001 - every error counts
                local_errors.append(exc)
                continue
            if reply.data != args:
                local_bad.append((args, reply.data))
            local_served[mode] += 1
        with lock:
            mismatches.extend(local_bad)
            errors.extend(local_errors)
            served.update(local_served)

    threads = [threading.Thread(target=worker, args=(n,), name=f"test-echo-{n}") for n in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    seconds = time.monotonic() - started
    assert not any(thread.is_alive() for thread in threads), "some caller threads hang"
    assert errors == [], f"{len(errors)} errors, first: {errors[:3]!r}"
    assert mismatches == [], f"{len(mismatches)} replies reached the wrong caller, first: {mismatches[:3]!r}"
    assert sum(served.values()) == THREADS * CALLS_PER_THREAD
    assert set(served) == set(Mode)
    print(f"\n{THREADS * CALLS_PER_THREAD} calls from {THREADS} threads in {seconds:.1f} s "
          f"({THREADS * CALLS_PER_THREAD / seconds:.0f} calls/s)")


@pytest.mark.timeout(120)
def test_concurrent_callers_are_spread_round_robin_over_the_role(
        make_pool: Callable[..., ConnectionPool]) -> None:
    """32 threads x 30 RO calls: the replicas get exactly half each; none goes to the master."""
    pool = make_pool()
    lock = threading.Lock()
    seen: Counter[str] = Counter()
    start = threading.Barrier(32, timeout=30)

    def worker() -> None:
        start.wait()
        names = Counter(pool.call("whoami", mode=Mode.RO)[0]["name"] for _ in range(30))
        with lock:
            seen.update(names)

    threads = [threading.Thread(target=worker, name=f"test-ro-{n}") for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(seen) == {"inst2", "inst3"}
    assert seen["inst2"] == seen["inst3"] == 32 * 30 // 2, seen  # one shared counter: strict alternation


@pytest.mark.timeout(120)
def test_idle_three_server_pool_uses_under_one_percent_of_a_core(
        make_pool: Callable[..., ConnectionPool]) -> None:
    pool = make_pool()  # the default refresh_delay: 1 s
    for mode in Mode:
        pool.ping(mode=mode)
    before_cpu, before_process = cpu_seconds(), time.process_time()
    time.sleep(10)
    used_rusage = cpu_seconds() - before_cpu
    used_process = time.process_time() - before_process
    print(f"\nidle pool: {used_process:.4f} s CPU (process_time), {used_rusage:.4f} s (rusage) over 10 s")
    assert used_process < 0.1
    assert used_rusage < 0.1
    assert pool.ping(notime=True, mode=Mode.ANY) == "Success"  # and it still works


@pytest.mark.timeout(120)
def test_close_under_load_ends_every_caller_quickly_and_leaves_no_thread(
        make_pool: Callable[..., ConnectionPool]) -> None:
    """16 threads call in a loop; close() stops them all: later calls raise PoolClosedError."""
    before = {t for t in threading.enumerate() if t.name.startswith("tarantool_pool-")}
    pool = make_pool()
    busy = threading.Barrier(17, timeout=30)
    outcomes: list[BaseException | None] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        calls = 0
        error: BaseException | None = None
        try:
            while calls < 100_000:  # bounded: close() ends it long before
                pool.call("echo", number, calls, mode=list(Mode)[number % 5])
                calls += 1
                if calls == 20:
                    busy.wait()
        except Exception as exc:  # noqa: BLE001
            error = exc
        with lock:
            outcomes.append(error)

    threads = [threading.Thread(target=worker, args=(n,), name=f"test-load-{n}") for n in range(16)]
    for thread in threads:
        thread.start()
    busy.wait()
    closed_at = time.monotonic()
    pool.close()
    close_seconds = time.monotonic() - closed_at
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - closed_at < 2.5
    assert close_seconds < 2.0
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == 16
    assert all(isinstance(error, PoolClosedError) for error in outcomes), outcomes
    left = {t for t in threading.enumerate() if t.name.startswith("tarantool_pool-")} - before
    assert not left, sorted(t.name for t in left)
