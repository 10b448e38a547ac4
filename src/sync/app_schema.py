"""The example app's registry written in Python: kept only for the tools that run without a
database (bench/, the Pyodide probe). The server does not use it: it reads its registry
from the database catalog (sync.catalog), declared once by the migrations.

tests/test_catalog.py checks this copy against the catalog, so it cannot drift; to sync
your own tables, write a migration (docs/your-tables.md), not an entry here.
"""

from sync.schema import Column, Registry, Table

REGISTRY = Registry(
    [
        Table(
            "projects",
            (
                Column("id", "uuid", nullable=False),
                Column("user_id", "uuid", nullable=False),
                Column("name", "text", nullable=False),
                Column("color", "text"),
                Column("updated_at", "timestamptz", nullable=False),
            ),
            primary_key="id",
        ),
        Table(
            "todos",
            (
                Column("id", "uuid", nullable=False),
                Column("user_id", "uuid", nullable=False),
                Column("project_id", "uuid"),
                Column("title", "text", nullable=False),
                Column("done", "boolean", nullable=False, default=False),
                Column("due_at", "timestamptz"),
                Column("position", "double precision"),
                Column("tags", "jsonb"),
                Column("updated_at", "timestamptz", nullable=False),
            ),
            primary_key="id",
            references={"project_id": "projects"},
        ),
        Table(
            "user_settings",
            (
                Column("user_id", "uuid", nullable=False),
                Column("theme", "text"),
                Column("language", "text"),
                Column("updated_at", "timestamptz", nullable=False),
            ),
            primary_key="user_id",
        ),
    ]
)
