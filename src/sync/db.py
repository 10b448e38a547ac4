"""The database connection as the sync code sees it: statements counted, errors sorted.

A request owns its connection; nothing here is shared between requests, because requests
interleave in one Workers isolate.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol

# What a lost or broken connection raises below pg8000's own errors.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes socket.timeout, ConnectionError
    EOFError,
    struct.error,  # a message cut short
    socket.gaierror,
)


class Connection(Protocol):
    """What pg8000.native.Connection offers (and what a test stand-in must)."""

    def run(self, sql: str, **params: Any) -> list[list[Any]] | None: ...

    def close(self) -> None: ...


class DbError(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying the whole transaction: lost connection, serialization failure,
        deadlock, server shutting down or out of connections."""
        state = self.sqlstate
        return state.startswith(("08", "53", "57P")) or state in ("40001", "40P01", "CONNECTION")

    @property
    def timed_out(self) -> bool:
        """A bound ran out (lock_timeout, statement_timeout, the request's deadline):
        answered 503 at once — retrying would only wait again."""
        return self.sqlstate in ("55P03", "57014", "TIMEOUT")

    @property
    def misconfigured(self) -> bool:
        """The database refuses us for good (wrong password, no such database or role,
        missing table or permission): retrying cannot help, an operator must act."""
        return self.sqlstate.startswith(("28", "3D", "42")) or self.sqlstate == "CONFIG"

    @property
    def data_problem(self) -> bool:
        """A value or constraint problem of one change (classes 22 and 23)."""
        return self.sqlstate.startswith(("22", "23"))


def _sort(error: Exception) -> DbError | None:
    """Files an exception by what it is; None for a bug of ours (it stays a 500)."""
    import pg8000.exceptions

    fields = error.args[0] if error.args and isinstance(error.args[0], dict) else None
    if fields and "C" in fields:
        return DbError(str(fields["C"]), str(fields.get("M", "")))
    if isinstance(error, UnicodeEncodeError):
        # A parameter Postgres cannot hold (a lone surrogate): a bad value, never an
        # outage. Validation refuses these first; this is the backstop.
        return DbError("22021", "a value cannot be encoded as UTF-8")
    if isinstance(error, socket.timeout | TimeoutError):
        return DbError("TIMEOUT", "the database did not answer in time")
    if isinstance(error, (pg8000.exceptions.InterfaceError, *_CONNECTION_ERRORS)):
        return DbError("CONNECTION", f"{type(error).__name__}: {error}")
    return None


class Db:
    """One connection for one request; counts statements (the contract bounds them)."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        try:
            self.conn = connect()
        except Exception as error:
            sorted_error = _sort(error)
            if sorted_error is None:
                # A bad URL or setting is no outage; anything else a host's socket layer
                # raises (a runtime's own error types) is taken as the database being away.
                bad_setting = isinstance(error, ValueError | TypeError | KeyError)
                state = "CONFIG" if bad_setting else "CONNECTION"
                sorted_error = DbError(state, f"cannot connect: {type(error).__name__}")
            raise sorted_error from error
        self.statements = 0

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        self.statements += 1
        try:
            return self.conn.run(sql, **params) or []
        except Exception as error:
            sorted_error = _sort(error)
            if sorted_error is None:
                raise
            raise sorted_error from error

    def close(self) -> None:
        # Closing a broken connection must not mask the error that broke it.
        with contextlib.suppress(Exception):
            self.conn.close()
