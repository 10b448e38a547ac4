"""What the scenarios stand on: a real Postgres, the server process, HTTP clients, tokens."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import wire
from devtools.pgcluster import Cluster
from devtools.token import make_token
from sync.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
SECRET = "bench-secret-" + secrets.token_hex(16)


def say(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def postgres(durable: bool) -> Iterator[tuple[Cluster, str]]:
    """A throwaway cluster under bench/.work/, migrated; yields it and the app's URL.
    `durable`: Postgres' defaults (fsync, synchronous_commit on), as a hosted database runs."""
    cluster = Cluster(WORK / f"pg-{os.getpid()}", fast=not durable)
    cluster.destroy()
    cluster.start()
    try:
        url = cluster.create_database("bench")
        migrate(url, say=lambda _line: None)
        yield cluster, url
    finally:
        cluster.destroy()


def token(user: str) -> str:
    return make_token(SECRET, user, expires_in=6 * 3600)


class Server:
    """bench/server.py in a subprocess; collects its log records by request id."""

    def __init__(self, url: str, rtt_ms: float, pool: bool, **settings: str) -> None:
        env = {
            **os.environ,
            "BENCH_DATABASE_URL": url,
            "BENCH_SECRET": SECRET,
            "BENCH_RTT_MS": str(rtt_ms),
            "BENCH_POOL": "1" if pool else "0",
            **settings,
        }
        self.rtt_ms = rtt_ms
        self.pool = pool
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "server.py")],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        first = self.proc.stdout.readline().split()
        if len(first) != 2 or first[0] != "ready":
            self.stop()
            raise RuntimeError(f"bench server did not start: {first}")
        self.port = int(first[1])
        self._records: dict[str, dict] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                self._records[record["request_id"]] = record

    def record(self, request_id: str, timeout: float = 10.0) -> dict:
        """The server's log record of one request (it is written just before the answer)."""
        deadline = time.monotonic() + timeout
        while request_id not in self._records:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log record for {request_id}")
            time.sleep(0.001)
        return self._records.pop(request_id)

    def records(self, request_ids: list[str]) -> list[dict]:
        return [self.record(r) for r in request_ids]

    def forget(self) -> None:
        self._records.clear()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # the server's watchdog shuts it down
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Answer:
    status: int
    body: Any
    ms: float  # from sending the request to the last byte of the answer
    request_id: str


class Client:
    """One device: a keep-alive HTTP connection to 127.0.0.1 and a user's token."""

    _ids = iter(range(1, 10**12))
    _ids_lock = threading.Lock()

    def __init__(self, port: int, user: str) -> None:
        self.port = port
        self.user = user
        self.auth = f"Bearer {token(user)}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def post(self, body: bytes) -> Answer:
        with self._ids_lock:
            request_id = f"b{next(self._ids)}"
        headers = {
            "content-type": "application/json",
            "authorization": self.auth,
            "cf-ray": request_id,
        }
        started = time.perf_counter()
        try:
            self.conn.request("POST", "/api/sync", body, headers)
            answer = self.conn.getresponse()
            raw = answer.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # a broken keep-alive connection: one retry on a new one
            started = time.perf_counter()
            self.conn.request("POST", "/api/sync", body, headers)
            answer = self.conn.getresponse()
            raw = answer.read()
        ms = (time.perf_counter() - started) * 1000
        return Answer(answer.status, json.loads(raw) if raw else None, ms, request_id)

    def sync(self, changes: list[dict], cursor: str | None) -> Answer:
        return self.post(encode(changes, cursor))

    def close(self) -> None:
        self.conn.close()


def encode(changes: list[dict], cursor: str | None) -> bytes:
    return json.dumps({"lastSyncAt": cursor, "changes": changes}, separators=(",", ":")).encode()


def direct(url: str, rtt_ms: float = 0.0, nodelay: bool = True) -> wire.Wired:
    """A connection for the bench's own reference implementations, with the same knob."""
    return wire.Wired(wire.open_connection(url, nodelay=nodelay), rtt_ms / 1000)


def admin(url: str):
    """A plain connection for set-up and checks (never timed)."""
    return wire.open_connection(url)
