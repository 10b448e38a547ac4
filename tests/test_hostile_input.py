"""Whatever a client sends, the answer is a contract answer — 200, 400 or 413 — never a
500, and on a 200 every change id is either accepted or rejected."""

import json

from conftest import Api, build_app, user_id
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00",
            "7b9e6a40-8f0e-4c55-9d43-2f7c61c0a001",
            "7B9E6A40-8F0E-4C55-9D43-2F7C61C0A001",
            "\x00",
            "9999-12-31T23:59:59+14:00",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
columns = st.sampled_from(
    [
        "id",
        "user_id",
        "project_id",
        "title",
        "done",
        "due_at",
        "position",
        "tags",
        "updated_at",
        "name",
        "color",
        "theme",
        "language",
        "sync_xid",
        "nope",
    ]
)
rows = st.dictionaries(columns, values, max_size=8)
changes = st.lists(
    st.fixed_dictionaries(
        {
            "table": st.sampled_from(["todos", "projects", "user_settings", "nope", ""]),
            "op": st.sampled_from(["insert", "update", "delete"]),
            "row": rows,
        }
    ),
    max_size=12,
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=changes, cursor=st.one_of(st.none(), st.text(max_size=20)))
def test_no_input_makes_a_500(database_url, batch, cursor):
    api = Api(build_app(database_url), "package")
    for i, change in enumerate(batch):  # unique ids, so most batches get past the shape check
        change["id"] = i if i % 2 else f"c{i}"
    body = json.dumps({"lastSyncAt": cursor, "changes": batch}).encode()
    reply = api.request(
        "POST",
        "/api/sync",
        body,
        {
            "content-type": "application/json",
            "authorization": f"Bearer {__import__('conftest').token_for(user_id())}",
        },
    )
    event(f"status {reply.status}")
    assert reply.status in (200, 400), reply.body
    if reply.status == 200:
        answered = [str(i) for i in reply.body["acceptedIds"]] + [
            str(r["id"]) for r in reply.body["rejected"]
        ]
        assert sorted(answered) == sorted(str(c["id"]) for c in batch)
