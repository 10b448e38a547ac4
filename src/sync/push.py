"""The push: apply a checked batch set-wise, with last-write-wins and ownership in the SQL.

Per table one statement applies all of the batch's rows, with last-write-wins and ownership
in the statement itself; round trips grow with the tables touched, not with the rows.
"""

from __future__ import annotations

import json
from typing import Any

from sync import sql
from sync.batch import APPLIED, Change, Reject
from sync.db import Db, DbError
from sync.schema import Registry, Table


class TooManyFailures(Exception):
    """Careful mode ran out of its statement budget (CAREFUL_BUDGET)."""


class NeedCareful(Exception):
    """A constraint failed in a set-wise statement: redo the transaction change by change
    (with savepoints, bisecting) to find which changes are at fault."""


CAREFUL_BUDGET = 400
NO_ROW_OF_YOURS = "{column} refers to no row of yours"


def apply(
    db: Db, registry: Registry, winners: list[Change], user: str, careful: bool
) -> dict[int, Reject | str]:
    """Applies the winners set-wise and returns APPLIED (or a Reject) per change, by id().
    A change left without an outcome was not applied — the server holds a version at
    least as new — and the caller settles it by reading what the server holds for its key.

    What can be known before writing is found in one statement first (`sql.vet`): keys of
    other users' rows (forbidden, never touched, so no lock lands on them) and references
    to parents that are not the caller's. So only real constraint failures (a CHECK, a
    unique column) can make a set-wise statement fail and send the batch to careful mode."""
    outcome: dict[int, Reject | str] = {}
    upserts: dict[str, list[Change]] = {}
    deletes: dict[str, list[Change]] = {}
    for change in winners:
        (deletes if change.delete else upserts).setdefault(change.table.name, []).append(change)
    ours = _vet(db, registry, upserts, deletes, user, outcome)
    applied: dict[str, set[str]] = {}
    for table in registry.tables:  # parents first, so children find them
        group = upserts.get(table.name, [])
        _refuse_orphans(table, group, ours, applied, outcome)
        done: set[str] = set()
        for partial in (False, True):  # full rows, then rows that omit columns
            rows = [c for c in group if c.partial == partial]
            if rows:
                _run_group(db, (sql.upsert(table, partial),), rows, outcome, careful, {})
                done |= {c.key for c in rows if outcome.get(id(c)) == APPLIED}
        applied[table.name] = done
    for table in reversed(registry.tables):  # children first, so parents are free to go
        group = deletes.get(table.name)
        if group:
            statements = (sql.bury(table), sql.delete(table))
            _run_group(db, statements, group, outcome, careful, {"user": user})
    return outcome


def _vet(
    db: Db,
    registry: Registry,
    upserts: dict[str, list[Change]],
    deletes: dict[str, list[Change]],
    user: str,
    outcome: dict[int, Reject | str],
) -> set[tuple[str, str]]:
    """Runs `sql.vet`: answers changes to other users' rows `forbidden` and takes them out
    of their groups; returns the (table, key) of referenced parents that are the caller's
    (now locked until commit)."""
    keyed = tuple(t for t in registry.tables if t.name in upserts or t.name in deletes)
    if not keyed:
        return set()
    deleting = tuple(t for t in registry.tables if t.name in deletes)
    refs: list[tuple[Table, str, Table]] = []
    params: dict[str, Any] = {}
    for i, t in enumerate(keyed):
        keys = [c.key for c in (*upserts.get(t.name, ()), *deletes.get(t.name, ()))]
        params[f"k{i}"] = sql.key_list(sorted(keys))
    for i, t in enumerate(deleting):
        params[f"d{i}"] = sql.key_list(sorted(c.key for c in deletes[t.name]))
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
    found = db.run(sql.vet(keyed, deleting, tuple(refs)), user=user, **params)
    others = {(name, key) for kind, name, key in found if kind == "other"}
    if others:
        forbidden = Reject("forbidden", "the row belongs to another user")
        for groups in (upserts, deletes):
            for name, group in groups.items():
                kept = []
                for change in group:
                    if (name, change.key) in others:
                        outcome[id(change)] = forbidden
                    else:
                        kept.append(change)
                group[:] = kept
    return {(name, key) for kind, name, key in found if kind == "ours"}


def _refuse_orphans(
    table: Table,
    group: list[Change],
    ours: set[tuple[str, str]],
    applied: dict[str, set[str]],
    outcome: dict[int, Reject | str],
) -> None:
    """Rejects, and takes out of the group, rows whose foreign keys name no row of the
    caller's: neither one stored (locked by the vet) nor one this batch has just applied.
    A missing parent and another user's parent get the same answer, so it tells nothing
    of other users' rows; and a parent key that another user took after the vet was not
    applied for us, so the rule holds under concurrency too."""
    if not table.references:
        return
    kept = []
    for change in group:
        bad = None
        for column, parent in table.references.items():
            value = change.row.get(column)
            key = None if value is None else str(value)
            if key is not None and (parent, key) not in ours and key not in applied[parent]:
                bad = column
                break
        if bad is None:
            kept.append(change)
        else:
            outcome[id(change)] = Reject("constraint_violation", NO_ROW_OF_YOURS.format(column=bad))
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
        if db.statements > CAREFUL_BUDGET:
            raise TooManyFailures
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
            outcome[id(group[0])] = _constraint_reject(error.sqlstate)
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
