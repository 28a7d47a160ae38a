"""The transport edge: one socket, many requests in flight on it.

Rules:
- Socket and TLS exceptions become library errors at this edge, through
  sockets.py's :func:`~tarantool_pool.sockets.translate_socket_error` (where
  sockets are opened).
- A :class:`Link` is one physical connection.  Callers write their own
  request bytes (batched: whoever finds the outbox idle sends everything queued
  behind it in one send) and read the replies themselves, leader/follower
  style: there is no reader thread.  A caller waiting for its reply becomes the
  *leader* when nobody holds the reading role; it reads the socket (waiting at
  most its own remaining time) and completes the :class:`ReplySlot` registered
  under each decoded reply's sync, which wakes that slot's caller.  It gives
  the role up once its own reply (or a push for it) arrived or its deadline
  passed, handing it to the oldest parked caller (a *follower*) if there is one.
  A lone caller therefore sends and reads in its own thread: no hand-off.
- The role and the followers are state under ``Link._lock``: only the role's
  holder reads (never two readers); a follower parks only while someone holds
  the role, and the role is let go only when no follower is parked, so no
  wake-up is lost.  A follower sleeps on its slot's own lock, released at most
  once per park, under ``_lock``, by whoever un-parks it (its reply or a push
  arrived, the role was handed to it, the link died).
- A reply can only reach the slot registered under its sync; a slot is
  completed exactly once (whoever pops it from ``pending`` completes it, in the
  same ``_lock`` section); a reply for a slot whose caller gave up is dropped.
  With no request in flight nobody reads: a late reply waits in the socket
  until the next leader reads (and drops) it.
- Out-of-band pushes (status CHUNK) are queued on their slot and run by its
  own caller's thread (``on_push``), never while that thread holds the role.
- A caller that leaves ``wait`` by an exception (``on_push``'s, a
  KeyboardInterrupt) lets go of the role and takes its slot out of ``pending``.
  A KeyboardInterrupt that reaches a leader (the main thread can lead) after
  bytes left the socket and before they were dispatched loses the link: the
  stream may be cut inside a frame, and nobody may decode it from there.
- The asyncio path does not come here: each event loop reads its own socket
  (aio/wire.py), sharing :class:`InFlight` with Link.
- When the link dies every pending slot fails at once with the cause and
  ``on_lost`` runs, in the thread that found out (a leader that read EOF or a
  reset, a writer, ``close()``, the watcher); a link is never reused after that
  (a reconnect builds a new Link).  The socket is shut down at once and closed
  by the role's holder as it lets go (at once when nobody reads): a reader
  never polls a closed, perhaps reused, descriptor.
- Idle death: one watcher thread per link sleeps in ``epoll`` for the peer's
  hang-up only (EPOLLRDHUP/HUP/ERR: data never wakes it, so it costs nothing
  per request).  On a hang-up it takes the role like any caller and reads to
  EOF, so a server that dies while the link is idle is reported at once.
  Without epoll (not Linux) there is no watcher: the next request, or the
  pool's refresh, finds the death.
- Sends never block longer than the send timeout: a plain socket is left
  blocking and sends pass ``MSG_DONTWAIT``, polling for room only when the
  kernel's buffer is full; the leader polls for input with its own deadline.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable

from .errors import ConnectionClosedError, NetworkError, ProtocolError
from .protocol import STATUS_CHUNK, Decoder, Frame, Greeting
from .sockets import translate_socket_error

log = logging.getLogger("tarantool_pool")

RECV_SIZE = 256 * 1024  # one receive buffer per link (the asyncio path's too)
_MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)  # Linux, BSD, macOS; 0 (absent) on Windows
_WATCH_SECONDS = 10.0  # the watcher's epoll also wakes this often, only to re-check the link
_HANGUP: int = getattr(select, "EPOLLRDHUP", 0)  # Linux only
# poll() takes at most 2**31-1 ms (24.8 days) and raises OverflowError beyond: longer waits are cut
# into pieces of this size (the caller polls again until its own deadline).
_POLL_MAX_SECONDS = 86400.0

class ReplySlot:
    """One caller's private place for its reply; completed exactly once.

    Every field is written under the owning :class:`Link`'s ``_lock`` (except
    by the caller's own ``register`` on a dead link, before it waits).
    ``parked``: the caller sleeps on ``_wakeup`` (a lock it holds), which
    whoever sets ``parked`` back to False releases, once.
    """

    __slots__ = ("frame", "error", "done", "pushes", "parked", "_wakeup")

    def __init__(self, wants_pushes: bool = False) -> None:
        self.frame: Frame | None = None
        self.error: BaseException | None = None
        self.done = False
        self.pushes: list[Frame] | None = [] if wants_pushes else None
        self.parked = False
        self._wakeup: threading.Lock | None = None  # made by the first park (a lone caller never parks)

    def fail(self, error: BaseException) -> None:
        """Only for the one who popped the slot from ``pending`` (or never registered it)."""
        self.error = error
        self.done = True


class InFlight:
    """What a link and the asyncio path's LoopLink share: requests in flight by sync, why the
    link died, and waiting for it to drain (an Event made by the first ``wait_idle``)."""

    name: str
    pending: dict[int, Any]
    alive: bool
    lost_reason: BaseException | None
    _idle_waiter: threading.Event | None

    def lost_error(self) -> NetworkError:
        """A fresh error (one per caller) that says why the link died."""
        reason = self.lost_reason
        if isinstance(reason, NetworkError):
            return type(reason)(reason.code, reason.message)
        return ConnectionClosedError(0, f"{self.name}: connection lost ({reason})")

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is pending (or the link dies); True if that happened in time."""
        waiter = self._idle_waiter
        if waiter is None:
            waiter = self._idle_waiter = threading.Event()
        deadline = time.monotonic() + timeout
        while self.pending and self.alive:
            # Cleared first, checked after: a completion between the two sets it again.  (Set by an
            # earlier drain and never cleared, it would end every later drain at once.)
            waiter.clear()
            if not self.pending or not self.alive:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not waiter.wait(remaining):
                return not self.pending
        return True


class Link(InFlight):
    """One socket; requests pipelined, replies matched by sync and read by the waiting callers."""

    def __init__(self, sock: socket.socket, greeting: Greeting, name: str, decoder: Decoder,
                 on_lost: Callable[[Link, BaseException], None] | None = None,
                 send_timeout: float = 10.0) -> None:
        self.sock = sock
        self.greeting = greeting
        self.name = name
        self.pending: dict[int, ReplySlot] = {}
        self.alive = True
        self.lost_reason: BaseException | None = None
        self._decoder = decoder
        self._on_lost = on_lost
        self._syncs = itertools.count(1)
        self._outbox: list[bytes] = []
        self._outbox_lock = threading.Lock()
        self._flushing = False
        self._idle_waiter: threading.Event | None = None  # created by the first wait_idle()
        self._send_timeout = send_timeout
        # The reading role and the parked followers, under _lock.
        self._lock = threading.Lock()
        self._leader: ReplySlot | None = None  # the slot whose caller holds the reading role
        self._followers: deque[ReplySlot] = deque()  # FIFO; entries of slots no longer parked are skipped
        self._closed = False
        # One receive buffer for the link's life (only the role's holder and the decoder touch it):
        # recv(n) would allocate n bytes per call while holding the GIL a woken caller wants.
        self._buffer = bytearray(RECV_SIZE)
        self._view = memoryview(self._buffer)
        # Set by the role's holder just before it takes bytes out of the socket, cleared once they
        # are dispatched: a KeyboardInterrupt in between (the main thread can lead) cut the stream.
        self._mid_read = False
        # OpenSSL objects must not be read and written by two threads at once.
        self._tls_lock = threading.Lock() if isinstance(sock, ssl.SSLSocket) else None
        # A plain socket is left blocking with no timeout (a timeout makes every recv and send a
        # poll() plus the call): senders pass MSG_DONTWAIT and wait for room only when the kernel's
        # buffer is full (_send_all); the leader polls with its own deadline, then reads.  TLS keeps
        # the timeout: an SSLSocket takes no flags.
        self._dontwait = bool(_MSG_DONTWAIT) and self._tls_lock is None
        sock.settimeout(None if self._dontwait else send_timeout)
        self._poller = select.poll()  # the role holder's only
        self._poller.register(sock, select.POLLIN)
        self._watcher: threading.Thread | None = None
        if _HANGUP and hasattr(select, "epoll"):
            watch_fd = os.dup(sock.fileno())  # keeps the epoll registration valid whoever closes sock
            self._watcher = threading.Thread(target=self._watch, args=(watch_fd,),
                                             name=f"tarantool_pool-watch-{name}", daemon=True)
            try:
                self._watcher.start()
            except BaseException:
                os.close(watch_fd)
                raise

    def next_sync(self) -> int:
        return next(self._syncs)

    def register(self, sync: int, slot: ReplySlot) -> None:
        """Make ``slot`` the only receiver of the reply with this sync."""
        self.pending[sync] = slot
        if not self.alive:  # lost between the caller's check and now: do not wait for nothing
            if self.pending.pop(sync, None) is not None:
                slot.fail(self.lost_error())

    # -- sending ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue ``data``; the first caller to find the outbox idle sends everything queued."""
        with self._outbox_lock:
            if self._flushing:
                self._outbox.append(data)
                return
            self._flushing = True  # the outbox is empty whenever nobody is flushing: ours go first
        chunk = data
        try:
            while True:
                if self._dontwait:
                    self._send_all(chunk)
                elif self._tls_lock is not None:
                    with self._tls_lock:
                        self.sock.settimeout(self._send_timeout)  # a reader may have shortened it
                        self.sock.sendall(chunk)
                else:
                    self.sock.sendall(chunk)
                with self._outbox_lock:
                    if not self._outbox:
                        self._flushing = False
                        return
                    batch = self._outbox
                    self._outbox = []
                chunk = batch[0] if len(batch) == 1 else b"".join(batch)
        except BaseException as exc:
            with self._outbox_lock:
                self._flushing = False
                self._outbox = []
            if not self.alive:  # closed or lost under us: its cause, not the dead socket's errno
                raise self.lost_error() from exc
            error = translate_socket_error(exc, f"send to {self.name}")
            self.lose(error)
            raise error from exc

    def _send_all(self, data: bytes) -> None:
        """sendall() on the blocking plain socket, never blocking longer than the send timeout."""
        try:
            sent = self.sock.send(data, _MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent < len(data):  # the kernel's buffer is full: wait for room, up to the send timeout
            self._send_rest(memoryview(data), sent)

    def _send_rest(self, data: memoryview, sent: int) -> None:
        deadline = time.monotonic() + self._send_timeout
        poller = select.poll()  # rare (a full send buffer): a fresh one, so a closed socket fails here
        poller.register(self.sock, select.POLLOUT)
        while sent < len(data):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("timed out")
            if not poller.poll(min(remaining, _POLL_MAX_SECONDS) * 1000.0):
                continue  # a cut wait ended (a send timeout longer than poll takes): the check above decides
            try:
                sent += self.sock.send(data[sent:], _MSG_DONTWAIT)
            except BlockingIOError:
                pass

    # -- waiting: leader/follower -------------------------------------------------------

    def wait(self, sync: int | None, slot: ReplySlot, deadline: float,
             on_push: Callable[[Frame], None] | None = None) -> bool:
        """Wait for ``slot`` until ``deadline``, reading the socket whenever nobody else does.

        True when the slot is completed (reply or failure); False when the
        deadline passed first, and then the slot is no longer pending (its late
        reply will be dropped).  Pushes for it run ``on_push`` in this thread.
        """
        try:
            while True:
                with self._lock:
                    has_role = self._leader is slot  # taken, or handed to it while it slept
                    pushes = None
                    if slot.pushes:  # take the list: later pushes go to a new one, never to ours
                        pushes, slot.pushes = slot.pushes, []
                    if pushes or slot.done or not self.alive or time.monotonic() >= deadline:
                        if has_role:
                            self._pass_role()
                        if not pushes:
                            return self._finish(sync, slot)
                    elif has_role or self._leader is None:
                        self._leader = slot
                        has_role = True
                    else:
                        self._park(slot)
                if pushes:
                    if on_push is not None:
                        for frame in pushes:
                            on_push(frame)
                elif has_role:
                    self._lead(slot, deadline)
                    if slot.done and not slot.pushes:  # set under _lock by this thread; no push follows a reply
                        return True
                else:
                    self._sleep(slot, deadline)
        except BaseException:  # on_push's, or a KeyboardInterrupt: leave no parked ghost, pass the role on
            with self._lock:
                slot.parked = False
                if self._leader is slot:
                    self._pass_role()
                # The caller is gone (the exception goes up its stack): its request must not stay
                # pending until a reply that may never come (in_flight, wait_idle and the pool's
                # least-loaded choice count it).  A late reply or push is dropped like a timed-out one's.
                self._withdraw(sync)
            raise

    def _finish(self, sync: int | None, slot: ReplySlot) -> bool:
        """Under _lock, the wait is over: done, link dead, or deadline passed."""
        if slot.done:
            return True
        if self._withdraw(sync) and not self.alive:  # lose() failed every slot registered before it
            slot.fail(self.lost_error())
            return True
        return False

    def _withdraw(self, sync: int | None) -> bool:
        """Under _lock: take the caller's sync out of ``pending`` (a late reply finds nothing and is
        dropped); True if it was still there.  A done slot was popped by whoever completed it."""
        if sync is None or self.pending.pop(sync, None) is None:
            return False
        if self._idle_waiter is not None and not self.pending:
            self._idle_waiter.set()
        return True

    def _park(self, slot: ReplySlot) -> None:
        """Under _lock: become a follower (someone leads, so someone will wake us)."""
        if slot._wakeup is None:
            slot._wakeup = threading.Lock()
            slot._wakeup.acquire()
        slot.parked = True
        followers = self._followers
        followers.append(slot)
        if len(followers) > 2 * len(self.pending) + 16:  # mostly stale entries: drop them (amortized O(1))
            self._followers = deque(entry for entry in followers if entry.parked)

    def _sleep(self, slot: ReplySlot, deadline: float) -> None:
        """A parked follower sleeps until woken (completion, push, role, death) or its deadline."""
        wakeup = slot._wakeup
        assert wakeup is not None
        timeout = deadline - time.monotonic()
        if wakeup.acquire(timeout=-1 if timeout > threading.TIMEOUT_MAX else max(timeout, 0.0)):
            return
        with self._lock:
            if slot.parked:  # a plain timeout (its stale queue entry is skipped)
                slot.parked = False
            else:  # woken between the timeout and now: the release has happened; consume it
                wakeup.acquire(False)

    def _wake(self, slot: ReplySlot) -> None:
        """Under _lock: wake ``slot``'s caller if it sleeps (at most one release per park)."""
        if slot.parked:
            slot.parked = False
            slot._wakeup.release()  # type: ignore[union-attr]

    def _pass_role(self) -> None:
        """Under _lock: hand the reading role to the oldest parked follower, or give it up."""
        followers = self._followers
        if self.alive:
            while followers:
                # A KeyboardInterrupt (the main thread may pass the role) is raised at a function's
                # entry or after a call returns: so no Python call sits between naming the new leader
                # and waking it (it would hold the role asleep until its own deadline, nobody
                # reading), and the entry is popped only after the wake (a parked follower missing
                # from the queue is woken by nobody, not even lose()).  Interrupted before
                # _leader is set, the role is still the interrupted caller's, which passes it again.
                follower = followers[0]
                if follower.parked:
                    follower.parked = False
                    follower._wakeup.release()  # type: ignore[union-attr]  # a parked slot has its lock
                    followers.popleft()
                    self._leader = follower
                    return
                followers.popleft()
        self._leader = None
        if not self.alive and not self._closed:  # the link died while this thread read: close it now
            self._closed = True
            self.sock.close()

    def _lead(self, slot: ReplySlot, deadline: float) -> None:
        """Read and dispatch as the leader until ``slot`` is done or has pushes, or the deadline.

        Always lets go of the role before returning (handing it on if a follower is parked).
        """
        decoder = self._decoder
        let_go = False
        try:
            while True:
                data = self._recv(deadline - time.monotonic())
                if data is None:
                    self._mid_read = False  # nothing was taken
                    if time.monotonic() >= deadline:
                        return
                    continue
                if not data:
                    raise ConnectionClosedError(0, f"{self.name}: the server closed the connection")
                decoder.feed(data)  # the decoder copies what it keeps
                frames = []
                try:
                    frame = decoder.next_frame()
                    while frame is not None:
                        frames.append(frame)
                        frame = decoder.next_frame()
                except BaseException:
                    if frames:  # the replies before a malformed one still reach their callers
                        with self._lock:
                            self._dispatch(frames)
                    raise
                with self._lock:
                    self._dispatch(frames)
                    self._mid_read = False
                    if slot.done or slot.pushes or not self.alive:
                        self._pass_role()
                        let_go = True
                        return
        except Exception as exc:
            if self.alive:
                if isinstance(exc, ProtocolError):  # the decoder's words, with the server they are about
                    self.lose(ProtocolError(exc.code, f"read from {self.name}: {exc.message}"))
                else:
                    self.lose(translate_socket_error(exc, f"read from {self.name}"))
        except BaseException:  # a KeyboardInterrupt: the main thread was leading
            if self._mid_read and self.alive:
                # It came after bytes left the socket and before they were dispatched (Python raises
                # it at the first check after recv_into returns).  Those bytes are gone: the next
                # reader would decode from inside a frame, and could hand data from one reply to
                # another caller as its reply.  Only a new link is trustworthy.
                self.lose(ConnectionClosedError(0, f"read from {self.name}: interrupted while taking a "
                                                   "reply from the socket; the stream may be cut"))
            raise  # interrupted while polling: the stream is intact, the role is only let go
        finally:
            if not let_go:  # deadline, error, interrupt
                with self._lock:
                    if self._leader is slot:
                        self._pass_role()

    def _recv(self, timeout: float) -> memoryview | bytes | None:
        """Up to RECV_SIZE bytes (b"" at EOF), or None when nothing came within ``timeout``."""
        sock = self.sock
        # A deadline beyond what poll() takes is cut: _lead sees None and polls again until its deadline.
        wait_ms = None if timeout == float("inf") else min(max(timeout, 0.0), _POLL_MAX_SECONDS) * 1000.0
        tls = self._tls_lock
        if tls is None:
            if not self._poller.poll(wait_ms):
                return None
            self._mid_read = True
            try:
                count = sock.recv_into(self._buffer, 0, _MSG_DONTWAIT if self._dontwait else 0)
            except (BlockingIOError, InterruptedError, socket.timeout):
                return None
            return self._view[:count] if count else b""
        with tls:
            buffered = sock.pending()  # type: ignore[attr-defined]  # decrypted, not yet read
        if not buffered and not self._poller.poll(wait_ms):
            return None
        try:
            # Waited for readability without the lock, so writers were not blocked meanwhile.
            with tls:
                sock.settimeout(min(max(timeout, 0.001), self._send_timeout))  # a part of a record
                self._mid_read = True
                count = sock.recv_into(self._buffer)
        except (socket.timeout, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            return None
        return self._view[:count] if count else b""

    def _dispatch(self, frames: list[Frame]) -> None:
        """Under _lock: pop and complete (or push to) the slot of each frame."""
        pending = self.pending
        for frame in frames:
            if frame.status == STATUS_CHUNK:
                target = pending.get(frame.sync)
                if target is not None and target.pushes is not None:
                    target.pushes.append(frame)
                    self._wake(target)
                continue
            target = pending.pop(frame.sync, None)
            if target is None:
                log.debug("%s: dropped a late or unknown reply, sync %d", self.name, frame.sync)
                continue
            target.frame = frame
            target.done = True
            self._wake(target)
        if self._idle_waiter is not None and not pending:  # only while a drain waits
            self._idle_waiter.set()

    # -- idle death ---------------------------------------------------------------------

    def _watch(self, watch_fd: int) -> None:
        """Sleep until the peer hangs up (never woken by data); then take the role and read to EOF.

        Nobody reads an idle link, so without this a server that dies between
        requests would be noticed only by the next request.  The watcher reads
        only as a holder of the role, like any caller (it waits its turn).
        """
        epoll = select.epoll(1)
        try:
            epoll.register(watch_fd, _HANGUP)
            while self.alive:
                if epoll.poll(_WATCH_SECONDS) and self.alive:
                    self.wait(None, ReplySlot(), float("inf"))  # returns when the link is dead
        except Exception:  # never let the watcher die noisily; the next request finds the death
            log.exception("%s: watcher failed", self.name)
        finally:
            epoll.close()
            os.close(watch_fd)

    # -- death --------------------------------------------------------------------------

    def lose(self, reason: BaseException) -> None:
        """Mark the link dead, fail every pending request at once, shut the socket down."""
        with self._lock:
            if not self.alive:
                return
            self.alive = False
            self.lost_reason = reason
            pending = self.pending
            for sync in list(pending):
                slot = pending.pop(sync, None)
                if slot is not None:
                    slot.fail(self.lost_error())
                    self._wake(slot)
            for slot in self._followers:  # anyone else parked (the watcher) sees the link dead
                self._wake(slot)
            self._followers.clear()
            close_now = self._leader is None and not self._closed
            if close_now:
                self._closed = True
        if self._idle_waiter is not None:
            self._idle_waiter.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a leader's poll and the watcher
        except OSError:
            pass
        if close_now:  # else the role's holder closes it as it lets go (never under a reader)
            self.sock.close()
        if self._on_lost is not None:
            try:
                self._on_lost(self, reason)
            except Exception:  # a faulty callback must not break the thread that found the loss
                log.exception("%s: on_lost callback failed", self.name)

    def close(self, join_timeout: float = 2.0) -> None:
        self.lose(ConnectionClosedError(0, f"{self.name}: connection closed by the client"))
        watcher = self._watcher
        if watcher is not None and threading.current_thread() is not watcher:
            watcher.join(join_timeout)
