"""`make bench-workerd`: the Worker in real workerd, measured against the local host.

    .venv/bin/python -m workerd.bench [--quick]

Writes the "workerd" section of bench/RESULTS.md (between its markers, leaving the rest
as bench/run.py wrote it) and bench/workerd-results.json. Measured, side by side in one
run against one throwaway Postgres (SCRAM login, fsync on):
- cold start: spawn to "listening" (workerd's control descriptor), without a snapshot
  and loading one; the start that saves the snapshot apart;
- first login: the first request of a fresh isolate (SCRAM's PBKDF2 in pure Python under
  Pyodide, then cached per isolate) against the steady state;
- per-request wall time of a small sync, one client, in workerd and in `src/serve.py`;
- the isolate guard: syncs/s at 1, 8 and 64 concurrent clients with entry.py's guard,
  with none, and with an `asyncio.Lock` (workerd/bench_entry.py picks it), and what
  failed (non-200 answers, the isolate crashing).
Clocks inside the Worker advance only on I/O, so every time here is the client's.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from devtools.pgcluster import Cluster, free_port
from devtools.token import make_token
from workerd.config import ROOT, wrangler_toml
from workerd.runner import Workerd

sys.path.insert(0, str(ROOT / "src"))
from sync.migrate import connect_url, migrate

SECRET = "bench-secret-" + uuid.uuid4().hex
RESULTS = ROOT / "bench" / "RESULTS.md"
JSON_OUT = ROOT / "bench" / "workerd-results.json"
BEGIN, END = "<!-- workerd:begin -->", "<!-- workerd:end -->"
BENCH_MAIN = ROOT / "workerd" / "bench_entry.py"


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


class Client:
    """One keep-alive HTTP connection, as a device's browser would hold."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def request(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple:
        try:
            self.conn.request(method, path, body=body, headers=headers)
            answer = self.conn.getresponse()
            return answer.status, answer.read()
        except (OSError, http.client.HTTPException) as error:
            self.conn.close()
            return 0, repr(error).encode()

    def close(self) -> None:
        self.conn.close()


def sync_body(user: str, n: int) -> bytes:
    """A device's batch: edits of the same `n` rows of its user, newer each time, so the
    user's row count (and with it every pull) stays the same all run long."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    changes = [
        {
            "id": i,
            "table": "todos",
            "op": "insert",
            "row": {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{user}/{i}")),
                "title": f"bench {i} at {now}",
                "updated_at": now,
            },
        }
        for i in range(n)
    ]
    return json.dumps({"lastSyncAt": None, "changes": changes}).encode()


def timed_syncs(
    base: str, tokens: list[str], count: int, changes: int, first: int = 0
) -> list[tuple]:
    """`count` syncs on one connection, by users in turn from `tokens[first]`;
    (seconds, status) each."""
    client = Client(base)
    out = []
    try:
        for i in range(count):
            token = tokens[(first + i) % len(tokens)]
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
            body = sync_body(token, changes)
            began = time.perf_counter()
            status, _ = client.request("POST", "/api/sync", body, headers)
            out.append((time.perf_counter() - began, status))
    finally:
        client.close()
    return out


def throughput(base: str, tokens: list[str], clients: int, per_client: int) -> dict:
    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        # Each client is a device of a user of its own: no per-user limit is in play.
        runs = list(
            pool.map(lambda c: timed_syncs(base, [tokens[c]], per_client, 5), range(clients))
        )
    wall = time.perf_counter() - began
    answers = [status for run in runs for _, status in run]
    ok = sum(1 for s in answers if s == 200)
    return {
        "clients": clients,
        "requests": len(answers),
        "ok": ok,
        "failed": len(answers) - ok,
        "statuses": sorted({str(s) for s in answers}),
        "wall_s": round(wall, 2),
        "syncs_per_s": round(ok / wall, 1),
    }


class DelayRelay:
    """TCP between the Worker and Postgres with `delay` seconds added to every answer
    from Postgres: a database one round trip of `delay` away (Hyperdrive from a distant
    location costs 20-30 ms a query, placed near the database 1-3 ms)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target, self.delay = ("127.0.0.1", target_port), delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            for s in (client, upstream):  # no Nagle delay: each message leaves at once
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for a, b, d in ((client, upstream, 0.0), (upstream, client, self.delay)):
                threading.Thread(target=self._pump, args=(a, b, d), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def ms(values: list[float]) -> dict:
    values = sorted(values)
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "p90_ms": round(values[int(len(values) * 0.9) - 1] * 1000, 1),
        "n": len(values),
    }


def first_requests(base: str, token: str) -> dict:
    """The first request of a fresh isolate logs in for the first time (SCRAM)."""
    client = Client(base)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    times = []
    try:
        for _ in range(6):
            began = time.perf_counter()
            status, body = client.request("GET", "/api/health", None, headers)
            times.append(time.perf_counter() - began)
            assert status == 200, body
    finally:
        client.close()
    return {
        "first_ms": round(times[0] * 1000, 1),
        "steady_ms": round(statistics.median(times[2:]) * 1000, 1),
    }


def crashed(worker: Workerd) -> str:
    text = worker.log_tail(200_000)
    for sign in ("memory access out of bounds", "abortIsolate", "had hung", "Fatal"):
        if sign in text:
            return sign
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~1 min)")
    args = parser.parse_args()
    reps = 1 if args.quick else 3
    per_request = 20 if args.quick else 100
    started = time.monotonic()
    results: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
    results["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    results["load_before"] = os.getloadavg()[0]
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    results["src_dirty"] = bool(dirty)
    with tempfile.TemporaryDirectory(prefix="bench-workerd-") as tmp:
        cluster = Cluster(Path(tmp) / "pg")  # fsync on, as the main bench
        cluster.start()
        try:
            database_url = cluster.url()
            migrate(database_url, say=lambda _l: None)
            results.update(run(database_url, reps, per_request, args.quick))
        finally:
            cluster.destroy()
    results["load_after"] = os.getloadavg()[0]
    results["took_s"] = round(time.monotonic() - started, 1)
    JSON_OUT.write_text(json.dumps(results, indent=1) + "\n")
    write_section(results)
    log(f"wrote the workerd section of {RESULTS} and {JSON_OUT}")
    return 0


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def body_memory(database_url: str, token: str, megabytes: float, chunked: bool) -> dict:
    """What one body costs the workerd process (RSS, a fresh isolate each time)."""
    with Workerd(database_url, secrets={"SUPABASE_JWT_SECRET": SECRET}) as worker:
        timed_syncs(worker.url, [token], 2, 1)
        before = rss(worker.proc.pid)
        body = b'{"lastSyncAt": null, "changes": []' + b" " * int(megabytes * 1e6) + b"}"
        head = (
            "POST /api/sync HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        ).encode()
        if chunked:
            data = head + b"Transfer-Encoding: chunked\r\n\r\n"
            data += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        else:
            data = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        host, port = worker.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as s:

            def send() -> None:
                with contextlib.suppress(OSError):  # the Worker may stop reading
                    s.sendall(data)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            status = s.recv(200).decode(errors="replace").split("\r\n")[0]
            time.sleep(0.5)  # what the isolate still does with it after answering
            grew = rss(worker.proc.pid) - before
            sender.join(timeout=30)
    return {
        "megabytes": megabytes,
        "chunked": chunked,
        "status": status.removeprefix("HTTP/1.1 "),
        "grew_mb": round(grew / 1e6, 1),
    }


@contextlib.contextmanager
def local_host(database_url: str) -> Iterator[str]:
    """`src/serve.py` in a process of its own, as `make dev` runs it."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SUPABASE_JWT_SECRET": SECRET,
        "PORT": str(port),
    }
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "serve.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        while not serve.stdout.readline().startswith("ready:"):
            if serve.poll() is not None:
                raise RuntimeError("src/serve.py did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.terminate()
        serve.wait(timeout=10)


def run(database_url: str, reps: int, per_request: int, quick: bool) -> dict:
    users = [str(uuid.uuid4()) for _ in range(64)]
    tokens = [make_token(SECRET, u) for u in users]
    con = connect_url(database_url)
    try:  # something to pull: 50 rows per user (a sync pulls all its user's rows)
        for user in users:
            con.run(
                "INSERT INTO todos (id, user_id, title, updated_at) SELECT gen_random_uuid(), "
                "CAST(:u AS uuid), 'seed ' || g, now() FROM generate_series(1, 50) g",
                u=user,
            )
    finally:
        con.close()
    secrets = {"SUPABASE_JWT_SECRET": SECRET}
    out: dict = {}

    log("cold starts without a snapshot")
    cold, first = [], []
    for _ in range(reps):
        with Workerd(database_url, secrets=secrets, snapshot=False) as worker:
            cold.append(worker.started_in)
            first.append(first_requests(worker.url, tokens[0]))
    log("cold starts with a snapshot")
    for path in (ROOT / ".workerd" / "snapshots").glob("*/snapshot.bin"):
        path.unlink()  # the start that saves one is measured too
    with Workerd(database_url, secrets=secrets) as worker:
        saving = worker.saved_in
    loaded, first_loaded = [], []
    for _ in range(reps):
        with Workerd(database_url, secrets=secrets) as worker:
            assert worker.snapshot_mode == "loaded"
            loaded.append(worker.started_in)
            first_loaded.append(first_requests(worker.url, tokens[0]))
    out["start"] = {
        "no_snapshot_s": round(statistics.median(cold), 2),
        "saving_snapshot_s": round(saving, 2),
        "loaded_snapshot_s": round(statistics.median(loaded), 2),
        "first_request_no_snapshot": first[len(first) // 2],
        "first_request_loaded_snapshot": first_loaded[len(first_loaded) // 2],
    }

    log("per-request wall time: workerd and the local host, interleaved")
    with local_host(database_url) as local, Workerd(database_url, secrets=secrets) as worker:
        timed_syncs(worker.url, tokens, 10, 1)  # warm both (logins cached, code hot)
        timed_syncs(local, tokens, 10, 1)
        wd, lh = [], []
        for _ in range(4):
            wd += [t for t, s in timed_syncs(worker.url, tokens, per_request // 4, 1)]
            lh += [t for t, s in timed_syncs(local, tokens, per_request // 4, 1)]
        out["per_request"] = {"workerd": ms(wd), "local_host": ms(lh)}

    log("the isolate guard: throughput per isolate")
    choices = ("own", "none", "asyncio_lock")
    guards: dict[str, list] = {choice: [] for choice in choices}
    levels = (1, 8, 64)
    per_client = {1: 20 if quick else 60, 8: 6 if quick else 12, 64: 2 if quick else 3}
    for clients in levels:
        for choice in choices:  # interleaved: the machine's load drifts
            with Workerd(
                database_url,
                settings={"BENCH_GUARD": choice},
                secrets=secrets,
                main=BENCH_MAIN,
            ) as worker:
                timed_syncs(worker.url, tokens, 3, 1)  # the first login, not measured
                row = throughput(worker.url, tokens, clients, per_client[clients])
                row["crash"] = crashed(worker)
                row["alive"] = worker.alive()
            log(f"guard={choice} clients={clients}: {row}")
            guards[choice].append(row)
    out["guard"] = guards

    log("the guard under database latency: workerd (guarded) and the local host (threads)")
    port = urlsplit(database_url).port
    latency = []
    for delay_ms in (0, 5):
        relay = DelayRelay(port, delay_ms / 1000)
        relayed = database_url.replace(f":{port}/", f":{relay.port}/")
        try:
            for clients in (1, 8):
                with Workerd(relayed, secrets=secrets) as worker:
                    timed_syncs(worker.url, tokens, 3, 1)
                    row = throughput(worker.url, tokens, clients, per_client[clients])
                row.update(host="workerd", rtt_ms=delay_ms, crash=crashed(worker))
                latency.append(row)
                with local_host(relayed) as local:
                    timed_syncs(local, tokens, 3, 1)
                    row = throughput(local, tokens, clients, per_client[clients])
                row.update(host="local host", rtt_ms=delay_ms, crash="")
                latency.append(row)
                log(f"rtt={delay_ms} ms clients={clients}: {latency[-2:]}")
        finally:
            relay.close()
    out["latency"] = latency

    log("memory: what a body costs the workerd process")
    out["memory"] = [
        body_memory(database_url, tokens[0], mb, chunked)
        for mb, chunked in ((7.5, False), (7.5, True), (60, False), (60, True))
    ]
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    return out


def write_section(results: dict) -> None:
    start, per, guard = results["start"], results["per_request"], results["guard"]
    dirty = " (with uncommitted changes in src/)" if results.get("src_dirty") else ""
    lines = [
        BEGIN,
        "## workerd: the Worker in the real Workers runtime",
        "",
        f"Written by `make bench-workerd` (`workerd/bench.py`) on {results['when']} at "
        f"commit {results['commit']}"
        f"{dirty}; took {results['took_s']} s; load average "
        f"{results['load_before']:.1f} before, {results['load_after']:.1f} after "
        f"({results['machine']}). workerd from npm (wrangler's), Pyodide 314.0.6, the "
        "unchanged `src/entry.py` with wrangler.toml's date and flags plus "
        "`python_workers_development`, Hyperdrive binding straight to a local Postgres "
        "(SCRAM, fsync on), HTTP on loopback. Times are the client's: clocks inside a "
        "Worker advance only on I/O.",
        "",
        "| start-up (spawn to listening) | median |",
        "|---|---|",
        f"| no snapshot | {start['no_snapshot_s']} s |",
        f"| loading a snapshot (`--python-load-snapshot`) | {start['loaded_snapshot_s']} s |",
        f"| the start that saves it (`--python-save-snapshot`) | {start['saving_snapshot_s']} s |",
        "",
        "| first request of a fresh isolate (`GET /api/health`) | first | steady |",
        "|---|---|---|",
    ]
    for label, key in (
        ("no snapshot", "first_request_no_snapshot"),
        ("snapshot loaded", "first_request_loaded_snapshot"),
    ):
        lines.append(f"| {label} | {start[key]['first_ms']} ms | {start[key]['steady_ms']} ms |")
    lines += [
        "",
        "The first request logs in for the first time: SCRAM's PBKDF2 (4096 iterations) in "
        "pure Python, then cached per isolate; every later request still logs in (one "
        "connection per request) but reuses the derived key.",
        "",
        "| small sync (1 change + pull), one client, keep-alive | median | p90 | n |",
        "|---|---|---|---|",
        f"| workerd | {per['workerd']['median_ms']} ms | {per['workerd']['p90_ms']} ms | "
        f"{per['workerd']['n']} |",
        f"| local host (`src/serve.py`) | {per['local_host']['median_ms']} ms | "
        f"{per['local_host']['p90_ms']} ms | {per['local_host']['n']} |",
        "",
        "Isolate guard: syncs/s of one isolate, each client a device of a user of its own "
        "(a 5-change push + a pull of the user's 55 rows), "
        "with entry.py's guard (one request's database work at a time, waiters polling on "
        "their own timers), with none, and with an `asyncio.Lock`:",
        "",
        "| guard | clients | syncs/s | ok / requests | other answers | isolate |",
        "|---|---|---|---|---|---|",
    ]
    names = {"own": "entry.py's", "none": "none", "asyncio_lock": "asyncio.Lock"}
    for choice, rows in guard.items():
        for row in rows:
            others = ", ".join(s for s in row["statuses"] if s != "200") or "—"
            state = row["crash"] or ("alive" if row["alive"] else "exited")
            lines.append(
                f"| {names[choice]} | {row['clients']} | {row['syncs_per_s']} | "
                f"{row['ok']} / {row['requests']} | {others} | {state} |"
            )
    lines += [
        "",
        "(status 0: the connection was dropped without an answer.)",
        "",
        "The guard under database latency: a relay adds the round trip to every answer "
        "from Postgres. One isolate does one request's database work at a time, so its "
        "throughput is bounded by one request's round trips; the local host's threads "
        "overlap them.",
        "",
        "| RTT | clients | workerd (guarded), syncs/s | local host, syncs/s |",
        "|---|---|---|---|",
    ]
    rows = results.get("latency", [])
    for wd, lh in zip(rows[::2], rows[1::2], strict=True):
        lines.append(
            f"| {wd['rtt_ms']} ms | {wd['clients']} | {wd['syncs_per_s']} "
            f"({wd['ok']}/{wd['requests']} ok) | {lh['syncs_per_s']} "
            f"({lh['ok']}/{lh['requests']} ok) |"
        )
    lines += [
        "",
        "Memory: what one request body costs the workerd process (RSS growth, a fresh "
        "isolate each, 0.5 s after the answer). MAX_BODY_BYTES is "
        f"{int(wrangler_toml()['vars']['MAX_BODY_BYTES']) / 2**20:g} MiB: a declared "
        "length over it is refused unread, a chunked body is read to one byte past it "
        "(the old whole-body `arrayBuffer()` read is compared in tests/test_workerd.py).",
        "",
        "| body | framing | answer | workerd grew |",
        "|---|---|---|---|",
    ]
    for row in results.get("memory", []):
        framing = "chunked" if row["chunked"] else "Content-Length"
        lines.append(
            f"| {row['megabytes']} MB | {framing} | {row['status']} | {row['grew_mb']} MB |"
        )
    lines += [END]
    section = "\n".join(lines) + "\n"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
