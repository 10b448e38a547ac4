"""The server through a transaction-mode pooler (Debian's PgBouncer, Hyperdrive's model).

Three parts:
- the contract tests (push, pull, pagination, faults, concurrency) re-run with the app
  connecting through PgBouncer: they are imported here, and this module's `database_url`
  points them at the pooler (direct SQL, as other programs write, still goes straight
  to Postgres);
- what the pooler does to the statements we send (multi-statement simple queries,
  unnamed extended-protocol statements, SET LOCAL, and why there is no plain SET);
- outages behind the pooler: Postgres stopped, or the pool taken, answer 503 within the
  connect deadline over real HTTP, and the server recovers by itself, losing nothing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Api, SqlRunner, _api, build_app, token_for, user_id
from helpers import change, new_id, project, todo
from pgbouncer import Bouncer

# The contract tests that run again through the pooler (collected here as well).
from test_faults import (  # noqa: F401
    test_concurrent_devices_writing_the_same_rows,
    test_connection_lost_mid_push_is_retried,
    test_lost_commit_answer_is_retried_without_duplicates,
    test_retries_run_out_into_503_and_nothing_applied,
)
from test_pull import (  # noqa: F401
    test_deletes_reach_other_devices_as_tombstones,
    test_direct_sql_writes_reach_devices,
    test_first_pull_returns_all_rows_of_the_caller_only,
    test_pagination_delivers_everything_once,
    test_pull_since_cursor_returns_only_newer_changes,
    test_transaction_committing_between_pages_is_delivered,
    test_transaction_open_during_pull_is_delivered_later,
)
from test_push import (  # noqa: F401
    test_a_row_cannot_hang_under_another_users_row,
    test_an_update_that_omits_columns_keeps_their_stored_values,
    test_children_before_parents_in_the_outbox_still_apply,
    test_constraint_violation_rejects_only_that_change,
    test_delete_newer_removes_row_and_older_delete_does_not,
    test_insert_then_newer_update_applies,
    test_many_constraint_violations_in_a_large_batch,
    test_older_update_loses_and_client_gets_server_row,
    test_per_change_rejections_apply_the_rest,
    test_resending_the_same_request_is_idempotent,
    test_statements_do_not_grow_with_rows,
    test_touching_another_users_row_is_forbidden_and_leaks_nothing,
)

from devtools.pgcluster import Cluster
from sync.migrate import migrate
from sync.pg import CONNECT_TIMEOUT, connect_url

# How long past the connect deadline an answer may take (HTTP, retries' backoff, a
# loaded 2-core machine).
SLACK = 3.0


@contextlib.contextmanager
def _private_dir() -> Iterator[Path]:
    """A directory outside pytest's temporary tree. Postgres and PgBouncer run as the
    `postgres` user when we are root, and reach their files through its parents; a
    concurrent pytest run resets pytest-of-<user> to 0700, which would keep a server we
    restart mid-test from its own files."""
    path = Path(tempfile.mkdtemp(prefix="sync-pooler-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_dir() -> Iterator[Path]:
    with _private_dir() as path:
        yield path


@pytest.fixture(scope="session")
def bouncer(cluster: Cluster) -> Iterator[Bouncer]:
    with _private_dir() as path:
        pooler = Bouncer(path, cluster.url(), pool_size=10)
        pooler.start()
        try:
            yield pooler
        finally:
            pooler.stop()


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    """The imported contract tests over real HTTP only: the package transport reaches
    the database the same way, so running it again through the pooler adds nothing."""
    yield from _api("http", build_app(database_url))


@pytest.fixture
def database_url(database_url: str, bouncer: Bouncer) -> str:
    """The test's own database, as the app reaches it: through the pooler."""
    return bouncer.route(database_url)


@pytest.fixture
def sql(database_url: str, bouncer: Bouncer) -> Iterator[SqlRunner]:
    """Direct SQL, as other programs write: straight to Postgres."""
    runner = SqlRunner(bouncer.direct(database_url))
    yield runner
    runner.close()


def _transactions(bouncer: Bouncer, database: str) -> int:
    stats = [row for row in bouncer.show("STATS") if row["database"] == database]
    return int(stats[0]["total_xact_count"]) if stats else 0


def test_the_app_really_goes_through_the_pooler(api, bouncer, database_url):
    """A guard for the imported tests: the app's transactions are counted by PgBouncer,
    and its many client connections share a few server connections."""
    database = database_url.rsplit("/", 1)[1]
    before = _transactions(bouncer, database)
    user = user_id()
    for n in range(5):
        api.ok(user, [change("todos", "insert", todo(new_id(), f"t{n}", n))])
    deadline = time.monotonic() + 5  # PgBouncer's stats are a little behind
    while _transactions(bouncer, database) < before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _transactions(bouncer, database) >= before + 5
    pools = [row for row in bouncer.show("POOLS") if row["database"] == database]
    servers = sum(int(pools[0][k]) for k in ("sv_active", "sv_idle", "sv_used", "sv_tested"))
    assert 1 <= servers <= bouncer.pool_size


# -- what the pooler does to our statements ------------------------------------------


@pytest.fixture
def single(cluster: Cluster, database_url: str, own_dir: Path) -> Iterator[Bouncer]:
    """A pooler with one server connection: every client shares one Postgres session, so
    what leaks from one client to the next shows."""
    pooler = Bouncer(own_dir, cluster.url(), pool_size=1)
    pooler.start()
    try:
        yield pooler
    finally:
        pooler.stop()


def test_our_kinds_of_statement_through_transaction_pooling(single, database_url):
    """What the server relies on holds through PgBouncer's transaction mode: a simple
    query carrying several statements answers each (the server sends BEGIN with its
    first read); unnamed extended-protocol statements with parameters work in and out of
    transactions; SET LOCAL holds for its transaction only. A plain SET outlives its
    transaction and reaches the next client of the same server connection — the reason
    the server keeps no session state."""
    url = single.route(database_url)
    a, b = connect_url(url), connect_url(url)
    try:
        assert a.run("SELECT 1; SELECT 2, 3") == [[1], [2, 3]]
        for n in range(3):
            assert a.run("SELECT :n::int * 2", n=n) == [[n * 2]]
        a.run("BEGIN; SET LOCAL statement_timeout = '1234ms'")
        assert a.run("SHOW statement_timeout") == [["1234ms"]]
        assert a.run("SELECT :x::text", x="in a transaction") == [["in a transaction"]]
        a.run("COMMIT")
        assert b.run("SHOW statement_timeout") == [["0"]]
        a.run("SET statement_timeout = '4321ms'")  # session state: what we never do
        assert b.run("SHOW statement_timeout") == [["4321ms"]]
    finally:
        for con in (a, b):
            con.run("RESET statement_timeout")
            con.close()


class _Watched:
    """A real connection that notes every statement with parameters sent while no
    transaction is open."""

    def __init__(self, url: str, outside: list[str]) -> None:
        self.con = connect_url(url)
        self.outside = outside

    def run(self, statement: str, **params):
        # pg8000 keeps the transaction status of the last ReadyForQuery: b"T" in a
        # transaction, b"E" in a failed one, b"I" (or None before any) outside.
        if params and self.con._transaction_status not in (b"T", b"E"):
            self.outside.append(statement[:80])
        return self.con.run(statement, **params)

    def close(self) -> None:
        self.con.close()


def test_no_statement_with_parameters_runs_outside_a_transaction(database_url):
    """pg8000 sends a statement with parameters as three exchanges, each ended by Sync
    (Parse; Describe; Bind+Execute). Outside a transaction a transaction-mode pooler may
    hand each exchange to another server connection. Measured through PgBouncer, 8
    clients on 3 server connections, each client's statement text its own: of 1 200
    such statements 1 114 ran another client's statement with our values, 2 failed with
    26000 ("unnamed prepared statement does not exist"), 84 were right; inside a
    transaction all 1 200 were right. sync.pg sends one Sync (see the next test), but
    the Workers host may connect with pg8000 as it is, so every request path keeps such
    statements inside BEGIN…COMMIT, where the server connection is held."""
    outside: list[str] = []
    app = build_app(database_url)
    app.connect = lambda: _Watched(database_url, outside)
    gen = _api("http", app)
    api = next(gen)
    try:
        user, parent, child = user_id(), new_id(), new_id()
        assert api.request("GET", "/api/health").status == 200
        headers = {"authorization": f"Bearer {token_for(user)}"}
        assert api.request("GET", "/api/schema", headers=headers).status == 200
        api.ok(user, [change("projects", "insert", project(parent, "p", 0))])
        body = api.ok(
            user,
            [
                change("todos", "insert", todo(child, "t", 1, project_id=parent)),
                change("todos", "insert", todo(new_id(), "orphan", 1, project_id=new_id())),
                change("todos", "update", todo(child, "u", 2)),
                change("projects", "delete", project(parent, "p", 3)),  # careful mode
            ],
        )
        assert body["rejected"]
        api.pull_all(user)
    finally:
        gen.close()
    assert outside == []


def test_statements_with_parameters_outside_a_transaction_through_the_pool(
    cluster, database_url, own_dir
):
    """sync.pg's connections send a statement with parameters with one Sync, so even
    outside a transaction it runs on one server connection: 8 clients on 3 server
    connections, each statement distinct per client, all answered right."""
    pooler = Bouncer(own_dir, cluster.url(), pool_size=3)
    pooler.start()
    failures: list[str] = []

    def client(n: int) -> None:
        con = connect_url(pooler.route(database_url))
        try:
            for i in range(150):
                try:
                    got = con.run(f"SELECT :v::int + {n}", v=i)
                except Exception as error:  # every failure is the finding
                    failures.append(f"{type(error).__name__}: {error}"[:120])
                    continue
                if got != [[i + n]]:
                    failures.append(f"client {n} got {got} for {i}")
        finally:
            con.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        pooler.stop()
    assert failures == []


def test_a_taken_pool_answers_503_within_the_connect_deadline(single, database_url):
    """Every server connection of the pool is held by a long transaction: the next
    request waits in PgBouncer's queue. It gets 503 once the connect deadline runs out,
    instead of waiting as long as the pooler queues (query_wait_timeout, 120 s), and
    the next request after the pool frees up is served."""
    gen = _api("http", build_app(single.route(database_url)))
    api = next(gen)
    holder = connect_url(single.route(database_url))
    holder.run("BEGIN; SELECT 1")  # holds the pool's only server connection
    try:
        started = time.monotonic()
        reply = api.request("GET", "/api/health")
        waited = time.monotonic() - started
        assert reply.status == 503, reply.body
        assert waited < CONNECT_TIMEOUT + SLACK, waited
    finally:
        holder.run("COMMIT")
        holder.close()
    try:
        assert api.request("GET", "/api/health").status == 200
    finally:
        gen.close()


# -- wrong credentials: how they look through the pooler --------------------------------


def _login_error(url: str) -> dict[str, str]:
    with pytest.raises(Exception) as caught:
        connect_url(url).run("SELECT 1")
    fields = caught.value.args[0]
    assert isinstance(fields, dict), caught.value
    return fields


def test_a_wrong_password_through_pgbouncer_is_a_misconfiguration_as_directly(
    cluster, bouncer, database_url, own_dir
):
    """Postgres refuses a wrong password with 28P01, but PgBouncer reports every failed
    login — its check of our password, and Postgres' refusal of its own — as 08P01
    (protocol_violation, in the "connection exception" class that reads as transient).
    The connection layer re-states such refusals with Postgres' SQLSTATE, so the server
    answers a wrong password through the pooler as it does directly: a misconfiguration,
    never "unavailable; retry later"."""
    password = cluster.password_file.read_text().strip()
    direct_wrong = cluster.url().replace(f":{password}@", ":wrong@")
    assert _login_error(direct_wrong)["C"] == "28P01"
    ours_wrong = bouncer.url("sync", password="wrong")
    refused = _login_error(ours_wrong)
    assert (refused["C"], refused["pooler_sqlstate"]) == ("28P01", "08P01")
    assert refused["M"] == "SASL authentication failed"

    pooler_wrong = Bouncer(own_dir, cluster.url().replace(f":{password}@", ":wrong@"))
    pooler_wrong.start()
    try:
        relayed = _login_error(pooler_wrong.url("sync"))
        assert (relayed["C"], relayed["pooler_sqlstate"]) == ("28P01", "08P01")
        assert relayed["M"].startswith("password authentication failed")
        answers = {}
        for label, url in [
            ("direct", direct_wrong),
            ("ours refused", ours_wrong),
            ("pooler's refused", pooler_wrong.url("sync")),
        ]:
            gen = _api("http", build_app(url))
            api = next(gen)
            try:
                health = api.request("GET", "/api/health")
                sync = api.sync(user_id(), [])
                answers[label] = (health.status, health.body, sync.status, sync.body)
            finally:
                gen.close()
    finally:
        pooler_wrong.stop()
    assert answers["direct"][2] != 503, answers["direct"]
    assert answers["ours refused"] == answers["direct"]
    assert answers["pooler's refused"] == answers["direct"]


def test_a_missing_database_through_pgbouncer_is_3D000_as_directly(cluster, bouncer):
    assert _login_error(cluster.url(database="no_such_db"))["C"] == "3D000"
    refused = _login_error(bouncer.url("no_such_db"))
    assert (refused["C"], refused["pooler_sqlstate"]) == ("3D000", "08P01")


# -- outages behind the pooler ----------------------------------------------------------


@pytest.fixture(scope="module")
def outage_cluster() -> Iterator[tuple[Cluster, str]]:
    """A cluster of its own, so stopping it does not touch the other tests' databases."""
    with _private_dir() as path:
        pg = Cluster(path / "cluster", fast=True)
        pg.start()
        try:
            url = pg.create_database("outage")
            migrate(url, say=lambda _line: None)
            yield pg, url
        finally:
            pg.destroy()


def _timed(call):
    started = time.monotonic()
    reply = call()
    return reply, time.monotonic() - started


def _both(first, second):
    """Runs two calls at once; their replies and how long each took."""
    results: dict[int, tuple[object, float]] = {}
    threads = [
        threading.Thread(target=lambda n=n, call=call: results.__setitem__(n, _timed(call)))
        for n, call in enumerate((first, second))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (*results[0], *results[1])


def _wait_for_health(api, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if api.request("GET", "/api/health").status == 200:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"/api/health not 200 within {seconds} s of Postgres' restart")


def test_postgres_outage_behind_the_pooler_is_503_quickly_and_heals(outage_cluster, own_dir):
    """Postgres stops behind PgBouncer. PgBouncer still accepts logins (it answers them
    itself) and queues each statement until a server connection comes back; the server
    answers 503 within the connect deadline instead, on /api/health and /api/sync alike.
    Once Postgres is back the same server answers 200 again with nothing restarted, and
    a change sent during the outage and re-sent afterwards is stored once."""
    pg, direct_url = outage_cluster
    pooler = Bouncer(own_dir, direct_url)
    pooler.start()
    gen = _api("http", build_app(pooler.route(direct_url)))
    api = next(gen)
    try:
        user = user_id()
        before, during = new_id(), new_id()
        assert api.request("GET", "/api/health").status == 200
        api.ok(user, [change("todos", "insert", todo(before, "before", 0), 1)])

        batch = [change("todos", "insert", todo(during, "during", 1), 2)]
        pg.stop()
        try:
            # At once, so both wait in PgBouncer's queue (after a failed server login it
            # refuses at once for server_login_retry, which would hide a missing bound).
            health, health_took, sync, sync_took = _both(
                lambda: api.request("GET", "/api/health"), lambda: api.sync(user, batch)
            )
        finally:
            pg.start()
        assert health.status == 503, health.body
        assert health_took < CONNECT_TIMEOUT + SLACK, health_took
        assert sync.status == 503 and sync.body["error"]["code"] == "unavailable", sync.body
        assert sync_took < CONNECT_TIMEOUT + SLACK, sync_took

        _wait_for_health(api, 30)
        body = api.ok(user, batch)  # the client re-sends its outbox
        assert body["acceptedIds"] == [2]
        assert api.ok(user, batch)["acceptedIds"] == [2]  # and once more: still once
        check = connect_url(direct_url)
        try:
            rows = check.run("SELECT id::text, title FROM todos ORDER BY title")
        finally:
            check.close()
        assert rows == [[before, "before"], [during, "during"]]
        entries, _ = api.pull_all(user)
        assert sorted(e["row"]["id"] for e in entries) == sorted([before, during])
    finally:
        gen.close()
        pooler.stop()


def test_postgres_outage_without_a_pooler_is_503_at_once(outage_cluster):
    """Straight to a stopped Postgres the connection is refused: 503 without waiting."""
    pg, direct_url = outage_cluster
    gen = _api("http", build_app(direct_url))
    api = next(gen)
    try:
        pg.stop()
        try:
            health, health_took = _timed(lambda: api.request("GET", "/api/health"))
            sync, sync_took = _timed(
                lambda: api.sync(user_id(), [change("todos", "insert", todo(new_id(), "x", 0))])
            )
        finally:
            pg.start()
        assert (health.status, sync.status) == (503, 503)
        assert max(health_took, sync_took) < SLACK, (health_took, sync_took)
        _wait_for_health(api, 10)
    finally:
        gen.close()


def test_the_pooler_itself_down_is_503_at_once(outage_cluster, own_dir):
    """PgBouncer not running: connection refused, 503 at once; served again once it is
    back on its port."""
    _pg, direct_url = outage_cluster
    pooler = Bouncer(own_dir, direct_url)
    pooler.start()
    gen = _api("http", build_app(pooler.route(direct_url)))
    api = next(gen)
    try:
        assert api.request("GET", "/api/health").status == 200
        pooler.stop()
        reply, took = _timed(
            lambda: api.request(
                "POST",
                "/api/sync",
                json.dumps({"lastSyncAt": None, "changes": []}).encode(),
                {
                    "content-type": "application/json",
                    "authorization": f"Bearer {token_for(user_id())}",
                },
            )
        )
        assert reply.status == 503 and took < SLACK, (reply.body, took)
        pooler.start()  # same port
        _wait_for_health(api, 10)
    finally:
        gen.close()
        pooler.stop()


def test_requests_in_flight_when_postgres_stops_end_in_503(outage_cluster, own_dir):
    """Postgres stops while requests are under way through the pooler (a row they all
    update is locked by another program): each gets an answer — 200 if it got in before,
    else 503 — within the deadlines, and none hangs."""
    pg, direct_url = outage_cluster
    pooler = Bouncer(own_dir, direct_url)
    pooler.start()
    gen = _api("http", build_app(pooler.route(direct_url)))
    api = next(gen)
    user, key = user_id(), new_id()
    api.ok(user, [change("todos", "insert", todo(key, "seed", 0))])
    locker = connect_url(direct_url)
    locker.run("BEGIN")
    locker.run("SELECT 1 FROM todos WHERE id = :k FOR UPDATE", k=key)
    replies: list[tuple[int, float]] = []

    def device(n: int) -> None:
        reply, took = _timed(
            lambda: api.sync(user, [change("todos", "update", todo(key, f"d{n}", 10 + n))])
        )
        replies.append((reply.status, took))

    threads = [threading.Thread(target=device, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        pg.stop()
        try:
            for t in threads:
                t.join(timeout=60)
        finally:
            pg.start()
        assert not any(t.is_alive() for t in threads)
        assert {status for status, _ in replies} <= {200, 503}, replies
        assert max(took for _, took in replies) < CONNECT_TIMEOUT * 2 + SLACK, replies
        _wait_for_health(api, 30)
    finally:
        with contextlib.suppress(Exception):
            locker.close()
        gen.close()
        pooler.stop()
