"""The latency-aware LeastLoadedStrategy routes correctly through a real pool.

Proves: with strategy_class=LeastLoadedStrategy, RO requests only reach replicas and
spread over both, RW only the master, and 16 concurrent threads get their own replies.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from tarantool_pool import ConnectionPool, LeastLoadedStrategy, Mode


@pytest.mark.timeout(120)
def test_least_loaded_pool_keeps_the_read_write_split_and_every_reply_with_its_caller(cluster: Any) -> None:
    pool = ConnectionPool(cluster.addrs(), user=cluster.user, password=cluster.password,
                          strategy_class=LeastLoadedStrategy, refresh_delay=0.2)
    try:
        pool.wait(Mode.RO, timeout=10)
        pool.wait(Mode.RW, timeout=10)
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
