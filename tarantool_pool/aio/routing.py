"""Routing one awaited request: the sync pool's rules (pool/routing.py), without blocking the loop.

Rules:
- The pure pieces are the sync pool's own: the strategy's pick (with
  ``max_lag`` and the instances already tried), failover.classify,
  unknown_outcome, the retry policy (failover.retrying, run by
  ``tenacity.AsyncRetrying``: backoff sleeps are ``asyncio.sleep``), the
  per-unit counters, refresh requests and listener events.  Same deadlines,
  same errors, same counters as a sync request.
- When no instance fits the mode, the caller awaits a topology change (the
  pool's listener events, delivered to each waiting loop) or a short poll,
  up to the selection deadline, never past the request's own.  Nothing here
  takes a lock that a refresh holds for long.
- A request is sent by engine.perform on the chosen unit's Connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import tenacity

from ..connection import Connection
from ..errors import DatabaseError, PoolClosedError, PoolTopologyError
from ..pool.failover import EventKind, PoolEvent, retrying
from ..pool.strategy import Mode
from ..pool.unit import PoolUnit
from ..requests import Request
from ..response import Response
from .engine import perform

if TYPE_CHECKING:
    from ..connection import PushCallback
    from ..pool.pool import ConnectionPool as SyncPool

# A waiting caller re-checks at least this often: add()/remove() and a close() of the
# sync pool itself change what fits without an event.
POLL_SECONDS = 0.1
_TOPOLOGY_EVENTS = frozenset({EventKind.ROLE_CHANGED, EventKind.INSTANCE_UP, EventKind.INSTANCE_DOWN})

MakeRequest = Callable[[Connection], Request]


class TopologyWatch:
    """Wakes the callers waiting for the topology to change, on every loop they wait on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}

    def next_change(self) -> asyncio.Future[None]:
        """A future of the running loop, done at the next change (shared by the loop's waiters)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            future = self._waiting.get(loop)
            if future is None:
                future = self._waiting[loop] = loop.create_future()
        return future

    def wake(self) -> None:
        """From any thread: complete every loop's future."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for loop, future in waiting.items():
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed
                pass

    def on_event(self, event: PoolEvent) -> None:
        """A pool listener: role changes and instances going up or down wake the waiters."""
        if event.kind in _TOPOLOGY_EVENTS:
            self.wake()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def until_change(change: asyncio.Future[None], timeout: float) -> None:
    """Wait for ``change`` (never cancelling it: other callers share it) or ``timeout``."""
    await asyncio.wait((change,), timeout=min(timeout, POLL_SECONDS))


class Router:
    """Selection with a deadline, failover and counters for an aio.ConnectionPool."""

    def __init__(self, pool: SyncPool) -> None:
        self.pool = pool
        self.watch = TopologyWatch()
        self.closing = False  # set by the aio pool's close(), before the sync pool's close runs

    @property
    def closed(self) -> bool:
        return self.closing or self.pool._closed

    async def route(self, mode: Mode, method: str, make: MakeRequest, is_read: bool, timeout: float | None = None,
                    selection_timeout: float | None = None, max_lag: float | None = None,
                    on_push: PushCallback | None = None, on_push_ctx: Any = None) -> Response:
        pool = self.pool
        if self.closed:
            raise PoolClosedError("the pool is closed")
        deadline, until, wait, lag = pool._budget(mode, timeout, selection_timeout, max_lag)
        try:
            unit = pool._pick(mode, lag, ())  # the usual case, without a coroutine of its own
        except PoolTopologyError:
            unit = await self.select(mode, until, lag, ())
        # The first attempt inline (what _attempt does): most requests need no more.
        started, remaining = pool._begin_attempt(unit, deadline, is_read)
        try:
            try:
                return await perform(unit.conn, make(unit.conn), remaining, on_push, on_push_ctx)
            finally:
                if pool.slow_request_threshold is not None:
                    pool._note_if_slow(unit, method, started, pool.slow_request_threshold)
        except DatabaseError as error:
            pool._attempt_failed(unit, error)
            if self.closing:  # the aio close() began before the sync pool's flag is set
                raise PoolClosedError("the pool is closed") from error
            pool._judge_first_failure(error, unit, is_read, deadline)
        send = _Send(method, make, is_read, deadline, on_push, on_push_ctx)
        return await self._retry(mode, send, wait, lag, unit)

    async def _retry(self, mode: Mode, send: _Send, wait: float, lag: float | None, failed: PoolUnit) -> Response:
        pool = self.pool
        tried = {failed.name}
        current = [failed]

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            pool._note_retry(current[0], error, state.attempt_number + 1)

        policy = retrying(send.deadline, pool.max_retries, send.is_read, before_sleep)  # the sync pool's policy
        async for attempt in tenacity.AsyncRetrying(stop=policy.stop, wait=policy.wait, retry=policy.retry,
                                                    before_sleep=policy.before_sleep, reraise=True):
            with attempt:
                if self.closed:
                    raise PoolClosedError("the pool is closed")
                unit = await self.select(mode, min(send.deadline, time.monotonic() + wait), lag, tried)
                current[0] = unit
                tried.add(unit.name)
                try:
                    return await self._attempt(unit, send)
                except DatabaseError as error:
                    if self.closing:
                        raise PoolClosedError("the pool is closed") from error
                    pool._judge_retry_failure(error, unit, send.is_read)
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _attempt(self, unit: PoolUnit, send: _Send) -> Response:
        """RoutingMixin._attempt, awaited: the same bookkeeping (the sync pool's own methods)."""
        pool = self.pool
        started, remaining = pool._begin_attempt(unit, send.deadline, send.is_read)
        try:
            return await perform(unit.conn, send.make(unit.conn), remaining, send.on_push, send.on_push_ctx)
        except DatabaseError as error:
            pool._attempt_failed(unit, error)
            raise
        finally:
            if pool.slow_request_threshold is not None:
                pool._note_if_slow(unit, send.method, started, pool.slow_request_threshold)

    async def select(self, mode: Mode, until: float, max_lag: float | None, avoid: Any) -> PoolUnit:
        """A unit that fits ``mode``, awaiting one until ``until``; PoolTopologyError after that."""
        try:
            return self.pool._pick(mode, max_lag, avoid)
        except PoolTopologyError:
            if time.monotonic() >= until:
                raise
        while True:
            change = self.watch.next_change()  # taken before the pick: a change in between is not missed
            if self.closed:
                raise PoolClosedError("the pool is closed")
            try:
                return self.pool._pick(mode, max_lag, avoid)
            except PoolTopologyError:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    raise
            await until_change(change, remaining)

    async def wait(self, mode: Mode, timeout: float) -> None:
        """Until an instance fits ``mode``; PoolTopologyError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            change = self.watch.next_change()
            if self.closed:
                raise PoolClosedError("the pool is closed")
            if self.pool._fits(mode):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolTopologyError(0, f"no instance fits mode {mode.name} after {timeout} s: "
                                           f"{self.pool.describe()}")
            await until_change(change, remaining)


class _Send:
    """What every attempt of one routed request needs."""

    __slots__ = ("method", "make", "is_read", "deadline", "on_push", "on_push_ctx")

    def __init__(self, method: str, make: MakeRequest, is_read: bool, deadline: float,
                 on_push: PushCallback | None, on_push_ctx: Any) -> None:
        self.method = method
        self.make = make
        self.is_read = is_read
        self.deadline = deadline
        self.on_push = on_push
        self.on_push_ctx = on_push_ctx
