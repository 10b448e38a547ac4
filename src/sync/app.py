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
from sync.protocol import parse_sync_request
from sync.schema import Registry
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


class StaleRegistry(Exception):
    """The registry last read may be older than the client's schema: read it first."""


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
            trace.fields["raised_at"] = _raised_at(error)
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

        def plan_for(loaded: Loaded, confirmed: bool = True) -> batching.Plan:
            """The batch checked against the registry the transaction found current
            (`confirmed`), or the one last read, which the message itself then checks.
            A client's schema hash that differs from an unconfirmed registry may be
            newer than it: the registry is read first, then compared."""
            nonlocal known, early
            if not confirmed and batch.schema_hash not in (None, loaded.hash):
                raise StaleRegistry
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
        plan_for: Callable[..., batching.Plan],
        user: str,
        cursor: Cursor,
        trace: Trace,
    ) -> SyncResult:
        """Runs the transaction; a transient failure (lost connection, serialization
        failure, deadlock) reruns it whole, which is safe: a re-run is a re-send, and
        re-sends are idempotent. A constraint failure reruns it in careful mode; a
        registry that moved since the message was written reruns it on the new one."""
        settings = self.settings
        deadline = trace.started + settings.request_timeout_ms / 1000
        mode = "fast"
        attempt = 0
        while True:
            attempt += 1
            left_ms = int((deadline - time.perf_counter()) * 1000)
            if left_ms < 100:
                trace.fields["last_error"] = "deadline"
                raise unavailable("the request ran out of time; retry later")
            async with self.exclusive():
                outcome = self._attempt(plan_for, user, cursor, mode, left_ms, attempt, trace)
            if isinstance(outcome, SyncResult):
                return outcome
            if outcome in ("careful", "reload"):
                mode = outcome if mode == "fast" or outcome == "careful" else mode
                attempt -= 1  # not a failure of the database
                continue
            await asyncio.sleep(0.05 * 2 ** (attempt - 1))  # outside the guard

    def _attempt(
        self,
        plan_for: Callable[..., batching.Plan],
        user: str,
        cursor: Cursor,
        mode: str,
        left_ms: int,
        attempt: int,
        trace: Trace,
    ) -> SyncResult | str:
        """One try of the transaction, on a connection of its own: its result, or
        "careful" / "reload" / "retry" for the caller to act on; terminal failures raise
        ApiError."""
        db: Db | None = None
        try:
            db = Db(self.connect)
            trace.phase("connect")
            body, counts = self._transaction(db, plan_for, user, cursor, mode, left_ms, trace)
            return SyncResult(body, counts, db.statements, attempt)
        except pushing.NeedCareful:
            _rollback(db)
            return "careful"
        except StaleRegistry:
            return "reload"  # nothing was sent yet
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
            if error.sqlstate == sql.SCHEMA_MOVED and mode == "fast":
                return "reload"
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
        plan_for: Callable[..., batching.Plan],
        user: str,
        cursor: Cursor,
        mode: str,
        left_ms: int,
        trace: Trace,
    ) -> tuple[bytes, dict[str, Any]]:
        """The sandwich: one transaction around push and pull, in one message when it can
        (mode "fast": BEGIN, its bounds, the registry check, the push statement, the pull
        statement, COMMIT). Everything is read inside the transaction, so Hyperdrive's
        query cache never answers a sync. Careful mode and a registry reload open the
        transaction on their own first, then the push runs in parts (careful) and the
        pull and COMMIT go together.

        COMMIT travels in the message, so the answer is built after it, from rows the
        database returned; nothing in that is allowed to fail (a failure there would
        still lose nothing: the client re-sends, and a re-send is idempotent)."""
        settings = self.settings
        bounds = sql.bounds(settings, left_ms)
        known = self.schema.current
        opening = ""
        if mode == "fast" and known is not None:
            loaded = known
            check = "" if self.schema.fixed else sql.expect_schema(str(known.stamp))
            opening = sql.script(sql.BEGIN, bounds, check)
        else:
            # The registry is read (or found unchanged) in this transaction: one round trip.
            loaded = self.schema.begin(db, bounds)
        plan = plan_for(loaded, confirmed=not opening or self.schema.fixed)
        registry = loaded.registry
        quiet = pushing.no_echo(plan)
        if mode == "careful":
            pushed = pushing.careful(db, registry, plan, user, quiet)
            push_text = ""
            trace.phase("push")
        else:
            pushed = pushing.Pushed(tuple(sorted({c.table.name for c in plan.winners})))
            push_text = pushing.statement(registry, plan.winners, user, quiet)
        given = pulling.request(
            registry,
            user,
            cursor,
            pushing.settle(plan, pushed),
            pushed.tables,
            settings.pull_page_size,
            settings.max_answer_bytes,
        )
        try:
            rows = db.run(
                sql.script(opening, push_text, sql.pull(registry.tables, given), sql.COMMIT)
            )
        except DbError as error:
            if error.data_problem and mode != "careful":
                raise pushing.NeedCareful from error
            raise
        trace.phase("pull" if mode == "careful" else "sync")
        if push_text:
            pushed.read([r for r in rows if r[0] in PUSH_TAGS])
        pulled = pulling.read(registry, cursor, given, [r for r in rows if r[0] == "p"])
        owed = {slot for slot in cursor.owed if slot[0] in registry.by_name}
        outcome = pushing.outcomes(registry, plan, pushed, pulled, owed, self.now())
        converge = outcome.converge
        still_owed = pulled.owed
        for slot in still_owed:
            converge.pop(slot, None)  # its content did not fit: it goes in the cursor
        converge.update(pulled.entries)  # the page read later: its state is the newer one
        next_cursor = dataclasses.replace(pulled.cursor, owed=tuple(sorted(still_owed)))
        pulled_changes = pulling.ordered(registry, converge)
        has_more = pulled.has_more or bool(still_owed)
        body = answer(outcome, pulled_changes, next_cursor.encode(), has_more)
        trace.phase("answer")
        counts = {
            "accepted": len(outcome.accepted),
            "rejected": len(outcome.rejected),
            "pulled": len(pulled_changes),
            "owed": len(still_owed),
            "has_more": has_more,
            "bytes": len(body),
            "reject_codes": dict(Counter(r["code"] for r in outcome.rejected)),
        }
        return body, counts


PUSH_TAGS = frozenset("olkardxn")


def answer(
    outcome: pushing.Outcome, pulled: list[pulling.Entry], cursor: str, has_more: bool
) -> bytes:
    """The 200 body, in the contract's key order. The pulled changes are JSON text already
    (pulling.Entry); the rest is encoded here."""
    head = encode_json(
        {"success": True, "acceptedIds": outcome.accepted, "rejected": outcome.rejected}
    )
    tail = encode_json({"newServerTimestamp": cursor, "hasMore": has_more})
    changes = ",".join(entry.text for entry in pulled).encode("utf-8")
    return b"".join((head[:-1], b',"pulledChanges":[', changes, b"],", tail[1:]))


def _raised_at(error: BaseException) -> str:
    """Where in this package a bug surfaced (module:function:line of the innermost frame of
    ours), for the log: never the exception's text, which may quote values."""
    place = "?"
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if "/sync/" in code.co_filename or code.co_filename.endswith("entry.py"):
            name = code.co_filename.rsplit("/", 1)[-1]
            place = f"{name}:{code.co_name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return place


def _rollback(db: Db | None) -> None:
    if db is not None:
        with contextlib.suppress(DbError):
            db.run(sql.ROLLBACK)
