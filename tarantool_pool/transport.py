"""The transport edge: one socket, many requests in flight on it.

Rules:
- Socket and TLS exceptions become library errors here and nowhere else
  (:func:`translate_socket_error`).
- A :class:`Link` is one physical connection.  Callers write their own
  request bytes (batched: whoever finds the outbox idle sends everything queued
  behind it in one ``sendall``); one reader thread per link decodes replies and
  completes each caller's own slot, looked up by sync.  A reply can only reach
  the slot registered under its sync, a slot is completed exactly once
  (whoever pops it from ``pending`` completes it), and a reply for a slot
  whose caller gave up is dropped.
- A slot honours one contract (:class:`Slot`); the library's is a
  :class:`ReplySlot`, which wakes a blocked caller thread.  (The asyncio
  path does not come here: each event loop reads its own socket, see
  aio/wire.py, sharing :class:`InFlight` with Link.)
- When the link dies every pending slot fails at once with the cause; a link
  is never reused after that (a reconnect builds a new Link).
- Whoever kills a link shuts its socket down; only the reader thread closes
  it, as it exits (a descriptor closed under a blocked reader can be reused).
  The shutdown is also what wakes a reader blocked in ``recv``: a plain
  socket has no timeout (a timeout costs a ``poll`` before every ``recv`` and
  ``send``); sends pass ``MSG_DONTWAIT`` and wait for room, up to the send
  timeout, only when the kernel's buffer is full.
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any, Callable, Protocol

from .errors import ConnectionClosedError, Error, NetworkError, ProtocolError, SslError
from .protocol import GREETING_SIZE, STATUS_CHUNK, Decoder, Frame, Greeting, parse_greeting

log = logging.getLogger("tarantool_pool")

_RECV_SIZE = 256 * 1024
_MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)  # Linux, BSD, macOS; 0 (absent) on Windows


@dataclass(frozen=True)
class TlsOptions:
    """Client TLS settings (the ``ssl_*`` options of the compatible API)."""

    key_file: str | None = None
    cert_file: str | None = None
    ca_file: str | None = None
    ciphers: str | None = None
    password: str | None = field(default=None, repr=False)  # the key's pass phrase: never shown
    password_file: str | None = None

    def context(self) -> ssl.SSLContext:
        """Build the client context: the server certificate is verified when a CA is given."""
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
                context.check_hostname = False  # Tarantool certificates rarely name the host
                context.verify_mode = ssl.CERT_REQUIRED
            else:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.cert_file:
                self._load_cert_chain(context)
            if self.ciphers:
                context.set_ciphers(self.ciphers)
            return context
        except (ssl.SSLError, OSError) as exc:
            raise SslError(0, f"cannot set up TLS: {exc}") from exc

    def _load_cert_chain(self, context: ssl.SSLContext) -> None:
        # Never pass password=None: for an encrypted key OpenSSL would then ask for
        # the pass phrase on the terminal (a hang) or fail with a bare EINVAL.
        candidates: list[str] = [] if self.password is None else [self.password]
        if self.password_file:
            with open(self.password_file, encoding="utf-8") as lines:
                candidates += [line.rstrip("\r\n") for line in lines if line.strip()]
        if not candidates:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=self._no_key_password)  # type: ignore[arg-type]
                return
            except self._KeyNeedsPassword:
                raise SslError(0, f"cannot load the client certificate/key: the key {self.key_file or self.cert_file} "
                                  "is encrypted and neither ssl_password nor ssl_password_file is given") from None
        last_error: Exception | None = None
        for password in candidates:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=password)  # type: ignore[arg-type]
                return
            except ssl.SSLError as exc:
                last_error = exc
        raise SslError(0, f"cannot load the client certificate/key (wrong key password? "
                          f"{len(candidates)} tried): {last_error}")

    class _KeyNeedsPassword(Exception):
        """Raised from OpenSSL's password callback when no password was configured."""

    @staticmethod
    def _no_key_password() -> str:
        raise TlsOptions._KeyNeedsPassword()


def translate_socket_error(exc: BaseException, where: str) -> Error:
    """Map a socket-level exception to the library's error, naming what failed."""
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, ssl.SSLError):
        return SslError(0, f"{where}: TLS error: {exc}")
    if isinstance(exc, socket.timeout):
        return NetworkError(0, f"{where}: timed out")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return NetworkError(exc.errno or 0, f"{where}: {reason}")
    return NetworkError(0, f"{where}: {type(exc).__name__}: {exc}")


def _writable(sock: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until ``sock`` can take more bytes."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(max(timeout, 0.0) * 1000.0))


def open_socket(host: str | None, port: int | str, timeout: float, tls: TlsOptions | None) -> socket.socket:
    """Connect (TCP, or a unix socket when host is None or 'unix/'), do TLS, within ``timeout``."""
    where = f"connect to {host}:{port}" if host not in (None, "unix/") else f"connect to unix socket {port}"
    sock: socket.socket | None = None
    try:
        if host in (None, "unix/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(port))
        else:
            sock = socket.create_connection((host, int(port)), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.context().wrap_socket(sock, server_hostname=host if host not in (None, "unix/") else None)
        return sock
    except BaseException as exc:
        if sock is not None:
            sock.close()
        raise translate_socket_error(exc, where) from exc


def read_greeting(sock: socket.socket, timeout: float, where: str) -> Greeting:
    """Read the 128-byte greeting (the server sends it unasked) within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    try:
        while len(data) < GREETING_SIZE:
            chunk = sock.recv(GREETING_SIZE - len(data))
            if not chunk:
                raise ConnectionClosedError(0, f"{where}: the server closed the connection before its greeting")
            data += chunk
    except Error:
        raise
    except BaseException as exc:
        raise translate_socket_error(exc, f"{where}: reading the greeting") from exc
    try:
        return parse_greeting(data)
    except ProtocolError as exc:  # say which server it was: a pool has several
        raise ProtocolError(exc.code, f"{where}: {exc.message}") from exc


class Slot(Protocol):
    """What a Link completes: exactly one of ``complete``/``fail``, after any number of ``push``."""

    def complete(self, frame: Frame) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def push(self, frame: Frame) -> None: ...


class ReplySlot:
    """One caller's private place for its reply; completed exactly once.

    A released lock is the cheapest wake-up the standard library offers; a
    slot that wants out-of-band pushes uses a queue instead, so the caller's
    own thread runs its ``on_push`` callback.
    """

    __slots__ = ("_done", "_pushes", "frame", "error")

    def __init__(self, wants_pushes: bool = False) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._pushes: SimpleQueue[Any] | None = SimpleQueue() if wants_pushes else None
        self.frame: Frame | None = None
        self.error: BaseException | None = None

    def complete(self, frame: Frame) -> None:
        self.frame = frame
        self._wake()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._wake()

    def push(self, frame: Frame) -> None:
        if self._pushes is not None:
            self._pushes.put(frame)

    def _wake(self) -> None:
        self._done.release()
        if self._pushes is not None:
            self._pushes.put(None)

    def wait(self, timeout: float, on_push: Callable[[Frame], None] | None = None) -> bool:
        """Wait up to ``timeout`` seconds; True when completed (or failed)."""
        if self._pushes is None:
            return self._done.acquire(timeout=max(timeout, 0.0))
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._pushes.get(timeout=max(deadline - time.monotonic(), 0.0))
            except Empty:
                return self._done.acquire(blocking=False)
            if item is None:
                return self._done.acquire(timeout=1.0)
            if on_push is not None:
                on_push(item)

    def wait_forever(self) -> None:
        """For a slot already popped by its completer: the wake-up is certain and imminent."""
        self._done.acquire()


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
    """One socket with a reader thread; requests pipelined, replies matched by sync."""

    def __init__(self, sock: socket.socket, greeting: Greeting, name: str, decoder: Decoder,
                 on_lost: Callable[[Link, BaseException], None] | None = None,
                 send_timeout: float = 10.0) -> None:
        self.sock = sock
        self.greeting = greeting
        self.name = name
        self.pending: dict[int, Slot] = {}
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
        # OpenSSL objects must not be read and written by two threads at once.
        self._tls_lock = threading.Lock() if isinstance(sock, ssl.SSLSocket) else None
        # A plain socket is left blocking: the reader waits in recv() itself (a timeout would
        # make every recv and send a poll() plus the call), and senders pass MSG_DONTWAIT,
        # waiting for room with poll() only when the kernel's buffer is full (_send_all).
        # lose() shuts the socket down, which wakes a blocked recv().  TLS keeps the timeout:
        # an SSLSocket takes no flags.
        self._dontwait = bool(_MSG_DONTWAIT) and self._tls_lock is None
        sock.settimeout(None if self._dontwait else send_timeout)
        self._reader = threading.Thread(target=self._read_loop, name=f"tarantool_pool-reader-{name}", daemon=True)
        self._reader.start()

    def next_sync(self) -> int:
        return next(self._syncs)

    def register(self, sync: int, slot: Slot) -> None:
        """Make ``slot`` the only receiver of the reply with this sync."""
        self.pending[sync] = slot
        if not self.alive:  # lost between the caller's check and now: do not wait for nothing
            if self.pending.pop(sync, None) is not None:
                slot.fail(self.lost_error())

    def forget(self, sync: int) -> bool:
        """The caller gives up; True if it removed the slot (no completion will come)."""
        removed = self.pending.pop(sync, None) is not None
        if self._idle_waiter is not None and not self.pending:
            self._idle_waiter.set()
        return removed

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
        while sent < len(data):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _writable(self.sock, remaining):
                raise socket.timeout("timed out")
            try:
                sent += self.sock.send(data[sent:], _MSG_DONTWAIT)
            except BlockingIOError:
                pass

    def _read_loop(self) -> None:
        sock, decoder = self.sock, self._decoder
        # One buffer for the link's life: recv(n) would allocate n bytes per call (for a large n,
        # an mmap and a munmap each time) while holding the GIL that a just-woken caller wants.
        buffer = bytearray(_RECV_SIZE)
        view = memoryview(buffer)
        recv_into = sock.recv_into if self._tls_lock is None else self._recv_tls
        try:
            while self.alive:
                try:
                    size = recv_into(buffer)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue  # TLS: the socket timeout bounds sends; the reader simply waits again
                if not size:
                    raise ConnectionClosedError(0, f"{self.name}: the server closed the connection")
                decoder.feed(view[:size])  # the decoder copies what it keeps
                # Each frame is handed over only once the next one is decoded: the caller woken by
                # the last reply of a chunk finds the GIL released at once (by recv), instead of
                # waking only to wait for it while this thread looks for one more frame.
                frame = decoder.next_frame()
                while frame is not None:
                    try:
                        following = decoder.next_frame()
                    except BaseException:
                        self._deliver(frame)  # it arrived whole: its caller gets it, then the link dies
                        raise
                    self._deliver(frame)
                    frame = following
        except BaseException as exc:
            if self.alive:
                if isinstance(exc, ProtocolError):  # the decoder's words, with the server they are about
                    self.lose(ProtocolError(exc.code, f"read from {self.name}: {exc.message}"))
                else:
                    self.lose(translate_socket_error(exc, f"read from {self.name}"))
        finally:
            sock.close()  # only here: see lose()

    def _deliver(self, frame: Frame) -> None:
        """Hand a reply (or a push) to the slot registered under its sync; drop it if there is none."""
        pending = self.pending
        if frame.status == STATUS_CHUNK:
            slot = pending.get(frame.sync)
            if slot is not None:
                slot.push(frame)
            return
        slot = pending.pop(frame.sync, None)
        if slot is not None:
            slot.complete(frame)
            if self._idle_waiter is not None and not pending:  # only while a drain waits
                self._idle_waiter.set()
        else:
            log.debug("%s: dropped a late or unknown reply, sync %d", self.name, frame.sync)

    def _recv_tls(self, buffer: bytearray) -> int:
        sock = self.sock
        # Wait for readability without the lock, so writers are not blocked meanwhile.
        readable, _, _ = select.select([sock], [], [], 1.0)
        if not readable and not sock.pending():  # type: ignore[attr-defined]
            raise socket.timeout()
        assert self._tls_lock is not None
        with self._tls_lock:
            return sock.recv_into(buffer)

    def lose(self, reason: BaseException) -> None:
        """Mark the link dead, fail every pending request at once, close the socket."""
        with self._outbox_lock:
            if not self.alive:
                return
            self.alive = False
            self.lost_reason = reason
        for sync in list(self.pending):
            slot = self.pending.pop(sync, None)
            if slot is not None:
                slot.fail(self.lost_error())
        if self._idle_waiter is not None:
            self._idle_waiter.set()
        # Shut down, never close, from here: the reader owns the descriptor and closes it as it
        # exits.  Closed under a reader about to block in recv(), the descriptor's number could be
        # reused by another socket at once, and that reader would wait on the stranger's socket.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._on_lost is not None:
            try:
                self._on_lost(self, reason)
            except Exception:  # a faulty callback must not kill the reader
                log.exception("%s: on_lost callback failed", self.name)

    def close(self, join_timeout: float = 2.0) -> None:
        self.lose(ConnectionClosedError(0, f"{self.name}: connection closed by the client"))
        if threading.current_thread() is not self._reader:
            self._reader.join(join_timeout)
