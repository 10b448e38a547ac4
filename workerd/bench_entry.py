"""Bench only, never deployed: src/entry.py with another isolate guard.

workerd/bench.py serves it to measure what the guard costs and to show what it prevents.
The Worker var BENCH_GUARD picks the guard before entry.py would make its own:
- `none`: every request at once, their synchronous driver calls interleaving;
- `asyncio_lock`: the `asyncio.Lock` Cloudflare's Hyperdrive page suggests;
- anything else: entry.py's own `IsolateGuard`.
Probes, for chasing a runtime-only failure: BENCH_TRACEBACKS=1 prints the traceback of
every unexpected error (the App's log names only its type); BENCH_GC_AFTER_CONNECT=1
runs the cyclic collector after each connect; BENCH_CLOSE_FILES=1 makes pg8000's close()
close the file it made from its socket too. Everything else is entry.py, unchanged.
"""

import asyncio
import contextlib
import traceback

import entry
from sync.app import App
from sync.http import ApiError


class _Open:
    """Admits every request at once."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def _print_tracebacks() -> None:
    route = App._route

    async def traced(self, request, trace):
        try:
            return await route(self, request, trace)
        except ApiError:
            raise
        except Exception:
            traceback.print_exc()
            raise

    App._route = traced


def _collect_after_connect() -> None:
    """A cyclic garbage collection right after every new connection: whatever an earlier
    connection left to the collector is finalised while this one is open."""
    import gc

    connector = entry._connector

    def collecting(hyperdrive):
        connect = connector(hyperdrive)

        def connect_then_collect():
            connection = connect()
            gc.collect()
            return connection

        return connect_then_collect

    entry._connector = collecting


def _close_socket_files() -> None:
    """pg8000's close() closes its socket but not the file made from it (makefile), which
    keeps the descriptor open until the garbage collector finalises that file, at some
    later moment, possibly inside another request's driver call."""
    import pg8000.core

    close = pg8000.core.CoreConnection.close

    def closing(self):
        file = self._sock
        try:
            close(self)
        finally:
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()

    pg8000.core.CoreConnection.close = closing


class Default(entry.Default):
    async def fetch(self, request):
        if entry._guard is None:
            if str(getattr(self.env, "BENCH_CLOSE_FILES", "")) == "1":
                _close_socket_files()
            if str(getattr(self.env, "BENCH_GC_AFTER_CONNECT", "")) == "1":
                _collect_after_connect()
            if str(getattr(self.env, "BENCH_TRACEBACKS", "")) == "1":
                _print_tracebacks()
            choice = str(getattr(self.env, "BENCH_GUARD", ""))
            if choice == "none":
                entry._guard = _Open()
            elif choice == "asyncio_lock":
                entry._guard = asyncio.Lock()
        return await super().fetch(request)
