"""Every SQL statement the server sends, built only from registry identifiers.

A sync is one simple-query message (BEGIN, its bounds, the push, the pull, COMMIT: one
round trip, see docs/design.md "One message"). The simple-query protocol has no
parameters, so the request's values travel inside the SQL text, and only through
`document`: a JSON document, pure ASCII, with no dollar sign in it, inside a dollar-quoted
string. Rows are one such document per table and kind, unpacked by `jsonb_to_recordset`,
so a statement's size grows with the batch but its count does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sync.schema import Column, Share, Table
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


OMITTED = "sync omitted"  # not a registry identifier (it has a space), so never a column


def _recordset(columns: Iterable[Column]) -> str:
    return ", ".join(f"{q(c.name)} {c.type}" for c in columns)


def sort_key(table: Table, alias: str) -> str:
    """A row's key as text in byte order: the pull pages by (xid, table, root, key) in the "C"
    collation, so Python can compare positions the way Postgres does, and the pull index
    (see sync_enable) delivers rows in that order."""
    return f'{alias}.{q(table.primary_key)}::text COLLATE "C"'


def document(value: Any) -> str:
    """`value` as a jsonb literal in SQL text, safe whatever the server's settings.

    The JSON is pure ASCII (`ensure_ascii`), so no client encoding can read its bytes as
    anything else, and every `$` in it (it can only occur inside a JSON string) is written
    as the escape \\u0024, which jsonb reads back as `$`. With no `$` in the text, the
    dollar-quoted string `$j$…$j$` ends only where we end it: no quote, backslash or tag a
    client sends can close it early. Dollar quoting also ignores
    standard_conforming_strings and backslash_quote."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return "CAST($j$" + text.replace("$", "\\u0024") + "$j$ AS jsonb)"


def text_value(value: str) -> str:
    """A text value (see `document`)."""
    return f"({document(value)} #>> '{{}}')"


def script(*statements: str) -> str:
    """Statements as one simple-query message: Postgres runs them in order and stops at
    the first that fails (the transaction is then aborted until ROLLBACK)."""
    return ";\n".join(s for s in statements if s)


# Set in the push, read in the pull: transaction-local settings (set_config(…, true)),
# so they end with the transaction and never reach another client of a pooled
# connection. Names are ours plus registry identifiers only.
def echo_setting(table: str | None) -> str:
    """ctids of the rows (table) or tombstones (None) this transaction wrote exactly as
    the client sent them: the pull leaves them out (no echo)."""
    return literal("sync.echo_" + (table or "tombstones"))


def settle_setting(table: str) -> str:
    """Keys of a table's changes that did not apply: the pull reads what the server
    holds for them, so the client converges."""
    return literal("sync.settle_" + table)


def _append_text(setting: str, addition: str) -> str:
    """set_config that adds to what an earlier push statement of the transaction (careful
    mode runs several) left; a savepoint rolled back takes its addition with it."""
    return (
        f"set_config({setting}, concat_ws(' ', nullif(current_setting({setting}, true), ''), "
        f"{addition}), true)"
    )


def _append_json(setting: str, addition: str) -> str:
    return (
        f"set_config({setting}, (coalesce(nullif(current_setting({setting}, true), ''), "
        f"'[]')::jsonb || coalesce({addition}, '[]'::jsonb))::text, true)"
    )


@dataclass
class Group:
    """One table's part of a push: rows as dicts of registry columns (partial ones also
    carry OMITTED), deletes as {key, updated_at}, and the keys whose result must not count
    as the client's own (it holds something else locally)."""

    table: Table
    full: list[dict[str, Any]]
    partial: list[dict[str, Any]]
    deletes: list[dict[str, Any]]
    no_echo: list[str]


ORD = "sync ord"  # a pulled row's place in the page order (not a registry identifier)
RK = "sync rk"  # the root a moved-in row is paged under, "" for other rows (ditto)
TID = "sync tid"  # the ctid a RETURNING reports (not a registry identifier: it has a space)


def _upsert(table: Table, source: str, partial: bool, refs_ok: str, usr: str) -> str:
    """Insert-or-update of the rows of CTE `source` with last-write-wins and ownership in
    the statement: another user's key (o_<table>) and an orphan (`refs_ok` false) are left
    out; an owner's newer tombstone wins over an older insert.

    `partial`: the rows carry the names of the columns they omit; an update keeps the
    caller's stored values there (an insert takes the row's defaults, and a new row that
    omits a required column is left to the caller to refuse)."""
    name, pk, owner = q(table.name), q(table.primary_key), q(table.owner)
    cols = ", ".join(q(c.name) for c in table.columns)
    updates = ", ".join(
        f"{q(c.name)} = excluded.{q(c.name)}"
        for c in table.columns
        if c.name not in (table.primary_key, table.owner)
    )
    tombstone = (
        "NOT EXISTS (SELECT 1 FROM sync_tombstones t "
        f"WHERE t.table_name = {literal(table.name)} AND t.pk = r.{pk}::text "
        f"AND t.user_id = r.{owner} AND t.updated_at >= r.updated_at)"
    )
    may_update = f"s.{owner} = excluded.{owner}"
    if table.share is not None:
        # Another user's tombstone counts too, but only for a key no row holds: a row that
        # left someone's view leaves them a tombstone while it lives on.
        tombstone = (
            f"(EXISTS (SELECT 1 FROM {name} z WHERE z.{pk} = r.{pk}) OR NOT EXISTS ("
            "SELECT 1 FROM sync_tombstones t "
            f"WHERE t.table_name = {literal(table.name)} AND t.pk = r.{pk}::text "
            "AND t.updated_at >= r.updated_at))"
        )
        may_update = may_write(table, "s", usr)  # again, on the row the conflict found
    conditions = [f"r.{pk} NOT IN (SELECT k FROM o_{table.name})", refs_ok, tombstone]
    if partial:
        data = {c.name for c in table.data_columns}
        picked = ", ".join(
            f"CASE WHEN o.{pk} IS NOT NULL AND {literal(c.name)} = ANY(r.{q(OMITTED)}) "
            f"THEN o.{q(c.name)} ELSE r.{q(c.name)} END"
            if c.name in data
            else f"r.{q(c.name)}"
            for c in table.columns
        )
        stored = f"LEFT JOIN {name} o ON o.{pk} = r.{pk} AND o.{owner} = r.{owner} "
        if table.required:
            needed = ", ".join(literal(c) for c in table.required)
            conditions.append(
                f"(o.{pk} IS NOT NULL OR NOT r.{q(OMITTED)} && ARRAY[{needed}]::text[])"
            )
    else:
        picked = ", ".join(f"r.{q(c.name)}" for c in table.columns)
        stored = ""
    returning = ", ".join(f"s.{q(c.name)}" for c in table.columns)
    return (
        f"INSERT INTO {name} AS s ({cols}) SELECT {picked} FROM {source} r {stored}"
        f"WHERE {' AND '.join(conditions)} ORDER BY r.{pk} "
        f"ON CONFLICT ({pk}) DO UPDATE SET {updates} "
        f"WHERE {may_update} AND s.updated_at < excluded.updated_at "
        f"RETURNING s.ctid AS {q(TID)}, {returning}"
    )


def mine(table: Table, alias: str, name: str, usr: str) -> str:
    """A stored row the push may change: the caller's, or for a shared table one that
    is not among the batch's forbidden keys (o_<name>)."""
    if table.share is None:
        return f"{alias}.{q(table.owner)} = {usr}"
    return f"{alias}.{q(table.primary_key)} NOT IN (SELECT k FROM o_{name})"


def user_id(user: str) -> str:
    return f"CAST({text_value(user)} AS uuid)"


def root_sets(share: Share, usr: str) -> dict[str, str]:
    """CTEs naming a user's root keys, by what they may do: own (the root's owner), write
    (owner, or a member in a writer role), see (owner, or any member)."""
    root, key, owner = q(share.root), q(share.root_key), q(share.root_owner)
    mine = f"SELECT s.{key} AS k FROM {root} s WHERE s.{owner} = {usr}"
    member = (
        f"SELECT m.{q(share.member_root)} FROM {q(share.members)} m "
        f"WHERE m.{q(share.member_user)} = {usr}"
    )
    writers = "ARRAY[" + ", ".join(text_value(w) for w in share.writers) + "]::text[]"
    return {
        f"ro_{share.root}": mine,
        f"rw_{share.root}": f"{mine} UNION {member} AND m.{q(share.member_role)} = ANY({writers})"
        if share.writers
        else mine,
        f"rv_{share.root}": f"{mine} UNION {member}",
    }


def may_write(table: Table, alias: str, usr: str, batch_roots: str = "") -> str:
    """SQL true when the user may write the row `alias` (stored, or as the push would
    store it): the owner of a private row; for a shared row, the root's owner or a writer
    member; for a members row, the root's owner; for a root row, its owner."""
    share, owner = table.share, f"{alias}.{q(table.owner)}"
    if share is None or share.kind == "root":
        return f"{owner} = {usr}"
    scope = f"{alias}.{q(share.column)}"
    # `batch_roots`: a query of the root keys this push inserts or updates as their owner.
    fresh = f" OR {_in(scope, batch_roots)}" if batch_roots else ""
    if share.kind == "members":
        return f"({_in(scope, f'SELECT k FROM ro_{share.root}')}{fresh})"
    return (
        f"(({scope} IS NULL AND {owner} = {usr}) OR {_in(scope, f'SELECT k FROM rw_{share.root}')}"
        f"{fresh})"
    )


def _in(scope: str, query: str) -> str:
    """`scope IN (query)`, false (never NULL) for a NULL scope: under NOT, a NULL would
    let a row through as if allowed."""
    return f"({scope} IS NOT NULL AND {scope} IN ({query}))"


def may_see(table: Table, alias: str, usr: str) -> str:
    """SQL true when the user sees the row `alias` (see migrations/0005)."""
    share, owner = table.share, f"{alias}.{q(table.owner)}"
    if share is None:
        return f"{owner} = {usr}"
    scope = f"{alias}.{q(share.column)}"
    seen = _in(scope, f"SELECT k FROM rv_{share.root}")
    return seen if share.kind != "shared" else f"(({scope} IS NULL AND {owner} = {usr}) OR {seen})"


def _root_ctes(tables: Iterable[Table], usr: str, names: Sequence[str]) -> list[str]:
    """The root_sets CTEs named in `names` that the tables' shares need, once each."""
    out: dict[str, str] = {}
    for t in tables:
        if t.share is not None:
            for name, body in root_sets(t.share, usr).items():
                if name.split("_", 1)[0] in names:
                    out.setdefault(name, f"{name} AS MATERIALIZED ({body})")
    return list(out.values())


def push(groups: Sequence[Group], tables: dict[str, Table], user: str) -> str:
    """The whole push in one statement; `groups` parents-first.

    Its CTEs, in the order the final UNION ALL runs them (a data-modifying CTE runs when
    first read; each branch is read to its end before the next):
    - o<i>: keys of the batch that are another user's row: answered `forbidden`, never
      written, so no lock lands on another user's row;
    - l<i>: the caller's rows the batch deletes, locked FOR UPDATE in key order (the
      tombstone and the delete below decide on these locked versions);
    - r<i>_<col>: referenced parents that are the caller's, locked FOR KEY SHARE, so they
      stay until commit;
    - u<i> / q<i>: upserts of full rows / of rows that omit columns, with last-write-wins
      and ownership in the statement, parents first; a child row whose parent is neither
      the caller's stored row nor one this statement applied is left out (refused by the
      caller as a set, with one message);
    - b<i> / x<i>: a pushed delete's tombstone (with the client's delete time), then the
      delete, children first.
    It returns ('o', table, key) for another user's keys, ('r', table, key, column) for
    orphans, and ('n', table, key) for every key that did not apply; the rest applied.
    Rows are sorted by key in every statement, so concurrent pushes lock in one order.
    It sets echo_setting / settle_setting for the pull statement that follows."""
    usr = user_id(user)
    ctes: list[str] = _root_ctes((g.table for g in groups), usr, ("ro", "rw", "rv"))
    reads: list[str] = []  # the final UNION ALL, in execution order
    finals: list[str] = []  # set_config calls, after everything else
    upserted: dict[str, list[str]] = {}  # table -> CTEs whose RETURNING has its applied keys
    fresh: dict[str, list[str]] = {}  # root table -> its row CTEs in this push (f, p)
    for g in groups:
        t, i = g.table, g.table.name
        pk, owner, name = q(t.primary_key), q(t.owner), q(t.name)
        key_type = t.key_column.type
        sources = []
        if t.share is not None and t.share.kind == "root":
            fresh[i] = [src for src, rows in (("f", g.full), ("p", g.partial)) if rows]
        if g.full:
            ctes.append(
                f"f_{i} AS MATERIALIZED (SELECT * FROM jsonb_to_recordset("
                f"{document(g.full)}) AS r({_recordset(t.columns)}))"
            )
            sources.append(f"SELECT {pk} AS k FROM f_{i}")
        if g.partial:
            ctes.append(
                f"p_{i} AS MATERIALIZED (SELECT * FROM jsonb_to_recordset({document(g.partial)}) "
                f"AS r({_recordset(t.columns)}, {q(OMITTED)} text[]))"
            )
            sources.append(f"SELECT {pk} AS k FROM p_{i}")
        if g.deletes:
            ctes.append(
                f"d_{i} AS MATERIALIZED (SELECT * FROM jsonb_to_recordset({document(g.deletes)}) "
                f"AS r({pk} {key_type}, updated_at timestamptz))"
            )
            sources.append(f"SELECT {pk} AS k FROM d_{i}")
        ctes.append(f"k_{i} AS MATERIALIZED ({' UNION ALL '.join(sources)})")
        if t.share is None:
            forbidden = (
                f"SELECT s.{pk} AS k FROM {name} s "
                f"WHERE s.{pk} IN (SELECT k FROM k_{i}) AND s.{owner} <> {usr}"
            )
        else:
            # Stored rows the caller may not write, and rows it may not write as sent:
            # into a root it may not write, or naming an owner other than itself or the
            # stored row's (a shared row keeps its creator).
            forbidden = (
                f"SELECT s.{pk} AS k FROM {name} s "
                f"WHERE s.{pk} IN (SELECT k FROM k_{i}) AND NOT {may_write(t, 's', usr)}"
            )
            root = t.share.root
            batch_roots = " UNION ALL ".join(
                f"SELECT {q(tables[root].primary_key)} FROM {src}_{root} "
                f"WHERE {q(tables[root].primary_key)} NOT IN (SELECT k FROM o_{root})"
                for src in fresh.get(root, ())
            )
            for src, rows in (("f", g.full), ("p", g.partial)):
                if rows:
                    named = (
                        f" OR (r.{owner} <> {usr} AND r.{owner} IS DISTINCT FROM s.{owner})"
                        if t.share.kind == "shared"
                        else ""
                    )
                    # A root the caller does not see is left to the reference check, which
                    # refuses it as it refuses a root that does not exist: no code tells
                    # them apart.
                    scope = f"r.{q(t.share.column)}"
                    seen = (
                        f"({scope} IS NULL OR {scope} IN (SELECT k FROM rv_{root}))"
                        if t.share.kind != "root"
                        else "true"
                    )
                    forbidden += (
                        f" UNION SELECT r.{pk} FROM {src}_{i} r LEFT JOIN {name} s "
                        f"ON s.{pk} = r.{pk} WHERE (NOT {may_write(t, 'r', usr, batch_roots)} "
                        f"AND {seen}){named}"
                    )
        ctes.append(f"o_{i} AS MATERIALIZED ({forbidden})")
        reads.append(f"SELECT 'o', {literal(i)}, k::text, NULL FROM o_{i}")
        if g.deletes:
            ctes.append(
                f"l_{i} AS MATERIALIZED (SELECT s.{pk} AS k, s.updated_at FROM {name} s "
                f"WHERE s.{pk} IN (SELECT {pk} FROM d_{i}) AND {mine(t, 's', i, usr)} "
                f"ORDER BY s.{pk} FOR UPDATE)"
            )
            reads.append(f"SELECT 'l', {literal(i)}, count(*)::text, NULL FROM l_{i}")
    for g in groups:  # parents first
        t, i = g.table, g.table.name
        pk, owner, name = q(t.primary_key), q(t.owner), q(t.name)
        checks: list[tuple[str, str]] = []  # (column, SQL true when the reference is fine)
        for column, parent in sorted(t.references.items()):
            if not (g.full or g.partial):
                break
            col, cte = q(column), f"r_{i}_{column}"
            referenced = " UNION ALL ".join(
                f"SELECT {col} AS k FROM {src}_{i}"
                for src, rows in (("f", g.full), ("p", g.partial))
                if rows
            )
            ptable = tables[parent]
            ppk, powner = q(ptable.primary_key), q(ptable.owner)
            usable = f"s.{powner} = {usr}"
            if t.share is not None and t.share.kind == "shared" and column == t.share.column:
                usable = f"s.{ppk} IN (SELECT k FROM rw_{parent})"  # a root it may write
            ctes.append(
                f"{cte} AS MATERIALIZED (SELECT s.{ppk} AS k FROM {q(parent)} s "
                f"WHERE s.{ppk} IN ({referenced}) AND {usable} FOR KEY SHARE OF s)"
            )
            reads.append(f"SELECT 'k', {literal(i)}, count(*)::text, NULL FROM {cte}")
            ok = [f"r.{col} IS NULL", f"r.{col} IN (SELECT k FROM {cte})"]
            ok += [f"r.{col} IN (SELECT {ppk} FROM {u})" for u in upserted.get(parent, [])]
            checks.append((column, "(" + " OR ".join(ok) + ")"))
        refs_ok = " AND ".join(c for _, c in checks) or "true"
        applied = []
        for kind, rows, partial in (("u", g.full, False), ("q", g.partial, True)):
            if not rows:
                continue
            cte = f"{kind}_{i}"
            source = f"{'p' if partial else 'f'}_{i}"
            ctes.append(f"{cte} AS ({_upsert(t, source, partial, refs_ok, usr)})")
            reads.append(f"SELECT 'a', {literal(i)}, count(*)::text, NULL FROM {cte}")
            applied.append(cte)
            if checks:
                first_bad = " ".join(f"WHEN NOT {c} THEN {literal(col)}" for col, c in checks)
                reads.append(
                    f"SELECT 'r', {literal(i)}, r.{pk}::text, CASE {first_bad} END "
                    f"FROM {source} r WHERE NOT ({refs_ok}) AND r.{pk} NOT IN (SELECT k FROM o_{i})"
                )
        upserted[i] = applied
        if g.full:
            same = " AND ".join(
                f"u.{q(c.name)} IS NOT DISTINCT FROM r.{q(c.name)}" for c in t.columns
            )
            no_echo = ""
            if g.no_echo:
                keys = f"SELECT jsonb_array_elements_text({document(g.no_echo)})"
                no_echo = f" AND u.{pk}::text NOT IN ({keys})"
            finals.append(
                _append_text(
                    echo_setting(i),
                    f"(SELECT string_agg(u.{q(TID)}::text, ' ') FROM u_{i} u "
                    f"JOIN f_{i} r ON r.{pk} = u.{pk} WHERE {same}{no_echo})",
                )
            )
    tomb_echo = []
    for g in reversed(groups):  # children first, so parents are free to go
        if not g.deletes:
            continue
        t, i = g.table, g.table.name
        pk, owner, name = q(t.primary_key), q(t.owner), q(t.name)
        ctes.append(
            f"b_{i} AS (INSERT INTO sync_tombstones AS t (table_name, pk, user_id, updated_at, "
            f"sync_xid) SELECT {literal(i)}, r.{pk}::text, {usr}, r.updated_at, "
            f"pg_current_xact_id() FROM d_{i} r WHERE r.{pk} NOT IN (SELECT k FROM o_{i}) "
            f"AND NOT EXISTS (SELECT 1 FROM l_{i} s WHERE s.k = r.{pk} "
            f"AND s.updated_at >= r.updated_at) ORDER BY r.{pk} "
            "ON CONFLICT (table_name, pk, user_id) DO UPDATE "
            "SET updated_at = excluded.updated_at, sync_xid = excluded.sync_xid "
            f"WHERE t.updated_at < excluded.updated_at RETURNING t.pk, t.ctid AS {q(TID)})"
        )
        ctes.append(
            f"x_{i} AS (DELETE FROM {name} s USING d_{i} r WHERE s.{pk} = r.{pk} "
            f"AND {mine(t, 's', i, usr)} AND s.updated_at < r.updated_at RETURNING 1)"
        )
        reads.append(f"SELECT 'd', {literal(i)}, count(*)::text, NULL FROM b_{i}")
        reads.append(f"SELECT 'x', {literal(i)}, count(*)::text, NULL FROM x_{i}")
        no_echo = (
            f" AND b.pk NOT IN (SELECT jsonb_array_elements_text({document(g.no_echo)}))"
            if g.no_echo
            else ""
        )
        tomb_echo.append(f"SELECT b.{q(TID)} FROM b_{i} b WHERE true{no_echo}")
    if tomb_echo:
        finals.append(
            _append_text(
                echo_setting(None),
                f"(SELECT string_agg(e.{q(TID)}::text, ' ') "
                f"FROM ({' UNION ALL '.join(tomb_echo)}) e)",
            )
        )
    for g in groups:
        t, i = g.table, g.table.name
        pk = q(t.primary_key)
        done = [f"SELECT {pk}::text FROM {u}" for u in upserted.get(i, [])]
        if g.deletes:
            done.append(f"SELECT pk FROM b_{i}")
        ctes.append(
            f"n_{i} AS MATERIALIZED (SELECT k::text AS k FROM k_{i} "
            f"WHERE k::text NOT IN ({' UNION ALL '.join(done)}))"
            if done
            else f"n_{i} AS MATERIALIZED (SELECT k::text AS k FROM k_{i})"
        )
        reads.append(f"SELECT 'n', {literal(i)}, k, NULL FROM n_{i}")
        finals.append(_append_json(settle_setting(i), f"(SELECT jsonb_agg(k) FROM n_{i})"))
    # set_config answers the value it set: only its length comes back.
    reads += [f"SELECT 'g', NULL, length({call})::text, NULL" for call in finals]
    return f"WITH {', '.join(ctes)} {' UNION ALL '.join(reads)}"


@dataclass
class PullInput:
    """What a pull statement reads: the cursor's parts, the keys to settle, and the byte
    and row bounds of the answer."""

    user: str
    seen: str  # the cursor's snapshot
    upto: str | None  # the snapshot pages are read against, while paging
    # per table: (xid, root, key) the page starts after (sync.pull.table_bounds)
    bounds: dict[str, tuple[str, str | None, str | None]]
    after: tuple[str, str, str, str]  # the page position itself (for the tombstones)
    initial: bool
    settle: dict[str, list[str]]  # keys per table to read the current state of
    pushed: tuple[str, ...]  # tables a push statement of this transaction wrote
    limit: int
    budget: int


def pull(tables: tuple[Table, ...], given: PullInput) -> str:
    """The answer's rows in one statement, read after the push:

    - part 0, the settle rows: for every key the push did not apply (from settle_setting)
      and every key the caller names (refused changes, rows an earlier answer owed), what
      the server holds: the caller's row ('row'), another user's row ('other', never its
      content), the caller's tombstone ('tomb'), nothing ('none'), or a version this
      transaction wrote ('own': the page below carries it, or the client sent it);
    - part 1, one page of the caller's changes since snapshot `seen`, read against the
      snapshot `upto` (on a first page, the statement's own, with this transaction counted
      as seen: `sync_snapshot_with`), ordered by (transaction, table, root, key) (root:
      the root key of a moved-in row, "" for the rest), at most `limit` rows. Rows and
      tombstones this transaction wrote exactly as the client sent
      them (echo_setting) are left out: the client holds them.

    Row content is sent while the running total of its size stays within `budget` bytes
    (the first row with content always). Each table's branch starts after its own bound
    (the page position seen from that table), so it reads its index in order and stops
    after `limit` rows; JSON is built only for those. The first row always carries the
    snapshot (for the cursor), even when nothing changed."""
    usr = user_id(given.user)
    own = "pg_current_xact_id_if_assigned()"
    if given.upto is None:
        snapshot = f"sync_snapshot_with(pg_current_snapshot(), {own})"
    else:
        snapshot = f"CAST({text_value(given.upto)} AS pg_snapshot)"
    seen = f"CAST({text_value(given.seen)} AS pg_snapshot)"
    ctes = [f"cur AS (SELECT {snapshot} AS snap, {own} AS own)"]
    xmin = f"CAST({text_value(given.seen.split(':', 1)[0])} AS xid8)"

    def changed(alias: str) -> str:
        """The row's transaction is in the window: not seen before, seen now."""
        return (
            f"{alias}.sync_xid >= {xmin} AND NOT pg_visible_in_snapshot({alias}.sync_xid, {seen}) "
            f"AND pg_visible_in_snapshot({alias}.sync_xid, cur.snap) "
        )

    window = changed("x")
    ctes += _root_ctes(tables, usr, ("rv",))
    by_name = {t.name: t for t in tables}
    for root in sorted(
        {t.share.root: t.share for t in tables if t.share is not None}.values(),
        key=lambda share: share.root,
    ):
        # Move-in: the caller's membership rows written in the window. Every row of their
        # root is delivered, however old, at the membership's place in the page order,
        # root by root. A first sync takes every root the caller sees that way (at xid 1,
        # before anything else), so it, too, pages one root at a time.
        # A root the caller was given by an ownership transfer (migrations/0008) moves in
        # the same way, while they still see it.
        if given.initial:
            moved = f"SELECT k, CAST('1' AS xid8) AS moved FROM rv_{root.root}"
        else:
            key_type = by_name[root.root].key_column.type
            moved = (
                f"SELECT DISTINCT ON (k) k, moved FROM (SELECT m.{q(root.member_root)} AS k, "
                f"m.sync_xid AS moved FROM {q(root.members)} m, cur "
                f"WHERE m.{q(root.member_user)} = {usr} AND {changed('m')}"
                f"UNION ALL SELECT CAST(g.root_key AS {key_type}), g.sync_xid "
                f"FROM sync_grants g, cur WHERE g.user_id = {usr} "
                f"AND g.root_table = {literal(root.root)} AND {changed('g')}"
                f"AND CAST(g.root_key AS {key_type}) IN (SELECT k FROM rv_{root.root})"
                ") a ORDER BY k, moved"
            )
        ctes.append(
            f'vm_{root.root} AS MATERIALIZED (SELECT a.k, a.moved, a.k::text COLLATE "C" AS rk '
            f"FROM ({moved}) a WHERE a.k IS NOT NULL)"
        )
    settles, branches = [], []
    for t in tables:
        i, pk, owner, name = t.name, q(t.primary_key), q(t.owner), q(t.name)
        keys = (
            [f"SELECT jsonb_array_elements_text({document(given.settle[i])}) AS k"]
            if (given.settle.get(i))
            else []
        )
        if i in given.pushed:
            setting = settle_setting(i)
            keys.append(
                "SELECT jsonb_array_elements_text(coalesce(nullif(current_setting("
                f"{setting}, true), ''), '[]')::jsonb) AS k"
            )
            ctes.append(
                f"e_{i} AS MATERIALIZED (SELECT CAST(unnest(string_to_array(nullif("
                f"current_setting({echo_setting(i)}, true), ''), ' ')) AS tid) AS e)"
            )
        if keys:
            ctes.append(f"sk_{i} AS (SELECT DISTINCT k FROM ({' UNION ALL '.join(keys)}) a)")
            settles.append(
                f"SELECT 0 AS part, {literal(i)}::text AS tbl, CASE "
                f"WHEN s.{pk} IS NULL THEN CASE WHEN tb.pk IS NULL THEN 'none' "
                "WHEN tb.sync_xid = c.own THEN 'own' ELSE 'tomb' END "
                f"WHEN NOT {may_see(t, 's', usr)} THEN 'other' "
                "WHEN s.sync_xid = c.own THEN 'own' ELSE 'row' END AS kind, "
                "k.k AS pk, NULL::xid8 AS xid, "
                f"CASE WHEN {may_see(t, 's', usr)} AND s.sync_xid IS DISTINCT FROM c.own "
                f"THEN {row_json(t, 's')} END AS row, "
                f"CASE WHEN s.{pk} IS NULL THEN to_char(tb.updated_at AT TIME ZONE 'UTC', "
                f"{ISO_UTC}) END AS at, NULL::text AS rk "
                f"FROM sk_{i} k CROSS JOIN cur c "
                f"LEFT JOIN {name} s ON s.{pk} = CAST(k.k AS {t.key_column.type}) "
                f"LEFT JOIN sync_tombstones tb ON tb.table_name = {literal(i)} "
                f"AND tb.pk = k.k AND tb.user_id = {usr}"
            )
        xid, root_bound, key = given.bounds[i]
        # Rows not moved in sort under root "": past a position inside a moved-in root at
        # this xid, they are done up to it.
        bound_key = "NULL::text" if key is None or root_bound != "" else text_value(key)
        no_echo = (
            f"AND (x.sync_xid IS DISTINCT FROM cur.own OR x.ctid NOT IN (SELECT e FROM e_{i})) "
            if i in given.pushed
            else ""
        )
        # JSON is built outside the LIMIT: when the planner sorts a user's rows instead
        # of reading the index in order, it would otherwise build it for every row.
        bound = f"(CAST({text_value(xid)} AS xid8), {bound_key})"
        sk = sort_key(t, "x")
        limit = f"ORDER BY {q(ORD)}, {q(RK)}, {sk} LIMIT {int(given.limit)}"
        # The caller's own rows changed in the window (the owner index, in its order).
        own_rows = (
            f"SELECT x.*, x.sync_xid AS {q(ORD)}, ''::text AS {q(RK)} FROM {name} x, cur "
            f"WHERE x.{owner} = {usr} AND {window}{no_echo}AND (x.sync_xid, {sk}) > {bound} "
        )
        if t.share is None:
            chosen = f"{own_rows}{limit}"
        else:
            # Three parts, each read in its index's order: rows changed in the window in
            # roots the caller sees and did not just move into; every row of the roots it
            # moved into (at the membership's place); private rows (scope NULL). The first
            # two read each root's own range of the share index (LATERAL): their cost
            # follows the caller's roots and changed rows, never the table's size (an
            # `IN` let the planner scan the whole index; see design.md "Sharing").
            share = t.share
            scope, root = f"x.{q(share.column)}", share.root
            text = "NULL::text"
            # The page stopped inside a moved-in root (root key "" is the rows not moved in;
            # a root whose key reads "" is then re-read from its start: duplicates only).
            inside = bool(root_bound) and key is not None
            at_root = (
                f"(CAST({text_value(xid)} AS xid8), "
                f"{text if root_bound is None else text_value(root_bound)})"
            )
            parts = [
                f"SELECT x.*, x.sync_xid AS {q(ORD)}, ''::text AS {q(RK)} FROM rv_{root} r "
                f"CROSS JOIN LATERAL (SELECT x.* FROM {name} x, cur WHERE {scope} = r.k "
                f"AND {window}{no_echo}AND (x.sync_xid, {sk}) > {bound} "
                f"ORDER BY x.sync_xid, {sk} LIMIT {int(given.limit)}) x "
                f"WHERE NOT EXISTS (SELECT 1 FROM vm_{root} v WHERE v.k = r.k) {limit}",
                # Root by root, in (membership xid, root key) order, so the page stops
                # after the roots it needs: the roots before its position are skipped
                # whole, the roots after it read from their start.
                f"SELECT x.*, v.moved AS {q(ORD)}, v.rk AS {q(RK)} FROM (SELECT * FROM "
                f"vm_{root} WHERE (moved, rk) {'>' if inside else '>='} {at_root} "
                "ORDER BY moved, rk) v "
                f"CROSS JOIN LATERAL (SELECT x.* FROM {name} x, cur WHERE {scope} = v.k "
                f"AND pg_visible_in_snapshot(x.sync_xid, cur.snap) {no_echo}"
                f"ORDER BY {sk} LIMIT {int(given.limit)}) x {limit}",
            ]
            if inside:
                # The root the page is in, named as a constant: the planner then knows how
                # large it is and reads the `_sync_root` index (migrations/0010) from the
                # position on; as a LATERAL parameter, an average root's size, it may read
                # and sort the whole root on every page.
                here = text_value(root_bound)
                key_type = by_name[root].key_column.type
                parts.append(
                    f"SELECT x.*, CAST({text_value(xid)} AS xid8) AS {q(ORD)}, "
                    f"CAST({here} AS text) AS {q(RK)} FROM {name} x, cur "
                    f"WHERE EXISTS (SELECT 1 FROM vm_{root} v WHERE (v.moved, v.rk) = {at_root}) "
                    f"AND {scope} = CAST({here} AS {key_type}) AND {sk} > {text_value(key)} "
                    f"AND pg_visible_in_snapshot(x.sync_xid, cur.snap) {no_echo}{limit}"
                )
            if share.kind == "shared":
                # num_nulls, not IS NULL: an index condition `root key IS NULL` on the share
                # index would read every user's private rows (the planner, estimating few,
                # chose it: 180 ms a page for 100 000 private rows); the owner index reads
                # the caller's alone, in order.
                parts.append(f"{own_rows}AND num_nulls({scope}) = 1 {limit}")
            chosen = f"SELECT x.* FROM ({' UNION ALL '.join(f'({p})' for p in parts)}) x {limit}"
        branches.append(
            f"(SELECT {literal(i)}::text AS tbl, 'row' AS kind, k.{pk}::text AS pk, "
            f"k.{q(ORD)} AS xid, {row_json(t, 'k')} AS row, NULL::text AS at, k.{q(RK)} AS rk "
            f"FROM ({chosen}) k)"
        )
    names = ", ".join(literal(t.name) for t in tables)
    tomb_echo = ""
    if given.pushed:
        ctes.append(
            "e_tombstones AS MATERIALIZED (SELECT CAST(unnest(string_to_array(nullif("
            f"current_setting({echo_setting(None)}, true), ''), ' ')) AS tid) AS e)"
        )
        tomb_echo = (
            "AND (x.sync_xid IS DISTINCT FROM cur.own "
            "OR x.ctid NOT IN (SELECT e FROM e_tombstones)) "
        )
    visible = []  # a tombstone is never sent for a key the caller sees (sync_track)
    for t in tables:
        if t.share is not None:
            cast = (
                f"CASE WHEN x.table_name = {literal(t.name)} "
                f"THEN CAST(x.pk AS {t.key_column.type}) END"
            )
            visible.append(
                f"AND NOT EXISTS (SELECT 1 FROM {q(t.name)} s WHERE s.{q(t.primary_key)} = {cast} "
                f"AND {may_see(t, 's', usr)}) "
            )
    # A first sync sends no tombstones (the client holds nothing), except those its own
    # push left in a state other than the one it sent (a delete that beat an insert of
    # the same key in the batch): the client holds that row.
    axid, atable, aroot, akey = given.after
    # Tombstones sort under root "" (as rows not moved in do).
    tomb_key = text_value(akey) if aroot == "" else "NULL::text"
    branches.append(
        "(SELECT x.table_name, 'tomb', x.pk, x.sync_xid, NULL::jsonb, "
        f"to_char(x.updated_at AT TIME ZONE 'UTC', {ISO_UTC}), ''::text "
        f"FROM sync_tombstones x, cur WHERE x.user_id = {usr} "
        f"AND {'x.sync_xid = cur.own' if given.initial else 'true'} "
        f"AND x.table_name IN ({names}) "
        f"AND {window}{tomb_echo}{''.join(visible)}"
        'AND (x.sync_xid, x.table_name COLLATE "C", x.pk COLLATE "C") > '
        f"(CAST({text_value(axid)} AS xid8), {text_value(atable)}, {tomb_key}) "
        'ORDER BY x.sync_xid, x.table_name COLLATE "C", x.pk COLLATE "C" '
        f"LIMIT {int(given.limit)})"
    )
    order = 'xid, tbl COLLATE "C", rk COLLATE "C", pk COLLATE "C"'
    ctes.append(
        f"page AS (SELECT * FROM ({' UNION ALL '.join(branches)}) b ORDER BY {order} "
        f"LIMIT {int(given.limit)})"
    )
    parts = [*settles, "SELECT 1 AS part, tbl, kind, pk, xid, row, at, rk FROM page"]
    ctes.append(f"answer AS ({' UNION ALL '.join(parts)})")
    size = "coalesce(octet_length(a.row::text), 0)"
    ctes.append(
        f"sized AS (SELECT a.*, {size} AS size, "
        f"sum({size}) OVER (ORDER BY a.part, a.{order.replace(', ', ', a.')}) AS running "
        "FROM answer a)"
    )
    return (
        f"WITH {', '.join(ctes)} "
        "SELECT 'p', cur.snap::text, s.part, s.tbl, s.kind, s.pk, s.xid::text, "
        f"CASE WHEN s.running <= {int(given.budget)} OR s.running = s.size THEN s.row::text END, "
        "s.at, s.size, s.running, s.rk FROM cur LEFT JOIN sized s ON true "
        f"ORDER BY s.part, s.{order.replace(', ', ', s.')}"
    )


SCHEMA_MOVED = "SY409"  # raised by sync_expect_schema (migrations/0004)


def expect_schema(stamp: str) -> str:
    """Stops the message (SQLSTATE SY409) when the registry's stamp is no longer `stamp`."""
    return f"SELECT 'v', sync_expect_schema({text_value(stamp)})::text"
