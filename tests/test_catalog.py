"""The registry comes from the database: what sync_enable recorded plus the catalog. Types,
NOT NULL, defaults, keys (uuid, text, bigint), owners and foreign keys are read as declared;
sync_enable refuses what cannot sync; a migration is noticed by the next sync; and the
schema is served, hashed and checked."""

import json
from pathlib import Path

import pytest
from conftest import Api, build_app, token_for, user_id
from helpers import at, change, new_id, todo

from sync import catalog
from sync.app_schema import REGISTRY
from sync.checkdb import differences, inspect, problems
from sync.migrate import migrate
from sync.schema import MISSING, Registry

EXAMPLE = ("projects", "todos", "user_settings")

OWN_TABLES = """
CREATE TABLE folders (slug text PRIMARY KEY, owner uuid NOT NULL,
                      updated_at timestamptz NOT NULL);
CREATE TABLE outside (id uuid PRIMARY KEY);
CREATE TABLE every_type (
    n          bigint PRIMARY KEY,
    user_id    uuid NOT NULL,
    folder     text REFERENCES folders (slug),
    elsewhere  uuid REFERENCES outside (id),
    a_uuid     uuid,
    a_text     text NOT NULL DEFAULT 'it''s',
    a_bool     boolean NOT NULL DEFAULT true,
    a_small    smallint DEFAULT -3,
    an_int     integer DEFAULT 42,
    a_big      bigint,
    a_double   double precision DEFAULT 1.5,
    a_real     real,
    a_json     jsonb DEFAULT '{"k": [1, 2]}',
    a_time     timestamptz DEFAULT now(),
    a_moment   timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00',
    updated_at timestamptz NOT NULL
);
SELECT sync_enable('folders', 'slug', 'owner');
SELECT sync_enable('every_type', 'n', 'user_id');
"""


def loaded_from(sql):
    sql("BEGIN")
    try:
        return catalog.load(sql.con)
    finally:
        sql("ROLLBACK")


def example_only(registry: Registry) -> Registry:
    """The suites own their tables: a user's own synced tables are not counted."""
    return Registry([t for t in registry.tables if t.name in EXAMPLE])


def test_example_registry_is_read_from_the_catalog(sql):
    loaded = loaded_from(sql)
    assert {"projects", "todos", "user_settings"} <= set(loaded.registry.by_name)
    # The Python copy the benchmarks use agrees with what the migrations declare.
    assert differences(REGISTRY, example_only(loaded.registry)) == []
    todos = loaded.registry.by_name["todos"]
    assert todos.references == {"project_id": "projects"}
    assert todos.by_name["done"].default is False and not todos.by_name["done"].nullable
    assert todos.by_name["position"].type == "double precision"
    assert todos.by_name["due_at"].type == "timestamptz" and todos.by_name["due_at"].nullable
    # Parents come first, as the push needs.
    names = [t.name for t in loaded.registry.tables]
    assert names.index("projects") < names.index("todos")
    assert problems(sql.con) == []


def test_types_defaults_keys_and_foreign_keys_are_introspected(sql):
    sql.con.run(OWN_TABLES)
    loaded = loaded_from(sql)
    table = loaded.registry.by_name["every_type"]
    assert table.primary_key == "n" and table.key_column.type == "bigint"
    assert table.owner == "user_id"
    # Only references between synced tables count; `outside` is not synced.
    assert table.references == {"folder": "folders"}
    assert loaded.registry.by_name["folders"].key_column.type == "text"
    assert loaded.registry.by_name["folders"].owner == "owner"
    types = {c.name: c.type for c in table.columns}
    assert types == {
        "n": "bigint",
        "user_id": "uuid",
        "folder": "text",
        "elsewhere": "uuid",
        "a_uuid": "uuid",
        "a_text": "text",
        "a_bool": "boolean",
        "a_small": "smallint",
        "an_int": "integer",
        "a_big": "bigint",
        "a_double": "double precision",
        "a_real": "real",
        "a_json": "jsonb",
        "a_time": "timestamptz",
        "a_moment": "timestamptz",
        "updated_at": "timestamptz",
    }
    assert "sync_xid" not in types
    defaults = {c.name: c.default for c in table.columns if c.default is not MISSING}
    assert defaults == {
        "a_text": "it's",
        "a_bool": True,
        "a_small": -3,
        "an_int": 42,
        "a_double": 1.5,
        "a_json": {"k": [1, 2]},
        "a_moment": "2026-01-01 00:00:00+00",
    }
    assert table.required == ()  # every NOT NULL data column has a default
    nullable = {c.name for c in table.columns if c.nullable}
    assert "a_text" not in nullable and "a_uuid" in nullable
    # A default the server cannot evaluate (now()) is said, not silently dropped.
    assert any("every_type.a_time defaults to now()" in n.text for n in loaded.notes)
    assert problems(sql.con) == []


def test_own_tables_sync_through_the_catalog_registry(database_url, sql):
    """Declared once, in SQL: the server syncs the new tables with no other copy."""
    sql.con.run(OWN_TABLES)
    api = Api(build_app(database_url), "package")
    user = user_id()
    body = api.ok(
        user,
        [
            change("folders", "insert", {"slug": "inbox", "updated_at": at(1)}, 1),
            change(
                "every_type",
                "insert",
                {"n": 2**40, "folder": "inbox", "a_json": [1, {"x": None}], "updated_at": at(1)},
                2,
            ),
        ],
    )
    assert body["acceptedIds"] == [1, 2], body
    rows = sql("SELECT a_text, a_bool, an_int, a_json, folder FROM every_type")
    assert rows == [["it's", True, 42, [1, {"x": None}], "inbox"]]
    pulled = {e["table"]: e["row"] for e in api.pull_all(user)[0]}
    assert pulled["every_type"]["n"] == 2**40 and pulled["folders"]["owner"] == user


BAD_TABLES = [
    (
        "CREATE TABLE bad (id uuid PRIMARY KEY, user_id uuid NOT NULL, price numeric, "
        "updated_at timestamptz NOT NULL)",
        "column bad.price has type numeric, which sync does not support",
    ),
    (
        "CREATE TABLE bad (id uuid PRIMARY KEY, user_id uuid NOT NULL, name varchar(20), "
        "updated_at timestamptz NOT NULL)",
        "column bad.name has type character varying(20)",
    ),
    (
        "CREATE TABLE bad (id uuid PRIMARY KEY, user_id uuid NOT NULL, "
        "updated_at timestamp NOT NULL)",
        "column bad.updated_at has type timestamp without time zone",
    ),
    (
        "CREATE TABLE bad (id uuid PRIMARY KEY, user_id uuid NOT NULL, doc json, "
        "updated_at timestamptz NOT NULL)",
        "column bad.doc has type json,",
    ),
    (
        "CREATE TABLE bad (id uuid, user_id uuid NOT NULL, updated_at timestamptz NOT NULL, "
        "PRIMARY KEY (id, user_id))",
        "the primary key of bad must be the single column id",
    ),
    (
        "CREATE TABLE bad (id uuid PRIMARY KEY, user_id uuid, updated_at timestamptz NOT NULL)",
        "bad needs an owner column user_id uuid NOT NULL",
    ),
    (
        "CREATE TABLE bad (id uuid PRIMARY KEY, user_id uuid NOT NULL)",
        "bad needs a column updated_at timestamptz NOT NULL",
    ),
    (
        "CREATE TABLE bad (id uuid PRIMARY KEY, user_id uuid NOT NULL, n integer, "
        "twice integer GENERATED ALWAYS AS (n * 2) STORED, updated_at timestamptz NOT NULL)",
        "column bad.twice is generated",
    ),
    (
        'CREATE TABLE bad (id uuid PRIMARY KEY, user_id uuid NOT NULL, "Title" text, '
        "updated_at timestamptz NOT NULL)",
        "column bad.Title is not a plain lower-case identifier",
    ),
    (
        "CREATE TABLE bad (id numeric PRIMARY KEY, user_id uuid NOT NULL, "
        "updated_at timestamptz NOT NULL)",
        "column bad.id has type numeric",
    ),
]


@pytest.mark.parametrize(("ddl", "message"), BAD_TABLES)
def test_sync_enable_refuses_what_cannot_sync(sql, ddl, message):
    sql(ddl)
    with pytest.raises(Exception) as caught:
        sql("SELECT sync_enable('bad', 'id', 'user_id')")
    fields = caught.value.args[0]
    assert message in fields["M"], fields["M"]
    assert fields["M"].startswith("sync_enable: ")
    assert sql("SELECT count(*) FROM sync_tables WHERE table_name = 'bad'") == [[0]]
    assert sql("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bad'::regclass") == [[0]]


def test_a_migration_is_noticed_by_the_next_sync_at_no_extra_round_trip(
    database_url, sql, tmp_path
):
    records = []
    app = build_app(database_url)
    app.log = records.append
    api = Api(app, "package")
    user = user_id()
    api.ok(user, [])
    assert app.schema.loads == 1
    api.ok(user, [change("todos", "insert", todo(new_id(), "a", 0))])
    api.ok(user, [])
    assert app.schema.loads == 1  # read once
    steady = records[-1]["statements"]
    hash_before = app.schema.fresh(app.connect).hash

    # A new migration adds a column and a table, applied by the migration runner.
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in sorted((Path(__file__).resolve().parents[1] / "migrations").glob("*.sql")):
        (folder / path.name).write_text(path.read_text())
    (folder / "9001_more.sql").write_text(
        "ALTER TABLE todos ADD COLUMN IF NOT EXISTS note text;\n"
        "CREATE TABLE IF NOT EXISTS labels (id uuid PRIMARY KEY, user_id uuid NOT NULL, "
        "name text, updated_at timestamptz NOT NULL);\n"
        "SELECT sync_enable('labels', 'id', 'user_id');\n"
    )
    assert migrate(database_url, folder, say=lambda _l: None) == ["9001_more.sql"]

    tid = new_id()
    body = api.ok(
        user,
        [
            change("todos", "insert", todo(tid, "b", 1, note="hello"), 1),
            change("labels", "insert", {"id": new_id(), "name": "x", "updated_at": at(1)}, 2),
        ],
    )
    assert body["acceptedIds"] == [1, 2] and body["rejected"] == []
    assert sql("SELECT note FROM todos WHERE id = :i", i=tid) == [["hello"]]
    assert app.schema.loads == 2
    assert app.schema.fresh(app.connect).hash != hash_before
    api.ok(user, [])
    assert records[-1]["statements"] == steady  # back to one round trip for BEGIN

    # A change made by hand is noticed once sync_schema_changed() says so.
    sql("ALTER TABLE labels ADD COLUMN colour text")
    sql("SELECT sync_schema_changed()")
    body = api.ok(
        user,
        [change("labels", "insert", {"id": new_id(), "colour": "red", "updated_at": at(2)}, 3)],
    )
    assert body["acceptedIds"] == [3]


def test_api_schema_is_authenticated_and_hashed(database_url, sql):
    api = Api(build_app(database_url), "package")
    assert api.request("GET", "/api/schema").status == 401
    reply = api.request(
        "GET", "/api/schema", headers={"authorization": f"Bearer {token_for(user_id())}"}
    )
    assert reply.status == 200
    loaded = loaded_from(sql)
    assert reply.body["schemaHash"] == loaded.hash == catalog.schema_hash(loaded.registry)
    todos = next(t for t in reply.body["tables"] if t["name"] == "todos")
    assert todos["primaryKey"] == "id" and todos["owner"] == "user_id"
    assert todos["references"] == {"project_id": "projects"}
    done = next(c for c in todos["columns"] if c["name"] == "done")
    assert done == {
        "name": "done",
        "type": "boolean",
        "wire": "boolean",
        "notNull": True,
        "default": False,
    }
    position = next(c for c in todos["columns"] if c["name"] == "position")
    assert position["wire"] == "real" and "default" not in position
    assert api.request("POST", "/api/schema", b"{}").status == 405


def test_schema_hash_mismatch_applies_nothing(database_url, sql):
    api = Api(build_app(database_url), "package")
    user = user_id()
    good = loaded_from(sql).hash
    tid = new_id()
    changes = [change("todos", "insert", todo(tid, "a", 0), 1)]
    reply = api.sync(user, changes, schemaHash="0123456789abcdef")
    assert reply.status == 409
    assert reply.body["success"] is False
    assert reply.body["error"]["code"] == "schema_mismatch"
    assert good in reply.body["error"]["message"]
    assert sql("SELECT count(*) FROM todos") == [[0]]
    assert api.sync(user, changes, schemaHash=12).status == 400
    reply = api.sync(user, changes, schemaHash=good)
    assert reply.status == 200 and reply.body["acceptedIds"] == [1]
    # Without a hash (older clients) nothing changes.
    assert api.sync(user, [], cursor=None).status == 200


def test_hash_covers_names_and_wire_types_only():
    base = catalog.schema_hash(REGISTRY)
    assert len(base) == 16 and int(base, 16) >= 0
    assert catalog.hash_input(REGISTRY) == json.dumps(
        json.loads(catalog.hash_input(REGISTRY)), separators=(",", ":")
    )
    from sync.schema import Column, Table

    def with_done(col: Column) -> Registry:
        tables = []
        for t in REGISTRY.tables:
            if t.name == "todos":
                cols = tuple(col if c.name == "done" else c for c in t.columns)
                t = Table(t.name, cols, t.primary_key, t.owner, dict(t.references))
            tables.append(t)
        return Registry(tables)

    # NOT NULL and defaults do not change the hash; a wire type does.
    assert catalog.schema_hash(with_done(Column("done", "boolean"))) == base
    assert catalog.schema_hash(with_done(Column("done", "integer"))) != base
    # smallint and bigint look alike on the wire.
    assert catalog.schema_hash(with_done(Column("done", "integer"))) == catalog.schema_hash(
        with_done(Column("done", "bigint"))
    )


def test_checks_name_what_broke(sql):
    sql.con.run(OWN_TABLES)
    assert problems(sql.con) == []
    sql("DROP TRIGGER sync_track_delete ON folders")
    sql("DELETE FROM sync_tables WHERE table_name = 'every_type'")
    found = problems(sql.con)
    assert any("table folders is recorded but its sync column or triggers" in p for p in found)
    assert any("every_type has sync triggers but is not recorded" in p for p in found)
    sql("SELECT sync_enable('folders', 'slug', 'owner')")
    sql("SELECT sync_enable('every_type', 'n', 'user_id')")
    assert problems(sql.con) == []
    # A column changed after sync_enable to a type sync cannot handle.
    sql("ALTER TABLE every_type ALTER COLUMN a_real TYPE numeric")
    loaded, found, _ = inspect(sql.con)
    assert loaded is None
    assert found == [
        "every_type.a_real is numeric, which sync does not support (it was changed after "
        "sync_enable; see docs/your-tables.md)"
    ]
    # sync_disable takes a table out of the registry, rows untouched.
    sql("SELECT sync_disable('every_type')")
    loaded, found, _ = inspect(sql.con)
    assert found == [] and "every_type" not in loaded.registry.by_name


def test_an_older_snapshot_does_not_put_back_an_older_registry(database_url, sql):
    """A sync whose transaction began before a migration committed works with the registry
    of its snapshot, and leaves the newer one in place for everyone else."""
    from sync.catalog import Source
    from sync.db import Db
    from sync.migrate import connect_url

    class InOpenSnapshot(Db):
        """A transaction that began earlier: `begin`'s BEGIN finds it already open."""

        def run(self, statement, **params):
            if statement.startswith("BEGIN; "):
                statement = statement[len("BEGIN; ") :]
            return super().run(statement, **params)

    source = Source()
    old = InOpenSnapshot(lambda: connect_url(database_url))
    old.run("BEGIN ISOLATION LEVEL REPEATABLE READ")
    old.run("SELECT 1")  # the snapshot is taken here, before the migration below
    sql("ALTER TABLE todos ADD COLUMN extra text")
    sql("SELECT sync_schema_changed()")
    new = Db(lambda: connect_url(database_url))
    newer = source.begin(new)
    new.run("ROLLBACK")
    assert "extra" in newer.registry.by_name["todos"].by_name

    older = source.begin(old)  # the stamp it reads is the old one: it reads the old catalog
    assert "extra" not in older.registry.by_name["todos"].by_name
    assert source.current is newer  # and the newer registry stays the one kept
    old.run("ROLLBACK")
    old.close()
    new.close()
