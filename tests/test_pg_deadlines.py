"""The waits of a database connection are bounded (sync.pg): getting a connection — TCP,
login and the first answer, where a pooler hands out a server connection — shares one
deadline; every later wait has its own, longer bound, which a statement cut by Postgres'
statement_timeout never reaches. A bound that runs out is a TimeoutError, so the server
can tell "too slow" (503 at once) from "refused" or "broken"."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sync.pg import connect_url


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung server or a
    half-dead network path)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def _took(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_a_server_that_never_answers_the_login_times_out(silent_port):
    url = f"postgresql://sync:secret@127.0.0.1:{silent_port}/sync"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connect_url(url, connect_timeout=0.5)
    took = time.monotonic() - started
    assert 0.4 < took < 2.0, took


def test_the_first_answer_shares_the_connect_deadline(database_url):
    """Behind a pooler the first statement is where a server connection is waited for;
    without a pooler the same bound applies, so a first statement slower than the
    deadline is cut too."""
    con = connect_url(database_url, connect_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            con.run("SELECT pg_sleep(3)")
        assert time.monotonic() - started < 2.5
    finally:
        con.close()


def test_after_the_first_answer_statements_may_outlast_the_connect_deadline(database_url):
    con = connect_url(database_url, connect_timeout=1.0, read_timeout=10.0)
    try:
        assert con.run("SELECT 1") == [[1]]
        assert _took(lambda: con.run("SELECT pg_sleep(1.5)")) >= 1.5
        assert con.run("SELECT :n::int", n=7) == [[7]]  # still usable
    finally:
        con.close()


def test_a_statement_past_the_read_timeout_is_a_timeout(database_url):
    con = connect_url(database_url, read_timeout=0.5)
    try:
        con.run("SELECT 1")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            con.run("SELECT pg_sleep(3)")
        assert time.monotonic() - started < 2.0
    finally:
        con.close()


def test_statement_timeout_cuts_a_long_statement_before_the_socket_does(database_url):
    """The order the bounds are meant to act in: Postgres' statement_timeout (set per
    transaction with SET LOCAL) answers 57014 while the socket still waits, so the
    client learns why and the connection stays usable."""
    con = connect_url(database_url, read_timeout=3.0)
    try:
        con.run("BEGIN; SET LOCAL statement_timeout = '500ms'")
        with pytest.raises(Exception) as caught:
            con.run("SELECT pg_sleep(2)")
        assert caught.value.args[0]["C"] == "57014"
        con.run("ROLLBACK")
        assert con.run("SELECT 1") == [[1]]
    finally:
        con.close()


def test_an_unreachable_port_is_a_connection_error_at_once():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            connect_url(f"postgresql://sync:secret@127.0.0.1:{port}/sync")
        assert time.monotonic() - started < 1.0
