"""FlatSchema's quick dump says exactly what marshmallow's own dump says, for the same data."""

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from marshmallow import Schema, fields, post_dump
from sqlalchemy import select

from devlab.admin.schemas import UserListSchema
from devlab.audit.schemas import AuditLogListSchema, AuditLogSchema
from devlab.auth.schemas import UserSchema
from devlab.dumping import FlatSchema
from devlab.extensions import db
from devlab.models import AuditLog, Note, User
from devlab.notes.schemas import NoteListSchema, NoteSchema


def marshmallows_own(schema: Schema, data, many: bool = False):
    return Schema.dump(schema, data, many=many)


@pytest.fixture
def rows(app, client, accounts):
    headers = accounts.headers("alice")
    for text in ("first", "ünïcödé ✓", "x" * 10_000):
        client.post("/notes", json={"text": text}, headers=headers)
    with app.app_context():
        yield


@pytest.mark.parametrize(
    ("schema", "model"),
    [(NoteSchema(), Note), (UserSchema(), User), (AuditLogSchema(), AuditLog)],
    ids=["note", "user", "audit-row"],
)
def test_the_quick_dump_equals_marshmallows_for_orm_objects_and_mappings(rows, schema, model):
    objects = db.session.scalars(select(model)).all()
    mappings = db.session.execute(select(model.__table__)).mappings().all()
    assert objects and mappings

    assert schema.dump(objects, many=True) == marshmallows_own(schema, objects, many=True)
    assert schema.dump(mappings, many=True) == marshmallows_own(schema, mappings, many=True)
    assert schema.dump(objects[0]) == marshmallows_own(schema, objects[0])
    assert schema._plan() is not None  # it did take the quick way


@pytest.mark.parametrize(
    ("schema", "model", "items_key"),
    [
        (NoteListSchema(), Note, "notes"),
        (UserListSchema(), User, "users"),
        (AuditLogListSchema(), AuditLog, "logs"),
    ],
    ids=["notes", "users", "audit-rows"],
)
def test_a_page_dumps_its_items_as_marshmallow_does(rows, schema, model, items_key):
    for items in (
        db.session.scalars(select(model)).all(),
        db.session.execute(select(model.__table__)).mappings().all(),
        [],
    ):
        page = {items_key: items, "total": len(items), "page": 1, "page_size": 20, "pages": 1}

        assert schema.dump(page) == marshmallows_own(schema, page)
    assert schema._plan() is not None


class Label(str):
    def __str__(self) -> str:
        return f"label {super().__str__()}"


class Moment(datetime):
    def isoformat(self, *args, **kwargs) -> str:
        return "a moment"


class Everything(FlatSchema):
    number = fields.Integer()
    text = fields.String(allow_none=True)
    flag = fields.Boolean()
    when = fields.DateTime()
    renamed = fields.String(data_key="shown_as")
    sourced = fields.Integer(attribute="elsewhere")
    defaulted = fields.String(dump_default="fallback")
    called = fields.Integer(dump_default=lambda: 7)
    # Fields the quick conversions leave to marshmallow
    as_text = fields.Integer(as_string=True)
    monthly = fields.DateTime(format="%Y-%m")
    rfc = fields.DateTime(format="rfc")
    iso = fields.DateTime(format="iso8601")
    # Fields that share Integer's or DateTime's _serialize, and convert otherwise
    ratio = fields.Float()
    amount = fields.Decimal()
    day = fields.Date()
    moment = fields.Time()
    aware = fields.AwareDateTime()


@pytest.mark.parametrize(
    "data",
    [
        {"number": 1, "text": "a", "flag": True, "when": datetime(2026, 1, 2, tzinfo=UTC)},
        {"number": None, "text": None, "flag": None, "when": None},
        {"when": datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=-5)))},
        {"renamed": "r", "elsewhere": 5, "defaulted": "given", "called": 1},
        {},
        # Values an Integer, String or DateTime converts rather than passes on as they are
        {"number": True, "text": 5, "when": datetime(2026, 1, 2, 3, 4, 5)},
        {"number": 3.7, "text": b"bytes"},
        {"number": Decimal("12"), "text": Label("a str subclass"), "when": Moment(2026, 1, 2)},
        {"as_text": 5, "monthly": datetime(2026, 1, 2), "iso": datetime(2026, 1, 2, 0, 0, 0, 5)},
        {"rfc": datetime(2026, 1, 2, tzinfo=UTC), "when": datetime(2026, 1, 2, microsecond=7)},
        # UTC, as psycopg2 reads timestamptz, is written by orjson: the same text as isoformat()
        {"when": datetime(1, 1, 1, tzinfo=UTC), "iso": datetime(999, 12, 31, 23, 59, tzinfo=UTC)},
        {"when": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
        {"when": datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=timezone(timedelta(0), "named"))},
        {"ratio": 3, "amount": 3, "day": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)},
        {"moment": datetime(2024, 5, 6, 7, 8, 9).time(), "aware": datetime(2024, 5, 6, tzinfo=UTC)},
    ],
)
def test_the_quick_dump_equals_marshmallows_for_every_kind_of_flat_field(data):
    schema = Everything()

    # repr: 1 and True, or 1 and 1.0, are equal in Python but not in JSON
    assert repr(schema.dump(data)) == repr(marshmallows_own(schema, data))
    assert schema._plan() is not None


class Nesting(FlatSchema):
    listed = fields.List(fields.Nested(Everything))
    many = fields.Nested(Everything, many=True)
    one = fields.Nested(Everything)
    absent = fields.Nested(Everything, allow_none=True)
    # These two are dumped by their own fields, the plan's quick way not applying to them:
    chosen = fields.Nested(Everything, only=("number",))
    lists = fields.List(fields.Nested(Everything, many=True))


def test_utc_datetimes_are_written_as_isoformat_writes_them():
    schema, rng = Everything(), random.Random(8)  # noqa: S311 (test data)
    for _ in range(2_000):
        when = datetime(
            rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
            rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, rng.randint(0, 999_999)]),
            tzinfo=UTC,
        )  # fmt: skip
        assert schema.dump({"when": when})["when"] == when.isoformat()


@pytest.mark.parametrize(
    "data",
    [
        {"listed": [{"number": 1}, {}], "many": [{"text": "a"}], "one": {"flag": True}},
        {"chosen": {"number": 2, "text": "left out"}, "lists": [[{"number": 3}], []]},
        {"listed": [], "many": [], "one": {}, "absent": None},
        {"listed": None, "many": None, "one": None},
    ],
)
def test_nested_flat_schemas_dump_as_marshmallow_does(data):
    schema = Nesting()

    assert schema.dump(data) == marshmallows_own(schema, data)
    assert schema._plan() is not None


class WithHook(FlatSchema):
    number = fields.Integer()

    @post_dump
    def double(self, data, **_kwargs):
        return {"number": data["number"] * 2}


class WithMethod(FlatSchema):
    number = fields.Method("three")

    def three(self, _obj):
        return 3


class WithNested(FlatSchema):
    inner = fields.Nested(Everything)
    dotted = fields.Integer(attribute="inner.number")


@pytest.mark.parametrize(
    ("schema", "data", "expected"),
    [
        (WithHook(), {"number": 2}, {"number": 4}),
        (WithMethod(), {}, {"number": 3}),
        (
            WithNested(),
            {"inner": {"number": 1}},
            {"inner": {"number": 1, "defaulted": "fallback", "called": 7}, "dotted": 1},
        ),
    ],
    ids=["hook", "method-field", "dotted-attribute"],
)
def test_schemas_that_are_not_flat_are_dumped_by_marshmallow(schema, data, expected):
    assert schema._plan() is None
    assert schema.dump(data) == expected == marshmallows_own(schema, data)
