"""Checks that the database can be synced as it stands: the registry builds from the
catalog (sync.catalog), every recorded table still has its sync_xid column and triggers,
and no table carries sync triggers without being recorded. Run by `make migrate` and at
`make dev` start: a sentence at deploy time beats a 500 on the first sync.

Also compares a registry given in code (the old `sync.app_schema` way, still used by
benchmarks) with the catalog's, so such a copy cannot drift unnoticed.
"""

from __future__ import annotations

from typing import Any

from sync.catalog import CatalogError, Loaded, load
from sync.schema import Registry

TRIGGERS = ("sync_stamp", "sync_track_insert", "sync_track_update", "sync_track_delete")


def inspect(con: Any) -> tuple[Loaded | None, list[str], list[str]]:
    """(the registry or None, problems that stop syncing, notes worth knowing)."""
    found: list[str] = []
    con.run("BEGIN")
    try:
        try:
            loaded: Loaded | None = load(con)
        except CatalogError as error:
            loaded = None
            found.append(str(error))
        recorded = {row[0] for row in con.run("SELECT table_name FROM sync_tables") or []}
        triggers: dict[str, set[str]] = {}
        for table, trigger in (
            con.run(
                "SELECT c.relname, g.tgname FROM pg_trigger g JOIN pg_class c "
                "ON c.oid = g.tgrelid WHERE g.tgname = ANY(CAST(:t AS text[])) "
                "AND c.relnamespace = current_schema()::regnamespace",
                t=list(TRIGGERS),
            )
            or []
        ):
            triggers.setdefault(table, set()).add(trigger)
        stamped = {
            row[0]
            for row in con.run(
                "SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE a.attname = 'sync_xid' AND NOT a.attisdropped AND c.relkind = 'r' "
                "AND c.relnamespace = current_schema()::regnamespace"
            )
            or []
        }
    finally:
        con.run("ROLLBACK")
    for table in sorted(recorded):
        if table not in stamped or triggers.get(table) != set(TRIGGERS):
            found.append(
                f"table {table} is recorded but its sync column or triggers are missing: "
                "call sync_enable for it again"
            )
    for table in sorted(set(triggers) - recorded):
        found.append(
            f"table {table} has sync triggers but is not recorded in sync_tables: call "
            "sync_enable for it again (or sync_disable to stop syncing it)"
        )
    notes = [note.text for note in loaded.notes] if loaded else []
    return loaded, found, notes


def problems(con: Any, registry: Registry | None = None) -> list[str]:
    """Plain-language problems; with `registry`, also where it differs from the catalog's."""
    loaded, found, _notes = inspect(con)
    if registry is not None and loaded is not None:
        found += differences(registry, loaded.registry)
    return found


def differences(given: Registry, catalog: Registry) -> list[str]:
    """Where a registry written in code differs from the one the database declares."""
    out: list[str] = []
    for table in given.tables:
        other = catalog.get(table.name)
        if other is None:
            out.append(f"table {table.name} is in the code's registry but not synced")
            continue
        for column in table.columns:
            theirs = other.by_name.get(column.name)
            if theirs is None:
                out.append(f"{table.name}.{column.name} is in the code's registry only")
            elif theirs.type != column.type:
                out.append(f"{table.name}.{column.name} is {theirs.type}, code says {column.type}")
            elif theirs.nullable != column.nullable:
                out.append(f"{table.name}.{column.name}: NOT NULL differs")
            elif theirs.default != column.default:
                out.append(f"{table.name}.{column.name}: default differs")
        for column in other.columns:
            if column.name not in table.by_name:
                out.append(f"{table.name}.{column.name} is missing from the code's registry")
        if (table.primary_key, table.owner) != (other.primary_key, other.owner):
            out.append(f"table {table.name}: key or owner differs")
        if table.references != other.references:
            out.append(f"table {table.name}: foreign keys differ")
    for table in catalog.tables:
        if given.get(table.name) is None:
            out.append(f"table {table.name} is synced but missing from the code's registry")
    return out
