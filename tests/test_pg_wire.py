"""How sync.pg's connections talk to Postgres: a statement with parameters is one
exchange (one Sync), and a value that cannot be sent fails before anything is sent, so
the connection stays usable. Round trips are what a sync pays most through Hyperdrive
(20-30 ms each from a distant region)."""

from __future__ import annotations

import pytest

from sync.pg import connect_url


class _Counted:
    """Counts how often the connection's buffered socket is flushed: one flush per
    exchange that then waits for the server's answer."""

    def __init__(self, con) -> None:
        self.flushes = 0
        inner = con._sock
        flush = inner.flush

        def counted() -> None:
            self.flushes += 1
            flush()

        inner.flush = counted


def test_a_statement_with_parameters_is_one_round_trip(database_url):
    con = connect_url(database_url)
    try:
        con.run("SELECT 1")
        counter = _Counted(con)
        assert con.run("SELECT :a::int + :b::int, :c::text", a=1, b=2, c="x") == [[3, "x"]]
        assert counter.flushes == 1
        assert con.run("SELECT g FROM generate_series(1, :n) g", n=3) == [[1], [2], [3]]
        con.run("CREATE TEMP TABLE t (v int)")
        assert con.run("INSERT INTO t VALUES (:v)", v=5) is None  # no rows, as pg8000 says
        assert con.row_count == 1
        assert counter.flushes == 4
    finally:
        con.close()


def test_errors_of_a_statement_with_parameters_keep_the_connection_in_step(database_url):
    con = connect_url(database_url)
    try:
        con.run("SELECT 1")
        with pytest.raises(Exception) as parse_error:
            con.run("SELEC :a::int", a=1)
        assert parse_error.value.args[0]["C"] == "42601"
        with pytest.raises(Exception) as bind_error:
            con.run("SELECT :a::uuid", a="not-a-uuid")
        assert bind_error.value.args[0]["C"] == "22P02"
        with pytest.raises(UnicodeEncodeError):
            con.run("SELECT :a::text", a="\ud83d")  # a lone surrogate: nothing was sent
        assert con.run("SELECT :a::int", a=7) == [[7]]
        con.run("BEGIN")
        with pytest.raises(Exception) as division:
            con.run("SELECT 1 / :z::int", z=0)
        assert division.value.args[0]["C"] == "22012"
        with pytest.raises(Exception) as aborted:
            con.run("SELECT :a::int", a=1)
        assert aborted.value.args[0]["C"] == "25P02"  # in a failed transaction, as before
        con.run("ROLLBACK")
        assert con.run("SELECT :a::text", a="ok") == [["ok"]]
    finally:
        con.close()


class _ReadsNothing:
    """A socket file whose next read answers None, as a non-blocking socket does when no
    data is there yet (seen from the Workers runtime's sockets under concurrency)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.empty_reads = 1

    def read(self, size=-1):
        if self.empty_reads:
            self.empty_reads -= 1
            return None
        return self.inner.read(size)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_read_that_gives_nothing_is_a_lost_connection_not_a_type_error(database_url):
    con = connect_url(database_url)
    try:
        con._sock = _ReadsNothing(con._sock)
        with pytest.raises(ConnectionError):
            con.run("SELECT CAST(:n AS int)", n=1)
    finally:
        con.close()


def test_a_sync_whose_socket_gives_nothing_is_retried(database_url, sql):
    from conftest import Api, build_app, user_id
    from helpers import change, new_id, todo

    app = build_app(database_url)
    opened = []

    def connect():
        con = connect_url(database_url)
        if not opened:  # the first connection's socket comes back empty once
            con._sock = _ReadsNothing(con._sock)
        opened.append(con)
        return con

    app.connect = connect
    body = Api(app, "package").ok(user_id(), [change("todos", "insert", todo(new_id(), "a", 0), 1)])
    assert body["acceptedIds"] == [1]
    assert len(opened) == 2
    assert sql("SELECT count(*) FROM todos")[0][0] == 1
