"""Builders for changes and rows of the example schema."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

_ids = count(1)
BASE = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    """A client clock reading `seconds` after a fixed moment, as ISO-8601 with zone."""
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def change(table: str, op: str, row: dict[str, Any], change_id: Any = None) -> dict[str, Any]:
    return {
        "id": next(_ids) if change_id is None else change_id,
        "table": table,
        "op": op,
        "row": row,
    }


def todo(todo_id: str, title: str, clock: float, **more: Any) -> dict[str, Any]:
    return {"id": todo_id, "title": title, "updated_at": at(clock), **more}


def project(project_id: str, name: str, clock: float, **more: Any) -> dict[str, Any]:
    return {"id": project_id, "name": name, "updated_at": at(clock), **more}


def rows_of(entries: list[dict], table: str) -> dict[str, dict]:
    """Applies pulled entries in order to an empty table: what a client would hold."""
    state: dict[str, dict] = {}
    for entry in entries:
        if entry["table"] != table:
            continue
        key = entry["row"]["id" if table != "user_settings" else "user_id"]
        if entry["op"] == "upsert":
            state[key] = entry["row"]
        else:
            state.pop(key, None)
    return state


def same_instant(a: str, b: str) -> bool:
    parse = lambda s: datetime.fromisoformat(s)  # noqa: E731
    return parse(a) == parse(b)


KEYS = {"user_settings": "user_id"}  # the example's tables not keyed by `id`


def apply_pulled(tables: dict[str, dict[str, dict]], entries: list[dict[str, Any]]) -> None:
    """An answer's pulledChanges applied to a device's tables, as the client kit does: an
    upsert replaces the row, a delete removes it."""
    for entry in entries:
        rows = tables.setdefault(entry["table"], {})
        key = entry["row"][KEYS.get(entry["table"], "id")]
        if entry["op"] == "upsert":
            rows[key] = entry["row"]
        else:
            rows.pop(key, None)
