"""A throwaway PgBouncer in transaction mode in front of a test cluster: the pooling model
of Hyperdrive and of Supabase's pooler, started by the tests like the throwaway Postgres.

Transaction mode hands a server connection to a client for one transaction only, so
anything a session keeps (SET, named prepared statements, advisory locks, LISTEN) leaks
to other clients or is lost: running the contract through it proves the server keeps
none. Clients log in to PgBouncer with SCRAM (it keeps the password in its auth file) and
PgBouncer logs in to Postgres with SCRAM itself, as a pooler with its own credentials does.

PgBouncer refuses to run as root; as root it runs as the `postgres` system user, the
same user devtools.pgcluster runs Postgres as.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from devtools.pgcluster import free_port


def find_pgbouncer() -> str:
    """The pgbouncer binary (PGBOUNCER overrides); Debian puts it in /usr/sbin."""
    for candidate in (
        os.environ.get("PGBOUNCER"),
        shutil.which("pgbouncer"),
        "/usr/sbin/pgbouncer",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "no pgbouncer binary: scripts/ensure-tools.sh installs Debian's 'pgbouncer' "
        "(or set PGBOUNCER to its path)"
    )


class Bouncer:
    """One PgBouncer process pooling every database of the Postgres at `upstream_url`
    (`* = host=… port=…`), for the user and password in that URL."""

    def __init__(
        self,
        directory: Path,
        upstream_url: str,
        *,
        pool_size: int = 10,
        max_client_conn: int = 200,
        server_login_retry: int = 1,
    ) -> None:
        self.directory = Path(directory).resolve()
        upstream = urlparse(upstream_url)
        self.upstream_host = upstream.hostname or "127.0.0.1"
        self.upstream_port = upstream.port or 5432
        self.user = unquote(upstream.username or "postgres")
        self.password = unquote(upstream.password or "")
        self.port = free_port()
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        # PgBouncer waits this long after a failed server login before it tries again
        # (default 15 s): the floor of how fast the pool notices Postgres is back.
        self.server_login_retry = server_login_retry
        self.binary = find_pgbouncer()
        self.process: subprocess.Popen[bytes] | None = None

    # -- configuration ---------------------------------------------------------------

    @property
    def log_file(self) -> Path:
        return self.directory / "pgbouncer.log"

    def _write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        auth_file = self.directory / "userlist.txt"
        quoted = self.password.replace('"', '""')
        auth_file.write_text(f'"{self.user}" "{quoted}"\n')
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={self.upstream_host} port={self.upstream_port}",
                    "",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = scram-sha-256",
                    f"auth_file = {auth_file}",
                    f"admin_users = {self.user}",
                    "pool_mode = transaction",
                    f"default_pool_size = {self.pool_size}",
                    f"max_client_conn = {self.max_client_conn}",
                    f"server_login_retry = {self.server_login_retry}",
                    # The defaults a deployment would have: a client whose query waits
                    # for a server connection is dropped after query_wait_timeout (120 s).
                    # The server must not rely on it (it cuts its own waits far sooner).
                    f"logfile = {self.log_file}",
                    f"pidfile = {self.directory / 'pgbouncer.pid'}",
                    "",
                ]
            )
        )
        for path in (self.directory, auth_file, config):
            self._give_to_runner(path)
        return config

    def _runner(self) -> pwd.struct_passwd | None:
        return pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _give_to_runner(self, path: Path) -> None:
        """As root, the `postgres` user must own PgBouncer's files and reach its directory
        (pytest's temp directories are 0700)."""
        runner = self._runner()
        if runner is None:
            return
        for parent in path.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        os.chown(path, runner.pw_uid, runner.pw_gid)

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        config = self._write_config()
        runner = self._runner()
        as_user = (
            {"user": runner.pw_uid, "group": runner.pw_gid, "extra_groups": []} if runner else {}
        )
        self.process = subprocess.Popen(
            [self.binary, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **as_user,  # type: ignore[arg-type]
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start-up:\n{self._tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on {self.port}:\n{self._tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # SIGTERM is PgBouncer's immediate shutdown (in 1.18; SIGINT waits for clients).
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _tail(self) -> str:
        err = b""
        if self.process is not None and self.process.poll() is not None and self.process.stderr:
            err = self.process.stderr.read() or b""
        log = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
        return err.decode(errors="replace") + log

    # -- addresses -------------------------------------------------------------------

    def url(self, database: str, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(secret, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(database, safe='')}"
        )

    def route(self, direct_url: str) -> str:
        """The same database as `direct_url`, reached through the pooler."""
        return self.url(unquote(urlparse(direct_url).path.lstrip("/")))

    def direct(self, pooled_url: str) -> str:
        """The same database as `pooled_url`, straight to Postgres."""
        database = unquote(urlparse(pooled_url).path.lstrip("/"))
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.upstream_host}:{self.upstream_port}/{quote(database, safe='')}"
        )

    def show(self, what: str) -> list[dict[str, object]]:
        """A row set of PgBouncer's admin console (`SHOW POOLS`, `SHOW STATS`, …)."""
        import pg8000.native

        con = pg8000.native.Connection(
            self.user, password=self.password, host="127.0.0.1", port=self.port,
            database="pgbouncer", timeout=5,
        )  # fmt: skip
        try:
            rows = con.run(f"SHOW {what}")  # the console speaks the simple protocol only
            names = [column["name"] for column in con.columns]
        finally:
            con.close()
        return [dict(zip(names, row, strict=True)) for row in rows or []]
