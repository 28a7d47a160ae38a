"""Connection: one Tarantool server, shared safely by many threads.

Rules:
- Every request has a deadline (per-call ``timeout=``, else ``socket_timeout``,
  else :data:`DEFAULT_REQUEST_TIMEOUT`).  A late reply is dropped; the
  connection keeps serving others.
- Requests are pipelined on one :class:`~tarantool_pool.transport.Link`;
  each caller waits on its own reply slot, reading the socket itself when
  nobody else does (leader/follower: see transport's rules).
- Names (spaces, indexes, update fields) are resolved from a lazily loaded
  :class:`~tarantool_pool.schema.Schema`; a request built from names carries
  the schema version, and the server's "wrong schema version" answer reloads
  the schema and re-sends the request once.
- Reconnect: a standalone Connection reconnects on the next request
  (``reconnect_max_attempts`` retries, ``reconnect_delay`` apart, inside the
  request's deadline).  A pool's connections leave that to their unit.
- Companions (aio/wire.py: an event loop's own socket to the same server)
  live beside the current link and die with it: it is what they are checked
  against, so a dead, closed or replaced link takes its companions along, and
  ``in_flight`` / ``wait_idle`` count their requests too.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, Iterator, Protocol, Sequence, Sized

from . import protocol as p
from . import requests as rq
from .crud import CrudMixin
from .errors import (
    ConfigurationError,
    ConnectionClosedError,
    DatabaseError,
    NetworkError,
    RequestTimeoutError,
    SchemaError,
    WrongSchemaVersionError,
)
from .msgpack_ext import decode_error_stack
from .protocol import Decoder, Encoder, Frame
from .requests import Request
from .response import Response
from .schema import VINDEX_ID, VSPACE_ID, Schema
from .sockets import TlsOptions, open_socket, read_greeting
from .streaming import iterate_select
from .transport import Link, ReplySlot

log = logging.getLogger("tarantool_pool")

DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
PushCallback = Callable[[Any, Any], None]


class Companion(Protocol):
    """Another connection to the same server that lives and dies with one link (aio/wire.py)."""

    @property
    def pending(self) -> Sized:
        """Its requests in flight."""

    def lose_threadsafe(self, reason: BaseException) -> None:
        """The link died: fail what is in flight, close; callable from any thread."""

    def retire_threadsafe(self) -> None:
        """Take no new requests, close when the ones in flight are done; from any thread."""

    def wait_idle(self, timeout: float) -> bool:
        """Block (not on its own loop) until nothing is in flight; True if in time."""

    def is_orphaned(self) -> bool:
        """True when nothing can use it any more (its event loop is closed)."""

    def abandon(self) -> None:
        """For an orphan: shut its socket down and let go of it; from any thread."""


class Connection(CrudMixin):
    """A thread-safe, pipelined connection, API-compatible with ``tarantool.Connection``."""

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
        if encoding not in (None, "utf-8"):
            raise ConfigurationError(f"encoding must be 'utf-8' or None, got {encoding!r}")
        if transport not in ("", "ssl"):
            raise ConfigurationError(f"transport must be '' or 'ssl', got {transport!r}")
        if auth_type not in (None, "chap-sha1", "pap-sha256"):
            raise ConfigurationError(f"auth_type must be 'chap-sha1' or 'pap-sha256', got {auth_type!r}")
        if auth_type == "pap-sha256" and transport != "ssl":
            raise ConfigurationError("auth_type 'pap-sha256' sends the password itself: it needs transport='ssl'")
        for option, value in (("socket_timeout", socket_timeout), ("connection_timeout", connection_timeout)):
            if value is not None and not value > 0:
                raise ConfigurationError(f"{option} must be a positive number of seconds, got {value!r}")
        if host not in (None, "unix/") and not (isinstance(port, int) or str(port).isdigit()):
            raise ConfigurationError(f"port must be an integer, got {port!r}")
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.socket_timeout = socket_timeout
        self.reconnect_max_attempts = reconnect_max_attempts
        self.reconnect_delay = reconnect_delay
        self.encoding = encoding
        self.use_list = use_list
        self.call_16 = call_16
        self.connection_timeout = connection_timeout
        self.transport = transport
        self.auth_type = auth_type or "chap-sha1"
        self.fetch_schema = fetch_schema
        self.tls = TlsOptions(ssl_key_file, ssl_cert_file, ssl_ca_file, ssl_ciphers, ssl_password,
                              ssl_password_file) if transport == "ssl" else None
        self.default_timeout = socket_timeout or DEFAULT_REQUEST_TIMEOUT
        self.name = f"{host}:{port}"
        self._max_frame_size = max_frame_size
        self._auto_reconnect = auto_reconnect
        self.on_disconnect = on_disconnect  # called (by the thread that found out) when a live link dies
        self._encoder = Encoder(encoding)
        self._link: Link | None = None
        self._connecting: socket.socket | Link | None = None  # what a connect in progress would publish
        self._connect_lock = threading.Lock()
        self._schema: Schema | None = None
        self._schema_lock = threading.Lock()
        self._companions: dict[Link, list[Companion]] = {}
        self._companions_lock = threading.Lock()
        self._closed = False
        self._ever_connected = False
        if connect_now:
            self.connect()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def greeting(self) -> p.Greeting | None:
        link = self._link
        return link.greeting if link is not None else None

    @property
    def version(self) -> tuple[int, int, int] | None:
        greeting = self.greeting
        return greeting.version if greeting is not None else None

    def connect(self, timeout: float | None = None) -> None:
        """(Re)connect and authenticate now (also after close()); raises NetworkError/AuthenticationError."""
        self._closed = False
        self._connect(timeout)

    def ensure_connected(self, timeout: float | None = None) -> None:
        """Connect unless a link is alive; unlike connect(), never reopens after close().

        For owners that reconnect in the background (a pool unit's worker): a close()
        racing the reconnect must win, or the link it opens would outlive its owner.
        """
        self._connect(timeout)

    def _connect(self, timeout: float | None) -> None:
        """Open a link unless one is alive; a close() before or during it wins (ConnectionClosedError)."""
        budget = timeout or self.connection_timeout or DEFAULT_CONNECT_TIMEOUT
        deadline = time.monotonic() + budget
        if not self._connect_lock.acquire(timeout=budget):
            raise NetworkError(0, f"connect to {self.name}: another thread's connect did not finish in time")
        try:
            link = self._link
            if link is not None and link.alive:
                return
            if self._closed:
                raise ConnectionClosedError(0, f"{self.name}: the connection is closed")
            link = self._open_link(deadline)
            self._link = link
            if self._closed:  # close() ran meanwhile; it closed the old link or this one
                link.close()
                raise ConnectionClosedError(0, f"{self.name}: the connection was closed while connecting")
            if not link.alive:  # lost before it was published, so on_disconnect was not told: say it here
                raise link.lost_error()
            self._ever_connected = True
        finally:
            self._connect_lock.release()

    def _open_link(self, deadline: float) -> Link:
        where = f"connect to {self.name}"
        sock = open_socket(self.host, self.port, _remaining(deadline, where), self.tls)
        self._connecting = sock  # close() shuts it down: a greeting that never comes must not hold close()
        try:
            if self._closed:
                raise ConnectionClosedError(0, f"{self.name}: the connection was closed while connecting")
            greeting = read_greeting(sock, _remaining(deadline, where), where)
        except BaseException:
            self._connecting = None
            sock.close()
            raise
        decoder = Decoder(self.encoding, self._max_frame_size, self.use_list)
        link = Link(sock, greeting, self.name, decoder, on_lost=self._link_lost,
                    send_timeout=max(self.default_timeout, 1.0))
        self._connecting = link
        try:
            if self._closed:
                raise ConnectionClosedError(0, f"{self.name}: the connection was closed while connecting")
            if self.user:
                self._authenticate_on(link, self.user, self.password or "", deadline)
        except BaseException:
            link.close()
            raise
        finally:
            self._connecting = None
        log.debug("connected to %s (Tarantool %s)", self.name, greeting.version_text)
        return link

    def _authenticate_on(self, link: Link, user: str, password: str, deadline: float) -> None:
        self._roundtrip(link, p.AUTH, self._auth_body(user, password, link.greeting), deadline)

    def _auth_body(self, user: str, password: str, greeting: p.Greeting) -> dict[int, Any]:
        """The AUTH request's body for this connection's auth_type (the salt is per socket)."""
        if self.auth_type == "pap-sha256":
            return {p.KEY_USER_NAME: user, p.KEY_TUPLE: ["pap-sha256", password]}
        return p.auth_body(user, p.chap_sha1_scramble(greeting.salt, password))

    def _attach_companion(self, link: Link, companion: Companion) -> bool:
        """Tie ``companion`` to ``link`` (told when it dies); False when the link is dead already."""
        with self._companions_lock:
            if not link.alive:
                return False
            companions = self._companions.get(link, [])
            orphans = [other for other in companions if other.is_orphaned()]
            self._companions[link] = [other for other in companions if other not in orphans] + [companion]
        for orphan in orphans:  # of closed event loops: nothing else would ever reach them
            orphan.abandon()
        return True

    def _detach_companion(self, link: Link, companion: Companion) -> None:
        with self._companions_lock:
            companions = self._companions.get(link)
            if companions is not None and companion in companions:
                companions.remove(companion)
                if not companions:
                    del self._companions[link]

    def _companions_of(self, link: Link | None) -> list[Companion]:
        if link is None:
            return []
        with self._companions_lock:
            return list(self._companions.get(link, ()))

    def _link_lost(self, link: Link, reason: BaseException) -> None:
        with self._companions_lock:
            companions = self._companions.pop(link, [])
        for companion in companions:
            companion.lose_threadsafe(link.lost_error())
        if link is self._link and not self._closed:
            log.debug("connection to %s lost: %s", self.name, reason)
            if self.on_disconnect is not None:
                self.on_disconnect(reason)

    def _live_link(self, deadline: float) -> Link:
        link = self._link
        if link is not None and link.alive:
            return link
        if self._closed:
            raise _not_sent(ConnectionClosedError(0, f"{self.name}: the connection is closed"))
        if not self._auto_reconnect:
            reason = link.lost_reason if link is not None else "not connected"
            raise _not_sent(NetworkError(0, f"{self.name}: no connection ({reason})"))
        try:
            return self._reconnect(deadline)
        except NetworkError as exc:
            raise _not_sent(exc) from exc

    def _reconnect(self, deadline: float) -> Link:
        attempt = 0
        while True:
            try:
                self._connect(timeout=max(_remaining(deadline, f"reconnect to {self.name}"), 0.001))
                link = self._link
                assert link is not None  # connect() either set a live link or raised
                return link
            except NetworkError as exc:
                if self._closed:
                    raise ConnectionClosedError(0, f"{self.name}: the connection is closed") from exc
                attempt += 1
                if attempt > self.reconnect_max_attempts:
                    raise
                if time.monotonic() + self.reconnect_delay >= deadline:
                    raise
                time.sleep(self.reconnect_delay)

    def close(self) -> None:
        """Close the connection; in-flight requests fail at once with ConnectionClosedError."""
        self._closed = True
        link = self._link
        if link is not None:
            link.close()
        connecting = self._connecting
        if isinstance(connecting, Link):
            connecting.close()
        elif connecting is not None:
            try:
                connecting.shutdown(socket.SHUT_RDWR)  # wakes the connecting thread's recv at once
            except OSError:
                pass

    @property
    def in_flight(self) -> int:
        """Requests sent and not answered yet, on the link and its companions (0 when not connected)."""
        link = self._link
        if link is None:
            return 0
        return len(link.pending) + sum(len(companion.pending) for companion in self._companions_of(link)
                                       if not companion.is_orphaned())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight (for a graceful close); True if idle in time."""
        link = self._link
        if link is None:
            return True
        deadline = time.monotonic() + timeout
        if not link.wait_idle(timeout):
            return False
        return all(companion.wait_idle(max(deadline - time.monotonic(), 0.0))
                   for companion in self._companions_of(link) if not companion.is_orphaned())

    def is_closed(self) -> bool:
        link = self._link
        return self._closed or link is None or not link.alive

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.is_closed() else "open"
        return f"<tarantool_pool.Connection {self.name} user={self.user!r} {state}>"

    # -- the request core (shared with the asyncio path, aio/engine.py) ----------------

    def _deadline(self, timeout: float | None) -> float:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return time.monotonic() + (timeout if timeout is not None else self.default_timeout)

    def _frame(self, link: Link, code: int, body: dict[int, Any] | None, schema_version: int = 0) -> tuple[int, bytes]:
        """A fresh sync and the encoded request; raises with nothing sent when encoding fails or the link died."""
        sync = link.next_sync()
        data = self._encoder.frame(code, sync, body, schema_version)  # encode errors: nothing sent
        if not link.alive:  # died since it was picked: this request never left
            raise _not_sent(link.lost_error())
        return sync, data

    def _roundtrip(self, link: Link, code: int, body: dict[int, Any] | None, deadline: float,
                   schema_version: int = 0, on_push: PushCallback | None = None,
                   on_push_ctx: Any = None) -> Frame:
        """Send one request on ``link`` and wait for its reply until ``deadline``."""
        sync, data = self._frame(link, code, body, schema_version)
        slot = ReplySlot(wants_pushes=on_push is not None)
        link.register(sync, slot)
        link.send(data)
        push_handler = None
        if on_push is not None:
            def push_handler(frame: Frame) -> None:
                on_push(frame.body.get(p.KEY_DATA), on_push_ctx)
        if not link.wait(sync, slot, deadline, push_handler):  # this thread may read for others meanwhile
            raise self._timed_out(code, sync)
        if slot.error is not None:
            raise slot.error
        frame = slot.frame
        assert frame is not None  # a completed slot has a frame or an error
        return self._checked(frame)

    def _timed_out(self, code: int, sync: int) -> RequestTimeoutError:
        return RequestTimeoutError(0, f"{self.name}: no reply within the deadline (request type {code}, sync {sync})")

    def _checked(self, frame: Frame) -> Frame:
        """A successful reply as it is; a server error raised as its DatabaseError class."""
        if frame.status >= p.STATUS_ERROR_FLAG:
            raise self._server_error(frame)
        return frame

    def _server_error(self, frame: Frame) -> DatabaseError:
        message = frame.body.get(p.KEY_ERROR_24, "")
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        stack = None
        if p.KEY_ERROR in frame.body:
            try:
                stack = decode_error_stack(frame.body[p.KEY_ERROR])
            except ValueError:
                stack = None
        return DatabaseError.from_server(frame.error_code, message, stack)

    def _perform(self, request: Request, timeout: float | None, on_push: PushCallback | None = None,
                 on_push_ctx: Any = None) -> Response:
        """Send ``request`` and wait for its reply; a request by name loads the schema first and is
        re-sent once when the server says the schema changed (aio/engine.py: the same, awaited)."""
        deadline = self._deadline(timeout)
        if not request.uses_names:
            link = self._live_link(deadline)
            return Response(self._roundtrip(link, request.code, request.build(None), deadline, 0,
                                            on_push, on_push_ctx))
        for attempt in range(2):
            link = self._live_link(deadline)
            try:
                schema = self._current_schema(link, deadline)
                try:
                    body = request.build(schema)
                except SchemaError:
                    if attempt:
                        raise
                    self._reload_schema(link, deadline, schema)  # the name may be new: look once more
                    continue
            except NetworkError as exc:  # failed while loading the schema: the request itself never left
                raise _not_sent(exc) from exc
            try:
                return Response(self._roundtrip(link, request.code, body, deadline, schema.version,
                                                on_push, on_push_ctx))
            except WrongSchemaVersionError:
                if attempt:
                    raise
                self._reload_schema(link, deadline, schema)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema ----------------------------------------------------------------------

    def _loaded_schema(self) -> Schema | None:
        """The cached schema, None when not loaded yet; SchemaError when names are off."""
        if not self.fetch_schema:
            raise SchemaError(0, "fetch_schema=False: refer to spaces, indexes and fields by number")
        return self._schema

    def _current_schema(self, link: Link, deadline: float) -> Schema:
        schema = self._loaded_schema()
        if schema is None:
            schema = self._reload_schema(link, deadline, None)
        return schema

    def _reload_schema(self, link: Link, deadline: float, stale: Schema | None) -> Schema:
        """Load the schema; concurrent callers (threads, and event loops through a thread) share one load."""
        if not self._schema_lock.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise RequestTimeoutError(0, f"{self.name}: schema load did not finish within the deadline")
        try:
            if self._schema is not None and self._schema is not stale:
                return self._schema
            for _ in range(3):
                spaces = self._roundtrip(link, p.SELECT, p.select_body(
                    VSPACE_ID, 0, [], 0, p.SELECT_NO_LIMIT, p.ITERATORS["ALL"]), deadline)
                indexes = self._roundtrip(link, p.SELECT, p.select_body(
                    VINDEX_ID, 0, [], 0, p.SELECT_NO_LIMIT, p.ITERATORS["ALL"]), deadline)
                if spaces.schema_version == indexes.schema_version:  # no DDL between the two reads
                    break
            self._schema = Schema.from_rows(spaces.body.get(p.KEY_DATA) or [],
                                            indexes.body.get(p.KEY_DATA) or [], spaces.schema_version)
            return self._schema
        finally:
            self._schema_lock.release()

    def flush_schema(self) -> None:
        """Forget the cached schema; the next request by name loads it again."""
        self._schema = None

    # -- the compatible API (requests built in requests.py, shared with aio/) -----------------

    def ping(self, notime: bool = False, *, timeout: float | None = None) -> float | str:
        """Round trip in seconds, or ``"Success"`` when ``notime`` is true."""
        started = time.monotonic()
        self._perform(rq.ping(), timeout)
        return "Success" if notime else time.monotonic() - started

    def select(self, space_name: str | int, key: Any = None, *, offset: int = 0,
               limit: int = p.SELECT_NO_LIMIT, index: str | int = 0, iterator: Any = None,
               on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None) -> Response:
        return self._perform(rq.select(space_name, key, offset, limit, index, iterator), timeout, on_push,
                             on_push_ctx)

    def iterate(self, space_name: str | int, key: Any = None, *, index: str | int = 0, iterator: str = "GE",
                batch_size: int = 1000, timeout: float | None = None) -> Iterator[Any]:
        """Yield the tuples of a select page by page (key-based paging, see streaming.py)."""
        return iterate_select(lambda *args, **kwargs: self.select(*args, timeout=timeout, **kwargs), space_name,
                              key, index=index, iterator=iterator, batch_size=batch_size)

    def insert(self, space_name: str | int, values: Sequence[Any], *, on_push: PushCallback | None = None,
               on_push_ctx: Any = None, timeout: float | None = None) -> Response:
        return self._perform(rq.insert(space_name, values), timeout, on_push, on_push_ctx)

    def replace(self, space_name: str | int, values: Sequence[Any], *, on_push: PushCallback | None = None,
                on_push_ctx: Any = None, timeout: float | None = None) -> Response:
        return self._perform(rq.replace(space_name, values), timeout, on_push, on_push_ctx)

    def update(self, space_name: str | int, key: Any, op_list: Sequence[Any], *, index: str | int = 0,
               on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None) -> Response:
        return self._perform(rq.update(space_name, key, op_list, index), timeout, on_push, on_push_ctx)

    def upsert(self, space_name: str | int, tuple_value: Sequence[Any], op_list: Sequence[Any], *,
               index: str | int = 0, on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None) -> Response:
        return self._perform(rq.upsert(space_name, tuple_value, op_list), timeout, on_push, on_push_ctx)

    def delete(self, space_name: str | int, key: Any, *, index: str | int = 0,
               on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None) -> Response:
        return self._perform(rq.delete(space_name, key, index), timeout, on_push, on_push_ctx)

    def call(self, func_name: str, *args: Any, on_push: PushCallback | None = None, on_push_ctx: Any = None,
             timeout: float | None = None) -> Response:
        """CALL a Lua function; like tarantool-python, one list/tuple argument is the argument list."""
        return self._perform(rq.call(func_name, args, self.call_16), timeout, on_push, on_push_ctx)

    def eval(self, expr: str, *args: Any, on_push: PushCallback | None = None, on_push_ctx: Any = None,
             timeout: float | None = None) -> Response:
        return self._perform(rq.eval(expr, args), timeout, on_push, on_push_ctx)

    def execute(self, query: str | int, params: Any = None, *, timeout: float | None = None) -> Response:
        """Run SQL: ``params`` is a list (``?`` placeholders) or a dict (``:name`` placeholders)."""
        return self._perform(rq.execute(query, params), timeout)

    def prepare(self, query: str, *, timeout: float | None = None) -> Response:
        """PREPARE an SQL statement; ``.stmt_id`` of the result executes it."""
        return self._perform(rq.prepare(query), timeout)

    def unprepare(self, stmt_id: int, *, timeout: float | None = None) -> Response:
        return self._perform(rq.unprepare(stmt_id), timeout)

    def authenticate(self, user: str, password: str, *, timeout: float | None = None) -> None:
        """Authenticate the live connection as another user (also used after reconnects)."""
        deadline = self._deadline(timeout)
        link = self._live_link(deadline)
        self._authenticate_on(link, user, password, deadline)
        self.user, self.password = user, password
        self.flush_schema()  # what a user may see of the schema depends on who it is
        for companion in self._companions_of(link):  # authenticated as the old user: new requests go elsewhere
            companion.retire_threadsafe()

    def _crud_call(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        return self.call(function, args, **kwargs).data or []

    def space(self, space_name: str | int) -> Space:
        """A handle bound to one space (``conn.space('s').select(...)``)."""
        return Space(self, space_name)


class Space:
    """A space handle: the data methods of a connection with the space filled in."""

    def __init__(self, connection: Connection, space_name: str | int) -> None:
        self.connection = connection
        self.space_name = space_name

    def insert(self, values: Sequence[Any], **kwargs: Any) -> Response:
        return self.connection.insert(self.space_name, values, **kwargs)

    def replace(self, values: Sequence[Any], **kwargs: Any) -> Response:
        return self.connection.replace(self.space_name, values, **kwargs)

    def delete(self, key: Any, **kwargs: Any) -> Response:
        return self.connection.delete(self.space_name, key, **kwargs)

    def update(self, key: Any, op_list: Sequence[Any], **kwargs: Any) -> Response:
        return self.connection.update(self.space_name, key, op_list, **kwargs)

    def upsert(self, tuple_value: Sequence[Any], op_list: Sequence[Any], **kwargs: Any) -> Response:
        return self.connection.upsert(self.space_name, tuple_value, op_list, **kwargs)

    def select(self, key: Any = None, **kwargs: Any) -> Response:
        return self.connection.select(self.space_name, key, **kwargs)

    def call(self, func_name: str, *args: Any, **kwargs: Any) -> Response:
        return self.connection.call(func_name, *args, **kwargs)


def _remaining(deadline: float, what: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise NetworkError(0, f"{what}: timed out")
    return remaining


def _not_sent(error: NetworkError) -> NetworkError:
    """Mark a failure that happened before the request was written: it is safe to retry."""
    error.request_sent = False
    return error
