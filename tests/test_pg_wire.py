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
