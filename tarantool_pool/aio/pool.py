"""aio.ConnectionPool: the replica set from asyncio, on the same engine as the sync pool.

Rules:
- It wraps a sync :class:`tarantool_pool.ConnectionPool` (``.sync``): the
  same units, worker threads, health refresh, strategy, counters, listeners
  and ``get_stats()``.  Nothing about the protocol, the health of an
  instance or the failover policy is implemented twice: requests are built
  by requests.py, sent by aio/engine.py, routed by aio/routing.py with the
  sync pool's pure pieces.
- Every method of the sync pool's request API is here as a coroutine with
  the same signature, default mode and result; ``iterate`` and
  ``crud_iterate`` return async iterators over the same pagers as the sync
  ones (streaming.py); ``session`` returns an ``async with`` session
  (aio/session.py).
- No method blocks the loop for more than a request's encoding and send:
  what waits (the first refreshes in ``connect()``, the joins in
  ``close()``, a drain in ``remove()``) runs in a thread.  The constructor
  starts the units' threads when ``connect_now`` (default) without waiting
  for them: a request awaits its instance within ``selection_timeout``.
- Safe to share between event loops in several threads.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence

from .. import requests as rq
from ..connection import PushCallback
from ..crud import AsyncCrudMixin
from ..errors import PoolClosedError
from ..pool.config import check_mode, check_seconds
from ..pool.failover import Listener
from ..pool.pool import (
    CRUD_READS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_SELECTION_TIMEOUT,
    MODE_REQUIRED,
)
from ..pool.pool import ConnectionPool as SyncPool
from ..pool.strategy import Mode, RoundRobinStrategy, StrategyInterface
from ..pool.unit import PoolUnit
from ..response import Response
from ..streaming import adrive, select_pager
from .routing import Router

if TYPE_CHECKING:
    from .session import AsyncPoolSession


class ConnectionPool(AsyncCrudMixin):
    """An asyncio pool over a replica set: the sync ConnectionPool's API, as coroutines.

    Takes the sync constructor's arguments; ``async with`` connects and closes.
    """

    def __init__(self, addrs: Sequence[dict[str, Any] | str], user: str | None = None, password: str | None = None,
                 socket_timeout: float | None = None, reconnect_max_attempts: int = 0, reconnect_delay: float = 0,
                 connect_now: bool = True, encoding: str | None = "utf-8", call_16: bool = False,
                 connection_timeout: float | None = None, strategy_class: type[StrategyInterface] = RoundRobinStrategy,
                 refresh_delay: float = 1, fetch_schema: bool = True, *,
                 refresh_timeout: float | None = None, selection_timeout: float = DEFAULT_SELECTION_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, read_attempt_timeout: float | None = None,
                 max_lag: float | None = None, slow_request_threshold: float | None = None) -> None:
        sync = SyncPool(addrs, user, password, socket_timeout, reconnect_max_attempts, reconnect_delay, False,
                        encoding, call_16, connection_timeout, strategy_class, refresh_delay, fetch_schema,
                        refresh_timeout=refresh_timeout, selection_timeout=selection_timeout,
                        max_retries=max_retries, read_attempt_timeout=read_attempt_timeout, max_lag=max_lag,
                        slow_request_threshold=slow_request_threshold)
        self._attach(sync)
        if connect_now:
            self._start_units()

    @classmethod
    def from_sync(cls, pool: SyncPool) -> ConnectionPool:
        """Await requests on an existing sync pool (both can be used at once; closing either closes it)."""
        self = cls.__new__(cls)
        self._attach(pool)
        return self

    def _attach(self, pool: SyncPool) -> None:
        self.sync = pool
        self._router = Router(pool)
        pool.add_listener(self._router.watch.on_event)

    def _start_units(self) -> None:
        """The sync connect() without its wait: start every unit's worker thread."""
        pool = self.sync
        if pool._closed:
            raise PoolClosedError("the pool is closed")
        pool._started = True  # units added later start at once, as after connect()
        for unit in list(pool.pool.values()):
            unit.start()

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Start every unit and wait (bounded, in a thread) for each one's first connect and refresh.

        Instances that are down do not make this fail: they join when they come up.
        """
        if self._router.closed:
            raise PoolClosedError("the pool is closed")
        await asyncio.to_thread(self.sync.connect)

    async def close(self, drain_timeout: float | None = None) -> None:
        """Refuse new requests, let in-flight ones finish for up to ``drain_timeout`` seconds, then
        stop every worker and close every connection (requests still in flight fail with PoolClosedError).
        The joins run in a thread."""
        check_seconds("drain_timeout", drain_timeout, allow_zero=True)
        self._router.closing = True
        self._router.watch.wake()  # callers waiting for an instance fail now
        try:
            await asyncio.to_thread(self.sync.close, drain_timeout)
        finally:
            self.sync.remove_listener(self._router.watch.on_event)

    def is_closed(self) -> bool:
        """True when no unit is connected and ready (compatible semantics), or after close()."""
        return self._router.closed or self.sync.is_closed()

    async def __aenter__(self) -> ConnectionPool:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<tarantool_pool.aio.ConnectionPool {'closed' if self._router.closed else self.sync.describe()}>"

    def describe(self) -> str:
        """One line: each instance with its role (rw / ro / down)."""
        return self.sync.describe()

    async def wait(self, mode: Mode = Mode.RW, timeout: float = 10.0) -> None:
        """Until an instance fits ``mode`` (without blocking the loop); PoolTopologyError after ``timeout``."""
        await self._router.wait(check_mode(mode), timeout)

    def get_stats(self) -> dict[str, Any]:
        """The sync pool's statistics (its requests and these are counted together)."""
        return self.sync.get_stats()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(PoolEvent)`` on role changes, instance up/down, retries, slow requests.

        Listeners run in the thread that saw the event (a worker, a caller that found a link dead, or an event loop):
        keep them quick and non-blocking.
        """
        self.sync.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.sync.remove_listener(listener)

    def add(self, addr: dict[str, Any]) -> PoolUnit:
        """Add an instance without a restart; it serves once its first refresh succeeds."""
        return self.sync.add(addr)

    async def remove(self, name: str, drain_timeout: float = 2.0) -> None:
        """Stop routing to ``name`` ("host:port"), let its in-flight requests finish, then close it."""
        await asyncio.to_thread(self.sync.remove, name, drain_timeout)

    def discover(self) -> list[str]:
        """Add the replica set members that healthy instances replicate from; returns the names added."""
        return self.sync.discover()

    # -- the compatible API, as coroutines ---------------------------------------------------

    async def ping(self, notime: bool = False, *, mode: Mode | None = None, timeout: float | None = None,
                   selection_timeout: float | None = None) -> float | str:
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        started = time.monotonic()
        await self._router.route(check_mode(mode), "ping", _ping, True, timeout, selection_timeout)
        return "Success" if notime else time.monotonic() - started

    async def call(self, func_name: str, *args: Any, mode: Mode | None = None, on_push: PushCallback | None = None,
                   on_push_ctx: Any = None, timeout: float | None = None, idempotent: bool = False,
                   selection_timeout: float | None = None, max_lag: float | None = None) -> Response:
        """CALL a Lua function; ``idempotent=True`` lets a failed call be retried like a read."""
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return await self._router.route(check_mode(mode), "call", lambda conn: rq.call(func_name, args, conn.call_16),
                                        idempotent, timeout, selection_timeout, max_lag, on_push, on_push_ctx)

    async def eval(self, expr: str, *args: Any, mode: Mode | None = None, on_push: PushCallback | None = None,
                   on_push_ctx: Any = None, timeout: float | None = None, idempotent: bool = False,
                   selection_timeout: float | None = None, max_lag: float | None = None) -> Response:
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return await self._router.route(check_mode(mode), "eval", lambda conn: rq.eval(expr, args), idempotent,
                                        timeout, selection_timeout, max_lag, on_push, on_push_ctx)

    async def execute(self, query: str | int, params: Any = None, *, mode: Mode | None = None,
                      timeout: float | None = None, idempotent: bool = False, selection_timeout: float | None = None,
                      max_lag: float | None = None) -> Response:
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return await self._router.route(check_mode(mode), "execute", lambda conn: rq.execute(query, params),
                                        idempotent, timeout, selection_timeout, max_lag)

    async def select(self, space_name: str | int, key: Any = None, *, offset: int = 0, limit: int = 0xFFFFFFFF,
                     index: str | int = 0, iterator: Any = None, mode: Mode = Mode.ANY,
                     on_push: PushCallback | None = None, on_push_ctx: Any = None, timeout: float | None = None,
                     selection_timeout: float | None = None, max_lag: float | None = None) -> Response:
        return await self._router.route(
            check_mode(mode), "select", lambda conn: rq.select(space_name, key, offset, limit, index, iterator),
            True, timeout, selection_timeout, max_lag, on_push, on_push_ctx)

    def session(self, mode: Mode = Mode.RW, selection_timeout: float | None = None) -> AsyncPoolSession:
        """``async with pool.session(mode=Mode.RW) as s:``: several awaited calls pinned to one instance
        that fits ``mode``, chosen on entry (aio/session.py; the sync ``session()``'s rules)."""
        from .session import AsyncPoolSession

        return AsyncPoolSession(self, check_mode(mode), selection_timeout)

    def iterate(self, space_name: str | int, key: Any = None, *, index: str | int = 0, iterator: str = "GE",
                batch_size: int = 1000, mode: Mode = Mode.ANY, timeout: float | None = None,
                selection_timeout: float | None = None, max_lag: float | None = None) -> AsyncIterator[Any]:
        """``async for row in pool.iterate(...)``: the tuples page by page, each page routed by ``mode``."""
        check_mode(mode)
        pager = select_pager(space_name, key, index=index, iterator=iterator, batch_size=batch_size)
        return adrive(pager, lambda *args, **kwargs: self.select(
            *args, mode=mode, timeout=timeout, selection_timeout=selection_timeout, max_lag=max_lag, **kwargs))

    async def insert(self, space_name: str | int, values: Sequence[Any], *, mode: Mode = Mode.RW,
                     on_push: PushCallback | None = None, on_push_ctx: Any = None, timeout: float | None = None,
                     selection_timeout: float | None = None) -> Response:
        return await self._router.route(check_mode(mode), "insert", lambda conn: rq.insert(space_name, values),
                                        False, timeout, selection_timeout, None, on_push, on_push_ctx)

    async def replace(self, space_name: str | int, values: Sequence[Any], *, mode: Mode = Mode.RW,
                      on_push: PushCallback | None = None, on_push_ctx: Any = None, timeout: float | None = None,
                      selection_timeout: float | None = None) -> Response:
        return await self._router.route(check_mode(mode), "replace", lambda conn: rq.replace(space_name, values),
                                        False, timeout, selection_timeout, None, on_push, on_push_ctx)

    async def update(self, space_name: str | int, key: Any, op_list: Sequence[Any], *, index: str | int = 0,
                     mode: Mode = Mode.RW, on_push: PushCallback | None = None, on_push_ctx: Any = None,
                     timeout: float | None = None, selection_timeout: float | None = None) -> Response:
        return await self._router.route(
            check_mode(mode), "update", lambda conn: rq.update(space_name, key, op_list, index), False, timeout,
            selection_timeout, None, on_push, on_push_ctx)

    async def upsert(self, space_name: str | int, tuple_value: Sequence[Any], op_list: Sequence[Any], *,
                     index: str | int = 0, mode: Mode = Mode.RW, on_push: PushCallback | None = None,
                     on_push_ctx: Any = None, timeout: float | None = None,
                     selection_timeout: float | None = None) -> Response:
        return await self._router.route(
            check_mode(mode), "upsert", lambda conn: rq.upsert(space_name, tuple_value, op_list), False, timeout,
            selection_timeout, None, on_push, on_push_ctx)

    async def delete(self, space_name: str | int, key: Any, *, index: str | int = 0, mode: Mode = Mode.RW,
                     on_push: PushCallback | None = None, on_push_ctx: Any = None, timeout: float | None = None,
                     selection_timeout: float | None = None) -> Response:
        return await self._router.route(check_mode(mode), "delete", lambda conn: rq.delete(space_name, key, index),
                                        False, timeout, selection_timeout, None, on_push, on_push_ctx)

    async def _acrud_call(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        mode = kwargs.pop("mode", Mode.ANY)
        kwargs.setdefault("idempotent", function in CRUD_READS)
        return (await self.call(function, args, mode=mode, **kwargs)).data or []


def _ping(_conn: Any) -> rq.Request:
    return rq.ping()
