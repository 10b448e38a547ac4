"""Fixtures: one real Postgres per test run, a fresh migrated database per test, the app
driven directly and over real HTTP, and real signed tokens."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pg8000.native
import pytest

from devtools.pgcluster import Cluster
from devtools.token import make_token
from serve import serve
from sync.app import App
from sync.http import Request
from sync.migrate import connect_url, migrate
from sync.settings import Settings

SECRET = "test-secret-" + secrets.token_hex(16)
TEMPLATE = "sync_template"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    pg = Cluster(tmp_path_factory.mktemp("pg") / "cluster", fast=True)
    pg.start()
    try:
        url = pg.create_database(TEMPLATE)
        migrate(url, say=lambda _line: None)
        yield pg
    finally:
        pg.destroy()


def clone_database(cluster: Cluster, prefix: str = "t_") -> str:
    """A new database cloned from the migrated template; its URL."""
    name = prefix + uuid.uuid4().hex[:12]
    con = connect_url(cluster.url())
    try:
        con.run(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
    finally:
        con.close()
    return cluster.url(database=name)


@pytest.fixture
def database_url(cluster: Cluster) -> str:
    """A database of its own for each test, cloned from the migrated template."""
    return clone_database(cluster)


@pytest.fixture
def sql(database_url: str) -> Iterator[SqlRunner]:
    runner = SqlRunner(database_url)
    yield runner
    runner.close()


class SqlRunner:
    """Direct SQL, as another program (an admin dashboard, a cron job) would write."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.con = connect_url(url)

    def __call__(self, statement: str, **params: Any) -> list[list[Any]]:
        return self.con.run(statement, **params) or []

    def connect(self) -> pg8000.native.Connection:
        return connect_url(self.url)

    def close(self) -> None:
        self.con.close()


def user_id() -> str:
    return str(uuid.uuid4())


def token_for(user: str, **overrides: Any) -> str:
    return make_token(SECRET, user, **overrides)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Api:
    """Calls the server the way a client does; `transport` is the package or real HTTP."""

    app: App
    transport: str
    base_url: str | None = None
    calls: list[Reply] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if self.transport == "package":
            if body is not None:
                headers.setdefault("content-length", str(len(body)))
            response = asyncio.run(self.app.handle(Request(method, path, headers, body or b"")))
            reply = Reply(response.status, response.headers, _decode(response.body))
        else:
            req = urllib.request.Request(
                self.base_url + path, data=body, method=method, headers=headers
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as answer:
                    reply = Reply(
                        answer.status,
                        {k.lower(): v for k, v in answer.headers.items()},
                        _decode(answer.read()),
                    )
            except urllib.error.HTTPError as error:
                reply = Reply(
                    error.code,
                    {k.lower(): v for k, v in error.headers.items()},
                    _decode(error.read()),
                )
        self.calls.append(reply)
        return reply

    def sync(
        self,
        user: str | None,
        changes: list[dict[str, Any]] | None = None,
        cursor: str | None = None,
        token: str | None = None,
        **extra: Any,
    ) -> Reply:
        payload = {"lastSyncAt": cursor, "changes": changes or [], **extra}
        headers = {"content-type": "application/json"}
        if token or user:
            headers["authorization"] = f"Bearer {token or token_for(user)}"
        return self.request("POST", "/api/sync", json.dumps(payload).encode(), headers)

    def ok(
        self, user: str, changes: list[dict[str, Any]] | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        reply = self.sync(user, changes, cursor)
        assert reply.status == 200, reply.body
        return reply.body

    def pull_all(self, user: str, cursor: str | None = None) -> tuple[list[dict], str]:
        """Pulls until hasMore is false; returns every entry and the final cursor."""
        entries: list[dict] = []
        while True:
            body = self.ok(user, [], cursor)
            entries += body["pulledChanges"]
            cursor = body["newServerTimestamp"]
            if not body["hasMore"]:
                return entries, cursor


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def build_app(database_url: str, **env: str) -> App:
    settings = Settings.from_env({"SUPABASE_JWT_SECRET": SECRET, **env})
    return App(settings, lambda: connect_url(database_url), log=lambda _record: None)


@pytest.fixture(params=["package", "http"])
def api(request: pytest.FixtureRequest, database_url: str) -> Iterator[Api]:
    """The contract suite runs twice: against the package and through the local host."""
    yield from _api(request.param, build_app(database_url))


@pytest.fixture
def make_api(database_url: str):
    """An Api with other settings, e.g. make_api(PULL_PAGE_SIZE="2")."""
    started: list[Any] = []

    def make(transport: str = "package", **env: str) -> Api:
        gen = _api(transport, build_app(database_url, **env))
        started.append(gen)
        return next(gen)

    yield make
    for gen in started:
        gen.close()


def _api(transport: str, app: App) -> Iterator[Api]:
    if transport == "package":
        yield Api(app, "package")
        return
    server = serve(app, "127.0.0.1", 0, None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Api(app, "http", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


ROOT = Path(__file__).resolve().parents[1]
