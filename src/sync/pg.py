"""The pg8000 driver as the hosts use it: connections from a postgres:// URL with bounded
waits, and the per-isolate tuning both hosts apply once at start-up."""

from __future__ import annotations

import contextlib
import io
import socket
import time
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

# Getting a connection: TCP connect, TLS, login, and the first answer. Behind a
# transaction-mode pooler (Hyperdrive, PgBouncer) the login is answered by the pooler
# itself; the wait for a real server connection happens at the first statement, and a
# pooler whose database is down queues it for minutes. So the first answer is part of
# getting a connection, and shares its deadline.
CONNECT_TIMEOUT = 5.0
# Every later wait on the socket. Longer than the statement_timeout the transactions set
# (10 s by default), so Postgres cuts a long statement first and says why; this bound is
# only reached when the database or the network has gone away.
READ_TIMEOUT = 15.0


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


def _timed_out(error: BaseException) -> bool:
    """pg8000 lets a socket timeout out bare on a message's first read, and wraps it in
    InterfaceError("network error") on later reads and on writes."""
    while error is not None:
        if isinstance(error, TimeoutError):
            return True
        error = error.__cause__  # type: ignore[assignment]
    return False


# PgBouncer answers every failed login with SQLSTATE 08P01 (protocol_violation, in the
# "connection exception" class that reads as transient), whether its own check of the
# client failed or Postgres refused its login; only the message tells them apart. These
# are the ones no retry can fix, with the SQLSTATE Postgres itself would have sent.
_POOLER_REFUSALS: tuple[tuple[str, str], ...] = (
    ("password authentication failed", "28P01"),  # Postgres refused the pooler's password
    ("SASL authentication failed", "28P01"),  # the pooler refused ours
    ("no such user", "28000"),
    ("does not exist", "3D000"),  # database "…" does not exist (from Postgres)
    ("no such database", "3D000"),  # a name the pooler's configuration does not route
)


def _pooler_refusal(error: Exception) -> Exception | None:
    """A login refusal relayed by a pooler, re-stated with Postgres' SQLSTATE (the
    pooler's own is kept as `pooler_sqlstate`), so a wrong password or database name
    reads as a misconfiguration, not as an outage to retry. None for anything else."""
    fields = error.args[0] if error.args and isinstance(error.args[0], dict) else None
    if not fields or fields.get("C") != "08P01":
        return None
    message = str(fields.get("M", ""))
    for text, sqlstate in _POOLER_REFUSALS:
        if text in message:
            return type(error)({**fields, "C": sqlstate, "pooler_sqlstate": "08P01"})
    return None


def _raise_if_read_came_back_empty(error: BaseException) -> None:
    """A socket file's read() that answers None ("would block") makes pg8000's `_read`
    fail with `bytearray(None)`: a TypeError, which would be a 500. Seen in workerd under
    concurrency, about 1 sync in 250. The exchange is cut mid-message, so the connection is
    lost: say so, and the transaction is retried on a new one (a retry is a re-send)."""
    if not isinstance(error, TypeError):
        return
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code if tb is not None else None
    if code is not None and code.co_name == "_read" and "pg8000" in code.co_filename:
        raise ConnectionError("the database socket gave no data mid-message") from error


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


@lru_cache(maxsize=1)
def _bounded_connection() -> type:
    """pg8000's native Connection, with the first statement under the connect deadline
    and every wait after it under READ_TIMEOUT; a wait that runs out raises TimeoutError
    (so callers can tell "too slow" from "refused" or "broken"). A statement with
    parameters goes out as one message sequence with one Sync (see execute_unnamed)."""
    import pg8000.native
    from pg8000.converters import make_params
    from pg8000.core import NULL_BYTE, SYNC_MSG, Context, _flush, _write
    from pg8000.exceptions import InterfaceError

    class BoundedConnection(pg8000.native.Connection):
        _first_answer_by: float | None = None
        _read_timeout: float | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            """pg8000's login; a refusal relayed by a pooler says what Postgres would."""
            try:
                super().__init__(*args, **kwargs)
            except Exception as error:
                _raise_if_read_came_back_empty(error)
                refusal = _pooler_refusal(error)
                if refusal is not None:
                    raise refusal from error
                raise

        def execute_unnamed(
            self, statement: str, vals: Any = (), oids: Any = (), stream: Any = None
        ) -> Any:
            """Parse, Describe, Bind, Execute, then one Sync: one round trip, where
            pg8000 sends a Sync after Parse and after Describe too (three). Nothing in
            Bind depends on Describe's answer (values go as text, typed by the server at
            Parse). One Sync also keeps the statement on one server connection behind a
            transaction-mode pooler, which may hand each Sync-ended exchange outside a
            transaction to another one ("unnamed prepared statement does not exist",
            or another client's statement). COPY keeps pg8000's own sequence."""
            if stream is not None:
                return super().execute_unnamed(statement, vals, oids, stream)
            out = self._sock
            if out is None:
                raise InterfaceError("connection is closed")
            # Built aside and written whole: a value that cannot be encoded (a lone
            # surrogate) fails before a byte is sent, and the connection stays in step.
            self._sock = io.BytesIO()
            try:
                self.send_PARSE(NULL_BYTE, statement, oids)
                self.send_DESCRIBE_STATEMENT(NULL_BYTE)
                self.send_BIND(NULL_BYTE, make_params(self.py_types, vals))
                self.send_EXECUTE()
                _write(self._sock, SYNC_MSG)
                messages = self._sock.getvalue()
            finally:
                self._sock = out
            _write(out, messages)
            _flush(out)
            context = Context(statement, stream=None)
            self.handle_messages(context)
            return context

        def run(self, sql: str, stream: Any = None, types: Any = None, **params: Any) -> Any:
            first_by, self._first_answer_by = self._first_answer_by, None
            # A connection closed before its first statement ran (it was lost) has no
            # socket left to bound; pg8000 then says it is closed.
            if first_by is not None and getattr(self, "_usock", None) is not None:
                self._usock.settimeout(_remaining(first_by))
            try:
                return super().run(sql, stream=stream, types=types, **params)
            except Exception as error:
                _raise_if_read_came_back_empty(error)
                if _timed_out(error):
                    waited = "a connection" if first_by is not None else "an answer"
                    raise TimeoutError(f"no {waited} from the database in time") from error
                raise
            finally:
                if first_by is not None and getattr(self, "_usock", None) is not None:
                    with contextlib.suppress(OSError):
                        self._usock.settimeout(self._read_timeout)

    return BoundedConnection


def connection_class() -> type:
    """The Connection class `connect` uses (one round trip per statement, bounded waits
    when given a socket), for hosts that open connections themselves (src/entry.py)."""
    return _bounded_connection()


def connect(
    host: str,
    port: int,
    user: str,
    password: str | None,
    database: str | None,
    *,
    ssl_context: Any = False,
    application_name: str = "sync-worker",
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float | None = READ_TIMEOUT,
) -> Any:
    """A logged-in pg8000 connection whose waits are bounded: `connect_timeout` for the TCP
    connect, TLS, login and the first statement's answer together, `read_timeout` for
    each wait after that (None: unbounded, for migrations). A bound that runs out raises
    TimeoutError; a server that cannot be reached raises ConnectionError. The socket
    sends small writes at once (TCP_NODELAY), as Postgres drivers do."""
    deadline = time.monotonic() + connect_timeout
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except TimeoutError:
        raise TimeoutError(f"no connection to {host}:{port} in {connect_timeout:g} s") from None
    except OSError as error:
        raise ConnectionError(f"cannot reach {host}:{port}: {error}") from None
    try:
        with contextlib.suppress(OSError):  # not every socket layer has the option
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(_remaining(deadline))
        try:
            con = _bounded_connection()(
                user,
                password=password,
                host=host,
                database=database,
                sock=sock,
                ssl_context=ssl_context,
                application_name=application_name,
            )
        except Exception as error:
            if _timed_out(error):
                raise TimeoutError(f"no login at {host}:{port} in {connect_timeout:g} s") from error
            raise
    except BaseException:
        sock.close()
        raise
    con._read_timeout = read_timeout
    con._first_answer_by = deadline
    return con


def connect_url(
    url: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float | None = READ_TIMEOUT,
) -> Any:
    """A connection (see `connect`) from a postgres:// URL. TLS only when the URL asks for
    it with sslmode."""
    parts = urlparse(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("DATABASE_URL must start with postgresql://")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return connect(
        parts.hostname or "127.0.0.1",
        parts.port or 5432,
        unquote(parts.username or "postgres"),
        unquote(parts.password) if parts.password else None,
        unquote(parts.path.lstrip("/")) or None,
        ssl_context=_ssl_context(query.get("sslmode", "disable")),
        application_name=query.get("application_name", "sync-worker"),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
