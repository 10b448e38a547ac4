"""Postgres' own time for a request, as Postgres measures it.

The latency table compares a sync with "one round trip plus Postgres' own time". The
second term has to come from Postgres, not from the client: a client-side clock would
count pg8000's decoding and the socket hops, which are the very costs being judged. So,
while the latency section runs, the bench turns on `log_duration` (Postgres then logs
"duration: X ms" for every simple-query message it completes, and for each Parse, Bind
and Execute of the extended protocol), and sums the lines that the server's connections
wrote while one request was in flight. Only one request is in flight at a time there.

That is the time the backend spent parsing, planning and executing, triggers and commit
included; not the time messages spend on the wire, nor waiting for a lock another
backend holds (none do in that section).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pg8000.native

from devtools.pgcluster import Cluster

_DURATION = re.compile(r"\] (\S*) LOG:  duration: ([0-9.]+) ms")
APPLICATION = "sync-bench"  # bench/wire.py's application_name: the server's connections


class PostgresClock:
    """Turns `log_duration` on for the cluster (off again on exit) and reads, between two
    marks, the durations the bench's connections logged."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.log = Path(cluster.directory) / "postgres.log"
        self.offset = 0

    def _set(self, on: bool) -> None:
        con = pg8000.native.Connection(
            "postgres",
            password=self.cluster.password_file.read_text().strip(),
            host="127.0.0.1",
            port=self.cluster.port,
        )
        try:
            if on:
                con.run("ALTER SYSTEM SET log_duration = on")
                con.run("ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '")
            else:
                con.run("ALTER SYSTEM RESET log_duration")
                con.run("ALTER SYSTEM RESET log_line_prefix")
            con.run("SELECT pg_reload_conf()")
        finally:
            con.close()
        time.sleep(0.2)  # backends take the new settings at their next message

    def __enter__(self) -> PostgresClock:
        self._set(True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._set(False)

    def mark(self) -> None:
        """Starts a window: what is logged from now on belongs to the next request."""
        self.offset = self.log.stat().st_size

    def since_mark(self) -> tuple[float, int]:
        """(milliseconds, messages) Postgres logged for the bench's connections since
        `mark`. Postgres writes the line before it sends ReadyForQuery, so by the time
        the client has its answer the line is in the file."""
        with self.log.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", "replace")
        total, count = 0.0, 0
        for match in _DURATION.finditer(text):
            if match.group(1) == APPLICATION:
                total += float(match.group(2))
                count += 1
        return total, count
