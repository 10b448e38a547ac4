"""A sync is one simple-query message: how many round trips each kind of sync costs, that
values inside the SQL text can never change the statement (whatever the server's
settings), and that a device's own writes do not come back to it (no echo) while
everything else still does — rows the app's own triggers write in the same transaction
included."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import Api, build_app, user_id
from helpers import at, change, new_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import sql
from sync.pg import connect_url

# Everything Postgres can hold in text (no NUL, no lone surrogate), weighted towards what
# could end a quoted string early or start a new statement.
PIECES = ["$j$", "$$", "$j", "\\u0024", "E'", "'", '"', "\\", ";", "--", "/*", "\n", "\r"]
HOSTILE = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    ),
    max_size=12,
).map("".join)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | HOSTILE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE, inner, max_size=4),
    max_leaves=12,
)
SETTINGS = [
    "standard_conforming_strings = on",
    "standard_conforming_strings = off",
    "backslash_quote = on",
    "client_encoding = 'SJIS'",  # a client encoding whose bytes differ from UTF-8's
    "client_encoding = 'LATIN1'",
]


@pytest.fixture(scope="module")
def con(cluster):
    connection = connect_url(cluster.url())
    yield connection
    connection.close()


@pytest.mark.parametrize("setting", SETTINGS)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=HOSTILE)
def test_a_text_value_round_trips_and_never_changes_the_statement(con, setting, value):
    """The value comes back exactly (checked as UTF-8 bytes, in ASCII, so the client
    encoding cannot blur the comparison), and the statement has exactly its two columns:
    nothing in the value ended the string or added a statement."""
    con.run(f"SET {setting}")
    try:
        text = f"SELECT encode(convert_to({sql.text_value(value)}, 'UTF8'), 'base64'), 'end'"
        assert text.isascii()
        rows = con.run(text)
    finally:
        con.run("RESET ALL")
    assert len(rows) == 1 and len(rows[0]) == 2 and rows[0][1] == "end"
    assert base64.b64decode(rows[0][0]) == value.encode("utf-8")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=JSON)
def test_a_document_round_trips(con, value):
    rows = con.run(f"SELECT {sql.document(value)}::text, 'end'")
    assert len(rows) == 1 and rows[0][1] == "end"
    assert json.loads(rows[0][0]) == value


def test_a_document_never_holds_a_dollar_sign():
    text = sql.document({"$j$": "$j$ AS jsonb)); DROP TABLE todos; --", "k": ["$$", "$q1$"]})
    assert text.startswith("CAST($j$") and text.endswith("$j$ AS jsonb)")
    assert "$" not in text[len("CAST($j$") : -len("$j$ AS jsonb)")]


def todo(key: str, title: str, clock: float, **more) -> dict:
    """A full todo row: every synced column (a row that omits some is not stored exactly
    as sent, and is echoed on purpose)."""
    row = {"id": key, "project_id": None, "title": title, "done": False, "due_at": None}
    return {**row, "position": None, "tags": None, "updated_at": at(clock), **more}


def _statements(app) -> list[dict]:
    records: list[dict] = []
    app.log = records.append
    return records


def test_a_push_with_deletes_and_its_pull_is_one_round_trip(database_url):
    """With the registry known (after the first sync of a process), a push of full rows
    with deletes among them, and its pull page, is one message: one round trip."""
    app = build_app(database_url)
    records = _statements(app)
    api = Api(app, "package")
    user = user_id()
    first = api.ok(user, [change("todos", "insert", todo(new_id(), "warm-up", 0))])
    keys = [new_id() for _ in range(50)]
    api.ok(user, [change("todos", "insert", todo(k, "x", 1)) for k in keys])
    project = new_id()
    mixed = [
        change(
            "projects", "insert", {"id": project, "name": "p", "color": None, "updated_at": at(2)}
        ),
        *[change("todos", "update", todo(k, "y", 2, project_id=project)) for k in keys[:25]],
        *[change("todos", "delete", {"id": k, "updated_at": at(3)}) for k in keys[25:]],
    ]
    body = api.ok(user, mixed, first["newServerTimestamp"])
    assert len(body["acceptedIds"]) == len(mixed)
    assert records[-1]["statements"] == 1
    pull = api.ok(user, [], body["newServerTimestamp"])
    assert records[-1]["statements"] == 1
    assert pull["pulledChanges"] == []


def test_own_writes_do_not_echo_but_others_do(database_url):
    """Device A's accepted full rows do not come back on A's next pull; device B of the
    same user gets them, and A gets B's."""
    api = Api(build_app(database_url), "package")
    user = user_id()
    a = api.ok(user, [])["newServerTimestamp"]
    b = api.ok(user, [])["newServerTimestamp"]
    mine = [new_id(), new_id()]
    pushed = api.ok(user, [change("todos", "insert", todo(k, "from A", 1)) for k in mine], a)
    assert pushed["pulledChanges"] == []
    again = api.ok(user, [], pushed["newServerTimestamp"])
    assert again["pulledChanges"] == []
    seen_by_b = api.ok(user, [], b)
    assert sorted(c["row"]["id"] for c in seen_by_b["pulledChanges"]) == sorted(mine)


def test_rows_a_trigger_writes_in_the_same_transaction_still_arrive(database_url, sql):
    """An app trigger that writes another synced row (and rewrites the pushed row itself)
    in the sync's own transaction: the answer carries what the client does not hold, so
    the cursor can count the transaction as seen without missing anything."""
    sql(
        """
        CREATE FUNCTION count_todos() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO user_settings (user_id, theme, updated_at)
            SELECT DISTINCT n.user_id, 'todos:' || (SELECT count(*) FROM todos t
                                                   WHERE t.user_id = n.user_id), now()
            FROM new_rows n
            ON CONFLICT (user_id) DO UPDATE SET theme = excluded.theme,
                                                updated_at = excluded.updated_at;
            UPDATE todos SET title = title || ' (seen)'
            WHERE id IN (SELECT id FROM new_rows) AND title = 'tag me';
            RETURN NULL;
        END $$;
        CREATE TRIGGER count_todos AFTER INSERT ON todos REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION count_todos();
        """
    )
    api = Api(build_app(database_url), "package")
    user = user_id()
    cursor = api.ok(user, [])["newServerTimestamp"]
    plain, tagged = new_id(), new_id()
    changes = [
        change("todos", "insert", todo(k, t, 1)) for k, t in ((plain, "plain"), (tagged, "tag me"))
    ]
    body = api.ok(user, changes, cursor)
    got = {(c["table"], c["row"].get("id", user)): c for c in body["pulledChanges"]}
    assert got[("user_settings", user)]["row"]["theme"] == "todos:2"
    assert got[("todos", tagged)]["row"]["title"] == "tag me (seen)"
    assert ("todos", plain) not in got  # stored exactly as sent: the client holds it
    assert api.ok(user, [], body["newServerTimestamp"])["pulledChanges"] == []


def test_careful_mode_keeps_parents_before_children_in_every_part(database_url, sql):
    """A constraint fails in the one message: the batch is re-run in parts, upserts
    parents-first then deletes children-first, so every part finds the parents it needs,
    and a parent's delete comes after its children's. Only the failing changes are
    refused; the round trips stay within careful mode's bound."""
    sql("ALTER TABLE todos ADD CONSTRAINT todos_title_short CHECK (length(title) < 20)")
    app = build_app(database_url)
    records = _statements(app)
    api = Api(app, "package")
    user = user_id()
    old_project, old_todos = new_id(), [new_id() for _ in range(3)]
    project = {"name": "p", "color": None, "updated_at": at(1)}
    api.ok(
        user,
        [
            change("projects", "insert", {"id": old_project, **project}),
            *[
                change("todos", "insert", todo(k, "old", 1, project_id=old_project))
                for k in old_todos
            ],
        ],
    )
    projects = [new_id() for _ in range(3)]
    batch = [
        change("projects", "insert", {"id": p, **project}, f"p{n}") for n, p in enumerate(projects)
    ]
    todos = {}
    for n in range(30):
        key = new_id()
        title = "a title that is far too long" if n in (4, 21) else f"t{n}"
        todos[f"t{n}"] = key
        batch.append(
            change("todos", "insert", todo(key, title, 2, project_id=projects[n % 3]), f"t{n}")
        )
    # The old project goes, after its todos (sent before them in the batch).
    batch.insert(0, change("projects", "delete", {"id": old_project, "updated_at": at(3)}, "gone"))
    batch += [
        change("todos", "delete", {"id": k, "updated_at": at(3)}, f"d{n}")
        for n, k in enumerate(old_todos)
    ]
    body = api.ok(user, batch)
    assert {r["id"]: r["code"] for r in body["rejected"]} == {
        "t4": "constraint_violation",
        "t21": "constraint_violation",
    }
    assert len(body["acceptedIds"]) == len(batch) - 2
    stored = {r[0] for r in sql("SELECT id::text FROM todos")}
    assert stored == {k for name, k in todos.items() if name not in ("t4", "t21")}
    assert sql("SELECT count(*) FROM projects")[0][0] == 3
    refused = {c["row"]["id"]: c["op"] for c in body["pulledChanges"] if c["table"] == "todos"}
    assert refused.get(todos["t4"]) == refused.get(todos["t21"]) == "delete"
    assert 3 < records[-1]["statements"] < 40


def test_a_client_built_for_a_newer_schema_is_not_refused_by_a_stale_registry(database_url, sql):
    """The server last read the registry before a migration; a client built after it sends
    the new schema hash. The message is written against the registry last read, so a hash
    that differs from it means "read it again first", not 409."""
    app = build_app(database_url)
    api = Api(app, "package")
    user = user_id()
    api.ok(user, [])  # the registry is read
    sql("ALTER TABLE todos ADD COLUMN note text")
    sql("SELECT sync_schema_changed()")
    other = build_app(database_url)  # reading it here would refresh `app`'s registry
    newer = other.schema.fresh(other.connect).hash
    assert app.schema.current is not None and app.schema.current.hash != newer
    row = {**todo(new_id(), "t", 1), "note": "hi"}
    reply = api.sync(user, [change("todos", "insert", row, 1)], schemaHash=newer)
    assert reply.status == 200, reply.body
    assert reply.body["acceptedIds"] == [1]
    assert sql("SELECT note FROM todos")[0][0] == "hi"
    wrong = api.sync(user, [], schemaHash="feedfacefeedface")
    assert wrong.status == 409 and wrong.body["error"]["code"] == "schema_mismatch"
