"""A quicker `dump` for flat response schemas, with marshmallow's own field conversions.

marshmallow's `Schema.dump` goes through an accessor and two lookup helpers for every field of
every item; on a page of 20 notes that was most of what serializing a response cost. A
`FlatSchema` reads each attribute (or mapping key) directly and converts it with the field's
own `_serialize`, which is all marshmallow does for such a field, so the output is the same:
tests/test_dumping.py holds it equal to marshmallow's for the same objects and rows.

Only schemas without hooks take the quick way, and only if each field is dumped the way
`Field.serialize` does it: one attribute read, then `_serialize` (so no Method, Function or
Constant, which override that, and no dotted `attribute`). A list of, or one, nested
FlatSchema (a page's items) is dumped with the nested schema's own plan, item by item, instead
of a `dump` call per item. Anything else falls back to marshmallow's `dump`, whole.
"""

from collections.abc import Callable, Mapping
from datetime import datetime

from marshmallow import Schema, fields, missing

# (source attribute, output key, field, conversion of the value read)
Plan = list[tuple[str, str, fields.Field, Callable]]


class FlatSchema(Schema):
    _flat_plan: Plan | None

    def dump(self, obj, *, many: bool | None = None):
        plan = self._plan()
        if plan is None:
            return super().dump(obj, many=many)
        if self.many if many is None else many:
            return [_dump_flat(plan, item) for item in obj]
        return _dump_flat(plan, obj)

    def _plan(self) -> Plan | None:
        """How to dump each field, or None if this schema is not flat."""
        if "_flat_plan" not in self.__dict__:
            self._flat_plan = _plan_for(self)
        return self._flat_plan


def _plan_for(schema: Schema) -> Plan | None:
    if any(schema._hooks.values()):
        return None
    plan = []
    for name, field in schema.dump_fields.items():
        source = field.attribute or name
        reads_one_attribute = field._CHECK_ATTRIBUTE and "." not in source
        if type(field).serialize is not fields.Field.serialize or not reads_one_attribute:
            return None
        key = field.data_key if field.data_key is not None else name
        convert = _nested_conversion(field) or _quick_conversion(field) or field._serialize
        plan.append((source, key, field, convert))
    return plan


def _quick_conversion(field: fields.Field) -> Callable | None:
    """For the commonest fields, marshmallow's conversion with its calls in between left out
    for the values it returns as they are: an int for an Integer, a str for a String; and a
    datetime's isoformat() for an ISO DateTime. Any other value goes to the field's own."""
    serialize = type(field)._serialize
    if serialize is fields.Integer._serialize and not field.as_string:
        passed = int
    elif serialize is fields.String._serialize:
        passed = str
    elif serialize is fields.DateTime._serialize and field.format in (None, "iso", "iso8601"):
        slow = field._serialize
        return lambda value, *args: (
            value.isoformat() if type(value) is datetime else slow(value, *args)
        )
    else:
        return None
    slow = field._serialize
    return lambda value, *args: value if type(value) is passed else slow(value, *args)


def _nested_conversion(field: fields.Field) -> Callable | None:
    """For `List(Nested(S))`, `Nested(S, many=True)` or `Nested(S)`, with S a flat schema and no
    `only` or `exclude` on the field, dump the value with S's plan; None for any other field."""
    in_list = type(field) is fields.List
    nested = field.inner if in_list else field
    if type(nested) is not fields.Nested or nested.only or nested.exclude:
        return None
    schema = nested.schema
    each_is_many = bool(schema.many or nested.many)
    if not isinstance(schema, FlatSchema) or (in_list and each_is_many):
        return None
    plan = schema._plan()
    if plan is None:
        return None
    if in_list or each_is_many:
        return lambda value, *_: None if value is None else [_dump_flat(plan, v) for v in value]
    return lambda value, *_: None if value is None else _dump_flat(plan, value)


def _dump_flat(plan: Plan, obj) -> dict:
    dumped = {}
    is_mapping = isinstance(obj, Mapping)
    for source, key, field, convert in plan:
        value = obj.get(source, missing) if is_mapping else getattr(obj, source, missing)
        if value is missing:
            default = field.dump_default
            value = default() if callable(default) else default
            if value is missing:
                continue
        dumped[key] = convert(value, source, obj)
    return dumped
