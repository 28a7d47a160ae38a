"""Conveniences over ConnectionPool: a process-wide pool, mode-bound views, pinned sessions.

- ``initialize(*args, **kwargs)`` builds the process-wide pool (closing the
  previous one), ``instance()`` returns it, ``shutdown()`` closes it.
- ``@with_pool(mode=None, arg='pool')`` passes the process-wide pool (or, with
  a mode, a :class:`ModeBoundPool` over it) to the function as keyword ``arg``.
- ``pool.session(mode=Mode.RW)`` returns a :class:`PoolSession`: every call in
  the ``with`` block goes to the one instance picked on entry.  A session never
  moves: when its instance goes down or stops fitting the mode, calls raise
  PoolTopologyError; a failed call is never retried on another instance.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, TypeVar

from .errors import DatabaseError, InterfaceError, PoolClosedError, PoolTopologyError
from .pool import ConnectionPool, Mode, PoolUnit
from .pool.config import check_mode
from .pool.strategy import role_of
from .response import Response

__all__ = ["ModeBoundPool", "PoolSession", "initialize", "instance", "shutdown", "with_pool"]

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_pool: ConnectionPool | None = None


# -- the process-wide pool ------------------------------------------------------------------

def initialize(*args: Any, **kwargs: Any) -> ConnectionPool:
    """Build the process-wide pool with ConnectionPool's arguments; close the previous one.

    The new pool is built first: when that fails, the previous one stays in place.
    """
    global _pool
    pool = ConnectionPool(*args, **kwargs)
    with _lock:
        previous, _pool = _pool, pool
    if previous is not None:
        previous.close()
    return pool


def instance() -> ConnectionPool:
    """The process-wide pool; InterfaceError when initialize() has not been called (or after shutdown())."""
    pool = _pool
    if pool is None:
        raise InterfaceError("the process-wide pool is not initialized: call "
                             "tarantool_pool.initialize(addrs, user=..., password=...) first")
    return pool


def shutdown(drain_timeout: float | None = None) -> None:
    """Close the process-wide pool, if any; instance() raises afterwards until the next initialize()."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close(drain_timeout)


def with_pool(mode: Mode | None = None, arg: str = "pool") -> Callable[[F], F]:
    """Decorator: call the function with the process-wide pool as keyword ``arg``.

    With ``mode``, the function gets a ModeBoundPool whose requests default to that
    mode.  A caller that passes ``arg`` itself (a test, say) keeps its own value.
    The pool is looked up at each call, so decorating before initialize() is fine.
    """
    if callable(mode) and not isinstance(mode, Mode):
        raise TypeError("with_pool takes arguments: write @with_pool() or @with_pool(mode=Mode.RW)")
    bound_mode = None if mode is None else check_mode(mode)
    if not isinstance(arg, str) or not arg.isidentifier():
        raise TypeError(f"arg must be a keyword argument name, got {arg!r}")

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if arg not in kwargs:
                pool = instance()
                kwargs[arg] = pool if bound_mode is None else ModeBoundPool(pool, bound_mode)
            return func(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


# -- a mode-bound view --------------------------------------------------------------------------

class ModeBoundPool:
    """A view of a pool whose requests default to one mode (an explicit ``mode=`` still wins).

    Other attributes (get_stats, wait, crud_* methods, ...) come from the pool;
    crud_* methods default to the bound mode too.
    """

    def __init__(self, pool: ConnectionPool, mode: Mode) -> None:
        self.pool = pool
        self.mode = check_mode(mode)

    def __repr__(self) -> str:
        return f"<tarantool_pool.ModeBoundPool {self.mode.name} of {self.pool!r}>"

    def _with_mode(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("mode", self.mode)
        return kwargs

    def ping(self, *args: Any, **kwargs: Any) -> float | str:
        return self.pool.ping(*args, **self._with_mode(kwargs))

    def call(self, func_name: str, *args: Any, **kwargs: Any) -> Response:
        return self.pool.call(func_name, *args, **self._with_mode(kwargs))

    def eval(self, expr: str, *args: Any, **kwargs: Any) -> Response:
        return self.pool.eval(expr, *args, **self._with_mode(kwargs))

    def execute(self, query: str | int, *args: Any, **kwargs: Any) -> Response:
        return self.pool.execute(query, *args, **self._with_mode(kwargs))

    def select(self, space_name: str | int, *args: Any, **kwargs: Any) -> Response:
        return self.pool.select(space_name, *args, **self._with_mode(kwargs))

    def insert(self, space_name: str | int, *args: Any, **kwargs: Any) -> Response:
        return self.pool.insert(space_name, *args, **self._with_mode(kwargs))

    def replace(self, space_name: str | int, *args: Any, **kwargs: Any) -> Response:
        return self.pool.replace(space_name, *args, **self._with_mode(kwargs))

    def update(self, space_name: str | int, *args: Any, **kwargs: Any) -> Response:
        return self.pool.update(space_name, *args, **self._with_mode(kwargs))

    def upsert(self, space_name: str | int, *args: Any, **kwargs: Any) -> Response:
        return self.pool.upsert(space_name, *args, **self._with_mode(kwargs))

    def delete(self, space_name: str | int, *args: Any, **kwargs: Any) -> Response:
        return self.pool.delete(space_name, *args, **self._with_mode(kwargs))

    def session(self, mode: Mode | None = None, selection_timeout: float | None = None) -> PoolSession:
        return self.pool.session(self.mode if mode is None else mode, selection_timeout)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.pool, name)
        if name.startswith("crud_") and callable(attribute):
            @functools.wraps(attribute)
            def crud(*args: Any, **kwargs: Any) -> Any:
                return attribute(*args, **self._with_mode(kwargs))
            return crud
        return attribute


# -- a pinned session ----------------------------------------------------------------------------

def _fits(mode: Mode, role: str) -> bool:
    if mode is Mode.RW:
        return role == "rw"
    if mode is Mode.RO:
        return role == "ro"
    return role != "down"


class PinnedSession:
    """What a session shares with its asyncio twin (aio.AsyncPoolSession): the pinned instance and
    the checks before each call.  Subclasses pick the instance on entry and send the requests."""

    def __init__(self, pool: ConnectionPool, mode: Mode, selection_timeout: float | None = None) -> None:
        self.pool = pool
        self.mode = check_mode(mode)
        self.selection_timeout = selection_timeout
        self.unit: PoolUnit | None = None
        self._done = False

    @property
    def name(self) -> str | None:
        """The pinned instance ("host:port"), None before entry."""
        return None if self.unit is None else self.unit.name

    def __repr__(self) -> str:
        where = self.name or ("closed" if self._done else "not entered")
        return f"<tarantool_pool.{type(self).__name__} {self.mode.name} {where}>"

    def _entering(self) -> float:
        """Check that the session may start; the moment its instance must be found by."""
        if self.unit is not None or self._done:
            raise InterfaceError("a session is entered once: call pool.session() again for a new one")
        pool = self.pool
        if pool._closed:
            raise PoolClosedError("the pool is closed")
        wait = pool.selection_timeout if self.selection_timeout is None else self.selection_timeout
        return time.monotonic() + wait

    def _pinned(self) -> PoolUnit:
        if self._done:
            raise InterfaceError("the session is over (used outside its with block)")
        unit = self.unit
        if unit is None:
            raise InterfaceError("use the session in a with block: with pool.session(mode) as s: ...")
        if self.pool._closed:
            raise PoolClosedError("the pool is closed")
        if self.pool.pool.get(unit.name) is not unit:
            raise PoolTopologyError(0, f"session pinned to {unit.name}: the instance was removed from the pool")
        role = role_of(unit.state)
        if not _fits(self.mode, role):
            raise PoolTopologyError(0, f"session pinned to {unit.name} ({self.mode.name}): the instance is "
                                       f"{role} now; a session never moves, start a new one")
        return unit

    def _deadline(self, kwargs: dict[str, Any]) -> float:
        """Drop ``mode`` (the session decides) and turn ``timeout`` into a deadline."""
        kwargs.pop("mode", None)
        timeout = kwargs.pop("timeout", None)
        return time.monotonic() + (timeout if timeout is not None else self.pool.request_timeout)


class PoolSession(PinnedSession):
    """Several requests on one instance: made by ``pool.session(mode)``, used as a context manager.

    The instance is picked on entry (waiting up to the selection timeout for one
    that fits ``mode``).  Calls take the same arguments as the pool's, without
    ``mode`` (a ``mode=`` keyword is accepted and ignored: the session decides).
    """

    def __enter__(self) -> PoolSession:
        until = self._entering()
        self.unit = self.pool._select(self.mode, until, None, ())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done = True

    def _run(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], is_read: bool) -> Any:
        unit = self._pinned()
        deadline = self._deadline(kwargs)
        try:
            return self.pool._attempt(unit, method, args, kwargs, deadline, is_read)
        except DatabaseError as error:
            self.pool._judge_retry_failure(error, unit, is_read)  # the pool's rules; a session never retries
            raise

    def ping(self, notime: bool = False, **kwargs: Any) -> float | str:
        return self._run("ping", (notime,), kwargs, True)  # type: ignore[no-any-return]

    def call(self, func_name: str, *args: Any, **kwargs: Any) -> Response:
        return self._run("call", (func_name, *args), kwargs, False)  # type: ignore[no-any-return]

    def eval(self, expr: str, *args: Any, **kwargs: Any) -> Response:
        return self._run("eval", (expr, *args), kwargs, False)  # type: ignore[no-any-return]

    def execute(self, query: str | int, params: Any = None, **kwargs: Any) -> Response:
        return self._run("execute", (query, params), kwargs, False)  # type: ignore[no-any-return]

    def select(self, space_name: str | int, key: Any = None, **kwargs: Any) -> Response:
        return self._run("select", (space_name, key), kwargs, True)  # type: ignore[no-any-return]

    def insert(self, space_name: str | int, values: Any, **kwargs: Any) -> Response:
        return self._run("insert", (space_name, values), kwargs, False)  # type: ignore[no-any-return]

    def replace(self, space_name: str | int, values: Any, **kwargs: Any) -> Response:
        return self._run("replace", (space_name, values), kwargs, False)  # type: ignore[no-any-return]

    def update(self, space_name: str | int, key: Any, op_list: Any, **kwargs: Any) -> Response:
        return self._run("update", (space_name, key, op_list), kwargs, False)  # type: ignore[no-any-return]

    def upsert(self, space_name: str | int, tuple_value: Any, op_list: Any, **kwargs: Any) -> Response:
        return self._run("upsert", (space_name, tuple_value, op_list), kwargs, False)  # type: ignore[no-any-return]

    def delete(self, space_name: str | int, key: Any, **kwargs: Any) -> Response:
        return self._run("delete", (space_name, key), kwargs, False)  # type: ignore[no-any-return]
