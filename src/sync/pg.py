"""The pg8000 driver as the hosts use it: connections from a postgres:// URL, and the
per-isolate tuning both hosts apply once at start-up."""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


def tune_driver() -> None:
    """Keeps, per isolate/process, what pg8000 would otherwise recompute on every request:
    the SCRAM salted password (sync.scram) and the parse of each statement's text (our
    statements come from a small fixed set, see sync.sql). Idempotent."""
    import pg8000.native

    from sync import scram

    scram.install()
    if not hasattr(pg8000.native.to_statement, "cache_info"):
        pg8000.native.to_statement = lru_cache(maxsize=256)(pg8000.native.to_statement)


def _ssl_context(mode: str) -> Any:
    """libpq's sslmode: disable/allow/prefer → no TLS; require → TLS without checking the
    certificate; verify-ca / verify-full → the certificate is checked (and, for
    verify-full, the host name)."""
    if mode in ("disable", "allow", "prefer"):
        return False
    import ssl

    if mode == "require":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if mode in ("verify-ca", "verify-full"):
        context = ssl.create_default_context()
        context.check_hostname = mode == "verify-full"
        return context
    raise ValueError(f"unknown sslmode {mode!r}")


def connect_url(url: str) -> Any:
    """A pg8000 connection from a postgres:// URL. TLS only when the URL asks for it with
    sslmode; the socket sends small writes at once (TCP_NODELAY), as Postgres drivers do."""
    import pg8000.native

    parts = urlparse(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("DATABASE_URL must start with postgresql://")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        sock = socket.create_connection((host, port), timeout=30)
    except OSError as error:
        raise ConnectionError(f"cannot reach {host}:{port}: {error}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    try:
        return pg8000.native.Connection(
            unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password else None,
            host=host,
            database=unquote(parts.path.lstrip("/")) or None,
            sock=sock,
            ssl_context=_ssl_context(query.get("sslmode", "disable")),
            application_name=query.get("application_name", "sync-worker"),
        )
    except BaseException:
        sock.close()
        raise
