"""Routing and the sync transaction: authenticate, push, pull, commit — in one place.

Both hosts (the Workers adapter `src/entry.py` and the local host `src/serve.py`) hand
requests to `App.handle`; nothing below knows which host it runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync import batch as batching
from sync import pull as pulling
from sync import push as pushing
from sync import sql
from sync.auth import Authenticator, FetchJson
from sync.catalog import Loaded, Source, describe
from sync.cursor import Cursor
from sync.db import Connection, Db, DbError
from sync.http import (
    ApiError,
    Request,
    Response,
    cors_headers,
    encode_json,
    error_response,
    json_headers,
    json_response,
)
from sync.limits import InFlight, RateLimit, rate_limited
from sync.protocol import RawChange, parse_sync_request
from sync.schema import Registry, Table, format_timestamp
from sync.settings import Settings

ROUTES = {"/api/sync": ("POST",), "/api/health": ("GET", "HEAD"), "/api/schema": ("GET",)}
CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
UNAVAILABLE = "the database is unavailable; retry later"
RETRY_AFTER = {"retry-after": "2"}  # seconds a client is asked to wait after a 503


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
    body: bytes  # encoded before COMMIT: nothing may fail after it
    counts: dict[str, Any]
    statements: int
    attempts: int


def unavailable(message: str = UNAVAILABLE) -> ApiError:
    return ApiError(503, "unavailable", message, dict(RETRY_AFTER))


def _describe(error: DbError) -> str:
    """For the log: what the database refused, by SQLSTATE (never a password or row)."""
    return f"{error.sqlstate}: {error.message[:200]}"


class App:
    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], Connection],
        fetch_json: FetchJson | None = None,
        registry: Registry | None = None,
        log: Callable[[dict[str, Any]], None] = log_line,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rate_limit: RateLimit | None = None,
        exclusive: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.connect = connect
        self.rate_limit = rate_limit  # a limit across isolates (Workers' binding), if any
        # Held around every stretch of synchronous database work: the Workers host passes
        # its isolate guard (two requests' driver calls must not interleave in one isolate).
        # Admission (auth, limits) happens before it, so a hog's extra requests are
        # refused at once instead of queueing for the guard.
        self.exclusive = exclusive or contextlib.nullcontext
        self.inflight = InFlight(settings.max_inflight_per_user, settings.max_inflight)
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
            if error.status == 401:  # why (expired, bad signature, unknown key …): fixed texts
                trace.fields["reason"] = ascii(error.message[:120])[1:-1]
        except Exception as error:  # the body never carries the details, the log does
            response = error_response(ApiError(500, "internal", "internal server error"))
            trace.fields["error"] = "internal"
            trace.fields["exception"] = type(error).__name__
        allowed = cors_headers(origin, self.settings.allowed_origins)
        if origin and not allowed:  # the browser will block it; say so on this side too
            trace.fields["cors_refused"] = ascii(origin[:100])[1:-1]
        response.headers.update(allowed)
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
            return await self._health(trace)
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
            async with self.exclusive():
                loaded = self.schema.fresh(self.connect)
        except DbError as error:
            if not error.transient:
                raise
            raise ApiError(503, "unavailable", "the database is unavailable; retry later") from None
        return json_response(200, {"schemaHash": loaded.hash, "tables": describe(loaded.registry)})

    async def _health(self, trace: Trace) -> Response:
        try:
            async with self.exclusive():
                db = Db(self.connect)
                try:
                    db.run(sql.HEALTH)
                finally:
                    db.close()
        except DbError as error:
            if error.misconfigured:
                trace.fields["misconfigured"] = _describe(error)
            state = "misconfigured" if error.misconfigured else "unreachable"
            return json_response(503, {"ok": False, "db": state}, dict(RETRY_AFTER))
        return json_response(200, {"ok": True, "db": "ok"})

    async def _sync(self, request: Request, trace: Trace) -> Response:
        settings = self.settings
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
        declared = request.headers.get("content-length", "")
        if (CONTENT_LENGTH.fullmatch(declared) and int(declared) > settings.max_body_bytes) or len(
            request.body
        ) > settings.max_body_bytes:
            raise ApiError(
                413, "payload_too_large", f"body is over MAX_BODY_BYTES ({settings.max_body_bytes})"
            )
        user = await self.auth.user_id(request.headers.get("authorization"))
        trace.fields["user_id"] = user
        trace.phase("auth")
        if self.rate_limit is not None and not await self.rate_limit(user):
            raise rate_limited("too many syncs of this user; retry later", 10)
        with self.inflight.admit(user):
            return await self._admitted(request, user, trace)

    async def _admitted(self, request: Request, user: str, trace: Trace) -> Response:
        settings = self.settings
        batch = parse_sync_request(request.body, settings.max_changes)
        cursor = Cursor.decode(batch.last_sync_at)

        # The batch is checked before the transaction, against the registry last read, so
        # no connection (nor, on Workers, the isolate guard) is held while Python works
        # through it; only when BEGIN finds the registry moved is it checked again.
        known = self.schema.current
        early = None
        if known is not None:
            early = batching.plan(batch.changes, known.registry, user, self.now(), settings)
            trace.phase("validate")

        def plan_for(loaded: Loaded) -> batching.Plan:
            """The batch checked against the registry the transaction found current."""
            nonlocal known, early
            self._check_schema_hash(batch.schema_hash, loaded)
            if early is None or loaded is not known:
                early = batching.plan(batch.changes, loaded.registry, user, self.now(), settings)
                known = loaded
                trace.phase("validate")
            return early

        result = await self._with_retries(plan_for, user, cursor, trace)
        trace.fields.update(
            changes=len(batch.changes),
            **result.counts,
            statements=result.statements,
            attempts=result.attempts,
        )
        return Response(200, json_headers(), result.body)

    async def _with_retries(
        self,
        plan_for: Callable[[Loaded], batching.Plan],
        user: str,
        cursor: Cursor,
        trace: Trace,
    ) -> SyncResult:
        """Runs the transaction; a transient failure (lost connection, serialization
        failure, deadlock) reruns it whole, which is safe: a re-run is a re-send, and
        re-sends are idempotent. A constraint failure reruns it in careful mode."""
        settings = self.settings
        deadline = trace.started + settings.request_timeout_ms / 1000
        careful = False
        attempt = 0
        while True:
            attempt += 1
            left_ms = int((deadline - time.perf_counter()) * 1000)
            if left_ms < 100:
                trace.fields["last_error"] = "deadline"
                raise unavailable("the request ran out of time; retry later")
            async with self.exclusive():
                outcome = self._attempt(plan_for, user, cursor, careful, left_ms, attempt, trace)
            if isinstance(outcome, SyncResult):
                return outcome
            if outcome == "careful":
                careful = True
                attempt -= 1  # not a failure of the database
                continue
            await asyncio.sleep(0.05 * 2 ** (attempt - 1))  # outside the guard

    def _attempt(
        self,
        plan_for: Callable[[Loaded], batching.Plan],
        user: str,
        cursor: Cursor,
        careful: bool,
        left_ms: int,
        attempt: int,
        trace: Trace,
    ) -> SyncResult | str:
        """One try of the transaction, on a connection of its own: its result, or
        "careful" / "retry" for the caller to act on; terminal failures raise ApiError."""
        db: Db | None = None
        try:
            db = Db(self.connect)
            trace.phase("connect")
            body, counts = self._transaction(db, plan_for, user, cursor, careful, left_ms, trace)
            return SyncResult(body, counts, db.statements, attempt)
        except pushing.NeedCareful:
            _rollback(db)
            return "careful"
        except pushing.TooManyFailures:
            raise ApiError(
                413,
                "payload_too_large",
                "too many changes of this batch fail constraints to single them out; "
                "send it in smaller parts",
            ) from None
        except DbError as error:
            _rollback(db)
            trace.fields["last_error"] = error.sqlstate
            if error.misconfigured:
                trace.fields["misconfigured"] = _describe(error)
                raise ApiError(500, "internal", "the server is misconfigured") from None
            if error.timed_out:
                raise unavailable("the database is busy; retry later") from None
            if not error.transient:
                raise
            if attempt >= self.settings.max_attempts:
                raise unavailable() from None
            return "retry"
        finally:
            if db is not None:
                db.close()

    def _transaction(
        self,
        db: Db,
        plan_for: Callable[[Loaded], batching.Plan],
        user: str,
        cursor: Cursor,
        careful: bool,
        left_ms: int,
        trace: Trace,
    ) -> tuple[bytes, dict[str, Any]]:
        """The sandwich: one transaction around push and pull. Everything is read inside
        it, so Hyperdrive's query cache never answers a sync. The answer is built and
        encoded before COMMIT, so nothing can fail once the changes are stored."""
        # BEGIN with the transaction's bounds, and the registry's stamp, in one round
        # trip; the catalog is read in this transaction only when the stamp moved.
        loaded = self.schema.begin(db, sql.bounds(self.settings, left_ms))
        plan = plan_for(loaded)
        registry = loaded.registry
        outcome = pushing.apply(db, registry, plan.winners, user, careful)
        trace.phase("push")

        # Settle every change that was not applied exactly as sent: read what the server
        # holds for its key. The owner tells a change that lost to a newer version (or a
        # tie, as on a re-send) from one aimed at another user's row.
        # Another user's keys (found by the vet) need no read: they are answered with a
        # delete, and nothing of the stored row.
        to_read = {
            (c.table.name, c.key)
            for c in plan.winners
            if (outcome.get(id(c)) != batching.APPLIED or not c.as_sent)
            and not _forbidden(outcome.get(id(c)))
        }
        to_read |= {(r.table.name, r.key) for r in plan.rejected if r.table and r.key}
        # Rows an earlier answer owed (they did not fit its byte budget) come first.
        owed = {slot for slot in cursor.owed if slot[0] in registry.by_name}
        budget = self.settings.max_answer_bytes
        stored = (
            pulling.read_keys(db, registry, user, to_read | owed, budget)
            if to_read or owed
            else None
        )
        for change in plan.winners:
            if id(change) not in outcome:
                owner = stored.owners.get((change.table.name, change.key)) if stored else None
                if owner not in (None, user):
                    result = batching.Reject("forbidden", "the row belongs to another user")
                elif owner is None and change.missing_required:
                    column = change.missing_required[0]
                    result = batching.Reject(
                        "constraint_violation", f"a new row needs column {column}"
                    )
                else:
                    result = batching.STALE
                outcome[id(change)] = result

        accepted: list[int | str] = []
        rejected: list[dict[str, Any]] = []
        forced: dict[pulling.Slot, pulling.Entry] = {}
        for change in plan.winners:
            result = outcome[id(change)]
            ids = [change.raw, *change.followers]
            if isinstance(result, batching.Reject):
                rejected += [_rejection(raw, result) for raw in ids]
            else:
                accepted += [raw.id for raw in ids]
            if result != batching.APPLIED or not change.as_sent:
                visible = not _forbidden(result)
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
        still_owed: set[pulling.Slot] = set()
        if stored is not None:
            still_owed = {slot for slot in stored.owed if slot not in stored.entries}
            for slot in still_owed:
                forced.pop(slot, None)  # its content did not fit: it goes in the cursor
            for slot in owed - still_owed:
                if slot in stored.entries:
                    forced.setdefault(slot, stored.entries[slot])
                elif stored.owners.get(slot) != user:
                    table = registry.by_name[slot[0]]
                    forced.setdefault(slot, pulling.delete_entry(table, slot[1], _now(self)))

        left = budget - (stored.size if stored else 0)
        if left > 0 or not forced:
            page = pulling.pull(
                db, registry, user, cursor, self.settings.pull_page_size, left, not forced
            )
        else:  # the converge rows took the whole answer: the page waits for the next one
            page = pulling.Page({}, cursor, True)
        trace.phase("pull")
        forced.update(page.entries)  # the pull read later: its state is the newer one
        next_cursor = dataclasses.replace(page.cursor, owed=tuple(sorted(still_owed)))
        pulled = pulling.ordered(registry, forced)
        has_more = page.has_more or bool(still_owed)
        body = encode_json(
            {
                "success": True,
                "acceptedIds": accepted,
                "rejected": rejected,
                "pulledChanges": pulled,
                "newServerTimestamp": next_cursor.encode(),
                "hasMore": has_more,
            }
        )
        trace.phase("answer")
        db.run(sql.COMMIT)
        trace.phase("commit")
        counts = {
            "accepted": len(accepted),
            "rejected": len(rejected),
            "pulled": len(pulled),
            "owed": len(still_owed),
            "has_more": has_more,
            "bytes": len(body),
            "reject_codes": dict(Counter(r["code"] for r in rejected)),
        }
        return body, counts


def _forbidden(result: batching.Reject | str | None) -> bool:
    return isinstance(result, batching.Reject) and result.code == "forbidden"


def _now(app: App) -> str:
    return format_timestamp(app.now())


def _rollback(db: Db | None) -> None:
    if db is not None:
        with contextlib.suppress(DbError):
            db.run(sql.ROLLBACK)


def _rejection(raw: RawChange, reject: batching.Reject) -> dict[str, Any]:
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
