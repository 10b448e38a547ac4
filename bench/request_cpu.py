"""CPU of whole `App.handle` requests, under CPython and under Pyodide (the Workers runtime's
Python), with the database's answers replayed.

Pyodide under Node cannot reach Postgres, so the requests are first run under CPython against
a real Postgres, every `conn.run(sql, **params)` and its rows recorded, one transcript per
connection; then the same requests (same bodies, same tokens) run again with a connection
that checks each statement against its transcript and answers its recorded rows. What is
timed is then the Worker's own work: routing, the token (pure Python or WebCrypto),
parsing and checking the batch, building the statements and the answer.

Recording happens at run time, never from committed fixtures: the statements follow the
current code. Tokens are ES256/RS256, signed with real keys made here with `cryptography`,
their JWKS served through the App's `fetch_json` hook.

Cases (CPU ms per request, the median of REPEAT, min and wall time beside; under Pyodide
Node's process CPU with V8 single-threaded, so no background compiler or GC thread counts):
- cold_first: the process's first request (a new App: first token, JWKS fetch and parse,
  the registry read from the catalog), a 100-change push;
- cold_app: the same on a new App each time, in an interpreter that has run requests before;
- push100_new_token: a 100-change push with a never-seen ES256 token of a known key;
- push100_new_rs256_token: the same with RS256;
- push100_same_token: a 100-change push with a token already verified;
- push1000: a 1 000-change push, token already verified;
- pull_page: a pull of one full page (PULL_PAGE_SIZE rows).

Beside each case: body_json_loads_ms, json.loads of the request's body alone, the part no
Python parse of the batch avoids. The login (SCRAM) does not happen with a replayed
connection; bench/scram_probe.py measures it beside (its result comes along as
"scram_pyodide").

    .venv/bin/python bench/request_cpu.py [--out FILE]    # or: make bench-cpu
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 7
SUPABASE_URL = "https://bench-project.supabase.co"
FIXTURE_ENV = "SYNC_REQUEST_FIXTURE"


# -- values that cross from CPython to Pyodide as JSON --------------------------------------


def to_json_safe(value: Any) -> Any:
    """Rows as pg8000 returned them, as JSON. Anything beyond JSON's own types is tagged, so
    the replay hands the code the same types; an unknown type stops the run."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[k, to_json_safe(v)] for k, v in value.items()]}
    import datetime
    import decimal

    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    raise TypeError(f"cannot record a {type(value).__name__} from the database")


def from_json_safe(value: Any) -> Any:
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    if isinstance(value, dict):
        ((tag, inner),) = value.items()
        if tag == "$dict":
            return {k: from_json_safe(v) for k, v in inner}
        import datetime
        import decimal

        kinds: dict[str, Callable[[str], Any]] = {
            "$datetime": datetime.datetime.fromisoformat,
            "$date": datetime.date.fromisoformat,
            "$decimal": decimal.Decimal,
            "$uuid": uuid.UUID,
        }
        return kinds[tag](inner)
    return value


# -- connections: recording (CPython, real Postgres) and replaying (anywhere) ----------------


class Recording:
    """Wraps real connections; keeps one transcript per connection, in the order opened."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self.transcripts: list[list[dict[str, Any]]] = []

    def connect(self) -> Any:
        transcript: list[dict[str, Any]] = []
        self.transcripts.append(transcript)
        return _RecordingConnection(self._connect(), transcript)


class _RecordingConnection:
    def __init__(self, conn: Any, transcript: list[dict[str, Any]]) -> None:
        self.conn = conn
        self.transcript = transcript

    def run(self, sql: str, **params: Any) -> Any:
        rows = self.conn.run(sql, **params)
        self.transcript.append(
            {"sql": sql, "params": sorted(params), "rows": to_json_safe(rows or [])}
        )
        return rows

    def close(self) -> None:
        self.conn.close()


class Replay:
    """Hands out the recorded connections in order; each checks every statement it is sent
    against its transcript, so a replay that strays from the recording fails loudly."""

    def __init__(self, transcripts: list[list[dict[str, Any]]]) -> None:
        self.transcripts = [
            [(s["sql"], s["params"], from_json_safe(s["rows"])) for s in t] for t in transcripts
        ]
        self.next = 0

    def connect(self) -> _ReplayConnection:
        if self.next >= len(self.transcripts):
            raise RuntimeError("replay: more connections than recorded")
        transcript = self.transcripts[self.next]
        self.next += 1
        return _ReplayConnection(transcript)


class _ReplayConnection:
    def __init__(self, transcript: list[tuple[str, list[str], Any]]) -> None:
        self.transcript = transcript
        self.at = 0

    def run(self, sql: str, **params: Any) -> Any:
        if self.at >= len(self.transcript):
            raise RuntimeError(f"replay: statement beyond the recording: {sql[:80]}")
        expected, names, rows = self.transcript[self.at]
        self.at += 1
        if sql != expected or sorted(params) != names:
            raise RuntimeError(f"replay: sent {sql[:80]!r}, recorded {expected[:80]!r}")
        return rows

    def close(self) -> None:
        if self.at != len(self.transcript):
            raise RuntimeError("replay: connection closed before its recorded statements ran")


# -- the requests (made under CPython: keys, tokens, bodies) ---------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Signer:
    """Real keys and the tokens they sign (CPython with `cryptography` only)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        ec_numbers = self.ec.public_key().public_numbers()
        rsa_numbers = self.rsa.public_key().public_numbers()
        keys = [
            {
                "kty": "EC",
                "crv": "P-256",
                "kid": "bench-es256",
                "alg": "ES256",
                "use": "sig",
                "x": _b64url(ec_numbers.x.to_bytes(32, "big")),
                "y": _b64url(ec_numbers.y.to_bytes(32, "big")),
            },
            {
                "kty": "RSA",
                "kid": "bench-rs256",
                "alg": "RS256",
                "use": "sig",
                "n": _b64url(rsa_numbers.n.to_bytes(256, "big")),
                "e": _b64url(rsa_numbers.e.to_bytes(3, "big")),
            },
        ]
        return json.dumps({"keys": keys})

    def token(self, user: str, alg: str = "ES256") -> str:
        import jwt

        now = int(time.time())
        claims = {
            "sub": user,
            "aud": "authenticated",
            "role": "authenticated",
            "iss": SUPABASE_URL + "/auth/v1",
            "iat": now,
            "exp": now + 3600,
            "session_id": str(uuid.uuid4()),  # every token is a new one
            "aal": "aal1",
            "is_anonymous": False,
            "email": "bench@example.test",
        }
        key, kid = (self.ec, "bench-es256") if alg == "ES256" else (self.rsa, "bench-rs256")
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def settings_env() -> dict[str, str]:
    return {"SUPABASE_URL": SUPABASE_URL}


def _quiet(line: dict[str, Any]) -> None:
    """The App's log line, shown only when a request fails (the why of a 500)."""
    if line.get("status", 200) >= 500 or os.environ.get("BENCH_CPU_LOG"):
        print(json.dumps(line), file=sys.stderr)


def make_app(settings: Any, connect: Callable[[], Any], jwks: str) -> Any:
    from sync.app import App

    async def fetch_json(url: str) -> str:
        return jwks

    return App(settings, connect, fetch_json, log=_quiet)


def record(url: str, repeat: int = REPEAT) -> dict[str, Any]:
    """Runs every case against the database at `url`; the requests and transcripts.

    Each case has a user (and cursor) of its own, so no case pulls another's rows. After
    the cold first request, one unmeasured round warms every path up; then the measured
    rounds take the cases in turn, so a drift of the machine's load spreads over all."""
    sys.path.insert(0, str(ROOT / "bench"))
    from data import Rows, changes

    from sync.http import Request
    from sync.migrate import connect_url
    from sync.settings import Settings

    settings = Settings.from_env(settings_env())
    signer = Signer()
    jwks = signer.jwks()
    recording = Recording(lambda: connect_url(url))
    rows = Rows(8)
    requests: list[dict[str, Any]] = []
    apps: list[Any] = []
    cursors: dict[str, str | None] = {}
    users: dict[str, str] = {}
    next_id = [1]

    def send(
        case: str, n: int, token: str, app: int, measured: bool = True, pull: bool = False
    ) -> None:
        if app == len(apps):
            apps.append(make_app(settings, recording.connect, jwks))
        batch = changes(rows.todos(n), first_id=next_id[0])
        next_id[0] += n
        body = json.dumps(
            {"lastSyncAt": None if pull else cursors.get(case), "changes": batch}
        ).encode()
        headers = {
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "content-length": str(len(body)),
        }
        response = asyncio.run(apps[app].handle(Request("POST", "/api/sync", headers, body)))
        answer = json.loads(response.body)
        if response.status != 200 or answer["rejected"] or len(answer["acceptedIds"]) != n:
            raise RuntimeError(f"{case}: the recorded request failed: {response.body[:300]!r}")
        if pull and not answer["hasMore"]:
            raise RuntimeError("pull_page: the pull did not fill a page")
        if not pull:
            cursors[case] = answer["newServerTimestamp"]
        requests.append(
            {
                "case": case if measured else "warm_up",
                "app": app,
                "n": len(answer["pulledChanges"]) if pull else n,
                "headers": headers,
                "body": body.decode(),
                "status": response.status,
                "answer_bytes": len(response.body),
            }
        )

    def user(case: str) -> str:
        return users.setdefault(case, rows.uuid())

    send("cold_first", 100, signer.token(user("cold_first")), app=0)
    known = {case: signer.token(user(case)) for case in ("push100_same_token", "push1000")}
    known["pull_page"] = signer.token(user("pull_page"))
    send("pull_page", 1200, known["pull_page"], app=0, measured=False)  # more than a page
    for measured in [False] + [True] * repeat:
        send("push100_new_token", 100, signer.token(user("push100_new_token")), 0, measured)
        rs256 = signer.token(user("push100_new_rs256_token"), "RS256")
        send("push100_new_rs256_token", 100, rs256, 0, measured)
        send("push100_same_token", 100, known["push100_same_token"], 0, measured)
        send("push1000", 1000, known["push1000"], 0, measured)
        send("pull_page", 0, known["pull_page"], 0, measured, pull=True)
        # A new App: a new isolate's first request (JWKS, registry), in a warm interpreter.
        send("cold_app", 100, signer.token(user("cold_app")), len(apps), measured)
    return {
        "settings": settings_env(),
        "jwks": jwks,
        "requests": requests,
        "transcripts": recording.transcripts,
    }


# -- the replay (CPython or Pyodide) ---------------------------------------------------------


def cpu_clock() -> Callable[[], float]:
    """Seconds of CPU. Under Pyodide the interpreter's clocks are wall time, so Node's own
    count is read: the whole process, every thread (WebCrypto runs on libuv's pool, as the
    Workers runtime bills its crypto to the request too)."""
    if sys.platform != "emscripten":
        return time.process_time
    from js import process  # only ever reached under Pyodide

    def node_cpu() -> float:
        usage = process.cpuUsage()
        return (usage.user + usage.system) / 1e6

    return node_cpu


async def replay(fixture: dict[str, Any]) -> dict[str, Any]:
    """Runs the recorded requests again against their transcripts; ms per case."""
    from sync.http import Request
    from sync.settings import Settings

    settings = Settings.from_env(fixture["settings"])
    source = Replay(fixture["transcripts"])
    apps: dict[int, Any] = {}
    times: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    cpu = cpu_clock()
    # On Workers the deploy snapshot holds the imported modules: a cold isolate does not
    # import them again, so their import is timed apart (once, when not yet done).
    if "sync.app" not in sys.modules:
        started = time.perf_counter()
        import sync.app  # noqa: F401

        times["import_sync_app"] = walls["import_sync_app"] = [
            (time.perf_counter() - started) * 1000
        ]
    sizes: dict[str, int] = {}
    parses: dict[str, list[float]] = {}
    for spec in fixture["requests"]:
        request = Request("POST", "/api/sync", spec["headers"], spec["body"].encode())
        started, cpu_started = time.perf_counter(), cpu()
        app = apps.get(spec["app"])
        if app is None:  # a new isolate's App is part of its first request
            app = apps[spec["app"]] = make_app(settings, source.connect, fixture["jwks"])
        response = await app.handle(request)
        elapsed = (cpu() - cpu_started) * 1000
        walls.setdefault(spec["case"], []).append((time.perf_counter() - started) * 1000)
        if response.status != spec["status"] or len(response.body) != spec["answer_bytes"]:
            raise RuntimeError(f"{spec['case']}: the replay answered {response.body[:300]!r}")
        times.setdefault(spec["case"], []).append(elapsed)
        sizes[spec["case"]] = spec["n"]
        # The floor under the request: json.loads of its body alone, which any Python
        # parse of the batch pays (timed after the request, not within it).
        parse_started = cpu()
        json.loads(request.body)
        parses.setdefault(spec["case"], []).append((cpu() - parse_started) * 1000)
    sizes["import_sync_app"] = 0
    parses["import_sync_app"] = [0.0]
    if source.next != len(source.transcripts):
        raise RuntimeError("replay: fewer connections than recorded")
    times.pop("warm_up", None)
    walls.pop("warm_up", None)
    # The figure is CPU time, on both: under Pyodide Node's, which run_pyodide starts with
    # V8 single-threaded, so that it counts the isolate's own work (and WebCrypto's on
    # libuv's pool) but no background compiler or GC threads; wall time, beside, also
    # counts the time another process held the core.
    figure = times
    return {
        case: {
            "ms": round(statistics.median(figure[case]), 2),
            "min_ms": round(min(figure[case]), 2),
            "wall_ms": round(statistics.median(walls[case]), 2),
            "body_json_loads_ms": round(statistics.median(parses[case]), 2),
            "samples": len(samples),
            "n": sizes[case],
        }
        for case, samples in times.items()
    }


def replay_from_env() -> dict[str, Any] | None:
    """Under Pyodide: the fixture the CPython side wrote, if it passed one."""
    path = os.environ.get(FIXTURE_ENV)
    if not path:
        return None
    return json.loads(Path(path).read_text())


def runtime() -> str:
    version = sys.version.split()[0]
    if sys.platform == "emscripten":
        import pyodide  # only ever reached under Pyodide

        return f"pyodide {pyodide.__version__} (python {version}, node)"
    return f"cpython {version}"


# -- the whole measurement (CPython side) ----------------------------------------------------


def _database() -> tuple[str, Callable[[], None]]:
    """DATABASE_URL (migrated here), or a throwaway cluster of our own."""
    from sync.migrate import migrate

    given = os.environ.get("DATABASE_URL")
    if given:
        migrate(given, say=lambda _line: None)
        return given, lambda: None
    sys.path.insert(0, str(ROOT))
    from devtools.pgcluster import Cluster

    cluster = Cluster(Path(tempfile.mkdtemp(prefix="bench-cpu-")) / "cluster", fast=True)
    cluster.start()
    try:
        url = cluster.create_database("bench_cpu")
        migrate(url, say=lambda _line: None)
    except BaseException:
        cluster.destroy()
        raise
    return url, cluster.destroy


def run_pyodide(fixture_path: Path) -> dict[str, Any]:
    """bench/pyodide_probe.py under Pyodide with the fixture; its JSON, or why not."""
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "pyodide").exists():
        return {"skipped": "needs node and node_modules/pyodide (npm ci)"}
    done = subprocess.run(
        [
            node,
            "--single-threaded",  # V8's work on the main thread only: its CPU is the isolate's
            str(ROOT / "bench" / "pyodide_run.mjs"),
            str(ROOT / "bench" / "pyodide_probe.py"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, FIXTURE_ENV: str(fixture_path)},
    )
    if done.returncode != 0:
        return {"skipped": f"Pyodide run failed: {done.stderr[-600:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(url: str | None = None) -> dict[str, Any]:
    """Records against `url` (or a database of its own), replays under CPython and under
    Pyodide: {"request_cpu": {"cpython": {...}, "pyodide": {...}}, "scram": {...}}."""
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if url is None:
        url, cleanup = _database()
    try:
        fixture = record(url)
    finally:
        cleanup()
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as work:
        path = Path(work) / "requests.json"
        path.write_text(json.dumps(fixture))
        cpython = asyncio.run(replay(fixture))
        under_pyodide = run_pyodide(path)
    result: dict[str, Any] = {
        "request_cpu": {
            "about": "CPU ms of one App.handle request (median of its samples; min and wall "
            "beside; under Pyodide Node's process CPU with V8 single-threaded), the database "
            "answers replayed: the Worker's own work, without the login",
            "cpython": {"runtime": runtime(), "cases": cpython},
        }
    }
    if "result" in under_pyodide:
        probe = under_pyodide["result"]
        result["request_cpu"]["pyodide"] = probe["request_cpu"]
        result["scram_pyodide"] = probe.get("scram")
    else:
        result["request_cpu"]["pyodide"] = under_pyodide
    return result


def main() -> int:
    out = None
    if "--out" in sys.argv:
        out = Path(sys.argv[sys.argv.index("--out") + 1])
    result = measure()
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
