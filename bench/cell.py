"""One benchmark cell, run in a process of its own.

    python bench/cell.py '<spec as JSON>'

prints one JSON line (the cell's result) on stdout and exits.  The spec names
the client, the workload, the concurrency, the warm-up and the measured window,
and where the replica set is (see ``harness.CellSpec``).

A cell: connect, start N workers (threads, or asyncio tasks for asynctnt), let
them run for the warm-up, then count for ``duration`` seconds every request
that completes inside the window: its latency, whether it failed, and whether
the reply was the caller's own (each request carries arguments unique to its
caller, and the reply must echo them back).  The process CPU time
(``getrusage(RUSAGE_SELF)``: every thread of the process) spent inside the
window, divided by the requests completed in it, is the CPU cost per request.

Only the standard library and the client under test are imported, so a cell
measures nothing but that client (and this loop, which is the same for every
Python client).
"""

from __future__ import annotations

import collections
import json
import os
import random
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SPACE = "test_int"
# replace writes ids from here on, away from the rows that select reads.
REPLACE_BASE = 1_000_000
# How many distinct error messages a cell keeps as samples.
ERROR_SAMPLES = 5
# After a failed request a worker pauses this long (a dead server must not
# turn the loop into a busy spin that hides everything else).
ERROR_PAUSE = 0.001
# Workers still running this long after the window are reported as hung.
STOP_GRACE = 15.0


class Window:
    """Shared by the workers: counting on or off, stop."""

    measuring = False
    stop = False


class Tally:
    """One worker's counts; merged by the main thread after the window."""

    __slots__ = ("errors", "latencies", "mismatches", "samples")

    def __init__(self) -> None:
        self.latencies: list[int] = []  # nanoseconds, requests completed in the window
        self.errors = 0
        self.mismatches = 0
        self.samples: list[str] = []

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.samples) < ERROR_SAMPLES:
            text = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300]
            if text not in self.samples:
                self.samples.append(text)


# -- workloads: arguments unique to the caller, and the check of the reply ------------------

def make_args(workload: str, worker: int, seq: int, rng: random.Random, keys: int) -> Any:
    if workload == "select":
        return rng.randint(1, keys)
    if workload == "replace":
        # id picked at random, value unique to (worker, seq): the reply must carry both.
        return [REPLACE_BASE + rng.randrange(keys), "bench", worker * 1_000_000_000 + seq]
    if workload == "call":
        return [worker, seq]
    return None  # ping


def reply_ok(workload: str, args: Any, reply: Any) -> bool | None:
    """True: the caller's own reply; False: someone else's; None: not checkable (ping)."""
    try:
        if workload == "select":
            return len(reply) == 1 and reply[0][0] == args
        if workload == "replace":
            return len(reply) == 1 and reply[0][0] == args[0] and reply[0][2] == args[2]
        if workload == "call":
            return len(reply) == 2 and reply[0] == args[0] and reply[1] == args[1]
    except (IndexError, KeyError, TypeError):
        return False
    return None


# -- the thread runner (every client but the asyncio ones) ---------------------------------------

def thread_worker(worker: int, workload: str, request: Callable[[Any], Any], keys: int, seed: int,
                  window: type[Window], tally: Tally) -> None:
    rng = random.Random(seed * 1000 + worker)
    perf = time.perf_counter_ns
    latencies = tally.latencies
    seq = 0
    while not window.stop:
        seq += 1
        args = make_args(workload, worker, seq, rng, keys)
        started = perf()
        try:
            reply = request(args)
        except Exception as exc:  # counted, never fatal
            if window.measuring:
                tally.error(exc)
            time.sleep(ERROR_PAUSE)
            continue
        finished = perf()
        if window.measuring:
            latencies.append(finished - started)
            if reply_ok(workload, args, reply) is False:
                tally.mismatches += 1


def run_threads(spec: dict[str, Any], requests: list[Callable[[Any], Any]]) -> dict[str, Any]:
    """Run one request function per thread; the measured figures."""
    window = type("CellWindow", (Window,), {})
    tallies = [Tally() for _ in requests]
    threads = [threading.Thread(target=thread_worker, daemon=True, name=f"bench-{number}",
                                args=(number, spec["workload"], request, spec["keys"], spec["seed"], window,
                                      tallies[number]))
               for number, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    time.sleep(spec["warmup"])
    usage_before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    window.measuring = True
    time.sleep(spec["duration"])
    window.measuring = False
    usage_after, finished = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    window.stop = True
    give_up = time.monotonic() + STOP_GRACE
    hung = 0
    for thread in threads:
        thread.join(max(give_up - time.monotonic(), 0))
        hung += thread.is_alive()
    result = figures(spec, tallies, finished - started, usage_before, usage_after)
    if hung:
        result["errors"] += hung
        result["error_samples"].append(f"{hung} worker thread(s) still blocked {STOP_GRACE:.0f} s after the window")
    return result


# -- the asyncio runner (asynctnt, tarantool_pool.aio) ---------------------------------------

AsyncRequest = Callable[[Any], Any]  # args -> awaitable reply


async def open_asynctnt(spec: dict[str, Any]) -> tuple[AsyncRequest, Callable[[], Any]]:
    """asynctnt: one connection to the master, shared by every task."""
    import asynctnt

    master = spec["master"]
    conn = asynctnt.Connection(host=master["host"], port=master["port"], username=spec["user"],
                               password=spec["password"], encoding="utf-8")
    await conn.connect()
    workload = spec["workload"]
    if workload == "select":
        def request(key: Any) -> Any:
            return conn.select(SPACE, [key])
    elif workload == "replace":
        def request(values: Any) -> Any:
            return conn.replace(SPACE, values)
    elif workload == "call":
        def request(args: Any) -> Any:
            return conn.call("echo", args)
    else:
        def request(_: Any) -> Any:
            return conn.ping()
    return request, conn.disconnect


async def open_aio_pool(spec: dict[str, Any]) -> tuple[AsyncRequest, Callable[[], Any]]:
    """tarantool_pool.aio.ConnectionPool over every instance, shared by every task (one loop)."""
    import asyncio

    from tarantool_pool import aio

    pool = aio.ConnectionPool(spec["addrs"], user=spec["user"], password=spec["password"])
    await asyncio.to_thread(wait_all_up, lambda: pool.sync.describe().count(" down") == 0, pool.sync.describe)
    read_mode = getattr(aio.Mode, spec["read_mode"])
    return _pool_request(pool, spec["workload"], read_mode), pool.close


ASYNC_CLIENTS = {"asynctnt": open_asynctnt, "tarantool_pool.aio.ConnectionPool": open_aio_pool}


def run_async(spec: dict[str, Any]) -> dict[str, Any]:
    """N asyncio tasks on one event loop (the default loop, no uvloop) sharing one client."""
    import asyncio

    workload, keys = spec["workload"], spec["keys"]

    async def worker(request: AsyncRequest, number: int, window: type[Window], tally: Tally) -> None:
        rng = random.Random(spec["seed"] * 1000 + number)
        perf = time.perf_counter_ns
        latencies = tally.latencies
        seq = 0
        while not window.stop:
            seq += 1
            args = make_args(workload, number, seq, rng, keys)
            started = perf()
            try:
                reply = await request(args)
            except Exception as exc:
                if window.measuring:
                    tally.error(exc)
                await asyncio.sleep(ERROR_PAUSE)
                continue
            finished = perf()
            if window.measuring:
                latencies.append(finished - started)
                if reply_ok(workload, args, reply) is False:
                    tally.mismatches += 1

    async def main() -> dict[str, Any]:
        request, close = await ASYNC_CLIENTS[spec["client"]](spec)
        window = type("CellWindow", (Window,), {})
        tallies = [Tally() for _ in range(spec["concurrency"])]
        tasks = [asyncio.ensure_future(worker(request, number, window, tally))
                 for number, tally in enumerate(tallies)]
        await asyncio.sleep(spec["warmup"])
        usage_before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        window.measuring = True
        await asyncio.sleep(spec["duration"])
        window.measuring = False
        usage_after, finished = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        window.stop = True
        _, hung = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in hung:
            task.cancel()
        result = figures(spec, tallies, finished - started, usage_before, usage_after)
        if hung:
            result["errors"] += len(hung)
            result["error_samples"].append(f"{len(hung)} task(s) still blocked {STOP_GRACE:.0f} s after the window")
        closed = close()
        if asyncio.iscoroutine(closed):
            await closed
        return result

    return asyncio.run(main())


# -- the clients ----------------------------------------------------------------------

def tarantool_pool_pool(spec: dict[str, Any]) -> tuple[list[Callable[[Any], Any]], Callable[[], None]]:
    """tarantool_pool.ConnectionPool over every instance, shared by all threads."""
    import tarantool_pool

    pool = tarantool_pool.ConnectionPool(spec["addrs"], user=spec["user"], password=spec["password"])
    wait_all_up(lambda: pool.describe().count(" down") == 0, pool.describe)
    read_mode = getattr(tarantool_pool.Mode, spec["read_mode"])
    return [_pool_request(pool, spec["workload"], read_mode)] * spec["concurrency"], pool.close


def tarantool_pool_connection(spec: dict[str, Any]) -> tuple[list[Callable[[Any], Any]], Callable[[], None]]:
    """tarantool_pool.Connection to the master, shared by all threads."""
    import tarantool_pool

    master = spec["master"]
    conn = tarantool_pool.Connection(master["host"], master["port"], user=spec["user"], password=spec["password"])
    return [_connection_request(conn, spec["workload"])] * spec["concurrency"], conn.close


def tarantool_python_pool(spec: dict[str, Any]) -> tuple[list[Callable[[Any], Any]], Callable[[], None]]:
    """tarantool-python's ConnectionPool over every instance, shared by all threads."""
    import tarantool

    pool = tarantool.ConnectionPool(spec["addrs"], user=spec["user"], password=spec["password"])

    def healthy() -> bool:
        return all(unit.state.status == tarantool.connection_pool.Status.HEALTHY for unit in pool.pool.values())

    wait_all_up(healthy, lambda: "instances not healthy")
    read_mode = getattr(tarantool.Mode, spec["read_mode"])
    # Its close() joins each worker for up to refresh_delay; the process exits instead.
    return [_pool_request(pool, spec["workload"], read_mode)] * spec["concurrency"], lambda: None


def tarantool_python_connection(spec: dict[str, Any]) -> tuple[list[Callable[[Any], Any]], Callable[[], None]]:
    """tarantool-python's Connection: one per thread (it is not thread-safe)."""
    import tarantool

    master = spec["master"]
    conns = [tarantool.Connection(master["host"], master["port"], user=spec["user"], password=spec["password"])
             for _ in range(spec["concurrency"])]

    def close() -> None:
        for conn in conns:
            conn.close()

    return [_connection_request(conn, spec["workload"]) for conn in conns], close


def _pool_request(pool: Any, workload: str, read_mode: Any) -> Callable[[Any], Any]:
    if workload == "select":
        return lambda key: pool.select(SPACE, key, mode=read_mode)
    if workload == "replace":
        return lambda values: pool.replace(SPACE, values)  # default mode: RW
    if workload == "call":
        return lambda args: pool.call("echo", args, mode=read_mode)
    return lambda _: pool.ping(notime=True, mode=read_mode)


def _connection_request(conn: Any, workload: str) -> Callable[[Any], Any]:
    if workload == "select":
        return lambda key: conn.select(SPACE, key)
    if workload == "replace":
        return lambda values: conn.replace(SPACE, values)
    if workload == "call":
        return lambda args: conn.call("echo", args)
    return lambda _: conn.ping(notime=True)


def wait_all_up(ready: Callable[[], bool], describe: Callable[[], str], timeout: float = 15.0) -> None:
    """A pool cell starts once every instance is known healthy (so ANY spreads over all three)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pool did not see every instance healthy within {timeout} s: {describe()}")
        time.sleep(0.05)


def thread_handoff_floor(spec: dict[str, Any]) -> tuple[list[Callable[[Any], Any]], Callable[[], None]]:
    """No server, no socket, no codec: each caller hands its request to one "reader" thread and
    sleeps on a lock of its own until that thread wakes it with the reply.

    That is the skeleton of every client with one blocked thread per request whose replies another
    thread reads (a reader thread; or tarantool_pool's leader/follower under load, where the caller
    reading for the others wakes each of them): its figures are what one thread wake-up per request costs in this Python on this
    machine, a floor under such a client's CPU per request and a ceiling over its requests/s.
    """
    workload = spec["workload"]
    queued: collections.deque[tuple[threading.Lock, list[Any], Any]] = collections.deque()
    wakeups = threading.Semaphore(0)
    stopping = threading.Event()

    def reader() -> None:
        while not stopping.is_set():
            if not wakeups.acquire(timeout=0.1):
                continue
            while queued:  # everything queued meanwhile, as one recv() brings many replies
                slot, box, args = queued.popleft()
                box.append(echo_reply(workload, args))
                slot.release()

    def request(args: Any) -> Any:
        slot = threading.Lock()
        slot.acquire()
        box: list[Any] = []
        queued.append((slot, box, args))
        wakeups.release()
        if not slot.acquire(timeout=10):
            raise TimeoutError("the reader thread did not answer")
        return box[0]

    threading.Thread(target=reader, daemon=True, name="floor-reader").start()
    return [request] * spec["concurrency"], stopping.set


def echo_reply(workload: str, args: Any) -> Any:
    """The reply the server would give (so the floor goes through the same check)."""
    if workload == "select":
        return [[args, "name", args]]
    if workload == "replace":
        return [args]
    if workload == "call":
        return list(args)
    return None


THREAD_CLIENTS: dict[str, Callable[[dict[str, Any]], tuple[list[Callable[[Any], Any]], Callable[[], None]]]] = {
    "tarantool_pool.ConnectionPool": tarantool_pool_pool,
    "tarantool_pool.Connection": tarantool_pool_connection,
    "tarantool.ConnectionPool": tarantool_python_pool,
    "tarantool.Connection": tarantool_python_connection,
    "thread-floor": thread_handoff_floor,
}


# -- results ------------------------------------------------------------------------------

def percentile(ordered: list[int], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (nanoseconds in, microseconds out)."""
    if not ordered:
        return float("nan")
    rank = max(int(len(ordered) * fraction + 0.999999) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)] / 1000.0


def figures(spec: dict[str, Any], tallies: list[Tally], elapsed: float, before: Any, after: Any) -> dict[str, Any]:
    latencies = sorted(latency for tally in tallies for latency in tally.latencies)
    requests = len(latencies)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    cpu = user + system
    switches = (after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw)
    samples: list[str] = []
    for tally in tallies:
        samples += [sample for sample in tally.samples if sample not in samples]
    checkable = spec["workload"] != "ping"
    return {
        "status": "ok",
        "requests": requests,
        "seconds": round(elapsed, 4),
        "rps": requests / elapsed if elapsed > 0 else 0.0,
        "p50_us": percentile(latencies, 0.50),
        "p99_us": percentile(latencies, 0.99),
        "cpu_us_per_req": cpu * 1e6 / requests if requests else float("nan"),
        "cpu_seconds": round(cpu, 4),
        "user_us_per_req": user * 1e6 / requests if requests else float("nan"),
        "sys_us_per_req": system * 1e6 / requests if requests else float("nan"),
        # Voluntary + involuntary, every thread of the process (Linux sums them for RUSAGE_SELF).
        "switches_per_req": switches / requests if requests else float("nan"),
        "errors": sum(tally.errors for tally in tallies),
        "mismatches": sum(tally.mismatches for tally in tallies) if checkable else None,
        "error_samples": samples[:ERROR_SAMPLES],
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["client"] in ASYNC_CLIENTS:
        return run_async(spec)
    requests, close = THREAD_CLIENTS[spec["client"]](spec)
    try:
        return run_threads(spec, requests)
    finally:
        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        closer.join(5.0)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    try:
        result = run(spec)
    except Exception as exc:  # the cell could not run at all: say why, never invent figures
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(result, allow_nan=True), flush=True)
    sys.stdout.flush()
    # Daemon threads of peers (pool workers, readers) must not delay the exit.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
