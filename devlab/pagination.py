"""Page-numbered lists: the query arguments, the metadata in the body, and the query itself."""

from functools import lru_cache

from marshmallow import Schema, fields, validate
from sqlalchemy import Select, bindparam, func, select

from devlab.dumping import FlatSchema
from devlab.extensions import db
from devlab.fields import QueryInteger

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Keeps OFFSET within a PostgreSQL bigint whatever the client asks for.
MAX_PAGE = 2**31 - 1
TOTAL = "_total_of_all_pages"
PAGE_LIMIT, PAGE_OFFSET = "page_limit", "page_offset"


class PageQuerySchema(Schema):
    page = QueryInteger(
        load_default=1,
        validate=validate.Range(min=1, max=MAX_PAGE),
        metadata={"description": "Page number, from 1."},
    )
    page_size = QueryInteger(
        load_default=DEFAULT_PAGE_SIZE,
        validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
        metadata={"description": f"Items per page, 1 to {MAX_PAGE_SIZE}."},
    )


class PageSchema(FlatSchema):
    """Metadata every list response carries beside its items."""

    total = fields.Integer(required=True, metadata={"description": "Items on all pages."})
    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    pages = fields.Integer(required=True, metadata={"description": "Number of pages."})


def page_of(
    statement: Select,
    items_key: str,
    query: dict,
    *,
    small: bool = False,
    params: dict | None = None,
) -> dict:
    """Run the page of `statement` that `query` (a loaded PageQuerySchema) asks for.

    The result holds the items under `items_key` beside the metadata of a PageSchema. A list
    that is `small` (one user's notes) is counted in the page's own query, `count(*) OVER ()`:
    one statement instead of two. Its `statement` is built once, at import, with bound
    parameters that `params` fills in, and selects a table's columns, not ORM objects: the
    page query built from it is then built once too (`_counted_page`), SQLAlchemy finds it in
    its cache without working out a cache key per request, and the response schema dumps the
    rows as they are (as mappings), at a fraction of the cost. A large list (the audit trail)
    is counted apart, since that window would make PostgreSQL read every row before it
    returns the first of the page.
    """
    page, page_size = query["page"], query["page_size"]
    if not small:
        pagination = db.paginate(
            statement, page=page, per_page=page_size, error_out=False, count=True
        )
        items, total = pagination.items, pagination.total
    else:
        window = {PAGE_LIMIT: page_size, PAGE_OFFSET: (page - 1) * page_size}
        params = params or {}
        rows = db.session.execute(_counted_page(statement), params | window).mappings().all()
        items = rows  # each also holds TOTAL, which the item schemas do not dump
        if rows:
            total = rows[0][TOTAL]
        elif page == 1:
            total = 0
        else:  # past the last page: no row to carry the count
            everything = select(func.count()).select_from(statement.order_by(None).subquery())
            total = db.session.scalar(everything, params)
    return {
        items_key: items,
        "total": total,
        "page": page,
        "page_size": page_size,
        "pages": -(-total // page_size),
    }


@lru_cache(maxsize=64)  # bounded, should a statement ever be built per request after all
def _counted_page(statement: Select) -> Select:
    """`statement`'s page, with the count of all its rows on each row (statements compare by
    identity, so each one built at import gets its page query once)."""
    return (
        statement.add_columns(func.count().over().label(TOTAL))
        .limit(bindparam(PAGE_LIMIT))
        .offset(bindparam(PAGE_OFFSET))
    )
