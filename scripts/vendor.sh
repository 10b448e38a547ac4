#!/usr/bin/env bash
# Builds python_modules/, the pure-Python packages wrangler bundles into the Worker.
#
# The versions come from uv.lock (the same pins CPython tests run against), installed
# as wheels for Pyodide, so the Worker ships exactly what the tests exercised. This
# replaces `pywrangler sync`, which needs network access beyond the package index.
# workers-runtime-sdk is added because pywrangler always vendors it too: it is the
# `workers` module that src/entry.py imports.
#
# Idempotent: a stamp records the requirement set; nothing is done when it matches.
set -euo pipefail

cd "$(dirname "$0")/.."

readonly target=python_modules
readonly stamp="$target/.vendored"
readonly sdk="workers-runtime-sdk==1.9.5"

wanted="$(
    {
        # tzdata (2.7 of the bundle's 4.5 MB) comes with python-dateutil, for named time
        # zones the Worker never asks for: Postgres sends timestamps as UTC text.
        ${UV:-uv} export --frozen --no-dev --no-hashes --no-emit-project --no-header --no-annotate |
            grep -v '^tzdata=='
        echo "$sdk"
    } | sort
)"
count="$(printf '%s\n' "$wanted" | wc -l)"

if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$wanted" ]]; then
    echo "vendor: $target/ up to date ($count packages)"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$wanted" >"$work/requirements.txt"

# The lock already holds the whole dependency closure, hence --no-deps. All of these
# ship py3-none-any wheels, so the platform tag only guards against native wheels.
${UV:-uv} pip install --quiet --no-deps --only-binary :all: \
    --python-platform wasm32-pyodide2025 --python-version 3.14 \
    --target "$work/$target" -r "$work/requirements.txt"

native="$(find "$work/$target" -name '*.so' -print -quit)"
if [[ -n "$native" ]]; then
    echo "vendor: native extension in a vendored package: $native" >&2
    exit 1
fi

rm -f "$work/$target/.lock"  # uv's install lock, not part of the bundle
printf '%s\n' "$wanted" >"$work/$target/.vendored"
rm -rf "$target"
mv "$work/$target" "$target"
echo "vendor: $target/ <- $(printf '%s\n' "$wanted" | paste -sd ' ')"
