"""FHIR search over the index table: the statements a search runs, built once per search shape.

AND across parameters, OR across the values of one parameter, ordered by id, paged by keyset or
offset; the rows are those `services.pathway.domain.search_index` gives each resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Integer, and_, bindparam, func, intersect, select, union

from forlop.storage import schema
from forlop.storage.driver import fetch_all
from services.pathway.adapters.fhir_repository import StoredResource
from services.pathway.domain.search_index import reference_values

# Search parameters in the order a search walks them: the first is the one whose index rows are
# read in id order, the others are checked per candidate. Near-unique values first (an identifier,
# a patient, a pathway), then the unit, then the few-valued codes that match many resources.
_DRIVING_ORDER = ("identifier", "patient.identifier", "patient", "focus", "organization", "owner", "code", "type",
                  "business-status", "status")


_MERGED_VALUES_MAX = 32  # values of the driving parameter read as ranges merged in id order (a UNION)


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of matches, in id order.

    `more`: there are matches after this page (the next link). `total`: all matches, when they
    were counted (asked for) or are known from the page itself (the last page of a search that
    started at the first match); else None (FHIR R4 lets a searchset Bundle leave it out).
    """

    resources: list[StoredResource]
    more: bool
    total: int | None


def search_page(
    conn: Connection,
    resource_type: str,
    criteria: Sequence[tuple[str, Sequence[str]]],
    count: int,
    offset: int = 0,
    *,
    after: str | None = None,
    count_total: bool = False,
) -> SearchPage:
    """AND across parameters, OR across the values of one parameter; ordered by id.

    `after` (keyset paging): only matches whose id sorts after it. One query reads count + 1
    matches through the covering index (resource_type, param, value, id) and their resources, so
    a page costs the same however many resources match; the matches are counted only when
    `count_total` (FHIR `_total=accurate`) or `count` is 0.
    """
    groups = [(param, sorted(set(reference_values(resource_type, param, values)))) for param, values in criteria]
    if any(not values for _, values in groups):  # a parameter without a value matches nothing
        return SearchPage([], False, 0)
    rank = {name: i for i, name in enumerate(_DRIVING_ORDER)}
    groups.sort(key=lambda g: (rank.get(g[0], -1), len(g[1]), g[0]))  # the driving parameter first
    shape = (resource_type, tuple((param, len(values)) for param, values in groups), after is not None,
             conn.dialect.name)
    params: dict[str, Any] = {f"v{i}_{j}": v for i, (_, values) in enumerate(groups) for j, v in enumerate(values)}
    if after is not None:
        params["after"] = after
    total = None
    if count_total or count == 0:
        total = fetch_all(conn, _count_statement(*shape), params)[0][0]
    if count == 0:
        return SearchPage([], False, total)
    rows = fetch_all(conn, _page_statement(*shape), {**params, "lim": count + 1, "off": offset})
    more = len(rows) > count
    found = [StoredResource(resource, version_id, last_updated) for resource, version_id, last_updated in rows[:count]]
    if total is None and not more and after is None and (found or offset == 0):
        total = offset + len(found)
    return SearchPage(found, more, total)


# A statement per search shape (resource type, parameters and how many values each, keyset or
# not, dialect), built once with bound parameters: building and cache-keying a new statement tree
# cost twice the query itself.
@lru_cache(maxsize=512)
def _page_statement(resource_type: str, shape: tuple[tuple[str, int], ...], keyset: bool, dialect: str) -> Any:
    r = schema.fhir_resources
    ids = _matching_ids(resource_type, shape, keyset, dialect)
    page = (
        ids.order_by(ids.selected_columns.id)
        .limit(bindparam("lim", type_=Integer))
        .offset(bindparam("off", type_=Integer))
        .subquery()
    )
    return (
        select(r.c.resource, r.c.version_id, r.c.last_updated)
        .join_from(r, page, and_(r.c.resource_type == resource_type, r.c.id == page.c.id))
        .order_by(r.c.id)
    )


@lru_cache(maxsize=512)
def _count_statement(resource_type: str, shape: tuple[tuple[str, int], ...], keyset: bool, dialect: str) -> Any:
    return select(func.count()).select_from(_matching_ids(resource_type, shape, keyset, dialect).subquery())


def _matching_ids(resource_type: str, shape: tuple[tuple[str, int], ...], keyset: bool, dialect: str) -> Any:
    """A SELECT (or compound) of the matching ids, each match once, that an index returns in id order.

    The values of parameter i are the bound parameters v<i>_0, v<i>_1, ...; `keyset`: only ids
    after the bound parameter `after`. The first (driving) parameter's rows are read from the
    covering index in id order (one range per value: a UNION of ranges merges them and drops a
    resource matching two values); each other parameter is an EXISTS probe into the same index,
    which PostgreSQL plans as a merge or nested-loop semi join. SQLite, which plans without
    statistics, gets an INTERSECT of the ranges instead when every parameter has one value: it
    merges the sorted ranges and stops at the page, however few of the driving rows match.
    No parameter: the resources' primary key.
    """
    r, idx = schema.fhir_resources, schema.fhir_search_index

    def value(i: int, j: int) -> Any:
        return bindparam(f"v{i}_{j}", type_=idx.c.value.type)

    after = [idx.c.id > bindparam("after", type_=idx.c.id.type)] if keyset else []
    if not shape:
        query = select(r.c.id).where(r.c.resource_type == resource_type)
        return query.where(r.c.id > bindparam("after", type_=r.c.id.type)) if keyset else query
    if dialect == "sqlite" and 1 < len(shape) <= _MERGED_VALUES_MAX and all(n == 1 for _, n in shape):
        return intersect(*[
            select(idx.c.id).where(idx.c.resource_type == resource_type, idx.c.param == param, idx.c.value == value(i, 0),
                                   *after)
            for i, (param, _) in enumerate(shape)
        ])
    (param, n), others = shape[0], shape[1:]
    filters = list(after)
    for i, (other, m) in enumerate(others, start=1):
        probe = idx.alias(f"probe{i}")
        filters.append(
            select(probe.c.id)
            .where(
                probe.c.resource_type == resource_type,
                probe.c.param == other,
                probe.c.value.in_([value(i, j) for j in range(m)]) if m > 1 else probe.c.value == value(i, 0),
                probe.c.id == idx.c.id,
            )
            .exists()
        )
    if n > _MERGED_VALUES_MAX:  # a long OR list: one range scan and a sort (SQLite allows 500 compound terms)
        values = [value(0, j) for j in range(n)]
        return select(idx.c.id).where(idx.c.resource_type == resource_type, idx.c.param == param,
                                      idx.c.value.in_(values), *filters).distinct()
    members = [
        select(idx.c.id).where(idx.c.resource_type == resource_type, idx.c.param == param, idx.c.value == value(0, j),
                               *filters)
        for j in range(n)
    ]
    return members[0] if n == 1 else union(*members)


def search(
    conn: Connection,
    resource_type: str,
    criteria: Sequence[tuple[str, Sequence[str]]],
    count: int,
    offset: int,
) -> tuple[int, list[StoredResource]]:
    """`search_page` with the exact number of matches: (total, one page)."""
    page = search_page(conn, resource_type, criteria, count, offset, count_total=True)
    assert page.total is not None
    return page.total, page.resources
