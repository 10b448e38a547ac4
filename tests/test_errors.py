"""Every error status of the contract, with its body shape, and nothing applied."""

import json

import pytest
from conftest import token_for, user_id
from helpers import change, new_id, todo


def assert_error(reply, status, code):
    assert reply.status == status, reply.body
    assert reply.body["success"] is False
    assert reply.body["error"]["code"] == code
    assert isinstance(reply.body["error"]["message"], str) and reply.body["error"]["message"]


def post(api, body: bytes, user=None, content_type="application/json", headers=None):
    hdrs = {"content-type": content_type, **(headers or {})}
    if user:
        hdrs["authorization"] = f"Bearer {token_for(user)}"
    return api.request("POST", "/api/sync", body, hdrs)


def test_unknown_route_is_404(api):
    assert_error(api.request("GET", "/api/nope"), 404, "not_found")
    assert_error(api.request("POST", "/"), 404, "not_found")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_on_sync_is_405(api, method):
    reply = api.request(method, "/api/sync")
    assert_error(reply, 405, "method_not_allowed")
    assert "POST" in reply.headers["allow"]


def test_wrong_method_on_health_is_405(api):
    assert_error(api.request("POST", "/api/health", b"{}"), 405, "method_not_allowed")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_not_json_media_type_is_415(api, content_type):
    user = user_id()
    reply = post(api, b'{"lastSyncAt":null,"changes":[]}', user, content_type)
    assert_error(reply, 415, "unsupported_media_type")


def test_json_with_charset_is_accepted(api):
    reply = post(
        api, b'{"lastSyncAt":null,"changes":[]}', user_id(), "application/json; charset=utf-8"
    )
    assert reply.status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[]",
        b'{"lastSyncAt": null}',
        b'{"lastSyncAt": null, "changes": {}}',
        b'{"lastSyncAt": 5, "changes": []}',
        b'{"lastSyncAt": null, "changes": [1]}',
        b'{"lastSyncAt": null, "changes": [{"id": 1, "table": "todos", "op": "upsert", "row": {}}]}',
        b'{"lastSyncAt": null, "changes": [{"id": 1, "table": "todos", "op": "insert"}]}',
        b'{"lastSyncAt": null, "changes": [{"id": 1, "table": "todos", "op": "insert", "row": []}]}',
        b'{"lastSyncAt": null, "changes": [{"id": true, "table": "todos", "op": "insert", "row": {}}]}',
        b'{"lastSyncAt": null, "changes": [{"id": 1.5, "table": "todos", "op": "insert", "row": {}}]}',
        b'{"lastSyncAt": null, "changes": [{"table": "todos", "op": "insert", "row": {}}]}',
        b'{"lastSyncAt": null, "changes": [{"id": 1, "table": 7, "op": "insert", "row": {}}]}',
        b'{"lastSyncAt": null, "changes": [{"id": 1, "table": "todos", "op": "insert", "row": {"position": NaN}}]}',
        b'{"lastSyncAt": "garbage", "changes": []}',
        b'{"lastSyncAt": "c1.e30", "changes": []}',
        b"\xff\xfe{}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_body_is_400(api, sql, body):
    assert_error(post(api, body, user_id()), 400, "bad_request")


def test_duplicate_change_ids_are_400_and_nothing_applied(api, sql):
    user = user_id()
    first, second = new_id(), new_id()
    changes = [
        change("todos", "insert", todo(first, "a", 0), 7),
        change("todos", "insert", todo(second, "b", 0), "7"),
    ]
    reply = api.sync(user, changes)
    assert_error(reply, 400, "bad_request")
    assert sql("SELECT count(*) FROM todos")[0][0] == 0


def test_unknown_op_rejects_whole_request(api, sql):
    user = user_id()
    changes = [
        change("todos", "insert", todo(new_id(), "a", 0)),
        change("todos", "merge", todo(new_id(), "b", 0)),
    ]
    assert_error(api.sync(user, changes), 400, "bad_request")
    assert sql("SELECT count(*) FROM todos")[0][0] == 0


def test_body_over_max_bytes_is_413(make_api, sql):
    for transport in ("package", "http"):
        api = make_api(transport, MAX_BODY_BYTES="2048")
        big = todo(new_id(), "x" * 4096, 0)
        reply = api.sync(user_id(), [change("todos", "insert", big)])
        assert_error(reply, 413, "payload_too_large")
    assert sql("SELECT count(*) FROM todos")[0][0] == 0


def test_declared_length_over_max_is_413_without_reading(make_api):
    api = make_api("package", MAX_BODY_BYTES="2048")
    reply = post(api, b"{}", user_id(), headers={"content-length": "999999999"})
    assert_error(reply, 413, "payload_too_large")


def test_more_than_max_changes_is_413(make_api, sql):
    api = make_api("http", MAX_CHANGES="3")
    changes = [change("todos", "insert", todo(new_id(), "t", 0)) for _ in range(4)]
    assert_error(api.sync(user_id(), changes), 413, "payload_too_large")
    assert sql("SELECT count(*) FROM todos")[0][0] == 0
    assert api.sync(user_id(), changes[:3]).status == 200


def test_error_bodies_hold_no_internals(api):
    reply = post(api, b"{bad", user_id())
    text = json.dumps(reply.body)
    for leak in ("Traceback", "SELECT", "INSERT", "pg8000", "test-secret"):
        assert leak not in text


def test_health_ok(api):
    reply = api.request("GET", "/api/health")
    assert reply.status == 200
    assert reply.body == {"ok": True, "db": "ok"}


def test_health_503_when_database_unreachable(cluster):
    from conftest import Api, build_app

    app = build_app(f"postgresql://sync:wrong@127.0.0.1:{cluster.port + 1}/nowhere")
    api = Api(app, "package")
    reply = api.request("GET", "/api/health")
    assert reply.status == 503
    assert reply.body["ok"] is False


def test_sync_503_when_database_unreachable(cluster):
    from conftest import Api, build_app

    app = build_app(
        f"postgresql://sync:wrong@127.0.0.1:{cluster.port + 1}/nowhere", MAX_ATTEMPTS="2"
    )
    reply = Api(app, "package").sync(user_id(), [])
    assert_error(reply, 503, "unavailable")


def test_internal_error_is_500_without_details(database_url):
    from conftest import Api, build_app

    app = build_app(database_url)
    app.schema = None  # a bug: the registry lookup fails inside the request
    reply = Api(app, "package").sync(user_id(), [change("todos", "insert", todo(new_id(), "a", 0))])
    assert_error(reply, 500, "internal")
    assert "secret" not in json.dumps(reply.body)


def test_options_preflight_and_cors(make_api):
    api = make_api("http", ALLOWED_ORIGINS="https://app.example, https://other.example")
    for path in ("/api/sync", "/api/health", "/anything"):
        reply = api.request(
            "OPTIONS",
            path,
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert reply.status == 204
        assert reply.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in reply.headers["access-control-allow-headers"]
    denied = api.request("OPTIONS", "/api/sync", headers={"origin": "https://evil.example"})
    assert denied.status == 204
    assert "access-control-allow-origin" not in denied.headers
    # Real responses to an allowed origin carry the headers too, errors included.
    reply = api.request("GET", "/api/health", headers={"origin": "https://other.example"})
    assert reply.headers["access-control-allow-origin"] == "https://other.example"
    reply = api.sync(None, [])
    assert reply.status == 401


def test_cors_wildcard_only_when_configured(make_api):
    none = make_api("package")
    reply = none.request("OPTIONS", "/api/sync", headers={"origin": "https://a.example"})
    assert "access-control-allow-origin" not in reply.headers
    star = make_api("package", ALLOWED_ORIGINS="*")
    reply = star.request("OPTIONS", "/api/sync", headers={"origin": "https://a.example"})
    assert reply.headers["access-control-allow-origin"] == "*"


def test_oversized_body_over_real_http_gets_413_not_a_reset(make_api):
    """A client that sends its whole 30 MB body before reading still gets the 413."""
    api = make_api("http", MAX_BODY_BYTES="1048576")
    big = [change("todos", "insert", todo(new_id(), "x" * 10_000, 0)) for _ in range(3000)]
    reply = api.sync(user_id(), big)
    assert_error(reply, 413, "payload_too_large")
    assert api.request("GET", "/api/health").status == 200
