"""Tables of the user's own, enabled as docs/your-tables.md says (SQL only: the server reads
them from the catalog), with text and integer keys that need quoting: push, delete,
re-send and pull all work with them."""

from conftest import SECRET, Api, user_id
from helpers import at

from sync.app import App
from sync.migrate import connect_url
from sync.settings import Settings

KEYS = ["plain", 'quo"te', "com,ma", "back\\slash", "{braces}", "NULL", "spa ce", "ünï"]


def app_with_own_tables(database_url, sql):
    # Names of this suite's own, unlikely to clash with a table the user adds to
    # migrations/ the documented way (the template database carries the user's tables).
    sql(
        "CREATE TABLE suite_notes (slug text PRIMARY KEY, owner uuid NOT NULL, body text, "
        "updated_at timestamptz NOT NULL)"
    )
    sql("SELECT sync_enable('suite_notes', 'slug', 'owner')")
    sql(
        "CREATE TABLE suite_counters (n bigint PRIMARY KEY, user_id uuid NOT NULL, "
        "hits integer, updated_at timestamptz NOT NULL)"
    )
    sql("SELECT sync_enable('suite_counters', 'n', 'user_id')")
    # No registry in code: the server reads these from the catalog, as in production.
    settings = Settings.from_env({"SUPABASE_JWT_SECRET": SECRET, "PULL_PAGE_SIZE": "3"})
    app = App(settings, lambda: connect_url(database_url), log=lambda _r: None)
    return Api(app, "package")


def test_text_and_integer_keys_round_trip(database_url, sql):
    api = app_with_own_tables(database_url, sql)
    user, other = user_id(), user_id()
    notes = [
        {
            "id": i,
            "table": "suite_notes",
            "op": "insert",
            "row": {"slug": k, "body": f"b{i}", "updated_at": at(1)},
        }
        for i, k in enumerate(KEYS)
    ]
    counters = [
        {
            "id": 100 + n,
            "table": "suite_counters",
            "op": "insert",
            "row": {"n": n, "hits": 7, "updated_at": at(1)},
        }
        for n in (1, 2**40)
    ]
    body = api.ok(user, notes + counters)
    assert body["rejected"] == []
    assert len(body["acceptedIds"]) == len(KEYS) + 2
    entries, cursor = api.pull_all(user)
    assert sorted(e["row"]["slug"] for e in entries if e["table"] == "suite_notes") == sorted(KEYS)
    assert sorted(e["row"]["n"] for e in entries if e["table"] == "suite_counters") == [1, 2**40]

    # Deletes (locked first, keys sent as one array literal) and a stale re-send.
    deletes = [
        {
            "id": 200 + i,
            "table": "suite_notes",
            "op": "delete",
            "row": {"slug": k, "updated_at": at(5)},
        }
        for i, k in enumerate(KEYS[:5])
    ]
    stale = [
        {
            "id": 300,
            "table": "suite_notes",
            "op": "update",
            "row": {"slug": KEYS[6], "body": "old", "updated_at": at(0)},
        },
        {
            "id": 301,
            "table": "suite_counters",
            "op": "delete",
            "row": {"n": 2**40, "updated_at": at(0)},
        },
    ]
    body = api.ok(user, deletes + stale)
    assert body["rejected"] == []
    forced = {
        (e["table"], e["row"].get("slug", e["row"].get("n"))): e for e in body["pulledChanges"]
    }
    assert forced[("suite_notes", KEYS[6])]["row"]["body"] == "b6"
    assert forced[("suite_counters", 2**40)]["op"] == "upsert"
    assert sql('SELECT slug FROM suite_notes ORDER BY slug COLLATE "C"') == sorted(
        [[k] for k in KEYS[5:]]
    )
    entries, _ = api.pull_all(user, cursor)
    gone = sorted(e["row"]["slug"] for e in entries if e["op"] == "delete")
    assert gone == sorted(KEYS[:5])

    # Another user can neither read nor touch them.
    assert api.pull_all(other)[0] == []
    body = api.ok(
        other,
        [
            {
                "id": 1,
                "table": "suite_notes",
                "op": "update",
                "row": {"slug": KEYS[7], "body": "mine", "updated_at": at(9)},
            }
        ],
    )
    assert body["rejected"][0]["code"] == "forbidden"
