"""RESULTS.md's sections for issue #8: its goal table, the latency table, the echo counts
and the placement trade-off, each with the figures before the one-message rewrite beside.

"Before" comes from bench/baseline.json: `issue8` holds this section's own scenarios run
on a clone of the commit before the rewrite (`run.py --only issue8`), `results` the last
full run (ffd7d06) that the older tables compare with. Nothing here measures; the
placement table computes, from measured inputs, what the knob cannot set (two networks).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

DASH, TIMES = "\u2013", "\u00d7"
GOAL_SYNC_ROUND_TRIPS = 1
GOAL_PULL_ROUND_TRIPS = 2
GOAL_LATENCY_RTT = 20
GOAL_LATENCY_FACTOR = 1.5
GOAL_FULL_SHARE = 0.8
GOAL_PARTIAL_SHARE = 0.5
GOAL_CPU = (("push100_new_token", 5.0), ("push1000", 10.0))
# Cloudflare's figures (docs: "How Hyperdrive works", box "Reduce latency with Placement"):
# 20-30 ms per query from a distant region, 1-3 ms with the Worker placed nearby.
PLACED_RTT_MS = 2.0
DISTANCES_MS = (10, 25, 50, 150)  # client <-> the database's region; 25: Cloudflare's "distant"


def load_baseline(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}".replace(",", "\u202f")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _counts(values: list[int]) -> str:
    values = sorted({v for v in values if v is not None})
    if not values:
        return DASH
    return str(values[0]) if len(values) == 1 else f"{values[0]}{chr(8211)}{values[-1]}"


class Section:
    """Medians of one run's issue-8 section (this run's, or the one in baseline.json)."""

    def __init__(self, section: dict[str, Any] | None) -> None:
        self.section = section or {}

    def latency(self, n: int, rtt: float) -> list[dict]:
        return [e for e in self.section.get("latency", []) if e["n"] == n and e["rtt"] == rtt]

    def ms(self, n: int, rtt: float, key: str = "ms") -> float | None:
        return _median([e[key] for e in self.latency(n, rtt)])

    def round_trips(self, n: int, rtt: float) -> list[int]:
        return [e["round_trips"] for e in self.latency(n, rtt)]

    def ratio(self, n: int, rtt: float) -> float | None:
        ms, pg = self.ms(n, rtt), self.ms(n, rtt, "pg_ms")
        return ms / (rtt + pg) if ms is not None and pg is not None else None

    def rate(self, method: str) -> float | None:
        runs = [e for e in self.section.get("throughput", []) if e["method"] == method]
        return _median([e["rows_per_s"] for e in runs])

    def share(self, push: str, floor: str) -> float | None:
        a, b = self.rate(push), self.rate(floor)
        return a / b if a and b else None

    def echo(self, kind: str | None = None) -> list[dict]:
        return [e for e in self.section.get("echo", []) if kind is None or e["kind"] == kind]


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.0f} %"


def _status(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


def _cpu_cases(request_cpu: dict | None) -> dict | None:
    """Helper A's `request_cpu` output (bench/request_cpu.py): the Pyodide cases, if run."""
    if not request_cpu:
        return None
    pyodide = request_cpu.get("request_cpu", {}).get("pyodide", {})
    return pyodide.get("cases")


def goals_section(results: dict, baseline: dict) -> str:
    new, old = Section(results.get("issue8")), Section(baseline.get("issue8", {}).get("results"))
    sizes = results["meta"]["config"]["latency_sizes"]
    small = min(sizes)
    # Round trips of a push plus its pull page: every mixed sync of the latency table, and
    # the pushes (new rows, mixed batch) of the push table at every N and RTT.
    sync_new = [e["round_trips"] for e in results.get("issue8", {}).get("latency", [])]
    pushes = [e for e in results["push"] if e["method"] in ("push", "push_mixed")]
    sync_new += [t for e in pushes for t in e["round_trips"]]
    sync_old = [e["round_trips"] for e in old.section.get("latency", [])]
    sync_old += [
        _first(e["round_trips"]) for e in old.section.get("throughput", []) if e["method"] == "push"
    ]
    pull_new = [t for e in results["pull"] for t in e["round_trips"]]
    pull_new += [t for e in new.echo() for t in _pull_trips(e)]
    pull_old = [t for e in old.echo() for t in _pull_trips(e)]
    worst_sync = max(sync_new) if sync_new else None
    worst_pull = max(pull_new) if pull_new else None
    lat_new = new.ratio(small, GOAL_LATENCY_RTT)
    full_new = new.share("push", "floor")
    part_new = new.share("push_partial", "floor_partial")
    cost_n = _num(results["meta"]["config"]["cost_n"])

    def echoes(section: Section) -> str:
        parts = [f"{e['kind']} N={e['n']}: {e['next_pull']}" for e in section.echo()]
        return "; ".join(parts) or DASH

    echo_new = [e["next_pull"] for e in new.echo()]
    starved = [e for e in new.echo() if not e["ok"]]
    rows = [
        [
            "round trips, push of ≤ MAX_CHANGES full rows + its pull page, deletes included",
            f"≤ {GOAL_SYNC_ROUND_TRIPS}",
            _counts(sync_old),
            f"{_counts(sync_new)} (new rows and mixed batches, every N and RTT)",
            _status(worst_sync is not None and worst_sync <= GOAL_SYNC_ROUND_TRIPS),
        ],
        [
            "round trips, pull page",
            f"≤ {GOAL_PULL_ROUND_TRIPS}",
            _counts(pull_old),
            _counts(pull_new),
            _status(worst_pull is not None and worst_pull <= GOAL_PULL_ROUND_TRIPS),
        ],
        [
            f"{small}-change sync at {GOAL_LATENCY_RTT} ms/RTT vs one round trip + Postgres' time",
            f"≤ {GOAL_LATENCY_FACTOR:g}{TIMES}",
            _ratio_cell(old, small, GOAL_LATENCY_RTT),
            _ratio_cell(new, small, GOAL_LATENCY_RTT),
            _status(None if lat_new is None else lat_new <= GOAL_LATENCY_FACTOR),
        ],
        [
            f"{cost_n}-change push of full rows vs its floor",
            f"≥ {_pct(GOAL_FULL_SHARE)}",
            _share_cell(old, "push", "floor"),
            _share_cell(new, "push", "floor"),
            _status(None if full_new is None else full_new >= GOAL_FULL_SHARE),
        ],
        [
            f"{cost_n}-change push of rows that omit columns vs its floor",
            f"≥ {_pct(GOAL_PARTIAL_SHARE)}",
            _share_cell(old, "push_partial", "floor_partial"),
            _share_cell(new, "push_partial", "floor_partial"),
            _status(None if part_new is None else part_new >= GOAL_PARTIAL_SHARE),
        ],
        [
            "no echo: a device's own accepted rows on its next pull",
            "0",
            echoes(old),
            echoes(new) + ("" if not starved else " — **another device missed rows**"),
            _status(None if not echo_new else (max(echo_new) == 0 and not starved)),
        ],
    ]
    cpu_new = _cpu_cases(results.get("request_cpu"))
    cpu_old = _cpu_cases(baseline.get("issue8", {}).get("request_cpu"))
    labels = {
        "push100_new_token": "Worker CPU under Pyodide, 100-change push, never-seen ES256 token",
        "push1000": "Worker CPU under Pyodide, 1 000-change push (warm)",
    }
    for case, limit in GOAL_CPU:
        now = (cpu_new or {}).get(case, {}).get("ms")
        before = (cpu_old or {}).get(case, {}).get("ms")
        rows.append(
            [
                labels[case],
                f"≤ {limit:g} ms",
                "not measured" if before is None else _spread((cpu_old or {})[case]) + " ms",
                "not measured" if now is None else _spread((cpu_new or {})[case]) + " ms",
                _status(None if now is None else now <= limit),
            ]
        )
    before = baseline.get("issue8", {})
    return (
        "## Goals of issue #8\n\n"
        f"*Before*: the same scenarios on a clone of {before.get('commit', DASH)} "
        f"({before.get('about', 'the commit before the one-message rewrite')}); *now*: this run. "
        "Round trips are counted by the bench's socket wrapper (one per message exchange, the "
        "login excluded; `tests/test_bench.py` checks that a multi-statement simple query "
        "counts once). Latency and Postgres' time as in the latency table below; throughput "
        "at RTT 0 with the pooled server, medians of "
        f"{results['meta']['config']['throughput_reps']} interleaved repetitions; CPU from "
        "`bench/request_cpu.py` (whole `App.handle` requests under Pyodide, the database's "
        "answers replayed; the login apart).\n\n"
        + _table(["goal", "target", "before", "now", "status"], rows)
    )


def _first(value: Any) -> int | None:
    """A round-trip count, whether stored as a number or as the list of a request's."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _pull_trips(echo: dict) -> list[int]:
    return echo["next_pull_round_trips"] + echo["other_device_round_trips"]


def _ratio_cell(section: Section, n: int, rtt: float) -> str:
    ms, pg, ratio = section.ms(n, rtt), section.ms(n, rtt, "pg_ms"), section.ratio(n, rtt)
    if ratio is None:
        return DASH
    return f"{ratio:.2f}{TIMES} ({_num(ms, 1)} vs {rtt:g} + {_num(pg, 1)} ms)"


def _share_cell(section: Section, push: str, floor: str) -> str:
    share = section.share(push, floor)
    if share is None:
        return DASH
    return f"{_pct(share)} ({_num(section.rate(push))} vs {_num(section.rate(floor))} rows/s)"


def latency_section(results: dict, baseline: dict) -> str:
    cfg = results["meta"]["config"]
    new, old = Section(results.get("issue8")), Section(baseline.get("issue8", {}).get("results"))
    rows = []
    for n in cfg["latency_sizes"]:
        for rtt in cfg["latency_rtts"]:
            pg = new.ms(n, rtt, "pg_ms")
            rows.append(
                [
                    _num(n),
                    f"{rtt:g}",
                    _counts(new.round_trips(n, rtt)),
                    _num(pg, 1),
                    _num(None if pg is None else rtt + pg, 1),
                    _num(new.ms(n, rtt), 1),
                    _num(new.ratio(n, rtt), 2) + TIMES,
                    _num(new.ms(n, rtt, "cpu_ms"), 1),
                    _counts(old.round_trips(n, rtt)),
                    _num(old.ms(n, rtt), 1),
                    _num(old.ratio(n, rtt), 2) + (TIMES if old.ratio(n, rtt) else ""),
                ]
            )
    return (
        "## Latency of one sync against one round trip plus Postgres' own time\n\n"
        "A sync of N changes (60 % inserts, 30 % updates, 10 % deletes of rows the user "
        "holds, shuffled) from a device holding a cursor, its pull page in the same answer; "
        f"pooled server, medians of {cfg['latency_reps']} interleaved repetitions. *RTT* is "
        "the delay the socket wrapper adds to every exchange with Postgres (the Worker's hop "
        "to the database); the client's own hop to the Worker is loopback. *Postgres' own "
        "time* is measured by Postgres: the sum of the `duration` lines it logs "
        "(`log_duration = on`, `bench/pgtime.py`) for the request's messages — parse, plan, "
        "execute, triggers, commit — while only that request is in flight. *One round trip + "
        "Postgres* is then the least any design can take for the request's database work; the "
        "rest of *measured* is this project's: HTTP, JSON, checks in Python, pg8000, and one "
        "RTT more per extra round trip. *Worker CPU* is the server thread's CPU time (CPython). "
        "*Before*: the same scenario on the commit before the rewrite.\n\n"
        + _table(
            [
                "N",
                "RTT ms",
                "round trips",
                "Postgres' own ms",
                "1 RTT + Postgres ms",
                "measured ms",
                "measured / (1 RTT + Postgres)",
                "Worker CPU ms",
                "before: round trips",
                "before: measured ms",
                "before: / (1 RTT + Postgres)",
            ],
            rows,
        )
    )


def echo_section(results: dict, baseline: dict) -> str:
    new, old = Section(results.get("issue8")), Section(baseline.get("issue8", {}).get("results"))
    before = {(e["kind"], e["n"]): e for e in old.echo()}
    rows = []
    for e in new.echo():
        b = before.get((e["kind"], e["n"]), {})
        rows.append(
            [
                f"{e['kind']} rows, N = {_num(e['n'])}",
                str(e["in_answer"]),
                str(e["next_pull"]),
                f"{e['other_device_got']} of {e['n']}",
                _counts(e["next_pull_round_trips"] + e["other_device_round_trips"]),
                str(b.get("in_answer", DASH)),
                str(b.get("next_pull", DASH)),
                f"{b['other_device_got']} of {b['n']}" if b else DASH,
            ]
        )
    return (
        "## Echo: does a device get its own writes back?\n\n"
        "Device A of a user pushes N new todos with its cursor, then pulls with the cursor "
        "that answer gave. *In the answer*: A's rows in the push's own `pulledChanges` (the "
        "contract echoes a row that was not stored as sent, e.g. one that omitted columns and "
        "took the table's defaults). *Next pull*: A's rows that came back on its next pull — "
        "the echo issue #8 removes. Device B of the same user, up to date before A's push, "
        "pulls too and must receive all N (guarantee 4). *Partial* rows carry only id, "
        "project, title and clock.\n\n"
        + _table(
            [
                "push",
                "own rows in the answer",
                "own rows on the next pull",
                "device B received",
                "pull round trips",
                "before: in the answer",
                "before: on the next pull",
                "before: device B received",
            ],
            rows,
        )
    )


def _placement_rows(section: Section, label: str, sizes: list[int]) -> list[list[str]]:
    rows = []
    for n in sizes:
        trips, base = _median(section.round_trips(n, 0)), section.ms(n, 0)
        if trips is None or base is None:
            continue
        near = [base + trips * d for d in DISTANCES_MS]
        placed = [d + base + trips * PLACED_RTT_MS for d in DISTANCES_MS]
        for where, values in (("near the user", near), ("placed near the database", placed)):
            rows.append(
                [f"{label}, N = {_num(n)}", f"{trips:g}", where, *(_num(v) for v in values)]
            )
    return rows


def _verdict(section: Section, n: int) -> str:
    """Which placement the model favours for `section`'s sync of n changes, and by how much,
    at the nearest and the farthest distance of the table."""
    trips, base = _median(section.round_trips(n, 0)), section.ms(n, 0)
    if trips is None or base is None:
        return DASH
    parts = []
    for d in (DISTANCES_MS[0], DISTANCES_MS[-1]):
        gain = (trips - 1) * d - trips * PLACED_RTT_MS  # what placing near the database saves
        side = "placing it near the database" if gain > 0 else "the default (near the user)"
        parts.append(f"at {d} ms {side} is {_num(abs(gain), 0)} ms faster")
    return ", ".join(parts)


def placement_section(results: dict, baseline: dict) -> str:
    cfg = results["meta"]["config"]
    new, old = Section(results.get("issue8")), Section(baseline.get("issue8", {}).get("results"))
    sizes = cfg["latency_sizes"]
    rows = _placement_rows(old, "before", sizes) + _placement_rows(new, "now", sizes)
    checks = []
    for label, section in (("before", old), ("now", new)):
        for n in sizes:
            trips, base = _median(section.round_trips(n, 0)), section.ms(n, 0)
            at = section.ms(n, GOAL_LATENCY_RTT)
            if trips is not None and base is not None and at is not None:
                predicted = base + trips * GOAL_LATENCY_RTT
                checks.append(
                    f"{label} N = {_num(n)}: {_num(predicted)} ms predicted, {_num(at)} measured"
                )
    head = ["design", "round trips (measured)", "Worker"]
    head += [f"client {d} ms from the database" for d in DISTANCES_MS]
    small = min(sizes)
    url = "https://developers.cloudflare.com/hyperdrive/concepts/how-hyperdrive-works/"
    return (
        "## Placement: the Worker near the user or near the database\n\n"
        f"Cloudflare's Hyperdrive docs put an uncached query's round trip at 20{DASH}30 ms from "
        f"a distant region and 1{DASH}3 ms with the Worker placed near the database "
        f'([How Hyperdrive works]({url}), box "Reduce latency with Placement", which adds: '
        '"If your Worker makes only one query per request, placement does not improve '
        'end-to-end latency"). This table is computed, not measured on a real network: a '
        f"sync takes T0 + k {TIMES} r, where T0 (the whole sync at RTT 0 on this machine: HTTP, "
        "the Worker's work, Postgres' own time) and k (its round trips) are **measured** in the "
        "latency table, and r, the Worker's round trip to the database, is **assumed**. Near "
        "the user, the Worker is about as far from the database as the client is: r = the "
        f"client's distance d. Placed near the database, r = {PLACED_RTT_MS:g} ms (Cloudflare's "
        f"1{DASH}3 ms), and the request itself travels d to reach the Worker and back. The "
        "client's hop to its nearest Cloudflare location is the same in both and left out. "
        "Milliseconds per sync:\n\n"
        + _table(head, rows)
        + f"\n\nThe model against the knob (T0 + k {TIMES} {GOAL_LATENCY_RTT} ms against the "
        f"latency measured at {GOAL_LATENCY_RTT} ms/RTT): {'; '.join(checks) or DASH}. Placing "
        f"the Worker near the database saves (k {DASH} 1) {TIMES} d {DASH} k {TIMES} "
        f"{PLACED_RTT_MS:g} ms per sync. For the {small}-change sync, before: "
        f"{_verdict(old, small)}; now: {_verdict(new, small)}."
    )


CPU_CASES = {
    "import_sync_app": "importing sync.app (a deploy snapshot holds it already)",
    "cold_first": "cold isolate: first request (new App, token, JWKS, registry), 100 changes",
    "cold_app": "new App in a warm interpreter, new token, 100-change push",
    "push100_new_token": "warm: 100-change push, never-seen ES256 token of a known key",
    "push100_new_rs256_token": "warm: 100-change push, never-seen RS256 token",
    "push100_same_token": "warm: 100-change push, token already verified",
    "push1000": "warm: 1 000-change push",
    "pull_page": "warm: pull of one full page",
}
FREE_PLAN_CPU_MS = 10


def _spread(case: dict | None) -> str:
    """A case's median, and its minimum when it had several samples (wall time under Pyodide
    is as noisy as the machine: the minimum is the least disturbed sample)."""
    if not case:
        return DASH
    if case.get("samples", 1) > 1 and case.get("min_ms") is not None:
        return f"{_num(case['ms'], 1)} (min {_num(case['min_ms'], 1)})"
    return _num(case["ms"], 1)


def cpu_section(results: dict, baseline: dict) -> str:
    """Helper A's figures (bench/request_cpu.py): Worker CPU per request, cold and warm."""
    now = results.get("request_cpu") or {}
    before = baseline.get("issue8", {}).get("request_cpu") or {}
    pyodide = now.get("request_cpu", {}).get("pyodide", {})
    if not pyodide.get("cases"):
        why = pyodide.get("skipped") or "not run (the full run or --quick --pyodide runs it)"
        return f"## Worker CPU per request under Pyodide\n\nNot measured: {why}."
    cpython = now["request_cpu"].get("cpython", {}).get("cases", {})
    was = before.get("request_cpu", {}).get("pyodide", {}).get("cases", {})
    rows = []
    for case, label in CPU_CASES.items():
        p = pyodide["cases"].get(case)
        if p is None:
            continue
        rows.append(
            [
                label,
                _num(cpython.get(case, {}).get("ms"), 1),
                _spread(p),
                _spread(was.get(case)),
                DASH if case == "import_sync_app" else f"{p['ms'] / FREE_PLAN_CPU_MS:.1f}{TIMES}",
            ]
        )
    return (
        "## Worker CPU per request under Pyodide\n\n"
        "Measured by `bench/request_cpu.py`: whole `App.handle` requests run first under "
        "CPython against this run's Postgres, every statement and its rows recorded, then "
        "replayed under Pyodide (npm `pyodide` under Node, the Workers runtime's Python) and "
        "under CPython; median ms of its samples, the minimum beside. Under CPython the "
        "figure is the thread's CPU time; under Pyodide it is wall time (Node's process CPU "
        "also counts V8's own threads), so it grows with the machine's load. The login "
        "(SCRAM) is not part of these: see the connection set-up section (a cold isolate "
        "pays one PBKDF2, later logins hit the cache). Workers' limits: "
        f"{FREE_PLAN_CPU_MS} ms of CPU per request on the Free plan, 30 s by default (up to "
        "5 min) on paid plans. *Before*: the same probe on the commit before issue #8's "
        "changes.\n\n"
        + _table(
            [
                "request",
                "CPython ms",
                "Pyodide ms (min)",
                "before: Pyodide ms (min)",
                f"Pyodide / Free plan's {FREE_PLAN_CPU_MS} ms",
            ],
            rows,
        )
    )
