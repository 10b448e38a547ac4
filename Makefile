# The two commands: `make dev` runs the product, `make test` passes the tests.
# Everything they need is installed on first use (uv, Postgres binaries, the venv).

PY := .venv/bin/python
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: dev test token migrate lint format setup clean worker-deps bundle deploy

setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock scripts/ensure-tools.sh
	@scripts/ensure-tools.sh
	uv sync --frozen --quiet --python 3.11
	@touch $@

dev: setup  ## serve http://127.0.0.1:8787 with an embedded Postgres
	$(PY) -m devtools.dev

token: setup  ## print a dev access token (USER_ID=<uuid> optional)
	@$(PY) -m devtools.token $(if $(USER_ID),--user-id $(USER_ID))

migrate: setup  ## apply migrations/ to DATABASE_URL
	PYTHONPATH=src $(PY) -m sync.migrate

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test: setup lint worker-deps  ## every test, against a throwaway Postgres it starts itself
	$(PY) -m pytest -q

# The Worker's packaging: Node tooling (wrangler on Node 22, Pyodide for the runtime check)
# and the pure-Python dependencies vendored for Pyodide into python_modules/.
worker-deps: node_modules/.package-lock.json setup
	@scripts/vendor.sh

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

bundle: worker-deps  ## build the deployable Worker offline into .wrangler/bundle
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" npx wrangler deploy --dry-run --outdir .wrangler/bundle

deploy: worker-deps  ## deploy to Cloudflare (needs `wrangler login` and a Hyperdrive id)
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" npx wrangler deploy

clean:
	rm -rf .venv .data .pytest_cache .ruff_cache .hypothesis node_modules python_modules .wrangler
