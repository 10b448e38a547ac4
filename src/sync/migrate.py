"""Applies the SQL files of migrations/ in name order, each once, each in its transaction.

    python -m sync.migrate            # uses DATABASE_URL

The files are idempotent, so a half-applied database can simply be migrated again.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from sync.pg import connect_url

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def migrate(url: str, directory: Path = MIGRATIONS, say=print) -> list[str]:
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise RuntimeError(f"no migrations in {directory}")
    # A migration may rightly take long (an index on a big table): no read deadline.
    con = connect_url(url, read_timeout=None)
    applied_now = []
    try:
        con.run(
            "CREATE TABLE IF NOT EXISTS sync_migrations (name text PRIMARY KEY, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for path in files:
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            con.run("BEGIN")
            try:
                con.run("LOCK TABLE sync_migrations IN EXCLUSIVE MODE")
                done = con.run("SELECT checksum FROM sync_migrations WHERE name = :n", n=path.name)
                if done:
                    con.run("ROLLBACK")
                    if done[0][0] != checksum:
                        say(
                            f"warning: {path.name} changed since it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                con.run(text)
                con.run(
                    "INSERT INTO sync_migrations (name, checksum) VALUES (:n, :c)",
                    n=path.name,
                    c=checksum,
                )
                # Servers notice the change at their next sync (sync.catalog).
                if con.run("SELECT to_regproc('sync_schema_changed') IS NOT NULL")[0][0]:
                    con.run("SELECT sync_schema_changed()")
                con.run("COMMIT")
            except BaseException:
                con.run("ROLLBACK")
                raise
            applied_now.append(path.name)
            say(f"applied {path.name}")
    finally:
        con.close()
    if not applied_now:
        say(f"database is up to date ({len(files)} migrations)")
    return applied_now


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print(
            "DATABASE_URL is not set (postgresql://user:password@host:port/database)",
            file=sys.stderr,
        )
        return 2
    try:
        migrate(url)
    except Exception as error:
        print(f"migration failed: {error}", file=sys.stderr)
        return 1
    return verify(url)


def verify(url: str, say=print) -> int:
    """Checks that the migrated database can be synced (sync.checkdb); 0 when it can."""
    from sync.checkdb import inspect

    con = connect_url(url)
    try:
        loaded, found, notes = inspect(con)
    finally:
        con.close()
    for line in found:
        say(f"schema problem: {line}")
    for line in notes:
        say(f"note: {line}")
    if loaded is not None and not found:
        names = ", ".join(t.name for t in loaded.registry.tables) or "none yet"
        say(f"{len(loaded.registry.tables)} synced tables ({names}); schema hash {loaded.hash}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
