"""The pull: the caller's rows changed since the cursor, one page, in one statement.

Also reads the current state of given keys, so that a change that was not applied as sent
is answered with what the server holds (or a delete), and the client converges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sync import sql
from sync.cursor import Cursor
from sync.db import Db
from sync.schema import Registry, Table

Entry = dict[str, Any]
Slot = tuple[str, str]  # (table, key as text)


def typed_key(table: Table, key: str) -> Any:
    return int(key) if table.key_column.type in ("integer", "bigint") else key


def delete_entry(table: Table, key: str, updated_at: str) -> Entry:
    return {
        "table": table.name,
        "op": "delete",
        "row": {table.primary_key: typed_key(table, key), "updated_at": updated_at},
    }


@dataclass
class Stored:
    """What the database holds for some keys: whose row it is, and the caller's view.
    `owed`: the caller's rows whose content did not fit the answer's byte budget; they
    go into the cursor and come first in the next answer."""

    owners: dict[Slot, str]
    entries: dict[Slot, Entry]
    owed: set[Slot]
    size: int  # bytes of row content sent


def read_keys(db: Db, registry: Registry, user: str, slots: set[Slot], budget: int) -> Stored:
    tables = tuple(t for t in registry.tables if any(s[0] == t.name for s in slots))
    keys = {
        f"k{i}": sql.key_list(sorted(k for n, k in slots if n == t.name))
        for i, t in enumerate(tables)
    }
    owners: dict[Slot, str] = {}
    entries: dict[Slot, Entry] = {}
    owed: set[Slot] = set()
    size = 0
    rows = db.run(sql.current_rows(tables), user=user, budget=budget, **keys)
    for name, kind, key, owner, at, row, running in rows:
        table = registry.by_name[name]
        slot = (name, key)
        if kind == "row":
            owners[slot] = owner
            if row is not None:
                entries[slot] = {"table": name, "op": "upsert", "row": row}
                size = max(size, int(running))
            elif owner == user:
                owed.add(slot)
        elif slot not in entries and slot not in owed:
            entries[slot] = delete_entry(table, key, at)
    for slot in owed:  # a tombstone of an older row is not the state to converge to
        entries.pop(slot, None)
    return Stored(owners, entries, owed, size)


@dataclass
class Page:
    entries: dict[Slot, Entry]
    cursor: Cursor
    has_more: bool


def table_bounds(
    tables: tuple[Table, ...], after: tuple[str, str, str] | None
) -> dict[str, str | None]:
    """The page position (xid, table, key) as a lower bound (xid, key) per table: rows of
    tables sorting before the position's table are done up to its xid, those after it
    from its xid on. A NULL key bound compares as "not after", so (xid, NULL) admits only
    larger xids. Python's str order is the "C" collation's byte order."""
    bounds: dict[str, str | None] = {}
    for i, table in enumerate(tables):
        if after is None:
            xid, key = "0", None
        elif table.name < after[1]:
            xid, key = after[0], None
        elif table.name == after[1]:
            xid, key = after[0], after[2]
        else:
            xid, key = str(int(after[0]) - 1), None
        bounds[f"x{i}"], bounds[f"p{i}"] = xid, key
    return bounds


def pull(
    db: Db,
    registry: Registry,
    user: str,
    cursor: Cursor,
    page_size: int,
    budget: int,
    first_row: bool,
) -> Page:
    """One page: at most `page_size` rows and `budget` bytes of row content, but at least
    one row when `first_row` (nothing else is in the answer), so every row arrives."""
    after = cursor.after or ("0", "", "")
    params = {
        **table_bounds(registry.tables, cursor.after),
        "user": user,
        "seen": cursor.seen,
        "from_xid": cursor.xmin,
        "axid": after[0],
        "atable": after[1],
        "akey": after[2],
        "limit": page_size + 1,
        "budget": budget,
        "first_row": first_row,
        "initial": cursor.initial,
    }
    first_page = cursor.upto is None
    if not first_page:
        params["upto"] = cursor.upto
    rows = db.run(sql.pull(registry.tables, first_page), **params)
    upto = rows[0][0]
    data = [r for r in rows if r[1] is not None]
    has_more = len(data) > page_size
    data = data[:page_size]
    for i, (*_, size, running) in enumerate(data):
        if not (running <= budget or (first_row and running == size)):
            data, has_more = data[:i], True  # the byte budget ends the page here
            break
    if not data and has_more:  # nothing fitted: the same position, asked again
        return Page({}, cursor, True)
    entries: dict[Slot, Entry] = {}
    for _snap, name, kind, key, _xid, row, at, _size, _running in data:
        if kind == "row":
            entries[(name, key)] = {"table": name, "op": "upsert", "row": row}
        else:
            entries[(name, key)] = delete_entry(registry.by_name[name], key, at)
    if has_more:
        last = data[-1]
        next_cursor = Cursor(cursor.seen, upto, (last[4], last[1], last[3]))
    else:
        next_cursor = Cursor(upto)
    return Page(entries, next_cursor, has_more)


def ordered(registry: Registry, entries: dict[Slot, Entry]) -> list[Entry]:
    """Upserts parents-first, then deletes children-first, so a client that enforces
    foreign keys can apply the list in order."""
    rank = {t.name: i for i, t in enumerate(registry.tables)}
    n = len(rank)

    def place(entry: Entry) -> int:
        i = rank[entry["table"]]
        return i if entry["op"] == "upsert" else 2 * n - i

    return sorted(entries.values(), key=place)
