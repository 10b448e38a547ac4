"""`make psql`: a psql shell on the development database.

On DATABASE_URL when it is set; else on the embedded cluster of `make dev` — the running
one, or, when `make dev` is not running, the cluster started just for this shell and
stopped after it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from devtools.dev import data_dir, dev_cluster


def psql_binary(bindir) -> str:
    """psql beside the server binaries, else the one on PATH."""
    candidate = bindir / "psql"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("psql")
    if not found:
        raise SystemExit("make psql: no psql found (Debian: apt-get install postgresql-client)")
    return found


def main(argv: list[str]) -> int:
    url = os.environ.get("DATABASE_URL")
    if url:
        return subprocess.call([shutil.which("psql") or "psql", url, *argv])
    cluster = dev_cluster(data_dir())
    if not (cluster.data / "PG_VERSION").exists():
        print("make psql: no development database yet; run `make dev` once", file=sys.stderr)
        return 1
    binary = psql_binary(cluster.bindir)
    pid = cluster.running_pid()
    started = False
    if pid is not None:
        # The postmaster.pid's fourth line is the port it listens on.
        lines = (cluster.data / "postmaster.pid").read_text().splitlines()
        cluster.port = int(lines[3])
    else:
        cluster.recover_stale()
        cluster.start()
        started = True
    try:
        return subprocess.call([binary, cluster.url(), *argv])
    finally:
        if started:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
