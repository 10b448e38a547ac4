"""The database connection as the sync code sees it: statements counted, errors sorted.

A request owns its connection; nothing here is shared between requests, because requests
interleave in one Workers isolate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol


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
        return state.startswith(("08", "53", "57P")) or state in (
            "40001",
            "40P01",
            "55P03",
            "CONNECTION",
        )

    @property
    def data_problem(self) -> bool:
        """A value or constraint problem of one change (classes 22 and 23)."""
        return self.sqlstate.startswith(("22", "23"))


def _sort(error: Exception) -> DbError:
    fields = error.args[0] if error.args and isinstance(error.args[0], dict) else None
    if fields and "C" in fields:
        return DbError(str(fields["C"]), str(fields.get("M", "")))
    # pg8000 InterfaceError, socket and EOF errors: the connection is gone.
    return DbError("CONNECTION", f"{type(error).__name__}: {error}")


class Db:
    """One connection for one request; counts statements (the contract bounds them)."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        try:
            self.conn = connect()
        except Exception as error:  # any failure to connect is the database being away
            raise DbError("CONNECTION", f"cannot connect: {type(error).__name__}") from error
        self.statements = 0

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        self.statements += 1
        try:
            return self.conn.run(sql, **params) or []
        except Exception as error:
            raise _sort(error) from error

    def close(self) -> None:
        # Closing a broken connection must not mask the error that broke it.
        with contextlib.suppress(Exception):
            self.conn.close()
