"""The registry read from the database: the tables `sync_enable` recorded (sync_tables) and,
from the catalog, their columns, types, NOT NULL, defaults, key, owner and foreign keys.

The migration is the one declaration of a synced table; the server learns it from here
and the client's schema is generated from the same description (`describe`), so no second
hand-written copy can drift. It is read once per isolate/process and kept with the
registry's version (`sync_schema.version`, bumped by sync_enable/sync_disable and by
`make migrate` after each migration), which each sync reads in the round trip that opens
its transaction: a migration is noticed by the next sync at no extra round trip, and the
registry is read again. (A fingerprint of the catalog itself would also catch DDL done by
hand, but planning its catalog joins costs ~1.5 ms per sync; by hand, call
`sync_schema_changed()`.)

Identifiers still reach SQL only from the registry built here: the catalog's names pass
`sync.schema.Table`'s plain-identifier check like hand-written ones did.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sync.db import Connection, Db
from sync.schema import MISSING, Column, Registry, Share, Table

# format_type() names -> the registry's type names (sync.schema.TYPES).
SQL_TYPES = {
    "uuid": "uuid",
    "text": "text",
    "boolean": "boolean",
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "double precision": "double precision",
    "real": "real",
    "jsonb": "jsonb",
    "timestamp with time zone": "timestamptz",
}
# The registry's types as the client sees them on the wire (client/src/schema.js types).
WIRE_TYPES = {
    "uuid": "uuid",
    "text": "text",
    "boolean": "boolean",
    "smallint": "integer",
    "integer": "integer",
    "bigint": "integer",
    "double precision": "real",
    "real": "real",
    "jsonb": "json",
    "timestamptz": "timestamp",
}

STAMP = "SELECT version::text FROM sync_schema"
# Opens a sync's transaction and reads the stamp in the same simple-query message: one
# round trip, as the bare BEGIN was (measured: +0.1 ms of server time).
BEGIN_AND_STAMP = "BEGIN; " + STAMP

COLUMNS = """
SELECT t.table_name, t.pk_column, t.owner_column, c.oid IS NOT NULL,
       a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid)
FROM sync_tables t
LEFT JOIN pg_class c
       ON c.relname = t.table_name AND c.relnamespace = current_schema()::regnamespace
LEFT JOIN pg_attribute a
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'sync_xid'
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
ORDER BY t.table_name, a.attnum
"""

# Single-column foreign keys between synced tables that point at the parent's key.
FOREIGN_KEYS = """
SELECT child.relname, ca.attname, parent.relname
FROM pg_constraint k
JOIN pg_class child ON child.oid = k.conrelid
JOIN pg_class parent ON parent.oid = k.confrelid
JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = k.conkey[1]
JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = k.confkey[1]
JOIN sync_tables ct ON ct.table_name = child.relname
JOIN sync_tables pt ON pt.table_name = parent.relname AND pt.pk_column = pa.attname
WHERE k.contype = 'f' AND cardinality(k.conkey) = 1
  AND child.relnamespace = current_schema()::regnamespace
  AND parent.relnamespace = current_schema()::regnamespace
ORDER BY child.relname, ca.attname
"""

# Shared tables (migrations/0005): the column holding each one's root key, its root and the
# root's members table.
SHARES = """
SELECT t.table_name, coalesce(t.share_column, t.pk_column), r.root_table, rt.pk_column,
       rt.owner_column, r.members_table, r.root_column, r.user_column, r.role_column,
       to_json(r.writer_roles)::text
FROM sync_tables t
JOIN sync_roots r ON r.root_table = t.share_root
JOIN sync_tables rt ON rt.table_name = r.root_table
ORDER BY t.table_name
"""

# Constant defaults, as pg_get_expr prints them: the server fills them into a new row
# that omits the column. Anything else (now(), gen_random_uuid(), sequences) is left to
# the client, and `checkdb` says so.
_LITERAL = re.compile(r"^'((?:[^']|'')*)'::([a-z ]+)$")
_NUMBER = re.compile(r"^\(?(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\)?(?:::[a-z ]+)?$")


class JsonDict(dict):
    """A jsonb default that is an object: Columns are hashed (sql's statement caches key
    on tables), so the value must be hashable and still serialise as JSON."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True))


class JsonList(list):
    """A jsonb default that is an array (see JsonDict)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True))


class CatalogError(ValueError):
    """The recorded tables do not make a registry; the message says which and why."""


def parse_default(expression: str | None, sql_type: str) -> Any:
    """A column default's value, or MISSING when it is not a constant we can evaluate."""
    if expression is None:
        return MISSING
    text = expression.strip()
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("NULL::") or text == "NULL":
        return None
    number = _NUMBER.match(text)
    if number:
        value = float(number.group(1))
        return int(value) if value.is_integer() and sql_type != "double precision" else value
    literal = _LITERAL.match(text)
    if literal:
        value = literal.group(1).replace("''", "'")
        if sql_type == "jsonb":
            try:
                parsed = json.loads(value)
            except ValueError:
                return MISSING
            if isinstance(parsed, dict):
                return JsonDict(parsed)
            return JsonList(parsed) if isinstance(parsed, list) else parsed
        if sql_type == "boolean":
            return value in ("t", "true")
        if sql_type in ("smallint", "integer", "bigint", "double precision", "real"):
            number = _NUMBER.match(value)  # Postgres prints -3 as '-3'::integer
            if not number:
                return MISSING
            return parse_default(number.group(1), sql_type)
        return value
    return MISSING


@dataclass(frozen=True)
class Note:
    """Something worth saying about a recorded table that does not stop it syncing."""

    table: str
    text: str


@dataclass(frozen=True)
class Loaded:
    """A registry with what it was built from: the catalog's stamp (None for a registry
    given in code, which is never reloaded) and the schema hash clients compare."""

    registry: Registry
    stamp: str | None
    notes: tuple[Note, ...] = ()
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", schema_hash(self.registry))


def load(db: Db | Connection) -> Loaded:
    """Reads sync_tables and the catalog. Run it inside a transaction where Hyperdrive
    may sit in between (its query cache answers reads outside one)."""
    stamp = db.run(STAMP)[0][0]
    return build(db.run(COLUMNS) or [], db.run(FOREIGN_KEYS) or [], stamp, db.run(SHARES) or [])


def _shares(rows: list[list[Any]]) -> dict[str, Share]:
    shares = {}
    for table, column, root, root_key, root_owner, members, m_root, m_user, m_role, writers in rows:
        kind = "root" if table == root else "members" if table == members else "shared"
        shares[table] = Share(
            kind,
            column,
            root,
            root_key,
            root_owner,
            members,
            m_root,
            m_user,
            m_role,
            tuple(json.loads(writers)),
        )
    return shares


def build(
    columns: list[list[Any]],
    foreign_keys: list[list[Any]],
    stamp: str | None,
    shares: list[list[Any]] = (),  # type: ignore[assignment]
) -> Loaded:
    specs: dict[str, dict[str, Any]] = {}
    notes: list[Note] = []
    for table, pk, owner, exists, name, sql_type, not_null, default in columns:
        spec = specs.setdefault(table, {"pk": pk, "owner": owner, "exists": exists, "cols": []})
        if name is None:
            continue
        kind = SQL_TYPES.get(sql_type)
        if kind is None:
            raise CatalogError(
                f"{table}.{name} is {sql_type}, which sync does not support "
                "(it was changed after sync_enable; see docs/your-tables.md)"
            )
        value = parse_default(default, sql_type)
        if default is not None and value is MISSING and name not in (pk, owner, "updated_at"):
            notes.append(
                Note(
                    table,
                    f"{table}.{name} defaults to {default}, which the sync server does not "
                    "evaluate: a new row sent without it gets "
                    + ("refused (the column is NOT NULL)" if not_null else "NULL"),
                )
            )
        spec["cols"].append(Column(name, kind, nullable=not not_null, default=value))
    references: dict[str, dict[str, str]] = {}
    for child, column, parent in foreign_keys:
        references.setdefault(child, {})[column] = parent
    try:
        shared = _shares(list(shares))
    except ValueError as error:
        raise CatalogError(str(error)) from None
    tables = []
    for name, spec in sorted(specs.items()):
        if not spec["exists"]:
            raise CatalogError(
                f"table {name} is recorded in sync_tables but does not exist; "
                f"drop it from sync: DELETE FROM sync_tables WHERE table_name = '{name}'"
            )
        try:
            tables.append(
                Table(
                    name,
                    tuple(spec["cols"]),
                    primary_key=spec["pk"],
                    owner=spec["owner"],
                    references=references.get(name, {}),
                    share=shared.get(name),
                )
            )
        except ValueError as error:
            raise CatalogError(str(error)) from None
    try:
        registry = Registry(tables)
    except ValueError as error:
        raise CatalogError(str(error)) from None
    return Loaded(registry, stamp, tuple(notes))


def describe(registry: Registry) -> list[dict[str, Any]]:
    """The registry as JSON for clients (GET /api/schema, client codegen): server names,
    server and wire types, NOT NULL, constant defaults, key, owner, foreign keys."""
    out = []
    for table in sorted(registry.tables, key=lambda t: t.name):
        columns = []
        for column in table.columns:
            entry: dict[str, Any] = {
                "name": column.name,
                "type": column.type,
                "wire": WIRE_TYPES[column.type],
                "notNull": not column.nullable,
            }
            if column.default is not MISSING:
                entry["default"] = column.default
            columns.append(entry)
        out.append(
            {
                "name": table.name,
                "primaryKey": table.primary_key,
                "owner": table.owner,
                "columns": columns,
                "references": dict(sorted(table.references.items())),
            }
        )
    return out


def hash_input(registry: Registry) -> str:
    """What the schema hash covers: what decides whether a client's changes can apply and
    its pulls be read — table names, key, owner, column names and their wire types.
    NOT NULL and defaults are left out: a client may keep the owner column nullable
    locally (the server fills it), and a default changes no payload."""
    tables = [
        [
            t.name,
            t.primary_key,
            t.owner,
            sorted([c.name, WIRE_TYPES[c.type]] for c in t.columns),
        ]
        for t in sorted(registry.tables, key=lambda t: t.name)
    ]
    return json.dumps(tables, separators=(",", ":"))


def schema_hash(registry: Registry) -> str:
    """16 hex digits of SHA-256 over `hash_input`; client/src/schema-hash.js computes the
    same from a client schema."""
    return hashlib.sha256(hash_input(registry).encode()).hexdigest()[:16]


def _version(stamp: str | None) -> int:
    try:
        return int(stamp or "")
    except ValueError:
        return -1


class Source:
    """Where an App gets its registry: the catalog, read once and kept until the stamp read
    with a sync's BEGIN says it moved, then read again in that same transaction (so the
    registry matches the snapshot the sync works in). Requests interleave in one isolate;
    each takes one `Loaded` and uses it throughout, so a reload never changes a request
    midway. A registry given in code (`fixed`) is used as it is and never reloaded."""

    def __init__(self, fixed: Registry | None = None) -> None:
        self._loaded = Loaded(fixed, None) if fixed is not None else None
        self.fixed = fixed is not None
        self._lock = threading.Lock()  # the local host serves requests from threads
        self.loads = 0

    @property
    def current(self) -> Loaded | None:
        """The registry last read, if any (it may be stale: `begin` tells)."""
        return self._loaded

    def begin(self, db: Db, setup: str = "") -> Loaded:
        """Opens the request's transaction on `db` and returns the registry current in it:
        one round trip when nothing changed, four when the catalog must be read.
        `setup`: parameterless statements to run right after BEGIN, in the same message
        (the transaction's SET LOCAL bounds)."""
        prefix = f"BEGIN; {setup}; " if setup else "BEGIN; "
        if self.fixed:
            db.run(prefix.rstrip("; "))
            assert self._loaded is not None
            return self._loaded
        rows = db.run(prefix + STAMP)
        stamp = rows[0][0] if rows and rows[0] else None
        loaded = self._loaded
        if loaded is not None and loaded.stamp == stamp:
            return loaded
        loaded = build(db.run(COLUMNS), db.run(FOREIGN_KEYS), stamp, db.run(SHARES) or [])
        with self._lock:
            # A request whose snapshot predates a migration reads the older registry for
            # itself, but does not put it back over a newer one other requests use.
            kept = self._loaded
            if kept is None or _version(stamp) >= _version(kept.stamp):
                self._loaded = loaded
            self.loads += 1
        return loaded

    def fresh(self, connect: Callable[[], Connection]) -> Loaded:
        """The current registry, on a connection of its own (GET /api/schema, tools)."""
        db = Db(connect)
        try:
            loaded = self.begin(db)
            db.run("ROLLBACK")
            return loaded
        finally:
            db.close()
