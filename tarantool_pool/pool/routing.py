"""Routing one request: pick a unit (waiting for one up to the selection deadline), send, fail over.

Rules (the request path of pool.py's docstring, step 2 and 3 in detail):
- The fast path is one strategy ``getnext`` and one send: no lock, no retry
  object, no clock call beyond the deadline's.
- When no instance fits the mode, the caller waits on the pool's topology
  condition until one does, up to ``selection_timeout`` (0: fail at once),
  never past the request's own deadline.
- A failed attempt is judged by failover.classify: retried on another
  instance, turned into UnknownOutcomeError, or raised as it is.  A network
  error or timeout refreshes the unit at once; a read-only refusal refreshes
  every unit, since the new master may be any of them.
- ``max_lag`` (reads in RO, PREFER_RO, ANY) skips replicas lagging behind the
  master by more than that many seconds or not following it; PREFER_RO then
  falls back to the master.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import tenacity

from ..errors import DatabaseError, PoolClosedError, PoolTopologyError, ReadOnlyError, RequestTimeoutError
from .failover import EventKind, Listeners, Verdict, classify, retrying, unknown_outcome
from .strategy import Mode, StrategyInterface, role_of
from .unit import PoolUnit

log = logging.getLogger("tarantool_pool")

_LAG_MODES = frozenset({Mode.RO, Mode.PREFER_RO, Mode.ANY})


class RoutingMixin:
    """Selection with a deadline, failover and per-unit counters for ConnectionPool."""

    pool: dict[str, PoolUnit]
    strategy: StrategyInterface
    _topology: threading.Condition
    _closed: bool
    request_timeout: float
    selection_timeout: float
    max_retries: int
    read_attempt_timeout: float | None
    max_lag: float | None
    slow_request_threshold: float | None
    listeners: Listeners

    def _route(self, mode: Mode, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], is_read: bool,
               timeout: float | None = None, selection_timeout: float | None = None,
               max_lag: float | None = None) -> Any:
        if self._closed:
            raise PoolClosedError("the pool is closed")
        deadline, until, wait, lag = self._budget(mode, timeout, selection_timeout, max_lag)
        try:  # _select's first step, spelled out: the usual pick is one getnext
            unit = self.strategy.getnext(mode) if lag is None else self._pick(mode, lag, ())
        except PoolTopologyError:
            unit = self._select(mode, until, lag, ())  # picks once more, then waits for a fitting instance
        try:
            return self._attempt(unit, method, args, kwargs, deadline, is_read)
        except DatabaseError as error:
            self._judge_first_failure(error, unit, is_read, deadline)
        return self._retry(mode, method, args, kwargs, deadline, wait, lag, is_read, unit)

    def _budget(self, mode: Mode, timeout: float | None, selection_timeout: float | None,
                max_lag: float | None) -> tuple[float, float, float, float | None]:
        """A request's deadline, the first selection's deadline, the selection wait, and the lag
        bound (reads only); per-call values win over the pool's."""
        now = time.monotonic()
        deadline = now + (timeout if timeout is not None else self.request_timeout)
        wait = self.selection_timeout if selection_timeout is None else selection_timeout
        lag = (self.max_lag if max_lag is None else max_lag) if mode in _LAG_MODES else None
        until = now + wait
        return deadline, deadline if until > deadline else until, wait, lag

    def _retry(self, mode: Mode, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], deadline: float,
               wait: float, lag: float | None, is_read: bool, failed: PoolUnit) -> Any:
        tried = {failed.name}
        current = [failed]

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            self._note_retry(current[0], error, state.attempt_number + 1)

        for attempt in retrying(deadline, self.max_retries, is_read, before_sleep):
            with attempt:
                if self._closed:
                    raise PoolClosedError("the pool is closed")
                unit = self._select(mode, min(deadline, time.monotonic() + wait), lag, tried)
                current[0] = unit
                tried.add(unit.name)
                try:
                    return self._attempt(unit, method, args, kwargs, deadline, is_read)
                except DatabaseError as error:
                    self._judge_retry_failure(error, unit, is_read)
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    # -- judging a failed attempt (shared with the asyncio router, aio/routing.py) ----------

    def _judge_first_failure(self, error: DatabaseError, unit: PoolUnit, is_read: bool, deadline: float) -> None:
        """Raise what the caller must see, or return when the request should be retried elsewhere."""
        if self._closed:  # close() failed it: say so, whatever the request was
            raise PoolClosedError("the pool is closed") from error
        verdict = classify(error, is_read)
        if verdict is Verdict.UNKNOWN_OUTCOME:
            raise self._unknown_outcome(error, unit) from error
        if verdict is not Verdict.RETRY or self.max_retries <= 0 or time.monotonic() >= deadline:
            raise error
        self._note_retry(unit, error, 1)

    def _judge_retry_failure(self, error: DatabaseError, unit: PoolUnit, is_read: bool) -> None:
        """Inside the retry loop: raise the closed/unknown-outcome error; else return (tenacity decides)."""
        if self._closed:
            raise PoolClosedError("the pool is closed") from error
        if classify(error, is_read) is Verdict.UNKNOWN_OUTCOME:
            raise self._unknown_outcome(error, unit) from error

    def _unknown_outcome(self, error: DatabaseError, unit: PoolUnit) -> DatabaseError:
        wrapped = unknown_outcome(error, unit.name)
        self.listeners.emit(EventKind.UNKNOWN_OUTCOME, unit.name, error=error)
        return wrapped

    def _note_retry(self, unit: PoolUnit, error: BaseException | None, attempt: int) -> None:
        unit.retries += 1
        log.info("%s: retrying (attempt %d) after %s: %s", unit.name, attempt, type(error).__name__, error)
        self.listeners.emit(EventKind.RETRY, unit.name, attempt=attempt, error=error)

    def _attempt(self, unit: PoolUnit, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 deadline: float, is_read: bool) -> Any:
        started, kwargs["timeout"] = self._begin_attempt(unit, deadline, is_read)
        try:
            return getattr(unit.conn, method)(*args, **kwargs)
        except DatabaseError as error:
            self._attempt_failed(unit, error)
            raise
        finally:
            if self.slow_request_threshold is not None:  # off by default: no call on the hot path
                self._note_if_slow(unit, method, started, self.slow_request_threshold)

    # -- one attempt's bookkeeping (shared with the asyncio router, aio/routing.py) --------

    def _begin_attempt(self, unit: PoolUnit, deadline: float, is_read: bool) -> tuple[float, float]:
        """Count the attempt; (its start, its time budget).  A deadline already passed: not sent."""
        started = time.monotonic()
        remaining = deadline - started
        if remaining <= 0:
            error = RequestTimeoutError(0, f"{unit.name}: the request's deadline passed before it was sent")
            error.request_sent = False
            raise error
        if is_read and self.read_attempt_timeout is not None:
            remaining = min(remaining, self.read_attempt_timeout)
        unit.requests += 1
        return started, remaining

    def _attempt_failed(self, unit: PoolUnit, error: DatabaseError) -> None:
        """Count the failure and look again at once where it says the topology may have moved."""
        unit.errors += 1
        if isinstance(error, RequestTimeoutError):
            unit.timeouts += 1
        if isinstance(error, ReadOnlyError):  # the master moved: look at every unit to find where to
            unit.note_read_only()  # the server said so: no retry may come back here meanwhile
            for known in self.pool.values():
                known.request_refresh()
        elif classify(error, True) is Verdict.RETRY:  # died, froze or still loading: look again now
            unit.request_refresh()

    def _note_if_slow(self, unit: PoolUnit, method: str, started: float, threshold: float) -> None:
        elapsed = time.monotonic() - started
        if elapsed >= threshold:
            self.listeners.emit(EventKind.SLOW_REQUEST, unit.name, method=method, seconds=elapsed)

    # -- selection ---------------------------------------------------------------------

    def _select(self, mode: Mode, until: float, max_lag: float | None, avoid: Any) -> PoolUnit:
        try:
            return self._pick(mode, max_lag, avoid)
        except PoolTopologyError:
            if time.monotonic() >= until:
                raise
        with self._topology:  # picking under the lock: a state change cannot slip between pick and wait
            while True:
                if self._closed:
                    raise PoolClosedError("the pool is closed")
                try:
                    return self._pick(mode, max_lag, avoid)
                except PoolTopologyError:
                    remaining = until - time.monotonic()
                    if remaining <= 0:
                        raise
                    self._topology.wait(remaining)

    def _pick(self, mode: Mode, max_lag: float | None, avoid: Any) -> PoolUnit:
        strategy = self.strategy
        first: PoolUnit = strategy.getnext(mode)
        if not avoid and max_lag is None:
            return first
        master_uuid = self._master_uuid() if max_lag is not None else None
        unit = first
        for _ in range(len(self.pool)):
            if unit.name not in avoid and (max_lag is None or unit.lag_behind(master_uuid) <= max_lag):
                return unit
            unit = strategy.getnext(mode)
        if max_lag is None:
            return first  # every candidate failed already: one more try beats giving up early
        if mode is Mode.PREFER_RO:
            return self._pick(Mode.RW, None, avoid)
        lags = ", ".join(f"{u.name} {role_of(u.state)} lag {u.lag_behind(master_uuid):.3g}" for u in self.pool.values())
        raise PoolTopologyError(0, f"no instance fits mode {mode.name} within max_lag {max_lag} s: {lags}")

    def _master_uuid(self) -> str | None:
        for unit in self.pool.values():
            if role_of(unit.state) == "rw":
                return unit.uuid
        return None

    # -- observability -------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """Per instance: role, status, in-flight, requests, errors, retries, timeouts, refresh age, rtt, lag."""
        now = time.monotonic()
        master_uuid = self._master_uuid()
        instances = {}
        for name, unit in self.pool.items():
            lag = unit.lag_behind(master_uuid) if unit.state.read_only is not None else None
            instances[name] = {
                "role": role_of(unit.state),
                "status": unit.state.status.name,
                "in_flight": unit.in_flight,
                "requests": unit.requests,
                "errors": unit.errors,
                "retries": unit.retries,
                "timeouts": unit.timeouts,
                "last_refresh_age": None if unit.last_refresh is None else now - unit.last_refresh,
                "rtt": unit.rtt,
                "lag": lag,
                "last_error": unit.last_error,
            }
        return {"closed": self._closed, "instances": instances}
