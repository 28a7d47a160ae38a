"""`make demo`: read/write routing and a live failover on the local replica set.

Expects the cluster that `python test-cluster/cluster.py up --fixed-ports`
started (inst1 on 3301 is the master, inst2/inst3 on 3302/3303 replicas).
The failover part kills the master with SIGKILL, promotes inst2 and shows the
writes resuming; the Makefile stops the cluster afterwards.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test-cluster"))

from cluster import CLI_DIR, Cluster  # noqa: E402

from tarantool_pool import ConnectionPool, DatabaseError, Mode  # noqa: E402


def served_by(pool: ConnectionPool, mode: Mode, calls: int = 6) -> str:
    counts = collections.Counter(pool.call("whoami", mode=mode).data[0]["name"] for _ in range(calls))
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items()))


def main() -> int:
    cluster = Cluster.load(CLI_DIR)
    addrs = cluster.addrs()
    print("replica set: " + ", ".join(f"{addr['host']}:{addr['port']}" for addr in addrs))
    pool = ConnectionPool(addrs, user=cluster.user, password=cluster.password, refresh_delay=0.2,
                          socket_timeout=1.0, selection_timeout=3.0)
    try:
        pool.wait(Mode.RW, timeout=10)
        print(f"topology: {pool.describe()}\n")

        print("1. Routing: who serves each mode (6 calls each, round robin within a role)")
        for mode in Mode:
            print(f"   {mode.name:<10} -> {served_by(pool, mode)}")

        print("\n2. Writes go to the master, reads can go to the replicas")
        for key in range(1, 6):
            pool.replace("test_int", [key, f"row {key}", None])
        written = pool.select("test_int", 3, mode=Mode.RW)
        print(f"   replace x5 (mode RW by default); select(3) on the master: {list(written)}")
        cluster.wait_synced(timeout=10)
        read = pool.select("test_int", 3, mode=Mode.PREFER_RO)
        print(f"   select(3) on a replica after replication: {list(read)}")

        print("\n3. Live failover: a writer and a reader run while the master is killed")
        failover(pool, cluster)
        print(f"\ntopology now: {pool.describe()}")
        return 0
    finally:
        pool.close()


def failover(pool: ConnectionPool, cluster: Cluster) -> None:
    stop = threading.Event()
    stats = {"writes": 0, "write_errors": 0, "reads": 0, "read_errors": 0}
    error_classes: collections.Counter[str] = collections.Counter()
    last_ok_write = [time.monotonic()]
    longest_pause = [0.0]

    def writer() -> None:
        key = 1000
        while not stop.is_set():
            key += 1
            try:
                pool.replace("test_int", [key, "during failover", None], timeout=3.0)
                now = time.monotonic()
                longest_pause[0] = max(longest_pause[0], now - last_ok_write[0])
                last_ok_write[0] = now
                stats["writes"] += 1
            except DatabaseError as exc:  # no retry loop here: the pool waits for a master and retries safely
                stats["write_errors"] += 1
                error_classes[type(exc).__name__] += 1

    def reader() -> None:
        while not stop.is_set():
            try:
                pool.select("test_int", 1, mode=Mode.PREFER_RO, timeout=3.0)
                stats["reads"] += 1
            except DatabaseError:
                stats["read_errors"] += 1

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        print(f"   running: {stats}")
        print("   kill -9 inst1 (the master)")
        killed_at = time.monotonic()
        cluster.kill("inst1")
        time.sleep(0.5)
        print("   promote inst2: box.cfg{read_only = false}")
        cluster.set_read_only("inst2", False)
        promoted_at = time.monotonic()
        pool.wait(Mode.RW, timeout=10)
        print(f"   the pool sees the new master {time.monotonic() - promoted_at:.2f} s after the promotion")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(f"   after: {stats}")
    print(f"   failed writes by error: {dict(error_classes) or 'none'} "
          "(UnknownOutcomeError = a write in flight at the kill: it may or may not have been applied)")
    print(f"   longest write pause: {longest_pause[0]:.2f} s (the master was down "
          f"{promoted_at - killed_at:.2f} s before a replica was promoted)")
    print(f"   reads (PREFER_RO) that failed during the failover: {stats['read_errors']}")


if __name__ == "__main__":
    sys.exit(main())
