"""The schema registry: which tables sync, their columns, types, key and owner.

Only what is registered here is ever touched, and every identifier that reaches SQL text
comes from here, never from a request. Values are checked against the column types before
anything is written, so a bad value rejects its own change instead of failing the batch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Always used with fullmatch: `$` would also match before a final newline.
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MISSING: Any = object()
MAX_JSON_DEPTH = 64


class InvalidValue(ValueError):
    """A value that does not fit its column; the message names the problem, never the value."""


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 with a zone, or integer epoch milliseconds, to an aware UTC datetime."""
    if isinstance(value, bool):
        raise InvalidValue("expected an ISO-8601 timestamp with zone or epoch milliseconds")
    if isinstance(value, int):
        try:
            return EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise InvalidValue("epoch milliseconds out of range") from None
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidValue("expected an ISO-8601 timestamp with zone or epoch milliseconds")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidValue("not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise InvalidValue("timestamp has no zone (add Z or an offset)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidValue("timestamp out of range") from None


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a Z, the same shape the pull sends."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def storable(text: str) -> bool:
    """Postgres text holds neither NUL nor a lone UTF-16 surrogate (JavaScript sends one
    when it cuts a string in the middle of an emoji; JSON's \\ud83d escape decodes to it)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise InvalidValue("JSON value nested too deeply")
    if isinstance(value, str):
        if not storable(value):
            raise InvalidValue("JSON strings cannot hold NUL or a lone surrogate")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue("JSON numbers must be finite")
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, depth + 1)
            _check_json(item, depth + 1)


def _integer(bits: int):
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue("expected an integer")
        if not low <= value <= high:
            raise InvalidValue(f"integer out of range for a {bits}-bit column")
        return value

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue("expected a string")
    if not storable(value):
        raise InvalidValue("text cannot hold NUL or a lone surrogate (a cut UTF-16 pair)")
    return value


def _uuid(value: Any) -> str:
    if not isinstance(value, str) or not UUID.fullmatch(value):
        raise InvalidValue("expected a UUID string")
    return value.lower()


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue("expected true or false")
    return value


def _double(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue("expected a number")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidValue("number out of range") from None
    if not math.isfinite(number):
        raise InvalidValue("expected a finite number")
    return number


def _jsonb(value: Any) -> Any:
    _check_json(value)
    return value


def _timestamptz(value: Any) -> str:
    return format_timestamp(parse_timestamp(value))


# SQL type -> check-and-normalise function. The result is what goes into the JSON handed
# to Postgres (jsonb_to_recordset), so it must be JSON-serialisable.
TYPES = {
    "uuid": _uuid,
    "text": _text,
    "boolean": _boolean,
    "smallint": _integer(16),
    "integer": _integer(32),
    "bigint": _integer(64),
    "double precision": _double,
    "real": _double,
    "jsonb": _jsonb,
    "timestamptz": _timestamptz,
}
KEY_TYPES = ("uuid", "text", "integer", "bigint")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    default: Any = MISSING  # the value an upsert gets when the row omits the column

    def check(self, value: Any) -> Any:
        if value is None:
            if not self.nullable:
                raise InvalidValue(f"column {self.name} cannot be null")
            return None
        try:
            return TYPES[self.type](value)
        except InvalidValue as error:
            raise InvalidValue(f"column {self.name}: {error}") from None


@dataclass(frozen=True)
class Table:
    """A synced table. `references` maps its foreign-key columns to the synced tables they
    point at: those apply first, and a reference to another user's row is refused."""

    name: str
    columns: tuple[Column, ...]
    primary_key: str
    owner: str = "user_id"
    references: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)
    names: frozenset[str] = field(init=False, repr=False, compare=False)
    # The columns a row's values fill: all but the key, the owner and the clock, which
    # the push sets itself.
    data_columns: tuple[Column, ...] = field(init=False, repr=False, compare=False)
    # Data columns a new row cannot do without (NOT NULL, no default).
    required: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})
        object.__setattr__(self, "names", frozenset(self.by_name))
        special = (self.primary_key, self.owner, "updated_at")
        object.__setattr__(
            self, "data_columns", tuple(c for c in self.columns if c.name not in special)
        )
        object.__setattr__(
            self,
            "required",
            tuple(c.name for c in self.data_columns if not c.nullable and c.default is MISSING),
        )
        for name in (self.name, *self.by_name):
            if not IDENTIFIER.fullmatch(name):
                raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")
        if len(self.by_name) != len(self.columns):
            raise ValueError(f"table {self.name}: duplicate column")
        for needed, types in (
            (self.primary_key, KEY_TYPES),
            (self.owner, ("uuid",)),
            ("updated_at", ("timestamptz",)),
        ):
            column = self.by_name.get(needed)
            if column is None or column.type not in types:
                raise ValueError(f"table {self.name}: needs column {needed} of type {types}")
        for column in self.columns:
            if column.type not in TYPES:
                raise ValueError(f"table {self.name}: type {column.type!r} is not supported")
        if self.by_name["updated_at"].nullable or self.by_name[self.owner].nullable:
            raise ValueError(f"table {self.name}: owner and updated_at must be NOT NULL")

    @property
    def key_column(self) -> Column:
        return self.by_name[self.primary_key]

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.references.values())))


class Registry:
    """The synced tables, kept parents-before-children so a batch applies in any order."""

    def __init__(self, tables: list[Table]) -> None:
        named = {t.name: t for t in tables}
        if len(named) != len(tables):
            raise ValueError("a table is registered twice")
        ordered: list[Table] = []
        visiting: set[str] = set()

        def visit(table: Table) -> None:
            if table in ordered:
                return
            if table.name in visiting:
                raise ValueError(f"foreign keys form a cycle through {table.name}")
            visiting.add(table.name)
            for column, parent in table.references.items():
                if parent not in named:
                    raise ValueError(f"{table.name}.{column} refers to unknown table {parent}")
                if table.by_name.get(column) is None or (
                    table.by_name[column].type != named[parent].key_column.type
                ):
                    raise ValueError(
                        f"{table.name}.{column} must be a column typed as {parent}'s key"
                    )
                visit(named[parent])
            visiting.discard(table.name)
            ordered.append(table)

        for table in tables:
            visit(table)
        self.tables: tuple[Table, ...] = tuple(ordered)
        self.by_name = {t.name: t for t in self.tables}

    def get(self, name: str) -> Table | None:
        return self.by_name.get(name)
