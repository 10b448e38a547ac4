"""Faults mid-request lose nothing: a dropped connection or a lost COMMIT answer is retried
(a retry is a re-send, and re-sends are idempotent); concurrent writers to the same rows
serialize or retry; the answer is a 503 only when retries run out."""

import contextlib
import threading

from conftest import Api, build_app, user_id
from helpers import change, new_id, todo

from sync.migrate import connect_url


class FlakyConnection:
    """A real connection that drops (closes its socket) just before the first message
    that contains `fail_on`, or just after it (`after`). With `kill`, the server itself
    ends the session midway through that message, right before `fail_on`: the
    statements before it in the message have run, those after it never do."""

    def __init__(self, url, fail_on: str, after: bool = False, kill: bool = False):
        self.con = connect_url(url)
        self.fail_on = fail_on
        self.after = after
        self.kill = kill

    def run(self, statement, **params):
        if self.fail_on and self.fail_on in statement:
            if self.kill:
                at = statement.index(self.fail_on)
                self.fail_on = ""
                killed = statement[:at] + "SELECT pg_terminate_backend(pg_backend_pid());\n"
                return self.con.run(killed + statement[at:], **params)
            self.fail_on = ""
            if self.after:
                self.con.run(statement, **params)
                self.con.close()
                raise ConnectionResetError("connection lost after the statement")
            self.con.close()
            raise ConnectionResetError("connection lost")
        return self.con.run(statement, **params)

    def close(self):
        with contextlib.suppress(Exception):
            self.con.close()


def flaky_app(database_url, fail_on, after=False, failures=1, kill=False, **env):
    app = build_app(database_url, **env)
    left = [failures]

    def connect():
        if left[0] > 0:
            left[0] -= 1
            return FlakyConnection(database_url, fail_on, after, kill)
        return connect_url(database_url)

    app.connect = connect
    return app


def test_connection_lost_mid_push_is_retried(database_url, sql):
    app = flaky_app(database_url, "INSERT INTO")
    user, tid = user_id(), new_id()
    body = Api(app, "package").ok(user, [change("todos", "insert", todo(tid, "a", 0), 1)])
    assert body["acceptedIds"] == [1]
    assert sql("SELECT title FROM todos")[0][0] == "a"


def test_lost_commit_answer_is_retried_without_duplicates(database_url, sql):
    """COMMIT reached the database but its answer was lost: the re-run finds the rows
    already there and answers the same ids as accepted."""
    app = flaky_app(database_url, "COMMIT", after=True)
    user = user_id()
    changes = [change("todos", "insert", todo(new_id(), f"t{i}", 0), i) for i in range(5)]
    body = Api(app, "package").ok(user, changes)
    assert sorted(body["acceptedIds"]) == [0, 1, 2, 3, 4]
    assert sql("SELECT count(*) FROM todos")[0][0] == 5


def test_retries_run_out_into_503_and_nothing_applied(database_url, sql):
    app = flaky_app(database_url, "INSERT INTO", failures=5, MAX_ATTEMPTS="3")
    reply = Api(app, "package").sync(user_id(), [change("todos", "insert", todo(new_id(), "a", 0))])
    assert reply.status == 503 and reply.body["error"]["code"] == "unavailable"
    assert sql("SELECT count(*) FROM todos")[0][0] == 0


def test_failure_after_push_rolls_back_everything(database_url, sql):
    """The session ends after the push statement ran and before the pull's (the server
    terminates it midway through the one message): none of the push may remain."""
    app = flaky_app(database_url, "WITH cur", failures=5, kill=True, MAX_ATTEMPTS="2")
    reply = Api(app, "package").sync(user_id(), [change("todos", "insert", todo(new_id(), "a", 0))])
    assert reply.status == 503
    assert sql("SELECT count(*) FROM todos")[0][0] == 0


def test_concurrent_devices_writing_the_same_rows(make_api, sql):
    """Several devices of one user push overlapping batches at once (in opposite key
    orders): every request succeeds, and each row ends with its newest write."""
    api = make_api("http")
    user = user_id()
    keys = [new_id() for _ in range(20)]
    api.ok(user, [change("todos", "insert", todo(k, "seed", 0)) for k in keys])
    errors, newest = [], {}
    lock = threading.Lock()

    def device(n):
        order = keys if n % 2 else list(reversed(keys))
        for round_ in range(5):
            clock = 1 + round_ * 10 + n
            batch = [change("todos", "update", todo(k, f"d{n}r{round_}", clock)) for k in order]
            reply = api.sync(user, batch)
            if reply.status != 200:
                errors.append(reply.body)
                continue
            with lock:
                for k in keys:
                    if clock > newest.get(k, (0, ""))[0]:
                        newest[k] = (clock, f"d{n}r{round_}")

    threads = [threading.Thread(target=device, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = dict(sql("SELECT id::text, title FROM todos"))
    assert stored == {k: newest[k][1] for k in keys}
