"""The push: check each change against the registry, then apply the batch set-wise.

Per table one statement applies all of the batch's rows, with last-write-wins and ownership
in the statement itself; round trips grow with the tables touched, not with the rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sync import sql
from sync.db import Db, DbError
from sync.protocol import RawChange
from sync.schema import MISSING, InvalidValue, Registry, Table, format_timestamp, parse_timestamp
from sync.settings import Settings

APPLIED, STALE = "applied", "stale"


class Reject(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NeedCareful(Exception):
    """A constraint failed in a set-wise statement: redo the transaction change by change
    (with savepoints, bisecting) to find which changes are at fault."""


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
    table = registry.get(raw.table)
    if table is None:
        raise Reject("unknown_table", f"table {raw.table[:100]!r} is not synced")
    row = raw.row
    pk_col = table.key_column
    key_value = row.get(pk_col.name, user if pk_col.name == table.owner else None)
    if key_value is None:
        raise Reject("missing_primary_key", f"row has no {pk_col.name}")
    try:
        key_value = pk_col.check(key_value)
        owner = row.get(table.owner)
        if owner is not None and table.by_name[table.owner].check(owner) != user:
            raise Reject("forbidden", "the row names another user as its owner")
        if "updated_at" not in row:
            raise InvalidValue("updated_at is missing")
        clock = parse_timestamp(row["updated_at"])
    except InvalidValue as error:
        raise Reject("invalid_value", str(error)) from None
    clamped = False
    if clock > horizon:
        if settings.clock_skew_policy == "reject":
            raise Reject("clock_skew", "updated_at is too far in the future of the server")
        clock, clamped = now, True

    delete = raw.op == "delete"
    values = {pk_col.name: key_value, "updated_at": format_timestamp(clock)}
    if not delete:
        unknown = row.keys() - table.names
        if unknown:
            names = ", ".join(sorted(unknown))[:200]
            raise Reject("unknown_column", f"columns not synced: {names}")
        values[table.owner] = user
        omitted = []
        try:
            for column in table.data_columns:
                if column.name in row:
                    values[column.name] = column.check(row[column.name])
                else:  # an update keeps the stored value; an insert takes this one
                    omitted.append(column.name)
                    values[column.name] = None if column.default is MISSING else column.default
        except InvalidValue as error:
            raise Reject("invalid_value", str(error)) from None
        if omitted:
            values[sql.OMITTED] = omitted
    return Change(raw, table, str(key_value), delete, values, clock, clamped)


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
    for raw in changes:
        try:
            change = check(raw, registry, user, now, settings, horizon)
        except Reject as reject:
            table = registry.get(raw.table)
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


def apply(
    db: Db, registry: Registry, winners: list[Change], user: str, careful: bool
) -> dict[int, Reject | str]:
    """Applies the winners set-wise and returns APPLIED (or, in careful mode, a Reject)
    per change, by id(). A change left without an outcome was not applied — the server
    holds a version at least as new, or the row is another user's — and the caller
    settles it by reading what the server holds for its key."""
    outcome: dict[int, Reject | str] = {}
    upserts: dict[str, list[Change]] = {}
    deletes: dict[str, list[Change]] = {}
    for change in winners:
        (deletes if change.delete else upserts).setdefault(change.table.name, []).append(change)
    if deletes:
        # A delete is two statements (tombstone, then row): lock the rows first so no
        # concurrent writer slips in between them.
        doomed = tuple(t for t in registry.tables if t.name in deletes)
        keys = {
            f"k{i}": sql.key_list([c.key for c in deletes[t.name]]) for i, t in enumerate(doomed)
        }
        db.run(sql.lock_rows(doomed), **keys)
    _refuse_foreign_parents(db, registry, upserts, user, outcome)
    for table in registry.tables:  # parents first, so children find them
        group = upserts.get(table.name, [])
        for partial in (False, True):  # full rows, then rows that omit columns
            rows = [c for c in group if c.partial == partial]
            if rows:
                _run_group(db, (sql.upsert(table, partial),), rows, outcome, careful, {})
    for table in reversed(registry.tables):  # children first, so parents are free to go
        group = deletes.get(table.name)
        if group:
            statements = (sql.bury(table), sql.delete(table))
            _run_group(db, statements, group, outcome, careful, {"user": user})
    return outcome


def _refuse_foreign_parents(
    db: Db,
    registry: Registry,
    upserts: dict[str, list[Change]],
    user: str,
    outcome: dict[int, Reject | str],
) -> None:
    """Rejects upserts whose foreign keys point at another user's row, and takes them out
    of their group. The answer is the same as for a missing parent, so it tells nothing."""
    refs, params = [], {}
    for table in registry.tables:
        for column, parent in table.references.items():
            keys = {
                str(c.row[column])
                for c in upserts.get(table.name, ())
                if c.row.get(column) is not None
            }
            if keys:
                params[f"f{len(refs)}"] = sql.key_list(sorted(keys))
                refs.append((table, column, registry.by_name[parent]))
    if not refs:
        return
    foreign = {tuple(r) for r in db.run(sql.foreign_parents(tuple(refs)), user=user, **params)}
    for name, group in upserts.items():
        table = registry.by_name[name]
        kept = []
        for change in group:
            bad = [c for c in table.references if (name, c, str(change.row.get(c))) in foreign]
            if bad:
                outcome[id(change)] = Reject(
                    "constraint_violation", f"{bad[0]} refers to no row of yours"
                )
            else:
                kept.append(change)
        group[:] = kept


def _apply(
    db: Db, statements: tuple[str, ...], group: list[Change], params: dict[str, Any]
) -> set[str]:
    """Runs a group's set-wise statements; the first returns the keys that apply."""
    rows = json.dumps([c.row for c in group], separators=(",", ":"), ensure_ascii=False)
    first, *rest = statements
    done = {r[0] for r in db.run(first, rows=rows, **params)}
    for statement in rest:
        db.run(statement, rows=rows, **params)
    return done


def _run_group(
    db: Db,
    statements: tuple[str, ...],
    group: list[Change],
    outcome: dict[int, str | Reject],
    careful: bool,
    params: dict[str, Any],
) -> None:
    """Applies one group set-wise. Keys not applied lost a race with a concurrent writer
    and are left without an outcome for the caller to re-read."""
    if careful:  # under a savepoint; a failing group is halved until the culprit is alone
        db.run(sql.SAVEPOINT)
    try:
        done = _apply(db, statements, group, params)
    except DbError as error:
        if not error.data_problem:
            raise
        if not careful:
            raise NeedCareful from error
        db.run(sql.ROLLBACK_TO_SAVEPOINT)
        db.run(sql.RELEASE_SAVEPOINT)
        if len(group) == 1:
            code = "constraint_violation" if error.sqlstate.startswith("23") else "invalid_value"
            outcome[id(group[0])] = Reject(code, error.message[:300])
            return
        middle = len(group) // 2
        _run_group(db, statements, group[:middle], outcome, careful, params)
        _run_group(db, statements, group[middle:], outcome, careful, params)
        return
    if careful:
        db.run(sql.RELEASE_SAVEPOINT)
    for change in group:
        if change.key in done:
            outcome[id(change)] = APPLIED
