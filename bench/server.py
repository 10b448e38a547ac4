"""The server under test, in a process of its own (as a Worker isolate is): `src/serve.py`'s
local host around `sync.app.App`, with the bench's connection (wire.py) and a log that adds
per-request round trips, login time and CPU time to the App's own record.

    BENCH_DATABASE_URL=… BENCH_SECRET=… BENCH_RTT_MS=1 BENCH_POOL=1 BENCH_NODELAY=1 \
        BENCH_CONNECT=entry python bench/server.py

BENCH_NODELAY=1 sets TCP_NODELAY on the HTTP server's sockets where the host is built on
`socketserver` and does not set it itself (the strict host in src/serve.py sets it always);
BENCH_CONNECT=shipped logs in as src/serve.py does (see wire.py).

Prints `ready <port>`, then one JSON log record per request on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench import wire  # noqa: E402
from serve import serve  # noqa: E402
from sync.app import App  # noqa: E402
from sync.http import Request, Response  # noqa: E402
from sync.pg import tune_driver  # noqa: E402
from sync.settings import SETTING_NAMES, Settings  # noqa: E402

_write_lock = threading.Lock()


class MeasuredApp(App):
    """Starts each request's tally and CPU clock; `log` closes them (same thread)."""

    async def handle(self, request: Request) -> Response:
        wire.reset_tally()
        self._cpu.started = time.thread_time()
        return await super().handle(request)

    _cpu = threading.local()


def log(record: dict) -> None:
    current = wire.tally()
    record["round_trips"] = current.round_trips
    record["wire_statements"] = current.statements  # every attempt's, rolled back ones too
    record["connect_ms"] = round(current.connect_ms, 3)
    record["connect_cpu_ms"] = round(current.connect_cpu_ms, 3)
    record["cpu_ms"] = round((time.thread_time() - MeasuredApp._cpu.started) * 1000, 3)
    line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
    with _write_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def main() -> None:
    env = os.environ
    settings = Settings.from_env(
        {"SUPABASE_JWT_SECRET": env["BENCH_SECRET"]}
        | {k: env[k] for k in SETTING_NAMES if k in env}
    )
    pool = wire.Pool() if env.get("BENCH_POOL") == "1" else None
    connect = wire.connector(
        env["BENCH_DATABASE_URL"],
        float(env.get("BENCH_RTT_MS", "0")),
        pool,
        env.get("BENCH_CONNECT", "entry"),
    )
    tune_driver()  # as both hosts do at start-up
    app = MeasuredApp(settings, connect, log=log)
    server = serve(app, "127.0.0.1", 0, None)
    # BENCH_NODELAY changes nothing now: src/serve.py sets TCP_NODELAY on every connection
    # and writes each answer in one send.
    # Stops by itself: when the bench closes our stdin (or dies), or after a time limit.
    limit = float(env.get("BENCH_SERVER_MAX_S", "1800"))
    threading.Thread(target=_watch, args=(server, limit), daemon=True).start()
    print(f"ready {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if pool is not None:
            pool.close()


def _watch(server, limit: float) -> None:
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(limit)
    server.shutdown()


if __name__ == "__main__":
    main()
