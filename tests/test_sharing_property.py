"""Property: whatever owners, editors, viewers and other programs do to projects, their
members and their todos, once every device has synced to the end it holds exactly the rows
its user sees through the RLS policies (migrations/0007) of the same database.

The two records of who-sees-what, the sync server's filters and the policies, are both
derived from one declaration; this checks that they agree, through the real server with
real signed tokens, memberships granted and ended both through /api/sync and in SQL, and
projects given to another owner in SQL."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from conftest import Api, SqlRunner, build_app
from helpers import apply_pulled, at
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_policies import client_roles

USERS = 3
PROJECTS = 2  # project p is owned by user p (until a transfer)
TODOS = 5
PAGES = 100  # a pull that never ends fails instead of hanging the suite
TABLES = ("projects", "project_members", "todos")

# Hypothesis draws indexes; each example maps them to fresh ids.
project_slot = st.one_of(st.none(), st.integers(0, PROJECTS - 1), st.integers(0, PROJECTS - 1))
todo_write = st.tuples(
    st.just("push_todo"),
    st.integers(0, USERS - 1),
    st.integers(0, TODOS - 1),
    project_slot,
    st.sampled_from(["insert", "insert", "update", "delete"]),
)
STEPS = {
    "sync": st.tuples(st.just("sync"), st.integers(0, USERS - 1)),
    # A membership granted or ended through the sync endpoint, by any user (the project's
    # owner is accepted, anyone else refused).
    "push_member": st.tuples(
        st.just("push_member"),
        st.integers(0, USERS - 1),
        st.integers(0, PROJECTS - 1),
        st.integers(0, USERS - 1),
        st.sampled_from(["editor", "viewer", None]),  # None: remove
    ),
    # ...or by another program, in SQL.
    "sql_member": st.tuples(
        st.just("sql_member"),
        st.integers(0, PROJECTS - 1),
        st.integers(0, USERS - 1),
        st.sampled_from(["editor", "viewer", None]),
    ),
    # A todo written by any user, in or out of a project (refused where not allowed).
    "push_todo": todo_write,
    # A todo moved between projects (or out of them) in SQL.
    "sql_move": st.tuples(st.just("sql_move"), st.integers(0, TODOS - 1), project_slot),
    # A project given to another owner in SQL (migrations/0008).
    "sql_transfer": st.tuples(
        st.just("sql_transfer"), st.integers(0, PROJECTS - 1), st.integers(0, USERS - 1)
    ),
}
# Todo writes and memberships drawn more often than the rest, so that most examples end
# with shared todos on several devices (the events below show it).
step = st.sampled_from(
    ["sync", "sync", "push_member", "push_member", "sql_member", "sql_transfer"]
    + ["push_todo"] * 5
    + ["sql_move"]
).flatmap(STEPS.__getitem__)


class Device:
    """One device of a user, kept the way the client kit keeps its tables: a write goes to
    the local rows at once and into the outbox; an answer drops what was sent from the
    outbox and applies what the server pulls (which settles every refused key to the
    server's state)."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.rows: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TABLES}
        self.outbox: list[dict[str, Any]] = []
        self.cursor: str | None = None
        self.next_id = 0
        self.refused = 0

    def push(self, table: str, op: str, row: dict[str, Any]) -> None:
        self.next_id += 1
        self.outbox.append({"id": self.next_id, "table": table, "op": op, "row": row})
        rows, key = self.rows[table], row["id"]
        if op == "delete":
            rows.pop(key, None)
        else:
            rows[key] = {**rows.get(key, {}), **row}

    def sync(self, api: Api) -> None:
        for _page in range(PAGES):
            sent = {c["id"]: c for c in self.outbox}
            body = api.ok(self.user, self.outbox, self.cursor)
            assert set(body["acceptedIds"]) | {r["id"] for r in body["rejected"]} == set(sent)
            self.outbox = []
            self.refused += len(body["rejected"])
            assert {e["table"] for e in body["pulledChanges"]} <= set(TABLES), body
            apply_pulled(self.rows, body["pulledChanges"])
            self.cursor = body["newServerTimestamp"]
            if not body["hasMore"]:
                return
        raise AssertionError(f"{self.user}: hasMore still true after {PAGES} pages")


# What a row must agree on between the device and the database (the columns every pushed
# row carries).
COLUMNS = {
    "projects": ("name",),
    "project_members": ("project_id", "user_id", "role"),
    "todos": ("title", "project_id"),
}


def seen_through_policies(
    sql: SqlRunner, user: str, ids: dict[str, list[str]]
) -> dict[str, dict[str, tuple]]:
    """The rows of this example that `user` reads as supabase-js would: role
    `authenticated`, the user's claims."""
    seen: dict[str, dict[str, tuple]] = {}
    sql("BEGIN")
    try:
        sql("SET LOCAL ROLE authenticated")
        sql("SELECT set_config('request.jwt.claims', :c, true)", c=json.dumps({"sub": user}))
        for table in TABLES:
            columns = ", ".join(f"{c}::text" for c in COLUMNS[table])
            rows = sql(
                f"SELECT id::text, {columns} FROM {table} WHERE id::text = ANY (:ids)",
                ids=ids[table],
            )
            seen[table] = {r[0]: tuple(r[1:]) for r in rows}
    finally:
        sql("ROLLBACK")
    return seen


def held(device: Device, ids: dict[str, list[str]]) -> dict[str, dict[str, tuple]]:
    return {
        table: {
            key: tuple(None if row.get(c) is None else str(row[c]) for c in COLUMNS[table])
            for key, row in device.rows[table].items()
            if key in ids[table]
        }
        for table in TABLES
    }


@settings(
    # SHARING_EXAMPLES=500 for a longer search than make test's.
    max_examples=int(os.environ.get("SHARING_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=10, max_size=40))
def test_every_device_holds_exactly_what_its_user_sees(cluster, database_url, sql, steps):
    client_roles(cluster)
    sql("SELECT sync_share_policies()")
    api = Api(build_app(database_url, PULL_PAGE_SIZE="3"), "package")
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    projects = [str(uuid.uuid4()) for _ in range(PROJECTS)]
    todos = [str(uuid.uuid4()) for _ in range(TODOS)]
    members = {(p, u): str(uuid.uuid4()) for p in range(PROJECTS) for u in range(USERS)}
    ids = {"projects": projects, "project_members": list(members.values()), "todos": todos}
    devices = [Device(u) for u in users]
    for p, project in enumerate(projects):
        devices[p].push("projects", "insert", {"id": project, "name": f"p{p}", "updated_at": at(0)})
        devices[p].sync(api)

    for n, action in enumerate(steps, start=1):
        kind = action[0]
        if kind == "sync":
            devices[action[1]].sync(api)
        elif kind == "push_member":
            _, actor, p, u, role = action
            row = {"id": members[(p, u)], "project_id": projects[p], "user_id": users[u]}
            if role is None:
                devices[actor].push("project_members", "delete", {**row, "updated_at": at(n)})
            else:
                devices[actor].push(
                    "project_members", "insert", {**row, "role": role, "updated_at": at(n)}
                )
        elif kind == "sql_member":
            _, p, u, role = action
            if role is None:
                sql("DELETE FROM project_members WHERE id = :i", i=members[(p, u)])
            else:
                sql(
                    "INSERT INTO project_members (id, project_id, user_id, role, updated_at) "
                    "VALUES (:i, :p, :u, :r, :t) "
                    "ON CONFLICT (id) DO UPDATE SET role = excluded.role, "
                    "updated_at = excluded.updated_at",
                    i=members[(p, u)],
                    p=projects[p],
                    u=users[u],
                    r=role,
                    t=at(n),
                )
        elif kind == "push_todo":
            _, actor, k, p, op = action
            row: dict[str, Any] = {"id": todos[k], "updated_at": at(n)}
            if op != "delete":
                row |= {"title": f"t{n}", "project_id": None if p is None else projects[p]}
            devices[actor].push("todos", op, row)
        elif kind == "sql_transfer":
            _, p, u = action
            sql(
                "UPDATE projects SET user_id = :u, updated_at = updated_at + interval '1 ms' "
                "WHERE id = :p",
                u=users[u],
                p=projects[p],
            )
        else:  # sql_move
            _, k, p = action
            sql(
                "UPDATE todos SET project_id = :p, updated_at = updated_at + interval '1 ms' "
                "WHERE id = :i",
                p=None if p is None else projects[p],
                i=todos[k],
            )

    for _ in range(2):  # everyone pushes what is left, then everyone pulls to the end
        for device in devices:
            device.sync(api)
    shared = 0
    for device in devices:
        mine = held(device, ids)
        assert mine == seen_through_policies(sql, device.user, ids), device.user
        shared += sum(1 for row in mine["todos"].values() if row[1] is not None)
    # What the examples exercised (pytest --hypothesis-show-statistics), so a run that
    # only ever refused or only held private rows shows.
    event(
        f"shared todos held: {min(shared, 5)}+" if shared >= 5 else f"shared todos held: {shared}"
    )
    event(f"changes refused: {'0' if not any(d.refused for d in devices) else '1+'}")
