"""Turns results.json into RESULTS.md (tables) and results.png (the plot).

The push, pull, concurrency and round-trip tables carry the figures of the last full run
before issue #8 (bench/baseline.json, `results`) beside this run's; issue #8's own
sections are drawn by bench/latency_report.py."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from bench import latency_report

BASELINE = Path(__file__).resolve().parent / "baseline.json"
GOAL_FLOOR_SHARE = 0.5
GOAL_VS_CURRENT = 20
GOAL_PEAK_MB = 64
WORKERS_MEMORY_MB = 128
FREE_CPU_MS = 10
DASH, TIMES = "\u2013", "\u00d7"  # for a missing value, and "times"

METHOD_NAMES = {
    "push": "Worker push (1 request)",
    "floor": "floor (1 set-based upsert, no HTTP)",
    "per_row": "per-row in 1 transaction (no HTTP)",
    "current": "current state (1 request per change)",
}


# -- aggregation ---------------------------------------------------------------------------------


def pick(entries: list[dict], **match: Any) -> list[dict]:
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def median(entries: list[dict], key: str) -> float | None:
    values = [e[key] for e in entries if e.get(key) is not None]
    return statistics.median(values) if values else None


class Push:
    """Medians of the push block, by (setup, rtt, n, method)."""

    def __init__(self, entries: list[dict]) -> None:
        self.entries = entries

    def runs(self, method: str, rtt: float, n: int, setup: str | None = "pool") -> list[dict]:
        setup = None if method in ("floor", "per_row") else setup
        return pick(self.entries, method=method, rtt=rtt, n=n, setup=setup)

    def rate(self, method: str, rtt: float, n: int, setup: str | None = "pool") -> float | None:
        return median(self.runs(method, rtt, n, setup), "rows_per_s")

    def ms(self, method: str, rtt: float, n: int, setup: str | None = "pool") -> float | None:
        return median(self.runs(method, rtt, n, setup), "ms")

    def capped(self, method: str, rtt: float, n: int, setup: str | None = "pool") -> bool:
        return any(r.get("capped") for r in self.runs(method, rtt, n, setup))

    def done(self, method: str, rtt: float, n: int, setup: str | None = "pool") -> int | None:
        runs = self.runs(method, rtt, n, setup)
        return min((r.get("done", n) for r in runs), default=None)

    def statements(
        self, rtt: float, n: int, setup: str = "pool", method: str = "push"
    ) -> list[int]:
        return sorted({s for r in self.runs(method, rtt, n, setup) for s in r["statements"]})

    def round_trips(
        self, rtt: float, n: int, setup: str = "pool", method: str = "push"
    ) -> list[int]:
        return sorted({s for r in self.runs(method, rtt, n, setup) for s in r["round_trips"]})


# -- formatting ----------------------------------------------------------------------------------


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return DASH
    if digits == 0:
        return f"{value:,.0f}".replace(",", "\u202f")
    return f"{value:,.{digits}f}".replace(",", "\u202f")


def ratio(a: float | None, b: float | None, percent: bool = False) -> str:
    if not a or not b:
        return DASH
    return f"{100 * a / b:.0f} %" if percent else f"{a / b:,.1f}{TIMES}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rtt_name(rtt: float) -> str:
    return "loopback (RTT 0)" if rtt == 0 else f"RTT {rtt:g} ms"


# -- the document --------------------------------------------------------------------------------


# A section another tool writes into RESULTS.md between `<!-- name:begin -->` and
# `<!-- name:end -->` (e.g. `make bench-workerd`): kept as it is when the rest is redrawn.
FOREIGN_SECTION = re.compile(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->\n?", re.DOTALL)


def write(results: dict, out: Path) -> None:
    path = out / "RESULTS.md"
    old = path.read_text() if path.exists() else ""
    blocks = [m.group(0).rstrip("\n") for m in FOREIGN_SECTION.finditer(old)]
    text = markdown(results)
    if blocks:
        text = text.rstrip("\n") + "\n\n" + "\n\n".join(blocks) + "\n"
    path.write_text(text)
    try:
        plot(results, out / "results.png")
    except ImportError:  # matplotlib is a dev dependency; the tables do not need it
        print("matplotlib missing: no results.png written", flush=True)


def markdown(results: dict, baseline: dict | None = None) -> str:
    meta = results["meta"]
    cfg = meta["config"]
    base = latency_report.load_baseline(BASELINE) if baseline is None else baseline
    old = base.get("results") or {"push": [], "pull": [], "concurrency": []}
    push, old_push = Push(results["push"]), Push(old["push"])
    sizes, rtts = cfg["sizes"], cfg["rtts"]
    big, mid = max(sizes), (1000 if 1000 in sizes else max(sizes))
    parts = [header(meta, results)]
    parts.append(latency_report.goals_section(results, base))
    parts.append(goals(results, push, big, mid))
    parts.append(method(meta, cfg))
    parts.append(latency_report.latency_section(results, base))
    parts.append(latency_report.placement_section(results, base))
    parts.append(latency_report.echo_section(results, base))
    parts.append(latency_report.cpu_section(results, base))
    parts.append(before_note(base))
    parts.append(push_section(push, sizes, rtts, old_push))
    parts.append(pooling_section(push, sizes, results["findings"]["login"]))
    parts.append(pull_section(results["pull"], sizes, rtts, old["pull"]))
    parts.append(concurrency_section(results["concurrency"], old["concurrency"]))
    parts.append(round_trip_section(push, results["pull"], sizes, rtts, old_push, old["pull"]))
    parts.append(cost_section(results))
    parts.append(scram_section(results))
    parts.append(profile_section(results))
    parts.append(hostile_section(results))
    parts.append(problems_section(results, push))
    return "\n\n".join(parts) + "\n"


def header(meta: dict, results: dict) -> str:
    pyodide = results["probe"]["pyodide"]
    runtime = pyodide.get("runtime", {})
    pyo = (
        f"Pyodide {runtime.get('pyodide')} (Python {runtime.get('python')}) under Node "
        f"{runtime.get('node')}"
        if runtime
        else f"Pyodide not run ({pyodide.get('skipped')})"
    )
    quick = (
        "\n\n**Quick smoke run: small sizes, single repetitions — not figures to quote.**"
        if meta["quick"]
        else ""
    )
    return (
        "# Sync Worker benchmark\n\n"
        f"Written by `make bench` (`bench/run.py`) on {meta['started']} against commit "
        f"{meta.get('commit', 'unknown')}; the whole run took "
        f"{meta['duration_s'] / 60:.1f} min. Machine: {meta['cpu']}, {meta['cores']} cores, "
        f"{meta['memory']}, {meta['os']}; Python {meta['python']}, pg8000 {meta['pg8000']}, "
        f"Postgres {meta['postgres']} "
        f"({'fsync and synchronous_commit on' if meta['config']['durable'] else 'fsync off'}); "
        f"{pyo}. Load average {meta['load_before']:.1f} before and {meta['load_after']:.1f} "
        "after: the machine is shared and noisy, so every ratio below compares runs "
        "interleaved in the same run (medians of the repetitions), never runs of different "
        f"days.{quick}\n\n![results](results.png)"
    )


def before_note(base: dict) -> str:
    meta = (base.get("results") or {}).get("meta", {})
    return (
        "## Before and now\n\n"
        "The tables below put, beside this run's figures, those of the last full run before "
        f"issue #8 (*before*: commit {base.get('commit', DASH)}, {meta.get('started', DASH)}, "
        f"load average {meta.get('load_before', 0):.1f}; kept in `bench/baseline.json`). Both "
        "are medians on this shared 2-core machine, but of runs at different times and loads: "
        "compare their orders of magnitude, and trust the ratios inside one run. That run's "
        "latency knob still let a message larger than 8 KiB reach Postgres during its delay "
        "(fixed in 7b865c1), so its RTT 1 and 5 ms figures for large batches are somewhat "
        "optimistic; issue #8's own *before* figures above were taken with the fixed knob."
    )


def goals(results: dict, push: Push, big: int, mid: int) -> str:
    w_big, f_big = push.rate("push", 0, big), push.rate("floor", 0, big)
    w_mid, c_mid = push.rate("push", 0, mid), push.rate("current", 0, mid)
    counts = {
        name: sorted({s for r in pick(results["push"], method=method) for s in r["statements"]})
        for name, method in (("new rows", "push"), ("mixed batch", "push_mixed"))
    }
    counts["pull"] = sorted({s for r in results["pull"] for s in r["statements"]})
    constant = all(len(v) == 1 for v in counts.values())
    counted = ", ".join(f"{name} {v[0] if len(v) == 1 else v}" for name, v in counts.items())
    peak = results["cost"]["push"]["peak_mb"]
    share = w_big / f_big if w_big and f_big else 0
    times = w_mid / c_mid if w_mid and c_mid else 0
    capped = " (current state time-capped, see †)" if push.capped("current", 0, mid) else ""
    rows = [
        [
            f"{num(big)}-change push, end to end, vs the floor",
            f"≥ {GOAL_FLOOR_SHARE:.0%}",
            f"{share:.0%} ({num(w_big)} vs {num(f_big)} rows/s)",
            "met" if share >= GOAL_FLOOR_SHARE else "**not met**",
        ],
        [
            f"push vs current state at N = {num(mid)}",
            f"≥ {GOAL_VS_CURRENT}{TIMES}",
            f"{times:,.0f}{TIMES} ({num(w_mid)} vs {num(c_mid)} rows/s){capped}",
            "met" if times >= GOAL_VS_CURRENT else "**not met**",
        ],
        [
            "statements per request constant in N",
            "constant",
            f"push of {counted}; the same at every N and RTT",
            "met" if constant else "**not met**",
        ],
        [
            f"peak Python memory, {num(big)}-change push",
            f"< {GOAL_PEAK_MB} MB",
            f"{peak:.1f} MB",
            "met" if peak < GOAL_PEAK_MB else "**not met**",
        ],
    ]
    return (
        "## Goals of the earlier issues\n\n"
        "Measured on loopback with the pooled server (the Hyperdrive model, see Method); the "
        "same ratios at 1 and 5 ms per round trip, without a pool and for the local host as "
        "it ships are in the tables further down.\n\n"
        + table(["goal", "target", "measured", "status"], rows)
    )


def method(meta: dict, cfg: dict) -> str:
    return f"""## Method

- **Server**: `src/serve.py`'s local host around `sync.app.App`, in a process of its own
  (`bench/server.py`), over real HTTP on 127.0.0.1; clients are `http.client` keep-alive
  connections in the bench process. The App's log record of each request gives its
  statements and phases; the bench's connection wrapper (`bench/wire.py`) adds network round
  trips, login time and CPU time.
- **Connection set-ups** (all at RTT 0, side by side): *pool* — an idle logged-in
  connection (a warm Postgres backend) per request, given back after it, as Hyperdrive's
  transaction-mode pool does; used for everything unless said otherwise. *login per request*
  — a fresh login and backend for every request, as `src/serve.py` does today. *as shipped*
  — login per request through `src/serve.py`'s own `connect_url`, and its HTTP sockets as
  it sets them (it now sets `TCP_NODELAY` itself; the bench sets it on an older,
  `socketserver`-based host, see the Nagle problem below). Connections otherwise open as
  `src/entry.py` opens them on Workers (`sync.pg.connection_class()`, `ssl_context=False`).
- **Latency knob**: a delay injected per **network round trip**, not per statement:
  `bench/wire.py` wraps pg8000's socket file, holds what is written until the flush and
  sleeps before sending it, so Postgres sees no byte of a message before its delay has run
  (before 7b865c1 a message over 8 KiB went out early and overlapped it). Connections
  are of the class both hosts use (`sync.pg.connection_class()`), which sends a statement
  with parameters as one exchange (Parse, Describe, Bind, Execute, one Sync) where plain
  pg8000 makes three; a simple query (BEGIN, COMMIT) is one too. The round-trip counts are
  measured, in their own table below. The transaction stays open meanwhile, as it would.
  The login is not delayed (Hyperdrive terminates it in the Worker's location; its CPU is
  measured apart). Real networks add jitter and bandwidth limits; this adds neither.
- **Push**: one request of N new todos (about 290 bytes each as JSON) from a device that
  already holds a cursor. Checked: all N accepted, N rows stored. *Mixed batch*: 60 %
  inserts, 30 % updates and 10 % deletes of rows the user holds, shuffled (no baseline
  compares with it; it shows the other statements of a push).
- **Current state**: the same N changes as N sequential requests of one change, each with
  the cursor of the previous answer (the browser-side loop the proposal replaces; here
  against this Worker, not PostgREST).
- **Per-row in one transaction** (reference only, `bench/scenarios.py`, no HTTP and no
  validation): the proposal's literal algorithm — for each change `SELECT … FOR UPDATE` the
  stored row, compare `updated_at`, then `INSERT` or `UPDATE` — on an open connection.
- **Floor**: the same rows as one JSON parameter of one `INSERT … SELECT FROM
  jsonb_to_recordset … ON CONFLICT DO UPDATE WHERE older`, in one transaction, same driver,
  on an open connection: no HTTP, validation, ownership or tombstone checks, `RETURNING` or
  pull. Its rows reference a project as the Worker's do, so it pays the same foreign-key
  check and the same row triggers (the schema's, not the Worker's).
- **Time caps**: the two loop baselines stop after {cfg["cap_s"]:g} s per run; a capped
  run reports the rate of the changes it did (†, a sample of the same loop). Repetitions:
  {cfg["reps_fast"]} for push and floor, {cfg["reps_slow"]} for the loops (1 once capped),
  {cfg["pull_reps"]} for pulls; medians shown.
- **Throughput** = N / wall time of the request(s) as the client sees them."""


def push_section(push: Push, sizes: list[int], rtts: list[float], old: Push) -> str:
    out = ["## Push: N changes in one request, against the baselines"]
    for rtt in rtts:
        rows = []
        for n in sizes:
            w = push.rate("push", rtt, n)
            cpu = median(push.runs("push", rtt, n), "cpu_ms")
            was = old.rate("push", rtt, n)
            cells = [num(n), f"{num(w)} ({num(push.ms('push', rtt, n), 1)} ms, CPU {num(cpu, 1)})"]
            cells.append(
                f"{num(was)} ({num(old.ms('push', rtt, n), 1)} ms), "
                f"{ratio(was, old.rate('floor', rtt, n), percent=True)} of its floor"
            )
            for m in ("floor", "per_row", "current"):
                rate = push.rate(m, rtt, n)
                mark = ""
                if push.capped(m, rtt, n):
                    mark = f" † ({num(push.done(m, rtt, n))} done)"
                cells.append(num(rate) + mark)
            cells.append(num(push.rate("push_mixed", rtt, n)))
            cells += [
                ratio(w, push.rate("floor", rtt, n), percent=True),
                ratio(w, push.rate("current", rtt, n)),
                ratio(w, push.rate("per_row", rtt, n)),
            ]
            rows.append(cells)
        out.append(
            f"### {rtt_name(rtt)} — rows/s\n\n"
            + table(
                [
                    "N",
                    "Worker push (latency, server CPU ms)",
                    "before: push (latency), share of floor",
                    "floor",
                    "per-row txn",
                    "current state",
                    "mixed-batch push",
                    "push / floor",
                    "push / current",
                    "push / per-row",
                ],
                rows,
            )
        )
    return "\n\n".join(out)


def pooling_section(push: Push, sizes: list[int], login: dict) -> str:
    setups = [("pool", "pool"), ("nopool", "login per request"), ("shipped", "as shipped")]
    rows = []
    for n in sizes:
        cells = [num(n)]
        for key, _ in setups:
            cells.append(
                f"{num(push.ms('push', 0, n, key), 1)} ms / {num(push.rate('push', 0, n, key))}"
            )
        for key, _ in setups:
            cap = " †" if push.capped("current", 0, n, key) else ""
            cells.append(num(push.rate("current", 0, n, key)) + cap)
        rows.append(cells)
    head = ["N"] + [f"push: {name} (ms / rows/s)" for _, name in setups]
    head += [f"current state: {name} (rows/s)" for _, name in setups]
    e, c = login["entry_style"], login["connect_url"]
    return (
        "## Pooling: what the database hop costs with and without a pool (RTT 0)\n\n"
        "*pool*: a warm backend per request (Hyperdrive's model); *login per request*: a new "
        "login and Postgres backend each time; *as shipped*: `src/serve.py` as it is (login "
        "through `connect_url`, no `TCP_NODELAY` on the HTTP or the Postgres socket).\n\n"
        + table(head, rows)
        + "\n\nOne login on loopback (median of 10): "
        f"{e['wall_ms']:.1f} ms wall, {e['cpu_ms']:.1f} ms CPU as `src/entry.py` connects "
        f"(`ssl_context=False`); {c['wall_ms']:.1f} ms wall, {c['cpu_ms']:.1f} ms CPU through "
        "`sync.migrate.connect_url`, which `src/serve.py` uses."
    )


def pull_section(entries: list[dict], sizes: list[int], rtts: list[float], old: list[dict]) -> str:
    rows = []
    for n in sizes:
        cells = [num(n)]
        for rtt in rtts:
            runs, was = pick(entries, n=n, rtt=rtt), pick(old, n=n, rtt=rtt)
            cells.append(
                f"{num(median(runs, 'rows_per_s'))} ({num(median(runs, 'ms'), 1)} ms, "
                f"{runs[0]['requests'] if runs else DASH} req)"
            )
            cells.append(f"{num(median(was, 'rows_per_s'))} ({num(median(was, 'ms'), 1)} ms)")
        rows.append(cells)
    big = pick(entries, n=max(sizes), rtt=0)
    pages = ""
    if big and len(big[0].get("page_ms", [])) > 1:
        first = median([{"v": r["page_ms"][0]} for r in big], "v")
        last = median([{"v": r["page_ms"][-1]} for r in big], "v")
        middle = median([{"v": statistics.median(r["page_ms"][1:])} for r in big], "v")
        pages = (
            f"\n\nAt N = {num(max(sizes))} on loopback the first page takes {num(first, 1)} ms "
            f"in the server, the later ones "
            f"{num(middle, 1)} ms (median) and the last {num(last, 1)} ms; problem 8 below "
            "checks whether pages slow down with the rows still to come."
        )
    return (
        "## Pull: initial sync of N rows for one user, through pagination (page 1000)\n\n"
        "rows/s (total time, requests), pooled server. Checked: every row arrived once.\n\n"
        + table(["N", *(f"{w}{rtt_name(r)}" for r in rtts for w in ("", "before: "))], rows)
        + pages
    )


def concurrency_section(entries: list[dict], old: list[dict]) -> str:
    if not entries:
        return "## Concurrency\n\nNot run."
    before = {(e["rtt"], e["k"]): e for e in old}
    rows = [
        [
            rtt_name(e["rtt"]),
            str(e["k"]),
            str(e["users"]),
            f"{e['seconds']:.1f}",
            num(e["requests_per_s"], 1),
            num(e["rows_per_s"]),
            num(e["p50_ms"], 1),
            num(e["p95_ms"], 1),
            num(e["p99_ms"], 1),
            str(e["errors"]),
            str(e["lost"]),
            num(before.get((e["rtt"], e["k"]), {}).get("rows_per_s")),
            num(before.get((e["rtt"], e["k"]), {}).get("p50_ms"), 1),
            num(before.get((e["rtt"], e["k"]), {}).get("p95_ms"), 1),
        ]
        for e in entries
    ]
    return (
        "## Concurrency: K devices syncing 10-change batches\n\n"
        "Each device (4 per user) pushes 10 new todos per request with its cursor and follows "
        "`hasMore`, for a fixed time; then every device pulls to the end and the bench checks "
        "that every accepted row is in Postgres and reached every device of its user "
        "(`lost` counts rows missing anywhere). Pooled server, one process, on the same 2 "
        "cores as Postgres and the clients.\n\n"
        + table(
            [
                "network",
                "K",
                "users",
                "s",
                "requests/s",
                "rows/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "lost",
                "before: rows/s",
                "before: p50 ms",
                "before: p95 ms",
            ],
            rows,
        )
    )


def round_trip_section(
    push: Push,
    pulls: list[dict],
    sizes: list[int],
    rtts: list[float],
    old: Push,
    old_pulls: list[dict],
) -> str:
    def pull_counts(runs: list[dict], key: str) -> list[int]:
        return sorted({s for r in runs for s in r[key]})

    rows = []
    for n in sizes:
        pull_runs, was = pick(pulls, n=n, rtt=0), pick(old_pulls, n=n, rtt=0)
        rows.append(
            [
                num(n),
                f"{push.statements(0, n)} / {push.round_trips(0, n)}",
                f"{push.statements(0, n, method='push_mixed')} / "
                f"{push.round_trips(0, n, method='push_mixed')}",
                str(push.statements(0, n, "nopool")),
                f"{pull_counts(pull_runs, 'statements')} / {pull_counts(pull_runs, 'round_trips')}",
                f"{old.round_trips(0, n)} / {old.round_trips(0, n, method='push_mixed')} / "
                f"{pull_counts(was, 'round_trips')}",
            ]
        )
    return (
        "## Round trips per request\n\n"
        "Statements from the App's own log record, network round trips from the bench's "
        "socket wrapper (login excluded); the same at every RTT.\n\n"
        + table(
            [
                "N",
                "push of new rows: statements / round trips",
                "mixed batch: statements / round trips",
                "push, login per request: statements",
                "pull, per page: statements / round trips",
                "before: round trips of push / mixed batch / pull page",
            ],
            rows,
        )
    )


def cost_section(results: dict) -> str:
    cost = results["cost"]
    probe = results["probe"]
    factor = None
    pyo = probe["pyodide"].get("result")
    if pyo:
        factor = pyo["cpu"]["total"] / probe["cpython"]["cpu"]["total"]
    p, paged, one = cost["push"], cost["pull_paged"], cost["pull_one_page"]

    def est(cpu: float) -> str:
        return f"≈ {num(cpu * factor)} ms" if factor else DASH

    rows = [
        [
            f"push of {num(p['n'])} changes (1 request)",
            f"{num(p['cpu_ms'])} ms",
            est(p["cpu_ms"]),
            f"{p['peak_mb']:.1f} MB (body {p['body_mb']:.1f} MB)",
        ],
        [
            f"pull of {num(paged['n'])} rows, {paged['requests']} pages of {num(paged['page'])}",
            f"{num(paged['cpu_ms'])} ms in all, ≤ {num(paged['cpu_ms_per_request_max'])} per "
            "request",
            est(paged["cpu_ms_per_request_max"]) + " per request",
            f"{paged['peak_mb']:.1f} MB per request",
        ],
        [
            f"pull of {num(one['n'])} rows in 1 page (PULL_PAGE_SIZE={num(one['page'])})",
            f"{num(one['cpu_ms'])} ms",
            est(one["cpu_ms"]),
            f"{one['peak_mb']:.1f} MB (answer {one['response_mb']:.1f} MB)",
        ],
    ]
    factor_text = (
        f"The Workers column multiplies by {factor:.1f}, the ratio of Pyodide's to CPython's "
        "CPU time for the pure-Python part of a push (parse, validate, rows to JSON, answer; "
        "`bench/pyodide_probe.py`, best of 5: "
        f"{num(pyo['cpu']['total'])} vs {num(probe['cpython']['cpu']['total'])} ms for "
        f"{num(pyo['cpu']['n'])} changes) — an estimate: pg8000's work is assumed to slow "
        "down alike."
        if factor
        else "Pyodide was not run, so no estimate for the Workers runtime."
    )
    return (
        "## Cost in the Workers runtime's terms\n\n"
        "Handled in-process (`App.handle`, pooled connection, no login): CPU time of the "
        "handling thread (`time.thread_time`: waiting for Postgres is not CPU, as Workers "
        "bills it) and the peak of Python allocations (`tracemalloc`, from the request body to "
        "the built answer).\n\n"
        + table(["request", "CPU (CPython)", "CPU on Workers (est.)", "peak Python memory"], rows)
        + f"\n\n{factor_text} Limits: {WORKERS_MEMORY_MB} MB per isolate (which also holds "
        f"the Pyodide runtime and the modules, not counted here), {FREE_CPU_MS} ms CPU per "
        "request on the Free plan, 30 s by default and up to 5 min on paid plans. A login "
        "adds its SCRAM cost on top, per request (next section)."
    )


def scram_section(results: dict) -> str:
    probe = results["probe"]
    cp = probe["cpython"]["scram"]["ms"]
    cpure = probe["cpython_without_pbkdf2_hmac"]["scram"]["ms"]
    pyo = probe["pyodide"].get("result", {}).get("scram", {}).get("ms", {})

    def cell(d: dict, key: str) -> str:
        return f"{d[key]:.3f}" if key in d else DASH

    both = f"{cell(cp, 'login_without_cache')} (C), {cell(cpure, 'login_without_cache')} (pure)"
    rows = [
        ["scramp's pure-Python PBKDF2 (what runs on Pyodide today)", "scramp_pure_loop"],
        ["`hashlib.pbkdf2_hmac` (C; CPython only)", "hashlib_pbkdf2_hmac"],
        ["`sync.scram` pure-Python PBKDF2 (a miss: first login of an isolate)", "sync_scram_pure"],
        ["`sync.scram` cache hit (every later login)", "sync_scram_cache_hit"],
        ["whole client side of a login, without the cache", "login_without_cache"],
        ["whole client side of a login, with the cache (hit)", "login_with_cache"],
    ]
    rows = [
        [label, both if key == "login_without_cache" else cell(cp, key), cell(pyo, key)]
        for label, key in rows
    ]
    return (
        "## Connection set-up: SCRAM's PBKDF2, 4096 iterations\n\n"
        "Milliseconds, median of 7 (`bench/scram_probe.py`; Pyodide through "
        "`bench/pyodide_run.mjs`). pg8000 logs in with SCRAM-SHA-256 once per request, and "
        "without `hashlib.pbkdf2_hmac` (Pyodide) scramp derives the salted password in pure "
        "Python. `src/sync/scram.py` keeps it per isolate (keyed by hash, password digest, "
        "salt and iterations; bounded) and, on a miss, derives it with `hmac.digest`. "
        + wiring()
        + "\n\n"
        + table(["step", "CPython", "Pyodide"], rows)
    )


def wiring() -> str:
    entry = Path(__file__).resolve().parents[1] / "src" / "entry.py"
    text = entry.read_text() if entry.exists() else ""
    if "tune_driver()" in text or "scram.install()" in text:
        return (
            "The Workers adapter (`src/entry.py`) installs it at import "
            "(`sync.pg.tune_driver()`), so only an isolate's first login pays the derivation."
        )
    return (
        "**Not wired yet**: the Workers adapter (`src/entry.py`) should call "
        "`sync.pg.tune_driver()` once at import."
    )


def profile_section(results: dict) -> str:
    prof = results["profile"]
    ex = results["explain"]
    buckets = prof["buckets"]
    total = prof["profiled_ms"]
    rows = [[label, num(ms, 1), f"{100 * ms / total:.0f} %"] for label, ms in buckets]
    top = [
        [f"`{t['function']}`", num(t["calls"]), num(t["tottime_ms"], 1), num(t["cumtime_ms"], 1)]
        for t in prof["top"][:12]
    ]
    phases = ", ".join(f"{k} {v:.0f} ms" for k, v in prof["phases_unprofiled"].items())
    return (
        f"## Where the time goes: a {num(prof['n'])}-change push\n\n"
        f"Unprofiled: {num(prof['unprofiled_ms'])} ms end to end in-process; the App's "
        f"phases: {phases}. Under cProfile ({num(total)} ms, the profiler inflates Python "
        "code, not waiting):\n\n"
        + table(["part", "ms", "share"], rows)
        + "\n\nTop functions by own time:\n\n"
        + table(["function", "calls", "own ms", "cumulative ms"], top)
        + "\n\nPostgres' side: each statement the App sent, run once more under EXPLAIN "
        "ANALYZE in a savepoint rolled back just before it (so Postgres' times are of the "
        "same work; EXPLAIN's per-row instrumentation inflates statements over many rows, "
        "the client column is the real run); the floor's upsert for comparison. A sync sent "
        "as one message (BEGIN; …; COMMIT) is taken apart into the statements the App built "
        "it from: they run under EXPLAIN ANALYZE in order, in a transaction rolled back "
        "after them, then the message runs for real (its row gives the client's time). "
        "EXPLAIN leaves out the parsing of the text, which for a message with its values "
        "inside grows with the batch; the latency table's Postgres time (from Postgres' "
        "log) includes it.\n\n" + statements_table(ex)
    )


def statements_table(ex: dict) -> str:
    rows = []
    for kind in ("insert", "mixed"):
        part = ex.get(kind)
        if not part:
            continue
        name = "new rows" if kind == "insert" else "mixed batch"
        entries = list(part["statements"]) + ([part["floor"]] if "floor" in part else [])
        for e in entries:
            triggers = e.get("triggers", {})
            rows.append(
                [
                    name if e["statement"] != "floor upsert" else "floor",
                    f"`{e['statement']}`",
                    num(e["client_ms"], 1),
                    num(e.get("execution_ms"), 1),
                    ", ".join(f"{k} {v:.0f}" for k, v in triggers.items() if v >= 0.5) or DASH,
                    str(e.get("list_params", DASH)),
                ]
            )
    return table(
        [
            f"push of {num(ex['insert']['n'])}",
            "statement",
            "client ms",
            "Postgres execution ms",
            "of which triggers (ms)",
            "list parameters (length)",
        ],
        rows,
    )


# -- the plot ------------------------------------------------------------------------------------


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["meta"]["config"]
    sizes, rtts = cfg["sizes"], cfg["rtts"]
    push = Push(results["push"])
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    colors = {"push": "#1f77b4", "floor": "#2ca02c", "per_row": "#ff7f0e", "current": "#d62728"}
    styles = {rtt: style for rtt, style in zip(rtts, ["-", "--", ":", "-."], strict=False)}

    ax = axes[0][0]
    for rtt in rtts:
        for m in ("push", "floor", "per_row", "current"):
            ys = [push.rate(m, rtt, n) for n in sizes]
            label = f"{METHOD_NAMES[m]}" if rtt == rtts[0] else None
            ax.plot(sizes, ys, styles[rtt], marker="o", color=colors[m], label=label)
    ax.set(xscale="log", yscale="log", xlabel="changes N", ylabel="rows/s")
    ax.set_title(
        "Push throughput (line style: "
        + ", ".join(f"{styles[r]} {rtt_name(r)}" for r in rtts)
        + ")",
        fontsize=8,
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[0][1]
    for rtt in rtts:
        ax.plot(
            sizes,
            [_share(push, rtt, n, "floor") for n in sizes],
            styles[rtt],
            marker="o",
            color=colors["floor"],
            label=f"push / floor, {rtt_name(rtt)}",
        )
        ax.plot(
            sizes,
            [_share(push, rtt, n, "current") for n in sizes],
            styles[rtt],
            marker="s",
            color=colors["current"],
            label=f"push / current state, {rtt_name(rtt)}",
        )
    ax.axhline(GOAL_FLOOR_SHARE, color=colors["floor"], alpha=0.4, lw=4)
    ax.axhline(GOAL_VS_CURRENT, color=colors["current"], alpha=0.4, lw=4)
    ax.set(xscale="log", yscale="log", xlabel="changes N", ylabel="ratio (goal lines: 0.5, 20)")
    ax.set_title("Ratios, side by side in the same run", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[0][2]
    for rtt in rtts:
        ys = [median(pick(results["pull"], n=n, rtt=rtt), "rows_per_s") for n in sizes]
        ax.plot(sizes, ys, styles[rtt], marker="o", color="#9467bd", label=rtt_name(rtt))
    ax.set(xscale="log", yscale="log", xlabel="rows N", ylabel="rows/s")
    ax.set_title("Pull: initial sync through pages of 1000", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[1][0]
    conc = results["concurrency"]
    for rtt in sorted({e["rtt"] for e in conc}):
        es = pick(conc, rtt=rtt)
        ks = [e["k"] for e in es]
        ax.plot(
            ks,
            [e["requests_per_s"] for e in es],
            styles.get(rtt, "-"),
            marker="o",
            color="#1f77b4",
            label=f"requests/s, {rtt_name(rtt)}",
        )
    ax.set(xscale="log", xlabel="devices K", ylabel="requests/s")
    ax2 = ax.twinx()
    for rtt in sorted({e["rtt"] for e in conc}):
        es = pick(conc, rtt=rtt)
        ax2.plot(
            [e["k"] for e in es],
            [e["p95_ms"] for e in es],
            styles.get(rtt, "-"),
            marker="^",
            color="#d62728",
            label=f"p95 ms, {rtt_name(rtt)}",
        )
    ax2.set_ylabel("p95 latency, ms")
    ax.set_title("Concurrency: 10-change syncs", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    ax2.legend(fontsize=6, loc="lower right")

    ax = axes[1][1]
    probe = results["probe"]
    cp = probe["cpython"]["scram"]["ms"]
    pyo = probe["pyodide"].get("result", {}).get("scram", {}).get("ms", {})
    bars = [
        ("CPython\nhashlib (C)", cp.get("hashlib_pbkdf2_hmac")),
        ("CPython\nscramp pure", cp.get("scramp_pure_loop")),
        ("Pyodide\nscramp pure", pyo.get("scramp_pure_loop")),
        ("Pyodide\ncache miss", pyo.get("sync_scram_pure")),
        ("Pyodide\ncache hit", pyo.get("sync_scram_cache_hit")),
    ]
    bars = [(label, value) for label, value in bars if value is not None]
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color="#8c564b")
    for i, (_, value) in enumerate(bars):
        ax.text(i, value, f"{value:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set(yscale="log", ylabel="ms per login")
    ax.set_title("SCRAM PBKDF2, 4096 iterations", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.axhline(FREE_CPU_MS, color="grey", ls="--", lw=1)

    ax = axes[1][2]
    prof = results["profile"]
    labels = [label.split(" (")[0] for label, _ in prof["buckets"]]
    values = [ms for _, ms in prof["buckets"]]
    ax.barh(range(len(values)), values, color="#17becf")
    ax.set_yticks(range(len(values)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("ms under cProfile")
    ax.set_title(f"Where a {prof['n']}-change push spends its time", fontsize=9)

    meta = results["meta"]
    fig.suptitle(
        f"Sync Worker benchmark — {meta['started']}, {meta['cores']} cores, Postgres "
        f"{meta['postgres'].split()[0]}, pooled server unless noted"
        f"{' (QUICK SMOKE RUN)' if meta['quick'] else ''}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _share(push: Push, rtt: float, n: int, other: str) -> float | None:
    w, o = push.rate("push", rtt, n), push.rate(other, rtt, n)
    return w / o if w and o else None


def problems_section(results: dict, push: Push) -> str:
    """Each problem is stated from this run's numbers; one the run no longer shows (fixed in
    src/ meanwhile) is listed as such, so the text never outlives the code."""
    f = results["findings"]
    login, http, pg = f["login"], f["http_nagle"], f["pg8000_nagle"]
    ex, prof = results["explain"], results["profile"]
    n, calls = prof["n"], prof["calls"]
    lp = ex["list_params"]
    listed = [e for k in ("insert", "mixed") for e in ex[k]["statements"] if "list_params" in e]
    # The todos upsert: its own statement in the older code, inside the one push
    # statement of the one-message sync.
    upsert = next(
        (
            e
            for e in ex["insert"]["statements"]
            if e["statement"] in ("upsert todos", "push statement")
        ),
        {},
    )
    own = {k: v for k, v in upsert.get("triggers", {}).items() if k != "foreign key"}
    parsed = [e for e in ex["insert"]["statements"] if "parse_ms" in e]
    parse_total = sum(e["parse_ms"] for e in parsed)
    push_cpu = median(push.runs("push", 0, min(results["meta"]["config"]["sizes"])), "cpu_ms")
    share = sum(own.values()) / upsert["execution_ms"] if upsert.get("execution_ms") else 0
    pages = f["pull_pages"]["page_ms"]
    pg_rows = [
        [num(int(size))]
        + [
            f"{v[k]['median_ms']:.1f} / {v[k]['p90_ms']:.1f} / {v[k]['max_ms']:.1f}"
            for k in ("as_shipped", "tcp_nodelay")
        ]
        for size, v in pg.items()
    ]
    pg_table = "\n".join(
        "   " + line
        for line in table(["rows", "as pg8000 connects", "with TCP_NODELAY"], pg_rows).splitlines()
    )
    pg_worst = max(v["as_shipped"]["max_ms"] - v["tcp_nodelay"]["max_ms"] for v in pg.values())
    problems = [
        (
            http["as_shipped"]["median_ms"] > 2 * http["tcp_nodelay"]["median_ms"],
            "`src/serve.py`: no `TCP_NODELAY` on the HTTP socket",
            "`src/serve.py` holding answers back (Nagle)",
            "The handler writes the status line and headers, then the body, in separate "
            "sends; the body waits for the client's delayed ACK. One-change syncs, same "
            f"pooled server otherwise: median {http['as_shipped']['median_ms']:.1f} ms as "
            f"shipped vs {http['tcp_nodelay']['median_ms']:.1f} ms with `TCP_NODELAY` "
            f"({http['as_shipped']['count']} requests each). Fix: `disable_nagle_algorithm = "
            "True` on the handler class in `serve()` (or one send for headers and body). "
            "Local host only; on Workers the runtime serves HTTP.",
        ),
        (
            login["connect_url"]["cpu_ms"] > 2 * login["entry_style"]["cpu_ms"],
            "`src/sync/migrate.py::connect_url` leaves `ssl_context=None`",
            "`connect_url` probing for TLS on every login",
            "pg8000 then builds `ssl.create_default_context()` (loading the CA store) and "
            f"sends an SSLRequest on every login: {login['connect_url']['cpu_ms']:.1f} ms CPU "
            f"per login against {login['entry_style']['cpu_ms']:.1f} ms with "
            "`ssl_context=False`, and the local host logs in per request. Worse, against a "
            "server that offers TLS it negotiates TLS *without* verifying the certificate, and "
            "`sslmode=verify-full` maps to `ssl_context=True`, which pg8000 also runs with "
            "`CERT_NONE`. Fix: `ssl_context=False` unless `sslmode` asks for TLS; for "
            "`verify-full` a verifying `ssl.create_default_context()`.",
        ),
        (
            pg_worst > 20,
            "pg8000 does not set `TCP_NODELAY` on its socket (libpq does)",
            "stalls of pg8000 statements without `TCP_NODELAY` (> 20 ms at worst)",
            "A statement whose message pg8000 writes in more than one segment (its write "
            "buffer is 8 KB) can wait ~40 ms for the server's delayed ACK, at random. The "
            "floor's one upsert with and without the option (median / p90 / max ms):\n\n"
            f"{pg_table}\n\n   Fix for the local host: open the socket in `connect_url` with "
            "`TCP_NODELAY` and hand it to pg8000 (`sock=`). The bench sets it everywhere but "
            "in the *as shipped* set-up. Whether Workers' sockets hold back small segments "
            "cannot be measured here.",
        ),
        (
            bool(listed) and "list" in lp,
            "key lists go to pg8000 as Python lists",
            "key lists sent as Python lists",
            "pg8000 turns a list parameter into an array literal, escaping every element in "
            "Python. In this run: "
            + ", ".join(f"`{e['statement']}` ({e['list_params']})" for e in listed)
            + f". For {num(lp.get('n'))} keys `lock_rows` takes "
            f"{lp.get('list', {}).get('client_ms', 0):.0f} ms from the client (Postgres "
            f"executes it in {lp.get('list', {}).get('execution_ms', 0):.1f} ms) against "
            f"{lp.get('text', {}).get('client_ms', 0):.0f} ms with the same keys as one "
            "pre-built text (`'{' + ','.join(keys) + '}'`, safe for uuid and integer keys; for "
            "text keys `json.dumps(keys)` unnested with `jsonb_array_elements_text`).",
        ),
        (
            parse_total > 0.3,
            "pg8000 re-parses each statement's text on every `run`",
            "pg8000's statement parsing being costly (> 0.3 ms per push)",
            "(`pg8000.native.to_statement`, pure Python, no cache), and the sync statements "
            "are long: "
            + " + ".join(f"{e['parse_ms']:.2f} (`{e['statement']}`)" for e in parsed)
            + f" = {parse_total:.2f} ms CPU per push of new rows under CPython, whatever N"
            + (
                f", against {push_cpu:.1f} ms of server CPU for a whole "
                f"{min(results['meta']['config']['sizes'])}-change push"
                if push_cpu
                else ""
            )
            + ". Fix: memoise `to_statement` per isolate (a bounded `functools.lru_cache` "
            "installed at import, as `sync.scram.install()` does for SCRAM); its result "
            "depends on the text only.",
        ),
        (
            calls.get("parse_timestamp", 0) >= 2 * n,
            "`push.check` parses each change's `updated_at` twice",
            "`updated_at` parsed twice per change",
            f"{num(calls.get('parse_timestamp', 0))} `parse_timestamp` and "
            f"{num(calls.get('format_timestamp', 0))} `format_timestamp` calls for {num(n)} "
            "changes in the profile (as a column value, then as the clock). Fix: leave "
            "`updated_at` out of the column loop and use the parsed clock.",
        ),
        (
            share > 0.25,
            f"row triggers are {share:.0%} of Postgres' work on the push's upsert",
            f"row triggers dominating the push's upsert (they are {share:.0%} of it)",
            ", ".join(f"`{k}` {v:.0f} ms" for k, v in own.items())
            + f" of {upsert.get('execution_ms', 0):.0f} ms for {num(ex['insert']['n'])} rows. "
            "The floor pays them too, so the ratio does not show it, but they bound both. "
            "Direction: per-table trigger functions generated by `sync_enable` with static "
            "column references (no `to_jsonb`), and set-based bookkeeping in statement "
            "triggers.",
        ),
        (
            len(pages) > 4 and early_pages(pages) > 2 * late_pages(pages),
            "initial-sync pagination costs O(remaining rows) per page (`sql.pull`)",
            "pages of an initial sync slowing with the rows still to come",
            pull_pages_item(f["pull_pages"]),
        ),
    ]
    lines = []
    for i, (present, title, absent, text) in enumerate(problems, 1):
        if present:
            lines.append(f"{i}. **{title}**: {text}")
        else:
            lines.append(f"{i}. Not seen in this run: {absent}.")
    return (
        "## Problems found in src/ (not fixed by the bench; measured in this run)\n\n"
        + "\n".join(lines)
    )


def early_pages(ms: list[float]) -> float:
    """Median time of the pages after the first (which also pays for warming up) in the
    first quarter of an initial sync."""
    return statistics.median(ms[1 : max(2, len(ms) // 4 + 1)])


def late_pages(ms: list[float]) -> float:
    return statistics.median(ms[-max(1, len(ms) // 4) :])


def pull_pages_item(pages: dict) -> str:
    ms = pages["page_ms"]
    count = len(ms)
    picks = sorted({0, count // 4, count // 2, 3 * count // 4, count - 1})
    shown = ", ".join(f"page {i + 1}: {ms[i]:.0f} ms" for i in picks)
    return (
        "A page's time falls as the rows still to come do, so the whole initial sync grows "
        "faster than its row count. A user with "
        f"{num(pages['n'])} rows written in {pages['transactions']} transaction: {shown}; "
        f"{sum(ms) / 1000:.1f} s in all for {count} pages (median of the early pages "
        f"{early_pages(ms):.0f} ms, of the last quarter {late_pages(ms):.0f} ms). Look at the "
        "plan of `sql.pull`: a page should be an index range scan of about `LIMIT` rows per "
        "table, with JSON built only for the rows kept."
    )


# -- the hostile section ---------------------------------------------------------------------

HOSTILE_LABELS = {
    "valid": "valid: new todos with their project",
    "missing_parent": "(a) todos under projects that do not exist",
    "foreign_parent": "(b) todos under another user's project",
    "foreign_rows": "(c) updates/deletes of another user's rows",
    "constraint": "(d) k = {k} of the todos fail a CHECK (careful mode)",
    "oversized": "(e) rows over MAX_ROW_BYTES",
}


def _answered(runs: list[dict]) -> str:
    """What the answers said, in brief: accepted count and rejection codes (or the
    error code of a refused request)."""
    first = runs[0]
    if first["status"] != 200:
        return "; ".join(f"{code}" for code in first["codes"]) or DASH
    codes = ", ".join(f"{num(v)} {code}" for code, v in sorted(first["codes"].items()))
    return f"{num(first['accepted'])} accepted" + (f"; {codes}" if codes else "")


def _spread(runs: list[dict], key: str) -> str:
    values = sorted({r[key] for r in runs if r.get(key) is not None})
    if not values:
        return DASH
    return num(values[0]) if len(values) == 1 else f"{num(values[0])}{DASH}{num(values[-1])}"


def hostile_batches(batches: list[dict], max_row_bytes: int) -> tuple[str, list[str]]:
    """The per-batch table, and sentences on what it shows (for the text above it)."""
    rows, notes = [], []
    for n in sorted({b["n"] for b in batches}):
        valid = pick(batches, n=n, kind="valid")
        valid_ms = median(valid, "ms")
        kinds = sorted(
            {(b["kind"], b["k"]) for b in batches if b["n"] == n},
            key=lambda kk: (list(HOSTILE_LABELS).index(kk[0]), kk[1]),
        )
        worst: tuple[float, str] | None = None
        for kind, k in kinds:
            runs = pick(batches, n=n, kind=kind, k=k)
            ms = median(runs, "ms")
            label = HOSTILE_LABELS[kind].format(k=k)
            statuses = "/".join(str(s) for s in sorted({r["status"] for r in runs}))
            sent = _spread(runs, "changes")
            rows.append(
                [
                    num(n),
                    label + ("" if sent == num(n) else f" ({sent} changes)"),
                    statuses,
                    num(ms),
                    ratio(ms, valid_ms) if kind != "valid" else "1",
                    _spread(runs, "statements"),
                    _spread(runs, "round_trips"),
                    _answered(runs),
                    "yes" if all(r["ok"] for r in runs) else "**no**",
                ]
            )
            if kind != "valid" and ms and (worst is None or ms > worst[0]):
                worst = (ms, f"{label} ({statuses})")
        if worst and valid_ms:
            notes.append(
                f"at N = {num(n)} the costliest batch is {worst[1]}: {num(worst[0])} ms, "
                f"{ratio(worst[0], valid_ms)} the valid batch's {num(valid_ms)} ms"
            )
    refused = [b for b in batches if b["kind"] == "constraint" and b["status"] == 413]
    if refused:
        notes.append(
            "careful mode stopped at its budget and answered 413 after at most "
            f"{num(max(b['statements'] for b in refused))} statements "
            f"(k = {', '.join(num(k) for k in sorted({b['k'] for b in refused}))})"
        )
    text = table(
        [
            "N",
            "batch",
            "status",
            "wall ms",
            f"{TIMES} valid",
            "statements",
            "round trips",
            "answer",
            "as expected",
        ],
        rows,
    )
    return text, notes


def _statuses(stats: dict) -> str:
    parts = [f"{k}: {num(v)}" for k, v in sorted(stats["statuses"].items())]
    return ", ".join(parts) or DASH


def _verdict(kind: str, phases: dict, intact: bool | None) -> str:
    """One sentence per bystander: what it got under attack, against alone."""
    alone, hit = phases["alone"], phases["attack"]
    errors = sum(p["errors"] for p in phases.values())
    reasons = {}
    for p in phases.values():
        for message, count in p.get("refusals", {}).items():
            reasons[message] = reasons.get(message, 0) + count
    top = max(reasons, key=reasons.get) if reasons else None
    got = (
        "was never refused and never got an error"
        if errors == 0
        else f"**got {num(errors)} answers other than 200** (under attack: {_statuses(hit)}; "
        f"most often {top!r})"
    )
    rows = (
        ""
        if intact is None
        else "; its held rows, which the attacker's batches updated and deleted, "
        + ("kept its own writes" if intact else "**were changed by the attacker**")
    )
    after = phases.get("after", {})
    if hit.get("p99_ms") is None:
        latency = "none of its syncs under attack was answered 200"
    else:
        latency = (
            f"its p99 under attack was {ratio(hit.get('p99_ms'), alone.get('p99_ms'))} its "
            f"p99 alone before ({num(hit.get('p99_ms'), 1)} against "
            f"{num(alone.get('p99_ms'), 1)} ms) and "
            f"{ratio(hit.get('p99_ms'), after.get('p99_ms'))} its p99 alone after "
            f"({num(after.get('p99_ms'), 1)} ms)"
        )
    capped = sum(v for m, v in reasons.items() if "connection limit" in m)
    cap_note = (
        " The local host's connection cap (`Limits.max_connections` in src/serve.py) is one "
        "pool for all users, taken before any token is read: the attacker's kept-alive "
        "connections held it, so this user's new connections were turned away "
        f"({num(capped)} times)."
        if capped
        else ""
    )
    return f"The {kind} bystander {got}; {latency}{rows}.{cap_note}"


def hostile_section(results: dict) -> str:
    data = results.get("hostile")
    if not data:
        return "## Hostile: one account against the rest\n\nNot run."
    batches, watch = data["batches"], data["bystander"]
    batch_table, notes = hostile_batches(batches, data["max_row_bytes"])
    bystanders, attacker = watch["bystanders"], watch["attacker"]
    names = {
        "alone": "alone",
        "attack": "while one account attacks",
        "attack_heavy": "attack: heavy batches only",
        "attack_tiny": "attack: tiny requests only",
        "after": "alone, after",
    }
    bystander_rows = [
        [
            kind,
            names[name],
            num(p["requests"]),
            num(p.get("p50_ms"), 1),
            num(p.get("p95_ms"), 1),
            num(p.get("p99_ms"), 1),
            num(p.get("max_ms"), 1),
            num(p.get("app_p99_ms"), 1),
            _statuses(p),
        ]
        for kind, phases in bystanders.items()
        for name, p in phases.items()
    ]
    attack_rows = [
        [
            side,
            num(attacker[key]["requests"]),
            _statuses(attacker[key]),
            num(attacker[key].get("p50_ms"), 1),
            num(attacker[key].get("p99_ms"), 1),
            "; ".join(f"{num(v)}{TIMES} {m}" for m, v in attacker[key]["refusals"].items()) or DASH,
        ]
        for side, key in (("heavy batches", "batch"), ("tiny updates", "tiny"))
    ]
    refused = {
        status: sum(attacker[k]["statuses"].get(status, 0) for k in attacker)
        for status in ("429", "503")
    }
    other = sum(
        v
        for k in attacker
        for s, v in attacker[k]["statuses"].items()
        if s not in ("200", "429", "503")
    )
    verdicts = " ".join(
        _verdict(kind, phases, watch.get("intact", {}).get(kind))
        for kind, phases in bystanders.items()
    )
    kept = next(iter(bystanders.values()))["attack"]
    return (
        "## Hostile: what one account can cost, and what the others feel\n\n"
        "Measured by `bench/hostile.py` on a pooled server at RTT 0, side by side in this "
        "run. The bench adds a real constraint to its own database, `CHECK "
        f"(char_length(title) <= {data['title_limit']})` on `todos` (the server knows nothing "
        "of it), so only Postgres refuses those rows and the server has to find them in "
        "careful mode.\n\n"
        "**The worst batch against a valid one of the same size.** Each batch comes from a "
        "fresh user with a cursor. *Valid*: a new project and N-1 todos under it. (a) N todos "
        "under random project ids; (b) N todos under another user's project; (c) N/2 updates "
        "and N/2 deletes of another user's N rows; (d) N todos under the caller's project, k "
        "of them (spread evenly) over the CHECK; (e) rows just over MAX_ROW_BYTES, which the "
        f"server under test has at {num(data['max_row_bytes'])} bytes (the setting's "
        "minimum, so that such batches still fit in MAX_BODY_BYTES; as many as fit are sent). "
        "Statements are every `run` the server made on its connection, attempts that were "
        "rolled back included (careful mode reruns the batch); wall time is the client's. "
        "*As expected*: the other user's rows are unchanged, and the caller holds exactly "
        "the todos the answer accepted (none after an error). Median wall time of "
        f"{results['meta']['config'].get('hostile_reps', 1)} interleaved repetition(s); "
        "statements and round trips as the range over them.\n\n"
        + batch_table
        + "\n\n"
        + ("In short: " + "; ".join(notes) + ".\n\n" if notes else "")
        + "**Bystanders while another account attacks.** Two users sync in a loop, 10 ms "
        "apart, each sync one new todo, one update of one of the "
        f"{watch.get('held_rows', 0)} rows it held from the start, and the pull with its "
        "cursor: one on a kept-alive connection, one opening a new connection for every sync. "
        f"{watch['seconds']:g} s alone, then {watch['seconds']:g} s while one other account "
        f"attacks from a separate process — {watch['batch_threads']} connections looping "
        f"{num(watch['attack_n'])}-change hostile batches (updates of its {watch['hot_rows']} "
        f"hot rows, {watch['attack_k']} rows over the CHECK, the rest under missing projects, "
        "plus updates and deletes of the bystanders' held rows) and "
        f"{watch['tiny_threads']} connections each looping a one-row update of one of its hot "
        f"rows — waiting only {watch['pause_s'] * 1000:g} ms after a refusal, whatever "
        f"Retry-After says; then {watch['seconds'] / 2:g} s alone again. *In App p99* is the "
        "server's own time (App.handle) for the bystander's requests answered 200; the rest "
        "of its latency is the HTTP host and waiting for a thread or a core. A bystander's "
        "percentiles are over its syncs answered 200 (refusals are counted in *statuses*); "
        "an attacker's over every answer. Server, Postgres "
        "and both clients share the same 2 cores.\n\n"
        + table(
            [
                "bystander",
                "phase",
                "syncs",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "in App p99 ms",
                "statuses",
            ],
            bystander_rows,
        )
        + "\n\n"
        + table(["attacker", "requests", "statuses", "p50 ms", "p99 ms", "refusals"], attack_rows)
        + "\n\n"
        + verdicts
        + " "
        + _attack_meaning(watch, refused, other, kept)
        + _halves(watch, next(iter(bystanders)))
    )


def _halves(watch: dict, kind: str) -> str:
    """What each half of the attack alone did to the bystander, when the run measured it."""
    phases, attacks = watch["bystanders"][kind], watch.get("attacks", {})
    if "attack_heavy" not in phases or "attack_tiny" not in phases:
        return ""

    def at(name: str) -> str:
        p = phases[name]
        return f"p50 {num(p.get('p50_ms'), 1)} / p99 {num(p.get('p99_ms'), 1)} ms"

    tiny = attacks.get("attack_tiny", {}).get("sides", {}).get("tiny", {})

    def bigger(key: str) -> str:
        heavy = phases["attack_heavy"].get(key) or 0
        tiny = phases["attack_tiny"].get(key) or 0
        return "the flood of tiny requests" if tiny > heavy else "the heavy batches"

    return (
        f"\n\nEach half of the attack alone, same length, right after: the {kind} bystander "
        f"had {at('attack_heavy')} under the {watch['batch_threads']} heavy-batch connections "
        f"alone, {at('attack_tiny')} under the {watch['tiny_threads']} tiny-request "
        f"connections alone ({num(tiny.get('requests'))} requests, "
        f"{num(tiny.get('statuses', {}).get('429', 0))} of them answered 429), against "
        f"{at('attack')} under both and {at('alone')} alone. Of the two, {bigger('p50_ms')} "
        f"cost it more at p50 and {bigger('p99_ms')} at p99 in this run (one run each: "
        "p99 of about a hundred syncs is noisy on a shared machine)."
    )


def _attack_meaning(watch: dict, refused: dict[str, int], other: int, hit: dict) -> str:
    """What the attacker got and what that says, from this run's counts and messages."""
    attacker = watch["attacker"]
    messages: dict[str, int] = {}
    for side in attacker.values():
        for message, count in side["refusals"].items():
            messages[message] = messages.get(message, 0) + count
    cap = sum(v for m, v in messages.items() if m.startswith("503") and "connection limit" in m)
    busy = refused["503"] - cap
    admitted = sum(side["statuses"].get("200", 0) for side in attacker.values())
    parts = [
        f"The attacker got {num(refused['429'])} {TIMES} 429 (the per-user in-flight limit, "
        "answered before any database work) and "
        f"{num(refused['503'])} {TIMES} 503 in {watch['attack_s']:.1f} s"
    ]
    if refused["503"]:
        parts.append(
            f" — {num(cap)} of them the local host's connection cap turning away its surplus "
            f"connections, {num(busy)} a bound running out in the database (lock or statement "
            "timeout, request deadline)"
        )
    if other:
        parts.append(f"; {num(other)} of its requests found their connection closed")
    parts.append(f"; {num(admitted)} of its requests were admitted and answered 200. ")
    inside = hit.get("app_p99_ms")
    if inside is not None and hit.get("p99_ms"):
        parts.append(
            f"Of the kept-alive bystander's p99 under attack, {num(inside, 1)} ms was spent inside "
            "App.handle: its own transaction (on its own rows, which the attacker names but "
            "the vet never locks), which includes "
            "waiting for the interpreter lock of the one server process that is also "
            "answering the attacker, and for the cores Postgres and the attacker share; "
            "the rest is the HTTP host and the client."
        )
    return "".join(parts)
