"""Requests of the compatible API, built once for the sync and the asyncio paths.

Rule: pure functions from a method's arguments to a :class:`Request`, with no
socket, thread or event loop.  Arguments are checked here, so a bad argument
fails before anything is sent, the same way on both paths.  A request that
names spaces, indexes or fields is built against a schema (``build(schema)``);
whoever submits it (connection.py, aio/) loads the schema when
``uses_names`` and re-sends once after "wrong schema version".
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from . import protocol as p
from .arguments import (
    arguments,
    check_count,
    index_id,
    names_used,
    normalize_iterator,
    normalize_key,
    normalize_ops,
    normalize_tuple,
    ops_use_names,
    resolve_ops,
    space_id,
)
from .schema import Schema


class Request(NamedTuple):
    """One IPROTO request: its code and how to build its body (with the schema when ``uses_names``)."""

    code: int
    build: Callable[[Schema | None], dict[int, Any] | None]
    uses_names: bool = False


def fixed(code: int, body: dict[int, Any] | None) -> Request:
    """A request whose body needs no schema."""
    return Request(code, lambda _schema: body)


def ping() -> Request:
    return fixed(p.PING, None)


def select(space_name: str | int, key: Any = None, offset: int = 0, limit: int = p.SELECT_NO_LIMIT,
           index: str | int = 0, iterator: Any = None) -> Request:
    key_list = normalize_key(key, allow_none=True)
    iterator_code = normalize_iterator(iterator, key_list)
    check_count("offset", offset)
    check_count("limit", limit)
    return Request(p.SELECT, lambda schema: p.select_body(space_id(schema, space_name),
                                                          index_id(schema, space_name, index),
                                                          key_list, offset, limit, iterator_code),
                   names_used(space_name, index))


def store(code: int, space_name: str | int, values: Sequence[Any]) -> Request:
    """INSERT or REPLACE."""
    tuple_value = normalize_tuple(values)
    return Request(code, lambda schema: p.insert_body(space_id(schema, space_name), tuple_value),
                   names_used(space_name))


def insert(space_name: str | int, values: Sequence[Any]) -> Request:
    return store(p.INSERT, space_name, values)


def replace(space_name: str | int, values: Sequence[Any]) -> Request:
    return store(p.REPLACE, space_name, values)


def update(space_name: str | int, key: Any, op_list: Sequence[Any], index: str | int = 0) -> Request:
    key_list = normalize_key(key)
    ops = normalize_ops(op_list)
    return Request(p.UPDATE, lambda schema: p.update_body(space_id(schema, space_name),
                                                          index_id(schema, space_name, index), key_list,
                                                          resolve_ops(schema, space_name, ops)),
                   names_used(space_name, index) or ops_use_names(ops))


def upsert(space_name: str | int, tuple_value: Sequence[Any], op_list: Sequence[Any]) -> Request:
    values = normalize_tuple(tuple_value)
    ops = normalize_ops(op_list)
    return Request(p.UPSERT, lambda schema: p.upsert_body(space_id(schema, space_name), values,
                                                          resolve_ops(schema, space_name, ops)),
                   names_used(space_name) or ops_use_names(ops))


def delete(space_name: str | int, key: Any, index: str | int = 0) -> Request:
    key_list = normalize_key(key)
    return Request(p.DELETE, lambda schema: p.delete_body(space_id(schema, space_name),
                                                          index_id(schema, space_name, index), key_list),
                   names_used(space_name, index))


def call(func_name: str, args: tuple[Any, ...], call_16: bool = False) -> Request:
    """CALL; like tarantool-python, one list/tuple argument is the argument list."""
    if not isinstance(func_name, str) or not func_name:
        raise ValueError(f"func_name must be a non-empty string, got {func_name!r}")
    return fixed(p.CALL_16 if call_16 else p.CALL, p.call_body(func_name, arguments(args)))


def eval(expr: str, args: tuple[Any, ...]) -> Request:
    if not isinstance(expr, str):
        raise ValueError(f"expr must be a string of Lua code, got {type(expr).__name__}")
    return fixed(p.EVAL, p.eval_body(expr, arguments(args)))


def execute(query: str | int, params: Any = None) -> Request:
    """SQL: ``params`` is a list (``?`` placeholders) or a dict (``:name`` placeholders)."""
    if not isinstance(query, (str, int)):
        raise ValueError(f"query must be SQL text or a prepared statement id, got {type(query).__name__}")
    return fixed(p.EXECUTE, p.execute_body(query, params))


def prepare(query: str) -> Request:
    return fixed(p.PREPARE, p.prepare_body(query))


def unprepare(stmt_id: int) -> Request:
    return fixed(p.PREPARE, p.prepare_body(int(stmt_id)))
