"""The pull: isolation between users, tombstones, pagination, rows written straight into
Postgres, and transactions that commit late (the cursor never misses them)."""

from datetime import UTC, datetime

from conftest import user_id
from helpers import at, change, new_id, project, rows_of, todo


def insert_todos(api, user, n, clock=0):
    ids = [new_id() for _ in range(n)]
    api.ok(user, [change("todos", "insert", todo(i, f"t{k}", clock)) for k, i in enumerate(ids)])
    return ids


def test_first_pull_returns_all_rows_of_the_caller_only(api):
    alice, bob = user_id(), user_id()
    mine = insert_todos(api, alice, 3)
    insert_todos(api, bob, 2)
    entries, _ = api.pull_all(alice)
    assert set(rows_of(entries, "todos")) == set(mine)
    assert all(e["row"]["user_id"] == alice for e in entries)


def test_pull_since_cursor_returns_only_newer_changes(api):
    user = user_id()
    insert_todos(api, user, 2)
    _, cursor = api.pull_all(user)
    assert api.pull_all(user, cursor)[0] == []
    later = insert_todos(api, user, 1, clock=5)
    entries, cursor2 = api.pull_all(user, cursor)
    assert [e["row"]["id"] for e in entries] == later
    assert api.pull_all(user, cursor2)[0] == []


def test_deletes_reach_other_devices_as_tombstones(api):
    user = user_id()
    [tid] = insert_todos(api, user, 1)
    _, cursor = api.pull_all(user)
    api.ok(user, [change("todos", "delete", {"id": tid, "updated_at": at(9)})])
    entries, _ = api.pull_all(user, cursor)
    assert entries == [
        {
            "table": "todos",
            "op": "delete",
            "row": {"id": tid, "updated_at": "2026-11-24T10:00:09.000000Z"},
        }
    ]


def test_first_pull_skips_tombstones(api):
    user = user_id()
    [tid] = insert_todos(api, user, 1)
    api.ok(user, [change("todos", "delete", {"id": tid, "updated_at": at(9)})])
    assert api.pull_all(user)[0] == []


def test_one_entry_per_row_in_newest_state(api):
    user = user_id()
    [tid] = insert_todos(api, user, 1)
    _, cursor = api.pull_all(user)
    for k in range(1, 4):
        api.ok(user, [change("todos", "update", todo(tid, f"v{k}", k))])
    entries, _ = api.pull_all(user, cursor)
    assert len(entries) == 1 and entries[0]["row"]["title"] == "v3"


def test_pagination_delivers_everything_once(make_api):
    api = make_api("http", PULL_PAGE_SIZE="7")
    user = user_id()
    pid = new_id()
    ids = [new_id() for _ in range(40)]
    api.ok(
        user,
        [change("projects", "insert", project(pid, "p", 0))]
        + [change("todos", "insert", todo(i, "t", 0, project_id=pid)) for i in ids],
    )
    cursor, pages, seen = None, 0, []
    while True:
        body = api.ok(user, [], cursor)
        pages += 1
        assert len(body["pulledChanges"]) <= 7
        seen += [(e["table"], e["row"]["id"]) for e in body["pulledChanges"]]
        cursor = body["newServerTimestamp"]
        if not body["hasMore"]:
            break
    assert pages == 6  # 41 rows in pages of 7
    assert sorted(seen) == sorted([("projects", pid)] + [("todos", i) for i in ids])
    assert len(set(seen)) == len(seen)
    assert api.pull_all(user, cursor)[0] == []


def test_pulled_list_puts_parents_first(api):
    user, pid = user_id(), new_id()
    api.ok(
        user,
        [
            change("todos", "insert", todo(new_id(), "t", 0, project_id=pid)),
            change("projects", "insert", project(pid, "p", 0)),
        ],
    )
    entries, _ = api.pull_all(user)
    assert [e["table"] for e in entries] == ["projects", "todos"]


def test_direct_sql_writes_reach_devices(api, sql):
    user = user_id()
    [tid] = insert_todos(api, user, 1)
    _, cursor = api.pull_all(user)
    # An admin dashboard / cron job writes straight into Postgres.
    other = new_id()
    sql(
        "INSERT INTO todos (id, user_id, title, updated_at) VALUES (:i, :u, 'from cron', now())",
        i=other,
        u=user,
    )
    sql("UPDATE todos SET title = 'edited by admin' WHERE id = :i", i=tid)
    entries, cursor = api.pull_all(user, cursor)
    state = rows_of(entries, "todos")
    assert state[other]["title"] == "from cron"
    assert state[tid]["title"] == "edited by admin"
    sql("DELETE FROM todos WHERE id = :i", i=other)
    entries, _ = api.pull_all(user, cursor)
    assert [(e["op"], e["row"]["id"]) for e in entries] == [("delete", other)]


def test_direct_owner_change_moves_row_between_users(api, sql):
    alice, bob = user_id(), user_id()
    [tid] = insert_todos(api, alice, 1)
    _, alice_cursor = api.pull_all(alice)
    _, bob_cursor = api.pull_all(bob)
    sql("UPDATE todos SET user_id = :b WHERE id = :i", b=bob, i=tid)
    alice_entries, _ = api.pull_all(alice, alice_cursor)
    bob_entries, _ = api.pull_all(bob, bob_cursor)
    assert [(e["op"], e["row"]["id"]) for e in alice_entries] == [("delete", tid)]
    assert [(e["op"], e["row"]["id"]) for e in bob_entries] == [("upsert", tid)]


def test_direct_delete_beats_older_offline_edit(api, sql):
    user = user_id()
    [tid] = insert_todos(api, user, 1)
    sql("DELETE FROM todos WHERE id = :i", i=tid)
    api.ok(user, [change("todos", "update", todo(tid, "offline edit", 30))])
    assert sql("SELECT count(*) FROM todos")[0][0] == 0


def test_truncate_is_refused(sql):
    import pytest
    from pg8000.exceptions import DatabaseError

    with pytest.raises(DatabaseError, match="use DELETE"):
        sql("TRUNCATE todos")


def open_late_insert(sql, user):
    """Another program's transaction that inserts a row of `user` and stays open."""
    late = sql.connect()
    late_id = new_id()
    late.run("BEGIN")
    late.run(
        "INSERT INTO todos (id, user_id, title, updated_at) VALUES (:i, :u, 'late', now())",
        i=late_id,
        u=user,
    )
    return late, late_id


def test_transaction_open_during_pull_is_delivered_later(api, sql):
    """Stamped before a pull, committed after it: the next pull still brings it."""
    user = user_id()
    insert_todos(api, user, 1)
    late, late_id = open_late_insert(sql, user)
    # Meanwhile a device syncs, and so do newer transactions that commit first.
    newer = insert_todos(api, user, 1, clock=3)
    entries, cursor = api.pull_all(user)
    assert late_id not in rows_of(entries, "todos")
    assert newer[0] in rows_of(entries, "todos")
    late.run("COMMIT")
    late.close()
    entries, _ = api.pull_all(user, cursor)
    assert late_id in rows_of(entries, "todos")


def test_transaction_committing_between_pages_is_delivered(make_api, sql):
    api = make_api("package", PULL_PAGE_SIZE="2")
    user = user_id()
    late, late_id = open_late_insert(sql, user)
    insert_todos(api, user, 5)
    first = api.ok(user, [], None)
    assert first["hasMore"]
    late.run("COMMIT")  # commits between page 1 and page 2
    late.close()
    also = insert_todos(api, user, 1, clock=9)  # and a write between pages, too
    entries = list(first["pulledChanges"])
    rest, cursor = api.pull_all(user, first["newServerTimestamp"])
    entries += rest
    more, _ = api.pull_all(user, cursor)
    entries += more
    state = rows_of(entries, "todos")
    assert late_id in state and also[0] in state
    assert len(state) == 7


def test_late_delete_is_delivered(api, sql):
    user = user_id()
    [tid] = insert_todos(api, user, 1)
    _, cursor = api.pull_all(user)
    late = sql.connect()
    late.run("BEGIN")
    late.run("DELETE FROM todos WHERE id = :i", i=tid)
    insert_todos(api, user, 1, clock=2)
    _, cursor2 = api.pull_all(user, cursor)
    late.run("COMMIT")
    late.close()
    entries, _ = api.pull_all(user, cursor2)
    assert ("delete", tid) in [(e["op"], e["row"]["id"]) for e in entries]


def test_cursor_is_opaque_and_tamper_only_hurts_the_caller(api):
    alice, bob = user_id(), user_id()
    insert_todos(api, bob, 2)
    body = api.ok(alice, [])
    assert isinstance(body["newServerTimestamp"], str)
    # A forged cursor claiming nothing was seen still only shows alice's rows.
    import base64
    import json

    forged = "c1." + base64.urlsafe_b64encode(json.dumps({"s": "1:1:"}).encode()).decode()
    assert api.ok(alice, [], forged)["pulledChanges"] == []


def test_pushed_rows_do_not_leak_into_other_users_pulls(api):
    alice, bob = user_id(), user_id()
    _, bob_cursor = api.pull_all(bob)
    insert_todos(api, alice, 3)
    api.ok(alice, [change("user_settings", "insert", {"theme": "dark", "updated_at": at(0)})])
    assert api.pull_all(bob, bob_cursor)[0] == []
    assert api.pull_all(bob)[0] == []


def test_pulled_timestamps_carry_a_zone(api, sql):
    user = user_id()
    tid = new_id()
    sql(
        "INSERT INTO todos (id, user_id, title, updated_at, due_at) VALUES "
        "(:i, :u, 't', '2026-11-24 10:00:00.123456+00', '2026-11-25 08:00:00+02')",
        i=tid,
        u=user,
    )
    [entry], _ = api.pull_all(user)
    assert entry["row"]["updated_at"] == "2026-11-24T10:00:00.123456Z"
    assert entry["row"]["due_at"] == "2026-11-25T06:00:00.000000Z"
    parsed = datetime.fromisoformat(entry["row"]["updated_at"])
    assert parsed.tzinfo is not None and parsed.astimezone(UTC).microsecond == 123456


def test_forged_page_positions_are_400_not_500(api):
    import base64
    import json

    user = user_id()
    for after in (
        ["0", "todos", "x"],
        ["-1", "a", "b"],
        [str(2**64), "a", "b"],
        ["1", 2, "b"],
        ["1", "todos", "\u0000", "k"],
        ["1", "todos", "r", "k", "extra"],
    ):
        raw = json.dumps({"s": "5:9:", "u": "5:9:", "a": after}).encode()
        forged = "c1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")
        reply = api.sync(user, [], forged)
        assert reply.status == 400, (after, reply.body)
        assert reply.body["error"]["code"] == "bad_request"
    # A well-formed position of this shape is accepted, and so is one whose root part no
    # table could have paged under (read as none: the statement never casts it).
    for after in (
        ["1", "projects", "k"],
        ["1", "todos", "not a uuid", "k"],
        ["1", "user_settings", "x", "k"],
    ):
        raw = json.dumps({"s": "5:9:", "u": "5:9:", "a": after}).encode()
        good = "c1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert api.sync(user, [], good).status == 200, after
