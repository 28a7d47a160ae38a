"""ConnectionPool: a replica set used as one database.

The request path (the threading model, stated once):

1. A caller thread calls e.g. ``pool.select(space, key, mode=Mode.ANY)``.
2. The strategy picks a unit from an immutable snapshot of unit states; the
   snapshot is rebuilt under ``_topology`` (a Condition) only when a refresh
   changes a unit's state, so the hot path takes no pool lock.
3. The caller sends on that unit's Connection, which is thread-safe and
   pipelined: the request gets a fresh sync and its own reply slot, the
   bytes are batched with other callers' onto the socket, and the caller
   waits on its slot until the request's deadline.
4. The connection's reader thread decodes replies and completes the slot
   registered under each reply's sync; a late reply is dropped.
5. Each unit's worker thread refreshes box.info every ``refresh_delay``
   (sooner when a request hits a network error or a read-only refusal) and
   reports state changes here, which rebuilds the snapshot and wakes
   ``wait()``ers.

Why not hand requests to the worker through its queue?  That costs a thread
wake-up per request; writing from the caller keeps the guarantees (own slot,
pipelining, deadline) for one wake-up less.  The worker keeps its queue for
control tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from ..connection import DEFAULT_CONNECT_TIMEOUT, Connection, PushCallback
from ..crud import CrudMixin
from ..errors import (
    ConfigurationError,
    LoadingError,
    NetworkError,
    PoolClosedError,
    PoolTopologyError,
    ReadOnlyError,
)
from ..response import Response
from .strategy import InstanceState, Mode, RoundRobinStrategy, StrategyInterface, role_of
from .unit import PoolUnit

log = logging.getLogger("tarantool_pool")

ADDR_KEYS = frozenset({"host", "port", "transport", "ssl_key_file", "ssl_cert_file", "ssl_ca_file",
                       "ssl_ciphers", "ssl_password", "ssl_password_file", "auth_type"})
MODE_REQUIRED = "Please, specify 'mode' keyword argument"
DEFAULT_REFRESH_TIMEOUT = 1.0
CLOSE_JOIN_SECONDS = 2.0
# Errors that say "this instance may have changed role or died": refresh it now.
_REFRESH_TRIGGERS = (NetworkError, ReadOnlyError, LoadingError)


class ConnectionPool(CrudMixin):
    """A pool over a replica set, API-compatible with ``tarantool.ConnectionPool``."""

    def __init__(self, addrs: Sequence[dict[str, Any]], user: str | None = None, password: str | None = None,
                 socket_timeout: float | None = None, reconnect_max_attempts: int = 0, reconnect_delay: float = 0,
                 connect_now: bool = True, encoding: str | None = "utf-8", call_16: bool = False,
                 connection_timeout: float | None = None, strategy_class: type[StrategyInterface] = RoundRobinStrategy,
                 refresh_delay: float = 1, fetch_schema: bool = True, *,
                 refresh_timeout: float | None = None) -> None:
        validated = validate_addrs(addrs)
        if not (isinstance(refresh_delay, (int, float)) and refresh_delay > 0):
            raise ConfigurationError(f"refresh_delay must be a positive number of seconds, got {refresh_delay!r}")
        if refresh_timeout is not None and not refresh_timeout > 0:
            raise ConfigurationError(f"refresh_timeout must be a positive number of seconds, got {refresh_timeout!r}")
        self.user = user
        self.refresh_delay = refresh_delay
        self.refresh_timeout = refresh_timeout or min(socket_timeout or DEFAULT_REFRESH_TIMEOUT,
                                                      DEFAULT_REFRESH_TIMEOUT)
        self.connection_timeout = connection_timeout
        self._topology = threading.Condition()
        self._closed = False
        self.pool: dict[str, PoolUnit] = {}
        connect_timeout = connection_timeout or DEFAULT_CONNECT_TIMEOUT
        for addr in validated:
            tls_options = {key: value for key, value in addr.items() if key.startswith("ssl_")}
            conn = Connection(
                addr["host"], addr["port"], user=user, password=password, socket_timeout=socket_timeout,
                reconnect_max_attempts=reconnect_max_attempts, reconnect_delay=reconnect_delay,
                connect_now=False, encoding=encoding, call_16=call_16, connection_timeout=connection_timeout,
                transport=addr.get("transport", ""), auth_type=addr.get("auth_type"), fetch_schema=fetch_schema,
                auto_reconnect=False,
                **tls_options,
            )
            unit = PoolUnit(addr, conn, refresh_delay, self.refresh_timeout, connect_timeout,
                            self._on_state_change)
            conn.on_disconnect = unit.on_disconnect
            self.pool[unit.name] = unit
        self.strategy = strategy_class(self.pool.values())
        if connect_now:
            self.connect()

    # -- lifecycle -----------------------------------------------------------------

    def connect(self) -> None:
        """Start every unit; wait (bounded) for each one's first connect + refresh.

        Instances that are down do not make this fail: they join when they come up.
        """
        if self._closed:
            raise PoolClosedError("the pool is closed")
        for unit in self.pool.values():
            unit.start()
        budget = (self.connection_timeout or DEFAULT_CONNECT_TIMEOUT) + self.refresh_timeout
        deadline = time.monotonic() + budget
        for unit in self.pool.values():
            unit.first_refresh_done.wait(max(deadline - time.monotonic(), 0))

    def close(self) -> None:
        """Stop every worker and close every connection; later calls raise PoolClosedError."""
        with self._topology:
            self._closed = True
            self._topology.notify_all()
        for unit in self.pool.values():
            unit.stop()
        deadline = time.monotonic() + CLOSE_JOIN_SECONDS
        for unit in self.pool.values():
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

    # -- routing -----------------------------------------------------------------------

    def _unit_for(self, mode: Mode) -> PoolUnit:
        if self._closed:
            raise PoolClosedError("the pool is closed")
        unit: PoolUnit = self.strategy.getnext(mode)
        return unit

    def _send(self, mode: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        unit = self._unit_for(check_mode(mode))
        try:
            return getattr(unit.conn, method)(*args, **kwargs)
        except _REFRESH_TRIGGERS:
            unit.request_refresh()
            if self._closed:
                raise PoolClosedError("the pool is closed") from None
            raise

    # -- the compatible API --------------------------------------------------------------

    def ping(self, notime: bool = False, *, mode: Mode | None = None, timeout: float | None = None) -> float | str:
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return self._send(mode, "ping", notime, timeout=timeout)  # type: ignore[no-any-return]

    def call(self, func_name: str, *args: Any, mode: Mode | None = None, on_push: PushCallback | None = None,
             on_push_ctx: Any = None, timeout: float | None = None) -> Response:
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return self._send(mode, "call", func_name, *args, on_push=on_push, on_push_ctx=on_push_ctx,  # type: ignore[no-any-return]
                          timeout=timeout)

    def eval(self, expr: str, *args: Any, mode: Mode | None = None, on_push: PushCallback | None = None,
             on_push_ctx: Any = None, timeout: float | None = None) -> Response:
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return self._send(mode, "eval", expr, *args, on_push=on_push, on_push_ctx=on_push_ctx,  # type: ignore[no-any-return]
                          timeout=timeout)

    def execute(self, query: str | int, params: Any = None, *, mode: Mode | None = None,
                timeout: float | None = None) -> Response:
        if mode is None:
            raise ValueError(MODE_REQUIRED)
        return self._send(mode, "execute", query, params, timeout=timeout)  # type: ignore[no-any-return]

    def select(self, space_name: str | int, key: Any = None, *, offset: int = 0, limit: int = 0xFFFFFFFF,
               index: str | int = 0, iterator: Any = None, mode: Mode = Mode.ANY,
               on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None) -> Response:
        return self._send(mode, "select", space_name, key, offset=offset, limit=limit, index=index,  # type: ignore[no-any-return]
                          iterator=iterator, on_push=on_push, on_push_ctx=on_push_ctx, timeout=timeout)

    def insert(self, space_name: str | int, values: Sequence[Any], *, mode: Mode = Mode.RW,
               on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None) -> Response:
        return self._send(mode, "insert", space_name, values, on_push=on_push, on_push_ctx=on_push_ctx,  # type: ignore[no-any-return]
                          timeout=timeout)

    def replace(self, space_name: str | int, values: Sequence[Any], *, mode: Mode = Mode.RW,
                on_push: PushCallback | None = None, on_push_ctx: Any = None,
                timeout: float | None = None) -> Response:
        return self._send(mode, "replace", space_name, values, on_push=on_push, on_push_ctx=on_push_ctx,  # type: ignore[no-any-return]
                          timeout=timeout)

    def update(self, space_name: str | int, key: Any, op_list: Sequence[Any], *, index: str | int = 0,
               mode: Mode = Mode.RW, on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None) -> Response:
        return self._send(mode, "update", space_name, key, op_list, index=index, on_push=on_push,  # type: ignore[no-any-return]
                          on_push_ctx=on_push_ctx, timeout=timeout)

    def upsert(self, space_name: str | int, tuple_value: Sequence[Any], op_list: Sequence[Any], *,
               index: str | int = 0, mode: Mode = Mode.RW, on_push: PushCallback | None = None,
               on_push_ctx: Any = None, timeout: float | None = None) -> Response:
        return self._send(mode, "upsert", space_name, tuple_value, op_list, index=index, on_push=on_push,  # type: ignore[no-any-return]
                          on_push_ctx=on_push_ctx, timeout=timeout)

    def delete(self, space_name: str | int, key: Any, *, index: str | int = 0, mode: Mode = Mode.RW,
               on_push: PushCallback | None = None, on_push_ctx: Any = None,
               timeout: float | None = None) -> Response:
        return self._send(mode, "delete", space_name, key, index=index, on_push=on_push,  # type: ignore[no-any-return]
                          on_push_ctx=on_push_ctx, timeout=timeout)

    def _crud_call(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        mode = kwargs.pop("mode", Mode.ANY)
        return self.call(function, args, mode=mode, **kwargs).data or []


def check_mode(mode: Any) -> Mode:
    """A Mode (or its number); anything else is a ValueError that names it."""
    if isinstance(mode, Mode):
        return mode
    if isinstance(mode, int) and not isinstance(mode, bool):
        try:
            return Mode(mode)
        except ValueError:
            pass
    raise ValueError(f"mode must be a tarantool_pool.Mode ({', '.join(m.name for m in Mode)}), got {mode!r}")


def validate_addrs(addrs: Any) -> list[dict[str, Any]]:
    """Check the ``addrs`` list; errors name the entry and the field."""
    if not isinstance(addrs, (list, tuple)) or not addrs:
        raise ConfigurationError(f"addrs must be a non-empty list of {{'host': ..., 'port': ...}} dicts, got {addrs!r:.80}")
    seen: set[str] = set()
    result = []
    for number, addr in enumerate(addrs):
        where = f"addrs[{number}]"
        if not isinstance(addr, dict):
            raise ConfigurationError(f"{where} must be a dict with 'host' and 'port', got {addr!r:.80}")
        unknown = set(addr) - ADDR_KEYS
        if unknown:
            raise ConfigurationError(f"{where} has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                                     f"known: {', '.join(sorted(ADDR_KEYS))}")
        for key in ("host", "port"):
            if key not in addr:
                raise ConfigurationError(f"{where} is missing {key!r}")
        host, port = addr["host"], addr["port"]
        if host is not None and (not isinstance(host, str) or not host):
            raise ConfigurationError(f"{where}: host must be a non-empty string (or None for a unix socket), got {host!r}")
        if host not in (None, "unix/"):
            if isinstance(port, str) and port.isdigit():
                port = int(port)
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise ConfigurationError(f"{where}: port must be an integer from 1 to 65535, got {addr['port']!r}")
        transport = addr.get("transport", "")
        if transport not in ("", "ssl"):
            raise ConfigurationError(f"{where}: transport must be '' or 'ssl', got {transport!r}")
        name = f"{host}:{port}"
        if name in seen:
            raise ConfigurationError(f"{where}: {name} is listed twice")
        seen.add(name)
        result.append({**addr, "port": port})
    return result
