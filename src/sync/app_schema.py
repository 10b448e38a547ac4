"""The registry of the example app (a todo list). Edit this to sync your own tables.

Each table listed here must also be enabled in Postgres by a migration calling
`sync_enable('<table>', '<primary key>', '<owner column>')` (see docs/your-tables.md).
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
