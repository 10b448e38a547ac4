"""`make dev`: the sync server on http://127.0.0.1:8787 with nothing installed or running.

Starts a throwaway Postgres under .data/ (unless DATABASE_URL is set), applies the
migrations, makes a development JWT secret (unless SUPABASE_JWT_SECRET is set), and serves
the Worker's request handling through the local host until SIGINT/SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from devtools.pgcluster import Cluster  # noqa: E402
from serve import run  # noqa: E402
from sync.migrate import migrate, verify  # noqa: E402


def data_dir() -> Path:
    return Path(os.environ.get("DEV_DATA_DIR") or ROOT / ".data").resolve()


def dev_secret(directory: Path) -> str:
    """The HS256 secret: SUPABASE_JWT_SECRET, else one generated once and kept."""
    if os.environ.get("SUPABASE_JWT_SECRET"):
        return os.environ["SUPABASE_JWT_SECRET"]
    path = directory / "jwt-secret"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> int:
    directory = data_dir()
    env = dict(os.environ)
    env["SUPABASE_JWT_SECRET"] = dev_secret(directory)
    cluster = None
    if not env.get("DATABASE_URL"):
        cluster = Cluster(directory / "postgres", port=int(env.get("PG_PORT", "0")) or None)
        print(f"starting the embedded Postgres in {cluster.directory} …", flush=True)
        cluster.start()
        env["DATABASE_URL"] = cluster.url()
    try:
        migrate(env["DATABASE_URL"], say=lambda line: print(f"migrate: {line}", flush=True))
        if verify(env["DATABASE_URL"], say=lambda line: print(f"check: {line}", flush=True)):
            return 1
        env.setdefault("STATIC_DIR", str(ROOT / "client" / "dist"))
        notes = ["a token for curl: make token   (USER_ID=<uuid> for another user)"]
        if "SUPABASE_JWT_SECRET" not in os.environ:
            notes.insert(0, f"dev JWT secret (HS256): {env['SUPABASE_JWT_SECRET']}")
        run(env, tuple(notes))
    finally:
        if cluster is not None:
            cluster.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
