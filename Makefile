# The two commands: `make dev` runs the product, `make test` passes the tests.
# Everything they need is installed on first use (uv, Postgres binaries, the venv).

PY := .venv/bin/python
# uv from PATH, or as a module when pip put it where PATH does not look.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: help psql dev-reset client-schema demo-picture test-pg15 dev test token migrate lint format setup clean worker-deps bundle deploy \
        chromium client-build test-client test-e2e test-server bench bench-sharing dev-workerd test-workerd bench-workerd

setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock scripts/ensure-tools.sh
	@scripts/ensure-tools.sh
	$(UV) sync --frozen --quiet --python 3.11
	@touch $@

dev: setup client-build  ## serve http://127.0.0.1:8787 with an embedded Postgres
	$(PY) -m devtools.dev

token: setup  ## print a dev access token (USER_ID=<uuid>, EXPIRES_IN=<seconds> optional)
	@$(PY) -m devtools.token $(if $(USER_ID),--user-id $(USER_ID)) $(if $(EXPIRES_IN),--expires-in $(EXPIRES_IN))

psql: setup  ## psql on the dev database (make dev's, or DATABASE_URL)
	@$(PY) -m devtools.psql

dev-reset: setup  ## throw the dev database away; the next make dev migrates afresh
	@$(PY) -m devtools.reset

client-schema: setup  ## write client/src/schema.generated.js from the migrations (DATABASE_URL if set)
	@$(PY) -m devtools.client_schema

help:  ## list the make targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | \
		awk -F'\t' '{ printf "  make %-14s %s\n", $$1, $$2 }'

migrate: setup  ## apply migrations/ to DATABASE_URL
	PYTHONPATH=src $(PY) -m sync.migrate

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test: lint test-server test-pg15 test-workerd test-client test-e2e  ## every test; each starts the Postgres it needs

test-server: setup worker-deps  ## the server's tests (pytest; the workerd ones are test-workerd)
	$(PY) -m pytest -q --ignore=tests/test_workerd.py

# The unchanged Worker in the real Workers runtime (workerd from npm, Pyodide 314.0.6 from
# npm: offline). workerd/ builds the runtime bundle and the config; cache in .workerd/.
test-workerd: setup worker-deps  ## the Worker in workerd against Postgres, over HTTP
	$(PY) -m pytest -q tests/test_workerd.py

dev-workerd: setup worker-deps  ## like make dev, but the Worker runs in workerd
	$(PY) -m workerd.dev

bench-workerd: setup worker-deps  ## workerd section of bench/RESULTS.md (~4 min; QUICK=1: ~1 min)
	$(PY) -m workerd.bench $(if $(QUICK),--quick)

# The suite runs on the pip-installed Postgres 18; the tests that talk SQL run again on
# Debian's Postgres 15, the oldest major Supabase still runs.
PG15_TESTS := tests/test_catalog.py tests/test_push.py tests/test_pull.py tests/test_own_tables.py
test-pg15: setup worker-deps  ## the database-facing tests again on Postgres 15 (Debian's)
	PG_MAJOR=15 $(PY) -m pytest -q $(PG15_TESTS) -k "not http"  # SQL is the same over HTTP

# The PWA client kit (client/): unit tests under Node with the real SQLite WASM, and
# end-to-end tests in Debian's headless Chromium against the real server.
# On the Node 22 that the root package installs (node_modules/.bin/node, for wrangler too):
# the client's dependencies ask for it. npm runs quietly, from its cache when it can,
# and gives up on an unreachable registry quickly.
NODE22 := PATH="$(CURDIR)/node_modules/.bin:$$PATH"
NPM_QUIET := --no-audit --no-fund --prefer-offline --loglevel=error --fetch-retries=1 --fetch-timeout=20000
CHECK_NODE = @command -v node >/dev/null && command -v npm >/dev/null || { \
	echo "make: Node.js and npm are needed (Debian: apt-get install nodejs npm; or nodejs.org)" >&2; exit 1; }
CLIENT_DEPS := client/node_modules/.package-lock.json
$(CLIENT_DEPS): client/package.json client/package-lock.json node_modules/.package-lock.json
	$(CHECK_NODE)
	$(NODE22) npm --prefix client ci $(NPM_QUIET)

chromium:  ## Debian's chromium for the browser tests, installed if missing
	@client/scripts/ensure-chromium.sh

client-build: $(CLIENT_DEPS)  ## demo PWA -> client/dist/ (served at / by make dev)
	@$(NODE22) node client/scripts/build.mjs

test-client: $(CLIENT_DEPS)  ## type check + unit tests (one summary line)
	@$(NODE22) npm --prefix client test --silent

test-e2e: setup chromium client-build  ## headless Chromium + real server + Postgres
	npm --prefix client run test:e2e

# The README's picture is a docs asset, refreshed on purpose (tests write theirs to the
# ignored client/test-artifacts/).
demo-picture: test-e2e  ## refresh docs/demo.png from the end-to-end run's screenshot
	cp client/test-artifacts/demo.png docs/demo.png

# The Worker's packaging: Node tooling (wrangler on Node 22, Pyodide for the runtime check)
# and the pure-Python dependencies vendored for Pyodide into python_modules/.
worker-deps: node_modules/.package-lock.json setup
	@scripts/vendor.sh

node_modules/.package-lock.json: package.json package-lock.json
	$(CHECK_NODE)
	npm ci $(NPM_QUIET)

bundle: worker-deps  ## build the deployable Worker offline into .wrangler/bundle
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" npx wrangler deploy --dry-run --outdir .wrangler/bundle

deploy: worker-deps  ## deploy to Cloudflare (needs CLOUDFLARE_API_TOKEN or `wrangler login`, and a Hyperdrive id)
	@if [ -z "$$CLOUDFLARE_API_TOKEN" ] && ! ls $$HOME/.wrangler/config/default.toml \
		$$HOME/.config/.wrangler/config/default.toml >/dev/null 2>&1; then \
		echo "make deploy: not logged in to Cloudflare: set CLOUDFLARE_API_TOKEN, or run npx wrangler login" >&2; exit 1; fi
	@if grep -q '^id *= *"0\{32\}"' wrangler.toml; then \
		echo "make deploy: put your Hyperdrive id into wrangler.toml (npx wrangler hyperdrive create …)" >&2; exit 1; fi
	$(NODE22) npx wrangler deploy

bench: setup worker-deps  ## benchmarks -> bench/RESULTS.md + results.png (~14 min; QUICK=1: ~20 s)
	$(PY) bench/run.py $(if $(QUICK),--quick --pyodide)

bench-sharing: setup  ## issue #10's sharing section alone -> bench/RESULTS.md (QUICK=1: smoke size)
	$(PY) bench/sharing.py $(if $(QUICK),--quick)

bench-cpu: setup worker-deps  ## Worker CPU per request, CPython and Pyodide -> bench/request-cpu.json (~1 min)
	$(PY) bench/request_cpu.py --out bench/request-cpu.json

clean:
	rm -rf .venv .data .pytest_cache .ruff_cache .hypothesis node_modules python_modules .wrangler .workerd bench/.work
