"""FHIR search over the index table: the statements a search runs, built once per search shape.

AND across parameters, OR across the values of one parameter, ordered by id, paged by keyset or
offset; the rows are those `services.pathway.domain.search_index` gives each resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Integer, and_, bindparam, func, intersect, or_, select, union

from forlop.clock import stored_instant
from forlop.storage import schema
from forlop.storage.driver import fetch_all
from forlop.tenants import Reach
from services.pathway.adapters.fhir_repository import StoredResource
from services.pathway.adapters.reach import reached
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
    updated: Sequence[tuple[str, datetime]] = (),
    sort: str | None = None,
    reach: Reach | None = None,
) -> SearchPage:
    """AND across parameters, OR across the values of one parameter; ordered by id.

    `after` (keyset paging): only matches whose id sorts after it. One query reads count + 1
    matches through the covering index (resource_type, param, value, id) and their resources, so
    a page costs the same however many resources match; the matches are counted only when
    `count_total` (FHIR `_total=accurate`) or `count` is 0.

    `updated` (FHIR `_lastUpdated`): bounds (">=" or "<", an instant) on the resource's lastUpdated;
    `sort` ("_lastUpdated", "-_lastUpdated"): the page in that order (then by id) instead of by id.
    `reach` (a tenant's): only resources within it, restricted in the statement (None: every resource).
    Either reads the resources' (resource_type, last_updated, id) index and checks the other
    parameters per resource.
    """
    ids: set[str] | None = None  # _id: its repetitions AND (intersect), its values OR
    missing: list[tuple[str, bool]] = []
    groups = []
    for param, values in criteria:
        if param == "_id":
            ids = set(values) if ids is None else ids & set(values)
        elif param.endswith(":missing"):
            missing.append((param.removesuffix(":missing"), values[0] == "true"))
        else:
            groups.append((param, sorted(set(reference_values(resource_type, param, values)))))
    if any(not values for _, values in groups) or ids == set():  # nothing can match
        return SearchPage([], False, 0)
    rank = {name: i for i, name in enumerate(_DRIVING_ORDER)}
    groups.sort(key=lambda g: (rank.get(g[0], -1), len(g[1]), g[0]))  # the driving parameter first
    shape = tuple(_group_shape(param, values) for param, values in groups)
    params: dict[str, Any] = {}
    for i, (_, values) in enumerate(groups):
        for j, v in enumerate(values):
            params[f"v{i}_{j}"] = v
            if v.endswith("|"):  # a token's "system|": every code of the system, a range of the index
                params[f"w{i}_{j}"] = v[:-1] + chr(ord("|") + 1)
    id_values = sorted(ids) if ids is not None else []
    params.update({f"id_{k}": v for k, v in enumerate(id_values)})
    statement_args = (resource_type, shape, after is not None, conn.dialect.name, len(id_values),
                      tuple(sorted(set(missing))), reach)
    if after is not None:
        params["after"] = after
    filtered = bool(updated) or sort is not None
    if filtered:
        params.update({f"u{k}": stored_instant(at) for k, (_, at) in enumerate(updated)})
        ops = tuple(op for op, _ in updated)
        page_statement, count_statement = (_filtered_page_statement(*statement_args, ops, sort),
                                           _filtered_count_statement(*statement_args, ops))
    else:
        page_statement, count_statement = _page_statement(*statement_args), _count_statement(*statement_args)
    total = None
    if count_total or count == 0:
        total = fetch_all(conn, count_statement, params)[0][0]
    if count == 0:
        return SearchPage([], False, total)
    rows = fetch_all(conn, page_statement, {**params, "lim": count + 1, "off": offset})
    more = len(rows) > count
    found = [StoredResource(resource, version_id, last_updated) for resource, version_id, last_updated in rows[:count]]
    if total is None and not more and after is None and (found or offset == 0):
        total = offset + len(found)
    return SearchPage(found, more, total)


# A statement per search shape (resource type, parameters and how many values each, keyset or
# not, dialect), built once with bound parameters: building and cache-keying a new statement tree
# cost twice the query itself.
def _group_shape(param: str, values: Sequence[str]) -> tuple[Any, ...]:
    """(param, n) for n equal values; (param, n, kinds) when some are a token's "system|" ("^": a range)."""
    kinds = tuple("^" if v.endswith("|") else "=" for v in values)
    return (param, len(values)) if "^" not in kinds else (param, len(values), kinds)


@lru_cache(maxsize=512)
def _page_statement(resource_type: str, shape: tuple[tuple[Any, ...], ...], keyset: bool, dialect: str,
                    ids: int = 0, missing: tuple[tuple[str, bool], ...] = (),
                  reach: Reach | None = None) -> Any:
    r = schema.fhir_resources
    ids_ = _matching_ids(resource_type, shape, keyset, dialect, ids, missing, reach)
    page = (
        ids_.order_by(ids_.selected_columns.id)
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
def _count_statement(resource_type: str, shape: tuple[tuple[Any, ...], ...], keyset: bool, dialect: str,
                     ids: int = 0, missing: tuple[tuple[str, bool], ...] = (),
                  reach: Reach | None = None) -> Any:
    return select(func.count()).select_from(
        _matching_ids(resource_type, shape, keyset, dialect, ids, missing, reach).subquery())


def _filtered(resource_type: str, shape: tuple[tuple[Any, ...], ...], keyset: bool, dialect: str,
              ids: int, missing: tuple[tuple[str, bool], ...], reach: Reach | None, ops: tuple[str, ...]) -> list[Any]:
    """The conditions on fhir_resources of a search with `_lastUpdated` bounds or a sort: its type, the
    bounds (bound parameters u0, u1, ..), the ids the other parameters match (from the index)."""
    r = schema.fhir_resources
    conditions = [r.c.resource_type == resource_type]
    for k, op in enumerate(ops):
        bound = bindparam(f"u{k}", type_=r.c.last_updated.type)
        conditions.append(r.c.last_updated >= bound if op == ">=" else r.c.last_updated < bound)
    if shape or ids or missing:
        conditions.append(r.c.id.in_(_matching_ids(resource_type, shape, False, dialect, ids, missing)))
    if reach is not None:
        conditions.append(reached(resource_type, r.c.id, reach))
    if keyset:
        conditions.append(r.c.id > bindparam("after", type_=r.c.id.type))
    return conditions


@lru_cache(maxsize=512)
def _filtered_page_statement(resource_type: str, shape: tuple[tuple[Any, ...], ...], keyset: bool, dialect: str,
                             ids: int, missing: tuple[tuple[str, bool], ...], reach: Reach | None,
                             ops: tuple[str, ...],
                             sort: str | None) -> Any:
    r = schema.fhir_resources
    order = [r.c.id]
    if sort is not None:
        order = [r.c.last_updated, r.c.id]
        if sort.startswith("-"):
            order = [column.desc() for column in order]
    return (select(r.c.resource, r.c.version_id, r.c.last_updated)
            .where(*_filtered(resource_type, shape, keyset, dialect, ids, missing, reach, ops)).order_by(*order)
            .limit(bindparam("lim", type_=Integer)).offset(bindparam("off", type_=Integer)))


@lru_cache(maxsize=512)
def _filtered_count_statement(resource_type: str, shape: tuple[tuple[Any, ...], ...], keyset: bool, dialect: str,
                              ids: int, missing: tuple[tuple[str, bool], ...], reach: Reach | None,
                              ops: tuple[str, ...]) -> Any:
    r = schema.fhir_resources
    return select(func.count()).select_from(r).where(*_filtered(resource_type, shape, keyset, dialect, ids, missing, reach, ops))


def _matching_ids(resource_type: str, shape: tuple[tuple[Any, ...], ...], keyset: bool, dialect: str,
                  ids: int = 0, missing: tuple[tuple[str, bool], ...] = (),
                  reach: Reach | None = None) -> Any:
    """A SELECT (or compound) of the matching ids, each match once, that an index returns in id order.

    The values of parameter i are the bound parameters v<i>_0, v<i>_1, ...; `keyset`: only ids
    after the bound parameter `after`. The first (driving) parameter's rows are read from the
    covering index in id order (one range per value: a UNION of ranges merges them and drops a
    resource matching two values); each other parameter is an EXISTS probe into the same index,
    which PostgreSQL plans as a merge or nested-loop semi join. SQLite, which plans without
    statistics, gets an INTERSECT of the ranges instead when every parameter has one value: it
    merges the sorted ranges and stops at the page, however few of the driving rows match.
    No parameter: the resources' primary key.

    A value of kind "^" (a token's "system|") is the range from v<i>_<j> up to w<i>_<j>; `ids`: only
    the bound ids id_0, id_1, ... (`_id`); `missing`: (param, true) only resources without a row of
    the parameter, (param, false) only those with one (`:missing`); `reach`: an EXISTS on the pathways
    that reach each candidate (`adapters.reach.reached`), beside the parameters' probes.
    """
    r, idx = schema.fhir_resources, schema.fhir_search_index

    def value(i: int, j: int) -> Any:
        return bindparam(f"v{i}_{j}", type_=idx.c.value.type)

    def one(column: Any, i: int, j: int, kind: str) -> Any:
        if kind == "=":
            return column == value(i, j)
        return and_(column >= value(i, j), column < bindparam(f"w{i}_{j}", type_=idx.c.value.type))

    def matches(column: Any, i: int, group: tuple[Any, ...]) -> Any:
        kinds = group[2] if len(group) > 2 else ("=",) * group[1]
        if "^" not in kinds and len(kinds) > 1:
            return column.in_([value(i, j) for j in range(len(kinds))])
        return or_(*[one(column, i, j, kind) for j, kind in enumerate(kinds)])

    def presence(table: Any) -> list[Any]:
        out = []
        for k, (param, absent) in enumerate(missing):
            probe = idx.alias(f"missing{k}")
            has = select(probe.c.id).where(probe.c.resource_type == resource_type, probe.c.param == param,
                                           probe.c.id == table.c.id).exists()
            out.append(~has if absent else has)
        return out

    id_list = [bindparam(f"id_{k}", type_=r.c.id.type) for k in range(ids)]
    after = [idx.c.id > bindparam("after", type_=idx.c.id.type)] if keyset else []
    after += [idx.c.id.in_(id_list)] if ids else []
    within = [reached(resource_type, idx.c.id, reach)] if reach is not None else []
    if not shape:
        query = select(r.c.id).where(r.c.resource_type == resource_type, *presence(r))
        query = query.where(reached(resource_type, r.c.id, reach)) if reach is not None else query
        query = query.where(r.c.id.in_(id_list)) if ids else query
        return query.where(r.c.id > bindparam("after", type_=r.c.id.type)) if keyset else query
    plain = all(len(g) == 2 for g in shape)
    if dialect == "sqlite" and plain and not missing and 1 < len(shape) <= _MERGED_VALUES_MAX \
            and all(n == 1 for _, n in shape):
        return intersect(*[
            select(idx.c.id).where(idx.c.resource_type == resource_type, idx.c.param == param, idx.c.value == value(i, 0),
                                   *after, *(within if i == 0 else ()))  # the intersection is within it once one is
            for i, (param, _) in enumerate(shape)
        ])
    (param, n), others = shape[0][:2], shape[1:]
    filters = [*after, *presence(idx), *within]
    for i, group in enumerate(others, start=1):
        probe = idx.alias(f"probe{i}")
        filters.append(
            select(probe.c.id)
            .where(
                probe.c.resource_type == resource_type,
                probe.c.param == group[0],
                matches(probe.c.value, i, group),
                probe.c.id == idx.c.id,
            )
            .exists()
        )
    if len(shape[0]) > 2:  # a "system|" among the driving values: each value's rows, merged and sorted
        members = [
            select(idx.c.id).where(idx.c.resource_type == resource_type, idx.c.param == param,
                                   one(idx.c.value, 0, j, shape[0][2][j]), *filters)
            for j in range(n)
        ]
        return members[0] if n == 1 else union(*members)
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
