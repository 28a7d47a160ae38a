"""Streaming reads: iterate a space (or a crud select) page by page.

Rules:

- Key-based paging, never OFFSET: each next page starts after the last
  tuple's index key, so the cost of a page does not grow with its position
  and only the current page is held in memory.
- A unique index pages with a strict iterator (GT ascending, LT descending)
  from the last key.  A non-unique index cannot be positioned past one
  tuple of a group of equal keys (Tarantool before 2.11 rejects a key longer
  than the index), so the next page starts *at* the last key (GE / LE) and
  skips the tuples of that trailing group already yielded, recognised by
  their primary key.  The skip set holds one group of equal keys only; a
  huge group costs memory and page size in proportion to its size.
- EQ / REQ with a partial key page within the equal prefix: later pages
  continue from the last key and stop at the first tuple whose key no longer
  starts with the given prefix (compared in Python, so string parts with a
  case-insensitive collation are compared exactly).  EQ / REQ with a full
  unique key is one request.
- Arguments are checked when ``iterate`` is called (ValueError); the index
  is looked up (``_vspace`` / ``_vindex``, two selects) when the first page
  is read, and an index that cannot be paged by key raises ValueError then.
- Each page is one request: through a pool every page is routed on its own
  (``mode``), so pages of one iteration may come from different replicas.
- The paging logic is sans-IO: a *pager* generator yields :class:`Fetch`
  (a request to make; the page is sent back into it) and :class:`Emit` (a
  row for the caller).  :func:`drive` runs a pager with a blocking select,
  :func:`adrive` with an awaitable one, so the sync and asyncio APIs share
  every rule above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, Iterator, Union

import msgpack

from .arguments import normalize_key
from .errors import SchemaError
from .schema import VINDEX_ID, VSPACE_ID, IndexInfo, Schema

SelectFn = Callable[..., Any]  # select(space, key, *, limit=, index=, iterator=) -> rows
CrudSelectFn = Callable[..., Any]  # crud_select(space, conditions, opts, **kwargs) -> result with .rows

ASCENDING = frozenset({"ALL", "EQ", "GE", "GT"})
DESCENDING = frozenset({"REQ", "LE", "LT"})
PAGEABLE_ITERATORS = ASCENDING | DESCENDING
_VSPACE_BY_NAME = 2
_VINDEX_BY_NAME = 2


@dataclass(frozen=True)
class Fetch:
    """Make this request (``function(*args, **kwargs)``) and send its rows back into the pager."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Emit:
    """Hand ``row`` to the caller."""

    row: Any


Pager = Generator[Union[Fetch, Emit], Any, None]


def drive(pager: Pager, function: Callable[..., Any]) -> Iterator[Any]:
    """Run ``pager`` with a blocking ``function`` (select or crud_select); yield its rows."""
    reply: Any = None
    while True:
        try:
            step = pager.send(reply)
        except StopIteration:
            return
        if isinstance(step, Fetch):
            reply = function(*step.args, **step.kwargs)
        else:
            reply = None
            yield step.row


async def adrive(pager: Pager, function: Callable[..., Awaitable[Any]]) -> AsyncIterator[Any]:
    """Run ``pager`` with an awaitable ``function``; yield its rows asynchronously."""
    reply: Any = None
    while True:
        try:
            step = pager.send(reply)
        except StopIteration:
            return
        if isinstance(step, Fetch):
            reply = await function(*step.args, **step.kwargs)
        else:
            reply = None
            yield step.row


def check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def check_iterator(iterator: Any) -> str:
    if not isinstance(iterator, str) or iterator.upper() not in PAGEABLE_ITERATORS:
        raise ValueError(f"iterate() pages with iterator {', '.join(sorted(PAGEABLE_ITERATORS))}, "
                         f"got {iterator!r}")
    return iterator.upper()


def iterate_select(select: SelectFn, space: str | int, key: Any = None, *, index: str | int = 0,
                   iterator: str = "GE", batch_size: int = 1000) -> Iterator[Any]:
    """Check the arguments now; return a generator yielding the tuples page by page."""
    return drive(select_pager(space, key, index=index, iterator=iterator, batch_size=batch_size), select)


def select_pager(space: str | int, key: Any = None, *, index: str | int = 0, iterator: str = "GE",
                 batch_size: int = 1000) -> Pager:
    """Check the arguments now; return the pager of a select iteration (see :func:`drive`)."""
    if not isinstance(space, (str, int)) or isinstance(space, bool):
        raise ValueError(f"space must be a name or a number, got {space!r}")
    if not isinstance(index, (str, int)) or isinstance(index, bool):
        raise ValueError(f"index must be a name or a number, got {index!r}")
    key_list = normalize_key(key, allow_none=True)
    name = check_iterator(iterator)
    size = check_batch_size(batch_size)
    return _select_pages(space, key_list, index, name, size)


def _select_pages(space: str | int, key: list[Any], index: str | int, iterator: str, batch_size: int) -> Pager:
    info, primary, unique = yield from _lookup_index(space, index)
    parts = [field for field, _ in info.parts]
    pk_parts = [field for field, _ in primary.parts]
    if len(key) > len(parts):
        raise ValueError(f"key has {len(key)} parts, index {info.name!r} has {len(parts)}")
    if info.type.upper() == "HASH" and not (iterator in ("ALL", "GT") or (iterator == "EQ" and unique)):
        raise ValueError(f"a HASH index pages with ALL or GT only, got {iterator!r}")
    if iterator in ("EQ", "REQ") and unique and len(key) == len(parts):
        rows = yield _select(space, key, limit=1, index=info.index_id, iterator=iterator)  # one tuple at most
        for row in rows:
            yield Emit(row)
        return
    prefix = key if iterator in ("EQ", "REQ") else None
    descending = iterator in DESCENDING
    next_iterator = ("LT" if descending else "GT") if unique else ("LE" if descending else "GE")

    request_key, request_iterator = key, iterator
    group_key: list[Any] | None = None
    seen: set[bytes] = set()  # primary keys already yielded whose index key equals group_key (non-unique)
    while True:
        limit = batch_size + len(seen)
        rows = yield _select(space, request_key, limit=limit, index=info.index_id, iterator=request_iterator)
        count = len(rows)
        last_key: list[Any] | None = None
        for row in rows:
            row_key = _key_of(row, parts)
            if prefix is not None and row_key[:len(prefix)] != prefix:
                return
            last_key = row_key
            if not unique:
                pk = _packed(_key_of(row, pk_parts))
                if row_key == group_key:
                    if pk in seen:
                        continue
                    seen.add(pk)
                else:
                    group_key, seen = row_key, {pk}
            yield Emit(row)
        del rows  # hold one page at a time
        if count < limit or last_key is None:
            return
        request_key, request_iterator = last_key, next_iterator


def _select(space: str | int, key: Any, **kwargs: Any) -> Fetch:
    return Fetch((space, key), kwargs)


def _key_of(row: Any, fields: list[int]) -> list[Any]:
    return [row[field] if field < len(row) else None for field in fields]


def _packed(values: list[Any]) -> bytes:
    """A hashable identity of a primary key (its parts may be unhashable values)."""
    return msgpack.packb(values, use_bin_type=True, default=repr)  # type: ignore[no-any-return]


def _lookup_index(space: str | int, index: str | int) -> Generator[Fetch, Any, tuple[IndexInfo, IndexInfo, bool]]:
    """The index to page, the primary index, and whether keys of the index identify one tuple."""
    by = 0 if isinstance(space, int) else _VSPACE_BY_NAME
    space_rows = list((yield _select(VSPACE_ID, [space], limit=1, index=by, iterator="EQ")))
    if not space_rows:
        raise SchemaError(0, f"There's no space {space!r}")
    space_id = space_rows[0][0]
    index_rows = list((yield _select(VINDEX_ID, [space_id], index=0, iterator="EQ")))
    indexes = Schema.from_rows(space_rows, index_rows, 0).space(space_id).indexes
    info, primary = indexes.get(index), indexes.get(0)
    if info is None or primary is None:
        raise SchemaError(0, f"There's no index {index!r} in space {space!r}")
    if info.type.upper() not in ("TREE", "HASH"):
        raise ValueError(f"index {info.name!r} is {info.type}: only TREE and HASH indexes can be paged by key")
    raw = next(row for row in index_rows if row[1] == info.index_id)
    raw_parts = raw[5] if len(raw) > 5 and isinstance(raw[5], (list, tuple)) else []
    for part in raw_parts:
        if isinstance(part, dict) and _option(part, "path"):
            raise ValueError(f"index {info.name!r} has a JSON path part: it cannot be paged by key")
    # A unique index still holds many tuples whose nullable key part is null: page it as non-unique.
    nullable = any(isinstance(part, dict) and _option(part, "is_nullable") for part in raw_parts)
    return info, primary, info.unique and not nullable


def _option(part: dict[Any, Any], name: str) -> Any:
    return part.get(name, part.get(name.encode()))


def iterate_crud(crud_select: CrudSelectFn, space: str, conditions: Any = None, *, batch_size: int = 1000,
                 opts: dict[str, Any] | None = None, kwargs: dict[str, Any] | None = None) -> Iterator[Any]:
    """Check the arguments now; return a generator of crud rows, ``first=batch_size`` per page."""
    return drive(crud_pager(space, conditions, batch_size=batch_size, opts=opts, kwargs=kwargs), crud_select)


def crud_pager(space: str, conditions: Any = None, *, batch_size: int = 1000, opts: dict[str, Any] | None = None,
               kwargs: dict[str, Any] | None = None) -> Pager:
    """Check the arguments now; return the pager of a crud select iteration (see :func:`drive`)."""
    size = check_batch_size(batch_size)
    if opts is not None and not isinstance(opts, dict):
        raise ValueError(f"opts must be a dict, got {type(opts).__name__}")
    page_opts = dict(opts or {})
    if "first" in page_opts:
        raise ValueError("crud_iterate() sets 'first' itself: pass batch_size instead")
    return _crud_pages(space, conditions, size, page_opts, dict(kwargs or {}))


def _crud_pages(space: str, conditions: Any, batch_size: int, opts: dict[str, Any], kwargs: dict[str, Any]) -> Pager:
    after = opts.pop("after", None)  # a caller's 'after' is where the first page starts
    while True:
        request = dict(opts, first=batch_size)
        if after is not None:
            request["after"] = after
        result = yield Fetch((space, conditions, request), kwargs)
        rows = list(getattr(result, "rows", None) or [])
        for row in rows:
            yield Emit(row)
        if len(rows) < batch_size:
            return
        after = rows[-1]
