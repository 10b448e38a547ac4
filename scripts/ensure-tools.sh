#!/usr/bin/env bash
# Installs what `make dev` and `make test` need and a fresh machine may lack: uv (from
# PyPI) and the Postgres server binaries (from Debian). Quiet when all is there.
set -euo pipefail

if ! command -v uv >/dev/null 2>&1; then
    echo "installing uv …"
    python3 -m pip install --quiet "uv==0.13.9"
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    echo "installing the Postgres server binaries …"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    else
        echo "no Postgres binaries: install the 'postgresql' package (or set PG_BIN)" >&2
        exit 1
    fi
fi
