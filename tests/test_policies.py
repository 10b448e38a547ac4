"""The generated RLS policies (migrations/0007), tried as an attacker would through
supabase-js: as the `authenticated` role with a user's claims, on the real Postgres.

Supabase provides the roles `authenticated` and `anon`; here a superuser makes them (the
app role may not), then the policies' grants are re-run for the test's database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest
from conftest import SqlRunner, user_id
from helpers import at, new_id

from devtools.pgcluster import APP_ROLE, Cluster, supabase_roles


def client_roles(cluster: Cluster) -> None:
    """Supabase's roles, as Supabase has them: made by a superuser, usable by the owner."""
    supabase_roles(cluster.url(user="postgres"), APP_ROLE)


@pytest.fixture
def db(cluster: Cluster, sql: SqlRunner) -> SqlRunner:
    client_roles(cluster)
    sql("SELECT sync_share_policies()")
    return sql


class As:
    """One user's session through the client roles: every statement in its own
    transaction, as PostgREST runs a request."""

    def __init__(self, con: pg8000.native.Connection, user: str | None) -> None:
        self.con = con
        self.user = user

    def run(self, statement: str, **params: Any) -> list[list[Any]]:
        self.con.run("BEGIN")
        try:
            if self.user is None:
                self.con.run("SET LOCAL ROLE anon")
            else:
                self.con.run("SET LOCAL ROLE authenticated")
                self.con.run(
                    "SELECT set_config('request.jwt.claims', :c, true)",
                    c=json.dumps({"sub": self.user, "role": "authenticated"}),
                )
            rows = self.con.run(statement, **params) or []
        except pg8000.native.DatabaseError:
            self.con.run("ROLLBACK")
            raise
        self.con.run("COMMIT")
        return rows

    def ids(self, table: str) -> set[str]:
        return {str(r[0]) for r in self.run(f"SELECT id FROM {table}")}

    def refused(self, statement: str, **params: Any) -> bool:
        """True when the statement errs (a WITH CHECK or a grant) or touches no row (a
        USING that hides the row)."""
        try:
            touched = self.run(statement + " RETURNING 1", **params)
        except pg8000.native.DatabaseError:
            return True
        return not touched


@pytest.fixture
def as_user(db: SqlRunner) -> Iterator[Any]:
    con = db.connect()
    yield lambda user: As(con, user)
    con.close()


class World:
    """An owner's project with an editor and a viewer, and an outsider."""

    def __init__(self, db: SqlRunner) -> None:
        self.owner, self.editor, self.viewer, self.outsider = (user_id() for _ in range(4))
        self.project, self.other_project = new_id(), new_id()
        self.todo, self.private_todo = new_id(), new_id()
        self.editor_row, self.viewer_row = new_id(), new_id()
        db(
            "INSERT INTO projects (id, user_id, name, updated_at) VALUES "
            "(:p, :o, 'shared', :t), (:q, :x, 'outsider''s', :t)",
            p=self.project,
            q=self.other_project,
            o=self.owner,
            x=self.outsider,
            t=at(0),
        )
        db(
            "INSERT INTO project_members (id, project_id, user_id, role, updated_at) VALUES "
            "(:a, :p, :e, 'editor', :t), (:b, :p, :v, 'viewer', :t)",
            a=self.editor_row,
            b=self.viewer_row,
            p=self.project,
            e=self.editor,
            v=self.viewer,
            t=at(0),
        )
        db(
            "INSERT INTO todos (id, user_id, project_id, title, updated_at) VALUES "
            "(:a, :o, :p, 'in project', :t), (:b, :e, NULL, 'editor private', :t)",
            a=self.todo,
            b=self.private_todo,
            o=self.owner,
            e=self.editor,
            p=self.project,
            t=at(0),
        )
        db(
            "INSERT INTO user_settings (user_id, theme, updated_at) VALUES (:o, 'dark', :t)",
            o=self.owner,
            t=at(0),
        )


@pytest.fixture
def world(db: SqlRunner) -> World:
    return World(db)


def insert_todo(user: str, project: str | None) -> tuple[str, dict[str, Any]]:
    return (
        "INSERT INTO todos (id, user_id, project_id, title, updated_at) "
        "VALUES (:i, :u, :p, 'new', :t)",
        {"i": new_id(), "u": user, "p": project, "t": at(1)},
    )


def test_members_see_the_project_its_todos_and_members(world: World, as_user) -> None:
    for user in (world.owner, world.editor, world.viewer):
        me = as_user(user)
        assert world.project in me.ids("projects")
        assert world.other_project not in me.ids("projects")
        assert world.todo in me.ids("todos")
        assert me.ids("project_members") == {world.editor_row, world.viewer_row}
    assert as_user(world.editor).ids("todos") == {world.todo, world.private_todo}
    assert as_user(world.owner).ids("todos") == {world.todo}


def test_a_non_member_and_anon_see_nothing_of_it(world: World, as_user) -> None:
    for user in (world.outsider, user_id()):
        me = as_user(user)
        assert world.project not in me.ids("projects")
        assert world.todo not in me.ids("todos")
        assert world.private_todo not in me.ids("todos")
        assert not me.ids("project_members")
    anon = as_user(None)  # not signed in: no grant at all
    for table in ("projects", "todos", "project_members", "user_settings"):
        with pytest.raises(pg8000.native.DatabaseError, match="permission denied"):
            anon.run(f"SELECT 1 FROM {table}")


def test_a_todo_in_a_project_is_not_its_creators_by_user_id_alone(
    world: World, db: SqlRunner, as_user
) -> None:
    db("UPDATE todos SET user_id = :x WHERE id = :i", x=world.outsider, i=world.todo)
    assert world.todo not in as_user(world.outsider).ids("todos")
    assert world.todo in as_user(world.viewer).ids("todos")


def test_user_settings_stay_private(world: World, as_user) -> None:
    assert as_user(world.owner).run("SELECT theme FROM user_settings") == [["dark"]]
    for user in (world.editor, world.viewer, world.outsider):
        me = as_user(user)
        assert me.run("SELECT * FROM user_settings") == []
        assert me.refused("UPDATE user_settings SET theme = 'x' WHERE user_id = :o", o=world.owner)
        assert me.refused(
            "INSERT INTO user_settings (user_id, theme, updated_at) VALUES (:o, 'x', :t)",
            o=world.owner,
            t=at(2),
        )
    me = as_user(world.editor)
    assert not me.refused(
        "INSERT INTO user_settings (user_id, theme, updated_at) VALUES (:u, 'x', :t)",
        u=world.editor,
        t=at(2),
    )


def test_editors_and_the_owner_write_todos_viewers_do_not(world: World, as_user) -> None:
    for user in (world.owner, world.editor):
        me = as_user(user)
        statement, params = insert_todo(user, world.project)
        assert not me.refused(statement, **params)
        assert not me.refused("UPDATE todos SET title = :n WHERE id = :i", n=user, i=world.todo)
    viewer = as_user(world.viewer)
    statement, params = insert_todo(world.viewer, world.project)
    assert viewer.refused(statement, **params)
    assert viewer.refused("UPDATE todos SET title = 'v' WHERE id = :i", i=world.todo)
    assert viewer.refused("DELETE FROM todos WHERE id = :i", i=world.todo)
    # A viewer's own todos outside any project are theirs.
    statement, params = insert_todo(world.viewer, None)
    assert not viewer.refused(statement, **params)
    assert not as_user(world.editor).refused("DELETE FROM todos WHERE id = :i", i=world.todo)


def test_a_new_todo_is_the_writers_and_an_update_keeps_its_creator(world: World, as_user) -> None:
    editor = as_user(world.editor)
    statement, params = insert_todo(world.owner, world.project)  # naming another user
    assert editor.refused(statement, **params)
    assert editor.refused(
        "UPDATE todos SET user_id = :e WHERE id = :i", e=world.editor, i=world.todo
    )
    assert editor.refused(
        "UPDATE todos SET user_id = :x WHERE id = :i", x=world.outsider, i=world.todo
    )
    # Keeping the creator (the owner's todo) is an ordinary edit.
    assert not editor.refused(
        "UPDATE todos SET user_id = :o, done = true WHERE id = :i", o=world.owner, i=world.todo
    )


def test_no_moving_a_todo_into_a_project_one_may_not_write(world: World, as_user) -> None:
    editor = as_user(world.editor)
    assert editor.refused(
        "UPDATE todos SET project_id = :q WHERE id = :i", q=world.other_project, i=world.todo
    )
    assert editor.refused(
        "UPDATE todos SET project_id = :q WHERE id = :i",
        q=world.other_project,
        i=world.private_todo,
    )
    statement, params = insert_todo(world.editor, world.other_project)
    assert editor.refused(statement, **params)
    # Into the shared project, where the editor writes: allowed.
    assert not editor.refused(
        "UPDATE todos SET project_id = :p WHERE id = :i", p=world.project, i=world.private_todo
    )
    # The owner's project todo taken out to the editor's private list: its creator stays
    # the owner, so it would be nobody's the editor may write.
    assert editor.refused("UPDATE todos SET project_id = NULL WHERE id = :i", i=world.todo)


def test_only_the_owner_manages_members_and_the_project(world: World, as_user) -> None:
    add = (
        "INSERT INTO project_members (id, project_id, user_id, role, updated_at) "
        "VALUES (:i, :p, :u, 'editor', :t)"
    )
    for user in (world.editor, world.viewer, world.outsider):
        me = as_user(user)
        assert me.refused(add, i=new_id(), p=world.project, u=world.outsider, t=at(1))
        assert me.refused(add, i=new_id(), p=world.project, u=user, t=at(1))
        assert me.refused(
            "UPDATE project_members SET role = 'editor' WHERE id = :i", i=world.viewer_row
        )
        assert me.refused("DELETE FROM project_members WHERE id = :i", i=world.editor_row)
        assert me.refused("UPDATE projects SET name = 'x' WHERE id = :p", p=world.project)
        assert me.refused("DELETE FROM projects WHERE id = :p", p=world.project)
        assert me.refused(
            "INSERT INTO projects (id, user_id, name, updated_at) VALUES (:i, :o, 'x', :t)",
            i=new_id(),
            o=world.owner,
            t=at(1),
        )
    # A member cannot slip into a project through another project they own either.
    outsider = as_user(world.outsider)
    assert outsider.refused(
        "UPDATE project_members SET project_id = :q WHERE id = :i",
        q=world.other_project,
        i=world.viewer_row,
    )
    owner = as_user(world.owner)
    assert not owner.refused(add, i=new_id(), p=world.project, u=world.outsider, t=at(1))
    assert not owner.refused(
        "UPDATE project_members SET role = 'editor' WHERE id = :i", i=world.viewer_row
    )
    assert not owner.refused("UPDATE projects SET name = 'y' WHERE id = :p", p=world.project)
    assert owner.refused(
        "UPDATE projects SET user_id = :e WHERE id = :p", e=world.editor, p=world.project
    )


def test_an_ex_member_loses_access_at_once(world: World, as_user) -> None:
    editor = as_user(world.editor)
    assert world.todo in editor.ids("todos")
    assert not as_user(world.owner).refused(
        "DELETE FROM project_members WHERE id = :i", i=world.editor_row
    )
    assert world.project not in editor.ids("projects")
    assert world.todo not in editor.ids("todos")
    assert not editor.ids("project_members")
    assert editor.refused("UPDATE todos SET title = 'late' WHERE id = :i", i=world.todo)
    statement, params = insert_todo(world.editor, world.project)
    assert editor.refused(statement, **params)
    assert editor.ids("todos") == {world.private_todo}


def test_a_client_cannot_write_the_bookkeeping(world: World, as_user) -> None:
    me = as_user(world.editor)
    assert me.refused(
        "INSERT INTO sync_tombstones (table_name, pk, user_id, updated_at) "
        "VALUES ('todos', :i, :o, now())",
        i=world.todo,
        o=world.owner,
    )
    with pytest.raises(pg8000.native.DatabaseError):
        me.run("SELECT * FROM sync_tombstones")
    # ...yet its own writes leave the tombstones the server's pulls need (the trigger runs
    # as the owner).
    assert not me.refused("DELETE FROM todos WHERE id = :i", i=world.todo)


INTERNAL = ("sync_tables", "sync_tombstones", "sync_roots", "sync_grants", "sync_schema")


def test_supabase_default_grants_do_not_open_the_bookkeeping(
    world: World, db: SqlRunner, as_user
) -> None:
    """On Supabase every new table of the public schema is granted to the client roles.
    migrations/0009 takes that back for the server's own tables, and row-level security
    with no policy hides them even if a grant comes back."""
    me = as_user(world.editor)
    assert not me.refused("DELETE FROM todos WHERE id = :i", i=world.todo)  # a tombstone
    db("GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated")  # Supabase's default
    db("SELECT sync_lock_internal()")
    for table in INTERNAL:
        with pytest.raises(pg8000.native.DatabaseError, match="permission denied"):
            me.run(f"SELECT * FROM {table}")
    db("GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, authenticated")  # granted again
    assert db("SELECT count(*) FROM sync_tombstones")[0][0] > 0
    for table in INTERNAL:
        assert me.run(f"SELECT * FROM {table}") == [], table
    assert me.refused("UPDATE sync_tables SET owner_column = 'project_id'")
    assert me.refused("DELETE FROM sync_roots")
    # The app's own tables still answer through their policies, and writes still leave
    # their tombstones.
    assert me.ids("projects") == {world.project}
    assert me.run("SELECT count(*) FROM project_members")[0][0] == 2
    added = new_id()
    assert not me.refused(
        "INSERT INTO todos (id, user_id, project_id, title, updated_at) "
        "VALUES (:i, :u, :p, 'after the lock', now())",
        i=added,
        u=world.editor,
        p=world.project,
    )
    assert not me.refused("DELETE FROM todos WHERE id = :i", i=added)
    assert db("SELECT count(*) FROM sync_tombstones WHERE pk = :i", i=added)[0][0] > 0


def test_the_owner_login_is_not_bound_by_the_policies(world: World, db: SqlRunner) -> None:
    """The sync server logs in as the tables' owner, which bypasses RLS."""
    assert db("SELECT count(*) FROM projects")[0][0] == 2
    assert db("SELECT count(*) FROM todos")[0][0] == 2
    assert db(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'todos'"
    ) == [[True, False]]


def test_generating_again_changes_nothing(world: World, db: SqlRunner) -> None:
    query = "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies ORDER BY 1, 2"
    before = db(query)
    db("SELECT sync_share_policies()")
    assert db(query) == before
    assert {(r[0], r[1]) for r in before} >= {
        ("projects", "sync_select"),
        ("project_members", "sync_insert"),
        ("todos", "sync_update"),
        ("user_settings", "sync_owner"),
    }
