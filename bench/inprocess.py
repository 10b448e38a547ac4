"""Measurements that call `App.handle` in this process, without HTTP: CPU time and peak
Python memory of one request (the Workers runtime's terms), and a profile of the largest push.
The App gets the bench's pooled connection (a warm backend, no login; see wire.py)."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import statistics
import time
import tracemalloc
from typing import Any

from bench import wire
from bench.data import Rows, changes, iso
from bench.harness import encode, token
from bench.scenarios import seed_rows
from sync.app import App
from sync.http import Request, Response
from sync.pg import tune_driver
from sync.settings import Settings


class Local:
    """An App in this process and the log records it writes."""

    def __init__(self, url: str, secret: str, **env: str) -> None:
        self.pool = wire.Pool()
        self.records: list[dict] = []
        settings = Settings.from_env({"SUPABASE_JWT_SECRET": secret, **env})
        tune_driver()  # as both hosts do at start-up
        self.app = App(settings, wire.connector(url, 0, self.pool), log=self.records.append)

    def call(self, user: str, body: bytes) -> tuple[Response, dict]:
        request = Request(
            "POST",
            "/api/sync",
            {"content-type": "application/json", "authorization": f"Bearer {token(user)}"},
            body,
        )
        response = asyncio.run(self.app.handle(request))
        return response, self.records[-1]

    def device(self, rows: Rows) -> tuple[str, str, str]:
        """A fresh user that synced once and owns a project: (user, cursor, project)."""
        user, project = rows.uuid(), rows.uuid()
        row = {"id": project, "name": "bench", "updated_at": iso(rows.base)}
        response, _ = self.call(
            user, encode([{"id": 0, "table": "projects", "op": "insert", "row": row}], None)
        )
        assert response.status == 200, response.body
        return user, response.json()["newServerTimestamp"], project

    def close(self) -> None:
        self.pool.close()


def _measure(local: Local, user: str, body: bytes, memory: bool) -> dict[str, Any]:
    """One request: CPU time of this thread (what Workers bills: no time spent waiting on
    Postgres), wall time, and with `memory` the peak of Python allocations from the moment
    the request body exists until the answer is built (tracemalloc; slows the run)."""
    if memory:
        tracemalloc.start()
        body = bytes(bytearray(body))  # the body itself is part of the request's memory
    cpu, wall = time.thread_time(), time.perf_counter()
    response, record = local.call(user, body)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    peak = 0
    if memory:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert response.status == 200, response.body
    return {
        "cpu_ms": cpu * 1000,
        "wall_ms": wall * 1000,
        "peak_mb": peak / 2**20,
        "statements": record.get("statements"),
        "phases": record.get("phases", {}),
        "response_bytes": len(response.body),
        "body": response.json(),
    }


def push_cost(url: str, secret: str, rows: Rows, n: int, reps: int) -> dict[str, Any]:
    local = Local(url, secret)
    try:
        cpu_runs = []
        for _ in range(reps):
            user, cursor, project = local.device(rows)
            body = encode(changes(rows.todos(n, project)), cursor)
            cpu_runs.append(_measure(local, user, body, memory=False))
            assert len(cpu_runs[-1]["body"]["acceptedIds"]) == n
        user, cursor, project = local.device(rows)
        body = encode(changes(rows.todos(n, project)), cursor)
        mem = _measure(local, user, body, memory=True)
    finally:
        local.close()
    return {
        "n": n,
        "cpu_ms": statistics.median(r["cpu_ms"] for r in cpu_runs),
        "cpu_ms_runs": [round(r["cpu_ms"], 1) for r in cpu_runs],
        "wall_ms": statistics.median(r["wall_ms"] for r in cpu_runs),
        "peak_mb": mem["peak_mb"],
        "body_mb": len(body) / 2**20,
        "response_bytes": mem["response_bytes"],
        "statements": cpu_runs[0]["statements"],
    }


def pull_cost(url: str, secret: str, rows: Rows, n: int, page: int) -> dict[str, Any]:
    """An initial sync of N rows with PULL_PAGE_SIZE=`page`: CPU summed over its requests,
    the largest peak of one request."""
    local = Local(url, secret, PULL_PAGE_SIZE=str(page))
    try:
        user = rows.uuid()
        seed_rows(url, user, rows.todos(n))
        results = []
        for memory in (False, True):
            cursor, runs = None, []
            for _ in range(n // page + 3):
                run = _measure(local, user, encode([], cursor), memory)
                runs.append(run)
                cursor = run["body"]["newServerTimestamp"]
                if not run["body"]["hasMore"]:
                    break
            assert sum(len(r["body"]["pulledChanges"]) for r in runs) == n
            results.append(runs)
    finally:
        local.close()
    timed, traced = results
    return {
        "n": n,
        "page": page,
        "requests": len(timed),
        "cpu_ms": sum(r["cpu_ms"] for r in timed),
        "cpu_ms_per_request_max": max(r["cpu_ms"] for r in timed),
        "wall_ms": sum(r["wall_ms"] for r in timed),
        "peak_mb": max(r["peak_mb"] for r in traced),
        "response_mb": max(r["response_bytes"] for r in timed) / 2**20,
        "statements": sorted({r["statements"] for r in timed}),
    }


# -- profile ---------------------------------------------------------------------------------


def _cum(stats: dict, suffix: str, name: str, caller: str | None = None) -> float:
    """Cumulative seconds of a function (by file suffix and name); with `caller`, only of
    its calls from functions in files ending so. A function that is gone counts 0."""
    total = 0.0
    for key, value in stats.items():
        if not (key[0].endswith(suffix) and key[2] == name):
            continue
        if caller is None:
            total += value[3]
        else:
            total += sum(i[3] for c, i in value[4].items() if c[0].endswith(caller))
    return total


def _buckets(stats: dict, total_ms: float) -> list[tuple[str, float]]:
    """The profile cut into parts that do not nest in each other (ms)."""
    ms = {
        "parse": _cum(stats, "sync/protocol.py", "parse_json"),
        "shape": _cum(stats, "sync/protocol.py", "parse_sync_request"),
        "plan": _cum(stats, "sync/push.py", "plan") + _cum(stats, "sync/batch.py", "plan"),
        "rows_json": _cum(stats, "json/__init__.py", "dumps", caller="sync/push.py"),
        "text": _cum(stats, "sync/push.py", "statement")
        + _cum(stats, "sync/sql.py", "pull", caller="sync/app.py"),
        "read": _cum(stats, "sync/pull.py", "read") + _cum(stats, "sync/push.py", "outcomes"),
        "db": _cum(stats, "sync/db.py", "run"),
        "wait": _wait(stats),
        "pull": _cum(stats, "sync/pull.py", "pull"),
        "pull_db": _cum(stats, "sync/db.py", "run", caller="sync/pull.py"),
        "answer": _cum(stats, "sync/http.py", "json_response"),
        "auth": _cum(stats, "sync/auth.py", "user_id"),
    }
    ms = {k: v * 1000 for k, v in ms.items()}
    parts = [
        ("request body: JSON parse", ms["parse"]),
        ("request body: shape checks", ms["shape"] - ms["parse"]),
        ("validation (plan: types, owner, clocks)", ms["plan"]),
        ("rows -> JSON parameter (json.dumps in push)", ms["rows_json"]),
        ("statement text, values inside (push.statement, sql.pull)", ms["text"]),
        ("answer rows -> outcomes and entries (pull.read, push.outcomes)", ms["read"]),
        ("database: waiting for Postgres (socket reads)", ms["wait"]),
        ("database: pg8000 encode/decode + protocol", ms["db"] - ms["wait"]),
        ("pulled rows -> entries (pull.pull, own code)", ms["pull"] - ms["pull_db"]),
        ("response: JSON encode", ms["answer"]),
        ("auth (JWT verify)", ms["auth"]),
    ]
    parts.append(("everything else (routing, settle, log)", total_ms - sum(v for _, v in parts)))
    # A part whose functions the code of the day does not have is left out, not shown as 0.
    return [(label, round(value, 1)) for label, value in parts if value]


def _wait(stats: dict) -> float:
    """Time blocked on the socket waiting for Postgres' answers (`recv_into`, reached from
    pg8000's reads through the socket file)."""
    return sum(v[2] for k, v in stats.items() if k[0] == "~" and "recv_into" in k[2])


def profile_push(url: str, secret: str, rows: Rows, n: int) -> dict[str, Any]:
    local = Local(url, secret)
    try:
        user, cursor, project = local.device(rows)
        body = encode(changes(rows.todos(n, project)), cursor)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        response, record = local.call(user, body)
        profiler.disable()
        total = time.perf_counter() - started
        assert response.status == 200
        # Unprofiled reference, same size, to show how much the profiler inflates.
        user2, cursor2, project2 = local.device(rows)
        body2 = encode(changes(rows.todos(n, project2)), cursor2)
        started = time.perf_counter()
        _, plain_record = local.call(user2, body2)
        plain = time.perf_counter() - started
    finally:
        local.close()
    stats = pstats.Stats(profiler).stats
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    counted = ("parse_timestamp", "format_timestamp", "to_statement", "array_string_escape")
    calls = {name: sum(v[1] for k, v in stats.items() if name in k[2]) for name in counted}
    return {
        "n": n,
        "profiled_ms": total * 1000,
        "unprofiled_ms": plain * 1000,
        "phases_profiled": record.get("phases", {}),
        "phases_unprofiled": plain_record.get("phases", {}),
        "buckets": _buckets(stats, total * 1000),
        "calls": calls,
        "top": [
            {
                "function": _name(key),
                "calls": value[1],
                "tottime_ms": round(value[2] * 1000, 1),
                "cumtime_ms": round(value[3] * 1000, 1),
            }
            for key, value in top
        ],
    }


def _name(key: tuple) -> str:
    file, line, name = key
    if file == "~":
        return name
    parts = file.replace("\\", "/").split("/")
    inside = len(parts) > 1 and parts[-2] in ("sync", "pg8000", "json")
    short = "/".join(parts[-2:]) if inside else parts[-1]  # "<string>" has no folder
    return f"{short}:{line}({name})"


# -- the database's side --------------------------------------------------------------------


class Explaining:
    """A connection that runs each statement with parameters first under EXPLAIN ANALYZE in
    a savepoint it rolls back, then for real: Postgres' own time for each statement the App
    actually sends, whatever the code of the day sends."""

    def __init__(self, inner: wire.Wired, log: list[dict], parts: Parts | None = None) -> None:
        self.inner = inner
        self.log = log
        self.parts = parts

    def _run_message(self, message: str, parts: list[str]) -> Any:
        """A whole sync in one message (BEGIN; …; COMMIT): first each of its statements
        under EXPLAIN ANALYZE, in order, in a transaction of their own that is rolled back
        (ANALYZE runs them, so each sees what the ones before it did, as in the real run);
        then the message itself, timed by the client."""
        self.inner.run("BEGIN")
        try:
            for part in parts[1:-1]:
                entry: dict[str, Any] = {"statement": self.parts.name(part), "client_ms": None}
                if part.lstrip().upper().startswith("SET"):
                    self.inner.run(part)
                    continue
                try:
                    plan = self.inner.run("EXPLAIN (ANALYZE, FORMAT JSON) " + part)
                except Exception as failure:  # the bench's own probe must not fail the request
                    entry["explain_error"] = f"{type(failure).__name__}: {failure}"[:200]
                    self.log.append(entry)
                    break
                entry.update(_explained(plan[0][0][0]))
                self.log.append(entry)
        finally:
            self.inner.run("ROLLBACK")
        started = time.perf_counter()
        result = self.inner.run(message)
        self.log.append(
            {
                "statement": f"the whole message ({len(parts)} statements), real run",
                "client_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )
        return result

    def run(self, statement: str, **params: Any) -> Any:
        if not params and self.parts is not None:
            parts = self.parts.expand(statement)
            if len(parts) > 2 and parts[0] == "BEGIN" and parts[-1] == "COMMIT":
                return self._run_message(statement, parts)
        plan, error = None, None
        if params and self.inner.con._transaction_status == b"T":
            self.inner.run("SAVEPOINT bench_explain")
            try:
                plan = self.inner.run("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, **params)
            except Exception as failure:  # the bench's own probe must not fail the request
                error = f"{type(failure).__name__}: {failure}"[:200]
            self.inner.run("ROLLBACK TO SAVEPOINT bench_explain")
        started = time.perf_counter()
        result = self.inner.run(statement, **params)
        client_ms = (time.perf_counter() - started) * 1000
        entry: dict[str, Any] = {"statement": label(statement), "client_ms": round(client_ms, 1)}
        if error:
            entry["explain_error"] = error
        if plan is not None:
            entry.update(_explained(plan[0][0][0]))
        if params:  # pg8000 parses the text for :names on each such run (to_statement)
            entry["parse_ms"] = round(_parse_ms(statement), 3)
        lists = [len(v) for v in params.values() if isinstance(v, list | tuple)]
        if lists:
            entry["list_params"] = lists
        self.log.append(entry)
        return result

    def close(self) -> None:
        self.inner.close()


def _explained(tree: dict) -> dict[str, Any]:
    """Planning, execution and trigger times of one EXPLAIN (ANALYZE, FORMAT JSON) tree."""
    triggers: dict[str, float] = {}
    for t in tree.get("Triggers", []):
        name = "foreign key" if t["Trigger Name"].startswith("RI_") else t["Trigger Name"]
        triggers[name] = triggers.get(name, 0.0) + t.get("Time", 0.0)
    return {
        "planning_ms": round(tree.get("Planning Time", 0.0), 1),
        "execution_ms": round(tree["Execution Time"], 1),
        "triggers": {k: round(v, 1) for k, v in triggers.items()},
    }


class Parts:
    """What the App's one-message sync is made of: `sync.sql.script` and the builders of
    its statements, watched while a request runs, so the bench can take the message apart
    again without parsing SQL (its values travel inside the text)."""

    def __init__(self) -> None:
        self.scripts: dict[str, tuple[str, ...]] = {}
        self.names: dict[str, str] = {}
        self.saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Parts:
        from sync import push, sql

        def watch(module: Any, attribute: str, name: str | None) -> None:
            original = getattr(module, attribute, None)
            if original is None:
                return
            self.saved.append((module, attribute, original))

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                text = original(*args, **kwargs)
                if name is None:
                    self.scripts[text] = tuple(a for a in args if a)
                else:
                    self.names[text] = name
                return text

            setattr(module, attribute, wrapper)

        watch(sql, "script", None)
        watch(sql, "bounds", "transaction bounds (SET LOCAL …)")
        watch(sql, "expect_schema", "registry check")
        watch(push, "statement", "push statement")
        watch(sql, "pull", "pull statement")
        return self

    def __exit__(self, *exc: object) -> None:
        for module, attribute, original in reversed(self.saved):
            setattr(module, attribute, original)

    def expand(self, text: str) -> list[str]:
        parts = self.scripts.get(text)
        if parts is None:
            return [text]
        return [leaf for part in parts for leaf in self.expand(part)]

    def name(self, text: str) -> str:
        return self.names.get(text) or label(text)


def _parse_ms(statement: str, count: int = 20) -> float:
    """CPU ms of the placeholder parsing pg8000.native's `run` does for this text."""
    import pg8000.native

    started = time.thread_time()
    for _ in range(count):
        pg8000.native.to_statement(statement)
    return (time.thread_time() - started) * 1000 / count


def label(statement: str) -> str:
    """Names a statement after the `sync.sql` builder that made it, if one did."""
    from sync import sql
    from sync.app_schema import REGISTRY

    if statement in (sql.BEGIN, sql.COMMIT, sql.ROLLBACK):
        return statement
    singles = [(t,) for t in REGISTRY.tables] + [REGISTRY.tables]
    for name in ("upsert", "bury", "delete", "lock_rows", "current_rows", "pull"):
        builder = getattr(sql, name, None)
        if builder is None:
            continue
        if name == "pull":
            candidates = [((REGISTRY.tables, first), "") for first in (True, False)]
        elif name in ("lock_rows", "current_rows"):
            candidates = [((tables,), ",".join(t.name for t in tables)) for tables in singles]
        else:
            candidates = [((t,), t.name) for t in REGISTRY.tables]
        for args, what in candidates:
            try:
                if builder(*args) == statement:
                    return f"{name} {what}".strip()
            except Exception:  # a builder of another signature: not this one
                break
    return " ".join(statement.split())[:40] + "…"


def explain_push(url: str, secret: str, rows: Rows, n: int, mixed: bool) -> dict[str, Any]:
    """Every statement of one push of N changes (new todos, or the mixed batch), with the
    client's time and Postgres' execution and trigger times; and the floor's upsert. A
    one-message sync is taken apart into its statements (`Parts`)."""
    log: list[dict] = []
    local = Local(url, secret)
    plain = local.app.connect
    parts = Parts()
    local.app.connect = lambda: Explaining(plain(), log, parts)
    with parts:
        return _explain_push(local, log, url, rows, n, mixed)


def _explain_push(local: Any, log: list[dict], url: str, rows: Rows, n: int, mixed: bool) -> dict:
    import json

    from bench.scenarios import FLOOR_UPSERT, mixed_batch, seed_project

    try:
        user, cursor, project = local.device(rows)
        log.clear()
        if mixed:
            batch, _ = mixed_batch(url, rows, user, project, n)
        else:
            batch = changes(rows.todos(n, project))
        response, _ = local.call(user, encode(batch, cursor))
        assert response.status == 200 and len(response.json()["acceptedIds"]) == n
    finally:
        local.close()
    out: dict[str, Any] = {"n": n, "mixed": mixed, "statements": log}
    if not mixed:
        con = wire.open_connection(url)
        try:
            user = rows.uuid()
            project = seed_project(url, rows, user)
            payload = json.dumps([{**r, "user_id": user} for r in rows.todos(n, project)])
            con.run("BEGIN")
            started = time.perf_counter()
            tree = con.run("EXPLAIN (ANALYZE, FORMAT JSON) " + FLOOR_UPSERT, rows=payload)
            client_ms = (time.perf_counter() - started) * 1000
            con.run("ROLLBACK")
        finally:
            con.close()
        tree = tree[0][0][0]
        out["floor"] = {
            "statement": "floor upsert",
            "client_ms": round(client_ms, 1),
            "planning_ms": round(tree.get("Planning Time", 0.0), 1),
            "execution_ms": round(tree["Execution Time"], 1),
            "triggers": {
                (
                    "foreign key" if t["Trigger Name"].startswith("RI_") else t["Trigger Name"]
                ): round(t["Time"], 1)
                for t in tree.get("Triggers", [])
            },
        }
    return out


def list_params(url: str, rows: Rows, n: int) -> dict[str, Any]:
    """`sql.lock_rows` (which a push runs for its deletes) with N keys passed as pg8000
    encodes a Python list, and as one pre-built text: client and Postgres time."""
    from sync import sql
    from sync.app_schema import REGISTRY

    todos = REGISTRY.by_name["todos"]
    try:
        statement = sql.lock_rows((todos,))
    except Exception as error:  # the builder changed: nothing to compare
        return {"unavailable": f"{type(error).__name__}: {error}"}
    con = wire.open_connection(url)
    out: dict[str, Any] = {"n": n}
    try:
        user = rows.uuid()
        keys = [r["id"] for r in rows.todos(n)]
        extra = {"user": user} if ":user" in statement else {}
        for name, value in (("list", keys), ("text", "{" + ",".join(keys) + "}")):
            con.run("BEGIN")
            started = time.perf_counter()
            tree = con.run("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, k0=value, **extra)
            out[name] = {
                "client_ms": round((time.perf_counter() - started) * 1000, 1),
                "execution_ms": round(tree[0][0][0]["Execution Time"], 1),
            }
            con.run("ROLLBACK")
    except Exception as error:
        return {"unavailable": f"{type(error).__name__}: {error}"}
    finally:
        con.close()
    return out
