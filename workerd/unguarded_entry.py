"""Bench only, never deployed: src/entry.py without its isolate guard.

workerd/bench.py serves it to measure what the guard costs and to show what it prevents
(requests' synchronous driver calls interleaving in one isolate). It is entry.py itself
with `IsolateGuard` swapped for a guard that admits everyone.
"""

import entry
from entry import Default  # the Worker's entrypoint class, unchanged

__all__ = ["Default"]


class _Open:
    """Admits every request at once."""

    lease = 0.0

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


entry.IsolateGuard = lambda lease: _Open()
