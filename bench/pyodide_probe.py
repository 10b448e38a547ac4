"""What bench/pyodide_run.mjs runs under Pyodide (and run.py under CPython, to compare):
the SCRAM login cost (scram_probe.py) and the CPU of the pure-Python parts of a 10 000-change
push that need no database — parsing the body, validating and planning the changes, the rows
as the JSON parameter, and the answer's JSON — so CPython's CPU time can be carried over to
the Workers runtime.

Given a recording of whole requests (bench/request_cpu.py writes one and names it in
SYNC_REQUEST_FIXTURE), main() also replays them first, while the interpreter is still cold,
and adds their CPU as "request_cpu"."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

N = 10_000
REPEAT = 5  # the minimum is kept: the machine is noisy, the code is not


def cpu_probe(n: int = N) -> dict:
    from data import Rows, changes

    from sync import batch as push
    from sync.app_schema import REGISTRY
    from sync.http import json_response
    from sync.protocol import parse_sync_request
    from sync.settings import Settings

    rows = Rows(11)
    body = json.dumps({"lastSyncAt": None, "changes": changes(rows.todos(n, rows.uuid()))})
    body = body.encode()
    settings = Settings.from_env({"SUPABASE_JWT_SECRET": "x" * 40})
    user = rows.uuid()
    steps = {"parse": [], "validate": [], "rows_json": [], "answer_json": []}
    for _ in range(REPEAT + 1):
        t0 = time.perf_counter()
        batch = parse_sync_request(body, settings.max_changes)
        t1 = time.perf_counter()
        plan = push.plan(batch.changes, REGISTRY, user, datetime.now(UTC), settings)
        t2 = time.perf_counter()
        json.dumps([c.row for c in plan.winners], separators=(",", ":"), ensure_ascii=False)
        t3 = time.perf_counter()
        ids = [c.raw.id for c in plan.winners]
        json_response(200, {"success": True, "acceptedIds": ids, "rejected": []})
        t4 = time.perf_counter()
        for name, ms in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            steps[name].append(ms * 1000)
    result = {name: round(min(v[1:]), 1) for name, v in steps.items()}
    result["total"] = round(sum(result.values()), 1)
    result["n"] = n
    return result


def main() -> Any:
    """The probes' JSON; a coroutine of it when there are recorded requests to replay
    (pyodide_run.mjs awaits it)."""
    from request_cpu import replay, replay_from_env, runtime
    from scram_probe import main as scram

    fixture = replay_from_env()
    if fixture is None:
        return {"scram": scram(), "cpu": cpu_probe()}

    async def with_requests() -> dict:
        cases = await replay(fixture)  # first: the first request is the cold one
        return {
            "request_cpu": {"runtime": runtime(), "cases": cases},
            "scram": scram(),
            "cpu": cpu_probe(),
        }

    return with_requests()


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
