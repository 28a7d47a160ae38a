"""aio.Connection: one Tarantool server from asyncio, on the same engine as tarantool_pool.Connection.

Rules:
- It wraps a sync :class:`tarantool_pool.Connection` (``.sync``): its link
  decides whether the server is reachable, and its schema cache and
  reconnect policy are used; requests are built by requests.py and travel on
  each event loop's own socket (engine.py, wire.py), so the methods take the
  same arguments and return the same values as the sync ones, as coroutines.
- The constructor never blocks the loop: it takes the sync constructor's
  arguments, but connects on the first request (or ``await connect()``, or
  ``async with``), in a thread.  ``close()`` joins the link's watcher in a thread.
- Safe to share between event loops in several threads.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable, Sequence

from .. import protocol as p
from .. import requests as rq
from ..connection import Connection as SyncConnection
from ..connection import PushCallback
from ..crud import AsyncCrudMixin
from ..response import Response
from ..streaming import adrive, select_pager
from .engine import perform


class Connection(AsyncCrudMixin):
    """An asyncio connection, API-compatible with ``tarantool_pool.Connection`` (methods are coroutines)."""

    def __init__(self, host: str | None, port: int | str, user: str | None = None, password: str | None = None,
                 socket_timeout: float | None = None, reconnect_max_attempts: int = 10,
                 reconnect_delay: float = 0.1, connect_now: bool = True, encoding: str | None = "utf-8",
                 use_list: bool = True, call_16: bool = False, connection_timeout: float | None = None,
                 transport: str = "", ssl_key_file: str | None = None, ssl_cert_file: str | None = None,
                 ssl_ca_file: str | None = None, ssl_ciphers: str | None = None,
                 ssl_password: str | None = None, ssl_password_file: str | None = None,
                 auth_type: str | None = None, fetch_schema: bool = True, *,
                 max_frame_size: int = p.DEFAULT_MAX_FRAME_SIZE, auto_reconnect: bool = True,
                 on_disconnect: Callable[[BaseException], None] | None = None) -> None:
        # connect_now: the connect happens at the first request instead of blocking the loop here.
        self.sync = SyncConnection(
            host, port, user, password, socket_timeout, reconnect_max_attempts, reconnect_delay, False, encoding,
            use_list, call_16, connection_timeout, transport, ssl_key_file, ssl_cert_file, ssl_ca_file,
            ssl_ciphers, ssl_password, ssl_password_file, auth_type, fetch_schema, max_frame_size=max_frame_size,
            auto_reconnect=auto_reconnect, on_disconnect=on_disconnect)

    @classmethod
    def from_sync(cls, conn: SyncConnection) -> Connection:
        """Await requests on an existing sync Connection (both can be used at once)."""
        self = cls.__new__(cls)
        self.sync = conn
        return self

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self, timeout: float | None = None) -> None:
        """(Re)connect and authenticate now, in a thread; raises NetworkError/AuthenticationError."""
        await asyncio.to_thread(self.sync.connect, timeout)

    async def close(self) -> None:
        """Close; in-flight requests fail at once with ConnectionClosedError."""
        await asyncio.to_thread(self.sync.close)

    def is_closed(self) -> bool:
        return self.sync.is_closed()

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered yet, by any caller of the underlying connection."""
        return self.sync.in_flight

    def flush_schema(self) -> None:
        """Forget the cached schema; the next request by name loads it again."""
        self.sync.flush_schema()

    async def __aenter__(self) -> Connection:
        link = self.sync._link
        if link is None or not link.alive:
            await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<tarantool_pool.aio.Connection {self.name} {'closed' if self.is_closed() else 'open'}>"

    # -- the compatible API, as coroutines --------------------------------------------------

    async def ping(self, notime: bool = False, *, timeout: float | None = None) -> float | str:
        """Round trip in seconds, or ``"Success"`` when ``notime`` is true."""
        started = time.monotonic()
        await perform(self.sync, rq.ping(), timeout)
        return "Success" if notime else time.monotonic() - started

    async def select(self, space_name: str | int, key: Any = None, *, offset: int = 0,
                     limit: int = p.SELECT_NO_LIMIT, index: str | int = 0, iterator: Any = None,
                     on_push: PushCallback | None = None, on_push_ctx: Any = None,
                     timeout: float | None = None) -> Response:
        return await perform(self.sync, rq.select(space_name, key, offset, limit, index, iterator), timeout,
                             on_push, on_push_ctx)

    def iterate(self, space_name: str | int, key: Any = None, *, index: str | int = 0, iterator: str = "GE",
                batch_size: int = 1000, timeout: float | None = None) -> AsyncIterator[Any]:
        """``async for row in conn.iterate(...)``: the tuples page by page (see streaming.py)."""
        pager = select_pager(space_name, key, index=index, iterator=iterator, batch_size=batch_size)
        return adrive(pager, lambda *args, **kwargs: self.select(*args, timeout=timeout, **kwargs))

    async def insert(self, space_name: str | int, values: Sequence[Any], *, on_push: PushCallback | None = None,
                     on_push_ctx: Any = None, timeout: float | None = None) -> Response:
        return await perform(self.sync, rq.insert(space_name, values), timeout, on_push, on_push_ctx)

    async def replace(self, space_name: str | int, values: Sequence[Any], *, on_push: PushCallback | None = None,
                      on_push_ctx: Any = None, timeout: float | None = None) -> Response:
        return await perform(self.sync, rq.replace(space_name, values), timeout, on_push, on_push_ctx)

    async def update(self, space_name: str | int, key: Any, op_list: Sequence[Any], *, index: str | int = 0,
                     on_push: PushCallback | None = None, on_push_ctx: Any = None,
                     timeout: float | None = None) -> Response:
        return await perform(self.sync, rq.update(space_name, key, op_list, index), timeout, on_push, on_push_ctx)

    async def upsert(self, space_name: str | int, tuple_value: Sequence[Any], op_list: Sequence[Any], *,
                     index: str | int = 0, on_push: PushCallback | None = None, on_push_ctx: Any = None,
                     timeout: float | None = None) -> Response:
        return await perform(self.sync, rq.upsert(space_name, tuple_value, op_list), timeout, on_push, on_push_ctx)

    async def delete(self, space_name: str | int, key: Any, *, index: str | int = 0,
                     on_push: PushCallback | None = None, on_push_ctx: Any = None,
                     timeout: float | None = None) -> Response:
        return await perform(self.sync, rq.delete(space_name, key, index), timeout, on_push, on_push_ctx)

    async def call(self, func_name: str, *args: Any, on_push: PushCallback | None = None, on_push_ctx: Any = None,
                   timeout: float | None = None) -> Response:
        """CALL a Lua function; like tarantool-python, one list/tuple argument is the argument list."""
        return await perform(self.sync, rq.call(func_name, args, self.sync.call_16), timeout, on_push, on_push_ctx)

    async def eval(self, expr: str, *args: Any, on_push: PushCallback | None = None, on_push_ctx: Any = None,
                   timeout: float | None = None) -> Response:
        return await perform(self.sync, rq.eval(expr, args), timeout, on_push, on_push_ctx)

    async def execute(self, query: str | int, params: Any = None, *, timeout: float | None = None) -> Response:
        """Run SQL: ``params`` is a list (``?`` placeholders) or a dict (``:name`` placeholders)."""
        return await perform(self.sync, rq.execute(query, params), timeout)

    async def prepare(self, query: str, *, timeout: float | None = None) -> Response:
        """PREPARE an SQL statement; ``.stmt_id`` of the result executes it."""
        return await perform(self.sync, rq.prepare(query), timeout)

    async def unprepare(self, stmt_id: int, *, timeout: float | None = None) -> Response:
        return await perform(self.sync, rq.unprepare(stmt_id), timeout)

    async def authenticate(self, user: str, password: str, *, timeout: float | None = None) -> None:
        """Authenticate the live connection as another user (in a thread: it also reloads the schema lazily)."""
        await asyncio.to_thread(self.sync.authenticate, user, password, timeout=timeout)

    async def _acrud_call(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        return (await self.call(function, args, **kwargs)).data or []
