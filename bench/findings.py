"""Small measurements behind the problems the bench found in src/ (see RESULTS.md): each
isolates one cause, side by side with the fixed variant, in the same run."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import scenarios, wire
from bench.data import Rows
from bench.harness import Server


def http_nagle(url: str, rows: Rows, requests: int) -> dict[str, Any]:
    """src/serve.py writes the status line and headers, then the body, in separate sends
    without TCP_NODELAY: the body waits for the client's delayed ACK. One-change syncs
    against two pooled servers that differ only in TCP_NODELAY, alternating in blocks."""
    out: dict[str, list[float]] = {"as_shipped": [], "tcp_nodelay": []}
    with (
        Server(url, 0, True, BENCH_NODELAY="0") as plain,
        Server(url, 0, True, BENCH_NODELAY="1") as fixed,
    ):
        devices = {
            "as_shipped": (plain, scenarios.new_device(plain, rows)),
            "tcp_nodelay": (fixed, scenarios.new_device(fixed, rows)),
        }
        for block in range(max(1, requests // 10)):
            for name, (_server, device) in devices.items():
                for change in _changes(rows, device.project, 10, block):
                    answer = device.client.sync([change], device.cursor)
                    device.cursor = answer.body["newServerTimestamp"]
                    out[name].append(answer.ms)
        for _, device in devices.values():
            device.client.close()
    return {name: _stats(ms) for name, ms in out.items()}


def _changes(rows: Rows, project: str, count: int, block: int) -> list[dict]:
    from bench.data import changes

    return changes(rows.todos(count, project), first_id=1000 * (block + 1))


def pg8000_nagle(url: str, rows: Rows, sizes: list[int], reps: int) -> dict[str, Any]:
    """pg8000 does not set TCP_NODELAY: the floor's upsert (one statement whose message is
    larger than pg8000's 8 KB write buffer) with and without it, alternating."""
    out: dict[str, Any] = {}
    for n in sizes:
        runs: dict[str, list[float]] = {"as_shipped": [], "tcp_nodelay": []}
        for _ in range(reps):
            for name, nodelay in (("as_shipped", False), ("tcp_nodelay", True)):
                runs[name].append(scenarios.floor(url, 0, rows, n, nodelay=nodelay)["ms"])
        out[str(n)] = {name: _stats(ms) for name, ms in runs.items()}
    return out


def login(url: str, count: int = 10) -> dict[str, Any]:
    """One login on loopback, wall and CPU: as src/entry.py logs in on Workers, and as
    src/serve.py does through sync.migrate.connect_url (`ssl_context=None`: pg8000 builds a
    default SSL context, loading the CA store, and asks the server for TLS first)."""
    out = {}
    for name, style in (("entry_style", "entry"), ("connect_url", "shipped")):
        walls, cpus = [], []
        for _ in range(count):
            wall, cpu = time.perf_counter(), time.thread_time()
            wire.open_connection(url, style).close()
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.thread_time() - cpu) * 1000)
        out[name] = {"wall_ms": statistics.median(walls), "cpu_ms": statistics.median(cpus)}
    return out


def pull_pages(url: str, secret: str, rows: Rows, n: int, transactions: int) -> dict[str, Any]:
    """Time of each page of one user's initial sync, in-process, after a warm-up request
    (login, first plans), to see whether a page's cost depends on the rows still to come."""
    from bench.harness import encode
    from bench.inprocess import Local

    user = rows.uuid()
    todos = rows.todos(n)
    per = n // transactions
    for i in range(transactions):
        scenarios.seed_rows(url, user, todos[i * per : (i + 1) * per])
    local = Local(url, secret)
    pages: list[float] = []
    try:
        local.call(rows.uuid(), encode([], None))  # warm-up: login and first plans
        cursor = None
        for _ in range(n // 1000 + 3):
            started = time.perf_counter()
            response, _ = local.call(user, encode([], cursor))
            pages.append((time.perf_counter() - started) * 1000)
            body = response.json()
            cursor = body["newServerTimestamp"]
            if not body["hasMore"]:
                break
    finally:
        local.close()
    return {"n": n, "transactions": transactions, "page_ms": [round(ms, 1) for ms in pages]}


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "median_ms": statistics.median(values),
        "p90_ms": scenarios.percentile(values, 90),
        "max_ms": max(values),
    }
