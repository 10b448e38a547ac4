"""`make bench`: the sync Worker against its baselines, on a real Postgres, over real HTTP.

    .venv/bin/python bench/run.py            # the full run (~5 min on 2 cores): bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # a smoke run in seconds, into bench/.work/quick/

Starts a throwaway Postgres from the machine's binaries (bench/.work/), the server in a
process of its own, and writes results.json, RESULTS.md and results.png. Every loop is
bounded in count and time; all traffic goes to 127.0.0.1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
sys.path.append(str(ROOT / "bench"))  # the probes also run under Pyodide, as top-level modules

from bench import findings, harness, hostile, inprocess, latency, report, scenarios, sharing  # noqa: E402
from bench.data import Rows  # noqa: E402
from bench.harness import say  # noqa: E402


@dataclass
class Config:
    sizes: list[int] = field(default_factory=lambda: [10, 100, 1000, 10_000])
    rtts: list[float] = field(default_factory=lambda: [0, 1, 5])
    reps_fast: int = 5  # push, floor
    reps_slow: int = 3  # the loops: current state, per-row transaction
    cap_s: float = 6.0  # time cap of one run of a loop baseline
    pull_reps: int = 3
    ks: list[int] = field(default_factory=lambda: [1, 8, 32])
    conc_rtts: list[float] = field(default_factory=lambda: [0, 5])
    conc_seconds: float = 8.0
    cost_n: int = 10_000
    cost_reps: int = 3
    nagle_sizes: list[int] = field(default_factory=lambda: [100, 1000])
    nagle_reps: int = 20
    nagle_requests: int = 50
    pages_n: int = 30_000
    pyodide: bool = True
    durable: bool = True
    # The hostile section (bench/hostile.py)
    hostile_sizes: list[int] = field(default_factory=lambda: [1000, 10_000])
    hostile_ks: list[int] = field(default_factory=lambda: [1, 10, 100])
    hostile_reps: int = 3
    bystander_seconds: float = 10.0
    attack_batch_threads: int = 4
    attack_tiny_threads: int = 100
    attack_n: int = 1000
    attack_k: int = 10
    attack_pause_s: float = 0.05
    attack_parts: bool = True  # also each half of the attack alone
    # Issue #8's section (bench/latency.py): one sync's latency against one round trip
    # plus Postgres' own time, echo of a device's own writes, partial rows vs their floor
    latency_sizes: list[int] = field(default_factory=lambda: [10, 1000])
    latency_rtts: list[float] = field(default_factory=lambda: [0, 1, 5, 20, 80])
    latency_reps: int = 3
    throughput_reps: int = 3
    sharing_quick: bool = False  # issue #10's section (bench/sharing.py) at its smoke size

    @classmethod
    def quick(cls) -> Config:
        return cls(
            sizes=[10, 100],
            rtts=[0, 1],
            reps_fast=1,
            reps_slow=1,
            cap_s=1.0,
            pull_reps=1,
            ks=[1, 4],
            conc_rtts=[0],
            conc_seconds=0.5,
            cost_n=200,
            cost_reps=1,
            nagle_sizes=[100],
            nagle_reps=2,
            nagle_requests=10,
            pages_n=3000,
            pyodide=False,
            durable=False,
            hostile_sizes=[100],
            hostile_ks=[1, 40],
            hostile_reps=1,
            bystander_seconds=1.0,
            attack_tiny_threads=20,
            attack_n=100,
            attack_parts=False,
            latency_sizes=[10],
            latency_rtts=[0, 5],
            latency_reps=1,
            throughput_reps=1,
            sharing_quick=True,
        )


# The three ways the server runs at RTT 0: pooled (the Hyperdrive model, used everywhere
# else), a login per request, and the local host exactly as it ships (login per request
# through connect_url, no TCP_NODELAY on either socket).
SETUPS = {
    "pool": {"pool": True, "env": {"BENCH_NODELAY": "1"}},
    "nopool": {"pool": False, "env": {"BENCH_NODELAY": "1"}},
    "shipped": {"pool": False, "env": {"BENCH_NODELAY": "0", "BENCH_CONNECT": "shipped"}},
}


class Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        say(f"[{time.perf_counter() - self.started:6.1f}s] {text}")


def push_block(url, rtt, servers, rows, cfg, log) -> list[dict]:
    """Push, floor, per-row transaction and current state at every N, interleaved: each rep
    runs every method once per N, in an order that rotates, so drift hits all alike."""
    methods = [("push", "pool"), ("floor", None), ("per_row", None), ("current", "pool")]
    methods.append(("push_mixed", "pool"))
    if rtt == 0:
        methods += [
            (m, s) for s in ("nopool", "shipped") if s in servers for m in ("push", "current")
        ]
    out: list[dict] = []
    capped: set[tuple] = set()
    for rep in range(max(cfg.reps_fast, cfg.reps_slow)):
        order = methods[rep % len(methods) :] + methods[: rep % len(methods)]
        for n in cfg.sizes:
            for method, setup in order:
                slow = method in ("per_row", "current")
                if (
                    rep >= (cfg.reps_slow if slow else cfg.reps_fast)
                    or (method, setup, n) in capped
                ):
                    continue
                if method == "push":
                    result = scenarios.push(servers[setup], rows, n, url)
                elif method == "push_mixed":
                    result = scenarios.push(servers[setup], rows, n, url, mixed=True)
                elif method == "current":
                    result = scenarios.current_state(servers[setup], rows, n, url, cfg.cap_s)
                elif method == "floor":
                    result = scenarios.floor(url, rtt, rows, n)
                else:
                    result = scenarios.per_row(url, rtt, rows, n, cfg.cap_s)
                if result.get("capped"):
                    capped.add((method, setup, n))
                if not result["ok"]:
                    raise RuntimeError(f"{method} N={n} RTT={rtt}: lost or refused changes")
                out.append(
                    {"rtt": rtt, "n": n, "method": method, "setup": setup, "rep": rep, **result}
                )
        log(f"rtt {rtt} ms, rep {rep + 1}: push/floor/per-row/current at N={cfg.sizes}")
    return out


def measure(cfg: Config, log: Clock) -> dict:
    results: dict = {"push": [], "pull": [], "concurrency": []}
    rows = Rows(20261124)
    with harness.postgres(cfg.durable) as (cluster, url):
        log(f"Postgres up on 127.0.0.1:{cluster.port} (durable={cfg.durable}), migrated")
        results["findings"] = {
            "login": findings.login(url),
            "pg8000_nagle": findings.pg8000_nagle(url, rows, cfg.nagle_sizes, cfg.nagle_reps),
            "http_nagle": findings.http_nagle(url, rows, cfg.nagle_requests),
        }
        log("findings: login styles, TCP_NODELAY on both sockets")
        for rtt in cfg.rtts:
            names = ["pool", "nopool", "shipped"] if rtt == 0 else ["pool"]
            with contextlib.ExitStack() as stack:
                servers = {
                    name: stack.enter_context(
                        harness.Server(url, rtt, SETUPS[name]["pool"], **SETUPS[name]["env"])
                    )
                    for name in names
                }
                results["push"] += push_block(url, rtt, servers, rows, cfg, log)
                for rep in range(cfg.pull_reps):
                    for n in cfg.sizes:
                        result = scenarios.pull(servers["pool"], rows, n, url)
                        if not result["ok"]:
                            raise RuntimeError(f"pull N={n} RTT={rtt} missed rows")
                        results["pull"].append({"rtt": rtt, "n": n, "rep": rep, **result})
                log(f"rtt {rtt} ms: pull at N={cfg.sizes}")
                if rtt in cfg.conc_rtts:
                    for k in cfg.ks:
                        servers["pool"].forget()
                        result = scenarios.concurrency(
                            servers["pool"], rows, k, cfg.conc_seconds, url
                        )
                        servers["pool"].forget()
                        results["concurrency"].append({"rtt": rtt, **result})
                        log(
                            f"rtt {rtt} ms: K={k}: {result['requests_per_s']:.0f} req/s, "
                            f"p95 {result['p95_ms']:.0f} ms, lost {result['lost']}"
                        )
        results["issue8"] = latency.measure(cluster, url, rows, cfg, log)
        n = cfg.cost_n
        results["cost"] = {
            "push": inprocess.push_cost(url, harness.SECRET, rows, n, cfg.cost_reps),
            "pull_paged": inprocess.pull_cost(url, harness.SECRET, rows, n, 1000),
            "pull_one_page": inprocess.pull_cost(url, harness.SECRET, rows, n, n),
        }
        log(f"cost of a {n}-change push and {n}-row pull measured in-process")
        results["profile"] = inprocess.profile_push(url, harness.SECRET, rows, n)
        results["explain"] = {
            "insert": inprocess.explain_push(url, harness.SECRET, rows, n, mixed=False),
            "mixed": inprocess.explain_push(url, harness.SECRET, rows, n, mixed=True),
            "list_params": inprocess.list_params(url, rows, n),
        }
        log(f"profile and EXPLAIN ANALYZE of a {n}-change push taken")
        results["findings"]["pull_pages"] = findings.pull_pages(
            url, harness.SECRET, rows, cfg.pages_n, 1
        )
        log(f"page times of a {cfg.pages_n}-row initial sync taken")
        results["hostile"] = hostile.measure(url, rows, cfg, log)
        log("hostile section: worst batches and a bystander under attack measured")
        size = sharing.SharingConfig.quick() if cfg.sharing_quick else sharing.SharingConfig()
        results["sharing"] = sharing.measure(url, size, log, cluster.url(user="postgres"))
        log("sharing section (issue #10) measured")
        if cfg.pyodide:  # whole requests' CPU under CPython and Pyodide (bench/request_cpu.py)
            import request_cpu

            results["request_cpu"] = request_cpu.measure(url)
            log("CPU of whole requests (cold and warm tokens, pushes, a pull page) measured")
        results["meta_postgres"] = _postgres_version(url)
    results["probe"] = probes(cfg, log)
    return results


def measure_issue8(cfg: Config, log: Clock) -> dict:
    """Issue #8's section alone (`--only issue8`), e.g. on a clone of an older commit for
    the figures bench/baseline.json keeps as "before"."""
    rows = Rows(20261124)
    with harness.postgres(cfg.durable) as (cluster, url):
        log(f"Postgres up on 127.0.0.1:{cluster.port} (durable={cfg.durable}), migrated")
        results = {"issue8": latency.measure(cluster, url, rows, cfg, log)}
        results["meta_postgres"] = _postgres_version(url)
    return results


def probes(cfg: Config, log: Clock) -> dict:
    """SCRAM and pure-Python CPU under CPython (with and without hashlib.pbkdf2_hmac, as on
    Pyodide), and under Pyodide through node when node and the npm package are there."""
    import hashlib

    import pyodide_probe
    import scram_probe

    n = pyodide_probe.N if cfg.pyodide else cfg.cost_n  # the same size on both runtimes
    out: dict = {"cpython": {"scram": scram_probe.main(), "cpu": pyodide_probe.cpu_probe(n)}}
    native = hashlib.pbkdf2_hmac
    del hashlib.pbkdf2_hmac
    try:
        out["cpython_without_pbkdf2_hmac"] = {"scram": scram_probe.main()}
    finally:
        hashlib.pbkdf2_hmac = native
    log("SCRAM and CPU probes under CPython done")
    out["pyodide"] = run_pyodide(cfg)
    log(f"Pyodide probes: {'done' if 'result' in out['pyodide'] else out['pyodide']['skipped']}")
    return out


def run_pyodide(cfg: Config) -> dict:
    node = shutil.which("node")
    if not cfg.pyodide:
        return {"skipped": "not asked for (--quick without --pyodide)"}
    missing = [
        p for p in ("node_modules/pyodide", "python_modules/scramp") if not (ROOT / p).exists()
    ]
    if node is None or missing:
        return {
            "skipped": f"needs node and {', '.join(missing) or 'node'} (npm ci; scripts/vendor.sh)"
        }
    try:
        done = subprocess.run(
            [
                node,
                str(ROOT / "bench" / "pyodide_run.mjs"),
                str(ROOT / "bench" / "pyodide_probe.py"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {"skipped": "Pyodide run timed out (300 s)"}
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "Error" in line[:80]]
        return {"skipped": f"Pyodide run failed: {(lines or [done.stderr[-300:]])[-1][:300]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _postgres_version(url: str) -> str:
    con = harness.admin(url)
    try:
        return con.run("SHOW server_version")[0][0]
    finally:
        con.close()


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 2**20:.0f} GiB"
    from importlib.metadata import version

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "migrations"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    node = shutil.which("node")
    node_version = (
        subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        if node
        else None
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "pg8000": version("pg8000"),
        "node": node_version,
        "load_before": os.getloadavg()[0],
        "commit": (commit or "unknown") + (" + uncommitted changes in src/" if dirty else ""),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark of the sync Worker (make bench)")
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    parser.add_argument("--pyodide", action="store_true", help="with --quick: run Pyodide too")
    parser.add_argument(
        "--out", type=Path, help="where to write (default bench/, quick: bench/.work/quick)"
    )
    parser.add_argument(
        "--only",
        choices=["issue8"],
        help="run one section only and write just results.json (no RESULTS.md)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="redraw RESULTS.md and the plot from results.json",
    )
    args = parser.parse_args()
    if args.report_only:
        out = args.out or ROOT / "bench"
        report.write(json.loads((out / "results.json").read_text()), out)
        return 0
    cfg = Config.quick() if args.quick else Config()
    if args.pyodide:
        cfg.pyodide = True
    out = args.out or (harness.WORK / "quick" if args.quick else ROOT / "bench")
    with contextlib.suppress(ImportError):  # loaded now: the plot is drawn at the very end
        import matplotlib.pyplot  # noqa: F401
    out.mkdir(parents=True, exist_ok=True)
    log = Clock()
    started = datetime.now(UTC)
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "config": asdict(cfg),
        **machine(),
    }
    mode = "quick " if args.quick else ""
    log(f"bench {mode}on {meta['cores']} cores, load average {meta['load_before']:.2f}")
    results = measure_issue8(cfg, log) if args.only else measure(cfg, log)
    meta["postgres"] = results.pop("meta_postgres")
    meta["duration_s"] = round(time.perf_counter() - log.started, 1)
    meta["load_after"] = os.getloadavg()[0]
    results["meta"] = meta
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    if args.only:
        log(f"wrote {out / 'results.json'} (section {args.only} only)")
        return 0
    report.write(results, out)
    if "sharing" in results:  # its own section, drawn by bench/sharing.py
        path = out / "RESULTS.md"
        path.write_text(sharing.splice(path.read_text(), sharing.section(results["sharing"])))
    log(f"wrote {out / 'RESULTS.md'}, {out / 'results.png'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
