"""The client's schema module is generated from the same catalog the server reads, so the
hash the client sends is the one the server expects; a stale module is caught here."""

from conftest import ROOT, Api, build_app, user_id
from helpers import change, new_id, todo

from devtools.client_schema import DEFAULT_OUT, camel, render, sqlite_default
from sync import catalog


def loaded_from(sql):
    sql("BEGIN")
    try:
        return catalog.load(sql.con)
    finally:
        sql("ROLLBACK")


def test_generated_client_schema_is_up_to_date(sql):
    loaded = loaded_from(sql)
    assert DEFAULT_OUT == ROOT / "client" / "src" / "schema.generated.js"
    assert DEFAULT_OUT.read_text() == render(loaded), "run `make client-schema`"
    assert f'export const schemaHash = "{loaded.hash}";' in DEFAULT_OUT.read_text()


def test_the_generated_hash_is_accepted_by_the_server(database_url, sql):
    text = DEFAULT_OUT.read_text()
    sent = text.split('export const schemaHash = "', 1)[1].split('"', 1)[0]
    api = Api(build_app(database_url), "package")
    reply = api.sync(
        user_id(), [change("todos", "insert", todo(new_id(), "a", 0), 1)], schemaHash=sent
    )
    assert reply.status == 200 and reply.body["acceptedIds"] == [1]


def test_names_and_defaults_for_the_client():
    assert camel("user_settings") == "userSettings" and camel("id") == "id"
    assert sqlite_default(False, "boolean") == 0
    assert sqlite_default("it's", "text") == "'it''s'"
    assert sqlite_default({"a": 1}, "json") == "'{\"a\":1}'"
    assert sqlite_default(2.5, "real") == 2.5


def test_schema_additions_are_in_the_openapi_document(database_url):
    import json

    import jsonschema
    from conftest import token_for

    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())

    def check(name, value):
        schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        jsonschema.Draft202012Validator(schema).validate(value)

    api = Api(build_app(database_url), "package")
    headers = {"authorization": f"Bearer {token_for(user_id())}"}
    reply = api.request("GET", "/api/schema", headers=headers)
    check("Schema", reply.body)
    body = {"lastSyncAt": None, "changes": [], "schemaHash": "feedfacefeedface"}
    check("SyncRequest", body)
    mismatch = api.sync(user_id(), [], schemaHash="feedfacefeedface")
    assert mismatch.status == 409
    check("Error", mismatch.body)
    assert "409" in spec["paths"]["/api/sync"]["post"]["responses"]
    assert "/api/schema" in spec["paths"]
