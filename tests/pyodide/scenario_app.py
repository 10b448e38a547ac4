"""`sync.app.App` on Pyodide, through the routes a stand-in database can answer.

The CPython suite covers the logic; this shows the same package imports and runs on the
Worker's interpreter (no `cryptography`, stub `ssl`, no `hashlib.pbkdf2_hmac`), with a
token pyjwt made there too.
"""

import json
import time
import uuid
from typing import ClassVar

import jwt

from sync.app import App
from sync.app_schema import REGISTRY
from sync.http import Request
from sync.schema import MISSING
from sync.settings import Settings

SECRET = "pyodide-scenario-secret-0123456789abcdef"
SNAPSHOT = "900:905:901,903"
PUSHED = "7b9e6a40-8f0e-4c55-9d43-2f7c61c0a001"


class StandInConnection:
    """Answers statements by how they begin, like the few a health check or a sync sends;
    anything else raises, as a broken database would, so an unexpected statement shows up
    as a failed request and in `sent`. A sync's one message (push, pull, COMMIT) is
    answered as Postgres would: the push statement's rows (the push of PUSHED applies:
    no key comes back as not applied), then the pull's row carrying the snapshot."""

    REPLIES = (
        ("SELECT clock_timestamp()", [["2026-11-24T10:00:00Z"]]),
        # BEGIN with its SET LOCAL bounds and the registry's stamp.
        ("BEGIN", [["1"]]),
        ("ROLLBACK", None),
    )
    PULLED: ClassVar[list[list]] = [
        ["p", SNAPSHOT, None, None, None, None, None, None, None, None, None, None]
    ]
    sent: ClassVar[list[dict]] = []
    opened = closed = 0

    def __init__(self):
        type(self).opened += 1

    def run(self, sql, **params):
        parts = [part[:40] for part in sql.split(";\n")]
        self.sent.append({"sql": sql[:40], "params": sorted(params), "parts": parts})
        if sql.startswith("\nSELECT t.table_name, coalesce(t.share_column"):
            return []  # sync.catalog's SHARES: the stand-in's tables are not shared
        if sql.startswith("\nSELECT t.table_name"):
            return catalog_columns()
        if sql.startswith("\nSELECT child.relname"):
            return [
                [t.name, column, parent]
                for t in REGISTRY.tables
                for column, parent in sorted(t.references.items())
            ]
        if "WITH cur AS" in sql:  # the one message of a sync
            pushed = [["a", "todos", "1", None]] if 'INSERT INTO "todos"' in sql else []
            return pushed + self.PULLED
        for start, reply in self.REPLIES:
            if sql.startswith(start):
                return reply
        raise RuntimeError(f"stand-in has no reply for: {sql[:80]}")

    def close(self):
        type(self).closed += 1


def catalog_columns():
    """The example app's columns as sync.catalog's COLUMNS query returns them."""
    names = {"timestamptz": "timestamp with time zone"}
    return [
        [
            t.name,
            t.primary_key,
            t.owner,
            True,
            c.name,
            names.get(c.type, c.type),
            not c.nullable,
            None if c.default is MISSING else repr(c.default).lower(),
        ]
        for t in sorted(REGISTRY.tables, key=lambda t: t.name)
        for c in t.columns
    ]


def make_token(secret=SECRET, lifetime=3600):
    """An access token shaped like Supabase's, made with pyjwt on this interpreter."""
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


async def call(app, method, path, headers=None, body=b""):
    StandInConnection.sent = []
    response = await app.handle(Request(method, path, headers or {}, body))
    return {
        "status": response.status,
        "headers": response.headers,
        "json": json.loads(response.body) if response.body else None,
        "sent": StandInConnection.sent,
    }


async def main():
    app = App(Settings.from_env({"SUPABASE_JWT_SECRET": SECRET}), StandInConnection)
    token = make_token()
    sync_headers = {"content-type": "application/json"}
    body = json.dumps({"lastSyncAt": None, "changes": []}).encode()

    return {
        "health": await call(app, "GET", "/api/health"),
        "not_found": await call(app, "GET", "/nope"),
        "no_token": await call(app, "POST", "/api/sync", sync_headers, body),
        "sync": await call(
            app,
            "POST",
            "/api/sync",
            {**sync_headers, "authorization": f"Bearer {token}"},
            body,
        ),
        "push": await call(
            app,
            "POST",
            "/api/sync",
            {**sync_headers, "authorization": f"Bearer {token}"},
            json.dumps(
                {
                    "lastSyncAt": None,
                    "changes": [
                        {
                            "id": 1,
                            "table": "todos",
                            "op": "insert",
                            "row": {
                                "id": PUSHED,
                                "title": "on Pyodide",
                                "done": False,
                                "tags": ["a"],
                                "project_id": None,
                                "due_at": None,
                                "position": 1.5,
                                "updated_at": "2026-11-24T10:00:00Z",
                            },
                        }
                    ],
                }
            ).encode(),
        ),
        "connections": {"opened": StandInConnection.opened, "closed": StandInConnection.closed},
    }
