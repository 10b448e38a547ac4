"""Work per user, bounded: one account must not take the service from everyone.

Each process (local host) or isolate (Worker) admits at most `MAX_INFLIGHT_PER_USER`
concurrent syncs of one user and `MAX_INFLIGHT` in all; beyond that the caller gets
`429 rate_limited` with `Retry-After` at once, before any database work, instead of
queueing on the rows or connections the others hold. On Workers a rate-limiting binding
(keyed by user id) adds a limit across isolates; see `src/entry.py`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from sync.http import ApiError

RETRY_AFTER_SECONDS = 1

# An extra check across isolates: True admits the request (e.g. Cloudflare's binding).
RateLimit = Callable[[str], Awaitable[bool]]


def rate_limited(message: str, retry_after: int = RETRY_AFTER_SECONDS) -> ApiError:
    return ApiError(429, "rate_limited", message, {"retry-after": str(retry_after)})


class InFlight:
    """Counts the syncs under way, per user and in all. Thread-safe: the local host
    serves each connection on its own thread (the lock is never held across a wait)."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self.users: dict[str, int] = {}
        self.running = 0
        self._lock = threading.Lock()

    @contextmanager
    def admit(self, user: str) -> Iterator[None]:
        with self._lock:
            if self.running >= self.total:
                raise rate_limited("the server is busy; retry shortly")
            if self.users.get(user, 0) >= self.per_user:
                raise rate_limited(
                    f"more than {self.per_user} syncs of this user at once; retry shortly"
                )
            self.running += 1
            self.users[user] = self.users.get(user, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
                left = self.users[user] - 1
                if left:
                    self.users[user] = left
                else:
                    del self.users[user]
