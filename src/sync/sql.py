"""Every SQL statement the server sends, built only from registry identifiers.

Values always travel as parameters: rows as one JSON document per statement, unpacked by
`jsonb_to_recordset`, so a statement's size and count do not grow with the batch.
"""

from __future__ import annotations

from functools import cache

from sync.schema import Column, Table
from sync.settings import Settings

BEGIN = "BEGIN"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
# A volatile function: Hyperdrive never answers this from its cache.
HEALTH = "SELECT clock_timestamp()"
SAVEPOINT = "SAVEPOINT change_group"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT change_group"
RELEASE_SAVEPOINT = "RELEASE SAVEPOINT change_group"


def bounds(settings: Settings, left_ms: int) -> str:
    """SET LOCAL for the transaction's waits (pooler-safe: they end with it). Every
    statement, every lock wait and any idle gap are bounded, and no statement may outlive
    the request's deadline. Values are integers from settings, never from a request."""
    statement = max(1, min(int(settings.statement_timeout_ms), int(left_ms)))
    lock = max(1, min(int(settings.lock_timeout_ms), statement))
    idle = max(1, int(settings.request_timeout_ms))
    return (
        f"SET LOCAL statement_timeout = {statement}; SET LOCAL lock_timeout = {lock}; "
        f"SET LOCAL idle_in_transaction_session_timeout = {idle}"
    )


ISO_UTC = '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\''


def q(name: str) -> str:
    """Quote an identifier; names come from the registry, which admits plain ones only."""
    return '"' + name + '"'


def literal(name: str) -> str:
    return "'" + name + "'"


def _value(column: Column, alias: str) -> str:
    ref = f"{alias}.{q(column.name)}"
    if column.type == "timestamptz":
        return f"to_char({ref} AT TIME ZONE 'UTC', {ISO_UTC})"
    return ref


def row_json(table: Table, alias: str) -> str:
    """A jsonb object of the registered columns, timestamps as ISO-8601 in UTC."""
    cols = table.columns
    parts = []
    for start in range(0, len(cols), 40):  # jsonb_build_object takes at most 100 arguments
        args = ", ".join(f"{literal(c.name)}, {_value(c, alias)}" for c in cols[start : start + 40])
        parts.append(f"jsonb_build_object({args})")
    return " || ".join(parts)


def key_list(keys: list[str]) -> str:
    """Keys as one Postgres array literal: pg8000 sends a Python list element by element,
    which costs more than the statement itself for thousands of keys."""
    quoted = ('"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"' for k in keys)
    return "{" + ",".join(quoted) + "}"


def _key_array(table: Table, param: str) -> str:
    return f"CAST(:{param} AS {table.key_column.type}[])"


def _recordset(columns: tuple[Column, ...]) -> str:
    return ", ".join(f"{q(c.name)} {c.type}" for c in columns)


@cache
def vet(
    keyed: tuple[Table, ...],
    deleting: tuple[Table, ...],
    refs: tuple[tuple[Table, str, Table], ...],
) -> str:
    """Before any statement that can fail, in one: the batch's keys that are another
    user's (answered `forbidden`, never written: an upsert onto them would lock the other
    user's row), the parents the batch's rows refer to that are the caller's (locked FOR
    KEY SHARE, so they stay until commit; any other reference is refused set-wise), and a
    lock on the caller's rows the batch deletes, in key order (a delete is two statements).
    Only the caller's rows are locked. Parameters :user; :k<i> every key of keyed[i];
    :d<i> the delete keys of deleting[i]; :f<i> the parent keys of refs[i]."""
    user = "CAST(:user AS uuid)"
    ctes, selects = [], []
    for i, t in enumerate(keyed):
        pk, owner = q(t.primary_key), q(t.owner)
        ctes.append(
            f"o{i} AS (SELECT {pk}::text AS k FROM {q(t.name)} "
            f"WHERE {pk} = ANY({_key_array(t, f'k{i}')}) AND {owner} <> {user})"
        )
        selects.append(f"SELECT 'other', {literal(t.name)}, k FROM o{i}")
    for i, t in enumerate(deleting):
        pk, owner = q(t.primary_key), q(t.owner)
        ctes.append(
            f"l{i} AS (SELECT 1 FROM {q(t.name)} WHERE {pk} = ANY({_key_array(t, f'd{i}')}) "
            f"AND {owner} = {user} ORDER BY {pk} FOR UPDATE)"
        )
        selects.append(f"SELECT 'locked', {literal(t.name)}, count(*)::text FROM l{i}")
    for i, (_child, _column, parent) in enumerate(refs):
        pk, owner = q(parent.primary_key), q(parent.owner)
        ctes.append(
            f"r{i} AS (SELECT {pk}::text AS k FROM {q(parent.name)} "
            f"WHERE {pk} = ANY({_key_array(parent, f'f{i}')}) AND {owner} = {user} "
            "FOR KEY SHARE)"
        )
        selects.append(f"SELECT 'ours', {literal(parent.name)}, k FROM r{i}")
    return f"WITH {', '.join(ctes)} {' UNION ALL '.join(selects)}"


OMITTED = "sync omitted"  # not a registry identifier (it has a space), so never a column


@cache
def upsert(table: Table, partial: bool = False) -> str:
    """Insert-or-update with last-write-wins and ownership in the statement itself.
    A newer tombstone of the owner also wins over an older insert. Parameter :rows.

    `partial`: the rows carry the names of the columns they omit; an update keeps the
    caller's stored values there (an insert takes the row's defaults). Full rows, the
    common case, skip the join this needs."""
    name, pk, owner = q(table.name), q(table.primary_key), q(table.owner)
    cols = ", ".join(q(c.name) for c in table.columns)
    updates = ", ".join(
        f"{q(c.name)} = excluded.{q(c.name)}"
        for c in table.columns
        if c.name not in (table.primary_key, table.owner)
    )
    recordset = _recordset(table.columns)
    # An owner's newer tombstone wins over an older insert.
    conditions = [
        "NOT EXISTS (SELECT 1 FROM sync_tombstones t "
        f"WHERE t.table_name = {literal(table.name)} AND t.pk = r.{pk}::text "
        f"AND t.user_id = r.{owner} AND t.updated_at >= r.updated_at)"
    ]
    if partial:
        data = {c.name for c in table.data_columns}
        picked = ", ".join(
            f"CASE WHEN o.{pk} IS NOT NULL AND {literal(c.name)} = ANY(r.{q(OMITTED)}) "
            f"THEN o.{q(c.name)} ELSE r.{q(c.name)} END"
            if c.name in data
            else f"r.{q(c.name)}"
            for c in table.columns
        )
        recordset += f", {q(OMITTED)} text[]"
        stored = f"LEFT JOIN {name} o ON o.{pk} = r.{pk} AND o.{owner} = r.{owner} "
        if table.required:  # a new row cannot go without these: left to the settling
            needed = ", ".join(literal(c) for c in table.required)
            conditions.append(
                f"(o.{pk} IS NOT NULL OR NOT r.{q(OMITTED)} && ARRAY[{needed}]::text[])"
            )
    else:
        picked = ", ".join(f"r.{q(c.name)}" for c in table.columns)
        stored = ""
    return (
        f"INSERT INTO {name} AS s ({cols}) "
        f"SELECT {picked} FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({recordset}) "
        f"{stored}WHERE {' AND '.join(conditions)} "
        f"ORDER BY r.{pk} "
        f"ON CONFLICT ({pk}) DO UPDATE SET {updates} "
        f"WHERE s.{owner} = excluded.{owner} AND s.updated_at < excluded.updated_at "
        f"RETURNING s.{pk}::text"
    )


@cache
def bury(table: Table) -> str:
    """Step one of a pushed delete: tombstones carrying the client's delete time, for keys
    where the caller's row is older or there is no row (so an older insert arriving later
    cannot revive it). Returns the keys whose delete applies. Parameters :rows, :user."""
    name, pk, owner = q(table.name), q(table.primary_key), q(table.owner)
    return (
        "INSERT INTO sync_tombstones AS t (table_name, pk, user_id, updated_at, sync_xid) "
        f"SELECT {literal(table.name)}, r.{pk}::text, CAST(:user AS uuid), r.updated_at, "
        "pg_current_xact_id() "
        f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r({pk} {table.key_column.type}, "
        "updated_at timestamptz) "
        f"WHERE NOT EXISTS (SELECT 1 FROM {name} s WHERE s.{pk} = r.{pk} "
        f"AND (s.{owner} <> CAST(:user AS uuid) OR s.updated_at >= r.updated_at)) "
        f"ORDER BY r.{pk} "
        "ON CONFLICT (table_name, pk, user_id) DO UPDATE "
        "SET updated_at = excluded.updated_at, sync_xid = excluded.sync_xid "
        "WHERE t.updated_at < excluded.updated_at "
        "RETURNING t.pk"
    )


@cache
def delete(table: Table) -> str:
    """Step two: delete the caller's rows older than their delete. The row trigger keeps
    the tombstone step one wrote. Parameters :rows (key + updated_at), :user."""
    name, pk, owner = q(table.name), q(table.primary_key), q(table.owner)
    return (
        f"DELETE FROM {name} s USING jsonb_to_recordset(CAST(:rows AS jsonb)) "
        f"AS r({pk} {table.key_column.type}, updated_at timestamptz) "
        f"WHERE s.{pk} = r.{pk} AND s.{owner} = CAST(:user AS uuid) "
        "AND s.updated_at < r.updated_at"
    )


@cache
def current_rows(tables: tuple[Table, ...]) -> str:
    """The stored state of given keys: owner always, content only of the caller's rows,
    plus the caller's tombstones. Content is sent only while the running total of its
    size stays within :budget bytes (the first row with content always): a key past it
    comes back with its size and no row, and is owed to a later answer.
    Parameters :user, :budget, :k0 …"""
    selects, tomb_filters = [], []
    for i, t in enumerate(tables):
        pk, owner = q(t.primary_key), q(t.owner)
        selects.append(
            f"SELECT {literal(t.name)}::text AS tbl, 'row' AS kind, s.{pk}::text AS pk, "
            f"s.{owner}::text AS own, CASE WHEN s.{owner} = CAST(:user AS uuid) "
            f"THEN {row_json(t, 's')} END AS content, NULL::text AS at "
            f"FROM {q(t.name)} s WHERE s.{pk} = ANY({_key_array(t, f'k{i}')})"
        )
        tomb_filters.append(f"(table_name = {literal(t.name)} AND pk = ANY(CAST(:k{i} AS text[])))")
    selects.append(
        "SELECT table_name, 'tomb', pk, NULL, NULL, "
        f"to_char(updated_at AT TIME ZONE 'UTC', {ISO_UTC}) FROM sync_tombstones "
        f"WHERE user_id = CAST(:user AS uuid) AND ({' OR '.join(tomb_filters)})"
    )
    size = "coalesce(octet_length(u.content::text), 0)"
    return (
        "SELECT s.tbl, s.kind, s.pk, s.own, s.at, "
        "CASE WHEN s.running <= CAST(:budget AS bigint) OR s.running = s.size "
        "THEN s.content END, s.running "
        f"FROM (SELECT u.*, {size} AS size, "
        f'sum({size}) OVER (ORDER BY u.tbl COLLATE "C", u.kind, u.pk COLLATE "C") AS running '
        f"FROM ({' UNION ALL '.join(selects)}) u) s"
    )


def sort_key(table: Table, alias: str) -> str:
    """A row's key as text in byte order: the pull pages by (xid, table, key) in the "C"
    collation, so Python can compare positions the way Postgres does, and the pull index
    (see sync_enable) delivers rows in that order."""
    return f'{alias}.{q(table.primary_key)}::text COLLATE "C"'


@cache
def pull(tables: tuple[Table, ...], first_page: bool) -> str:
    """One page of the caller's changes since snapshot :seen, read against snapshot :upto
    (or the statement's own snapshot on a first page, returned for the cursor), ordered by
    (transaction, table, key), cut at :limit rows and at :budget bytes of row content
    (the first row always when :first_row, so a row larger than the budget still goes).
    Each table's branch starts after its own bound (:x0, :p0 …) — the page position seen
    from that table — so it reads its index in order and stops after :limit rows; JSON is
    built only for those. Parameters :user, :seen, :from_xid, :limit, :budget, :first_row,
    :initial, :upto, :x<i>/:p<i> per table, and :axid, :atable, :akey (the position
    itself) for the tombstones."""
    snapshot = "pg_current_snapshot()" if first_page else "CAST(:upto AS pg_snapshot)"
    window = (
        "x.sync_xid >= CAST(:from_xid AS xid8) "
        "AND NOT pg_visible_in_snapshot(x.sync_xid, CAST(:seen AS pg_snapshot)) "
        "AND pg_visible_in_snapshot(x.sync_xid, cur.snap) "
    )
    branches = []
    for i, t in enumerate(tables):
        key = sort_key(t, "x")
        branches.append(
            f"(SELECT {literal(t.name)}::text AS tbl, 'row' AS kind, x.{q(t.primary_key)}::text "
            f"AS pk, x.sync_xid AS xid, {row_json(t, 'x')} AS row, NULL::text AS at "
            f"FROM {q(t.name)} x, cur WHERE x.{q(t.owner)} = CAST(:user AS uuid) AND {window}"
            f"AND (x.sync_xid, {key}) > (CAST(:x{i} AS xid8), CAST(:p{i} AS text)) "
            f"ORDER BY x.sync_xid, {key} LIMIT :limit)"
        )
    names = ", ".join(literal(t.name) for t in tables)
    branches.append(
        "(SELECT x.table_name, 'tomb', x.pk, x.sync_xid, NULL::jsonb, "
        f"to_char(x.updated_at AT TIME ZONE 'UTC', {ISO_UTC}) "
        "FROM sync_tombstones x, cur WHERE x.user_id = CAST(:user AS uuid) "
        f"AND NOT CAST(:initial AS boolean) AND x.table_name IN ({names}) AND {window}"
        'AND (x.sync_xid, x.table_name COLLATE "C", x.pk COLLATE "C") > '
        "(CAST(:axid AS xid8), CAST(:atable AS text), CAST(:akey AS text)) "
        'ORDER BY x.sync_xid, x.table_name COLLATE "C", x.pk COLLATE "C" LIMIT :limit)'
    )
    order = 'xid, tbl COLLATE "C", pk COLLATE "C"'
    size = "coalesce(octet_length(p.row::text), 0)"
    return (
        f"WITH cur AS (SELECT {snapshot} AS snap), "
        f"page AS (SELECT * FROM ({' UNION ALL '.join(branches)}) b ORDER BY {order} "
        "LIMIT :limit), "
        f"sized AS (SELECT p.*, {size} AS size, sum({size}) OVER (ORDER BY {order}) AS running "
        "FROM page p) "
        "SELECT cur.snap::text, s.tbl, s.kind, s.pk, s.xid::text, "
        "CASE WHEN s.running <= CAST(:budget AS bigint) "
        "OR (CAST(:first_row AS boolean) AND s.running = s.size) THEN s.row END, "
        "s.at, s.size, s.running "
        "FROM cur LEFT JOIN sized s ON true "
        'ORDER BY s.xid, s.tbl COLLATE "C", s.pk COLLATE "C"'
    )
