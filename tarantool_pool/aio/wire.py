"""LoopLink: an event loop's own socket to a server, read and written on that loop.

Rules:
- A request on the asyncio path never crosses a thread: the loop encodes it,
  writes it (batched per loop iteration by engine.py), reads the reply
  (``buffer_updated`` through the sans-IO protocol.Decoder) and settles the
  caller's future, all on the loop's thread.  Reads go into one buffer per
  link (a BufferedProtocol; the decoder copies what it keeps): asyncio's
  ``data_received`` path allocates a 256 KiB bytes object per ``recv``, which
  depending on the allocator's state is an mmap and a munmap per read (a
  socketpair test here: 17 us per small send and recv, against 3 us with
  ``recv_into``).
- A LoopLink is the companion of one live sync Link of a Connection (the pool
  unit's, or the aio.Connection's own): it is opened only while that link is
  alive, to the same address with the same TLS options and credentials, and
  it dies with it (Connection tells it from whichever thread sees the link
  die).  The sync link keeps everything that is not per request: health
  refreshes, reconnects, schema loads, the pool's view of the instance.
- ``pending`` maps a sync to its caller's future.  Everything that settles a
  future (a reply, a timeout, a cancellation, the link's loss) runs on the
  loop, and whoever pops the sync settles it, so a reply reaches only its
  own caller and a future is settled at most once.
- Opening (TCP or unix socket, TLS, greeting, authentication) is bounded by
  the connection's connect timeout; concurrent requests share one opening
  and each waits for it only within its own deadline.
- Writes are bounded like the sync path's: when the server reads nothing for
  the send timeout while our buffer is over asyncio's high-water mark, the
  link is lost (its requests fail) instead of buffering without end.
- A LoopLink of a loop that has closed (nothing can run on it any more) is
  abandoned wherever that is noticed: its socket is shut down, its
  references dropped (see engine.loop_state and Connection._attach_companion).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable

from .. import protocol as p
from ..connection import DEFAULT_CONNECT_TIMEOUT, Connection
from ..errors import ConnectionClosedError, Error, NetworkError, ProtocolError
from ..protocol import GREETING_SIZE, STATUS_CHUNK, Decoder, Frame, Greeting
from ..sockets import translate_socket_error
from ..transport import RECV_SIZE, InFlight, Link

if TYPE_CHECKING:
    from .engine import LoopState

log = logging.getLogger("tarantool_pool")


class LoopLink(asyncio.BufferedProtocol, InFlight):
    """One socket driven by one event loop; requests pipelined, replies matched by sync."""

    def __init__(self, conn: Connection, link: Link, state: LoopState) -> None:
        self.conn = conn
        self.link = link  # the sync link this one lives and dies with
        self.state = state
        self.loop = state.loop
        self.name = conn.name
        self.pending: dict[int, asyncio.Future[Frame]] = {}
        self.pushes: dict[int, Callable[[Frame], None]] = {}  # only requests that want out-of-band pushes
        self.alive = True
        self.retired = False
        self.lost_reason: BaseException | None = None
        self.greeting: Greeting | None = None
        self.ready: asyncio.Future[None] = self.loop.create_future()  # opened and authenticated
        self._greeted: asyncio.Future[Greeting] = self.loop.create_future()
        self._head = b""  # the greeting, until all of it has come
        self._decoder = Decoder(conn.encoding, conn._max_frame_size, conn.use_list)
        self._buffer = memoryview(bytearray(RECV_SIZE))  # what asyncio reads into; the decoder copies out
        self._syncs = itertools.count(1)
        self._transport: asyncio.Transport | None = None
        self._idle_waiter: threading.Event | None = None  # created by the first wait_idle()
        self._opening: asyncio.Task[None] | None = None
        self._send_timeout = max(conn.default_timeout, 1.0)  # the sync link's bound on a stalled send
        self._stalled: asyncio.TimerHandle | None = None  # armed while asyncio has paused our writing

    # -- opening -----------------------------------------------------------------------

    def open(self) -> None:
        """Start opening in the background; ``ready`` completes (or fails) when it is done."""
        self.ready.add_done_callback(_consume_exception)
        # Held here: the loop keeps only a weak reference to a task, which could vanish mid-way.
        self._opening = self.loop.create_task(self._open())

    async def _open(self) -> None:
        conn = self.conn
        where = f"connect to {self.name}"
        try:
            if not conn._attach_companion(self.link, self):
                raise self.link.lost_error()
            async with asyncio.timeout(conn.connection_timeout or DEFAULT_CONNECT_TIMEOUT):
                await self._connect()
                greeting = await self._greeted
                if not self.alive:  # lost while this task waited to resume: AUTH would wait for nothing
                    raise self.lost_error()
                if conn.user:
                    body = conn._auth_body(conn.user, conn.password or "", greeting)
                    conn._checked(await self.request(p.AUTH, body))  # a refusal raises its error class
        except BaseException as exc:
            error = exc if isinstance(exc, Error) else translate_socket_error(exc, where)
            if not self.ready.done():  # before lose(): the callers see this cause, not "connection lost"
                self.ready.set_exception(error)
            self.lose(error)
            if not isinstance(exc, Exception):
                raise
            return
        if not self.ready.done():  # lost while authenticating: lose() has failed it already
            self.ready.set_result(None)

    async def _connect(self) -> None:
        conn = self.conn
        tls = conn.tls.context() if conn.tls is not None else None
        if conn.host in (None, "unix/"):
            await self.loop.create_unix_connection(lambda: self, str(conn.port), ssl=tls,
                                                   server_hostname="" if tls is not None else None)
        else:
            await self.loop.create_connection(lambda: self, conn.host, int(conn.port), ssl=tls,
                                              server_hostname=conn.host if tls is not None else None)

    # -- requests (on the loop) ----------------------------------------------------------

    def next_sync(self) -> int:
        return next(self._syncs)

    def request(self, code: int, body: dict[int, Any] | None) -> asyncio.Future[Frame]:
        """Send one request now (no deadline: for the opening handshake only)."""
        sync = self.next_sync()
        future: asyncio.Future[Frame] = self.loop.create_future()
        self.pending[sync] = future
        self.send(self.conn._encoder.frame(code, sync, body))
        return future

    def send(self, data: bytes) -> None:
        transport = self._transport
        if self.alive and transport is not None:
            transport.write(data)

    def forget(self, sync: int) -> bool:
        """The caller gives up; True if it removed the future (no reply will settle it)."""
        self.pushes.pop(sync, None)
        removed = self.pending.pop(sync, None) is not None
        if not self.pending:
            self._became_idle()
        return removed

    # -- asyncio.BufferedProtocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self.alive:  # lost (closed by the client) while the socket was being opened
            transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._received(self._buffer[:nbytes])

    def _received(self, data: bytes | memoryview) -> None:
        if self.greeting is None:
            data = self._greet(data)
            if not data:
                return
        decoder, pending = self._decoder, self.pending
        try:
            decoder.feed(data)
            while True:
                frame = decoder.next_frame()
                if frame is None:
                    break
                if frame.status == STATUS_CHUNK:
                    push = self.pushes.get(frame.sync)
                    if push is not None:
                        push(frame)
                    continue
                future = pending.pop(frame.sync, None)
                if future is None:
                    log.debug("%s: dropped a late or unknown reply, sync %d", self.name, frame.sync)
                    continue
                if self.pushes:
                    self.pushes.pop(frame.sync, None)
                if not future.done():
                    future.set_result(frame)
        except ProtocolError as exc:  # the decoder's words, with the server they are about
            self.lose(ProtocolError(exc.code, f"read from {self.name}: {exc.message}"))
            return
        if not pending:
            self._became_idle()

    def _greet(self, data: bytes | memoryview) -> bytes:
        """Take the greeting off the front of ``data``; what follows it is returned."""
        head = self._head + data
        if len(head) < GREETING_SIZE:
            self._head = head
            return b""
        self._head = b""
        try:
            self.greeting = p.parse_greeting(head[:GREETING_SIZE])
        except ProtocolError as exc:  # say which server it was: a pool has several
            self.lose(ProtocolError(exc.code, f"connect to {self.name}: {exc.message}"))
            return b""
        if not self._greeted.done():
            self._greeted.set_result(self.greeting)
        return head[GREETING_SIZE:]

    def pause_writing(self) -> None:
        # The server is not reading: give it the send timeout, as the sync path does, then give up.
        if self._stalled is None:
            self._stalled = self.loop.call_later(self._send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _send_stalled(self) -> None:
        self._stalled = None
        self.lose(NetworkError(0, f"send to {self.name}: timed out (the server read nothing for "
                                  f"{self._send_timeout:g} s)"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.lose(ConnectionClosedError(0, f"{self.name}: the server closed the connection"))
        else:
            self.lose(translate_socket_error(exc, f"read from {self.name}"))

    # -- ending ------------------------------------------------------------------------

    def lose(self, reason: BaseException) -> None:
        """On the loop: mark it dead, fail everything in flight with the cause, close the socket."""
        if not self.alive:
            return
        self.alive = False
        self.lost_reason = reason
        pending, self.pending = self.pending, {}
        self.pushes.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(self.lost_error())
        for waiting in (self._greeted, self.ready):
            if not waiting.done():
                waiting.set_exception(self.lost_error())
                waiting.exception()  # retrieved: nobody may be waiting for it
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        self._became_idle()
        self.state.forget_link(self)
        self.conn._detach_companion(self.link, self)
        if self._transport is not None:
            self._transport.abort()

    def abandon(self) -> None:
        """From any thread, once the loop is closed: shut the socket down, drop what refers to it.

        Nothing can settle this loop's futures any more (nobody awaits them either), and a closed
        loop cannot close its transports; the shutdown ends the server's session at once, the
        descriptor goes with the transport object.
        """
        if not self.alive:
            return
        self.alive = False
        self.lost_reason = ConnectionClosedError(0, f"{self.name}: its event loop is closed")
        self.pending = {}
        self.pushes = {}
        transport = self._transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.state.forget_link(self)
        self.conn._detach_companion(self.link, self)

    def retire(self) -> None:
        """On the loop: no new requests; close once the ones in flight are done."""
        self.retired = True
        self.state.forget_link(self)
        if not self.pending:
            self._became_idle()

    def _became_idle(self) -> None:
        if self._idle_waiter is not None:
            self._idle_waiter.set()
        if self.retired and self.alive:
            self.lose(ConnectionClosedError(0, f"{self.name}: retired (the connection re-authenticated)"))

    # -- Companion (connection.py), from any thread -----------------------------------------

    def lose_threadsafe(self, reason: BaseException) -> None:
        self._on_loop(self.lose, reason)

    def retire_threadsafe(self) -> None:
        self._on_loop(self.retire)

    def _on_loop(self, function: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop is closed: nobody awaits its futures any more
            self.abandon()

    def is_orphaned(self) -> bool:
        return self.loop.is_closed()


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # an opening nobody waited for must not be logged as "never retrieved"
