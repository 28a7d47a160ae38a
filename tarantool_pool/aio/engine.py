"""The asyncio request path: requests awaited on the loop's own sockets, no thread in between.

Rules:
- A request is built by requests.py and encoded by its Connection, on the
  event loop's thread, and goes out on the loop's own LoopLink to that
  server (wire.py): a companion of the Connection's live sync link, opened
  on first use per (loop, link) and dropped with it.  The sync link keeps
  the connection's state: whether the server is reachable (a dead sync link
  means no request is sent), reconnects, schema loads.
- A lone request (nothing else in flight on its link) is written at once;
  otherwise its bytes go to a per-loop outbox flushed once per loop
  iteration (``loop.call_soon``), one write per link, so a ``gather`` of N
  requests leaves in one or two sends.  Replies are read and settled on the
  loop.
- Deadlines: when a request's deadline passes before its reply, the loop
  forgets its sync (whoever pops the sync settles the future) and raises
  RequestTimeoutError; a late reply finds nothing and is dropped.  Deadlines
  are grouped in ticks of DEADLINE_TICK seconds, one loop timer per tick (a
  timer per request costs a quarter of a request's CPU), so a timeout is
  raised up to one tick late, never early.  A cancelled caller forgets its
  sync the same way.  Link loss fails the future with the error the sync
  path raises.
- What may block runs in ``asyncio.to_thread`` and is rare: connecting a
  standalone connection's sync link, and loading the schema (once per
  connection and after DDL).  The schema load goes through the sync path's
  lock, so concurrent loaders of any loop or thread share one load.
- Push callbacks (``on_push``) run on the caller's loop, before the reply
  completes the request; an exception in one is logged.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import math
import threading
import time
import weakref
from typing import Any, AsyncGenerator, Tuple

from .. import protocol as p
from ..connection import Connection, PushCallback, _not_sent
from ..errors import (
    ConnectionClosedError,
    Error,
    NetworkError,
    RequestTimeoutError,
    SchemaError,
    WrongSchemaVersionError,
)
from ..protocol import Frame
from ..requests import Request
from ..response import Response
from ..transport import Link
from .wire import LoopLink

log = logging.getLogger("tarantool_pool")

DEADLINE_TICK = 0.005  # seconds; the deadlines of one tick share one loop timer

Expiry = Tuple[Connection, LoopLink, int, int]  # what a timeout needs: connection, link, request type, sync


class LoopState:
    """One event loop's links (a LoopLink per sync link), outbox (bytes to send) and
    deadlines (futures to time out, by tick)."""

    __slots__ = ("loop", "links", "_outbox", "_ticks", "_shutdown_hook", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.links: dict[Link, LoopLink] = {}
        self._outbox: dict[LoopLink, list[bytes]] = {}
        self._ticks: dict[int, dict[asyncio.Future[Frame], Expiry]] = {}
        # A loop says nothing when it closes, but asyncio.run() (and Runner) close every open async
        # generator first, with the loop still running (loop.shutdown_asyncgens): this one, started
        # here on the loop's thread, closes the links then, properly.  Loops closed otherwise are
        # found later (loop_state(), Connection._attach_companion, a dying sync link): abandon().
        self._shutdown_hook = _until_loop_shutdown(self)
        try:
            self._shutdown_hook.asend(None).send(None)  # runs to its yield: the loop now tracks it
        except StopIteration:
            pass

    def close_links(self) -> None:
        """The loop is shutting down: lose every link (their sockets close on the loop)."""
        for link in list(self.links.values()):
            link.lose(ConnectionClosedError(0, f"{link.name}: its event loop is shutting down"))

    def abandon(self) -> None:
        """The loop is closed: shut its links' sockets down (wire.LoopLink.abandon)."""
        for link in list(self.links.values()):
            link.abandon()
        self.links.clear()

    def forget_link(self, link: LoopLink) -> None:
        """``link`` takes no new requests (it died or retired)."""
        if self.links.get(link.link) is link:
            del self.links[link.link]

    def send_soon(self, link: LoopLink, data: bytes) -> None:
        """Send ``data`` on ``link`` now if it is the link's only request in flight, else queue it:
        everything queued in this loop iteration leaves in one send."""
        outbox = self._outbox
        chunks = outbox.get(link)
        if chunks is not None:
            chunks.append(data)
            return
        if len(link.pending) == 1:  # a lone request (nothing else in flight to batch with): send it now
            link.send(data)
            return
        if not outbox:
            self.loop.call_soon(self._flush)
        outbox[link] = [data]

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for link, chunks in outbox.items():
            link.send(chunks[0] if len(chunks) == 1 else b"".join(chunks))  # a dead link failed its requests

    def expire_at(self, deadline: float, future: asyncio.Future[Frame],
                  expiry: Expiry) -> dict[asyncio.Future[Frame], Expiry]:
        """Time ``future`` out at ``deadline`` (up to one tick later) unless the caller removes it
        from the returned dict first."""
        tick = math.ceil(deadline / DEADLINE_TICK)
        due = self._ticks.get(tick)
        if due is None:
            due = self._ticks[tick] = {}
            self.loop.call_later(tick * DEADLINE_TICK - time.monotonic(), self._expire_tick, tick)
        due[future] = expiry
        return due

    def _expire_tick(self, tick: int) -> None:
        for future, (conn, link, code, sync) in self._ticks.pop(tick, {}).items():
            if not future.done() and link.forget(sync):  # False: the reply is already on its way
                future.set_exception(conn._timed_out(code, sync))


async def _until_loop_shutdown(state: LoopState) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        state.close_links()


_local = threading.local()


def loop_state() -> LoopState:
    """The running loop's state (one per loop; a thread runs one loop at a time, usually the same one)."""
    loop = asyncio.get_running_loop()
    state: LoopState | None = getattr(_local, "state", None)
    if state is not None and state.loop is loop:
        return state
    states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopState] | None = getattr(_local, "states", None)
    if states is None:
        states = _local.states = weakref.WeakKeyDictionary()
    for old in [old for old in states.values() if old.loop.is_closed()]:  # this thread's ended loops
        del states[old.loop]
        old.abandon()
    state = states.get(loop)
    if state is None:
        state = states[loop] = LoopState(loop)
    _local.state = state
    return state


def _push(on_push: PushCallback, on_push_ctx: Any, frame: Frame) -> None:
    try:
        on_push(frame.body.get(p.KEY_DATA), on_push_ctx)
    except Exception:
        log.exception("on_push callback %r failed", on_push)


async def roundtrip(conn: Connection, link: LoopLink, code: int, body: dict[int, Any] | None, deadline: float,
                    schema_version: int = 0, on_push: PushCallback | None = None, on_push_ctx: Any = None) -> Frame:
    """Send one request on ``link`` and await its reply until ``deadline`` (time.monotonic())."""
    state = link.state
    sync = link.next_sync()
    data = conn._encoder.frame(code, sync, body, schema_version)  # encode errors: nothing sent
    if not link.alive:  # died since it was picked: this request never left
        raise _not_sent(link.lost_error())
    future: asyncio.Future[Frame] = state.loop.create_future()
    link.pending[sync] = future
    if on_push is not None:
        link.pushes[sync] = functools.partial(_push, on_push, on_push_ctx)
    state.send_soon(link, data)
    due = state.expire_at(deadline, future, (conn, link, code, sync))
    try:
        frame = await future
    except asyncio.CancelledError:
        link.forget(sync)  # a reply that comes now is dropped; the link serves on
        raise
    finally:
        due.pop(future, None)
    return conn._checked(frame)


async def live_link(conn: Connection, deadline: float) -> Link:
    """The connection's live sync link; a (re)connect, which blocks, runs in a thread."""
    link = conn._link
    if link is not None and link.alive:
        return link
    if conn._closed or not conn._auto_reconnect:
        return conn._live_link(deadline)  # raises at once (closed, or a pool's unit reconnects it)
    return await asyncio.to_thread(conn._live_link, deadline)


async def loop_link(conn: Connection, link: Link, deadline: float) -> LoopLink:
    """This loop's companion of the live sync ``link``, opened on first use (within ``deadline``)."""
    state = loop_state()
    while True:
        companion = state.links.get(link)
        if companion is None:
            companion = state.links[link] = LoopLink(conn, link, state)
            companion.open()
        elif companion.ready.done():  # opened (a link that failed to open, died or retired is not in links)
            return companion
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                await asyncio.shield(companion.ready)
        except TimeoutError:
            raise _not_sent(RequestTimeoutError(
                0, f"{conn.name}: the connection was not ready within the deadline")) from None
        except Error as exc:
            if companion.retired and link.alive:
                continue  # the connection re-authenticated while this one opened: open one as the new user
            fresh = copy.copy(exc)  # one per caller: every waiter got the same object from ``ready``
            raise (_not_sent(fresh) if isinstance(fresh, NetworkError) else fresh) from exc
        if companion.alive and not companion.retired:
            return companion
        # Lost or retired between opening and this caller's turn: the next turn takes another.


def ready_links(conn: Connection) -> tuple[Link, LoopLink] | None:
    """The live sync link and this loop's open companion of it, when both are there (the usual case)."""
    link = conn._link
    if link is None or not link.alive:
        return None
    wire = loop_state().links.get(link)
    if wire is None or not wire.ready.done():
        return None
    return link, wire


async def open_links(conn: Connection, deadline: float) -> tuple[Link, LoopLink]:
    """The live sync link (reconnected if need be) and this loop's companion of it (opened if need be)."""
    link = await live_link(conn, deadline)
    return link, await loop_link(conn, link, deadline)


async def perform(conn: Connection, request: Request, timeout: float | None, on_push: PushCallback | None = None,
                  on_push_ctx: Any = None) -> Response:
    """Connection._perform, awaited: the schema is loaded first when the request uses names,
    and the request is re-sent once when the server says the schema changed (ER 109)."""
    deadline = conn._deadline(timeout)
    links = ready_links(conn) or await open_links(conn, deadline)
    if not request.uses_names:
        return Response(await roundtrip(conn, links[1], request.code, request.build(None), deadline, 0,
                                        on_push, on_push_ctx))
    for attempt in range(2):
        if attempt:
            links = ready_links(conn) or await open_links(conn, deadline)
        link, wire = links
        try:
            schema = conn._loaded_schema()
            if schema is None:
                schema = await asyncio.to_thread(conn._current_schema, link, deadline)
            try:
                body = request.build(schema)
            except SchemaError:
                if attempt:
                    raise
                await asyncio.to_thread(conn._reload_schema, link, deadline, schema)  # the name may be new
                continue
        except NetworkError as exc:  # failed while loading the schema: the request itself never left
            raise _not_sent(exc) from exc
        if wire.retired or not wire.alive:  # changed while the schema loaded (a re-authentication, a loss)
            wire = (ready_links(conn) or await open_links(conn, deadline))[1]
        try:
            return Response(await roundtrip(conn, wire, request.code, body, deadline, schema.version,
                                            on_push, on_push_ctx))
        except WrongSchemaVersionError:
            if attempt:
                raise
            await asyncio.to_thread(conn._reload_schema, link, deadline, schema)
    raise AssertionError("unreachable")  # pragma: no cover
