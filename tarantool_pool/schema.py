"""The server's schema as a pure value: names of spaces, indexes and fields to ids.

Rule: built once from the rows of ``_vspace`` and ``_vindex`` (and the schema
version they were read at), then never changed; a reload builds a new Schema.
Lookups of unknown names raise ``SchemaError`` naming what was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import SchemaError

VSPACE_ID = 281
VINDEX_ID = 289


@dataclass(frozen=True)
class IndexInfo:
    space_id: int
    index_id: int
    name: str
    type: str
    unique: bool
    parts: tuple[tuple[int, str], ...]  # (0-based field number, type)


@dataclass(frozen=True)
class SpaceInfo:
    space_id: int
    name: str
    engine: str
    format: tuple[dict[str, Any], ...]
    field_numbers: dict[str, int] = field(default_factory=dict)
    indexes: dict[Any, IndexInfo] = field(default_factory=dict)  # by name and by id


class Schema:
    """Spaces by name and id, each with its indexes and field names."""

    def __init__(self, spaces: Sequence[SpaceInfo], version: int) -> None:
        self.version = version
        self._by_name = {space.name: space for space in spaces}
        self._by_id = {space.space_id: space for space in spaces}

    @classmethod
    def from_rows(cls, space_rows: Sequence[Sequence[Any]], index_rows: Sequence[Sequence[Any]],
                  version: int) -> Schema:
        indexes: dict[int, dict[Any, IndexInfo]] = {}
        for row in index_rows:
            index = _parse_index_row(row)
            by_key = indexes.setdefault(index.space_id, {})
            by_key[index.index_id] = index
            by_key[index.name] = index
        spaces = []
        for row in space_rows:
            space_id, name, engine = row[0], _text(row[2]), _text(row[3])
            fmt = row[6] if len(row) > 6 and isinstance(row[6], (list, tuple)) else []
            fmt = [_text_keys(entry) for entry in fmt if isinstance(entry, dict)]
            numbers = {_text(entry.get("name")): n for n, entry in enumerate(fmt) if entry.get("name")}
            spaces.append(SpaceInfo(space_id, name, engine, tuple(fmt), numbers, indexes.get(space_id, {})))
        return cls(spaces, version)

    def space(self, space: str | int) -> SpaceInfo:
        """A space by name or id; an id the schema does not know still works (view rights)."""
        if isinstance(space, int):
            found = self._by_id.get(space)
            return found if found is not None else SpaceInfo(space, str(space), "", ())
        found = self._by_name.get(space)
        if found is None:
            raise SchemaError(0, f"There's no space named {space!r}")
        return found

    def space_id(self, space: str | int) -> int:
        return space if isinstance(space, int) else self.space(space).space_id

    def index_id(self, space: str | int, index: str | int) -> int:
        if isinstance(index, int):
            return index
        info = self.space(space)
        found = info.indexes.get(index)
        if found is None:
            raise SchemaError(0, f"There's no index named {index!r} in space {info.name!r}")
        return found.index_id

    def field_number(self, space: str | int, field_name: str) -> int:
        """0-based field number of a named field, from the space's format."""
        info = self.space(space)
        number = info.field_numbers.get(field_name)
        if number is None:
            known = ", ".join(info.field_numbers) or "the space has no format"
            raise SchemaError(0, f"There's no field named {field_name!r} in space {info.name!r} ({known})")
        return number

    def __contains__(self, space: object) -> bool:
        return space in self._by_name or space in self._by_id


def _parse_index_row(row: Sequence[Any]) -> IndexInfo:
    space_id, index_id, name, index_type = row[0], row[1], _text(row[2]), _text(row[3])
    if isinstance(row[4], int):  # the 1.6 layout: unique flag, part count, then flat parts
        unique = bool(row[4])
        flat = row[6:6 + 2 * row[5]]
        parts = tuple((flat[i], _text(flat[i + 1])) for i in range(0, len(flat), 2))
    else:
        opts = _text_keys(row[4]) if isinstance(row[4], dict) else {}
        unique = bool(opts.get("unique", False))
        parts = tuple(_parse_part(part) for part in row[5])
    return IndexInfo(space_id, index_id, name, index_type, unique, parts)


def _parse_part(part: Any) -> tuple[int, str]:
    if isinstance(part, dict):
        part = _text_keys(part)
        return part.get("field", 0), _text(part.get("type", ""))
    return part[0], _text(part[1])


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _text_keys(mapping: dict[Any, Any]) -> dict[Any, Any]:
    """A map read with ``encoding=None`` has bytes keys: make them text like the others."""
    return {_text(key) if isinstance(key, bytes) else key: value for key, value in mapping.items()}
