"""Hostile input and hostile load: every bad value is a 4xx or a per-change reject (never a
500 or a retry-forever 503), nothing fails after COMMIT, waits are bounded, answers are
bounded in bytes, and one account cannot lock or starve another's rows.

Each test names the item of the hardening issue it keeps fixed."""

from __future__ import annotations

import base64
import json
import threading
import time

import conftest
import jwt
import pytest
from conftest import SECRET, Api, build_app, token_for, user_id
from helpers import at, change, new_id, project, todo

from sync.migrate import connect_url

NOW = "2026-11-24T10:00:00Z"


@pytest.fixture
def over_http():
    """Serves a given App through the local host, as the contract tests do."""
    started = []

    def start(app) -> Api:
        served = conftest._api("http", app)
        started.append(served)
        return next(served)

    yield start
    for served in started:
        served.close()


def post_raw(api: Api, text: str, user: str | None = None, token: str | None = None):
    headers = {"content-type": "application/json"}
    headers["authorization"] = f"Bearer {token or token_for(user or user_id())}"
    return api.request("POST", "/api/sync", text.encode("utf-8", "surrogatepass"), headers)


def body_with(changes_json: str, cursor: str = "null") -> str:
    return f'{{"lastSyncAt": {cursor}, "changes": [{changes_json}]}}'


def count(sql, table: str) -> int:
    return sql(f"SELECT count(*) FROM {table}")[0][0]


# -- 1. poison pills: a lone surrogate is invalid_value for its change alone --------------


@pytest.mark.parametrize(
    "row",
    [
        '{"id": "%s", "title": "cut \\ud83d", "updated_at": "%s"}',
        '{"id": "%s", "title": "ok", "tags": {"k": "\\udc00"}, "updated_at": "%s"}',
        '{"id": "%s", "title": "ok", "tags": {"\\ud83d": 1}, "updated_at": "%s"}',
        '{"id": "%s", "title": "nul \\u0000", "updated_at": "%s"}',
    ],
)
def test_lone_surrogate_rejects_only_its_change(api, sql, row):
    bad, good = new_id(), new_id()
    text = body_with(
        f'{{"id": 1, "table": "todos", "op": "insert", "row": {row % (bad, NOW)}}},'
        f'{{"id": 2, "table": "todos", "op": "insert", "row": {{"id": "{good}", "title": "fine",'
        f' "updated_at": "{NOW}"}}}}'
    )
    reply = post_raw(api, text)
    assert reply.status == 200, reply.body
    assert reply.body["acceptedIds"] == [2]
    assert [r["code"] for r in reply.body["rejected"]] == ["invalid_value"]
    assert [r[0] for r in sql("SELECT id::text FROM todos")] == [good]


def test_wrong_database_password_is_not_a_retry_forever_503(over_http, cluster):
    url = cluster.url().replace("://sync:", "://sync:wrong-password-")
    records: list[dict] = []
    app = build_app(url)
    app.log = records.append
    api = over_http(app)
    reply = api.sync(user_id(), [])
    assert reply.status == 500 and reply.body["error"]["code"] == "internal"
    assert records[-1]["misconfigured"].startswith("28P01")
    health = api.request("GET", "/api/health")
    assert health.status == 503 and health.body["db"] == "misconfigured"


# -- 2. nothing fails after COMMIT ---------------------------------------------------------


def test_change_id_the_answer_cannot_carry_is_400_and_nothing_stored(api, sql):
    text = body_with(
        f'{{"id": "x\\ud83d", "table": "todos", "op": "insert", "row": {{"id": "{new_id()}",'
        f' "title": "a", "updated_at": "{NOW}"}}}}'
    )
    reply = post_raw(api, text)
    assert reply.status == 400 and reply.body["error"]["code"] == "bad_request"
    assert count(sql, "todos") == 0


def test_unknown_column_named_with_a_surrogate_is_answered(api, sql):
    good = new_id()
    text = body_with(
        f'{{"id": 1, "table": "todos", "op": "insert", "row": {{"id": "{new_id()}", "title": "a",'
        f' "\\ud83d": 1, "updated_at": "{NOW}"}}}},'
        f'{{"id": 2, "table": "todos", "op": "insert", "row": {{"id": "{good}", "title": "b",'
        f' "updated_at": "{NOW}"}}}},'
        f'{{"id": 3, "table": "no\\udc00pe", "op": "insert", "row": {{"id": "{new_id()}",'
        f' "updated_at": "{NOW}"}}}}'
    )
    reply = post_raw(api, text)
    assert reply.status == 200, reply.body
    assert reply.body["acceptedIds"] == [2]
    assert {r["code"] for r in reply.body["rejected"]} == {"unknown_column", "unknown_table"}
    assert [r[0] for r in sql("SELECT id::text FROM todos")] == [good]


# -- 3. loose validation ------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "project_id"])
def test_uuid_with_trailing_newline_is_invalid_value(api, sql, field):
    tid, pid = new_id(), new_id()
    api.ok(user := user_id(), [change("projects", "insert", project(pid, "p", 0))])
    row = todo(tid, "a", 1, project_id=pid)
    row[field] = row[field] + "\n"
    body = api.ok(user, [change("todos", "insert", row, 7)])
    assert body["rejected"][0]["code"] == "invalid_value"
    assert count(sql, "todos") == 0


def test_token_sub_with_trailing_newline_is_401(api):
    token = token_for(user_id() + "\n")
    reply = api.sync(None, [], token=token)
    assert reply.status == 401


def cursor_of(payload: object) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return "c1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "payload",
    [
        {"s": "١:٢:"},  # noqa: RUF001 (Arabic-Indic digits, on purpose)
        {"s": "１:５:"},  # noqa: RUF001 (fullwidth digits, on purpose)
        {"s": "5:5:\n"},
        {"s": "1:4294967296:"},  # a 32-bit xid part of 0: Postgres refuses it
        {"s": "1:99999999999999999999:"},
        {"s": "1:9:", "u": "1:9:", "a": ["3", "todos", "a\x00b"]},
        {"s": "1:9:", "u": "1:9:", "a": ["3", "todos", "\ud83d"]},
        {"s": "1:9:", "u": "1:9:", "a": ["3", "to\x00dos", "k"]},
        {"s": "1:9:", "u": "1:9:", "a": ["٣", "todos", "k"]},
        {"s": "1:9:", "o": [["todos", "\x00"]]},
        {"s": "1:9:", "o": "todos"},
        b"[" * 100_000,
        b'{"s": ' + b"[" * 100_000,
        b"\xff\xfe",
    ],
)
def test_forged_cursors_are_400(api, payload):
    if isinstance(payload, dict):
        raw = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        raw = payload
    reply = api.sync(user_id(), [], cursor=cursor_of(raw))
    assert reply.status == 400, reply.body
    assert reply.body["error"]["code"] == "bad_request"


def test_deeply_nested_body_is_400(api):
    reply = post_raw(api, '{"lastSyncAt": null, "changes": [' + "[" * 100_000)
    assert reply.status == 400
    reply = post_raw(api, '{"lastSyncAt": null, "changes": [' + '{"a":' * 50_000)
    assert reply.status == 400


def signed(claims_json: str) -> str:
    """An HS256 token over a payload written as raw JSON text (NaN, 1e400, deep nesting
    are not what json.dumps would write)."""
    b64 = lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")  # noqa: E731
    head = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(claims_json.encode())
    signature = jwt.api_jws.get_algorithm_by_name("HS256").sign(head.encode(), SECRET.encode())
    return head + "." + b64(signature)


@pytest.mark.parametrize(
    "claims",
    [
        '"exp": NaN',
        '"exp": Infinity',
        '"exp": 1e400',
        f'"exp": {int(time.time()) + 600}, "nbf": 1{"0" * 400}',
        f'"exp": {int(time.time()) + 600}, "meta": {"[" * 5000 + "]" * 5000}',
    ],
)
def test_odd_signed_tokens_are_401(api, claims):
    text = f'{{"sub": "{user_id()}", "aud": "authenticated", {claims}}}'
    reply = api.sync(None, [], token=signed(text))
    assert reply.status == 401, reply.body


def test_signed_token_with_sane_claims_passes(api):
    exp = int(time.time()) + 600
    text = f'{{"sub": "{user_id()}", "aud": "authenticated", "exp": {exp}}}'
    assert api.sync(None, [], token=signed(text)).status == 200


def test_unicode_digit_content_length_is_not_a_500(api):
    reply = api.request(
        "POST",
        "/api/sync",
        b'{"lastSyncAt": null, "changes": []}',
        {
            "content-type": "application/json",
            "authorization": f"Bearer {token_for(user_id())}",
            "content-length": "²" if api.transport == "package" else "35",
        },
    )
    assert reply.status in (200, 400)


# -- 4. careful mode is no amplifier; only the caller's rows are locked ---------------------


def test_missing_parents_are_refused_set_wise(over_http, database_url, sql):
    records: list[dict] = []
    app = build_app(database_url)
    app.log = records.append
    api = over_http(app)
    user = user_id()
    api.ok(user, [])  # the first request also reads the registry from the catalog
    changes = [
        change("todos", "insert", todo(new_id(), f"t{i}", 0, project_id=new_id()))
        for i in range(2000)
    ]
    body = api.ok(user, changes)
    assert len(body["rejected"]) == 2000
    assert {r["code"] for r in body["rejected"]} == {"constraint_violation"}
    assert records[-1]["statements"] <= 6, records[-1]
    assert count(sql, "todos") == 0


class PausingConnection:
    """A real connection that stops before a chosen statement until released: a
    transaction held open at a known point, as a slow or hostile request would. A sync is
    one message; when the statement is inside it, the part before runs first (its locks
    held, the transaction open), then the pause, then the rest — the same statements in
    the same transaction, in two round trips."""

    def __init__(self, url: str, pause_before: str):
        self.con = connect_url(url)
        self.pause_before = pause_before
        self.reached = threading.Event()
        self.release = threading.Event()

    def run(self, statement, **params):
        marker, self.pause_before = self.pause_before, ""
        if marker and f";\n{marker}" in statement:
            at = statement.index(f";\n{marker}")
            rows = self.con.run(statement[:at]) or []
            self.reached.set()
            self.release.wait(30)
            return rows + (self.con.run(statement[at + 2 :]) or [])
        if marker and statement.startswith(marker):
            self.reached.set()
            self.release.wait(30)
        elif marker:
            self.pause_before = marker
        return self.con.run(statement, **params)

    def close(self):
        self.con.close()


def paused_app(database_url: str, pause_before: str, **env):
    app = build_app(database_url, **env)
    first = PausingConnection(database_url, pause_before)
    used = []

    def connect():
        if not used:
            used.append(1)
            return first
        return connect_url(database_url)

    app.connect = connect
    return app, first


def in_thread(fn):
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn()), daemon=True)
    thread.start()
    return thread, out


def test_a_delete_of_another_users_row_locks_nothing_of_theirs(over_http, database_url, sql):
    victim, attacker, tid = user_id(), user_id(), new_id()
    Api(build_app(database_url), "package").ok(
        victim, [change("todos", "insert", todo(tid, "v", 0))]
    )
    app, con = paused_app(database_url, "COMMIT")
    api = over_http(app)
    thread, out = in_thread(
        lambda: api.sync(
            attacker,
            [
                change("todos", "delete", {"id": tid, "updated_at": at(9)}),
                change("todos", "update", todo(tid, "stolen", 9)),
            ],
        )
    )
    assert con.reached.wait(10)
    # The attacker's transaction is open; the victim's own update must not wait for it.
    other = connect_url(database_url)
    try:
        other.run("SET lock_timeout = 1000")
        other.run("UPDATE todos SET title = 'mine', updated_at = now() WHERE id = :id", id=tid)
    finally:
        other.close()
        con.release.set()
    thread.join(10)
    reply = out["value"]
    assert reply.status == 200
    assert {r["code"] for r in reply.body["rejected"]} == {"forbidden"}
    assert sql("SELECT title FROM todos")[0][0] == "mine"


# -- 5. bounded waits, and no user starves another ---------------------------------------


def test_lock_wait_is_bounded_and_answered_503(make_api, sql):
    api = make_api("http", LOCK_TIMEOUT_MS="300")
    user, tid = user_id(), new_id()
    api.ok(user, [change("todos", "insert", todo(tid, "a", 0))])
    holder = connect_url(sql.url)
    try:
        holder.run("BEGIN")
        holder.run("SELECT 1 FROM todos WHERE id = :id FOR UPDATE", id=tid)
        started = time.perf_counter()
        reply = api.sync(user, [change("todos", "update", todo(tid, "b", 5))])
        waited = time.perf_counter() - started
    finally:
        holder.run("ROLLBACK")
        holder.close()
    assert reply.status == 503 and reply.body["error"]["code"] == "unavailable"
    assert "retry-after" in reply.headers
    assert waited < 5
    assert api.ok(user, [change("todos", "update", todo(tid, "b", 5))])["acceptedIds"]


def test_statement_time_is_bounded(make_api, sql):
    api = make_api("http", STATEMENT_TIMEOUT_MS="200")
    user = user_id()
    sql(
        "CREATE OR REPLACE FUNCTION slow_title() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER slow BEFORE INSERT ON todos FOR EACH ROW EXECUTE FUNCTION slow_title()")
    started = time.perf_counter()
    reply = api.sync(user, [change("todos", "insert", todo(new_id(), "a", 0))])
    assert reply.status == 503
    assert time.perf_counter() - started < 1.5
    assert count(sql, "todos") == 0


def test_one_user_is_bounded_and_others_are_served(over_http, database_url):
    app, con = paused_app(database_url, "COMMIT", MAX_INFLIGHT_PER_USER="1")
    api = over_http(app)
    hog = user_id()
    thread, out = in_thread(
        lambda: api.sync(hog, [change("todos", "insert", todo(new_id(), "a", 0))])
    )
    assert con.reached.wait(10)
    try:
        second = api.sync(hog, [])
        bystander = api.sync(user_id(), [])
    finally:
        con.release.set()
    thread.join(10)
    assert second.status == 429 and second.body["error"]["code"] == "rate_limited"
    assert int(second.headers["retry-after"]) >= 1
    assert bystander.status == 200
    assert out["value"].status == 200
    assert api.sync(hog, []).status == 200  # the slot is free again


# -- 7. answers are bounded in bytes, and every row still arrives ---------------------------


def big_rows(sql, user: str, n: int, size: int) -> set[str]:
    ids = set()
    for i in range(n):
        tid = new_id()
        ids.add(tid)
        sql(
            "INSERT INTO todos (id, user_id, title, updated_at) VALUES "
            "(CAST(:id AS uuid), CAST(:u AS uuid), :t, now())",
            id=tid,
            u=user,
            t=f"{i}" + "x" * size,
        )
    return ids


def test_pages_are_bounded_in_bytes_and_every_row_arrives(make_api, sql):
    api = make_api("http", MAX_ANSWER_BYTES="100000")
    user = user_id()
    ids = big_rows(sql, user, 12, 30_000) | big_rows(sql, user, 1, 250_000)
    seen, cursor, pages = set(), None, 0
    while True:
        reply = api.sync(user, [], cursor)
        assert reply.status == 200
        raw = len(json.dumps(reply.body))
        rows = reply.body["pulledChanges"]
        assert rows, "a page always holds at least one row"
        assert raw <= 100_000 + 2_000 or len(rows) == 1, raw
        seen |= {r["row"]["id"] for r in rows}
        cursor, pages = reply.body["newServerTimestamp"], pages + 1
        if not reply.body["hasMore"]:
            break
    assert seen == ids
    assert pages >= 4


def test_converge_rows_that_do_not_fit_arrive_later(make_api, sql):
    api = make_api("http", MAX_ANSWER_BYTES="100000")
    user = user_id()
    ids = sorted(big_rows(sql, user, 8, 30_000))
    _, cursor = api.pull_all(user)
    stale = [change("todos", "update", todo(tid, "old", -100)) for tid in ids]
    body = api.ok(user, stale, cursor)
    assert sorted(body["acceptedIds"]) == sorted(c["id"] for c in stale)
    assert len(json.dumps(body)) <= 100_000 + 35_000
    assert body["hasMore"] is True
    got = {e["row"]["id"]: e for e in body["pulledChanges"]}
    cursor = body["newServerTimestamp"]
    while body["hasMore"]:
        body = api.ok(user, [], cursor)
        got |= {e["row"]["id"]: e for e in body["pulledChanges"]}
        cursor = body["newServerTimestamp"]
    assert sorted(got) == ids
    assert all(e["op"] == "upsert" and e["row"]["title"] != "old" for e in got.values())


def test_row_over_max_row_bytes_is_invalid_value(make_api, sql):
    api = make_api("http", MAX_ROW_BYTES="10000")
    body = api.ok(user_id(), [change("todos", "insert", todo(new_id(), "x" * 20_000, 0))])
    assert body["rejected"][0]["code"] == "invalid_value"
    assert "MAX_ROW_BYTES" in body["rejected"][0]["message"]
    assert count(sql, "todos") == 0


# -- 8. no existence oracle, no internal names --------------------------------------------


def test_missing_and_foreign_parents_answer_alike(api):
    owner, caller, theirs = user_id(), user_id(), new_id()
    api.ok(owner, [change("projects", "insert", project(theirs, "secret", 0))])
    body = api.ok(
        caller,
        [
            change("todos", "insert", todo(new_id(), "a", 1, project_id=theirs), 1),
            change("todos", "insert", todo(new_id(), "b", 1, project_id=new_id()), 2),
        ],
    )
    first, second = body["rejected"]
    assert (first["code"], first["message"]) == (second["code"], second["message"])
    assert "fkey" not in first["message"] and "todos_" not in first["message"]


def test_constraint_messages_name_no_internals(api, sql):
    sql("ALTER TABLE projects ADD CONSTRAINT projects_name_short CHECK (length(name) < 50)")
    user = user_id()
    body = api.ok(
        user,
        [
            change("projects", "insert", project(new_id(), "n" * 60, 0), 1),
            change("projects", "insert", project(new_id(), "ok", 0), 2),
        ],
    )
    assert body["acceptedIds"] == [2]
    (rejected,) = body["rejected"]
    assert rejected["code"] == "constraint_violation"
    assert "projects_name_short" not in rejected["message"]


# -- 9. the foreign-parent rule under concurrency -----------------------------------------


def test_parent_taken_by_its_owner_meanwhile_gets_no_foreign_child(over_http, database_url, sql):
    """The owner's insert of the key is under way (not yet committed) when the attacker's
    push runs: the push's snapshot does not see it, so no other user's key is found up
    front; its upsert waits for the owner's transaction and then meets another user's row.
    The project is not applied for the attacker, so neither is the child under it."""
    owner, attacker, pid, tid = user_id(), user_id(), new_id(), new_id()
    holder = connect_url(database_url)
    holder.run("BEGIN")
    holder.run(
        "INSERT INTO projects (id, user_id, name, updated_at) "
        "VALUES (CAST(:p AS uuid), CAST(:o AS uuid), 'owner''s', CAST(:t AS timestamptz))",
        p=pid,
        o=owner,
        t=at(0),
    )
    api = over_http(build_app(database_url))
    thread, out = in_thread(
        lambda: api.sync(
            attacker,
            [
                change("projects", "insert", project(pid, "mine?", 1), 1),
                change("todos", "insert", todo(tid, "hang", 1, project_id=pid), 2),
            ],
        )
    )
    try:
        waiting = False
        for _ in range(200):  # until the attacker's upsert waits for the owner's insert
            waiting = holder.run(
                "SELECT count(*) > 0 FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
            )[0][0]
            if waiting:
                break
            time.sleep(0.01)
        assert waiting, out
    finally:
        holder.run("COMMIT")
        holder.close()
    thread.join(10)
    reply = out["value"]
    assert reply.status == 200, reply.body
    assert {r["id"]: r["code"] for r in reply.body["rejected"]} == {
        1: "forbidden",
        2: "constraint_violation",
    }
    assert count(sql, "todos") == 0
    # The owner can still delete their project: nothing of another user hangs under it.
    body = Api(build_app(database_url), "package").ok(
        owner, [change("projects", "delete", {"id": pid, "updated_at": at(5)})]
    )
    assert body["rejected"] == []
    assert count(sql, "projects") == 0
