"""Sharing (migrations/0005, the example's project_members): move-in, move-out, who may
write what, and the cursor for access changes — through the sync endpoint and by direct
SQL, as an attacker would try it."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import user_id
from helpers import apply_pulled, at, change, new_id, project, todo


class Device:
    """One device of a user: the tables as the client kit would hold them."""

    def __init__(self, api: Any, user: str) -> None:
        self.api, self.user, self.cursor = api, user, None
        self.tables: dict[str, dict[str, dict]] = {}

    def sync(self, changes: list[dict] | None = None) -> dict[str, Any]:
        """One request, then pulls until hasMore is false; returns the first answer."""
        first = None
        while True:
            body = self.api.ok(self.user, changes, self.cursor)
            changes = None
            first = first or body
            apply_pulled(self.tables, body["pulledChanges"])
            self.cursor = body["newServerTimestamp"]
            if not body["hasMore"]:
                return first

    def ids(self, table: str) -> set[str]:
        return set(self.tables.get(table, {}))


def member(mid: str, pid: str, user: str, role: str, clock: float) -> dict[str, Any]:
    return {"id": mid, "project_id": pid, "user_id": user, "role": role, "updated_at": at(clock)}


def codes(body: dict[str, Any]) -> list[str]:
    return [r["code"] for r in body["rejected"]]


@pytest.fixture
def shared(api):
    """An owner's project with two todos, and a device for the owner."""
    owner = Device(api, user_id())
    pid, todos = new_id(), [new_id(), new_id()]
    body = owner.sync(
        [change("projects", "insert", project(pid, "home", 0))]
        + [
            change("todos", "insert", todo(t, f"t{k}", 0, project_id=pid))
            for k, t in enumerate(todos)
        ]
    )
    assert body["rejected"] == []
    return owner, pid, todos


def add(owner: Device, pid: str, user: str, role: str = "editor", clock: float = 1) -> str:
    mid = new_id()
    body = owner.sync([change("project_members", "insert", member(mid, pid, user, role, clock))])
    assert body["rejected"] == [], body
    return mid


def test_move_in_delivers_the_project_its_todos_and_members_however_old(api, shared):
    owner, pid, todos = shared
    guest = Device(api, user_id())
    guest.sync()
    assert guest.ids("todos") == set() and guest.ids("projects") == set()
    mid = add(owner, pid, guest.user)
    guest.sync()
    assert guest.ids("projects") == {pid}
    assert guest.ids("todos") == set(todos)
    assert guest.ids("project_members") == {mid}
    assert guest.tables["todos"][todos[0]]["user_id"] == owner.user  # the creator's, kept


def test_an_editor_edits_and_adds_todos_and_the_owner_gets_them(api, shared):
    owner, pid, todos = shared
    editor = Device(api, user_id())
    add(owner, pid, editor.user)
    editor.sync()
    row = dict(editor.tables["todos"][todos[0]], title="edited", updated_at=at(5))
    new = new_id()
    body = editor.sync(
        [
            change("todos", "update", row),
            change("todos", "insert", todo(new, "mine", 5, project_id=pid, user_id=editor.user)),
        ]
    )
    assert body["rejected"] == []
    owner.sync()
    assert owner.tables["todos"][todos[0]]["title"] == "edited"
    assert owner.tables["todos"][todos[0]]["user_id"] == owner.user
    assert owner.tables["todos"][new]["user_id"] == editor.user
    # The editor deletes the owner's todo; the owner's device loses it.
    body = editor.sync([change("todos", "delete", {"id": todos[1], "updated_at": at(6)})])
    assert body["rejected"] == []
    owner.sync()
    assert todos[1] not in owner.ids("todos")


def test_a_viewer_cannot_write(api, shared):
    owner, pid, todos = shared
    viewer = Device(api, user_id())
    add(owner, pid, viewer.user, "viewer")
    viewer.sync()
    row = dict(viewer.tables["todos"][todos[0]], title="viewer was here", updated_at=at(5))
    body = viewer.sync(
        [
            change("todos", "update", row),
            change("todos", "insert", todo(new_id(), "x", 5, project_id=pid)),
            change("todos", "delete", {"id": todos[1], "updated_at": at(6)}),
        ]
    )
    assert codes(body) == ["forbidden"] * 3
    assert viewer.tables["todos"][todos[0]]["title"] == "t0"  # the server's row came back
    assert todos[1] in viewer.ids("todos")
    owner.sync()
    assert owner.tables["todos"][todos[0]]["title"] == "t0"


def test_only_the_owner_renames_the_project_and_manages_members(api, shared):
    owner, pid, _ = shared
    editor = Device(api, user_id())
    mid = add(owner, pid, editor.user)
    editor.sync()
    stranger = user_id()
    attempts = [
        change(
            "projects",
            "update",
            dict(editor.tables["projects"][pid], name="mine", updated_at=at(5)),
        ),
        change("project_members", "insert", member(new_id(), pid, stranger, "editor", 5)),
        change("project_members", "update", member(mid, pid, editor.user, "editor", 6)),
        change("project_members", "delete", {"id": mid, "updated_at": at(7)}),
        change("projects", "delete", {"id": pid, "updated_at": at(8)}),
    ]
    body = editor.sync(attempts)
    assert codes(body) == ["forbidden"] * len(attempts)
    assert api.pull_all(stranger)[0] == []


def test_a_member_cannot_move_a_todo_into_a_project_they_are_not_in(api, shared):
    owner, pid, todos = shared
    editor = Device(api, user_id())
    add(owner, pid, editor.user)
    editor.sync()
    other = Device(api, user_id())
    elsewhere = new_id()
    other.sync([change("projects", "insert", project(elsewhere, "theirs", 0))])
    row = dict(editor.tables["todos"][todos[0]], project_id=elsewhere, updated_at=at(5))
    # Refused as a reference to no project at all would be: nothing says it exists.
    body = editor.sync([change("todos", "update", row)])
    assert codes(body) == ["constraint_violation"]
    new = todo(new_id(), "sneak", 5, project_id=elsewhere)
    assert codes(editor.sync([change("todos", "insert", new)])) == ["constraint_violation"]
    # Into a project they only view: forbidden.
    viewed = new_id()
    other.sync([change("projects", "insert", project(viewed, "viewed", 0))])
    add(other, viewed, editor.user, "viewer")
    row = dict(row, project_id=viewed, updated_at=at(6))
    assert codes(editor.sync([change("todos", "update", row)])) == ["forbidden"]
    other.sync()
    assert other.ids("todos") == set()


def test_a_pushed_row_may_not_name_another_creator(api, shared):
    owner, pid, _ = shared
    editor = Device(api, user_id())
    add(owner, pid, editor.user)
    forged = todo(new_id(), "forged", 5, project_id=pid, user_id=owner.user)
    assert codes(editor.sync([change("todos", "insert", forged)])) == ["forbidden"]


def test_non_members_see_nothing_and_cannot_write(api, shared):
    _owner, pid, todos = shared
    stranger = Device(api, user_id())
    stranger.sync()
    body = stranger.sync(
        [
            change("todos", "update", todo(todos[0], "mine now", 9, project_id=pid)),
            change("todos", "insert", todo(new_id(), "in", 9, project_id=pid)),
            change("project_members", "insert", member(new_id(), pid, stranger.user, "editor", 9)),
        ]
    )
    # Their key of another's row is forbidden; a project they cannot see is refused as a
    # project that does not exist.
    assert codes(body) == ["forbidden", "constraint_violation", "constraint_violation"]
    assert stranger.tables.get("todos", {}) == {} and stranger.ids("projects") == set()
    assert all(e["op"] == "delete" for e in body["pulledChanges"])  # never the content


def test_move_out_deletes_every_row_and_refuses_writes_at_once(api, shared):
    owner, pid, todos = shared
    guest = Device(api, user_id())
    mid = add(owner, pid, guest.user)
    guest.sync()
    kept = dict(guest.tables["todos"][todos[0]], title="offline edit", updated_at=at(9))
    owner.sync([change("project_members", "delete", {"id": mid, "updated_at": at(8)})])
    body = guest.sync([change("todos", "update", kept)])
    assert codes(body) == ["forbidden"]
    assert guest.ids("todos") == set() and guest.ids("projects") == set()
    assert guest.ids("project_members") == set()
    owner.sync()
    assert owner.tables["todos"][todos[0]]["title"] == "t0"
    assert mid not in owner.ids("project_members")


def test_membership_by_direct_sql_moves_in_and_out(api, shared, sql):
    _owner, pid, todos = shared
    guest = Device(api, user_id())
    guest.sync()
    mid = new_id()
    sql(
        "INSERT INTO project_members VALUES (:m, :p, :u, 'viewer', now())",
        m=mid,
        p=pid,
        u=guest.user,
    )
    guest.sync()
    assert guest.ids("todos") == set(todos) and guest.ids("projects") == {pid}
    sql("DELETE FROM project_members WHERE id = :m", m=mid)
    guest.sync()
    assert guest.ids("todos") == set() and guest.ids("projects") == set()


def test_an_ownership_transfer_in_sql_moves_the_project_in_and_out(api, shared, sql):
    """Another program gives the project to a new owner: the new owner's next pull brings
    the project, its old todos and its members; the old owner's brings a delete for each,
    and their writes to those rows are refused from then on."""
    owner, pid, todos = shared
    viewer, heir = Device(api, user_id()), Device(api, user_id())
    add(owner, pid, viewer.user, "viewer")
    heir.sync()
    viewer.sync()
    sql("UPDATE projects SET user_id = :u, updated_at = now() WHERE id = :p", u=heir.user, p=pid)
    heir.sync()
    assert heir.ids("projects") == {pid} and heir.ids("todos") == set(todos)
    assert len(heir.ids("project_members")) == 1
    kept = dict(owner.tables["todos"][todos[0]], title="offline edit", updated_at=at(9))
    body = owner.sync([change("todos", "update", kept)])
    assert codes(body) == ["forbidden"]
    assert owner.ids("projects") == owner.ids("todos") == owner.ids("project_members") == set()
    body = heir.sync([change("todos", "update", dict(kept, title="the heir's edit"))])
    assert body["rejected"] == []
    viewer.sync()  # the member keeps everything, and sees the new owner's edit
    assert viewer.ids("todos") == set(todos)
    assert viewer.tables["todos"][todos[0]]["title"] == "the heir's edit"


def test_an_old_owner_who_stays_a_member_keeps_the_rows(api, shared, sql):
    owner, pid, todos = shared
    heir = Device(api, user_id())
    heir.sync()
    sql(  # one transaction: the project changes hands, the old owner becomes an editor
        "WITH given AS (UPDATE projects SET user_id = :u WHERE id = :p RETURNING id) "
        "INSERT INTO project_members SELECT gen_random_uuid(), id, :o, 'editor', now() FROM given",
        u=heir.user,
        p=pid,
        o=owner.user,
    )
    owner.sync()
    assert owner.ids("projects") == {pid} and owner.ids("todos") == set(todos)
    body = owner.sync(
        [change("todos", "update", todo(todos[1], "still an editor", 9, project_id=pid))]
    )
    assert body["rejected"] == []
    heir.sync()
    assert heir.ids("todos") == set(todos)


def test_a_todo_moving_to_a_project_the_member_is_not_in_leaves_their_device(api, shared):
    owner, pid, todos = shared
    guest = Device(api, user_id())
    add(owner, pid, guest.user)
    guest.sync()
    private = new_id()
    owner.sync([change("projects", "insert", project(private, "private", 0))])
    moved = dict(owner.tables["todos"][todos[0]], project_id=private, updated_at=at(9))
    assert owner.sync([change("todos", "update", moved)])["rejected"] == []
    guest.sync()
    assert guest.ids("todos") == {todos[1]}
    # And back: it comes in again.
    back = dict(moved, project_id=pid, updated_at=at(10))
    owner.sync([change("todos", "update", back)])
    guest.sync()
    assert guest.ids("todos") == set(todos)


def test_a_membership_committed_late_still_delivers_its_rows(api, shared, sql):
    _owner, pid, todos = shared
    guest = Device(api, user_id())
    guest.sync()
    late = sql.connect()
    try:
        late.run("BEGIN")
        late.run(
            "INSERT INTO project_members VALUES (:m, :p, :u, 'editor', now())",
            m=new_id(),
            p=pid,
            u=guest.user,
        )
        guest.sync()  # runs while the grant is uncommitted
        assert guest.ids("todos") == set()
        late.run("COMMIT")
    finally:
        late.close()
    guest.sync()
    assert guest.ids("todos") == set(todos) and guest.ids("projects") == {pid}


def test_a_paged_move_in_delivers_every_row_and_changes_made_meanwhile(make_api):
    api = make_api("package", PULL_PAGE_SIZE="5")
    owner = Device(api, user_id())
    pid = new_id()
    ids = [new_id() for _ in range(23)]
    owner.sync(
        [change("projects", "insert", project(pid, "big", 0))]
        + [change("todos", "insert", todo(i, "t", 0, project_id=pid)) for i in ids]
    )
    guest = Device(api, user_id())
    guest.sync()
    add(owner, pid, guest.user)
    body = api.ok(guest.user, [], guest.cursor)
    assert body["hasMore"]
    first = {e["row"]["id"] for e in body["pulledChanges"] if e["table"] == "todos"}
    guest.cursor = body["newServerTimestamp"]
    for e in body["pulledChanges"]:
        guest.tables.setdefault(e["table"], {})[e["row"]["id"]] = e["row"]
    # Between pages: the owner edits a row already delivered and adds one.
    edited = next(iter(first))
    extra = new_id()
    owner.sync(
        [
            change("todos", "update", todo(edited, "changed meanwhile", 5, project_id=pid)),
            change("todos", "insert", todo(extra, "new meanwhile", 5, project_id=pid)),
        ]
    )
    guest.sync()  # the rest of the move-in's pages
    guest.sync()  # the next pull: what changed while they were read
    assert guest.ids("todos") == {*ids, extra}
    assert guest.tables["todos"][edited]["title"] == "changed meanwhile"


def visible_ids(sql, user: str) -> dict[str, set[str]]:
    """What `user` may see, by SQL (the rules of migrations/0006)."""
    roots = (
        "SELECT id FROM projects WHERE user_id = :u "
        "UNION SELECT project_id FROM project_members WHERE user_id = :u"
    )
    return {
        "projects": {
            r[0] for r in sql(f"SELECT id::text FROM projects WHERE id IN ({roots})", u=user)
        },
        "project_members": {
            r[0]
            for r in sql(
                f"SELECT id::text FROM project_members WHERE project_id IN ({roots})", u=user
            )
        },
        "todos": {
            r[0]
            for r in sql(
                "SELECT id::text FROM todos WHERE (project_id IS NULL AND user_id = :u) "
                f"OR project_id IN ({roots})",
                u=user,
            )
        },
    }


@pytest.mark.parametrize("first_sync", [True, False], ids=["first-sync", "move-in"])
def test_many_projects_page_one_by_one_and_nothing_is_missed(make_api, sql, first_sync):
    """Five projects granted in one transaction (or all there at a first sync), paged four
    rows at a time: every row arrives, also rows changed between pages in projects paged
    before and after, and a cursor issued before positions named a root still ends the
    sync without a miss."""
    from sync.cursor import Cursor

    api = make_api("package", PULL_PAGE_SIZE="4")
    owner, guest = Device(api, user_id()), Device(api, user_id())
    projects = [new_id() for _ in range(5)]
    owner.sync(
        [change("projects", "insert", project(p, f"p{k}", 0)) for k, p in enumerate(projects)]
        + [
            change("todos", "insert", todo(new_id(), "t", 0, project_id=p))
            for p in projects
            for _ in range(3)
        ]
    )
    mine = new_id()
    guest.sync(
        [
            change("projects", "insert", project(mine, "mine", 0)),
            change("todos", "insert", todo(new_id(), "m", 0, project_id=mine)),
            change("todos", "insert", todo(new_id(), "private", 0)),
        ]
    )
    if not first_sync:
        guest.sync()
    sql(
        "INSERT INTO project_members (id, project_id, user_id, role, updated_at) "
        "SELECT gen_random_uuid(), p, CAST(:u AS uuid), 'viewer', now() "
        "FROM unnest(CAST(:ps AS uuid[])) p",
        u=guest.user,
        ps="{" + ",".join(projects) + "}",
    )
    device = Device(api, guest.user) if first_sync else guest
    if not first_sync:
        device.tables = {t: dict(rows) for t, rows in guest.tables.items()}
    body = api.ok(device.user, [], device.cursor)
    apply_pulled(device.tables, body["pulledChanges"])
    assert body["hasMore"]
    # Between pages: a change in every project, and a new todo in the first and the last.
    sql("UPDATE todos SET title = 'meanwhile', updated_at = now() WHERE project_id IS NOT NULL")
    for p in (projects[0], projects[-1]):
        sql(
            "INSERT INTO todos (id, user_id, project_id, title, updated_at) "
            "VALUES (gen_random_uuid(), CAST(:o AS uuid), :p, 'new', now())",
            o=owner.user,
            p=p,
        )
    cursor = Cursor.decode(body["newServerTimestamp"])
    assert cursor.after is not None
    body = api.ok(device.user, [], cursor.encode())
    apply_pulled(device.tables, body["pulledChanges"])
    # An older server's cursor: the position without its root part.
    cursor = Cursor.decode(body["newServerTimestamp"])
    if cursor.after is not None:
        xid, table, _root, key = cursor.after
        device.cursor = Cursor(cursor.seen, cursor.upto, (xid, table, key)).encode()  # type: ignore[arg-type]
    else:
        device.cursor = body["newServerTimestamp"]
    calls = len(api.calls)
    device.sync()
    device.sync()  # what changed while the pages were read
    assert len(api.calls) - calls < 30  # pages of four, not one per row
    expected = visible_ids(sql, guest.user)
    assert {t: device.ids(t) for t in expected} == expected
    titles = {r["title"] for r in device.tables["todos"].values() if r["project_id"] in projects}
    assert titles == {"meanwhile", "new"}


def test_another_users_private_todo_stays_out_of_reach_of_a_member(api, shared):
    """A private row (no project) of the owner, named by a member who may write some
    project: refused, never deleted or changed (a NULL root must not read as allowed)."""
    owner, pid, _ = shared
    editor = Device(api, user_id())
    add(owner, pid, editor.user)
    private = new_id()
    owner.sync([change("todos", "insert", todo(private, "mine alone", 1))])
    body = editor.sync(
        [
            change("todos", "delete", {"id": private, "updated_at": at(9)}),
            change("todos", "update", todo(private, "taken", 9)),
        ]
    )
    assert codes(body) == ["forbidden", "forbidden"]
    assert private not in editor.ids("todos")
    owner.sync()
    assert owner.tables["todos"][private]["title"] == "mine alone"


def test_user_settings_stay_private_and_private_todos_too(api, shared):
    owner, pid, _ = shared
    guest = Device(api, user_id())
    add(owner, pid, guest.user)
    mine = new_id()
    owner.sync(
        [
            change("user_settings", "insert", {"theme": "dark", "updated_at": at(3)}),
            change("todos", "insert", todo(mine, "private", 3)),
        ]
    )
    guest.sync()
    assert guest.ids("user_settings") == set()
    assert mine not in guest.ids("todos")


def test_a_shared_table_of_ones_own_declared_as_the_docs_say(database_url, sql):
    """docs/your-tables.md's "Shared tables" migration, run as written (names prefixed for
    the suite), then synced: a writer adds a card, a member is removed."""
    from pathlib import Path

    from conftest import SECRET, Api

    from sync.app import App
    from sync.migrate import connect_url
    from sync.settings import Settings

    doc = (Path(__file__).parents[1] / "docs" / "your-tables.md").read_text()
    block = doc.split("-- migrations/0101_boards.sql", 1)[1].split("\n", 1)[1].split("```")[0]
    block = "\n".join(line.split("--", 1)[0] for line in block.splitlines())
    for name in ("board_members", "boards", "cards"):
        block = block.replace(f"'{name}'", f"'suite_{name}'").replace(
            f" {name} ", f" suite_{name} "
        )
    for statement in block.split(";"):
        if statement.strip():
            sql(statement)
    settings = Settings.from_env({"SUPABASE_JWT_SECRET": SECRET})
    api = Api(App(settings, lambda: connect_url(database_url), log=lambda _r: None), "package")
    owner, writer = Device(api, user_id()), Device(api, user_id())
    board, card, mid = new_id(), new_id(), new_id()
    row = {"id": board, "title": "b", "updated_at": at(0)}
    owner.sync([change("suite_boards", "insert", row)])
    membership = member(mid, board, writer.user, "writer", 1)
    membership["board_id"] = membership.pop("project_id")
    assert owner.sync([change("suite_board_members", "insert", membership)])["rejected"] == []
    writer.sync()
    assert writer.ids("suite_boards") == {board}
    new_card = {"id": card, "board_id": board, "body": "hi", "updated_at": at(2)}
    assert writer.sync([change("suite_cards", "insert", new_card)])["rejected"] == []
    owner.sync()
    assert owner.tables["suite_cards"][card]["user_id"] == writer.user
    owner.sync([change("suite_board_members", "delete", {"id": mid, "updated_at": at(3)})])
    writer.sync()
    assert writer.ids("suite_boards") == set() and writer.ids("suite_cards") == set()
