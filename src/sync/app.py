"""Routing and the sync transaction: authenticate, push, pull, commit — in one place.

Both hosts (the Workers adapter `src/entry.py` and the local host `src/serve.py`) hand
requests to `App.handle`; nothing below knows which host it runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync import pull as pulling
from sync import push as pushing
from sync import sql
from sync.auth import Authenticator, FetchJson
from sync.catalog import Loaded, Source, describe
from sync.cursor import Cursor
from sync.db import Connection, Db, DbError
from sync.http import ApiError, Request, Response, cors_headers, error_response, json_response
from sync.protocol import RawChange, parse_sync_request
from sync.schema import Registry, Table
from sync.settings import Settings

ROUTES = {"/api/sync": ("POST",), "/api/health": ("GET", "HEAD"), "/api/schema": ("GET",)}


def log_line(record: dict[str, Any]) -> None:
    print(json.dumps(record, separators=(",", ":"), default=str), file=sys.stdout, flush=True)


@dataclass
class Trace:
    """What the request log line says: ids, counts and time per phase; never row content
    or tokens."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    _mark: float = 0.0

    def __post_init__(self) -> None:
        self._mark = self.started

    def phase(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round((now - self._mark) * 1000, 2) + self.phases.get(name, 0.0)
        self._mark = now


@dataclass
class SyncResult:
    body: dict[str, Any]
    statements: int
    attempts: int


class App:
    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], Connection],
        fetch_json: FetchJson | None = None,
        registry: Registry | None = None,
        log: Callable[[dict[str, Any]], None] = log_line,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.connect = connect
        # The registry: read from the database catalog (sync.catalog), unless a test or
        # tool gives one in code.
        self.schema = Source(registry)
        self.auth = Authenticator(settings, fetch_json)
        self.log = log
        self.now = now

    async def handle(self, request: Request) -> Response:
        trace = Trace(request.headers.get("cf-ray") or uuid.uuid4().hex)
        origin = request.headers.get("origin")
        try:
            response = await self._route(request, trace)
        except ApiError as error:
            response = error_response(error)
            trace.fields["error"] = error.code
        except Exception as error:  # the body never carries the details, the log does
            response = error_response(ApiError(500, "internal", "internal server error"))
            trace.fields["error"] = "internal"
            trace.fields["exception"] = type(error).__name__
        response.headers.update(cors_headers(origin, self.settings.allowed_origins))
        response.headers["x-request-id"] = trace.request_id
        if request.method == "HEAD":
            response.body = b""
        self.log(
            {
                "msg": "request",
                "request_id": trace.request_id,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "ms": round((time.perf_counter() - trace.started) * 1000, 2),
                "phases": trace.phases,
                **trace.fields,
            }
        )
        return response

    async def _route(self, request: Request, trace: Trace) -> Response:
        if request.method == "OPTIONS":
            return Response(204)
        methods = ROUTES.get(request.path)
        if methods is None:
            raise ApiError(404, "not_found", f"no route {request.path}")
        if request.method not in methods:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.path} takes {' or '.join(methods)}",
                {"allow": ", ".join((*methods, "OPTIONS"))},
            )
        if request.path == "/api/health":
            return self._health()
        if request.path == "/api/schema":
            return await self._schema(request, trace)
        return await self._sync(request, trace)

    def _check_schema_hash(self, sent: str | None, loaded: Loaded) -> None:
        """A client built for another schema changes nothing: its changes could only be
        refused column by column, and its pulls misread. `loaded` is current: its stamp
        was read in this request's transaction."""
        if sent is not None and sent != loaded.hash:
            raise ApiError(
                409,
                "schema_mismatch",
                f"the client was built for schema {sent[:64]}, the server has {loaded.hash}: "
                "regenerate the client's schema (GET /api/schema); nothing was applied",
            )

    async def _schema(self, request: Request, trace: Trace) -> Response:
        trace.fields["user_id"] = await self.auth.user_id(request.headers.get("authorization"))
        try:
            loaded = self.schema.fresh(self.connect)
        except DbError as error:
            if not error.transient:
                raise
            raise ApiError(503, "unavailable", "the database is unavailable; retry later") from None
        return json_response(200, {"schemaHash": loaded.hash, "tables": describe(loaded.registry)})

    def _health(self) -> Response:
        try:
            db = Db(self.connect)
            try:
                db.run(sql.HEALTH)
            finally:
                db.close()
        except DbError:
            return json_response(503, {"ok": False, "db": "unreachable"})
        return json_response(200, {"ok": True, "db": "ok"})

    async def _sync(self, request: Request, trace: Trace) -> Response:
        settings = self.settings
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
        declared = request.headers.get("content-length", "")
        if (declared.isdigit() and int(declared) > settings.max_body_bytes) or len(
            request.body
        ) > settings.max_body_bytes:
            raise ApiError(
                413, "payload_too_large", f"body is over MAX_BODY_BYTES ({settings.max_body_bytes})"
            )
        user = await self.auth.user_id(request.headers.get("authorization"))
        trace.fields["user_id"] = user
        trace.phase("auth")
        batch = parse_sync_request(request.body, settings.max_changes)
        cursor = Cursor.decode(batch.last_sync_at)

        def plan_for(loaded: Loaded) -> pushing.Plan:
            """The batch checked against the registry the transaction found current."""
            self._check_schema_hash(batch.schema_hash, loaded)
            plan = pushing.plan(batch.changes, loaded.registry, user, self.now(), settings)
            trace.phase("validate")
            return plan

        result = await self._with_retries(plan_for, user, cursor, trace)
        body = result.body
        trace.fields.update(
            changes=len(batch.changes),
            accepted=len(body["acceptedIds"]),
            rejected=len(body["rejected"]),
            pulled=len(body["pulledChanges"]),
            has_more=body["hasMore"],
            statements=result.statements,
            attempts=result.attempts,
        )
        return json_response(200, body)

    async def _with_retries(
        self,
        plan_for: Callable[[Loaded], pushing.Plan],
        user: str,
        cursor: Cursor,
        trace: Trace,
    ) -> SyncResult:
        """Runs the transaction; a transient failure (lost connection, serialization
        failure, deadlock) reruns it whole, which is safe: a re-run is a re-send, and
        re-sends are idempotent. A constraint failure reruns it in careful mode."""
        careful = False
        attempt = 0
        while True:
            attempt += 1
            db: Db | None = None
            try:
                db = Db(self.connect)
                trace.phase("connect")
                body = self._transaction(db, plan_for, user, cursor, careful, trace)
                return SyncResult(body, db.statements, attempt)
            except pushing.NeedCareful:
                careful = True
                attempt -= 1  # not a failure of the database
                _rollback(db)
            except DbError as error:
                _rollback(db)
                if not error.transient:
                    raise
                trace.fields["last_error"] = error.sqlstate
                if attempt >= self.settings.max_attempts:
                    raise ApiError(
                        503, "unavailable", "the database is unavailable; retry later"
                    ) from None
                await asyncio.sleep(0.05 * 2 ** (attempt - 1))
            finally:
                if db is not None:
                    db.close()

    def _transaction(
        self,
        db: Db,
        plan_for: Callable[[Loaded], pushing.Plan],
        user: str,
        cursor: Cursor,
        careful: bool,
        trace: Trace,
    ) -> dict[str, Any]:
        """The sandwich: one transaction around push and pull. Everything is read inside
        it, so Hyperdrive's query cache never answers a sync."""
        # BEGIN, and the registry's stamp in the same round trip; the catalog is read in
        # this transaction only when the stamp moved (sync.catalog).
        loaded = self.schema.begin(db)
        plan = plan_for(loaded)
        registry = loaded.registry
        outcome = pushing.apply(db, registry, plan.winners, user, careful)
        trace.phase("push")

        # Settle every change that was not applied exactly as sent: read what the server
        # holds for its key. The owner tells a change that lost to a newer version (or a
        # tie, as on a re-send) from one aimed at another user's row.
        to_read = {
            (c.table.name, c.key)
            for c in plan.winners
            if outcome.get(id(c)) != pushing.APPLIED or not c.as_sent
        }
        to_read |= {(r.table.name, r.key) for r in plan.rejected if r.table and r.key}
        stored = pulling.read_keys(db, registry, user, to_read) if to_read else None
        for change in plan.winners:
            if id(change) not in outcome:
                owner = stored.owners.get((change.table.name, change.key)) if stored else None
                if owner not in (None, user):
                    result = pushing.Reject("forbidden", "the row belongs to another user")
                elif owner is None and change.missing_required:
                    column = change.missing_required[0]
                    result = pushing.Reject(
                        "constraint_violation", f"a new row needs column {column}"
                    )
                else:
                    result = pushing.STALE
                outcome[id(change)] = result

        accepted: list[int | str] = []
        rejected: list[dict[str, Any]] = []
        forced: dict[pulling.Slot, pulling.Entry] = {}
        for change in plan.winners:
            result = outcome[id(change)]
            ids = [change.raw, *change.followers]
            if isinstance(result, pushing.Reject):
                rejected += [_rejection(raw, result) for raw in ids]
            else:
                accepted += [raw.id for raw in ids]
            if result != pushing.APPLIED or not change.as_sent:
                visible = not (isinstance(result, pushing.Reject) and result.code == "forbidden")
                _converge(
                    forced,
                    stored if visible else None,
                    change.table,
                    change.key,
                    change.row["updated_at"],
                )
        for refused in plan.rejected:
            rejected.append(_rejection(refused.raw, refused.reject))
            if refused.table:
                visible = refused.reject.code != "forbidden"
                _converge(
                    forced, stored if visible else None, refused.table, refused.key, refused.clock
                )

        page = pulling.pull(db, registry, user, cursor, self.settings.pull_page_size)
        trace.phase("pull")
        db.run(sql.COMMIT)
        trace.phase("commit")
        forced.update(page.entries)  # the pull read later: its state is the newer one
        return {
            "success": True,
            "acceptedIds": accepted,
            "rejected": rejected,
            "pulledChanges": pulling.ordered(registry, forced),
            "newServerTimestamp": page.cursor.encode(),
            "hasMore": page.has_more,
        }


def _rollback(db: Db | None) -> None:
    if db is not None:
        with contextlib.suppress(DbError):
            db.run(sql.ROLLBACK)


def _rejection(raw: RawChange, reject: pushing.Reject) -> dict[str, Any]:
    return {"id": raw.id, "code": reject.code, "message": reject.message}


def _converge(
    forced: dict[pulling.Slot, pulling.Entry],
    stored: pulling.Stored | None,
    table: Table,
    key: str | None,
    clock: str,
) -> None:
    """Answers a change that did not apply as sent with the caller's row for its key, or
    a delete where the caller has none (never another user's row)."""
    if key is None:
        return  # no usable key: the client keeps the change in its rejected store
    slot = (table.name, key)
    entry = stored.entries.get(slot) if stored else None
    forced[slot] = entry or pulling.delete_entry(table, key, clock)
