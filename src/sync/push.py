"""The push: a checked batch applied in one statement, and every change's outcome.

`statement` writes the whole batch as one statement (`sql.push`): last-write-wins,
ownership, other users' keys and orphaned children are all decided in SQL, so the push
travels in the sync's one message. Only when a constraint fails (a CHECK, a unique column)
does the batch go to careful mode (`careful`): the same statement on halves of the batch
under savepoints, until each failing change is alone. `outcomes` then turns what the
statements and the pull's settle rows said into accepted ids, rejections, and the rows that
make the client converge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync import sql
from sync.batch import APPLIED, STALE, Change, Plan, Reject
from sync.db import Db, DbError
from sync.protocol import RawChange
from sync.pull import Entry, Pulled, Slot, delete_entry
from sync.schema import Registry, format_timestamp

# Careful mode's round trips in one request, at most: past this the batch has too many
# failing changes to single out cheaply, and the client is asked to send smaller parts.
CAREFUL_BUDGET = 400
NO_ROW_OF_YOURS = "{column} refers to no row of yours"
FORBIDDEN = "the row belongs to another user"


class TooManyFailures(Exception):
    """Careful mode ran out of its round-trip budget (CAREFUL_BUDGET)."""


class NeedCareful(Exception):
    """A constraint failed in the set-wise statement: redo the transaction in careful
    mode to find which changes are at fault."""


def no_echo(plan: Plan) -> set[Slot]:
    """Keys whose applied result the client does not hold as it is: changes clamped, or
    superseded in the batch, or beside a refused change to the same row. Their rows are
    not counted as the client's own writes, so the answer carries them."""
    slots = {(c.table.name, c.key) for c in plan.winners if not c.as_sent}
    return slots | {(r.table.name, r.key) for r in plan.rejected if r.table and r.key}


def _groups(registry: Registry, changes: list[Change], quiet: set[Slot]) -> list[sql.Group]:
    by_table: dict[str, sql.Group] = {}
    for change in changes:
        name = change.table.name
        group = by_table.get(name)
        if group is None:
            group = by_table[name] = sql.Group(change.table, [], [], [], [])
        if change.delete:
            group.deletes.append(change.row)
        elif change.partial:
            group.partial.append(change.row)
        else:
            group.full.append(change.row)
        if (name, change.key) in quiet:
            group.no_echo.append(change.key)
    return [by_table[t.name] for t in registry.tables if t.name in by_table]


def statement(registry: Registry, changes: list[Change], user: str, quiet: set[Slot]) -> str:
    """The push statement for `changes` (winners of one plan), or "" for none."""
    if not changes:
        return ""
    return sql.push(_groups(registry, changes, quiet), registry.by_name, user)


@dataclass
class Pushed:
    """What the push statements said. A key in none of these sets applied."""

    tables: tuple[str, ...] = ()  # tables a push statement wrote (their settings are set)
    others: set[Slot] = field(default_factory=set)  # another user's row
    orphans: dict[Slot, str] = field(default_factory=dict)  # child -> the column at fault
    not_applied: set[Slot] = field(default_factory=set)
    failed: dict[Slot, Reject] = field(default_factory=dict)  # careful mode's rejects

    def read(self, rows: list[list[Any]]) -> None:
        tables = set(self.tables)
        for tag, name, key, column, *_ in rows:
            if name is not None:
                tables.add(name)
            if tag == "o":
                self.others.add((name, key))
            elif tag == "r":
                self.orphans[(name, key)] = column
            elif tag == "n":
                self.not_applied.add((name, key))
        self.tables = tuple(sorted(tables))


def careful(db: Db, registry: Registry, plan: Plan, user: str, quiet: set[Slot]) -> Pushed:
    """The batch applied in parts under savepoints: a part that fails a constraint is
    rolled back and halved until each failing change is alone (and refused). The order —
    upserts parents-first, then deletes children-first — keeps every parent in an earlier
    part than its children or in the same one."""
    rank = {t.name: i for i, t in enumerate(registry.tables)}
    order = sorted(
        plan.winners,
        key=lambda c: (c.delete, -rank[c.table.name] if c.delete else rank[c.table.name]),
    )
    pushed = Pushed()
    _careful(db, registry, order, user, quiet, pushed)
    return pushed


def _careful(
    db: Db, registry: Registry, changes: list[Change], user: str, quiet: set[Slot], pushed: Pushed
) -> None:
    if not changes:
        return
    if db.statements > CAREFUL_BUDGET:
        raise TooManyFailures
    text = statement(registry, changes, user, quiet)
    try:
        rows = db.run(sql.script(sql.SAVEPOINT, text, sql.RELEASE_SAVEPOINT))
    except DbError as error:
        if not error.data_problem:
            raise
        db.run(sql.script(sql.ROLLBACK_TO_SAVEPOINT, sql.RELEASE_SAVEPOINT))
        if len(changes) == 1:
            change = changes[0]
            pushed.failed[(change.table.name, change.key)] = _constraint_reject(error.sqlstate)
            return
        middle = len(changes) // 2
        _careful(db, registry, changes[:middle], user, quiet, pushed)
        _careful(db, registry, changes[middle:], user, quiet, pushed)
        return
    pushed.read(rows)


def settle(plan: Plan, pushed: Pushed) -> set[Slot]:
    """Keys the pull must read besides those the push statement leaves it: refused
    changes (before the database, or by careful mode)."""
    slots = {(r.table.name, r.key) for r in plan.rejected if r.table and r.key}
    return slots | set(pushed.failed)


@dataclass
class Outcome:
    accepted: list[int | str]
    rejected: list[dict[str, Any]]
    converge: dict[Slot, Entry]  # rows that make the client converge; the page goes over them


def outcomes(
    registry: Registry, plan: Plan, pushed: Pushed, pulled: Pulled, owed: set[Slot], now: datetime
) -> Outcome:
    """Each change's outcome, and for every change that did not apply exactly as sent,
    the caller's row for its key (or a delete where the caller has none; never another
    user's row). A change applied as sent needs nothing: the client holds it."""
    accepted: list[int | str] = []
    rejected: list[dict[str, Any]] = []
    converge: dict[Slot, Entry] = {}
    settled = pulled.settled

    def settle_to(table: Any, key: str, clock: str) -> None:
        state = settled.get((table.name, key))
        if state is None or state.kind == "own" or state.owed:
            return  # the page carries it (this transaction wrote it), or it is owed
        slot = (table.name, key)
        converge[slot] = state.entry or delete_entry(table, key, clock)

    for change in plan.winners:
        slot = (change.table.name, change.key)
        result: Reject | str
        if slot in pushed.failed:
            result = pushed.failed[slot]
        elif slot in pushed.others:
            result = Reject("forbidden", FORBIDDEN)
        elif slot in pushed.orphans:
            result = Reject(
                "constraint_violation", NO_ROW_OF_YOURS.format(column=pushed.orphans[slot])
            )
        elif slot in pushed.not_applied:
            state = settled.get(slot)
            kind = state.kind if state else None
            if kind == "other":
                result = Reject("forbidden", FORBIDDEN)
            elif kind in ("none", "tomb") and change.missing_required and not change.delete:
                column = change.missing_required[0]
                result = Reject("constraint_violation", f"a new row needs column {column}")
            else:
                result = STALE
        else:
            result = APPLIED
        ids = [change.raw, *change.followers]
        if isinstance(result, Reject):
            rejected += [_rejection(raw, result) for raw in ids]
        else:
            accepted += [raw.id for raw in ids]
        if result != APPLIED:
            settle_to(change.table, change.key, change.row["updated_at"])
    for refused in plan.rejected:
        rejected.append(_rejection(refused.raw, refused.reject))
        if refused.table and refused.key:
            settle_to(refused.table, refused.key, refused.clock)
    stamp = format_timestamp(now)
    for name, key in sorted(owed):  # rows an earlier answer owed: now, as they stand
        table = registry.get(name)
        if table is not None and (name, key) not in converge:
            settle_to(table, key, stamp)
    return Outcome(accepted, rejected, converge)


def _rejection(raw: RawChange, reject: Reject) -> dict[str, Any]:
    return {"id": raw.id, "code": reject.code, "message": reject.message}


# Postgres' own messages name constraints and tables, and may quote other users' values:
# the client gets one sentence per kind of failure instead.
_CONSTRAINT_MESSAGES = {
    "23502": "a column that cannot be null is null",
    "23503": "a reference names no row of yours, or the row is still referred to",
    "23505": "a value that must be unique is already taken",
    "23514": "a value fails a check of the table",
    "23P01": "a value conflicts with another row (exclusion constraint)",
}


def _constraint_reject(sqlstate: str) -> Reject:
    if sqlstate.startswith("23"):
        message = _CONSTRAINT_MESSAGES.get(sqlstate, "the row breaks a constraint of the table")
        return Reject("constraint_violation", message)
    return Reject("invalid_value", "a value is out of range or malformed for its column")
