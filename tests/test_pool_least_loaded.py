"""The latency-aware LeastLoadedStrategy routes correctly through a real pool.

Proves: with strategy_class=LeastLoadedStrategy, RO requests only reach replicas and
spread over both, RW only the master, and 16 concurrent threads get their own replies.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

import pytest

from tarantool_pool import ConnectionPool, LeastLoadedStrategy, Mode
from tarantool_pool.pool import Status


class WithoutRttFilter(LeastLoadedStrategy):
    """The strategy minus its slow-replica filter: on a loaded CI machine one slow box.info
    refresh can legitimately push a replica past ``rtt_factor`` and keep it out for a while,
    which is not what this test is about (tests/test_strategy.py covers the filter)."""

    rtt_factor = math.inf


def wait_all_healthy(pool: ConnectionPool, timeout: float = 10.0) -> None:
    """Wait on the pool's topology condition (notified on every state change)."""
    with pool._topology:
        healthy = pool._topology.wait_for(
            lambda: all(unit.state.status is Status.HEALTHY for unit in pool.pool.values()), timeout)
    assert healthy, f"not every instance healthy within {timeout} s: {pool.describe()}"


@pytest.mark.timeout(120)
def test_least_loaded_pool_keeps_the_read_write_split_and_every_reply_with_its_caller(cluster: Any) -> None:
    pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password,
                          strategy_class=WithoutRttFilter, refresh_delay=0.2)
    try:
        wait_all_healthy(pool)  # pool.wait(Mode.RO) would be content with one replica
        ro_names = Counter(pool.call("whoami", mode=Mode.RO).data[0]["name"] for _ in range(60))
        assert set(ro_names) == {"inst2", "inst3"}, ro_names
        assert {pool.call("whoami", mode=Mode.RW).data[0]["name"] for _ in range(10)} == {"inst1"}

        mismatches: list[Any] = []

        def worker(number: int) -> None:
            for i in range(200):
                reply = pool.call("echo", number, i, mode=Mode.ANY).data
                if reply != [number, i]:
                    mismatches.append((number, i, reply))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not mismatches
        # the counters are lock-free (approximate under contention): most requests must be counted
        assert sum(stats["requests"] for stats in pool.get_stats()["instances"].values()) > 16 * 200 // 2
    finally:
        pool.close()
