"""ConnectionPool: a replica set used as one database.

The request path (the threading model, stated once):

1. A caller thread calls e.g. ``pool.select(space, key, mode=Mode.ANY)``.
2. The strategy picks a unit from an immutable snapshot of unit states; the
   snapshot is rebuilt under ``_topology`` (a Condition) only when a refresh
   changes a unit's state, so the hot path takes no pool lock.  When no
   instance fits, the caller waits on that condition up to the selection
   deadline (routing.py).
3. The caller sends on that unit's Connection, which is thread-safe and
   pipelined: the request gets a fresh sync and its own reply slot, the
   bytes are batched with other callers' onto the socket, and the caller
   waits on its slot until the request's deadline.
4. Waiting callers read the replies themselves (leader/follower): one of
   them at a time reads the socket, decodes, and completes the slot
   registered under each reply's sync, waking its caller; it hands the
   reading role to another waiting caller once its own reply arrived.  A
   lone caller never crosses a thread.  A late reply is dropped.
5. A failed attempt is retried on another instance when that is safe
   (failover.py); a write whose outcome is unknown is never retried.
6. Each unit's worker thread refreshes box.info every ``refresh_delay``
   (sooner when a request hits a network error, and every unit at once on a
   read-only refusal: the master moved, maybe to any of them) and
   reports state changes here, which rebuilds the snapshot, wakes waiting
   callers and emits events to listeners.

Why not hand requests to the worker through its queue?  That costs a thread
wake-up per request; writing from the caller keeps the guarantees (own slot,
pipelining, deadline) for one wake-up less.  The worker keeps its queue for
control tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..connection import DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, Connection, PushCallback
from ..crud import CrudMixin
from ..errors import ConfigurationError, PoolClosedError, PoolTopologyError
from ..response import Response
from ..streaming import iterate_select
from ..uri import resolve_addrs
from .config import check_mode, check_seconds, validate_addrs
from .failover import EventKind, Listener, Listeners
from .routing import RoutingMixin
from .strategy import InstanceState, Mode, RoundRobinStrategy, StrategyInterface, role_of
from .unit import PoolUnit

if TYPE_CHECKING:
    from ..helpers import PoolSession

log = logging.getLogger("tarantool_pool")

MODE_REQUIRED = "Please, specify 'mode' keyword argument"
DEFAULT_REFRESH_TIMEOUT = 1.0
DEFAULT_SELECTION_TIMEOUT = 2.0
DEFAULT_MAX_RETRIES = 3
CLOSE_JOIN_SECONDS = 2.0
CRUD_READS = frozenset({"crud.get", "crud.select", "crud.count", "crud.len", "crud.min", "crud.max",
                        "crud.storage_info", "crud.stats", "crud.unflatten_rows"})


class ConnectionPool(RoutingMixin, CrudMixin):
    """A pool over a replica set, API-compatible with ``tarantool.ConnectionPool``.

    Keyword-only extras: ``refresh_timeout`` (deadline of one box.info refresh),
    ``selection_timeout`` (how long a request waits for an instance that fits
    its mode; 0 fails at once), ``max_retries`` (safe retries per request),
    ``read_attempt_timeout`` (cap of one read attempt, so a frozen replica
    leaves time to retry elsewhere), ``max_lag`` (default lag bound of reads),
    ``slow_request_threshold`` (seconds; emits SLOW_REQUEST events).
    """

    def __init__(self, addrs: Sequence[dict[str, Any] | str], user: str | None = None, password: str | None = None,
                 socket_timeout: float | None = None, reconnect_max_attempts: int = 0, reconnect_delay: float = 0,
                 connect_now: bool = True, encoding: str | None = "utf-8", call_16: bool = False,
                 connection_timeout: float | None = None, strategy_class: type[StrategyInterface] = RoundRobinStrategy,
                 refresh_delay: float = 1, fetch_schema: bool = True, *,
                 refresh_timeout: float | None = None, selection_timeout: float = DEFAULT_SELECTION_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, read_attempt_timeout: float | None = None,
                 max_lag: float | None = None, slow_request_threshold: float | None = None) -> None:
        addrs, user, password = resolve_addrs(addrs, user, password)  # URI strings -> dicts (uri.py)
        validated = validate_addrs(addrs)
        check_seconds("refresh_delay", refresh_delay, allow_none=False)
        check_seconds("refresh_timeout", refresh_timeout)
        check_seconds("socket_timeout", socket_timeout)
        check_seconds("selection_timeout", selection_timeout, allow_zero=True, allow_none=False)
        check_seconds("read_attempt_timeout", read_attempt_timeout)
        check_seconds("max_lag", max_lag, allow_zero=True)
        check_seconds("slow_request_threshold", slow_request_threshold, allow_zero=True)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        self.user = user
        self.refresh_delay = refresh_delay
        self.refresh_timeout = refresh_timeout or min(socket_timeout or DEFAULT_REFRESH_TIMEOUT,
                                                      DEFAULT_REFRESH_TIMEOUT)
        self.connection_timeout = connection_timeout
        self.request_timeout = socket_timeout or DEFAULT_REQUEST_TIMEOUT
        self.selection_timeout = selection_timeout
        self.max_retries = max_retries
        self.read_attempt_timeout = read_attempt_timeout
        self.max_lag = max_lag
        self.slow_request_threshold = slow_request_threshold
        self.listeners = Listeners()
        self._connection_options: dict[str, Any] = dict(
            user=user, password=password, socket_timeout=socket_timeout,
            reconnect_max_attempts=reconnect_max_attempts, reconnect_delay=reconnect_delay, connect_now=False,
            encoding=encoding, call_16=call_16, connection_timeout=connection_timeout, fetch_schema=fetch_schema,
            auto_reconnect=False)
        self._strategy_class = strategy_class
        self._topology = threading.Condition()
        self._closed = False
        self._started = False
        self.pool: dict[str, PoolUnit] = {}
        for addr in validated:
            unit = self._make_unit(addr)
            self.pool[unit.name] = unit
        self.strategy = strategy_class(self.pool.values())
        if connect_now:
            self.connect()

    def _make_unit(self, addr: dict[str, Any]) -> PoolUnit:
        tls_options = {key: value for key, value in addr.items() if key.startswith("ssl_")}
        conn = Connection(addr["host"], addr["port"], transport=addr.get("transport", ""),
                          auth_type=addr.get("auth_type"), **self._connection_options, **tls_options)
        unit = PoolUnit(addr, conn, self.refresh_delay, self.refresh_timeout,
                        self.connection_timeout or DEFAULT_CONNECT_TIMEOUT, self._on_state_change)
        conn.on_disconnect = unit.on_disconnect
        return unit

    # -- lifecycle -----------------------------------------------------------------

    def connect(self) -> None:
        """Start every unit; wait (bounded) for each one's first connect + refresh.

        Instances that are down do not make this fail: they join when they come up.
        """
        if self._closed:
            raise PoolClosedError("the pool is closed")
        self._started = True
        units = list(self.pool.values())
        for unit in units:
            unit.start()
        budget = (self.connection_timeout or DEFAULT_CONNECT_TIMEOUT) + self.refresh_timeout
        deadline = time.monotonic() + budget
        for unit in units:
            unit.first_refresh_done.wait(max(deadline - time.monotonic(), 0))

    def close(self, drain_timeout: float | None = None) -> None:
        """Refuse new requests, let in-flight ones finish for up to ``drain_timeout`` seconds,
        then stop every worker and close every connection (requests still in flight fail at once).
        """
        check_seconds("drain_timeout", drain_timeout, allow_zero=True)
        with self._topology:
            self._closed = True
            self._topology.notify_all()
        units = list(self.pool.values())
        if drain_timeout:
            deadline = time.monotonic() + drain_timeout
            for unit in units:
                unit.conn.wait_idle(max(deadline - time.monotonic(), 0))
        for unit in units:
            unit.stop()
        deadline = time.monotonic() + CLOSE_JOIN_SECONDS
        for unit in units:
            unit.join(max(deadline - time.monotonic(), 0))

    def is_closed(self) -> bool:
        """True when no unit is connected and ready (compatible semantics), or after close()."""
        return self._closed or all(unit.conn.is_closed() for unit in self.pool.values())

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.describe()
        return f"<tarantool_pool.ConnectionPool {state}>"

    def describe(self) -> str:
        """One line: each instance with its role (rw / ro / down)."""
        return ", ".join(f"{name} {role_of(unit.state)}" for name, unit in self.pool.items())

    def wait(self, mode: Mode = Mode.RW, timeout: float = 10.0) -> None:
        """Block until an instance fits ``mode``; PoolTopologyError after ``timeout``."""
        mode = check_mode(mode)
        deadline = time.monotonic() + timeout
        with self._topology:
            while self._closed or not self._fits(mode):
                if self._closed:  # checked first: a closed pool's units keep their last state
                    raise PoolClosedError("the pool is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolTopologyError(0, f"no instance fits mode {mode.name} after {timeout} s: "
                                               f"{self.describe()}")
                self._topology.wait(remaining)

    def session(self, mode: Mode = Mode.RW, selection_timeout: float | None = None) -> PoolSession:
        """A context manager pinned to one instance that fits ``mode``, chosen on entry.

        ``with pool.session(mode=Mode.RW) as s: s.insert(...); s.select(...)``: every call goes
        to that instance, never retried elsewhere; when it goes down or stops fitting ``mode``,
        calls raise (helpers.PoolSession).
        """
        from ..helpers import PoolSession

        return PoolSession(self, check_mode(mode), selection_timeout)

    def _fits(self, mode: Mode) -> bool:
        has = getattr(self.strategy, "has", None)
        if has is not None:
            return bool(has(mode))
        try:
            self.strategy.getnext(mode)
            return True
        except PoolTopologyError:
            return False

    def _on_state_change(self, unit: PoolUnit, old: InstanceState, new: InstanceState) -> None:
        with self._topology:
            self.strategy.update()
            self._topology.notify_all()
        old_role, new_role = role_of(old), role_of(new)
        if old_role == new_role:  # e.g. unhealthy for another reason: no event, it is still down
            return
        if new_role == "down":
            self.listeners.emit(EventKind.INSTANCE_DOWN, unit.name, role=old_role, reason=unit.last_error)
        elif old_role == "down":
            self.listeners.emit(EventKind.INSTANCE_UP, unit.name, role=new_role)
        else:
            self.listeners.emit(EventKind.ROLE_CHANGED, unit.name, old=old_role, new=new_role)

    # -- topology at runtime ---------------------------------------------------------

    def add(self, addr: dict[str, Any]) -> PoolUnit:
        """Add an instance without a restart; it serves once its first refresh succeeds."""
        (validated,) = validate_addrs([addr])
        unit = self._make_unit(validated)
        with self._topology:
            if self._closed:
                raise PoolClosedError("the pool is closed")
            if unit.name in self.pool:
                raise ConfigurationError(f"{unit.name} is already in the pool")
            self.pool = {**self.pool, unit.name: unit}
            self._rebuild_strategy()
        if self._started:
            unit.start()
        return unit

    def remove(self, name: str, drain_timeout: float = 2.0) -> None:
        """Stop routing to ``name`` ("host:port"), let its in-flight requests finish, then close it."""
        with self._topology:
            unit = self.pool.get(name)
            if unit is None:
                raise ConfigurationError(f"{name!r} is not in the pool; known: {', '.join(self.pool)}")
            self.pool = {known: other for known, other in self.pool.items() if known != name}
            self._rebuild_strategy()
        unit.conn.wait_idle(drain_timeout)
        unit.stop()
        unit.join(CLOSE_JOIN_SECONDS)

    def _rebuild_strategy(self) -> None:
        set_units = getattr(self.strategy, "set_units", None)
        if set_units is not None:
            set_units(self.pool.values())
        else:
            self.strategy = self._strategy_class(self.pool.values())
        self._topology.notify_all()

    def discover(self) -> list[str]:
        """Add the replica set members that healthy instances replicate from; returns the names added."""
        added = []
        for unit in list(self.pool.values()):
            replication = unit.info.get("replication") if unit.info else None
            entries = replication.values() if isinstance(replication, dict) else replication or []
            for entry in entries:
                upstream = entry.get("upstream") if isinstance(entry, dict) else None
                peer = upstream.get("peer") if isinstance(upstream, dict) else None
                if not isinstance(peer, str) or ":" not in peer:
                    continue
                host, _, port = peer.rpartition("@")[2].rpartition(":")  # drop any user:password@
                if f"{host}:{port}" not in self.pool and port.isdigit():
                    added.append(self.add({"host": host, "port": int(port)}).name)
        return added

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(PoolEvent)`` on role changes, instance up/down, retries, slow requests.

        Listeners run in the thread that saw the event: keep them quick and non-blocking.
        """
        self.listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.remove(listener)

    # -- the compatible API --------------------------------------------------------------

    def ping(self, notime: bool = False, *, mode: Mode | None = None, timeout: float | None = None,
             selection_timeout: float | None = None) -> float | str:
        """PING one instance that fits ``mode`` (required): seconds taken, or 'Success' with ``notime=True``."""
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return self._route(check_mode(mode), "ping", (notime,), {}, True,  # type: ignore[no-any-return]
                           timeout, selection_timeout)

    def call(self, func_name: str, *args: Any, mode: Mode | None = None, on_push: PushCallback | None = None,
             on_push_ctx: Any = None, timeout: float | None = None, idempotent: bool = False,
             selection_timeout: float | None = None, max_lag: float | None = None) -> Response:
        """CALL a Lua function; ``idempotent=True`` lets a failed call be retried like a read."""
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return self._route(check_mode(mode), "call", (func_name, *args),  # type: ignore[no-any-return]
                           {"on_push": on_push, "on_push_ctx": on_push_ctx}, idempotent, timeout,
                           selection_timeout, max_lag)

    def eval(self, expr: str, *args: Any, mode: Mode | None = None, on_push: PushCallback | None = None,
             on_push_ctx: Any = None, timeout: float | None = None, idempotent: bool = False,
             selection_timeout: float | None = None, max_lag: float | None = None) -> Response:
        """EVAL Lua code on an instance that fits ``mode`` (required); ``idempotent=True`` allows a retry elsewhere."""
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return self._route(check_mode(mode), "eval", (expr, *args),  # type: ignore[no-any-return]
                           {"on_push": on_push, "on_push_ctx": on_push_ctx}, idempotent, timeout,
                           selection_timeout, max_lag)

    def execute(self, query: str | int, params: Any = None, *, mode: Mode | None = None,
                timeout: float | None = None, idempotent: bool = False, selection_timeout: float | None = None,
                max_lag: float | None = None) -> Response:
        """Run SQL on an instance that fits ``mode`` (required); ``idempotent=True`` allows a retry elsewhere."""
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return self._route(check_mode(mode), "execute", (query, params), {},  # type: ignore[no-any-return]
                           idempotent, timeout, selection_timeout, max_lag)

    def select(self, space_name: str | int, key: Any = None, *, offset: int = 0, limit: int = 0xFFFFFFFF,
               index: str | int = 0, iterator: Any = None, mode: Mode = Mode.ANY,
               on_push: PushCallback | None = None, on_push_ctx: Any = None, timeout: float | None = None,
               selection_timeout: float | None = None, max_lag: float | None = None) -> Response:
        """SELECT from a space (default mode ANY); a failed read is retried on another instance."""
        kwargs = {"offset": offset, "limit": limit, "index": index, "iterator": iterator, "on_push": on_push,
                  "on_push_ctx": on_push_ctx}
        return self._route(check_mode(mode), "select", (space_name, key), kwargs, True,  # type: ignore[no-any-return]
                           timeout, selection_timeout, max_lag)

    def iterate(self, space_name: str | int, key: Any = None, *, index: str | int = 0, iterator: str = "GE",
                batch_size: int = 1000, mode: Mode = Mode.ANY, timeout: float | None = None,
                selection_timeout: float | None = None, max_lag: float | None = None) -> Iterator[Any]:
        """Yield the tuples of a select page by page; each page is routed by ``mode`` (see streaming.py)."""
        check_mode(mode)
        return iterate_select(lambda *args, **kwargs: self.select(
            *args, mode=mode, timeout=timeout, selection_timeout=selection_timeout, max_lag=max_lag, **kwargs),
            space_name, key, index=index, iterator=iterator, batch_size=batch_size)

    def insert(self, space_name: str | int, values: Sequence[Any], *, mode: Mode = Mode.RW,
               on_push: PushCallback | None = None, on_push_ctx: Any = None, timeout: float | None = None,
               selection_timeout: float | None = None) -> Response:
        """INSERT a tuple (default mode RW); a write that may have happened raises UnknownOutcomeError."""
        return self._write("insert", (space_name, values), {}, mode, on_push, on_push_ctx, timeout,
                           selection_timeout)

    def replace(self, space_name: str | int, values: Sequence[Any], *, mode: Mode = Mode.RW,
                on_push: PushCallback | None = None, on_push_ctx: Any = None, timeout: float | None = None,
                selection_timeout: float | None = None) -> Response:
        """REPLACE a tuple (default mode RW); a write that may have happened raises UnknownOutcomeError."""
        return self._write("replace", (space_name, values), {}, mode, on_push, on_push_ctx, timeout,
                           selection_timeout)

    def update(self, space_name: str | int, key: Any, op_list: Sequence[Any], *, index: str | int = 0,
               mode: Mode = Mode.RW, on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None, selection_timeout: float | None = None) -> Response:
        """UPDATE by key with ``op_list`` (default mode RW); never retried once it may have run."""
        return self._write("update", (space_name, key, op_list), {"index": index}, mode, on_push, on_push_ctx,
                           timeout, selection_timeout)

    def upsert(self, space_name: str | int, tuple_value: Sequence[Any], op_list: Sequence[Any], *,
               index: str | int = 0, mode: Mode = Mode.RW, on_push: PushCallback | None = None,
               on_push_ctx: Any = None, timeout: float | None = None,
               selection_timeout: float | None = None) -> Response:
        """UPSERT a tuple with ``op_list`` (default mode RW); never retried once it may have run."""
        return self._write("upsert", (space_name, tuple_value, op_list), {"index": index}, mode, on_push,
                           on_push_ctx, timeout, selection_timeout)

    def delete(self, space_name: str | int, key: Any, *, index: str | int = 0, mode: Mode = Mode.RW,
               on_push: PushCallback | None = None, on_push_ctx: Any = None, timeout: float | None = None,
               selection_timeout: float | None = None) -> Response:
        """DELETE by key (default mode RW); never retried once it may have run."""
        return self._write("delete", (space_name, key), {"index": index}, mode, on_push, on_push_ctx, timeout,
                           selection_timeout)

    def _write(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Mode,
               on_push: PushCallback | None, on_push_ctx: Any, timeout: float | None,
               selection_timeout: float | None) -> Response:
        kwargs["on_push"], kwargs["on_push_ctx"] = on_push, on_push_ctx
        return self._route(check_mode(mode), method, args, kwargs, False,  # type: ignore[no-any-return]
                           timeout, selection_timeout)

    def _crud_call(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        mode = kwargs.pop("mode", Mode.ANY)
        kwargs.setdefault("idempotent", function in CRUD_READS)
        return self.call(function, args, mode=mode, **kwargs).data or []
