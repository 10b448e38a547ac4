"""Development and test tooling: the embedded Postgres, `make dev`, `make token`."""
