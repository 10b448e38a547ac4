"""Bench only, never deployed: src/entry.py with another isolate guard.

workerd/bench.py serves it to measure what the guard costs and to show what it prevents.
The Worker var BENCH_GUARD picks the guard before entry.py would make its own:
- `none`: every request at once, their synchronous driver calls interleaving;
- `asyncio_lock`: the `asyncio.Lock` Cloudflare's Hyperdrive page suggests;
- anything else: entry.py's own `IsolateGuard`.
Everything else is entry.py, unchanged.
"""

import asyncio

import entry


class _Open:
    """Admits every request at once."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class Default(entry.Default):
    async def fetch(self, request):
        if entry._guard is None:
            choice = str(getattr(self.env, "BENCH_GUARD", ""))
            if choice == "none":
                entry._guard = _Open()
            elif choice == "asyncio_lock":
                entry._guard = asyncio.Lock()
        return await super().fetch(request)
