"""One structured log line per request: ids, counts and time per phase — never tokens or
row contents."""

import json

from conftest import Api, build_app, token_for, user_id
from helpers import change, new_id, todo


def test_one_line_per_request_without_secrets(database_url):
    records = []
    app = build_app(database_url)
    app.log = records.append
    api = Api(app, "package")
    user = user_id()
    token = token_for(user)
    body = api.sync(
        None,
        [
            change("todos", "insert", todo(new_id(), "very private title", 0)),
            change("nope", "insert", {"id": 1}),
        ],
        token=token,
    ).body
    assert body["success"] is True
    api.sync(None, [], token="bad.token.here")
    api.request("GET", "/api/health")
    assert len(records) == 3
    sync, refused, health = records
    assert sync["status"] == 200 and sync["user_id"] == user
    assert sync["changes"] == 2 and sync["accepted"] == 1 and sync["rejected"] == 1
    assert sync["pulled"] == len(body["pulledChanges"])
    assert sync["statements"] >= 3 and sync["attempts"] == 1
    # One message carries the push, the pull and COMMIT: one phase, "sync".
    assert set(sync["phases"]) >= {"auth", "validate", "connect", "sync", "answer"}
    assert len(sync["request_id"]) >= 16
    assert sync["reject_codes"] == {"unknown_table": 1}
    assert refused["status"] == 401 and refused["error"] == "unauthorized"
    assert refused["reason"]  # why it was refused, in the server's own words
    assert health["status"] == 200
    text = json.dumps(records)
    assert token not in text and "bad.token.here" not in text
    assert "very private title" not in text


def test_request_id_comes_from_cloudflare_ray_when_present(database_url):
    records = []
    app = build_app(database_url)
    app.log = records.append
    reply = Api(app, "package").request("GET", "/api/health", headers={"cf-ray": "8d1f-LHR"})
    assert reply.headers["x-request-id"] == "8d1f-LHR"
    assert records[0]["request_id"] == "8d1f-LHR"


def test_a_refused_cors_origin_is_logged(make_api, database_url):
    records = []
    app = build_app(database_url, ALLOWED_ORIGINS="https://app.example")
    app.log = records.append
    api = Api(app, "package")
    api.request("OPTIONS", "/api/sync", headers={"origin": "http://localhost:5173"})
    api.request("OPTIONS", "/api/sync", headers={"origin": "https://app.example"})
    assert records[0]["cors_refused"] == "http://localhost:5173"
    assert "cors_refused" not in records[1]


def test_a_bug_is_logged_with_where_it_surfaced_but_not_its_text(database_url):
    """A 500 says which type of exception and where in the package it surfaced, so an
    operator can find it; never the exception's own text, which may quote values."""
    records = []
    app = build_app(database_url)
    app.log = records.append

    def broken(*_args, **_kwargs):
        raise RuntimeError("secret-looking text 0123")

    app.auth.user_id = broken
    reply = Api(app, "package").sync(user_id(), [])
    assert reply.status == 500 and reply.body["error"]["code"] == "internal"
    (record,) = records
    assert record["exception"] == "RuntimeError"
    assert record["raised_at"].startswith("app.py:_sync:")
    assert "secret-looking" not in json.dumps(record)
