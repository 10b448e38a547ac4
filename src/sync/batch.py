"""The batch at the edge: each change checked against the registry before any database work,
and several changes to one row collapsed into the newest. Nothing here touches the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sync import sql
from sync.protocol import RawChange
from sync.schema import (
    IDENTIFIER,
    InvalidValue,
    Registry,
    Table,
    format_timestamp,
    parse_timestamp,
    timestamp_and_text,
)
from sync.settings import Settings

APPLIED, STALE = "applied", "stale"
# A string json.dumps writes as it is, between two quotes: printable ASCII, no " or \.
_PLAIN = re.compile(r"[ !#-\[\]-~]*")
MAX_KEY_LENGTH = 512  # characters of a text primary key


class Reject(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Change:
    """A change that passed the schema checks; `row` holds normalised values."""

    raw: RawChange
    table: Table
    key: str  # the primary key as Postgres prints it (`pk::text`)
    delete: bool
    row: dict[str, Any]
    clock: datetime  # updated_at after clamping
    clamped: bool = False
    followers: list[RawChange] = field(default_factory=list)  # superseded in this batch

    @property
    def partial(self) -> bool:
        return sql.OMITTED in self.row

    @property
    def missing_required(self) -> list[str]:
        """Omitted columns a new row cannot do without: fine for an update only."""
        omitted = self.row.get(sql.OMITTED, ())
        return [c for c in self.table.required if c in omitted]

    @property
    def as_sent(self) -> bool:
        """Applied, it leaves the row as every change for it in the batch said: not
        clamped, no columns left to their stored values, no older change to the same row
        superseded."""
        return not self.clamped and not self.followers and not self.partial


@dataclass
class Rejected:
    """A change refused before the database. Where its table and key are readable the
    client is sent the server's state for that key, so it converges."""

    raw: RawChange
    reject: Reject
    table: Table | None
    key: str | None  # normalised key, None when the row has no usable key

    @property
    def clock(self) -> str:
        value = self.raw.row.get("updated_at")
        try:
            return format_timestamp(parse_timestamp(value))
        except InvalidValue:
            return format_timestamp(datetime.now(UTC))


@dataclass
class Plan:
    winners: list[Change]
    rejected: list[Rejected]


def check(
    raw: RawChange,
    registry: Registry,
    user: str,
    now: datetime,
    settings: Settings,
    horizon: datetime,
) -> Change:
    """One change against the registry. `horizon` is the latest clock taken as is (now
    plus MAX_CLOCK_SKEW), computed once per batch by `plan`."""
    return _check(raw, registry.get(raw.table), user, now, settings, horizon)


def _check(
    raw: RawChange,
    table: Table | None,
    user: str,
    now: datetime,
    settings: Settings,
    horizon: datetime,
) -> Change:
    """check() for the change's table, already looked up.

    Every value of a batch passes through here, so the checks are the ones each column
    chose once for its type (Column.fast), updated_at is parsed once, and the refusals come
    in a fixed order: key, owner, clock, unknown columns, then the data columns in order."""
    if table is None:
        raise Reject("unknown_table", f"table {_name(raw.table[:100])} is not synced")
    row = raw.row
    key_name, key_check, owner_name, owner_check = table.identity
    key_value = row.get(key_name, user if key_name == owner_name else None)
    if key_value is None:
        raise Reject("missing_primary_key", f"row has no {key_name}")
    try:
        key_value = key_check(key_value)
        if isinstance(key_value, str) and len(key_value) > MAX_KEY_LENGTH:
            raise InvalidValue(f"{key_name} is longer than {MAX_KEY_LENGTH} characters")
        owner = row.get(owner_name)
        if owner is not None:
            owner = owner_check(owner)
            # A shared row keeps its creator as owner, and a members row names the member:
            # the push statement decides who may write them (sql.push).
            if owner != user and table.share is None:
                raise Reject("forbidden", "the row names another user as its owner")
        if "updated_at" not in row:
            raise InvalidValue("updated_at is missing")
        clock, clock_text = timestamp_and_text(row["updated_at"])
    except InvalidValue as error:
        raise Reject("invalid_value", str(error)) from None
    clamped = False
    if clock > horizon:
        if settings.clock_skew_policy == "reject":
            raise Reject("clock_skew", "updated_at is too far in the future of the server")
        clock, clamped = now, True
        clock_text = format_timestamp(now)

    delete = raw.op == "delete"
    values = {key_name: key_value, "updated_at": clock_text}
    if not delete:
        names = table.names
        if not names.issuperset(row):
            unknown = row.keys() - names
            listed = ", ".join(sorted(_name(n) for n in unknown))[:200]
            raise Reject("unknown_column", f"columns not synced: {listed}")
        values[owner_name] = user if owner is None or table.share is None else owner
        omitted = []
        size = 0
        try:
            for name, fast, default, fixed in table.fills:
                if name not in row:  # an update keeps the stored value; an insert takes this
                    omitted.append(name)
                    values[name] = default
                    continue
                value = values[name] = fast(row[name])
                if fixed or value is None:  # what _size gives any boolean or number, and None
                    size += 8
                elif type(value) is str:
                    size += len(value) + 2
                else:
                    size += _size(value)
        except InvalidValue as error:
            raise Reject("invalid_value", str(error)) from None
        if size > settings.max_row_bytes:
            raise Reject(
                "invalid_value",
                f"the row is larger than MAX_ROW_BYTES ({settings.max_row_bytes}); "
                "keep large files in object storage and sync a reference",
            )
        if omitted:
            values[sql.OMITTED] = omitted
    return Change(raw, table, str(key_value), delete, values, clock, clamped)


def _name(text: str) -> str:
    """A name from a request, safe to echo: plain identifiers as they are, anything else
    quoted in ASCII (a lone surrogate cannot be encoded into the answer otherwise)."""
    return text if IDENTIFIER.fullmatch(text) else ascii(text)


def _size(value: Any) -> int:
    """About the bytes a value takes in JSON; exact enough to bound a row. A list of plain
    strings (tags: the common jsonb value) is counted without serialising it: the same
    number json.dumps would give."""
    if isinstance(value, str):
        return len(value) + 2
    if type(value) is list:
        total = 2 + max(len(value) - 1, 0)  # brackets and commas
        for item in value:
            if not (type(item) is str and _PLAIN.fullmatch(item)):
                break
            total += len(item) + 2
        else:
            return total
    if isinstance(value, dict | list):
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    return 8


def _usable_key(table: Table | None, row: dict[str, Any], user: str) -> str | None:
    if table is None:
        return None
    column = table.key_column
    value = row.get(column.name, user if column.name == table.owner else None)
    try:
        key = column.check(value)
    except InvalidValue:
        return None
    return None if key is None else str(key)


def plan(
    changes: Iterable[RawChange], registry: Registry, user: str, now: datetime, settings: Settings
) -> Plan:
    """Checks every change and collapses several changes to one row into the newest
    (by clock, then by place in the batch); the others follow its outcome."""
    winners: dict[tuple[str, str], Change] = {}
    rejected: list[Rejected] = []
    horizon = now + timedelta(seconds=settings.max_clock_skew)
    tables = registry.by_name
    for raw in changes:
        table = tables.get(raw.table)
        try:
            change = _check(raw, table, user, now, settings, horizon)
        except Reject as reject:
            rejected.append(Rejected(raw, reject, table, _usable_key(table, raw.row, user)))
            continue
        slot = (change.table.name, change.key)
        best = winners.get(slot)
        if best is None:
            winners[slot] = change
        elif (change.clock, raw.position) > (best.clock, best.raw.position):
            change.followers = [*best.followers, best.raw]
            winners[slot] = change
        else:
            best.followers.append(raw)
    return Plan(list(winners.values()), rejected)


# Careful mode's statements in one request, at most: past this the batch has too many
# failing changes to single out cheaply, and the client is asked to send smaller parts.
