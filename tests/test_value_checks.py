"""The fast paths of per-value validation answer exactly as the general checks do.

Every value of a batch goes through a check chosen once per column (schema.Column.fast), a
shortcut for canonical timestamps, a size count without json.dumps for plain string lists,
and a request parser that looks for the reason of a refusal only once something is wrong.
Each one must give the same value, or the same refusal with the same message, as the general
code: the reference implementations below are the code as it was before the shortcuts.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sync import batch, schema
from sync.http import ApiError
from sync.protocol import MAX_ID_LENGTH, OPS, RawChange, bad_request, parse_sync_request
from sync.schema import Column, InvalidValue, storable

# -- references: the general code -----------------------------------------------------------


def reference_parse_timestamp(value):
    if isinstance(value, bool):
        raise InvalidValue("expected an ISO-8601 timestamp with zone or epoch milliseconds")
    if isinstance(value, int):
        try:
            return schema.EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise InvalidValue("epoch milliseconds out of range") from None
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidValue("expected an ISO-8601 timestamp with zone or epoch milliseconds")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidValue("not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise InvalidValue("timestamp has no zone (add Z or an offset)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidValue("timestamp out of range") from None


def reference_format(moment):
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def reference_size(value):
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict | list):
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    return 8


def reference_changes(changes):
    """The request parser's loop over changes, as it was: (id, table, op, position) or
    the 400's message."""
    seen, parsed = set(), []
    for position, change in enumerate(changes):
        where = f"changes[{position}]"
        if not isinstance(change, dict):
            raise bad_request(f"{where} must be an object")
        change_id = change.get("id")
        if isinstance(change_id, bool) or not isinstance(change_id, int | str):
            raise bad_request(f"{where}.id must be an integer or a string")
        if isinstance(change_id, str) and not 0 < len(change_id) <= MAX_ID_LENGTH:
            raise bad_request(f"{where}.id must be 1 to {MAX_ID_LENGTH} characters")
        if isinstance(change_id, str) and not storable(change_id):
            raise bad_request(f"{where}.id must be text without NUL or lone surrogates")
        if str(change_id) in seen:
            raise bad_request(f"{where}.id {change_id!r} appears twice in the batch")
        seen.add(str(change_id))
        table = change.get("table")
        if not isinstance(table, str):
            raise bad_request(f"{where}.table must be a string")
        op = change.get("op")
        if op not in OPS:
            raise bad_request(f"{where}.op must be one of insert, update, delete")
        row = change.get("row")
        if not isinstance(row, dict):
            raise bad_request(f"{where}.row must be an object")
        parsed.append(RawChange(change_id, table, op, row, position))
    return parsed


def outcome(fn, value):
    """fn(value), or the refusal it raises, comparable."""
    try:
        result = fn(value)
    except InvalidValue as error:
        return ("refused", str(error))
    if isinstance(result, float) and math.isnan(result):
        return ("nan",)
    return ("ok", type(result).__name__, result)


# -- strategies -----------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
)


@st.composite
def timestamps(draw):
    """Canonical shapes (the fast path), near-canonical ones (which must miss it) and junk."""
    moment = draw(moments)
    base = moment.isoformat(timespec="seconds")
    fraction = draw(
        st.sampled_from(["", f".{moment.microsecond // 1000:03d}", f".{moment.microsecond:06d}"])
    )
    zone = draw(st.sampled_from(["Z", "Z", "+00:00", "+05:30", "-08:00", "", "z"]))
    text = base + fraction + zone
    mangle = draw(st.integers(0, 9))
    if mangle == 1:
        text = text.replace("T", " ")
    elif mangle == 2:
        text = text[:-1] + "0Z" if text.endswith("Z") else text
    elif mangle == 3:
        text = "T24:00:00".join(text.split("T")[:1]) + ".000Z"
    elif mangle == 4:
        text = text.replace(":", "", 1)
    elif mangle == 5:
        text = text[:8] + "31" + text[10:]  # day 31 in any month
    return text


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["a\x00b", "\ud83d", "plain", 'quo"te', "back\\slash", "tab\t", "é"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)
any_value = st.one_of(
    json_values, timestamps(), st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())
)


# -- the tests ------------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(value=st.one_of(timestamps(), json_scalars))
@example("2026-11-24T10:00:00.000Z")
@example("2026-11-24T10:00:00Z")
@example("2026-11-24T10:00:00.123456Z")
@example("2026-02-30T10:00:00.000Z")
@example("2026-11-24T24:00:00.000Z")
@example("2026-11-24T23:59:60.000Z")
@example("0001-01-01T00:00:00.000Z")
@example("9999-12-31T23:59:59.999999Z")
@example("2026-11-24T10:00:00.1234567Z")
def test_timestamps_parse_and_normalise_as_the_general_code(value):
    assert outcome(schema.parse_timestamp, value) == outcome(reference_parse_timestamp, value)
    assert outcome(lambda v: schema.timestamp_and_text(v)[1], value) == outcome(
        lambda v: reference_format(reference_parse_timestamp(v)), value
    )
    both = outcome(schema.timestamp_and_text, value)
    if both[0] == "ok":
        moment, text = both[2]
        assert moment == reference_parse_timestamp(value) and moment.tzinfo is UTC
        assert text == reference_format(moment)


@settings(max_examples=300, deadline=None)
@given(moment=moments, offset=st.integers(-14 * 60, 14 * 60))
def test_format_timestamp_matches_for_any_zone(moment, offset):
    from datetime import timezone

    zone = timezone(timedelta(minutes=offset))
    try:
        aware = moment.replace(tzinfo=zone)
        expected = reference_format(aware)
    except OverflowError:
        return
    assert schema.format_timestamp(aware) == expected
    assert schema.format_timestamp(moment.replace(tzinfo=UTC)) == reference_format(
        moment.replace(tzinfo=UTC)
    )


@pytest.mark.parametrize("kind", sorted(schema.TYPES))
@pytest.mark.parametrize("nullable", [True, False])
@settings(max_examples=100, deadline=None)
@given(value=any_value)
def test_each_column_check_shortcut_answers_as_column_check(kind, nullable, value):
    column = Column("c", kind, nullable=nullable)
    assert outcome(column.fast, value) == outcome(column.check, value)


@settings(max_examples=500, deadline=None)
@given(value=json_values)
@example(["home"])
@example([])
@example(["a", 'b"', "c"])
@example(["\x7f", "\x1f"])
@example(["é", "x"])
def test_size_matches_json_dumps(value):
    assert batch._size(value) == reference_size(value)


change_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(
            st.integers(0, 5),
            st.sampled_from(["1", "2", "", "x" * 201, "a\x00", "\ud800", True, 1.5, None]),
        ),
        "table": st.one_of(st.sampled_from(["todos", "projects"]), st.integers(), st.none()),
        "op": st.sampled_from([*OPS, "upsert", None, 3]),
        "row": st.one_of(st.just({"id": "x"}), st.just([]), st.none(), st.text(max_size=2)),
    },
)


@settings(max_examples=800, deadline=None)
@given(changes=st.lists(st.one_of(change_fields, st.integers(), st.none()), max_size=5))
def test_request_parser_refuses_as_the_general_code(changes):
    body = json.dumps({"lastSyncAt": None, "changes": changes}).encode("utf-8", "surrogatepass")
    try:
        expected = ("ok", reference_changes(changes))
    except ApiError as error:
        expected = ("refused", error.status, error.message)
    try:
        got = ("ok", parse_sync_request(body, 100).changes)
    except ApiError as error:
        got = ("refused", error.status, error.message)
    assert got == expected


def test_registry_tables_carry_their_fills():
    from sync.app_schema import REGISTRY

    for table in REGISTRY.tables:
        assert [name for name, *_ in table.fills] == [c.name for c in table.data_columns]
        for (_, fast, default, fixed), column in zip(table.fills, table.data_columns, strict=True):
            assert fast is column.fast
            assert default == (None if column.default is schema.MISSING else column.default)
            assert fixed == (0 if column.type in schema.VARIABLE_SIZE else 8)


def reference_depth_within(data: bytes, max_depth: int) -> bool:
    from sync.jsontext import _NOT_STRUCTURE

    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    quoted = unescaped.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    skeleton = b"".join(quoted.split(b'"')[::2]) if b'"' in quoted else quoted
    opening = len(skeleton) - len(skeleton.lstrip(b"[{"))
    if opening > 2 * max_depth:
        return False
    for _ in range(max_depth):
        if not skeleton:
            return True
        reduced = skeleton.replace(b"[]", b"").replace(b"{}", b"")
        if len(reduced) == len(skeleton):
            return False
        skeleton = reduced
    return not skeleton


@settings(max_examples=400, deadline=None)
@given(
    document=st.one_of(
        json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
        st.binary(max_size=60),
        st.text(alphabet='[]{}"\\ a', max_size=60).map(str.encode),
    ),
    max_depth=st.integers(1, 6),
)
def test_depth_bound_answers_as_before(document, max_depth):
    from sync import jsontext

    assert jsontext.depth_within(document, max_depth) == reference_depth_within(document, max_depth)


def reference_check(raw, registry, user, now, settings, horizon):
    """batch.check as it was, with Column.check for every value."""
    from sync import sql
    from sync.batch import MAX_KEY_LENGTH, Reject, _name

    table = registry.get(raw.table)
    if table is None:
        raise Reject("unknown_table", f"table {_name(raw.table[:100])} is not synced")
    row = raw.row
    pk_col = table.key_column
    key_value = row.get(pk_col.name, user if pk_col.name == table.owner else None)
    if key_value is None:
        raise Reject("missing_primary_key", f"row has no {pk_col.name}")
    try:
        key_value = pk_col.check(key_value)
        if isinstance(key_value, str) and len(key_value) > MAX_KEY_LENGTH:
            raise InvalidValue(f"{pk_col.name} is longer than {MAX_KEY_LENGTH} characters")
        owner = row.get(table.owner)
        if owner is not None and table.by_name[table.owner].check(owner) != user:
            raise Reject("forbidden", "the row names another user as its owner")
        if "updated_at" not in row:
            raise InvalidValue("updated_at is missing")
        clock = reference_parse_timestamp(row["updated_at"])
    except InvalidValue as error:
        raise Reject("invalid_value", str(error)) from None
    clamped = False
    if clock > horizon:
        if settings.clock_skew_policy == "reject":
            raise Reject("clock_skew", "updated_at is too far in the future of the server")
        clock, clamped = now, True
    delete = raw.op == "delete"
    values = {pk_col.name: key_value, "updated_at": reference_format(clock)}
    if not delete:
        unknown = row.keys() - table.names
        if unknown:
            names = ", ".join(sorted(_name(n) for n in unknown))[:200]
            raise Reject("unknown_column", f"columns not synced: {names}")
        values[table.owner] = user
        omitted, size = [], 0
        try:
            for column in table.data_columns:
                if column.name in row:
                    value = values[column.name] = column.check(row[column.name])
                    size += reference_size(value)
                else:
                    omitted.append(column.name)
                    values[column.name] = (
                        None if column.default is schema.MISSING else column.default
                    )
        except InvalidValue as error:
            raise Reject("invalid_value", str(error)) from None
        if size > settings.max_row_bytes:
            raise Reject(
                "invalid_value",
                f"the row is larger than MAX_ROW_BYTES ({settings.max_row_bytes}); "
                "keep large files in object storage and sync a reference",
            )
        if omitted:
            values[sql.OMITTED] = omitted
    return (str(key_value), delete, values, clock, clamped)


USER = "6f9619ff-8b86-4d11-b42d-00c04fc964ff"
todo_values = {
    "id": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), json_scalars),
    "user_id": st.one_of(st.just(USER), st.just(USER.upper()), st.uuids().map(str), json_scalars),
    "project_id": st.one_of(st.none(), st.uuids().map(str), json_scalars),
    "title": st.one_of(st.text(max_size=30), json_scalars, st.just("x" * 1010)),
    "done": st.one_of(st.booleans(), json_scalars),
    "due_at": st.one_of(st.none(), timestamps(), json_scalars),
    "position": st.one_of(st.floats(), st.integers(), json_scalars),
    "tags": json_values,
    "updated_at": st.one_of(timestamps(), st.integers(0, 2**45), json_scalars),
    "colour": json_scalars,  # not a column of todos
}


@settings(max_examples=700, deadline=None)
@given(
    row=st.fixed_dictionaries({}, optional=todo_values),
    op=st.sampled_from(OPS),
    table=st.sampled_from(["todos", "todos", "projects", "nope"]),
    policy=st.sampled_from(["clamp", "reject"]),
    max_row_bytes=st.sampled_from([1_048_576, 1024]),
)
@example(
    row={
        "id": "7B9E6A40-8F0E-4C55-9D43-2F7C61C0A001",
        "title": "buy milk",
        "done": False,
        "tags": ["home", 'quo"ted'],
        "position": 1.5,
        "due_at": None,
        "updated_at": "2026-11-24T10:00:00.000Z",
    },
    op="insert",
    table="todos",
    policy="clamp",
    max_row_bytes=1_048_576,
)
@example(
    row={"id": "7b9e6a40-8f0e-4c55-9d43-2f7c61c0a001", "updated_at": "2027-01-01T00:00:00Z"},
    op="update",
    table="todos",
    policy="clamp",
    max_row_bytes=1024,
)
def test_batch_check_answers_as_the_general_code(row, op, table, policy, max_row_bytes):
    from sync.app_schema import REGISTRY
    from sync.batch import Reject
    from sync.settings import Settings

    settings = Settings.from_env(
        {
            "SUPABASE_JWT_SECRET": "x" * 40,
            "CLOCK_SKEW_POLICY": policy,
            "MAX_ROW_BYTES": str(max_row_bytes),
        }
    )
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    horizon = now + timedelta(seconds=settings.max_clock_skew)
    raw = RawChange(1, table, op, row, 0)

    def run(fn):
        try:
            return ("ok", fn())
        except Reject as reject:
            return ("refused", reject.code, reject.message)

    def fast():
        change = batch.check(raw, REGISTRY, USER, now, settings, horizon)
        return (change.key, change.delete, change.row, change.clock, change.clamped)

    expected = run(lambda: reference_check(raw, REGISTRY, USER, now, settings, horizon))
    assert run(fast) == expected
    plan = batch.plan([raw], REGISTRY, USER, now, settings)
    if expected[0] == "ok":
        assert [c.row for c in plan.winners] == [expected[1][2]] and not plan.rejected
    else:
        assert [(r.reject.code, r.reject.message) for r in plan.rejected] == [expected[1:]]
