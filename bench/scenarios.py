"""The measurements over HTTP and the bench's two reference implementations.

Every function measures one thing once and returns a plain dict; run.py repeats and
interleaves them so that each ratio is taken side by side in the same run.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench import wire
from bench.data import Rows, changes, iso
from bench.harness import Client, Server, admin, direct, encode

TODO_COLUMNS = (
    ("id", "uuid"),
    ("user_id", "uuid"),
    ("project_id", "uuid"),
    ("title", "text"),
    ("done", "boolean"),
    ("due_at", "timestamptz"),
    ("position", "double precision"),
    ("tags", "jsonb"),
    ("updated_at", "timestamptz"),
)
_names = ", ".join(c for c, _ in TODO_COLUMNS)

# The floor: the same rows, one set-based upsert with last-write-wins, same driver, no HTTP,
# no validation, no ownership or tombstone checks, no RETURNING.
FLOOR_UPSERT = (
    f"INSERT INTO todos AS s ({_names}) SELECT {_names} "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r("
    + ", ".join(f"{c} {t}" for c, t in TODO_COLUMNS)
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c, _ in TODO_COLUMNS if c not in ("id", "user_id"))
    + " WHERE s.updated_at < excluded.updated_at"
)

# The proposal's literal algorithm: for each change fetch the stored row, compare, write.
PER_ROW_FETCH = (
    "SELECT user_id::text, updated_at FROM todos WHERE id = CAST(:id AS uuid) FOR UPDATE"
)
PER_ROW_INSERT = (
    f"INSERT INTO todos ({_names}) VALUES ("
    + ", ".join(f"CAST(:{c} AS {t})" for c, t in TODO_COLUMNS)
    + ")"
)
PER_ROW_UPDATE = (
    "UPDATE todos SET "
    + ", ".join(f"{c} = CAST(:{c} AS {t})" for c, t in TODO_COLUMNS if c not in ("id", "user_id"))
    + " WHERE id = CAST(:id AS uuid)"
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _count_rows(url: str, user: str) -> int:
    con = admin(url)
    try:
        return con.run("SELECT count(*) FROM todos WHERE user_id = CAST(:u AS uuid)", u=user)[0][0]
    finally:
        con.close()


# -- set-up -------------------------------------------------------------------------------


@dataclass
class Device:
    """A client of a fresh user that already synced once and owns a project."""

    client: Client
    cursor: str
    project: str


def new_device(server: Server, rows: Rows, user: str | None = None) -> Device:
    client = Client(server.port, user or rows.uuid())
    project = rows.uuid()
    row = {"id": project, "name": "bench", "updated_at": iso(rows.base)}
    answer = client.sync([{"id": 0, "table": "projects", "op": "insert", "row": row}], None)
    if answer.status != 200 or answer.body["acceptedIds"] != [0]:
        raise RuntimeError(f"set-up sync failed: {answer.status} {answer.body}")
    server.record(answer.request_id)
    return Device(client, answer.body["newServerTimestamp"], project)


def seed_rows(url: str, user: str, todos: list[dict[str, Any]]) -> None:
    """Writes rows straight into Postgres (untimed), as the floor does."""
    con = admin(url)
    try:
        con.run("BEGIN")
        con.run(FLOOR_UPSERT, rows=json.dumps([{**r, "user_id": user} for r in todos]))
        con.run("COMMIT")
    finally:
        con.close()


def seed_project(url: str, rows: Rows, user: str) -> str:
    """A project of `user` written straight into Postgres (untimed), for the todos of the
    bench's own reference implementations to reference, as the Worker's todos do."""
    project = rows.uuid()
    con = admin(url)
    try:
        con.run(
            "INSERT INTO projects (id, user_id, name, updated_at) VALUES "
            "(CAST(:p AS uuid), CAST(:u AS uuid), 'bench', CAST(:t AS timestamptz))",
            p=project,
            u=user,
            t=iso(rows.base),
        )
    finally:
        con.close()
    return project


def _server_fields(records: list[dict]) -> dict[str, Any]:
    return {
        "statements": sorted({r.get("statements") for r in records}),
        "round_trips": sorted({r.get("round_trips") for r in records}),
        "connect_ms": sum(r.get("connect_ms", 0) for r in records) / len(records),
        "cpu_ms": sum(r.get("cpu_ms", 0) for r in records),
        "server_ms": sum(r.get("ms", 0) for r in records),
    }


# -- push and its baselines -----------------------------------------------------------------


def mixed_batch(
    url: str, rows: Rows, user: str, project: str, n: int
) -> tuple[list[dict[str, Any]], int]:
    """A batch of 60 % inserts, 30 % updates and 10 % deletes, shuffled; the updated and
    deleted rows are written into Postgres first (untimed) with older clocks. Returns the
    changes and the number of rows the user holds once they apply."""
    n_update, n_delete = 3 * n // 10, n // 10
    n_insert = n - n_update - n_delete
    held = rows.todos(n_update + n_delete, project)
    seed_rows(url, user, held)
    fresh = rows.todos(n, project)  # newer clocks than `held`
    ops = [("insert", row) for row in fresh[:n_insert]]
    ops += [
        ("update", {**row, "id": old["id"]})
        for row, old in zip(fresh[n_insert : n_insert + n_update], held[:n_update], strict=True)
    ]
    ops += [
        ("delete", {"id": old["id"], "updated_at": row["updated_at"]})
        for row, old in zip(fresh[n_insert + n_update :], held[n_update:], strict=True)
    ]
    rows.rng.shuffle(ops)
    batch = [
        {"id": i + 1, "table": "todos", "op": op, "row": row} for i, (op, row) in enumerate(ops)
    ]
    return batch, n_insert + n_update


def push(server: Server, rows: Rows, n: int, url: str, mixed: bool = False) -> dict[str, Any]:
    """N changes in one request, from a device with a cursor (its steady state): new todos,
    or with `mixed` the batch of `mixed_batch`."""
    device = new_device(server, rows)
    if mixed:
        batch, expected = mixed_batch(url, rows, device.client.user, device.project, n)
    else:
        batch, expected = changes(rows.todos(n, device.project)), n
    body = encode(batch, device.cursor)
    answer = device.client.post(body)
    device.client.close()
    if answer.status != 200:
        raise RuntimeError(f"push failed: {answer.status} {answer.body}")
    record = server.record(answer.request_id)
    stored = _count_rows(url, device.client.user)
    ok = len(answer.body["acceptedIds"]) == n and not answer.body["rejected"] and stored == expected
    return {
        "ms": answer.ms,
        "rows_per_s": n / (answer.ms / 1000),
        "ok": ok,
        "body_bytes": len(body),
        "phases": record.get("phases", {}),
        **_server_fields([record]),
    }


def current_state(server: Server, rows: Rows, n: int, url: str, cap_s: float) -> dict[str, Any]:
    """The loop the proposal replaces: the same N changes as N requests of one change each,
    one after another, each with the cursor of the previous answer. Stops at `cap_s`."""
    device = new_device(server, rows)
    todos = rows.todos(n, device.project)
    cursor, ms, ids, ok = device.cursor, [], [], True
    started = time.perf_counter()
    for i, change in enumerate(changes(todos)):
        answer = device.client.sync([change], cursor)
        ok &= answer.status == 200 and answer.body["acceptedIds"] == [change["id"]]
        cursor = answer.body["newServerTimestamp"] if answer.status == 200 else cursor
        ms.append(answer.ms)
        ids.append(answer.request_id)
        if time.perf_counter() - started > cap_s and i + 1 < n:
            break
    elapsed = time.perf_counter() - started
    device.client.close()
    done = len(ms)
    ok &= _count_rows(url, device.client.user) == done
    return {
        "ms": elapsed * 1000,
        "rows_per_s": done / elapsed,
        "done": done,
        "capped": done < n,
        "request_ms_p50": percentile(ms, 50),
        "ok": ok,
        **_server_fields(server.records(ids)),
    }


def per_row(url: str, rtt_ms: float, rows: Rows, n: int, cap_s: float) -> dict[str, Any]:
    """Reference only (no HTTP, no validation): one transaction, for each change a fetch of
    the stored row, a comparison, and an insert or update. Stops at `cap_s`."""
    user = rows.uuid()
    project = seed_project(url, rows, user)
    todos = [{**r, "user_id": user, "tags": json.dumps(r["tags"])} for r in rows.todos(n, project)]
    con = direct(url, rtt_ms)
    try:
        wire.reset_tally()
        started = time.perf_counter()
        con.run("BEGIN")
        done = 0
        for row in todos:
            found = con.run(PER_ROW_FETCH, id=row["id"])
            if not found:
                con.run(PER_ROW_INSERT, **row)
            elif found[0][0] == user and found[0][1] < datetime.fromisoformat(row["updated_at"]):
                con.run(PER_ROW_UPDATE, **{k: v for k, v in row.items() if k != "user_id"})
            done += 1
            if time.perf_counter() - started > cap_s and done < n:
                break
        con.run("COMMIT")
        elapsed = time.perf_counter() - started
        trips = wire.tally().round_trips
    finally:
        con.close()
    return {
        "ms": elapsed * 1000,
        "rows_per_s": done / elapsed,
        "done": done,
        "capped": done < n,
        "round_trips": trips,
        "ok": _count_rows(url, user) == done,
    }


def floor(url: str, rtt_ms: float, rows: Rows, n: int, nodelay: bool = True) -> dict[str, Any]:
    """The best this driver and database do: the rows as one JSON parameter of one
    set-based upsert, in one transaction, on an open connection (login not counted)."""
    user = rows.uuid()
    project = seed_project(url, rows, user)
    todos = [{**r, "user_id": user} for r in rows.todos(n, project)]
    con = direct(url, rtt_ms, nodelay)
    try:
        wire.reset_tally()
        started = time.perf_counter()
        payload = json.dumps(todos, separators=(",", ":"))
        con.run("BEGIN")
        con.run(FLOOR_UPSERT, rows=payload)
        con.run("COMMIT")
        elapsed = time.perf_counter() - started
        trips = wire.tally().round_trips
    finally:
        con.close()
    return {
        "ms": elapsed * 1000,
        "rows_per_s": n / elapsed,
        "round_trips": trips,
        "ok": _count_rows(url, user) == n,
    }


# -- pull -------------------------------------------------------------------------------------


def pull(server: Server, rows: Rows, n: int, url: str) -> dict[str, Any]:
    """Initial sync of a user holding N rows: pages until hasMore is false."""
    user = rows.uuid()
    seed_rows(url, user, rows.todos(n))
    client = Client(server.port, user)
    cursor, seen, ids, ok = None, set(), [], True
    started = time.perf_counter()
    for _ in range(n // 10 + 10):  # bounded: pages are far larger than 10 rows
        answer = client.sync([], cursor)
        ok &= answer.status == 200
        if answer.status != 200:
            break
        ids.append(answer.request_id)
        seen.update(e["row"]["id"] for e in answer.body["pulledChanges"] if e["table"] == "todos")
        cursor = answer.body["newServerTimestamp"]
        if not answer.body["hasMore"]:
            break
    elapsed = time.perf_counter() - started
    client.close()
    records = server.records(ids)
    return {
        "ms": elapsed * 1000,
        "rows_per_s": n / elapsed,
        "requests": len(ids),
        "page_ms": [r.get("ms") for r in records],
        "ok": ok and len(seen) == n,
        **_server_fields(records),
    }


# -- concurrency ----------------------------------------------------------------------------


@dataclass
class DeviceRun:
    device: Device
    pushed: set[str] = field(default_factory=set)  # row ids the server accepted
    known: set[str] = field(default_factory=set)  # row ids this device pushed or pulled
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    pushes: int = 0


def _drain(run: DeviceRun, deadline: float, batch: int, rows: Rows, lock: threading.Lock):
    device = run.device
    next_id = 1
    while time.perf_counter() < deadline and run.pushes < 100_000:
        with lock:
            todos = rows.todos(batch, device.project)
        batch_changes = changes(todos, next_id)
        next_id += batch
        sent = {c["id"]: c["row"]["id"] for c in batch_changes}
        answer = device.client.sync(batch_changes, device.cursor)
        run.latencies.append(answer.ms)
        run.pushes += 1
        if answer.status != 200:
            run.errors += 1
            continue
        accepted = {sent[i] for i in answer.body["acceptedIds"]}
        run.pushed |= accepted
        run.known |= accepted
        _take(run, answer.body)
        for _ in range(1000):  # follow hasMore, bounded
            if not answer.body["hasMore"]:
                break
            answer = device.client.sync([], device.cursor)
            run.latencies.append(answer.ms)
            if answer.status != 200:
                run.errors += 1
                break
            _take(run, answer.body)


def _take(run: DeviceRun, body: dict) -> None:
    run.device.cursor = body["newServerTimestamp"]
    for entry in body["pulledChanges"]:
        if entry["table"] == "todos" and entry["op"] == "upsert":
            run.known.add(entry["row"]["id"])


def concurrency(
    server: Server, rows: Rows, k: int, seconds: float, url: str, batch: int = 10
) -> dict[str, Any]:
    """K devices (4 per user) each pushing `batch`-change syncs for `seconds`; then every
    device pulls to the end and the bench checks that nothing was lost: every accepted row
    is in Postgres and reached every device of its user."""
    users = [rows.uuid() for _ in range(max(1, math.ceil(k / 4)))]
    runs = [DeviceRun(new_device(server, rows, users[i % len(users)])) for i in range(k)]
    lock = threading.Lock()
    start = threading.Barrier(k + 1)
    deadline = [0.0]

    def work(run: DeviceRun) -> None:
        start.wait()
        _drain(run, deadline[0], batch, rows, lock)

    threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in runs]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(seconds + 120)
    elapsed = time.perf_counter() - began

    # Every device pulls to the end, then what each holds is compared with Postgres.
    for run in runs:
        for _ in range(1000):
            answer = run.device.client.sync([], run.device.cursor)
            if answer.status != 200:
                run.errors += 1
                break
            _take(run, answer.body)
            if not answer.body["hasMore"]:
                break
        run.device.client.close()
    lost = 0
    con = admin(url)
    try:
        for user in users:
            mine = [r for r in runs if r.device.client.user == user]
            stored = {
                r[0]
                for r in con.run(
                    "SELECT id::text FROM todos WHERE user_id = CAST(:u AS uuid)", u=user
                )
            }
            pushed = set().union(*(r.pushed for r in mine))
            lost += len(pushed - stored)
            lost += sum(len(stored - r.known) for r in mine)
    finally:
        con.close()
    latencies = [ms for r in runs for ms in r.latencies]
    requests = len(latencies)
    pushes = sum(r.pushes for r in runs)
    return {
        "k": k,
        "users": len(users),
        "seconds": elapsed,
        "requests": requests,
        "requests_per_s": requests / elapsed,
        "pushes_per_s": pushes / elapsed,
        "rows_per_s": sum(len(r.pushed) for r in runs) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "errors": sum(r.errors for r in runs),
        "lost": lost,
        "ok": lost == 0 and sum(r.errors for r in runs) == 0,
    }
