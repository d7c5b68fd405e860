"""A quicker `dump` for flat response schemas, with marshmallow's own field conversions.

marshmallow's `Schema.dump` goes through an accessor and two lookup helpers for every field of
every item; on a page of 20 notes that was most of what serializing a response cost. A
`FlatSchema` reads each attribute (or mapping key) directly and converts it with the field's
own `_serialize`, which is all marshmallow does for such a field, so the output is the same:
tests/test_dumping.py holds it equal to marshmallow's for the same objects and rows.

Only schemas without hooks take the quick way, and only if each field is dumped the way
`Field.serialize` does it: one attribute read, then `_serialize` (so no Method, Function or
Constant, which override that, and no dotted `attribute`). Anything else falls back to
marshmallow's `dump`, whole.
"""

from collections.abc import Mapping

from marshmallow import Schema, fields, missing


class FlatSchema(Schema):
    _flat_plan: list | None

    def dump(self, obj, *, many: bool | None = None):
        plan = self._plan()
        if plan is None:
            return super().dump(obj, many=many)
        if self.many if many is None else many:
            return [_dump_flat(plan, item) for item in obj]
        return _dump_flat(plan, obj)

    def _plan(self) -> list | None:
        """(source attribute, output key, field) per dumped field, or None if not flat."""
        if "_flat_plan" not in self.__dict__:
            self._flat_plan = _plan_for(self)
        return self._flat_plan


def _plan_for(schema: Schema) -> list | None:
    if any(schema._hooks.values()):
        return None
    plan = []
    for name, field in schema.dump_fields.items():
        source = field.attribute or name
        reads_one_attribute = field._CHECK_ATTRIBUTE and "." not in source
        if type(field).serialize is not fields.Field.serialize or not reads_one_attribute:
            return None
        plan.append((source, field.data_key if field.data_key is not None else name, field))
    return plan


def _dump_flat(plan: list, obj) -> dict:
    dumped = {}
    is_mapping = isinstance(obj, Mapping)
    for source, key, field in plan:
        value = obj.get(source, missing) if is_mapping else getattr(obj, source, missing)
        if value is missing:
            default = field.dump_default
            value = default() if callable(default) else default
            if value is missing:
                continue
        dumped[key] = field._serialize(value, source, obj)
    return dumped
