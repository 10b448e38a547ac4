"""Issue #8's measurements: what one sync costs in round trips and latency, whether a
device's own writes come back to it, and the push of rows that omit columns.

- **Latency**: a sync of N changes (60 % inserts, 30 % updates, 10 % deletes, shuffled;
  `scenarios.mixed_batch`) from a device holding a cursor, with its pull page in the same
  answer, at each round-trip time of the knob (bench/wire.py). Beside the client's wall
  time: the round trips the socket wrapper counted and Postgres' own time for the request
  (bench/pgtime.py), so "one round trip plus Postgres' time" is measured, not assumed.
- **Echo**: device A of a user pushes N new todos, then pulls with the cursor its answer
  gave; the bench counts A's own rows in that answer and in that next pull. Device B of the
  same user, which synced before A's push, pulls too and must get all N (guarantee 4): an
  echo-free result that also starves B would be a lost update, not a fix.
- **Throughput of partial rows**: N todos that carry only id, project, title and clock
  (done, due date, position and tags left to the table's defaults), against a floor that
  upserts the same partial rows in one statement.

Sequential, one request in flight, so Postgres' log lines of a window are the request's.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench import scenarios
from bench.data import Rows, changes
from bench.harness import Client, Server, direct, encode
from bench.pgtime import PostgresClock

PARTIAL_KEYS = ("id", "project_id", "title", "updated_at")

# The floor for partial rows: the columns the rows carry, one set-based upsert with
# last-write-wins; the others take the table's defaults on insert and are kept on update.
FLOOR_PARTIAL = (
    "INSERT INTO todos AS s (id, user_id, project_id, title, updated_at) "
    "SELECT id, user_id, project_id, title, updated_at "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r("
    "id uuid, user_id uuid, project_id uuid, title text, updated_at timestamptz) "
    "ON CONFLICT (id) DO UPDATE SET project_id = excluded.project_id, "
    "title = excluded.title, updated_at = excluded.updated_at "
    "WHERE s.updated_at < excluded.updated_at"
)


def partial(todos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: row[k] for k in PARTIAL_KEYS} for row in todos]


def sync_once(server: Server, rows: Rows, n: int, url: str, clock: PostgresClock) -> dict:
    """One mixed N-change sync with its pull page, timed by the client and by Postgres."""
    device = scenarios.new_device(server, rows)
    batch, expected = scenarios.mixed_batch(url, rows, device.client.user, device.project, n)
    body = encode(batch, device.cursor)
    clock.mark()
    answer = device.client.post(body)
    pg_ms, pg_messages = clock.since_mark()
    device.client.close()
    if answer.status != 200:
        raise RuntimeError(f"latency sync failed: {answer.status} {answer.body}")
    record = server.record(answer.request_id)
    stored = scenarios._count_rows(url, device.client.user)
    ok = len(answer.body["acceptedIds"]) == n and not answer.body["rejected"] and stored == expected
    return {
        "ms": answer.ms,
        "pg_ms": pg_ms,
        "pg_messages": pg_messages,
        "round_trips": record.get("round_trips"),
        "statements": record.get("statements"),
        "server_ms": record.get("ms"),
        "cpu_ms": record.get("cpu_ms"),
        "ok": ok,
    }


def _pull_all(client: Client, cursor: str | None) -> tuple[list[dict], str, list[str]]:
    """Follows hasMore from `cursor`; the entries, the last cursor and the request ids."""
    entries: list[dict] = []
    ids: list[str] = []
    for _ in range(1000):
        answer = client.sync([], cursor)
        if answer.status != 200:
            raise RuntimeError(f"pull failed: {answer.status} {answer.body}")
        ids.append(answer.request_id)
        entries += answer.body["pulledChanges"]
        cursor = answer.body["newServerTimestamp"]
        if not answer.body["hasMore"]:
            break
    return entries, cursor, ids


def echo(server: Server, rows: Rows, n: int, kind: str) -> dict:
    """Device A pushes N new todos (full rows, or `partial` ones); how many of A's own rows
    come back in the answer and on A's next pull, and how many reach device B."""
    a = scenarios.new_device(server, rows)
    b = Client(server.port, a.client.user)
    _, b_cursor, _ = _pull_all(b, None)  # B is up to date before A writes
    todos = rows.todos(n, a.project)
    sent = partial(todos) if kind == "partial" else todos
    answer = a.client.sync(changes(sent), a.cursor)
    if answer.status != 200 or len(answer.body["acceptedIds"]) != n:
        raise RuntimeError(f"echo push failed: {answer.status} {str(answer.body)[:300]}")
    push_record = server.record(answer.request_id)
    mine = {row["id"] for row in todos}
    in_answer = sum(1 for e in answer.body["pulledChanges"] if e["row"].get("id") in mine)
    entries, _, a_ids = _pull_all(a.client, answer.body["newServerTimestamp"])
    a_records = server.records(a_ids)
    next_pull = sum(1 for e in entries if e["row"].get("id") in mine)
    b_entries, _, b_ids = _pull_all(b, b_cursor)
    b_records = server.records(b_ids)
    b_got = len({e["row"]["id"] for e in b_entries if e["row"].get("id") in mine})
    a.client.close()
    b.close()
    return {
        "n": n,
        "kind": kind,
        "in_answer": in_answer,
        "next_pull": next_pull,
        "next_pull_requests": len(a_ids),
        "next_pull_round_trips": [r.get("round_trips") for r in a_records],
        "other_device_got": b_got,
        "other_device_requests": len(b_ids),
        "other_device_round_trips": [r.get("round_trips") for r in b_records],
        "push_round_trips": push_record.get("round_trips"),
        "ok": b_got == n,
    }


def push_partial(server: Server, rows: Rows, n: int, url: str) -> dict:
    """N new todos that omit columns, in one request from a device with a cursor."""
    device = scenarios.new_device(server, rows)
    body = encode(changes(partial(rows.todos(n, device.project))), device.cursor)
    answer = device.client.post(body)
    device.client.close()
    if answer.status != 200:
        raise RuntimeError(f"partial push failed: {answer.status} {str(answer.body)[:300]}")
    record = server.record(answer.request_id)
    stored = scenarios._count_rows(url, device.client.user)
    return {
        "ms": answer.ms,
        "rows_per_s": n / (answer.ms / 1000),
        "round_trips": record.get("round_trips"),
        "echoed": len(answer.body["pulledChanges"]),
        "ok": len(answer.body["acceptedIds"]) == n and stored == n,
    }


def floor_partial(url: str, rows: Rows, n: int) -> dict:
    """The partial rows as one JSON parameter of one upsert, in one transaction."""
    user = rows.uuid()
    project = scenarios.seed_project(url, rows, user)
    todos = [{**r, "user_id": user} for r in partial(rows.todos(n, project))]
    con = direct(url)
    try:
        started = time.perf_counter()
        con.run("BEGIN")
        con.run(FLOOR_PARTIAL, rows=json.dumps(todos, separators=(",", ":")))
        con.run("COMMIT")
        elapsed = time.perf_counter() - started
    finally:
        con.close()
    return {
        "ms": elapsed * 1000,
        "rows_per_s": n / elapsed,
        "ok": scenarios._count_rows(url, user) == n,
    }


def throughput(server: Server, rows: Rows, n: int, url: str, reps: int) -> list[dict]:
    """Full and partial rows, each against its floor, interleaved in rotating order."""
    methods = ["push", "floor", "push_partial", "floor_partial"]
    out = []
    for rep in range(reps):
        for method in methods[rep % 4 :] + methods[: rep % 4]:
            if method == "push":
                result = scenarios.push(server, rows, n, url)
            elif method == "floor":
                result = scenarios.floor(url, 0, rows, n)
            elif method == "push_partial":
                result = push_partial(server, rows, n, url)
            else:
                result = floor_partial(url, rows, n)
            if not result["ok"]:
                raise RuntimeError(f"{method} N={n}: lost or refused changes")
            out.append({"n": n, "method": method, "rep": rep, **result})
    return out


def measure(cluster, url: str, rows: Rows, cfg, log) -> dict:
    """The latency table (every size at every RTT, `latency_reps` interleaved rounds), the
    echo counts, and the throughput of full and partial rows against their floors."""
    out: dict[str, Any] = {"latency": [], "echo": [], "throughput": []}
    servers = {rtt: Server(url, rtt, True, BENCH_NODELAY="1") for rtt in cfg.latency_rtts}
    try:
        with PostgresClock(cluster) as clock:
            for rep in range(cfg.latency_reps):
                for rtt in cfg.latency_rtts:
                    for n in cfg.latency_sizes:
                        result = sync_once(servers[rtt], rows, n, url, clock)
                        if not result["ok"]:
                            raise RuntimeError(f"latency sync N={n} RTT={rtt}: lost changes")
                        out["latency"].append({"n": n, "rtt": rtt, "rep": rep, **result})
                log(f"latency rep {rep + 1}: N={cfg.latency_sizes} at RTT {cfg.latency_rtts} ms")
        zero = servers[cfg.latency_rtts[0]]
        for n in cfg.latency_sizes:
            for kind in ("full", "partial"):
                out["echo"].append(echo(zero, rows, n, kind))
        log("echo: own writes on the next pull counted")
        out["throughput"] = throughput(zero, rows, cfg.cost_n, url, cfg.throughput_reps)
        log(f"throughput of {cfg.cost_n} full and partial rows against their floors")
    finally:
        for server in servers.values():
            server.stop()
    return out
