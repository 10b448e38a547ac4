"""The Worker in the real Workers runtime (workerd), offline.

bundle.py builds the dev Pyodide bundle workerd loads under the experimental
`python_workers_development` flag; config.py writes the worker.capnp that serves the
unchanged src/entry.py; runner.py starts and stops workerd; dev.py is `make dev-workerd`.
Everything generated lives under .workerd/ (ignored).
"""
