"""`make dev-workerd`: `make dev`, but the Worker runs in the real Workers runtime.

The same start-up as devtools/dev.py (its functions, imported): the embedded Postgres
under .data/ unless DATABASE_URL is set, the migrations and the database check, the dev
JWT secret unless SUPABASE_JWT_SECRET is set, HOST/PORT, and every setting of the
environment (as Worker vars over wrangler.toml's [vars]). Then src/entry.py is served by
`workerd serve` (workerd/runner.py) until SIGINT/SIGTERM; it prints `ready: http://…`.
The demo PWA is not served here (the Worker has no static assets): use `make dev` for it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from devtools.dev import (
    StartError,
    check_port,
    data_dir,
    describe,
    dev_cluster,
    dev_secret,
    lock_data_dir,
    redact,
    say,
)
from sync.settings import SETTING_NAMES  # importable: devtools.dev put src/ on sys.path
from workerd.config import SECRETS
from workerd.runner import Workerd


def main() -> int:
    try:
        return _main()
    except StartError as error:
        print(f"make dev-workerd: {error}", file=sys.stderr, flush=True)
        return 1


def _main() -> int:
    from sync.migrate import migrate, verify

    directory = data_dir()
    env = dict(os.environ)
    host, port = env.get("HOST", "127.0.0.1"), int(env.get("PORT", "8787"))
    lock = lock_data_dir(directory)
    check_port(host, port)
    secret = dev_secret(directory)
    cluster = None
    worker: Workerd | None = None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if env.get("DATABASE_URL"):
            say(f"database: {redact(env['DATABASE_URL'])} (DATABASE_URL)")
        else:
            cluster = dev_cluster(directory, port=int(env.get("PG_PORT", "0")) or None)
            recovered = cluster.recover_stale()
            if recovered:
                say(f"note: {recovered}")
            say(f"starting the embedded Postgres in {cluster.directory} …")
            try:
                cluster.start()
            except Exception as error:
                raise StartError(
                    f"the embedded Postgres did not start ({describe(error)}); "
                    f"its log: {cluster.directory / 'postgres.log'}"
                ) from None
            env["DATABASE_URL"] = cluster.url()
            say(f"database: {env['DATABASE_URL']}")
        try:
            migrate(env["DATABASE_URL"], say=lambda line: say(f"migrate: {line}"))
        except Exception as error:
            raise StartError(f"migration failed: {describe(error)}") from None
        if verify(env["DATABASE_URL"], say=lambda line: say(f"check: {line}")):
            raise StartError("the database does not match what sync needs (see check: above)")
        settings = {k: env[k] for k in SETTING_NAMES if k in env and k not in SECRETS}
        worker = Workerd(
            env["DATABASE_URL"],
            settings=settings,
            secrets={"SUPABASE_JWT_SECRET": secret},
            host=host,
            port=port,
            snapshot=env.get("WORKERD_SNAPSHOT", "1") != "0",
            log_path=directory / "workerd.log",
        )
        say("starting workerd (the first start builds the Pyodide bundle and a snapshot) …")
        try:
            url = worker.start()
        except Exception as error:
            raise StartError(f"workerd did not start: {error}") from None
        say(f"workerd {worker.snapshot_mode} snapshot; up in {worker.started_in:.1f} s")
        say(f"workerd log: {worker.log_path}")
        if "SUPABASE_JWT_SECRET" not in os.environ:
            say(f"dev JWT secret (HS256): {secret}")
        say("a token for curl: make token   (USER_ID=<uuid>, EXPIRES_IN=<seconds>)")
        say(f"ready: {url}")
        while not stop.wait(0.5):
            if not worker.alive():
                raise StartError(f"workerd exited:\n{worker.log_tail()}")
    finally:
        if worker is not None:
            worker.stop()
        if cluster is not None:
            cluster.stop()
        lock.close()
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
