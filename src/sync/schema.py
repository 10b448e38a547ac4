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


# The shape clients send (JavaScript's toISOString(), or the pull's own): UTC, "Z", and no
# fraction, milliseconds or microseconds. Hours stop at 23: Python 3.12+ reads "24:00" as
# the next day, which the text shortcut below must never echo.
_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{3}|\.\d{6})?Z")


def _canonical(value: Any) -> tuple[datetime, str] | None:
    """The fast path of the two functions below: a canonical timestamp, its moment and its
    normalised text, built from the text itself (fromisoformat still checks the calendar).
    None for anything else, which the slow path answers (or refuses) as it always has."""
    try:
        if _CANONICAL.fullmatch(value) is None:
            return None
        moment = datetime.fromisoformat(value)  # a "Z" moment is already UTC
    except (TypeError, ValueError):  # not a string; or no such day
        return None
    # The pattern leaves three lengths: no fraction (20), milliseconds (24), micro (27).
    size = len(value)
    if size == 27:
        return moment, value
    return moment, value[:-1] + ("000Z" if size == 24 else ".000000Z")


def timestamp_and_text(value: Any) -> tuple[datetime, str]:
    """parse_timestamp(value) and its format_timestamp(), with one parse."""
    fast = _canonical(value)
    if fast is not None:
        return fast
    moment = parse_timestamp(value)
    return moment, format_timestamp(moment)


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 with a zone, or integer epoch milliseconds, to an aware UTC datetime."""
    fast = _canonical(value)
    if fast is not None:
        return fast[0]
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
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


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
    return timestamp_and_text(value)[1]


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
VARIABLE_SIZE = ("uuid", "text", "jsonb", "timestamptz")  # strings or containers in JSON


def _plain_json(value: Any) -> bool:
    """A jsonb value that passes _check_json at a glance: a scalar, or a flat list or object
    of scalars (tags, small settings), with ASCII strings. Anything else is walked."""
    kind = type(value)
    if kind is list:
        for item in value:
            if type(item) is str:  # the common item: inline, spared a call
                if not item.isascii() or "\x00" in item:
                    return False
            elif not _plain_scalar(item):
                return False
        return True
    if kind is dict:
        return all(_plain_scalar(k) and _plain_scalar(v) for k, v in value.items())
    return _plain_scalar(value)


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return value.isascii() and "\x00" not in value
    if kind is float:
        return value - value == 0.0  # finite: inf - inf and nan - nan are nan
    return kind is int or kind is bool or value is None


def _fast_check(column: Column) -> Any:
    """Column.check for one column, with a shortcut taken only for plainly valid values of
    its type, which returns what Column.check would. Everything else — None, refusals with
    their messages, unusual but valid values — goes to Column.check itself."""
    slow = column.check
    kind = column.type
    nullable = column.nullable  # a null where it is allowed is answered at once
    if kind == "uuid":

        def check_uuid(value: Any) -> Any:
            if value is None and nullable:
                return None
            if type(value) is str and UUID.fullmatch(value):
                return value.lower()
            return slow(value)

        return check_uuid
    if kind == "text":

        def check_text(value: Any) -> Any:
            if value is None and nullable:
                return None
            if type(value) is str and value.isascii() and "\x00" not in value:
                return value
            return slow(value)

        return check_text
    if kind == "boolean":

        def check_boolean(value: Any) -> Any:
            if value is True or value is False or (value is None and nullable):
                return value
            return slow(value)

        return check_boolean
    if kind in ("double precision", "real"):

        def check_double(value: Any) -> Any:
            if value is None and nullable:
                return None
            if type(value) is float and value - value == 0.0:
                return value
            return slow(value)

        return check_double
    if kind in ("smallint", "integer", "bigint"):
        bits = {"smallint": 16, "integer": 32, "bigint": 64}[kind]
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

        def check_integer(value: Any) -> Any:
            if value is None and nullable:
                return None
            if type(value) is int and low <= value <= high:
                return value
            return slow(value)

        return check_integer
    if kind == "timestamptz":

        def check_timestamptz(value: Any) -> Any:
            if value is None and nullable:
                return None
            fast = _canonical(value)
            return fast[1] if fast is not None else slow(value)

        return check_timestamptz
    if kind == "jsonb":

        def check_jsonb(value: Any) -> Any:
            if value is None:
                return None if nullable else slow(value)
            return value if _plain_json(value) else slow(value)

        return check_jsonb
    return slow


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    default: Any = MISSING  # the value an upsert gets when the row omits the column
    # check(), chosen once for the column's type: what every value of a batch goes through.
    fast: Any = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fast", _fast_check(self))

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
class Share:
    """How a shared table's rows reach users other than their owner (migrations/0005):
    through `column`, the row's root key, to a row of the root table, seen by the root's
    owner and by the users its members table lists. `kind`: "root" (the root table itself:
    `column` is its key), "members" (the members table) or "shared" (rows whose `column`
    is NULL stay private to their owner)."""

    kind: str
    column: str
    root: str
    root_key: str
    root_owner: str
    members: str
    member_root: str
    member_user: str
    member_role: str
    writers: tuple[str, ...]

    def __post_init__(self) -> None:
        # These names reach SQL as identifiers: only plain ones, as for columns.
        for name in (
            self.column,
            self.root,
            self.root_key,
            self.root_owner,
            self.members,
            self.member_root,
            self.member_user,
            self.member_role,
        ):
            if not IDENTIFIER.fullmatch(name):
                raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")


@dataclass(frozen=True)
class Table:
    """A synced table. `references` maps its foreign-key columns to the synced tables they
    point at: those apply first, and a reference to another user's row is refused."""

    name: str
    columns: tuple[Column, ...]
    primary_key: str
    owner: str = "user_id"
    references: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    share: Share | None = None
    by_name: dict[str, Column] = field(init=False, repr=False, compare=False)
    names: frozenset[str] = field(init=False, repr=False, compare=False)
    # The columns a row's values fill: all but the key, the owner and the clock, which
    # the push sets itself.
    data_columns: tuple[Column, ...] = field(init=False, repr=False, compare=False)
    # Data columns a new row cannot do without (NOT NULL, no default).
    required: tuple[str, ...] = field(init=False, repr=False, compare=False)
    # The key's and the owner's names and checkers, looked up once for every change.
    identity: tuple[str, Any, str, Any] = field(init=False, repr=False, compare=False)
    # Per data column: name, its checker, the value an omitted one gets in an insert, and
    # the JSON size of any of its values when that is fixed (booleans, numbers: 8), else 0.
    fills: tuple[tuple[str, Any, Any, int], ...] = field(init=False, repr=False, compare=False)

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
        object.__setattr__(
            self,
            "fills",
            tuple(
                (
                    c.name,
                    c.fast,
                    None if c.default is MISSING else c.default,
                    0 if c.type in VARIABLE_SIZE else 8,
                )
                for c in self.data_columns
            ),
        )
        key, owner = self.by_name.get(self.primary_key), self.by_name.get(self.owner)
        if key is not None and owner is not None:  # else refused below
            object.__setattr__(self, "identity", (key.name, key.fast, owner.name, owner.fast))
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
