"""Checks that the database matches the registry: every registered table exists, with the
registered columns, types and nullability, and is enabled for sync (sync_xid column and
trigger). A mismatch found at start-up beats a 500 on the first sync that touches it.
"""

from __future__ import annotations

from typing import Any

from sync.schema import Registry

SQL_NAMES = {"timestamptz": "timestamp with time zone"}
TRIGGERS = ("sync_stamp", "sync_track_insert", "sync_track_update", "sync_track_delete")


def problems(con: Any, registry: Registry) -> list[str]:
    """Plain-language differences between `registry` and the database `con` reaches."""
    columns: dict[tuple[str, str], tuple[str, bool]] = {}
    for table, column, data_type, nullable in con.run(
        "SELECT table_name, column_name, data_type, is_nullable = 'YES' "
        "FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ANY(CAST(:names AS text[]))",
        names=[t.name for t in registry.tables],
    ):
        columns[(table, column)] = (data_type, nullable)
    tracked = {
        row[0]
        for row in con.run(
            "SELECT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
            "WHERE g.tgname = ANY(CAST(:triggers AS text[])) AND c.relnamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
            "GROUP BY c.relname HAVING count(*) = :n",
            triggers=list(TRIGGERS),
            n=len(TRIGGERS),
        )
    }
    found: list[str] = []
    for table in registry.tables:
        if not any(t == table.name for t, _ in columns):
            found.append(f"table {table.name} is registered but does not exist")
            continue
        for column in table.columns:
            actual = columns.get((table.name, column.name))
            wanted = SQL_NAMES.get(column.type, column.type)
            if actual is None:
                found.append(f"{table.name}.{column.name} is registered but does not exist")
            elif actual[0] != wanted:
                found.append(f"{table.name}.{column.name} is {actual[0]}, registered as {wanted}")
            elif actual[1] and not column.nullable:
                found.append(f"{table.name}.{column.name} is nullable, registered NOT NULL")
        if (table.name, "sync_xid") not in columns or table.name not in tracked:
            found.append(
                f"table {table.name} is not enabled for sync: run "
                f"SELECT sync_enable('{table.name}', '{table.primary_key}', '{table.owner}')"
            )
    return found
