"""The crud module's API: result types and the ``crud_*`` methods, declared ONCE for both paths.

Rules:
- Nothing here imports a connection or a pool.  Each ``crud_*`` method is
  declared once, in :class:`CrudMethods`, as a :class:`CrudMethod`: a function
  that maps the method's arguments to crud's (function, args, call options)
  and a result kind that unwraps crud's reply.  A class gets the methods from
  :class:`CrudMixin` (it provides ``_crud_call``; a Connection calls directly,
  a pool routes by ``mode``, default ``Mode.ANY`` as in the compatible API) or
  from :class:`AsyncCrudMixin` (it provides ``async _acrud_call``: the same
  declarations become coroutine methods with the same signatures and types).
- How a reply is unwrapped is decided by a small table of result kinds,
  following crud's wire contract: ``DATA = [result, error]`` (``error``
  absent for one-value functions).
"""

from __future__ import annotations

import inspect
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Coroutine,
    Dict,
    Generic,
    Iterator,
    Optional,
    Tuple,
    TypeVar,
    cast,
    overload,
)

from .errors import (
    AccessDeniedError,
    CrudModuleError,
    CrudModuleManyError,
    DatabaseError,
    NoSuchProcedureError,
)
from .streaming import adrive, crud_pager, iterate_crud

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover - Python 3.9 has no ParamSpec; at run time any type variable serves Generic
    def ParamSpec(name: str) -> Any:
        return TypeVar(name)

_GRANTS_HINT = ". Ensure that you're calling crud.router and user has sufficient grants"


class CrudResponse:
    """Attributes copied from a crud result or error map (``metadata``, ``rows``, ``err``, ...)."""

    def __init__(self, response: Any) -> None:
        if not isinstance(response, dict):
            raise DatabaseError(0, f"crud returned {type(response).__name__}, expected a map: {response!r:.100}")
        for key, value in response.items():
            setattr(self, key.decode() if isinstance(key, bytes) else str(key), value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {vars(self)!r:.300}>"

    if TYPE_CHECKING:  # attributes come from the map: let type checkers accept ``result.rows`` etc.
        def __getattr__(self, name: str) -> Any: ...


class CrudResult(CrudResponse):
    """A crud result: ``metadata`` (field descriptions) and ``rows`` (tuples)."""


class CrudError(CrudResponse):
    """A crud error: ``class_name``, ``err``, ``str``, ``file``, ``line``, maybe ``operation_data``."""


def _single(data: list[Any]) -> CrudResult:
    result, error = data[0], data[1] if len(data) > 1 else None
    if error is not None:
        raise CrudModuleError(CrudError(error))
    return CrudResult(result)


def _written(data: list[Any]) -> CrudResult | None:
    """A single write's result; None when ``noreturn`` made crud return nil on success."""
    result, error = data[0], data[1] if len(data) > 1 else None
    if error is not None:
        raise CrudModuleError(CrudError(error))
    return CrudResult(result) if result is not None else None


def _plain(data: list[Any]) -> Any:
    result, error = data[0], data[1] if len(data) > 1 else None
    if error is not None:
        raise CrudModuleError(CrudError(error))
    return result


def _many(data: list[Any]) -> CrudResult | None:
    result, errors = data[0], data[1] if len(data) > 1 else None
    success = CrudResult(result) if result is not None else None  # nil: no success, or noreturn
    if errors:
        raise CrudModuleManyError(success, [CrudError(error) for error in errors])
    return success


def _flag(data: list[Any]) -> bool:
    return bool(_plain(data))


def _count(data: list[Any]) -> int:
    return int(_plain(data))


def _map(data: list[Any]) -> dict[str, Any]:
    return cast("dict[str, Any]", _plain(data))


def _rows(data: list[Any]) -> list[dict[str, Any]]:
    return cast("list[dict[str, Any]]", _plain(data))


def _stats(data: list[Any]) -> CrudResult:
    return CrudResult(data[0] or {})  # an empty Lua table (stats off) arrives as an empty array


P = ParamSpec("P")
T = TypeVar("T")
CrudArgs = Tuple[str, Tuple[Any, ...], Dict[str, Any]]  # (crud function, its arguments, call options)
Opts = Optional[Dict[str, Any]]  # crud's own options


class CrudMethod(Generic[P, T]):
    """One ``crud_*`` method: ``arguments`` (whose signature is the method's) and ``unwrap``.

    Read from an instance, it is the method bound to that instance: a function
    on a :class:`CrudMixin`, a coroutine function on an :class:`AsyncCrudMixin`.
    """

    def __init__(self, unwrap: Callable[[list[Any]], T], arguments: Callable[P, CrudArgs]) -> None:
        self.unwrap = unwrap
        self.arguments = arguments
        self.name = self.__name__ = arguments.__name__
        self.__doc__ = arguments.__doc__
        # The method's parameters are the declaration's; what it returns is what ``unwrap`` makes.
        self.signature = inspect.signature(arguments).replace(
            return_annotation=inspect.signature(unwrap).return_annotation)
        # Read from the class it is a function of (self, ...), as a method would be.
        self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.__signature__ = self.signature.replace(parameters=[self_parameter, *self.signature.parameters.values()])

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.__name__ = name

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        """``Class.crud_x(instance, ...)``, as with a plain method."""
        return self.__get__(obj, type(obj))(*args, **kwargs)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> CrudMethod[P, T]: ...

    @overload
    def __get__(self, obj: AsyncCrudMixin, owner: type | None = None) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __get__(self, obj: CrudMixin, owner: type | None = None) -> Callable[P, T]: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        bound = obj._bind_crud(self)
        bound.__name__ = bound.__qualname__ = self.name
        bound.__doc__ = self.__doc__
        bound.__signature__ = self.signature
        return bound

    def call_arguments(self, *args: Any, **kwargs: Any) -> tuple[str, list[Any], dict[str, Any]]:
        """The crud function's full name, its argument list and the call options (mode, timeout, ...)."""
        function, crud_args, options = self.arguments(*args, **kwargs)
        return "crud." + function, list(crud_args), options

    def result(self, function: str, data: list[Any]) -> T:
        if not data:
            raise DatabaseError(0, f"{function} returned nothing; is the crud module loaded?")
        return self.unwrap(data)


def crud_method(unwrap: Callable[[list[Any]], T]) -> Callable[[Callable[P, CrudArgs]], CrudMethod[P, T]]:
    """Declare a ``crud_*`` method from its arguments function and its result kind."""
    def declare(arguments: Callable[P, CrudArgs]) -> CrudMethod[P, T]:
        return CrudMethod(unwrap, arguments)
    return declare


def _with_hint(error: NoSuchProcedureError | AccessDeniedError) -> DatabaseError:
    """The server's refusal with crud's hint (missing router or grants), as crud's own clients say it."""
    return type(error)(error.code, error.message + _GRANTS_HINT, error.extra_info)


class CrudMethods:
    """The crud calls of the compatible API, declared once (``crud_iterate`` is CrudMixin's).

    Each declaration returns (crud function, its arguments, call options such as mode and timeout).
    """

    @crud_method(_written)
    def crud_insert(space_name: str, values: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "insert", (space_name, values, opts or {}), kwargs

    @crud_method(_written)
    def crud_insert_object(space_name: str, values: dict[str, Any], opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "insert_object", (space_name, values, opts or {}), kwargs

    @crud_method(_many)
    def crud_insert_many(space_name: str, values: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "insert_many", (space_name, values, opts or {}), kwargs

    @crud_method(_many)
    def crud_insert_object_many(space_name: str, values: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "insert_object_many", (space_name, values, opts or {}), kwargs

    @crud_method(_single)
    def crud_get(space_name: str, key: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "get", (space_name, key, opts or {}), kwargs

    @crud_method(_written)
    def crud_update(space_name: str, key: Any, operations: Any = None, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "update", (space_name, key, operations or [], opts or {}), kwargs

    @crud_method(_written)
    def crud_delete(space_name: str, key: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "delete", (space_name, key, opts or {}), kwargs

    @crud_method(_written)
    def crud_replace(space_name: str, values: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "replace", (space_name, values, opts or {}), kwargs

    @crud_method(_written)
    def crud_replace_object(space_name: str, values: dict[str, Any], opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "replace_object", (space_name, values, opts or {}), kwargs

    @crud_method(_many)
    def crud_replace_many(space_name: str, values: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "replace_many", (space_name, values, opts or {}), kwargs

    @crud_method(_many)
    def crud_replace_object_many(space_name: str, values: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "replace_object_many", (space_name, values, opts or {}), kwargs

    @crud_method(_written)
    def crud_upsert(space_name: str, values: Any, operations: Any = None, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "upsert", (space_name, values, operations or [], opts or {}), kwargs

    @crud_method(_written)
    def crud_upsert_object(space_name: str, values: dict[str, Any], operations: Any = None,
                           opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "upsert_object", (space_name, values, operations or [], opts or {}), kwargs

    @crud_method(_many)
    def crud_upsert_many(space_name: str, values_operation: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "upsert_many", (space_name, values_operation, opts or {}), kwargs

    @crud_method(_many)
    def crud_upsert_object_many(space_name: str, values_operation: Any, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "upsert_object_many", (space_name, values_operation, opts or {}), kwargs

    @crud_method(_single)
    def crud_select(space_name: str, conditions: Any = None, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "select", (space_name, conditions or [], opts or {}), kwargs

    @crud_method(_single)
    def crud_min(space_name: str, index_name: Any = None, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "min", (space_name, index_name, opts or {}), kwargs

    @crud_method(_single)
    def crud_max(space_name: str, index_name: Any = None, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "max", (space_name, index_name, opts or {}), kwargs

    @crud_method(_flag)
    def crud_truncate(space_name: str, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "truncate", (space_name, opts or {}), kwargs

    @crud_method(_count)
    def crud_len(space_name: str, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "len", (space_name, opts or {}), kwargs

    @crud_method(_count)
    def crud_count(space_name: str, conditions: Any = None, opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "count", (space_name, conditions or [], opts or {}), kwargs

    @crud_method(_map)
    def crud_storage_info(opts: Opts = None, **kwargs: Any) -> CrudArgs:
        return "storage_info", (opts or {},), kwargs

    @crud_method(_stats)
    def crud_stats(space_name: str | None = None, **kwargs: Any) -> CrudArgs:
        return "stats", (space_name,) if space_name is not None else (), kwargs

    @crud_method(_rows)
    def crud_unflatten_rows(rows: list[Any], metadata: list[dict[str, Any]], **kwargs: Any) -> CrudArgs:
        return "unflatten_rows", (rows, metadata), kwargs


class CrudMixin(CrudMethods):
    """The ``crud_*`` methods as plain methods over ``self._crud_call``."""

    def _crud_call(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        raise NotImplementedError  # pragma: no cover - provided by the class using the mixin

    def _bind_crud(self, method: CrudMethod[P, T]) -> Callable[P, T]:
        def crud(*args: P.args, **kwargs: P.kwargs) -> T:
            function, crud_args, options = method.call_arguments(*args, **kwargs)
            try:
                data = self._crud_call(function, crud_args, options)
            except (NoSuchProcedureError, AccessDeniedError) as exc:
                raise _with_hint(exc) from exc
            return method.result(function, data)
        return crud

    def crud_iterate(self, space_name: str, conditions: Any = None, *, batch_size: int = 1000,
                     opts: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[Any]:
        """Yield the rows of a crud select page by page (``first``/``after`` paging, see streaming.py)."""
        return iterate_crud(self.crud_select, space_name, conditions, batch_size=batch_size, opts=opts, kwargs=kwargs)


class AsyncCrudMixin(CrudMethods):
    """The ``crud_*`` methods as coroutine methods over ``await self._acrud_call``."""

    async def _acrud_call(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        raise NotImplementedError  # pragma: no cover - provided by the class using the mixin

    def crud_iterate(self, space_name: str, conditions: Any = None, *, batch_size: int = 1000,
                     opts: dict[str, Any] | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        """``async for row in x.crud_iterate(...)``: the rows of a crud select page by page (streaming.py)."""
        pager = crud_pager(space_name, conditions, batch_size=batch_size, opts=opts, kwargs=kwargs)
        return adrive(pager, self.crud_select)

    def _bind_crud(self, method: CrudMethod[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
        async def crud(*args: P.args, **kwargs: P.kwargs) -> T:
            function, crud_args, options = method.call_arguments(*args, **kwargs)
            try:
                data = await self._acrud_call(function, crud_args, options)
            except (NoSuchProcedureError, AccessDeniedError) as exc:
                raise _with_hint(exc) from exc
            return method.result(function, data)
        return crud
