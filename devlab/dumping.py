"""A quicker `dump` for flat response schemas, with marshmallow's own field conversions.

marshmallow's `Schema.dump` goes through an accessor and two lookup helpers for every field of
every item; on a page of 20 notes that was most of what serializing a response cost. A
`FlatSchema` reads each attribute (or mapping key) directly and converts it with the field's
own `_serialize`, which is all marshmallow does for such a field, or passes it as it is where
`_serialize` would return it unchanged; so the output is the same: tests/test_dumping.py holds
it equal to marshmallow's for the same objects and rows. The reading and converting of a
schema's fields is written out as one function per schema (`_written_out`): a page of 20 notes
took 71 µs with marshmallow's conversions called in a loop, and takes 43 µs (timeit, one
sitting).

Only schemas without hooks take the quick way, and only if each field is dumped the way
`Field.serialize` does it: one attribute read, then `_serialize` (so no Method, Function or
Constant, which override that, and no dotted `attribute`). A list of, or one, nested
FlatSchema (a page's items) is dumped with the nested schema's own plan, item by item, instead
of a `dump` call per item. Anything else falls back to marshmallow's `dump`, whole.
"""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial

import orjson
from marshmallow import Schema, fields, missing

# One item dumped: a function written for the schema (see `_written_out`).
Plan = Callable[[object], dict]


class FlatSchema(Schema):
    _flat_plan: Plan | None

    def dump(self, obj, *, many: bool | None = None):
        plan = self._plan()
        if plan is None:
            return super().dump(obj, many=many)
        if self.many if many is None else many:
            return [plan(item) for item in obj]
        return plan(obj)

    def _plan(self) -> Plan | None:
        """How to dump one item, or None if this schema is not flat."""
        if "_flat_plan" not in self.__dict__:
            self._flat_plan = _plan_for(self)
        return self._flat_plan


def _plan_for(schema: Schema) -> Plan | None:
    if any(schema._hooks.values()):
        return None
    steps = []
    for name, field in schema.dump_fields.items():
        source = field.attribute or name
        reads_one_attribute = field._CHECK_ATTRIBUTE and "." not in source
        if type(field).serialize is not fields.Field.serialize or not reads_one_attribute:
            return None
        key = field.data_key if field.data_key is not None else name
        nested = _nested_conversion(field)
        passed = None if nested else _passed_as_it_is(field)
        steps.append((source, key, field, nested or field._serialize, passed))
    return _written_out(steps)


ISO_DATETIME = "isoformat()"


def _passed_as_it_is(field: fields.Field) -> type | str | None:
    """What marshmallow's conversion gives back unchanged, for the commonest fields: an int for
    an Integer, a str for a String; and for an ISO DateTime, a datetime's isoformat(), which is
    all marshmallow does with it. Any other value goes to the field's own `_serialize`."""
    kind = type(field)
    # Integer, Float and Decimal share Number's _serialize; only an int field's num_type is int.
    if kind._serialize is fields.Number._serialize and not field.as_string:
        return int if kind.num_type is int else None
    if kind._serialize is fields.String._serialize:
        return str
    # DateTime, Date and Time share _serialize; what it calls is the class's format function.
    if kind._serialize is fields.DateTime._serialize:
        format_function = kind.SERIALIZATION_FUNCS.get(field.format or kind.DEFAULT_FORMAT)
        return ISO_DATETIME if format_function is datetime.isoformat else None
    return None


def _written_out(steps: list) -> Plan:
    """A plan's steps as one function, field after field: no loop over the plan, and no call for
    a value passed as it is. Only the names and keys of the schema's own fields go into its
    code, as Python literals; the conversions are passed in by name.

    A datetime in UTC (as psycopg2 reads every timestamptz) is written by orjson, which writes
    what isoformat() does (tests/test_dumping.py checks it over the years 1 to 9999) in a third
    of its time: isoformat() was most of dumping a page of notes."""
    namespace = {
        "Mapping": Mapping,
        "missing": missing,
        "datetime": datetime,
        "dumps": orjson.dumps,
        "UTC": UTC,
    }
    for n, (_source, _key, field, convert, passed) in enumerate(steps):
        namespace[f"convert{n}"] = convert
        namespace[f"default{n}"] = partial(_default_of, field)
        namespace[f"type{n}"] = passed

    def reading(read: str) -> list[str]:
        lines = []
        for n, (source, key, _field, _convert, passed) in enumerate(steps):
            lines += [
                f"v = {read.format(source=repr(source))}",
                "if v is missing:",
                f"    v = default{n}()",
                "    if v is not missing:",
                f"        d[{key!r}] = convert{n}(v, {source!r}, obj)",
            ]
            if passed == ISO_DATETIME:
                lines += [
                    "elif type(v) is datetime:",
                    f"    d[{key!r}] = dumps(v)[1:-1].decode() if v.tzinfo is UTC"
                    " else v.isoformat()",
                ]
            elif passed is not None:
                lines += [f"elif type(v) is type{n}:", f"    d[{key!r}] = v"]
            lines += ["else:", f"    d[{key!r}] = convert{n}(v, {source!r}, obj)"]
        return ["        " + line for line in lines] or ["        pass"]

    code = "\n".join(
        [
            "def dump(obj):",
            "    d = {}",
            "    if isinstance(obj, Mapping):",
            *reading("obj.get({source}, missing)"),
            "    else:",
            *reading("getattr(obj, {source}, missing)"),
            "    return d",
        ]
    )
    exec(compile(code, "<devlab.dumping>", "exec"), namespace)  # noqa: S102 (our own fields)
    return namespace["dump"]


def _default_of(field: fields.Field):
    default = field.dump_default
    return default() if callable(default) else default


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
        return lambda value, *_: None if value is None else [plan(v) for v in value]
    return lambda value, *_: None if value is None else plan(value)
