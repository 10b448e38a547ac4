"""The database connection as the bench hands it to the App: counted, and slowed on demand.

The latency knob models **network round trips**, not statements. pg8000 writes a request,
flushes its socket, then blocks reading the answer, so each flush is one round trip. With
the Connection class both hosts use (`sync.pg.connection_class()`: Parse, Describe, Bind,
Execute and one Sync) a statement with parameters is one flush, as a simple query is
(BEGIN, COMMIT); plain pg8000 makes three (a Sync after Parse and after Describe too).
`Stream` wraps the connection's socket file, holds what is written until the flush, counts
the flushes and sleeps the injected delay before sending, so each exchange pays one RTT
before Postgres sees any of it, as it would over a real network, and its transaction stays
open meanwhile.

The login is not slowed: on Workers, Hyperdrive terminates the Worker's connection in the
same location and keeps its connections to the origin database pooled, so only the
queries travel the distance. (The login's own cost is measured apart, see scram_probe.py.)

`Pool` models that pooling: with it, `connect()` hands out an idle logged-in connection
(a warm Postgres backend) and `close()` gives it back, one transaction at a time, as
Hyperdrive's transaction mode does. Without it every request logs in to a new backend, as
the local host (src/serve.py) does today.

Connections are opened as src/entry.py opens them on Workers (`sync.pg.connection_class()`,
`ssl_context=False`), with TCP_NODELAY set, as libpq does and pg8000 does not: without it,
a statement whose message pg8000 writes in more than one segment can wait ~40 ms for a
delayed ACK (Nagle). The "shipped" style opens them exactly as src/serve.py does
(`sync.pg.connect_url`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import pg8000.native


@dataclass
class Tally:
    """What the connections of one request did (one per thread: a request owns a thread)."""

    round_trips: int = 0
    statements: int = 0  # `run` calls, of every attempt (a rolled-back one included)
    connects: int = 0
    connect_ms: float = 0.0
    connect_cpu_ms: float = 0.0


_local = threading.local()


def tally() -> Tally:
    current = getattr(_local, "tally", None)
    if current is None:
        current = _local.tally = Tally()
    return current


def reset_tally() -> Tally:
    _local.tally = Tally()
    return _local.tally


class Stream:
    """pg8000's socket file (`Connection._sock`) with a delay and a count per flush.

    Writes are held here until the flush, and sent after the delay: the socket file's own
    buffer (8 KiB) would pass the bulk of a larger message straight to the socket, and
    Postgres would then work on it while the delay ran, so a large message would seem to
    cost less than a round trip. (tests/test_bench.py checks a 20 KB message pays it.)"""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.live = True
        self.held = bytearray()

    def write(self, data: Any) -> int:
        self.held += data
        return len(data)

    def flush(self) -> None:
        if self.live:
            tally().round_trips += 1
            if self.delay > 0:
                time.sleep(self.delay)
        if self.held:
            data, self.held = bytes(self.held), bytearray()
            self.inner.write(data)
        return self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Wired:
    """A pg8000 native connection behind a `Stream`; what `sync.db.Db` sees (run, close)."""

    def __init__(self, con: Any, delay: float, pool: Pool | None = None) -> None:
        self.con = con
        self.pool = pool
        self.broken = False
        self.stream = Stream(con._sock, delay)  # pg8000 1.31 keeps its socket file here
        con._sock = self.stream

    def run(self, sql: str, **params: Any) -> Any:
        self.stream.live = True
        tally().statements += 1
        try:
            return self.con.run(sql, **params)
        except pg8000.native.DatabaseError:
            raise
        except Exception:
            self.broken = True  # a network or protocol error: never reuse
            raise

    def close(self) -> None:
        self.stream.live = False  # Terminate expects no answer: not a round trip
        if self.pool is not None and self.pool.put(self):
            return
        self.con.close()


def open_connection(
    url: str, style: str = "entry", nodelay: bool = True
) -> pg8000.native.Connection:
    """A login as src/entry.py makes it on Workers (sync.pg's Connection class, plain socket,
    `ssl_context=False`), plus TCP_NODELAY; or with style "shipped" as src/serve.py makes it
    (`connect_url`)."""
    if style == "shipped":
        from sync.migrate import connect_url

        return connect_url(url)
    from sync.pg import connection_class

    parts = urlparse(url)
    con = connection_class()(
        unquote(parts.username or "postgres"),
        password=unquote(parts.password) if parts.password else None,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        database=unquote(parts.path.lstrip("/")) or None,
        ssl_context=False,
        application_name="sync-bench",
    )
    if nodelay:
        con._usock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return con


class Pool:
    """Idle logged-in connections, reused one transaction at a time (Hyperdrive's mode)."""

    def __init__(self, max_idle: int = 64) -> None:
        self.idle: list[Wired] = []
        self.max_idle = max_idle
        self.lock = threading.Lock()

    def get(self) -> Wired | None:
        with self.lock:
            return self.idle.pop() if self.idle else None

    def put(self, conn: Wired) -> bool:
        if conn.broken:
            return False
        if conn.con._transaction_status != b"I":  # left inside a transaction: reset it
            try:
                conn.con.run("ROLLBACK")
            except Exception:
                return False
            finally:
                conn.stream.live = False
        with self.lock:
            if len(self.idle) >= self.max_idle:
                return False
            self.idle.append(conn)
            return True

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.pool = None
            conn.close()


def connector(
    url: str, rtt_ms: float, pool: Pool | None = None, style: str = "entry"
) -> Callable[[], Wired]:
    """A `connect` for `App`: a login per call (as the Worker makes per request), or an
    idle connection of `pool` when there is one."""
    delay = rtt_ms / 1000

    def connect() -> Wired:
        if pool is not None:
            reused = pool.get()
            if reused is not None:
                return reused
        wall, cpu = time.perf_counter(), time.thread_time()
        con = open_connection(url, style)
        current = tally()
        current.connects += 1
        current.connect_ms += (time.perf_counter() - wall) * 1000
        current.connect_cpu_ms += (time.thread_time() - cpu) * 1000
        return Wired(con, delay, pool)

    return connect
