"""Chaos under load: the pool keeps its promises while the replica set is broken.

Sixteen writer threads insert unique keys into a synchronous space (quorum 2
of 3) through the pool in mode RW; sixteen reader threads select existing
keys, ask ``whoami`` and ``echo`` a nonce in PREFER_RO / ANY.  Meanwhile a
fault loop, driven by ``random.Random(seed)`` and bounded in count and time,
kills the master with SIGKILL and promotes the most up-to-date replica,
freezes and thaws a replica, restarts a replica, and cuts a client
connection under the requests in flight.  At the end the final master's data
is compared with what the writers were told; :meth:`ChaosReport.problems`
lists every check.

Faults come one at a time.  Killing the master waits until every instance is
up and replicating, so that an acknowledged write (on the master and at least
one replica) always survives the promotion.  docs/reliability.md explains the
choices and what Tarantool 2.6.0 (Debian's package) does under this load.

Used by tests/test_chaos.py (the short run, part of ``make test``) and
runnable as a script for the long run (``make chaos``)::

    python tests/chaos.py --seconds 120 [--seed N] [--record docs/reliability.md]

The script starts a replica set of its own (test-cluster/cluster.py) and
exits with 1 when a check fails.  Every run prints its seed: the seed fixes
the fault schedule (kinds, targets, pauses), not the interleaving of the
requests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, ROOT / "test-cluster"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from cluster import AdminError, AdminTimeout, AdminUnavailable, Cluster, ClusterError  # noqa: E402

from tarantool_pool.connection_pool import ConnectionPool, Mode  # noqa: E402
from tarantool_pool.errors import (  # noqa: E402
    DatabaseError,
    LoadingError,
    NetworkError,
    PoolTopologyError,
    ReadOnlyError,
    RequestTimeoutError,
    UnknownOutcomeError,
)

SPACE = "chaos"
KEY_STRIDE = 1_000_000_000  # id = writer * KEY_STRIDE + seq: one key per attempt, never reused
OVERRUN = 0.1  # a request may end at most this long after its deadline
ADMIN_ERRORS = (AdminError, AdminTimeout, AdminUnavailable)
DEFAULT_SYNCHRO_TIMEOUT = 5  # Tarantool's default replication_synchro_timeout

# Server errors that say a synchronous write failed.  Tarantool 2.6.0 can keep
# such a write on a replica all the same (the rollback does not reach its
# data, see docs/reliability.md), so they count as "rejected", not "absent".
ER_WAL_IO = 40  # how 2.6.0 fails the writes queued behind one whose quorum timed out
ER_UNCOMMITTED_FOREIGN_SYNC_TXNS = 214  # a new master whose clear_synchro_queue() has not finished
ER_SYNC_QUORUM_TIMEOUT = 216
ER_SYNC_ROLLBACK = 217
REJECTED_CODES = frozenset({ER_WAL_IO, ER_UNCOMMITTED_FOREIGN_SYNC_TXNS, ER_SYNC_QUORUM_TIMEOUT, ER_SYNC_ROLLBACK})

# The error classes a request may end with under these faults, and why.
ACCEPTABLE_WRITE_ERRORS = {
    "UnknownOutcomeError": "sent, then the connection died: may or may not be applied",
    "UnknownOutcomeTimeoutError": "sent, then the deadline passed: may or may not be applied",
    "PoolTopologyError": "no master within the deadline (a promotion in progress): never sent",
    "ReadOnlyError": "every attempt met a demoted instance: refused, nothing applied",
    "LoadingError": "every attempt met an instance still starting: refused, nothing applied",
    "NetworkError": "never left the client (request_sent False), retries ran out: nothing applied",
    "ConnectionClosedError": "never left the client (request_sent False), retries ran out: nothing applied",
    "SyncQuorumTimeoutError": "the synchronous quorum timed out: the master rolled the write back",
    "SyncRollbackError": "rolled back together with an earlier write whose quorum timed out",
    "DatabaseError": "only codes 40, 214, 216, 217: the synchronous commit failed on the master",
}
ACCEPTABLE_READ_ERRORS = {
    "PoolTopologyError": "no instance fits the mode within the deadline",
    "RequestTimeoutError": "every attempt met a frozen or dying instance until the deadline",
    "NetworkError": "every attempt's connection died, retries ran out",
    "ConnectionClosedError": "every attempt's connection died, retries ran out",
    "LoadingError": "every attempt met an instance still starting",
}

# The greatest LSN of one replica id in a dead instance's xlogs, read offline:
# tells whether a killed master wrote rows that no survivor received.
XLOG_MAX_LSN_LUA = """
local xlog = require('xlog')
local fio = require('fio')
local dir, id = arg[1], tonumber(arg[2])
local files = fio.glob(fio.pathjoin(dir, '*.xlog'))
table.sort(files)
local best = 0
for i = #files, 1, -1 do
    local ok, err = pcall(function()
        for _, row in xlog.pairs(files[i]) do
            local h = row.HEADER
            if h ~= nil and h.replica_id == id and h.lsn ~= nil and h.lsn > best then
                best = h.lsn
            end
        end
    end)
    if not ok then io.stderr:write(tostring(err), '\\n') end
    if best > 0 then break end  -- the LSNs of one id grow from file to file
end
print(best)
os.exit(0)
"""

SETUP_SPACE_LUA = """
if box.space.chaos ~= nil then box.space.chaos:drop() end
local s = box.schema.space.create('chaos', {
    is_sync = true, if_not_exists = true,
    format = {{'id', 'unsigned'}, {'writer', 'unsigned'}, {'seq', 'unsigned'}},
})
s:create_index('primary', {parts = {'id'}, if_not_exists = true})
return s.is_sync
"""

# space_object:alter() came with 2.7: change the flags in _space directly.
SET_SYNC_LUA = "box.space._space:update(box.space.chaos.id, {{'=', 6, {is_sync = %s}}})"

DUMP_LUA = """
local out = {}
for _, t in box.space.chaos:pairs() do
    out[#out + 1] = {t[1], t[2], t[3]}
end
return out
"""


@dataclasses.dataclass
class ChaosConfig:
    seconds: float = 25.0
    seed: int = 0
    writers: int = 16
    readers: int = 16
    write_timeout: float = 2.0
    read_timeout: float = 1.0
    read_attempt_timeout: float = 0.4
    selection_timeout: float = 3.0
    refresh_delay: float = 0.3
    max_faults: int = 10
    synchro_quorum: int = 2
    synchro_timeout: float = 1.0
    warmup: float = 1.5
    fault_gap: tuple[float, float] = (0.5, 2.0)  # pause before each fault, seconds
    error_backoff: float = 0.02  # a thread pauses this long after a failed request


@dataclasses.dataclass
class Fault:
    kind: str
    target: str
    at: float  # seconds since the load started
    seconds: float = 0.0  # how long the fault and its repair took
    detail: str = ""
    first_ack_after: float | None = None  # seconds from the fault to the next acknowledged write
    write_failures: dict[str, int] = dataclasses.field(default_factory=dict)  # until the next event


class WriterStats:
    def __init__(self) -> None:
        self.attempts = 0
        self.acked: list[int] = []
        self.ack_times: list[float] = []
        self.unknown: list[int] = []
        self.not_applied: list[tuple[int, str]] = []  # refused or never sent
        self.rejected: list[int] = []  # the server said the synchronous commit failed
        self.unexpected: list[str] = []
        self.failures: list[tuple[float, str]] = []  # (monotonic time, "Class(code)")
        self.errors: Counter[str] = Counter()
        self.mismatches: list[str] = []
        self.overlong: list[str] = []
        self.longest = 0.0


class ReaderStats:
    def __init__(self) -> None:
        self.requests = 0
        self.by_kind: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.mismatches: list[str] = []
        self.overlong: list[str] = []
        self.longest = 0.0


@dataclasses.dataclass
class ChaosReport:
    seed: int
    config: ChaosConfig
    seconds: float = 0.0
    writes: int = 0
    acked: int = 0
    unknown: int = 0
    unknown_present: int = 0
    not_applied: int = 0
    rejected: int = 0
    rejected_present: int = 0
    reads: int = 0
    reads_by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
    write_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    read_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    faults: list[Fault] = dataclasses.field(default_factory=list)  # injected
    repairs: list[Fault] = dataclasses.field(default_factory=list)  # not injected: crashes, failed steps
    rebootstraps: int = 0
    longest_write_pause: float = 0.0
    longest_write: float = 0.0
    longest_read: float = 0.0
    final_master: str = ""
    rows_on_master: int = 0
    replica_extra_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    # The checks: each non-empty list fails the run.
    missing_acked: list[int] = dataclasses.field(default_factory=list)
    never_attempted: list[Any] = dataclasses.field(default_factory=list)
    duplicates: list[int] = dataclasses.field(default_factory=list)
    not_applied_present: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    mismatches: list[str] = dataclasses.field(default_factory=list)
    overlong: list[str] = dataclasses.field(default_factory=list)
    unexpected_errors: list[str] = dataclasses.field(default_factory=list)
    leaked_threads: list[str] = dataclasses.field(default_factory=list)
    harness_problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def faults_by_kind(self) -> dict[str, int]:
        return dict(Counter(fault.kind for fault in self.faults))

    def problems(self) -> list[str]:
        """Every broken promise, one line each: empty when the run passed."""
        out = []

        def add(items: list[Any], what: str) -> None:
            if items:
                shown = "; ".join(str(item) for item in items[:5])
                out.append(f"{len(items)} {what}: {shown}{' ...' if len(items) > 5 else ''}")

        add(self.missing_acked, "acknowledged writes missing on the final master")
        add(self.never_attempted, "rows on the final master that no writer attempted")
        add(self.duplicates, "duplicated keys")
        add(self.not_applied_present, "writes reported as refused or never sent that are present")
        add(self.mismatches, "replies that do not answer their request")
        add(self.overlong, f"requests longer than their deadline + {OVERRUN * 1000:.0f} ms")
        add(self.unexpected_errors, "errors of an unexpected class")
        add(self.leaked_threads, "tarantool_pool threads alive after close()")
        add(self.harness_problems, "problems of the chaos harness itself")
        if self.acked == 0:
            out.append("no write was acknowledged at all")
        return out

    def figures(self) -> list[str]:
        """The run's figures, one line each, for the test output and the docs."""

        def counts(items: dict[str, int]) -> str:
            return ", ".join(f"{name} {n}" for name, n in sorted(items.items()) if n) or "none"

        acked = (f"acknowledged writes: {self.acked}, every one on the final master ({self.final_master}, "
                 f"{self.rows_on_master} rows)")
        if self.missing_acked:
            acked = f"acknowledged writes: {self.acked}, {len(self.missing_acked)} MISSING on the final master"
        refused = f"refused or never sent: {self.not_applied}, none applied"
        if self.not_applied_present:
            refused = f"refused or never sent: {self.not_applied}, {len(self.not_applied_present)} APPLIED"
        crashed = sum(1 for event in self.repairs if event.kind == "crash")
        crashes = f"; instances that crashed by themselves: {crashed}" if crashed else ""
        return [
            f"seed {self.seed}: {self.seconds:.1f} s of load, {self.config.writers} writers, "
            f"{self.config.readers} readers, write deadline {self.config.write_timeout} s, "
            f"read deadline {self.config.read_timeout} s, synchro quorum {self.config.synchro_quorum}, "
            f"synchro timeout {self.config.synchro_timeout} s",
            f"requests: {self.writes + self.reads} ({self.writes} writes, {self.reads} reads: "
            f"{counts(self.reads_by_kind)})",
            acked,
            f"unknown outcome: {self.unknown} ({self.unknown_present} applied, "
            f"{self.unknown - self.unknown_present} not); {refused}",
            f"rejected by the server (synchronous commit failed): {self.rejected}, "
            f"{self.rejected_present} of them on the final master all the same",
            f"faults injected: {len(self.faults)} ({counts(self.faults_by_kind)}); "
            f"instances rebootstrapped: {self.rebootstraps}{crashes}",
            f"write errors by class: {counts(self.write_errors)}",
            f"read errors by class: {counts(self.read_errors)}",
            f"longest write pause (no write acknowledged): {self.longest_write_pause:.2f} s; "
            f"longest write {self.longest_write:.3f} s, longest read {self.longest_read:.3f} s",
            f"rows on a replica but not on the final master: {counts(self.replica_extra_rows)}",
        ]

    def timeline(self) -> list[str]:
        lines = []
        for event in sorted(self.faults + self.repairs, key=lambda e: e.at):
            ack = ("no write acknowledged after it" if event.first_ack_after is None
                   else f"next ack after {event.first_ack_after:.2f} s")
            detail = f" ({event.detail})" if event.detail else ""
            failed = ", ".join(f"{what} {n}" for what, n in sorted(event.write_failures.items())) or "none"
            lines.append(f"{event.at:6.1f} s  {event.kind} {event.target}{detail}; took {event.seconds:.2f} s, "
                         f"{ack}; failed writes until the next event: {failed}")
        return lines

    def text(self) -> str:
        problems = self.problems()
        lines = ["chaos run:", *("  " + line for line in self.figures()), "  events:",
                 *("    " + line for line in self.timeline()),
                 "  verdict: " + ("PASS" if not problems else "FAIL"), *("    " + p for p in problems)]
        return "\n".join(lines)

    def markdown(self, title: str) -> str:
        problems = self.problems()
        lines = [f"### {title}", "", *(f"- {line}" for line in self.figures()),
                 f"- verdict: {'PASS' if not problems else 'FAIL: ' + '; '.join(problems)}",
                 "", "Events (seconds since the load started):", "", "```", *self.timeline(), "```", ""]
        return "\n".join(lines)


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tarantool_pool-")}


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}({getattr(error, 'code', '')}): {str(error)[:160]}"


def classify_write_error(error: BaseException) -> str:
    """unknown, not_applied, rejected or unexpected (see ACCEPTABLE_WRITE_ERRORS)."""
    if isinstance(error, UnknownOutcomeError):
        return "unknown"
    if isinstance(error, (PoolTopologyError, ReadOnlyError, LoadingError)):
        return "not_applied"
    if isinstance(error, RequestTimeoutError):
        return "unexpected"  # a write that timed out must say its outcome is unknown
    if isinstance(error, NetworkError):
        return "not_applied" if error.request_sent is False else "unexpected"
    if isinstance(error, DatabaseError) and error.code in REJECTED_CODES:
        return "rejected"
    return "unexpected"


class ChaosRun:
    """One run against ``cluster``: all three instances up, inst1 the master."""

    def __init__(self, cluster: Cluster, config: ChaosConfig, log: Callable[[str], None] = print) -> None:
        self.c = cluster
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.log = log
        self.master = next(name for name, inst in sorted(cluster.instances.items()) if not inst.read_only)
        self.ids: dict[str, int] = {}
        self.report = ChaosReport(seed=config.seed, config=config)
        self.stop_load = threading.Event()
        self.acked_keys: list[int] = []  # shared with the readers: append and indexing are atomic
        self.writer_stats = [WriterStats() for _ in range(config.writers)]
        self.reader_stats = [ReaderStats() for _ in range(config.readers)]
        self.started = 0.0
        self.pool: ConnectionPool | None = None
        self._nonce = itertools.count()
        self._left_down: set[str] = set()  # instances a failed fault step left down (not crashes)
        self._failed_repairs: Counter[str] = Counter()

    # -- the run -------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        """Set up, load and break, then check; the replica set is left whole, synchronous mode off."""
        self.log(f"chaos: seed {self.cfg.seed}, {self.cfg.seconds} s, at most {self.cfg.max_faults} faults")
        try:
            self._setup()
            self._load_and_break()
            self._heal()
            self._verify()
        finally:
            self._cleanup()
        return self.report

    def _setup(self) -> None:
        for name in self.c.instances:
            self._configure(name)
        assert self.c.admin(self.master, SETUP_SPACE_LUA) is True
        self.c.wait_synced(30)
        self.ids = {name: int(self.c.admin(name, "box.info.id")) for name in self.c.instances}

    def _configure(self, name: str) -> None:
        """The synchronous settings; box.cfg is not persisted, so every (re)start needs them again."""
        self.c.admin(name, f"box.cfg{{replication_synchro_quorum = {self.cfg.synchro_quorum}, "
                           f"replication_synchro_timeout = {self.cfg.synchro_timeout}}}")

    def _load_and_break(self) -> None:
        before = pool_threads()
        pool = self.pool = ConnectionPool(
            self.c.addrs(), user=self.c.user, password=self.c.password, socket_timeout=self.cfg.write_timeout,
            refresh_delay=self.cfg.refresh_delay, selection_timeout=self.cfg.selection_timeout,
            read_attempt_timeout=self.cfg.read_attempt_timeout)
        threads = [threading.Thread(target=self._writer, args=(i,), name=f"chaos-writer-{i}")
                   for i in range(self.cfg.writers)]
        threads += [threading.Thread(target=self._reader, args=(i,), name=f"chaos-reader-{i}")
                    for i in range(self.cfg.readers)]
        try:
            pool.wait(Mode.RW, timeout=10)
            self.started = time.monotonic()
            for thread in threads:
                thread.start()
            self._fault_loop()
            # The load goes on until the planned end, and at least a second after the last repair.
            end = max(self.started + self.cfg.seconds, time.monotonic() + 1.0)
            while time.monotonic() < end:
                time.sleep(0.05)
        finally:
            self.stop_load.set()
            for thread in threads:
                if thread.ident is not None:
                    thread.join(self.cfg.write_timeout + 10)
            stuck = [t.name for t in threads if t.is_alive()]
            if stuck:
                self.report.harness_problems.append(f"load threads did not stop: {stuck}")
            self.report.seconds = time.monotonic() - self.started if self.started else 0.0
            pool.close()
            self.report.leaked_threads = sorted(t.name for t in pool_threads() - before if t.is_alive())

    # -- load ------------------------------------------------------------------------------

    def _writer(self, index: int) -> None:
        assert self.pool is not None
        stats = self.writer_stats[index]
        pool, timeout, selection = self.pool, self.cfg.write_timeout, self.cfg.selection_timeout
        for seq in itertools.count(1):
            if self.stop_load.is_set():
                return
            key = index * KEY_STRIDE + seq
            stats.attempts += 1
            error: BaseException | None = None
            started = time.monotonic()
            try:
                reply = pool.insert(SPACE, [key, index, seq], timeout=timeout, selection_timeout=selection)
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                error = exc
            ended = time.monotonic()
            elapsed = ended - started
            stats.longest = max(stats.longest, elapsed)
            if elapsed > timeout + OVERRUN:
                stats.overlong.append(f"insert {key} took {elapsed:.3f} s (deadline {timeout} s, "
                                      f"{'acknowledged' if error is None else describe(error)})")
            if error is None:
                data = [list(row) for row in reply.data or []]
                if data != [[key, index, seq]]:
                    stats.mismatches.append(f"insert {key} answered {data!r:.120}")
                    stats.unknown.append(key)
                    continue
                stats.acked.append(key)
                stats.ack_times.append(ended)
                self.acked_keys.append(key)
                continue
            name = type(error).__name__
            stats.errors[name] += 1
            stats.failures.append((ended, f"{name}({getattr(error, 'code', '')})"))
            verdict = classify_write_error(error)
            if verdict == "unknown":
                stats.unknown.append(key)
            elif verdict == "not_applied":
                stats.not_applied.append((key, name))
            elif verdict == "rejected":
                stats.rejected.append(key)
            else:
                stats.unknown.append(key)
                stats.unexpected.append(f"insert {key}: {describe(error)}")
            self.stop_load.wait(self.cfg.error_backoff)

    def _reader(self, index: int) -> None:
        assert self.pool is not None
        stats = self.reader_stats[index]
        pool, timeout = self.pool, self.cfg.read_timeout
        rng = random.Random(self.cfg.seed * 1000 + index)
        port_names = {inst.port: name for name, inst in self.c.instances.items()}
        while not self.stop_load.is_set():
            mode = Mode.PREFER_RO if rng.random() < 0.5 else Mode.ANY
            roll = rng.random()
            keys = self.acked_keys
            error: BaseException | None = None
            started = time.monotonic()
            try:
                if roll < 0.6 and keys:
                    key = keys[rng.randrange(len(keys))]
                    what, kind = f"select {key}", "select"
                    rows = pool.select(SPACE, key, mode=mode, timeout=timeout).data or []
                    expected = [key, key // KEY_STRIDE, key % KEY_STRIDE]
                    if len(rows) > 1 or any(list(row) != expected for row in rows):
                        stats.mismatches.append(f"{what} answered {rows!r:.120}")
                elif roll < 0.8:
                    what, kind = "whoami", "whoami"
                    data = pool.call("whoami", mode=mode, timeout=timeout, idempotent=True).data
                    me = data[0] if data else None
                    if not (isinstance(me, dict) and port_names.get(me.get("port", 0)) == me.get("name")):
                        stats.mismatches.append(f"whoami answered {data!r:.120}")
                else:
                    nonce = f"{index}-{next(self._nonce)}-{rng.random()}"
                    what, kind = f"echo {nonce}", "echo"
                    data = pool.call("echo", nonce, mode=mode, timeout=timeout, idempotent=True).data
                    if data != [nonce]:
                        stats.mismatches.append(f"{what} answered {data!r:.120}")
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                error, kind = exc, "failed"
            elapsed = time.monotonic() - started
            stats.requests += 1
            stats.by_kind[kind] += 1
            stats.longest = max(stats.longest, elapsed)
            if elapsed > timeout + OVERRUN:
                stats.overlong.append(f"{what} ({mode.name}) took {elapsed:.3f} s (deadline {timeout} s, "
                                      f"{'answered' if error is None else describe(error)})")
            if error is not None:
                name = type(error).__name__
                stats.errors[name] += 1
                if name not in ACCEPTABLE_READ_ERRORS:
                    stats.unexpected.append(f"{what} ({mode.name}): {describe(error)}")
                self.stop_load.wait(self.cfg.error_backoff)

    # -- faults ----------------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self.started

    def _fault_loop(self) -> None:
        kinds = ["kill_master", "freeze_master", "freeze_replica", "restart_replica", "cut_connection"]
        weights = [3, 1, 2, 2, 3]
        deck = kinds[1:]
        self.rng.shuffle(deck)  # every kind once first, in a seeded order (a master kill among the first
        deck.insert(self.rng.randrange(3), kinds[0])  # three, so that a short run has one); then at random
        stop_at = self.started + self.cfg.seconds - 2.0
        time.sleep(self.cfg.warmup)
        while len(self.report.faults) < self.cfg.max_faults:
            time.sleep(self.rng.uniform(*self.cfg.fault_gap))
            self._recover()
            if time.monotonic() >= stop_at:
                return
            kind = deck.pop(0) if deck else self.rng.choices(kinds, weights)[0]
            if kind == "kill_master" and not self._whole():
                self.log("chaos: the replica set is not whole: no master kill now, a cut connection instead")
                kind = "cut_connection"
                if "kill_master" not in deck:
                    deck.insert(0, "kill_master")  # the kill is owed: next time
            fault = Fault(kind, "", self._now())
            self.report.faults.append(fault)
            self._run_fault(fault, getattr(self, f"_{kind}"))
            self._recover()

    def _run_fault(self, fault: Fault, action: Callable[[Fault], None]) -> None:
        began = time.monotonic()
        try:
            action(fault)
        except (ClusterError, TimeoutError, OSError, subprocess.SubprocessError, *ADMIN_ERRORS) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            fault.detail += f"; harness error: {first}"
            self.report.harness_problems.append(f"{fault.kind} {fault.target} at {fault.at:.1f} s: {first}")
            self._left_down.update(name for name, inst in self.c.instances.items() if not inst.alive())
        fault.seconds = time.monotonic() - began
        self.log(f"chaos: {fault.at:6.1f} s {fault.kind} {fault.target}: {fault.detail} ({fault.seconds:.2f} s)")

    def _recover(self, timeout: float = 20.0) -> None:
        """Bring back whatever is down (a crash, a failed repair), then wait for replication.

        Polls in short steps, so that an instance dying meanwhile (2.6.0 does)
        is repaired at once rather than after the whole timeout.
        """
        deadline = time.monotonic() + timeout
        rounds = 0
        while True:
            dead = [name for name, inst in sorted(self.c.instances.items()) if not inst.alive()]
            if dead and rounds < 3:
                rounds += 1
                for name in dead:
                    self._repair(name)
                continue
            if dead:
                return  # given up on it: the failed repairs are reported already
            try:
                self.c.wait_replication(max(min(2.0, deadline - time.monotonic()), 0.1))
                return
            except (TimeoutError, *ADMIN_ERRORS) as exc:
                if time.monotonic() >= deadline:
                    self.log(f"chaos: replication not whole after {timeout} s: {str(exc)[:300]}")
                    return

    def _replicas(self) -> list[str]:
        return sorted(name for name in self.c.instances if name != self.master)

    def _whole(self) -> bool:
        """Every instance up and following every peer: a promotion then keeps every acknowledged write."""
        if not all(inst.alive() for inst in self.c.instances.values()):
            return False
        try:
            return all(self.c.replication_ok(name) for name in self.c.instances)
        except ADMIN_ERRORS:
            return False

    def _repair(self, name: str) -> None:
        """Bring ``name`` back: it crashed by itself (Tarantool 2.6.0 does) or a repair of ours failed."""
        if self._failed_repairs[name] >= 2:
            return  # given up on it: the failures are in harness_problems already
        problems = len(self.report.harness_problems)
        if name in self._left_down:
            self._left_down.discard(name)
            event = Fault("repair", name, self._now(), detail="left down by a failed step")
        else:
            event = Fault("crash", name, self._now(), detail=self._last_words(name))
        self.report.repairs.append(event)
        if name == self.master:
            self._run_fault(event, lambda fault: self._failover(name, fault))
        else:
            self._run_fault(event, lambda fault: self._bring_back(name, fault))
        if len(self.report.harness_problems) > problems:
            self._failed_repairs[name] += 1

    def _last_words(self, name: str) -> str:
        """What the instance's logs say about its death: a fatal line, or where it segfaulted."""
        said = []
        for line in self.c.log_tails([name], lines=60).splitlines():
            line = line.strip()
            if " F> " in line:
                said.append(line.split(" F> ", 1)[1][:120])
            elif line.startswith("Segmentation fault"):
                said.append("segmentation fault")
            else:
                frame = re.match(r"#\d+ +0x[0-9a-f]+ in (\S+?)\+", line)
                if frame and said and said[-1] == "segmentation fault" and not frame.group(1).startswith(
                        ("print_backtrace", "_ZL12sig_fatal", "__sigaction")):
                    said[-1] = f"segmentation fault in {frame.group(1)}"
        return "; ".join(dict.fromkeys(said)) or "no fatal line in its logs"

    def _kill_master(self, fault: Fault) -> None:
        fault.target = self.master
        self.c.kill(self.master)
        self._failover(self.master, fault)

    def _failover(self, dead: str, fault: Fault) -> None:
        """Promote the survivor that has the most of the dead master's rows; bring the dead one back later.

        An acknowledged write is on the master and at least one replica, and a
        replica applies the master's rows in LSN order: the survivor with the
        greatest LSN of the dead master has every row any survivor has, so every
        acknowledged write.
        """
        dead_id = self.ids[dead]
        lsns = {}
        for name in self.c.instances:
            if name != dead:
                clock = self.c.admin(name, "box.info.vclock") or {}
                lsns[name] = int(clock.get(str(dead_id), 0))
        best = max(lsns.values())
        new = self.rng.choice(sorted(name for name, lsn in lsns.items() if lsn == best))
        began = time.monotonic()
        self._configure(new)
        self.c.set_read_only(new, False)
        self.c.admin(new, "box.ctl.clear_synchro_queue()", timeout=30)
        self.master = new
        fault.detail += ("; " if fault.detail else "") + (
            f"promoted {new} in {time.monotonic() - began:.2f} s (LSNs of the dead master: {lsns})")
        time.sleep(self.rng.uniform(0.5, 2.0))  # the old master stays down a while
        self._bring_back(dead, fault)

    def _bring_back(self, name: str, fault: Fault) -> None:
        """Restart a dead instance read-only on its data, or rebootstrap it when that cannot work."""
        tail = self._unreplicated_rows(name)
        if tail > 0:
            self._rebootstrap(name)
            fault.detail += f"; {name} had {tail} row(s) no survivor got: rebootstrapped"
            return
        try:
            self.c.start(name, read_only=True)
            self._configure(name)
            fault.detail += f"; {name} restarted read-only"
        except (ClusterError, *ADMIN_ERRORS) as exc:
            self._rebootstrap(name)
            fault.detail += f"; {name} did not restart ({str(exc).splitlines()[0]}): rebootstrapped"

    def _unreplicated_rows(self, dead: str) -> int:
        """How many rows of ``dead`` (not running) are in its WAL and on no other instance."""
        dead_id = self.ids[dead]
        known = 0
        for name, inst in self.c.instances.items():
            if name != dead and inst.alive():
                clock = self.c.admin(name, "box.info.vclock") or {}
                known = max(known, int(clock.get(str(dead_id), 0)))
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(XLOG_MAX_LSN_LUA)
        try:
            out = subprocess.run(["tarantool", script.name, str(self.c.instances[dead].workdir), str(dead_id)],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        finally:
            os.unlink(script.name)
        return int(out.split()[-1]) - known

    def _rebootstrap(self, name: str) -> None:
        """Wipe ``name`` and join it again as a fresh replica of the current master.

        A killed master whose WAL holds rows that nobody else received cannot
        rejoin on its data with Tarantool 2.6: nothing rolls those rows back
        (PROMOTE and fencing came with 2.10), and 2.6.0 even crashes in
        txn_limbo_ack once a replica acknowledges them.  Its registration is
        removed first, so the replica set keeps three members.

        While it joins, the chaos space is asynchronous: 2.6.0 panics
        ("transaction rolled back during snapshot recovery") when a rollback of
        a synchronous write reaches a joining replica, and it rolls back some
        even with quorum 1.  Writes acknowledged meanwhile are on the master
        only, so no master is killed before the replicas have them all.
        """
        inst = self.c.instances[name]
        old_id = self.ids[name]
        self.c.kill(name)  # whatever is left of it
        self._admin_retry(self.master, SET_SYNC_LUA % "false")
        try:
            time.sleep(self.cfg.synchro_timeout + 0.3)  # synchronous writes already queued end first
            self._admin_retry(self.master, f"box.space._cluster:delete({old_id})")
            for pattern in ("*.snap", "*.xlog", "*.vylog", "*.inprogress"):
                for path in inst.workdir.glob(pattern):
                    path.unlink()
            inst.read_only = True
            self.c._spawn(inst, "join", self.c.instances[self.master].uri, owner=self.c._atexit_registered)
            self.c._write_state()
            self.c._wait_started([inst], time.monotonic() + 60)
            self.c.wait_replication(30, names=[name])
        finally:
            self._admin_retry(self.master, SET_SYNC_LUA % "true")
        self._configure(name)
        self.ids[name] = int(self.c.admin(name, "box.info.id"))
        self._wait_caught_up()
        self.report.rebootstraps += 1

    def _admin_retry(self, name: str, lua: str, attempts: int = 5) -> Any:
        """Run a write on the master; 2.6.0 may roll it back with a synchronous write that timed out."""
        for attempt in range(attempts):
            try:
                return self.c.admin(name, lua, timeout=10)
            except AdminError:
                if attempt + 1 == attempts:
                    raise
                time.sleep(self.cfg.synchro_timeout / 2)
        return None

    def _wait_caught_up(self, timeout: float = 30.0) -> None:
        """Until every running replica has every row the master has written so far."""
        master_id = str(self.ids[self.master])
        target = int((self.c.admin(self.master, "box.info.vclock") or {}).get(master_id, 0))
        deadline = time.monotonic() + timeout
        for name in self._replicas():
            if self.c.instances[name].alive():
                self.c.wait_until(name, f"(box.info.vclock[{master_id}] or 0) >= {target}",
                                  max(deadline - time.monotonic(), 0.1))

    def _freeze_master(self, fault: Fault) -> None:
        """SIGSTOP the master briefly: the writes in flight run into their deadline, together."""
        self._freeze(self.master, fault)

    def _freeze_replica(self, fault: Fault) -> None:
        self._freeze(self.rng.choice(self._replicas()), fault)

    def _freeze(self, name: str, fault: Fault) -> None:
        fault.target = name
        seconds = self.rng.uniform(0.5, 2.5)
        self.c.freeze(name)
        try:
            time.sleep(seconds)
        finally:
            self.c.thaw(name)
        fault.detail = f"for {seconds:.2f} s"

    def _restart_replica(self, fault: Fault) -> None:
        name = fault.target = self.rng.choice(self._replicas())
        self.c.stop(name)
        try:
            self.c.start(name, read_only=True)
            self._configure(name)
            fault.detail = "SIGTERM, started again"
        except (ClusterError, *ADMIN_ERRORS) as exc:
            self._rebootstrap(name)
            fault.detail = f"did not start again ({str(exc).splitlines()[0]}): rebootstrapped"

    def _cut_connection(self, fault: Fault) -> None:
        assert self.pool is not None
        name = fault.target = self.master if self.rng.random() < 0.5 else self.rng.choice(self._replicas())
        unit = self.pool.pool[self.c.instances[name].uri]
        in_flight = unit.in_flight
        link = getattr(unit.conn, "_link", None)
        if link is None:
            fault.detail = "no connection to cut"
            return
        with contextlib.suppress(OSError):
            link.sock.shutdown(socket.SHUT_RDWR)
        fault.detail = f"{in_flight} request(s) in flight"

    # -- the end -----------------------------------------------------------------------------

    def _heal(self) -> None:
        """Every instance running and replicating again; the roles stay as the run left them."""
        for name, inst in self.c.instances.items():
            if inst.alive():
                self.c.thaw(name)
        self._recover()

    def _verify(self) -> None:
        r = self.report
        writers, readers = self.writer_stats, self.reader_stats
        acked = {key for stats in writers for key in stats.acked}
        unknown = {key for stats in writers for key in stats.unknown}
        not_applied = {key: why for stats in writers for key, why in stats.not_applied}
        rejected = {key for stats in writers for key in stats.rejected}
        r.writes = sum(stats.attempts for stats in writers)
        r.acked, r.unknown, r.not_applied, r.rejected = len(acked), len(unknown), len(not_applied), len(rejected)
        r.write_errors = dict(sum((stats.errors for stats in writers), Counter()))
        r.read_errors = dict(sum((stats.errors for stats in readers), Counter()))
        r.reads = sum(stats.requests for stats in readers)
        r.reads_by_kind = dict(sum((stats.by_kind for stats in readers), Counter()))
        everyone: list[WriterStats | ReaderStats] = [*writers, *readers]
        r.unexpected_errors = [u for stats in everyone for u in stats.unexpected]
        r.mismatches = [m for stats in everyone for m in stats.mismatches]
        r.overlong = [m for stats in everyone for m in stats.overlong]
        r.longest_write = max((stats.longest for stats in writers), default=0.0)
        r.longest_read = max((stats.longest for stats in readers), default=0.0)

        ack_times = sorted(t for stats in writers for t in stats.ack_times)
        end = self.started + r.seconds
        marks = [self.started, *ack_times, end]
        r.longest_write_pause = max(b - a for a, b in zip(marks, marks[1:]))
        failures = sorted(f for stats in writers for f in stats.failures)
        events = sorted(r.faults + r.repairs, key=lambda e: e.at)
        for event, following in zip(events, [*events[1:], None]):
            at = self.started + event.at
            until = end if following is None else self.started + following.at
            after = next((t for t in ack_times if t >= at), None)
            event.first_ack_after = None if after is None else after - at
            event.write_failures = dict(Counter(what for t, what in failures if at <= t < until))

        # Synchronous writes still queued end (confirmed or rolled back) within the synchro timeout.
        time.sleep(self.cfg.synchro_timeout + 0.5)
        with contextlib.suppress(TimeoutError, *ADMIN_ERRORS):
            self.c.wait_synced(30)
        r.final_master = self.master
        rows = self.c.admin(self.master, DUMP_LUA, timeout=60) or []
        r.rows_on_master = len(rows)
        attempts = [stats.attempts for stats in writers]
        present: set[int] = set()
        for row in rows:
            key, writer, seq = row
            if key in present:
                r.duplicates.append(key)
            present.add(key)
            if not (0 <= writer < len(attempts) and 1 <= seq <= attempts[writer]
                    and key == writer * KEY_STRIDE + seq):
                r.never_attempted.append(row)
        r.missing_acked = sorted(acked - present)
        r.unknown_present = len(unknown & present)
        r.rejected_present = len(rejected & present)
        r.not_applied_present = sorted((key, why) for key, why in not_applied.items() if key in present)
        for name in self._replicas():
            with contextlib.suppress(*ADMIN_ERRORS):
                theirs = {row[0] for row in self.c.admin(name, DUMP_LUA, timeout=60) or []}
                r.replica_extra_rows[name] = len(theirs - present)

    def _cleanup(self) -> None:
        """Asynchronous replication again, no chaos space, no synchronous queue left behind."""
        for name, inst in self.c.instances.items():
            if inst.alive():
                with contextlib.suppress(*ADMIN_ERRORS):
                    self.c.thaw(name)
                    self.c.admin(name, "box.cfg{replication_synchro_quorum = 1, "
                                       f"replication_synchro_timeout = {DEFAULT_SYNCHRO_TIMEOUT}}}")
        with contextlib.suppress(*ADMIN_ERRORS):
            self.c.admin(self.master, "box.ctl.clear_synchro_queue()", timeout=30)
            self.c.admin(self.master, "if box.space.chaos ~= nil then box.space.chaos:drop() end", timeout=30)
        with contextlib.suppress(TimeoutError, *ADMIN_ERRORS):
            self.c.wait_synced(30)


def takes_writes(cluster: Cluster, name: str = "inst1") -> str | None:
    """None when ``name`` takes a write at once, else why not.

    Meant for after ``cluster.restore()``: a synchronous queue left behind would
    block the writes of every later test.
    """
    probe = ("box.space.test_int:replace{4242424242, 'chaos probe'} "
             "box.space.test_int:delete{4242424242} return true")
    try:
        cluster.admin(name, probe, timeout=5)
        return None
    except ADMIN_ERRORS:
        with contextlib.suppress(*ADMIN_ERRORS):
            cluster.admin(name, "box.ctl.clear_synchro_queue()", timeout=30)
    try:
        cluster.admin(name, probe, timeout=5)
        return None
    except ADMIN_ERRORS as exc:
        return str(exc)


def record(report: ChaosReport, path: Path) -> None:
    """Put the run's figures in the "Last run" section of ``path`` (its last), replacing the previous ones."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = path.read_text() if path.exists() else ""
    heading = "\n## Last run\n"
    head = text[:text.index(heading)] if heading in text else text.rstrip("\n") + "\n"
    title = f"{stamp}: `python tests/chaos.py --seconds {report.config.seconds:g} --seed {report.seed}`"
    intro = "Written by `make chaos` (`tests/chaos.py --record`), which replaces this section with its run."
    path.write_text(f"{head}{heading}\n{intro}\n\n{report.markdown(title)}")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chaos under load against a local replica set.")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--max-faults", type=int, default=None, help="default: one per 3 s of load")
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--record", type=Path, default=None,
                        help='put the figures in the "Last run" section of this markdown file')
    args = parser.parse_args(list(argv) if argv is not None else None)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    config = ChaosConfig(seconds=args.seconds, seed=seed, writers=args.writers, readers=args.readers,
                         max_faults=args.max_faults or max(4, int(args.seconds // 3)))
    cluster = Cluster()
    cluster.up()
    try:
        report = ChaosRun(cluster, config).run()
    finally:
        cluster.down()
    print(report.text())
    if args.record is not None:
        record(report, args.record)
        print(f"figures written to the \"Last run\" section of {args.record}")
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
