"""Keeps pg8000's SCRAM salted password per isolate, so a database login costs a few HMACs.

pg8000 logs in to Postgres (and to Hyperdrive) with SCRAM-SHA-256 through `scramp`, whose
client derives SaltedPassword = PBKDF2-HMAC(password, salt, iterations) on every login —
4096 HMACs at Postgres' default. CPython does it in C (`hashlib.pbkdf2_hmac`, ~1.5 ms), but
Pyodide has no `hashlib.pbkdf2_hmac`, so scramp falls back to a pure-Python loop: tens of
milliseconds of CPU, once per request, because every request opens its own connection.

The derived key depends only on (hash, password, salt, iterations), and the salt and count
are fixed per role (Postgres stores them with the verifier), so every login of an isolate
derives the same key. `install()` puts a memoising wrapper over scramp's PBKDF2 step:

- keyed by (hash name, SHA-256 of the password, salt, iterations): a new salt (a password
  change) is simply a miss, and the plaintext is not kept a second time;
- bounded (`MAX_ENTRIES`, oldest dropped first), so odd servers cannot grow it;
- on a miss it uses `hashlib.pbkdf2_hmac` where it exists, else a pure-Python PBKDF2 built
  on `hmac.digest` (about 5x faster under Pyodide than scramp's loop, measured in bench/).

What is kept is password-equivalent for this server (as the password in the isolate's env
already is): it lives in module memory only, is never logged, returned or serialised.

The Workers adapter calls `install()` once at import; the local host may too. It imports
nothing CPython-only (no threads, no ssl, no `hashlib.pbkdf2_hmac` at import), and without
threads needs no lock: under CPython's threaded host each dict operation is atomic, and
two threads missing at once merely compute the same key twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

MAX_ENTRIES = 16

HashFactory = Callable[..., Any]  # hashlib.sha256 and the like, as scramp passes them
CacheKey = tuple[str, bytes, bytes, int]

_cache: dict[CacheKey, bytes] = {}
_stats = {"hits": 0, "misses": 0}
_original_hi: Callable[..., bytes] | None = None


def pbkdf2(hf: HashFactory, password: bytes, salt: bytes, iterations: int) -> bytes:
    """PBKDF2-HMAC, first block only (dkLen = digest size), as SCRAM's Hi() needs it."""
    name = hf().name
    native = getattr(hashlib, "pbkdf2_hmac", None)
    if native is not None:
        return native(name, password, salt, iterations)
    return pbkdf2_pure(name, password, salt, iterations)


def pbkdf2_pure(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    """The pure-Python fallback: `hmac.digest` per round (one call into the hash module,
    no HMAC object) and the running XOR kept as one integer."""
    u = hmac.digest(password, salt + b"\x00\x00\x00\x01", name)
    acc = int.from_bytes(u, "big")
    for _ in range(iterations - 1):
        u = hmac.digest(password, u, name)
        acc ^= int.from_bytes(u, "big")
    return acc.to_bytes(len(u), "big")


def salted_password(hf: HashFactory, password: bytes, salt: bytes, iterations: int) -> bytes:
    """scramp's `hi(hf, password, salt, iterations)`, memoised per isolate."""
    password, salt, iterations = bytes(password), bytes(salt), int(iterations)
    key = (hf().name, hashlib.sha256(password).digest(), salt, iterations)
    found = _cache.get(key)
    if found is not None:
        _stats["hits"] += 1
        return found
    _stats["misses"] += 1
    derived = pbkdf2(hf, password, salt, iterations)
    while len(_cache) >= MAX_ENTRIES:
        with contextlib.suppress(KeyError, StopIteration, RuntimeError):
            del _cache[next(iter(_cache))]
    _cache[key] = derived
    return derived


def install() -> None:
    """Routes scramp's PBKDF2 step (`scramp.core.hi`, which the SCRAM client calls) through
    the cache. Idempotent; `uninstall()` undoes it."""
    global _original_hi
    import scramp.core

    if scramp.core.hi is salted_password:
        return
    _original_hi = scramp.core.hi
    scramp.core.hi = salted_password


def uninstall() -> None:
    global _original_hi
    import scramp.core

    if _original_hi is not None:
        scramp.core.hi = _original_hi
        _original_hi = None


def installed() -> bool:
    import scramp.core

    return scramp.core.hi is salted_password


def clear() -> None:
    _cache.clear()
    _stats.update(hits=0, misses=0)


def stats() -> dict[str, int]:
    """Hits, misses and size: for tests and the bench, never the keys."""
    return {**_stats, "entries": len(_cache)}
