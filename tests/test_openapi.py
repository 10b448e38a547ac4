"""docs/openapi.json, the server's validation and the tests agree: what the document
accepts the server takes, what it refuses the server answers with 400, and every answer
matches its schema."""

import json

import jsonschema
import pytest
from conftest import ROOT, token_for, user_id
from helpers import at, change, new_id, todo

SPEC = json.loads((ROOT / "docs" / "openapi.json").read_text())


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    return jsonschema.Draft202012Validator(schema)


REQUEST = validator("SyncRequest")
RESPONSE = validator("SyncResponse")
ERROR = validator("Error")
HEALTH = validator("Health")

VALID = [
    {"lastSyncAt": None, "changes": []},
    {"changes": []},
    {"lastSyncAt": None, "changes": [change("todos", "insert", todo(new_id(), "a", 0), "x")]},
    {"lastSyncAt": None, "changes": [change("nope", "delete", {"id": 1}, 1)]},
]
INVALID = [
    [],
    {"lastSyncAt": None},
    {"lastSyncAt": 3, "changes": []},
    {"lastSyncAt": None, "changes": [{"id": 1, "table": "todos", "op": "merge", "row": {}}]},
    {"lastSyncAt": None, "changes": [{"id": 1, "table": "todos", "op": "insert", "row": []}]},
    {"lastSyncAt": None, "changes": [{"id": None, "table": "todos", "op": "insert", "row": {}}]},
    {"lastSyncAt": None, "changes": [{"id": 1, "op": "insert", "row": {}}]},
]


@pytest.mark.parametrize("body", VALID)
def test_documented_requests_are_accepted(api, body):
    assert REQUEST.is_valid(body)
    reply = post(api, body)
    assert reply.status == 200
    RESPONSE.validate(reply.body)


@pytest.mark.parametrize("body", INVALID)
def test_undocumented_requests_are_400(api, body):
    assert not REQUEST.is_valid(body)
    reply = post(api, body)
    assert reply.status == 400
    ERROR.validate(reply.body)


def post(api, body):
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {token_for(user_id())}",
    }
    return api.request("POST", "/api/sync", json.dumps(body).encode(), headers)


def test_answers_match_their_schemas(api):
    user = user_id()
    tid = new_id()
    body = api.ok(
        user,
        [
            change("todos", "insert", todo(tid, "a", 0)),
            change("todos", "insert", todo(new_id(), "b", 0, colour=1)),
            change("todos", "update", todo(tid, "older", -5)),
        ],
    )
    RESPONSE.validate(body)
    RESPONSE.validate(api.ok(user, [], body["newServerTimestamp"]))
    api.ok(user, [change("todos", "delete", {"id": tid, "updated_at": at(3)})])
    RESPONSE.validate(api.ok(user, [], body["newServerTimestamp"]))
    for reply in (api.sync(None, []), api.request("GET", "/nope"), api.request("PUT", "/api/sync")):
        ERROR.validate(reply.body)
    HEALTH.validate(api.request("GET", "/api/health").body)


def test_every_rejection_code_of_the_contract_is_documented():
    codes = SPEC["components"]["schemas"]["Rejection"]["properties"]["code"]["enum"]
    assert set(codes) == {
        "unknown_table",
        "unknown_column",
        "invalid_value",
        "missing_primary_key",
        "forbidden",
        "constraint_violation",
        "clock_skew",
    }
