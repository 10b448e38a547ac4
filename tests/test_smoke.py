from conftest import user_id
from helpers import change, new_id, todo


def test_insert_then_pull_from_another_device(api):
    user = user_id()
    todo_id = new_id()
    body = api.ok(user, [change("todos", "insert", todo(todo_id, "buy milk", 0), 41)])
    assert body["acceptedIds"] == [41]
    entries, _ = api.pull_all(user)
    assert [e["row"]["title"] for e in entries] == ["buy milk"]
