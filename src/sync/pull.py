"""The pull: the answer's rows, read in one statement after the push.

Two parts (see `sql.pull`): the current state of keys that need it — changes that did not
apply as sent, refused changes, rows an earlier answer owed — so the client converges; and
one page of the caller's changes since the cursor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sync import sql
from sync.cursor import Cursor
from sync.schema import InvalidValue, Registry, Table

Slot = tuple[str, str]  # (table, key as text)


@dataclass(frozen=True)
class Entry:
    """One of the answer's pulledChanges, already as JSON text: a row's JSON comes from
    Postgres as text (jsonb's output is always valid JSON) and goes into the answer as it
    is, never parsed and encoded again — for a page of 1 000 rows that is most of the
    request's CPU on Workers."""

    table: str
    op: str  # upsert / delete
    text: str


def upsert_entry(table: str, row_text: str) -> Entry:
    # The table name is a registry identifier: nothing in it needs escaping.
    return Entry(table, "upsert", f'{{"table":"{table}","op":"upsert","row":{row_text}}}')


def typed_key(table: Table, key: str) -> Any:
    return int(key) if table.key_column.type in ("integer", "bigint") else key


def delete_entry(table: Table, key: str, updated_at: str) -> Entry:
    change = {
        "table": table.name,
        "op": "delete",
        "row": {table.primary_key: typed_key(table, key), "updated_at": updated_at},
    }
    return Entry(table.name, "delete", json.dumps(change, separators=(",", ":")))


def table_bounds(
    tables: tuple[Table, ...], after: tuple[str, str, str, str] | None
) -> dict[str, tuple[str, str | None, str | None]]:
    """The page position (xid, table, root, key) as a lower bound (xid, root, key) per
    table: rows of tables sorting before the position's table are done up to its xid,
    those after it from its xid on. A NULL bound compares as "not after", so (xid, NULL,
    NULL) admits only larger xids. Python's str order is the "C" collation's byte order."""
    bounds: dict[str, tuple[str, str | None, str | None]] = {}
    for table in tables:
        if after is None:
            bounds[table.name] = ("0", None, None)
        elif table.name < after[1]:
            bounds[table.name] = (after[0], None, None)
        elif table.name == after[1]:
            bounds[table.name] = (after[0], after[2], after[3])
        else:
            bounds[table.name] = (str(int(after[0]) - 1), None, None)
    return bounds


def _readable(table: Table, key: str) -> bool:
    """A key from a cursor that the table's key column can hold (the cursor is not
    signed: a key that cannot be cast would fail the whole statement)."""
    try:
        value = typed_key(table, key)
        return table.key_column.check(value) is not None and str(value) == key
    except (InvalidValue, ValueError):
        return False


def _position(
    registry: Registry, after: tuple[str, str, str, str] | None
) -> tuple[str, str, str, str] | None:
    """The cursor's position, with a root the position's table could not have paged under
    read as "" (the cursor is not signed: a root that cannot be cast would fail the whole
    statement). A page then starts again at its xid's moved-in roots: duplicates, no miss."""
    if after is None or after[2] == "":
        return after
    table = registry.get(after[1])
    root = registry.get(table.share.root) if table is not None and table.share else None
    if root is not None and _readable(root, after[2]):
        return after
    return (after[0], after[1], "", after[3])


def request(
    registry: Registry,
    user: str,
    cursor: Cursor,
    settle: set[Slot],
    pushed: tuple[str, ...],
    page_size: int,
    budget: int,
) -> sql.PullInput:
    """The pull statement's input. `settle`: keys whose current state the answer must
    carry; `pushed`: the tables a push statement of this transaction wrote."""
    keys: dict[str, list[str]] = {}
    position = _position(registry, cursor.after)
    for name, key in sorted(settle | set(cursor.owed)):
        table = registry.get(name)
        if table is not None and _readable(table, key):
            keys.setdefault(name, []).append(key)
    return sql.PullInput(
        user=user,
        seen=cursor.seen,
        upto=cursor.upto,
        bounds=table_bounds(registry.tables, position),
        after=position or ("0", "", "", ""),
        initial=cursor.initial,
        settle=keys,
        pushed=pushed,
        limit=page_size + 1,
        budget=budget,
    )


@dataclass
class Settled:
    """What the server holds for a key the answer settles (sql.pull's part 0)."""

    kind: str  # row, other, tomb, none, own
    entry: Entry | None = None  # the caller's row or tombstone as a pulled change
    owed: bool = False  # the caller's row, whose content did not fit the answer


@dataclass
class Pulled:
    settled: dict[Slot, Settled]
    entries: dict[Slot, Entry]  # the page
    cursor: Cursor  # owed left empty: the caller adds what is still owed
    has_more: bool
    size: int = 0  # bytes of row content in the answer
    owed: set[Slot] = field(default_factory=set)


def read(registry: Registry, cursor: Cursor, given: sql.PullInput, rows: list[list[Any]]) -> Pulled:
    """The pull statement's rows (tagged 'p') as settled keys, the page and the next
    cursor. The page ends at `limit - 1` rows, or earlier at the row the byte budget cut."""
    page_size = given.limit - 1
    snapshot = rows[0][1]
    settled: dict[Slot, Settled] = {}
    page: list[list[Any]] = []
    size = 0
    for row in rows:
        _tag, _snap, part, name, kind, key, _xid, content, at, _size, running, _root = row
        if part is None:
            continue  # nothing at all: the row only carries the snapshot
        if part == 0:
            slot = (name, key)
            table = registry.by_name[name]
            if kind == "row" and content is None:
                settled[slot] = Settled(kind, owed=True)
            elif kind == "row":
                settled[slot] = Settled(kind, upsert_entry(name, content))
                size = max(size, int(running))
            elif kind == "tomb":
                settled[slot] = Settled(kind, delete_entry(table, key, at))
            else:
                settled[slot] = Settled(kind)
        else:
            page.append(row)
    has_more = len(page) > page_size
    page = page[:page_size]
    for i, row in enumerate(page):
        row_size, running = row[9], row[10]
        if not (running <= given.budget or running == row_size):
            page, has_more = page[:i], True  # the byte budget ends the page here
            break
        if row[7] is not None:
            size = max(size, int(running))
    owed = {slot for slot, s in settled.items() if s.owed}
    if not page and has_more:  # nothing fitted: the same position, asked again
        return Pulled(settled, {}, cursor, True, size, owed)
    entries: dict[Slot, Entry] = {}
    for _t, _s, _p, name, kind, key, _xid, content, at, _size, _running, _root in page:
        if kind == "row":
            entries[(name, key)] = upsert_entry(name, content)
        else:
            entries[(name, key)] = delete_entry(registry.by_name[name], key, at)
    upto = given.upto or snapshot
    if has_more:
        last = page[-1]
        next_cursor = Cursor(cursor.seen, upto, (last[6], last[3], last[11], last[5]))
    else:
        next_cursor = Cursor(upto)
    return Pulled(settled, entries, next_cursor, has_more, size, owed)


def ordered(registry: Registry, entries: dict[Slot, Entry]) -> list[Entry]:
    """Upserts parents-first, then deletes children-first, so a client that enforces
    foreign keys can apply the list in order."""
    rank = {t.name: i for i, t in enumerate(registry.tables)}
    n = len(rank)

    def place(entry: Entry) -> int:
        i = rank[entry.table]
        return i if entry.op == "upsert" else 2 * n - i

    return sorted(entries.values(), key=place)
