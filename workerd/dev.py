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
import sys

from devtools.dev import (
    StartError,
    check_port,
    data_dir,
    dev_secret,
    lock_data_dir,
    open_database,
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
    from serve import signal_pipe, wait_for_signal

    # Signal-safe: the handler only writes to a pipe (see serve.signal_pipe); a signal
    # during start-up is kept, and the finally below stops what was started.
    signals = signal_pipe()
    directory = data_dir()
    env = dict(os.environ)
    host, port = env.get("HOST", "127.0.0.1"), int(env.get("PORT", "8787"))
    lock = lock_data_dir(directory)
    check_port(host, port)
    secret = dev_secret(directory)
    cluster = None
    worker: Workerd | None = None
    try:
        cluster = open_database(env, directory)
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
        while not wait_for_signal(signals, 0.5):
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
