"""AsyncPoolSession: ``async with pool.session(mode) as s:`` pins one instance for several awaited calls.

Rules:
- The sync session's rules (helpers.PinnedSession): the instance is picked on
  entry, waiting (without blocking the loop) up to the selection timeout for
  one that fits ``mode``; every call goes there and is never retried
  elsewhere; a call after the instance stopped fitting ``mode``, left the
  pool, or after the block raises at once.
- A call is one attempt through the aio router's bookkeeping (counters,
  refresh requests, events), the same as a routed request's attempt.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

from .. import requests as rq
from ..errors import DatabaseError
from ..helpers import PinnedSession
from ..pool.strategy import Mode
from ..protocol import SELECT_NO_LIMIT
from ..response import Response
from .routing import MakeRequest, _Send

if TYPE_CHECKING:
    import tarantool_pool.aio  # spelled out: the sync ConnectionPool has the same name


class AsyncPoolSession(PinnedSession):
    """Made by ``aio.ConnectionPool.session(mode)``; used with ``async with``.  Calls take the
    pool's arguments without ``mode`` (a ``mode=`` keyword is accepted and ignored)."""

    def __init__(self, pool: tarantool_pool.aio.ConnectionPool, mode: Mode,
                 selection_timeout: float | None = None) -> None:
        super().__init__(pool.sync, mode, selection_timeout)
        self._router = pool._router

    async def __aenter__(self) -> AsyncPoolSession:
        until = self._entering()
        self.unit = await self._router.select(self.mode, until, None, ())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._done = True

    async def _run(self, method: str, make: MakeRequest, is_read: bool, kwargs: dict[str, Any]) -> Response:
        unit = self._pinned()
        deadline = self._deadline(kwargs)
        on_push, on_push_ctx = kwargs.pop("on_push", None), kwargs.pop("on_push_ctx", None)
        if kwargs:
            raise TypeError(f"{method}() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        try:
            return await self._router._attempt(unit, _Send(method, make, is_read, deadline, on_push, on_push_ctx))
        except DatabaseError as error:
            self.pool._judge_retry_failure(error, unit, is_read)  # the pool's rules; a session never retries
            raise

    async def ping(self, notime: bool = False, **kwargs: Any) -> float | str:
        started = time.monotonic()
        await self._run("ping", lambda conn: rq.ping(), True, kwargs)
        return "Success" if notime else time.monotonic() - started

    async def call(self, func_name: str, *args: Any, **kwargs: Any) -> Response:
        return await self._run("call", lambda conn: rq.call(func_name, args, conn.call_16), False, kwargs)

    async def eval(self, expr: str, *args: Any, **kwargs: Any) -> Response:
        return await self._run("eval", lambda conn: rq.eval(expr, args), False, kwargs)

    async def execute(self, query: str | int, params: Any = None, **kwargs: Any) -> Response:
        return await self._run("execute", lambda conn: rq.execute(query, params), False, kwargs)

    async def select(self, space_name: str | int, key: Any = None, *, offset: int = 0, limit: int = SELECT_NO_LIMIT,
                     index: str | int = 0, iterator: Any = None, **kwargs: Any) -> Response:
        return await self._run(
            "select", lambda conn: rq.select(space_name, key, offset, limit, index, iterator), True, kwargs)

    async def insert(self, space_name: str | int, values: Sequence[Any], **kwargs: Any) -> Response:
        return await self._run("insert", lambda conn: rq.insert(space_name, values), False, kwargs)

    async def replace(self, space_name: str | int, values: Sequence[Any], **kwargs: Any) -> Response:
        return await self._run("replace", lambda conn: rq.replace(space_name, values), False, kwargs)

    async def update(self, space_name: str | int, key: Any, op_list: Sequence[Any], *, index: str | int = 0,
                     **kwargs: Any) -> Response:
        return await self._run("update", lambda conn: rq.update(space_name, key, op_list, index), False, kwargs)

    async def upsert(self, space_name: str | int, tuple_value: Sequence[Any], op_list: Sequence[Any],
                     **kwargs: Any) -> Response:
        kwargs.pop("index", None)  # IPROTO upsert has no index; the sync API accepts and ignores it too
        return await self._run("upsert", lambda conn: rq.upsert(space_name, tuple_value, op_list), False, kwargs)

    async def delete(self, space_name: str | int, key: Any, *, index: str | int = 0, **kwargs: Any) -> Response:
        return await self._run("delete", lambda conn: rq.delete(space_name, key, index), False, kwargs)
