"""The asyncio request path: the threaded engine's links, without a thread per request.

Rules:
- A request is built by requests.py and encoded by its Connection, on the
  event loop's thread.  Its bytes go to a per-loop outbox flushed once per
  loop iteration (``loop.call_soon``) with one ``Link.send`` per link, so a
  ``gather`` of N requests leaves in one ``sendall``; a failed send loses the
  link, which fails every request on it.
- Its reply slot is a transport.CallbackSlot: the link's reader thread posts
  the reply into the caller's loop's mailbox, which wakes that loop once per
  batch (``call_soon_threadsafe``) and settles the futures there.  A future
  belongs to the loop that awaits it, which is what makes one Connection or
  pool safe to share between event loops in several threads.
- Deadlines: when a request's deadline passes before its reply, the loop
  forgets its sync on the link (the sync path's rule: whoever pops the slot
  completes it) and raises RequestTimeoutError; a late reply finds nothing
  and is dropped.  Deadlines are grouped in ticks of DEADLINE_TICK seconds,
  one loop timer per tick (a timer per request costs a quarter of a
  request's CPU), so a timeout is raised up to one tick late, never early.
  A cancelled caller forgets its sync the same way.  Link loss fails the
  future with the error the sync path raises.
- What may block runs in ``asyncio.to_thread`` and is rare: connecting a
  standalone connection, and loading the schema (once per connection and
  after DDL).  The schema load goes through the sync path's lock, so
  concurrent loaders of any loop or thread share one load.
- Push callbacks (``on_push``) run on the caller's loop, before the reply
  completes the request; an exception in one is logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable, Tuple

from .. import protocol as p
from ..connection import Connection, PushCallback, _not_sent
from ..errors import NetworkError, SchemaError, WrongSchemaVersionError
from ..protocol import Frame
from ..requests import Request
from ..response import Response
from ..transport import CallbackSlot, Link

log = logging.getLogger("tarantool_pool")

DEADLINE_TICK = 0.005  # seconds; the deadlines of one tick share one loop timer

Expiry = Tuple[Connection, Link, int, int]  # what a timeout needs: connection, link, request type, sync


class LoopState:
    """One event loop's mailbox (replies posted from reader threads), outbox (bytes to send)
    and deadlines (futures to time out, by tick)."""

    __slots__ = ("loop", "_posted", "_wake_pending", "_outbox", "_ticks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._posted: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._wake_pending = False
        self._outbox: dict[Link, list[bytes]] = {}
        self._ticks: dict[int, dict[asyncio.Future[Frame], Expiry]] = {}

    # -- from any thread -----------------------------------------------------------

    def post(self, function: Callable[..., None], *args: Any) -> None:
        """Run ``function(*args)`` on the loop; one wake-up for everything posted meanwhile."""
        self._posted.append((function, args))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self.loop.call_soon_threadsafe(self._run_posted)
            except RuntimeError:  # the loop is closed: nobody awaits its futures any more
                pass

    # -- on the loop -----------------------------------------------------------------

    def _run_posted(self) -> None:
        # Cleared before draining: whoever posts after this sees False and wakes the loop again.
        self._wake_pending = False
        posted = self._posted
        for _ in range(len(posted)):  # what was there now; later posts come with their own wake-up
            function, args = posted.popleft()
            try:
                function(*args)
            except Exception:  # pragma: no cover - settle and _push do not raise; keep draining anyway
                log.exception("asyncio reply delivery failed")

    def send_soon(self, link: Link, data: bytes) -> None:
        """Queue ``data`` for ``link``; everything queued in this loop iteration leaves in one send."""
        outbox = self._outbox
        chunks = outbox.get(link)
        if chunks is not None:
            chunks.append(data)
            return
        if not outbox:
            self.loop.call_soon(self._flush)
        outbox[link] = [data]

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for link, chunks in outbox.items():
            try:
                link.send(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception as exc:  # the link is lost: each request on it already failed with the cause
                log.debug("%s: send of %d request(s) failed: %s", link.name, len(chunks), exc)

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


_local = threading.local()


def loop_state() -> LoopState:
    """The running loop's state (one per loop; a thread runs one loop at a time)."""
    loop = asyncio.get_running_loop()
    state: LoopState | None = getattr(_local, "state", None)
    if state is None or state.loop is not loop:
        state = _local.state = LoopState(loop)
    return state


def _settle(future: asyncio.Future[Frame], frame: Frame | None, error: BaseException | None) -> None:
    if future.done():  # timed out or cancelled: the reply goes nowhere
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(frame)  # type: ignore[arg-type]  # a slot reports a frame or an error


def _push(on_push: PushCallback, on_push_ctx: Any, frame: Frame) -> None:
    try:
        on_push(frame.body.get(p.KEY_DATA), on_push_ctx)
    except Exception:
        log.exception("on_push callback %r failed", on_push)


async def roundtrip(conn: Connection, link: Link, code: int, body: dict[int, Any] | None, deadline: float,
                    schema_version: int = 0, on_push: PushCallback | None = None, on_push_ctx: Any = None) -> Frame:
    """Send one request on ``link`` and await its reply until ``deadline`` (time.monotonic())."""
    state = loop_state()
    loop = state.loop
    sync, data = conn._frame(link, code, body, schema_version)  # raises with nothing sent
    future: asyncio.Future[Frame] = loop.create_future()
    pushed = None if on_push is None else functools.partial(state.post, _push, on_push, on_push_ctx)
    link.register(sync, CallbackSlot(functools.partial(state.post, _settle, future), pushed))
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
    """The connection's live link; a (re)connect, which blocks, runs in a thread."""
    link = conn._link
    if link is not None and link.alive:
        return link
    if conn._closed or not conn._auto_reconnect:
        return conn._live_link(deadline)  # raises at once (closed, or a pool's unit reconnects it)
    return await asyncio.to_thread(conn._live_link, deadline)


async def perform(conn: Connection, request: Request, timeout: float | None, on_push: PushCallback | None = None,
                  on_push_ctx: Any = None) -> Response:
    """Connection._perform, awaited: the schema is loaded first when the request uses names,
    and the request is re-sent once when the server says the schema changed (ER 109)."""
    deadline = conn._deadline(timeout)
    if not request.uses_names:
        link = await live_link(conn, deadline)
        return Response(await roundtrip(conn, link, request.code, request.build(None), deadline, 0,
                                        on_push, on_push_ctx))
    for attempt in range(2):
        link = await live_link(conn, deadline)
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
        try:
            return Response(await roundtrip(conn, link, request.code, body, deadline, schema.version,
                                            on_push, on_push_ctx))
        except WrongSchemaVersionError:
            if attempt:
                raise
            await asyncio.to_thread(conn._reload_schema, link, deadline, schema)
    raise AssertionError("unreachable")  # pragma: no cover
