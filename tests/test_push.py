"""The push: last-write-wins, ties, deletes, clamping, ownership, per-change rejections,
idempotent re-sends, foreign-key order and batch collapsing."""

from datetime import UTC, datetime, timedelta

import pytest
from conftest import user_id
from helpers import at, change, new_id, project, same_instant, todo


def stored_todo(sql, todo_id):
    rows = sql("SELECT title, user_id::text, updated_at FROM todos WHERE id = :id", id=todo_id)
    return rows[0] if rows else None


def codes(body):
    return {r["id"]: r["code"] for r in body["rejected"]}


def pulled_for(body, key):
    return [e for e in body["pulledChanges"] if e["row"].get("id", e["row"].get("user_id")) == key]


def test_insert_then_newer_update_applies(api, sql):
    user, tid = user_id(), new_id()
    api.ok(user, [change("todos", "insert", todo(tid, "a", 0))])
    body = api.ok(user, [change("todos", "update", todo(tid, "b", 10), 5)])
    assert body["acceptedIds"] == [5]
    assert stored_todo(sql, tid)[0] == "b"


def test_older_update_loses_and_client_gets_server_row(api, sql):
    user, tid = user_id(), new_id()
    api.ok(user, [change("todos", "insert", todo(tid, "new", 10))])
    body = api.ok(user, [change("todos", "update", todo(tid, "old", 5), 9)])
    assert body["acceptedIds"] == [9]  # resolved: server wins
    assert stored_todo(sql, tid)[0] == "new"
    [entry] = pulled_for(body, tid)
    assert entry["op"] == "upsert" and entry["row"]["title"] == "new"


def test_tie_keeps_stored_row(api, sql):
    user, tid = user_id(), new_id()
    api.ok(user, [change("todos", "insert", todo(tid, "first", 10))])
    body = api.ok(user, [change("todos", "update", todo(tid, "second", 10), 3)])
    assert body["acceptedIds"] == [3]
    assert stored_todo(sql, tid)[0] == "first"


def test_epoch_milliseconds_clock(api, sql):
    user, tid = user_id(), new_id()
    millis = int(datetime(2026, 11, 24, 10, tzinfo=UTC).timestamp() * 1000)
    row = {"id": tid, "title": "ms", "updated_at": millis}
    api.ok(user, [change("todos", "insert", row)])
    assert stored_todo(sql, tid)[2] == datetime(2026, 11, 24, 10, tzinfo=UTC)
    older = {"id": tid, "title": "older", "updated_at": millis - 1}
    api.ok(user, [change("todos", "update", older)])
    assert stored_todo(sql, tid)[0] == "ms"


def test_delete_newer_removes_row_and_older_delete_does_not(api, sql):
    user, tid, tid2 = user_id(), new_id(), new_id()
    api.ok(
        user,
        [
            change("todos", "insert", todo(tid, "a", 10)),
            change("todos", "insert", todo(tid2, "b", 10)),
        ],
    )
    body = api.ok(
        user,
        [
            change("todos", "delete", {"id": tid, "updated_at": at(11)}, 1),
            change("todos", "delete", {"id": tid2, "updated_at": at(9)}, 2),
        ],
    )
    assert sorted(body["acceptedIds"]) == [1, 2]
    assert stored_todo(sql, tid) is None
    assert stored_todo(sql, tid2)[0] == "b"
    [entry] = pulled_for(body, tid2)
    assert entry["op"] == "upsert"


def test_delete_wins_over_older_insert_arriving_later(api, sql):
    """A device that was offline re-creates a row older than its deletion: it stays gone."""
    user, tid = user_id(), new_id()
    api.ok(user, [change("todos", "insert", todo(tid, "a", 10))])
    api.ok(user, [change("todos", "delete", {"id": tid, "updated_at": at(20)})])
    body = api.ok(user, [change("todos", "update", todo(tid, "stale edit", 15), 77)])
    assert body["acceptedIds"] == [77]
    assert stored_todo(sql, tid) is None
    [entry] = pulled_for(body, tid)
    assert entry["op"] == "delete" and same_instant(entry["row"]["updated_at"], at(20))
    # A newer write after the delete brings it back.
    api.ok(user, [change("todos", "insert", todo(tid, "revived", 25))])
    assert stored_todo(sql, tid)[0] == "revived"


def test_delete_of_unknown_row_is_accepted_and_blocks_older_insert(api, sql):
    user, tid = user_id(), new_id()
    body = api.ok(user, [change("todos", "delete", {"id": tid, "updated_at": at(10)}, 1)])
    assert body["acceptedIds"] == [1]
    api.ok(user, [change("todos", "insert", todo(tid, "late", 5))])
    assert stored_todo(sql, tid) is None


def test_future_clock_is_clamped_to_server_time(api, sql):
    user, tid = user_id(), new_id()
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    body = api.ok(
        user, [change("todos", "insert", {"id": tid, "title": "f", "updated_at": future}, 1)]
    )
    assert body["acceptedIds"] == [1]
    stored = stored_todo(sql, tid)[2]
    assert abs((stored - datetime.now(UTC)).total_seconds()) < 60
    [entry] = pulled_for(body, tid)  # the client learns the clamped clock
    assert same_instant(entry["row"]["updated_at"], stored.isoformat())


def test_clock_within_skew_is_kept(api, sql):
    user, tid = user_id(), new_id()
    soon = datetime.now(UTC) + timedelta(seconds=100)
    api.ok(
        user, [change("todos", "insert", {"id": tid, "title": "f", "updated_at": soon.isoformat()})]
    )
    assert stored_todo(sql, tid)[2] == soon


def test_future_clock_rejected_when_configured(make_api, sql):
    api = make_api("package", CLOCK_SKEW_POLICY="reject", MAX_CLOCK_SKEW="60")
    user, tid = user_id(), new_id()
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    body = api.ok(
        user, [change("todos", "insert", {"id": tid, "title": "f", "updated_at": future}, 1)]
    )
    assert codes(body) == {1: "clock_skew"}
    assert stored_todo(sql, tid) is None
    [entry] = pulled_for(body, tid)
    assert entry["op"] == "delete"


def test_owner_is_set_from_token(api, sql):
    user, tid = user_id(), new_id()
    api.ok(user, [change("todos", "insert", todo(tid, "mine", 0))])
    assert stored_todo(sql, tid)[1] == user
    api.ok(user, [change("todos", "update", todo(tid, "mine too", 1, user_id=user.upper()))])
    assert stored_todo(sql, tid)[0] == "mine too"


def test_naming_another_owner_is_forbidden(api, sql):
    user, other, tid = user_id(), user_id(), new_id()
    body = api.ok(user, [change("todos", "insert", todo(tid, "x", 0, user_id=other), 1)])
    assert codes(body) == {1: "forbidden"}
    assert stored_todo(sql, tid) is None


@pytest.mark.parametrize("op", ["update", "delete"])
def test_touching_another_users_row_is_forbidden_and_leaks_nothing(api, sql, op):
    alice, mallory, tid = user_id(), user_id(), new_id()
    api.ok(alice, [change("todos", "insert", todo(tid, "alice's secret", 0))])
    row = todo(tid, "pwned", 100) if op == "update" else {"id": tid, "updated_at": at(100)}
    body = api.ok(mallory, [change("todos", op, row, 1)])
    assert codes(body) == {1: "forbidden"}
    assert stored_todo(sql, tid)[:2] == ["alice's secret", alice]
    [entry] = pulled_for(body, tid)
    assert entry["op"] == "delete" and set(entry["row"]) == {"id", "updated_at"}
    assert "alice" not in str(body)


def test_user_settings_keyed_by_owner(api, sql):
    user, other = user_id(), user_id()
    body = api.ok(
        user, [change("user_settings", "insert", {"theme": "dark", "updated_at": at(0)}, 1)]
    )
    assert body["acceptedIds"] == [1]
    assert sql("SELECT user_id::text, theme FROM user_settings") == [[user, "dark"]]
    body = api.ok(
        other,
        [
            change(
                "user_settings",
                "update",
                {"user_id": user, "theme": "pink", "updated_at": at(5)},
                2,
            )
        ],
    )
    assert codes(body) == {2: "forbidden"}
    assert sql("SELECT theme FROM user_settings") == [["dark"]]


def test_per_change_rejections_apply_the_rest(api, sql):
    user, good = user_id(), new_id()
    bad_key = new_id()
    changes = [
        change("nope", "insert", {"id": new_id(), "updated_at": at(0)}, "a"),
        change("todos", "insert", {"title": "no key", "updated_at": at(0)}, "b"),
        change("todos", "insert", todo(bad_key, "t", 0, colour="red"), "c"),
        change("todos", "insert", todo(new_id(), "t", 0, done="yes"), "d"),
        change("todos", "insert", {"id": new_id(), "title": "t"}, "e"),
        change("todos", "insert", {"id": new_id(), "title": "t", "updated_at": "yesterday"}, "f"),
        change("todos", "insert", {"id": "not-a-uuid", "title": "t", "updated_at": at(0)}, "g"),
        change("todos", "insert", {"id": new_id(), "title": None, "updated_at": at(0)}, "h"),
        change("todos", "insert", todo(new_id(), "t", 0, position="1.5"), "i"),
        change("todos", "insert", todo(new_id(), "nul\x00byte", 0), "j"),
        change("todos", "insert", todo(new_id(), "t", 0, sync_xid="1"), "k"),
        change(
            "todos",
            "insert",
            {"id": new_id(), "title": "t", "updated_at": "2026-11-24T10:00:00"},
            "l",
        ),
        change("todos", "insert", todo(good, "fine", 0), "ok"),
    ]
    body = api.ok(user, changes)
    assert body["acceptedIds"] == ["ok"]
    assert codes(body) == {
        "a": "unknown_table",
        "b": "missing_primary_key",
        "c": "unknown_column",
        "d": "invalid_value",
        "e": "invalid_value",
        "f": "invalid_value",
        "g": "invalid_value",
        "h": "invalid_value",
        "i": "invalid_value",
        "j": "invalid_value",
        "k": "unknown_column",
        "l": "invalid_value",
    }
    assert sql("SELECT id::text FROM todos") == [[good]]
    # Each rejected change with a usable key gets the server's state for it (a delete).
    assert pulled_for(body, bad_key)[0]["op"] == "delete"


def test_every_id_appears_exactly_once(api):
    user, tid = user_id(), new_id()
    changes = [
        change("todos", "insert", todo(tid, "a", 1), 1),
        change("todos", "update", todo(tid, "b", 2), 2),
        change("nope", "insert", {"id": 1}, 3),
        change("todos", "delete", {"id": new_id(), "updated_at": at(0)}, 4),
    ]
    body = api.ok(user, changes)
    ids = body["acceptedIds"] + [r["id"] for r in body["rejected"]]
    assert sorted(ids) == [1, 2, 3, 4]


def test_constraint_violation_rejects_only_that_change(api, sql):
    user, pid, orphan, fine = user_id(), new_id(), new_id(), new_id()
    changes = [
        change("projects", "insert", project(pid, "p", 0), 1),
        change("todos", "insert", todo(orphan, "orphan", 0, project_id=new_id()), 2),
        change("todos", "insert", todo(fine, "fine", 0, project_id=pid), 3),
    ]
    body = api.ok(user, changes)
    assert sorted(body["acceptedIds"]) == [1, 3]
    assert codes(body) == {2: "constraint_violation"}
    assert {r[0] for r in sql("SELECT id::text FROM todos")} == {fine}
    [entry] = pulled_for(body, orphan)
    assert entry["op"] == "delete"


def test_many_constraint_violations_in_a_large_batch(api, sql):
    user = user_id()
    changes, bad = [], set()
    for i in range(200):
        tid = new_id()
        row = todo(tid, f"t{i}", 0)
        if i % 37 == 0:
            row["project_id"] = new_id()
            bad.add(i)
        changes.append(change("todos", "insert", row, i))
    body = api.ok(user, changes)
    assert set(codes(body)) == bad
    assert len(body["acceptedIds"]) == 200 - len(bad)
    assert sql("SELECT count(*) FROM todos")[0][0] == 200 - len(bad)


def test_deleting_a_referenced_parent_is_a_constraint_violation(api, sql):
    user, pid, tid = user_id(), new_id(), new_id()
    api.ok(
        user,
        [
            change("projects", "insert", project(pid, "p", 0)),
            change("todos", "insert", todo(tid, "t", 0, project_id=pid)),
        ],
    )
    body = api.ok(user, [change("projects", "delete", {"id": pid, "updated_at": at(5)}, 9)])
    assert codes(body) == {9: "constraint_violation"}
    [entry] = pulled_for(body, pid)
    assert entry["op"] == "upsert" and entry["row"]["name"] == "p"


def test_children_before_parents_in_the_outbox_still_apply(api, sql):
    user, pid = user_id(), new_id()
    todos = [
        change("todos", "insert", todo(new_id(), f"t{i}", 1, project_id=pid)) for i in range(3)
    ]
    body = api.ok(user, [*todos, change("projects", "insert", project(pid, "p", 0))])
    assert len(body["acceptedIds"]) == 4 and body["rejected"] == []
    # And the reverse for deletes: children go before the parent.
    deletes = [change("projects", "delete", {"id": pid, "updated_at": at(9)})] + [
        change("todos", "delete", {"id": c["row"]["id"], "updated_at": at(9)}) for c in todos
    ]
    body = api.ok(user, deletes)
    assert body["rejected"] == []
    assert sql("SELECT count(*) FROM projects")[0][0] == 0


def test_several_changes_to_one_row_collapse_to_newest(api, sql):
    user, tid = user_id(), new_id()
    changes = [
        change("todos", "insert", todo(tid, "v1", 1), 1),
        change("todos", "update", todo(tid, "v3", 3), 2),
        change("todos", "update", todo(tid, "v2", 2), 3),
    ]
    body = api.ok(user, changes)
    assert sorted(body["acceptedIds"]) == [1, 2, 3]
    assert stored_todo(sql, tid)[0] == "v3"
    # Same clock: the later one in the outbox wins.
    changes = [
        change("todos", "update", todo(tid, "x", 5), 4),
        change("todos", "update", todo(tid, "y", 5), 5),
    ]
    api.ok(user, changes)
    assert stored_todo(sql, tid)[0] == "y"
    # Insert then delete in one batch leaves nothing.
    gone = new_id()
    api.ok(
        user,
        [
            change("todos", "insert", todo(gone, "tmp", 1)),
            change("todos", "delete", {"id": gone, "updated_at": at(2)}),
        ],
    )
    assert stored_todo(sql, gone) is None


def test_resending_the_same_request_is_idempotent(api, sql):
    user, pid = user_id(), new_id()
    changes = (
        [change("projects", "insert", project(pid, "p", 1), 1)]
        + [
            change("todos", "insert", todo(new_id(), f"t{i}", 1, project_id=pid), 10 + i)
            for i in range(5)
        ]
        + [
            change("todos", "delete", {"id": new_id(), "updated_at": at(1)}, 99),
            change("todos", "insert", todo(new_id(), "bad", 1, project_id=new_id()), 100),
        ]
    )
    first = api.ok(user, changes)
    before = sql("SELECT id, title, updated_at, sync_xid::text FROM todos ORDER BY id")
    second = api.ok(user, changes)
    assert sorted(first["acceptedIds"]) == sorted(second["acceptedIds"])
    assert codes(first) == codes(second) == {100: "constraint_violation"}
    assert sql("SELECT id, title, updated_at, sync_xid::text FROM todos ORDER BY id") == before


def test_missing_columns_take_defaults_or_null(api, sql):
    user, tid = user_id(), new_id()
    api.ok(user, [change("todos", "insert", {"id": tid, "title": "t", "updated_at": at(0)})])
    assert sql("SELECT done, tags, position FROM todos WHERE id = :i", i=tid) == [
        [False, None, None]
    ]


def test_values_round_trip_as_json_types(api, sql):
    user, tid, pid = user_id(), new_id(), new_id()
    row = todo(
        tid,
        "typed",
        0,
        project_id=pid,
        done=True,
        position=2.5,
        tags={"labels": ["a", "b"], "n": 1},
        due_at="2026-12-01T09:30:00+01:00",
    )
    api.ok(
        user, [change("projects", "insert", project(pid, "p", 0)), change("todos", "insert", row)]
    )
    entries, _ = api.pull_all(user)
    [pulled] = [e["row"] for e in entries if e["table"] == "todos"]
    assert pulled["done"] is True
    assert pulled["position"] == 2.5
    assert pulled["tags"] == {"labels": ["a", "b"], "n": 1}
    assert same_instant(pulled["due_at"], "2026-12-01T08:30:00Z")
    assert pulled["due_at"].endswith("Z")
    assert pulled["project_id"] == pid and pulled["user_id"] == user
    assert "sync_xid" not in pulled


def test_string_and_integer_ids_are_echoed_as_sent(api):
    user = user_id()
    body = api.ok(
        user,
        [
            change("todos", "insert", todo(new_id(), "a", 0), "outbox-1"),
            change("todos", "insert", todo(new_id(), "b", 0), 2),
        ],
    )
    assert sorted(body["acceptedIds"], key=str) == [2, "outbox-1"]


def test_statements_do_not_grow_with_rows(database_url):
    from conftest import Api, build_app

    records = []
    app = build_app(database_url)
    app.log = records.append
    api = Api(app, "package")
    api.ok(user_id(), [])  # the first sync of a process also reads the registry (sync.catalog)
    counts = []
    for n in (1, 10, 300):
        user = user_id()
        pid = new_id()
        changes = [change("projects", "insert", project(pid, "p", 0))] + [
            change("todos", "insert", todo(new_id(), f"t{i}", 0, project_id=pid)) for i in range(n)
        ]
        api.ok(user, changes)
        api.ok(
            user,
            [
                change("todos", "delete", {"id": c["row"]["id"], "updated_at": at(5)})
                for c in changes[1:]
            ],
        )
        counts.append([r["statements"] for r in records[-2:]])
    assert counts[0] == counts[1] == counts[2], counts


def test_superseded_changes_are_answered_with_the_row(api, sql):
    """A change collapsed into a newer one of the same batch was not applied as sent:
    the answer carries the row as it now stands."""
    user, tid = user_id(), new_id()
    body = api.ok(
        user,
        [
            change("todos", "insert", todo(tid, "v1", 1), 1),
            change("todos", "update", todo(tid, "v2", 2), 2),
        ],
    )
    [entry] = pulled_for(body, tid)
    assert entry["op"] == "upsert" and entry["row"]["title"] == "v2"


def test_a_row_cannot_hang_under_another_users_row(api, sql):
    """A todo naming another user's project is refused like one naming no project at all,
    so it neither reveals the project nor blocks its owner from deleting it."""
    alice, mallory, pid = user_id(), user_id(), new_id()
    api.ok(alice, [change("projects", "insert", project(pid, "alice's", 0))])
    own_pid, tid, orphan = new_id(), new_id(), new_id()
    body = api.ok(
        mallory,
        [
            change("todos", "insert", todo(tid, "squat", 1, project_id=pid), 1),
            change("todos", "insert", todo(orphan, "none", 1, project_id=new_id()), 2),
            change("projects", "insert", project(own_pid, "mine", 1), 3),
            change("todos", "insert", todo(new_id(), "fine", 1, project_id=own_pid), 4),
        ],
    )
    assert codes(body) == {1: "constraint_violation", 2: "constraint_violation"}
    assert sorted(body["acceptedIds"]) == [3, 4]
    assert pulled_for(body, tid)[0]["op"] == "delete"
    assert sql("SELECT count(*) FROM todos WHERE project_id = :p", p=pid) == [[0]]
    body = api.ok(alice, [change("projects", "delete", {"id": pid, "updated_at": at(5)}, 9)])
    assert body["acceptedIds"] == [9]


def test_an_update_that_omits_columns_keeps_their_stored_values(api, sql):
    """Rows should be full, but a client that sends only what changed loses nothing: the
    omitted columns keep their stored values, and the answer carries the whole row."""
    user, pid, tid = user_id(), new_id(), new_id()
    full = todo(
        tid,
        "walk",
        0,
        project_id=pid,
        done=False,
        position=3.5,
        tags=["x"],
        due_at="2026-12-01T08:00:00Z",
    )
    api.ok(
        user, [change("projects", "insert", project(pid, "p", 0)), change("todos", "insert", full)]
    )
    body = api.ok(
        user, [change("todos", "update", {"id": tid, "done": True, "updated_at": at(5)}, 7)]
    )
    assert body["acceptedIds"] == [7]
    assert sql("SELECT title, done, position, tags, project_id::text FROM todos") == [
        ["walk", True, 3.5, ["x"], pid]
    ]
    [entry] = pulled_for(body, tid)
    assert entry["row"]["title"] == "walk" and entry["row"]["done"] is True


def test_an_insert_that_omits_a_required_column_is_refused(api, sql):
    user = user_id()
    body = api.ok(
        user,
        [
            change("todos", "insert", {"id": new_id(), "updated_at": at(0)}, 1),
            change("todos", "insert", todo(new_id(), "ok", 0), 2),
        ],
    )
    assert codes(body) == {1: "constraint_violation"}
    assert body["acceptedIds"] == [2]


def test_a_partial_update_of_another_users_row_is_forbidden(api, sql):
    alice, mallory, tid = user_id(), user_id(), new_id()
    api.ok(alice, [change("todos", "insert", todo(tid, "alice's", 0))])
    body = api.ok(
        mallory, [change("todos", "update", {"id": tid, "done": True, "updated_at": at(9)}, 1)]
    )
    assert codes(body) == {1: "forbidden"}
    assert "alice" not in str(body)
    assert sql("SELECT done FROM todos") == [[False]]
