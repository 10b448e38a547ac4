# The two commands: `make dev` runs the product, `make test` passes the tests.
# Everything they need is installed on first use (uv, Postgres binaries, the venv).

PY := .venv/bin/python
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: dev test token migrate lint format setup clean

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

test: setup lint  ## every test, against a throwaway Postgres it starts itself
	$(PY) -m pytest -q

clean:
	rm -rf .venv .data .pytest_cache .ruff_cache .hypothesis
