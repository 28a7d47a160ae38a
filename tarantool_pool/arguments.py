"""Request arguments: normalised and checked before anything is encoded or sent.

Rule: pure functions; every error is a ValueError (or SchemaError from the
schema) that names the bad argument and what was expected.
"""

from __future__ import annotations

from typing import Any

from . import protocol as p
from .schema import Schema


def normalize_key(key: Any, allow_none: bool = False) -> list[Any]:
    if key is None:
        if allow_none:
            return []
        raise ValueError("key is required (a value or a list of key parts)")
    if isinstance(key, (list, tuple)):
        return list(key)
    if isinstance(key, dict):
        raise ValueError(f"key must be a value or a list of key parts, got a dict: {key!r:.80}")
    return [key]


def normalize_tuple(values: Any) -> list[Any]:
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"a tuple must be a list or tuple of field values, got {type(values).__name__}")
    return list(values)


def normalize_ops(op_list: Any) -> list[list[Any]]:
    if not isinstance(op_list, (list, tuple)):
        raise ValueError(f"op_list must be a list of operations, got {type(op_list).__name__}")
    ops = []
    for op in op_list:
        if not isinstance(op, (list, tuple)) or len(op) < 3 or not isinstance(op[0], str):
            raise ValueError(f"each update operation is (operator, field, value...), got {op!r:.80}")
        ops.append(list(op))
    return ops


def normalize_iterator(iterator: Any, key: list[Any]) -> int:
    if iterator is None:
        return p.ITERATORS["EQ"] if key else p.ITERATORS["ALL"]
    if isinstance(iterator, str):
        code = p.ITERATORS.get(iterator.upper())
        if code is None:
            raise ValueError(f"unknown iterator {iterator!r}; known: {', '.join(p.ITERATORS)}")
        return code
    if isinstance(iterator, int) and not isinstance(iterator, bool) and 0 <= iterator:
        return iterator
    raise ValueError(f"iterator must be a name like 'GE' or a non-negative number, got {iterator!r}")


def check_count(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def arguments(args: tuple[Any, ...]) -> list[Any]:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    return list(args)


def names_used(space: Any, index: Any = 0) -> bool:
    return isinstance(space, str) or isinstance(index, str)


def ops_use_names(ops: list[list[Any]]) -> bool:
    return any(isinstance(op[1], str) for op in ops)


def space_id(schema: Schema | None, space: str | int) -> int:
    if isinstance(space, int) and not isinstance(space, bool):
        return space
    if schema is None or not isinstance(space, str):
        raise ValueError(f"space must be a name or a number, got {space!r}")
    return schema.space_id(space)


def index_id(schema: Schema | None, space: str | int, index: str | int) -> int:
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    if schema is None or not isinstance(index, str):
        raise ValueError(f"index must be a name or a number, got {index!r}")
    return schema.index_id(space, index)


def resolve_ops(schema: Schema | None, space: str | int, ops: list[list[Any]]) -> list[list[Any]]:
    """Field names become 0-based numbers; JSON paths ('a.b', '[1]') go to the server as they are."""
    if schema is None:
        return ops
    resolved = []
    for op in ops:
        field = op[1]
        if isinstance(field, str) and not any(ch in field for ch in ".[]"):
            op = [op[0], schema.field_number(space, field), *op[2:]]
        resolved.append(op)
    return resolved
