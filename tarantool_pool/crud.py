"""The crud module's API: result types and ONE mixin of ``crud_*`` methods.

Rule: the mixin never imports a connection or a pool; every method is a
one-liner over ``self._crud_call(function, args, kwargs)``, which the class
using it provides (a Connection calls directly; a pool routes by ``mode``,
default ``Mode.ANY`` as in the compatible API).  How a reply is unwrapped is
decided by a small table of result kinds, following crud's wire contract:
``DATA = [result, error]`` (``error`` absent for one-value functions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from .errors import (
    AccessDeniedError,
    CrudModuleError,
    CrudModuleManyError,
    DatabaseError,
    NoSuchProcedureError,
)
from .streaming import iterate_crud

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


_T = TypeVar("_T")


class CrudMixin:
    """The 23 ``crud_*`` methods of the compatible API, written once."""

    def _crud_call(self, function: str, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        raise NotImplementedError  # pragma: no cover - provided by the class using the mixin

    def _crud(self, unwrap: Callable[[list[Any]], _T], function: str, kwargs: dict[str, Any], *args: Any) -> _T:
        try:
            data = self._crud_call("crud." + function, list(args), kwargs)
        except (NoSuchProcedureError, AccessDeniedError) as exc:
            raise type(exc)(exc.code, exc.message + _GRANTS_HINT, exc.extra_info) from exc
        if not data:
            raise DatabaseError(0, f"crud.{function} returned nothing; is the crud module loaded?")
        return unwrap(data)

    def crud_insert(self, space_name: str, values: Any, opts: dict[str, Any] | None = None,
                    **kwargs: Any) -> CrudResult | None:
        return self._crud(_written, "insert", kwargs, space_name, values, opts or {})

    def crud_insert_object(self, space_name: str, values: dict[str, Any], opts: dict[str, Any] | None = None,
                           **kwargs: Any) -> CrudResult | None:
        return self._crud(_written, "insert_object", kwargs, space_name, values, opts or {})

    def crud_insert_many(self, space_name: str, values: Any, opts: dict[str, Any] | None = None,
                         **kwargs: Any) -> CrudResult | None:
        return self._crud(_many, "insert_many", kwargs, space_name, values, opts or {})

    def crud_insert_object_many(self, space_name: str, values: Any, opts: dict[str, Any] | None = None,
                                **kwargs: Any) -> CrudResult | None:
        return self._crud(_many, "insert_object_many", kwargs, space_name, values, opts or {})

    def crud_get(self, space_name: str, key: Any, opts: dict[str, Any] | None = None, **kwargs: Any) -> CrudResult:
        return self._crud(_single, "get", kwargs, space_name, key, opts or {})

    def crud_update(self, space_name: str, key: Any, operations: Any = None, opts: dict[str, Any] | None = None,
                    **kwargs: Any) -> CrudResult | None:
        return self._crud(_written, "update", kwargs, space_name, key, operations or [], opts or {})

    def crud_delete(self, space_name: str, key: Any, opts: dict[str, Any] | None = None,
                    **kwargs: Any) -> CrudResult | None:
        return self._crud(_written, "delete", kwargs, space_name, key, opts or {})

    def crud_replace(self, space_name: str, values: Any, opts: dict[str, Any] | None = None,
                     **kwargs: Any) -> CrudResult | None:
        return self._crud(_written, "replace", kwargs, space_name, values, opts or {})

    def crud_replace_object(self, space_name: str, values: dict[str, Any], opts: dict[str, Any] | None = None,
                            **kwargs: Any) -> CrudResult | None:
        return self._crud(_written, "replace_object", kwargs, space_name, values, opts or {})

    def crud_replace_many(self, space_name: str, values: Any, opts: dict[str, Any] | None = None,
                          **kwargs: Any) -> CrudResult | None:
        return self._crud(_many, "replace_many", kwargs, space_name, values, opts or {})

    def crud_replace_object_many(self, space_name: str, values: Any, opts: dict[str, Any] | None = None,
                                 **kwargs: Any) -> CrudResult | None:
        return self._crud(_many, "replace_object_many", kwargs, space_name, values, opts or {})

    def crud_upsert(self, space_name: str, values: Any, operations: Any = None, opts: dict[str, Any] | None = None,
                    **kwargs: Any) -> CrudResult | None:
        return self._crud(_written, "upsert", kwargs, space_name, values, operations or [], opts or {})

    def crud_upsert_object(self, space_name: str, values: dict[str, Any], operations: Any = None,
                           opts: dict[str, Any] | None = None, **kwargs: Any) -> CrudResult | None:
        return self._crud(_written, "upsert_object", kwargs, space_name, values, operations or [], opts or {})

    def crud_upsert_many(self, space_name: str, values_operation: Any, opts: dict[str, Any] | None = None,
                         **kwargs: Any) -> CrudResult | None:
        return self._crud(_many, "upsert_many", kwargs, space_name, values_operation, opts or {})

    def crud_upsert_object_many(self, space_name: str, values_operation: Any, opts: dict[str, Any] | None = None,
                                **kwargs: Any) -> CrudResult | None:
        return self._crud(_many, "upsert_object_many", kwargs, space_name, values_operation, opts or {})

    def crud_select(self, space_name: str, conditions: Any = None, opts: dict[str, Any] | None = None,
                    **kwargs: Any) -> CrudResult:
        return self._crud(_single, "select", kwargs, space_name, conditions or [], opts or {})

    def crud_iterate(self, space_name: str, conditions: Any = None, *, batch_size: int = 1000,
                     opts: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[Any]:
        """Yield the rows of a crud select page by page (``first``/``after`` paging, see streaming.py)."""
        return iterate_crud(self.crud_select, space_name, conditions, batch_size=batch_size, opts=opts, kwargs=kwargs)

    def crud_min(self, space_name: str, index_name: Any = None, opts: dict[str, Any] | None = None,
                 **kwargs: Any) -> CrudResult:
        return self._crud(_single, "min", kwargs, space_name, index_name, opts or {})

    def crud_max(self, space_name: str, index_name: Any = None, opts: dict[str, Any] | None = None,
                 **kwargs: Any) -> CrudResult:
        return self._crud(_single, "max", kwargs, space_name, index_name, opts or {})

    def crud_truncate(self, space_name: str, opts: dict[str, Any] | None = None, **kwargs: Any) -> bool:
        return bool(self._crud(_plain, "truncate", kwargs, space_name, opts or {}))

    def crud_len(self, space_name: str, opts: dict[str, Any] | None = None, **kwargs: Any) -> int:
        return int(self._crud(_plain, "len", kwargs, space_name, opts or {}))

    def crud_count(self, space_name: str, conditions: Any = None, opts: dict[str, Any] | None = None,
                   **kwargs: Any) -> int:
        return int(self._crud(_plain, "count", kwargs, space_name, conditions or [], opts or {}))

    def crud_storage_info(self, opts: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        return self._crud(_plain, "storage_info", kwargs, opts or {})

    def crud_stats(self, space_name: str | None = None, **kwargs: Any) -> CrudResult:
        # An empty Lua table (stats off) arrives as an empty array: treat it as an empty map.
        args = (space_name,) if space_name is not None else ()
        return self._crud(lambda data: CrudResult(data[0] or {}), "stats", kwargs, *args)

    def crud_unflatten_rows(self, rows: list[Any], metadata: list[dict[str, Any]],
                            **kwargs: Any) -> list[dict[str, Any]]:
        return self._crud(_plain, "unflatten_rows", kwargs, rows, metadata)
