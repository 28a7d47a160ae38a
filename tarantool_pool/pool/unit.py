"""PoolUnit: one server = one Connection + one worker thread + a request queue.

Rules:
- The worker owns the unit's lifecycle: it connects, reconnects and refreshes
  the instance's state (``box.info``: status and ro) every ``refresh_delay``,
  each refresh bounded by ``refresh_timeout``.  ANY exception in a refresh
  makes the unit UNHEALTHY; the worker itself never dies of one.
- It blocks on its queue; the queue wait doubles as the refresh tick, so an
  idle unit costs nothing.  The queue carries control tasks (refresh now,
  stop), so a lost connection or a read-only answer triggers a refresh at
  once instead of at the next tick.
- User requests do not pass through the worker: the caller writes on the
  unit's thread-safe pipelined Connection and waits on its own reply slot (see
  transport.py).  That keeps a thread hand-off off the hot path while keeping
  the guarantee that a reply reaches only its caller.
- A lost connection marks the unit down at once (whichever thread finds the
  link dead reports it: a caller reading as the link's leader, a writer, or
  the link's watcher when the server hangs up on an idle link) and wins over
  a refresh that read box.info before the loss: that refresh's result is
  stale and dropped; the loss queued a new refresh.
- State changes are reported to the pool through ``on_state_change``; health
  is logged on change, and a repeating failure at most once per
  ``LOG_REPEAT_SECONDS``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..connection import Connection
from .strategy import InstanceState, Status, role_of

log = logging.getLogger("tarantool_pool")

LOG_REPEAT_SECONDS = 30.0


@dataclass(frozen=True)
class PoolTask:
    """A task for a unit's worker (compatible name): ``method_name`` 'refresh' or 'stop'."""

    method_name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


REFRESH = PoolTask("refresh")
STOP = PoolTask("stop")


def queue_factory() -> queue.Queue[PoolTask]:
    """The channel a unit's worker blocks on (compatible name)."""
    return queue.Queue()


class PoolUnit:
    """One pool member: ``addr``, ``conn``, ``input_queue``, ``thread``, ``state``."""

    def __init__(self, addr: dict[str, Any], conn: Connection, refresh_delay: float, refresh_timeout: float,
                 connect_timeout: float,
                 on_state_change: Callable[[PoolUnit, InstanceState, InstanceState], None]) -> None:
        self.addr = addr
        self.conn = conn
        self.name = f"{addr['host']}:{addr['port']}"
        self.input_queue = queue_factory()
        self.thread: threading.Thread | None = None
        self.state = InstanceState()
        self.request_processing_enabled = False
        self.refresh_delay = refresh_delay
        self.refresh_timeout = refresh_timeout
        self.connect_timeout = connect_timeout
        self.info: dict[str, Any] = {}  # the last box.info read
        self.uuid: str | None = None
        self.rtt: float | None = None  # smoothed round trip of the box.info refresh, seconds
        self.upstreams: dict[str, tuple[str, float]] = {}  # peer uuid -> (upstream status, lag seconds)
        # Counters for get_stats(); plain ints: under heavy concurrency they are approximate, never locked.
        self.requests = 0
        self.errors = 0
        self.retries = 0
        self.timeouts = 0
        self.last_error: str | None = None
        self.last_refresh: float | None = None  # time.monotonic() of the last finished refresh
        self.first_refresh_done = threading.Event()
        self._on_state_change = on_state_change
        self._last_logged: tuple[str, float] | None = None
        self._state_lock = threading.RLock()  # the worker and the thread that saw a link die may both report
        self._disconnects = 0  # on_disconnect() calls so far: a refresh that read box.info before one is stale

    def __repr__(self) -> str:
        return f"<PoolUnit {self.name} {role_of(self.state)}>"

    # -- control ---------------------------------------------------------------

    def start(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self.request_processing_enabled = True
        self.first_refresh_done.clear()
        self.thread = threading.Thread(target=self._run, name=f"tarantool_pool-{self.name}", daemon=True)
        self.thread.start()

    def request_refresh(self) -> None:
        """Refresh now (a request saw a sign that the instance changed or died)."""
        if self.request_processing_enabled:
            self.input_queue.put(REFRESH)

    def on_disconnect(self, reason: BaseException) -> None:
        """Connection callback: the link died; mark the unit down and refresh at once."""
        with self._state_lock:
            self._disconnects += 1
            self._set_state(InstanceState(Status.UNHEALTHY, None), f"connection lost: {reason}")
        self.request_refresh()

    @property
    def in_flight(self) -> int:
        """Requests sent on this unit's connection and not answered yet."""
        return self.conn.in_flight

    def lag_behind(self, master_uuid: str | None) -> float:
        """Replication lag (s) from the master, 0 for the master, inf when not following it."""
        if self.state.read_only is False:
            return 0.0
        if master_uuid is not None:
            status, lag = self.upstreams.get(master_uuid, ("none", float("inf")))
            return lag if status == "follow" else float("inf")
        following = [lag for status, lag in self.upstreams.values() if status == "follow"]
        return max(following) if following else float("inf")

    def note_read_only(self) -> None:
        """The server refused a write as read-only: stop routing writes here now, before the refresh confirms."""
        if self.state.read_only is False:
            self._set_state(InstanceState(self.state.status, True), None)
        self.request_refresh()

    def stop(self) -> None:
        """Ask the worker to exit and close the connection (in-flight requests fail at once)."""
        self.request_processing_enabled = False
        self.input_queue.put(STOP)
        self.conn.close()

    def join(self, timeout: float) -> None:
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # -- the worker --------------------------------------------------------------

    def _run(self) -> None:
        next_refresh = time.monotonic()
        while self.request_processing_enabled:
            try:
                task: PoolTask | None = self.input_queue.get(timeout=max(next_refresh - time.monotonic(), 0))
            except queue.Empty:
                task = None
            if task is STOP or not self.request_processing_enabled:
                break
            if task is not None:
                self._drain_refresh_requests()
            self.refresh()
            next_refresh = time.monotonic() + self.refresh_delay
        log.debug("%s: worker stopped", self.name)

    def _drain_refresh_requests(self) -> None:
        """Several refresh requests queued while one ran collapse into one refresh."""
        while True:
            try:
                task = self.input_queue.get_nowait()
            except queue.Empty:
                return
            if task is STOP:
                self.input_queue.put(STOP)
                return

    def refresh(self) -> None:
        """Connect if needed, read box.info, update the state.  Never raises."""
        disconnects = self._disconnects
        try:
            if not self.request_processing_enabled:
                return
            self.conn.ensure_connected(timeout=self.connect_timeout)  # after stop(): ConnectionClosedError
            started = time.monotonic()
            info = self.conn.call("box.info", timeout=self.refresh_timeout).data
            elapsed = time.monotonic() - started
            info = info[0] if info else None
            if not isinstance(info, dict) or "ro" not in info:
                raise ValueError(f"box.info returned {info!r:.80}")
            self.info = info
            self.rtt = elapsed if self.rtt is None else 0.7 * self.rtt + 0.3 * elapsed
            self.uuid = info.get("uuid")
            self.upstreams = _upstreams(info)
            status = info.get("status")
            if status == "running":
                self._set_state(InstanceState(Status.HEALTHY, bool(info["ro"])), None, disconnects)
            else:
                self._set_state(InstanceState(Status.UNHEALTHY, bool(info["ro"])), f"box.info.status is {status!r}",
                                disconnects)
        except Exception as exc:  # ANY failure makes the unit unhealthy; the worker lives on
            self._set_state(InstanceState(Status.UNHEALTHY, None), _describe(exc))
        finally:
            self.last_refresh = time.monotonic()
            self.first_refresh_done.set()

    def _set_state(self, new: InstanceState, problem: str | None, disconnects: int | None = None) -> None:
        """Apply a new state; a refresh passes the disconnect count it started at."""
        with self._state_lock:
            if disconnects is not None and disconnects != self._disconnects:
                return  # the connection died after this refresh read box.info: what it read is stale
            old = self.state
            self.last_error = problem
            if new != old:
                self.state = new
                self._log_change(old, new, problem)
                self._on_state_change(self, old, new)
            elif problem is not None:
                self._log_repeat(problem)

    def _log_change(self, old: InstanceState, new: InstanceState, problem: str | None) -> None:
        if problem is None:
            log.info("%s: %s -> %s", self.name, role_of(old), role_of(new))
        else:
            log.warning("%s: %s -> %s (%s)", self.name, role_of(old), role_of(new), problem)
            self._last_logged = (problem, time.monotonic())

    def _log_repeat(self, problem: str) -> None:
        now = time.monotonic()
        last = self._last_logged
        if last is None or last[0] != problem or now - last[1] >= LOG_REPEAT_SECONDS:
            log.warning("%s: still unhealthy: %s", self.name, problem)
            self._last_logged = (problem, now)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if "box.info" in text and "denied" in text.lower():
        text += " (grant the pool's user execute on box.info, e.g. execute on universe)"
    return f"{type(exc).__name__}: {text}"


def _upstreams(info: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """box.info.replication -> {peer uuid: (upstream status, lag)} (only peers with an upstream)."""
    replication = info.get("replication")
    entries = replication.values() if isinstance(replication, dict) else replication or []
    found = {}
    for entry in entries:
        upstream = entry.get("upstream") if isinstance(entry, dict) else None
        if isinstance(upstream, dict) and entry.get("uuid"):
            lag = upstream.get("lag")
            # Clocks of two hosts: Tarantool reports a few microseconds below zero at times.
            lag_seconds = max(float(lag), 0.0) if isinstance(lag, (int, float)) else 0.0
            found[str(entry["uuid"])] = (str(upstream.get("status")), lag_seconds)
    return found
