"""Validation of the request body at the edge: shape errors are a 400 before any work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from sync import jsontext
from sync.http import ApiError
from sync.schema import storable

OPS = ("insert", "update", "delete")
MAX_ID_LENGTH = 200


@dataclass(slots=True)
class RawChange:
    """One outbox row as sent; its `row` is not checked against the schema yet. Never
    changed after parsing (not frozen only because a frozen dataclass is slow to build,
    and a batch builds one per change)."""

    id: int | str
    table: str
    op: str
    row: dict[str, Any]
    position: int  # place in the batch: among equal clocks the later write wins


@dataclass(frozen=True)
class SyncRequest:
    last_sync_at: str | None
    changes: list[RawChange]
    schema_hash: str | None = None  # the schema the client was built for (GET /api/schema)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def parse_json(body: bytes) -> Any:
    try:
        return jsontext.loads(body)
    except jsontext.JsonTextError as error:
        raise bad_request(f"body is not valid JSON: {error}") from None


def parse_sync_request(body: bytes, max_changes: int) -> SyncRequest:
    data = parse_json(body)
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object")
    last = data.get("lastSyncAt")
    if last is not None and (not isinstance(last, str) or not last):
        raise bad_request("lastSyncAt must be null or a cursor string from an earlier response")
    schema_hash = data.get("schemaHash")
    if schema_hash is not None and (
        not isinstance(schema_hash, str) or not 0 < len(schema_hash) <= MAX_ID_LENGTH
    ):
        raise bad_request(f"schemaHash must be null or a string of 1 to {MAX_ID_LENGTH} characters")
    changes = data.get("changes")
    if not isinstance(changes, list):
        raise bad_request("changes must be an array (it may be empty)")
    if len(changes) > max_changes:
        raise ApiError(
            413,
            "payload_too_large",
            f"{len(changes)} changes is more than MAX_CHANGES ({max_changes}); send them in parts",
        )
    seen: set[str] = set()
    parsed: list[RawChange] = []
    for position, change in enumerate(changes):
        # The common case is decided with exact type checks (json.loads makes no subclasses);
        # anything unusual goes through _refuse, which finds the message.
        if type(change) is not dict:
            _refuse(position, change, seen)
        change_id = change.get("id")
        table = change.get("table")
        op = change.get("op")
        row = change.get("row")
        kind = type(change_id)
        if kind is int:
            name = str(change_id)
        elif kind is str and 0 < len(change_id) <= MAX_ID_LENGTH and storable(change_id):
            name = change_id
        else:
            _refuse(position, change, seen)
        if name in seen or type(table) is not str or op not in OPS or type(row) is not dict:
            _refuse(position, change, seen)
        seen.add(name)
        parsed.append(RawChange(change_id, table, op, row, position))
    return SyncRequest(last, parsed, schema_hash)


def _refuse(position: int, change: Any, seen: set[str]) -> NoReturn:
    """The 400 for a change that is not well formed, with the message for its first fault."""
    where = f"changes[{position}]"
    if not isinstance(change, dict):
        raise bad_request(f"{where} must be an object")
    change_id = change.get("id")
    if isinstance(change_id, bool) or not isinstance(change_id, int | str):
        raise bad_request(f"{where}.id must be an integer or a string")
    if isinstance(change_id, str) and not 0 < len(change_id) <= MAX_ID_LENGTH:
        raise bad_request(f"{where}.id must be 1 to {MAX_ID_LENGTH} characters")
    if isinstance(change_id, str) and not storable(change_id):
        # The answer echoes ids: one it cannot encode would fail after the commit.
        raise bad_request(f"{where}.id must be text without NUL or lone surrogates")
    if str(change_id) in seen:
        raise bad_request(f"{where}.id {change_id!r} appears twice in the batch")
    if not isinstance(change.get("table"), str):
        raise bad_request(f"{where}.table must be a string")
    if change.get("op") not in OPS:
        raise bad_request(f"{where}.op must be one of insert, update, delete")
    if not isinstance(change.get("row"), dict):
        raise bad_request(f"{where}.row must be an object")
    raise AssertionError(f"{where} was refused without a reason")  # a bug: the checks differ
