"""The sync server: one JSON batch in, one Postgres transaction, one JSON answer out.

Runs unchanged under CPython (tests, the local host) and Pyodide (Cloudflare Workers); only
`src/entry.py` and `src/serve.py` know which host they are on.
"""
