"""Bench only, never deployed: src/entry.py with another isolate guard.

workerd/bench.py serves it to measure what the guard costs and to show what it prevents.
The Worker var BENCH_GUARD picks the guard before entry.py would make its own:
- `none`: every request at once, their synchronous driver calls interleaving;
- `asyncio_lock`: the `asyncio.Lock` Cloudflare's Hyperdrive page suggests;
- anything else: entry.py's own `IsolateGuard`.
BENCH_TRACEBACKS=1 also prints the traceback of every unexpected error (the App's log
names only its type). Everything else is entry.py, unchanged.
"""

import asyncio
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


class Default(entry.Default):
    async def fetch(self, request):
        if entry._guard is None:
            if str(getattr(self.env, "BENCH_TRACEBACKS", "")) == "1":
                _print_tracebacks()
            choice = str(getattr(self.env, "BENCH_GUARD", ""))
            if choice == "none":
                entry._guard = _Open()
            elif choice == "asyncio_lock":
                entry._guard = asyncio.Lock()
        return await super().fetch(request)
