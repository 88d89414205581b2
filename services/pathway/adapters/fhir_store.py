"""FHIR resources in the store: upsert by deterministic id, and FHIR search over an index table.

Each resource row keeps its JSON; `fhir_search_index` holds one row per search
parameter value so a search is an indexed intersection on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import (
    Connection,
    Dialect,
    Integer,
    and_,
    bindparam,
    func,
    intersect,
    select,
    union,
)
from sqlalchemy.exc import DBAPIError

from forlop.storage import schema
from forlop.storage.bulk import among, delete_rows, insert_many, insert_rows, rows_by_key, update_many

# The types a pathway owns (its pathway_key column is set); the others are shared between pathways.
OWNED_TYPES = ("EpisodeOfCare", "Task")

FNR_SYSTEMS = ("urn:oid:2.16.578.1.12.4.1.4.1", "urn:oid:2.16.578.1.12.4.1.4.2")

# The search parameters the API supports, per resource type (the CapabilityStatement says the same).
SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "EpisodeOfCare": ("identifier", "patient", "patient.identifier", "status", "type", "organization"),
    "Task": ("focus", "patient", "status", "code", "business-status", "owner"),
    "Patient": ("identifier",),
    "Organization": ("identifier",),
    "Practitioner": ("identifier",),
}


def _tokens(codings: Iterable[dict[str, Any]] | None) -> list[str]:
    out: list[str] = []
    for c in codings or []:
        value = c.get("value", c.get("code"))
        if value is None:
            continue
        out.append(str(value))
        if c.get("system"):
            out.append(f"{c['system']}|{value}")
    return out


# The reference search parameters and the types a bare id may name (FHIR R4's targets of each,
# of the types served here). The index holds a reference in its "Type/id" form only (a second
# row per reference for the bare id was a quarter of all index rows); a search by a bare id asks
# for "Type/id" of each target type instead.
REFERENCE_TARGETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("EpisodeOfCare", "patient"): ("Patient",),
    ("EpisodeOfCare", "organization"): ("Organization",),
    ("Task", "focus"): tuple(SEARCH_PARAMS),  # Reference(Any)
    ("Task", "patient"): ("Patient",),
    ("Task", "owner"): ("Organization", "Patient", "Practitioner"),
}


def _ref(reference: dict[str, Any] | None) -> list[str]:
    if not reference or "reference" not in reference:
        return []
    return [reference["reference"]]


def reference_values(resource_type: str, param: str, values: Sequence[str]) -> list[str]:
    """What a reference parameter's values match in the index: a bare id as "Type/id" of each target
    type, an absolute URL as its last "Type/id"; other parameters' values as given."""
    targets = REFERENCE_TARGETS.get((resource_type, param))
    if targets is None:
        return list(values)
    out: list[str] = []
    for value in values:
        parts = value.rstrip("/").split("/")
        if len(parts) == 1:
            out += [f"{t}/{value}" for t in targets]
        else:
            out.append("/".join(parts[-2:]))  # Type/id as it is; of a URL, its Type/id
    return out


def index_values(resource: dict[str, Any], patients: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(param, value) pairs to index for one resource. `patients` resolves chained patient.identifier."""
    rtype = resource["resourceType"]
    pairs: list[tuple[str, str]] = []

    def add(param: str, values: Iterable[str]) -> None:
        pairs.extend((param, v) for v in values)

    if rtype == "EpisodeOfCare":
        add("identifier", _tokens(resource.get("identifier")))
        add("patient", _ref(resource.get("patient")))
        patient = patients.get(resource.get("patient", {}).get("reference", ""))
        if patient:
            add("patient.identifier", _tokens(patient.get("identifier")))
        add("status", [resource["status"]])
        for t in resource.get("type", []):
            add("type", _tokens(t.get("coding")))
        add("organization", _ref(resource.get("managingOrganization")))
    elif rtype == "Task":
        add("focus", _ref(resource.get("focus")))
        add("patient", _ref(resource.get("for")))
        add("status", [resource["status"]])
        add("code", _tokens(resource.get("code", {}).get("coding")))
        add("business-status", _tokens(resource.get("businessStatus", {}).get("coding")))
        add("owner", _ref(resource.get("owner")))
    else:
        add("identifier", _tokens(resource.get("identifier")))
    return sorted(set(pairs))


def upsert_resources(
    conn: Connection, resources: Sequence[dict[str, Any]], pathway_key: str | None, now: datetime
) -> int:
    """Insert or update resources; bump versionId only when content changed. Returns changed count.

    Tasks and EpisodeOfCare belong to a pathway: those of the pathway that are no longer
    produced (a withdrawn milestone) are deleted. Shared resources (Patient, Organization,
    Practitioner) are upserted only.
    """
    return upsert_many(conn, [(pathway_key, list(resources))], now)


def upsert_many(
    conn: Connection, batch: Sequence[tuple[str | None, Sequence[dict[str, Any]]]], now: datetime
) -> int:
    """`upsert_resources` for several pathways in one go, with the same outcome as one call per pathway in order.

    A resource several pathways share (their Patient, Organization) is compared with what the
    earlier pathways of the batch left, so versionId counts the same changes. The lookup is by
    the whole primary key (resource_type, id), never by id alone (which scans the table), and
    the writes are one executemany per statement kind.
    """
    r, idx = schema.fhir_resources, schema.fhir_search_index
    keys = list(dict.fromkeys((res["resourceType"], res["id"]) for _, resources in batch for res in resources))
    if not keys:
        return 0
    stored = {(row.resource_type, row.id): (row.version_id, row.resource)
              for row in _rows_by_key(conn, keys, r.c.version_id, r.c.resource)}
    # key -> [version, resource, owning pathway, index rows]: the state after each pathway in turn
    latest: dict[tuple[str, str], list[Any]] = {}
    changed = 0
    for pathway_key, resources in batch:
        for res in resources:
            key = (res["resourceType"], res["id"])
            now_state = latest.get(key)
            if now_state is not None:
                version, old = now_state[0], now_state[1]
            elif key in stored:
                version, old = stored[key]
            else:
                version, old = 0, None
            if old is not None and _same(old, res):
                continue
            changed += 1
            owner = pathway_key if key[0] in OWNED_TYPES else None
            if now_state is not None:
                owner = now_state[2]
            latest[key] = [version + 1, res, owner]
    inserts, updates, index_rows = [], [], []
    for key, (version, res, owner) in sorted(latest.items(), key=lambda item: item[0]):  # one lock order
        if key in stored:
            updates.append({"k_resource_type": key[0], "k_id": key[1], "version_id": version, "last_updated": now,
                            "resource": res})
        else:
            inserts.append({"resource_type": key[0], "id": key[1], "pathway_key": owner, "version_id": version,
                            "last_updated": now, "resource": res})
    # The search index of an updated resource changes by a value or two (a Task's status): only the
    # difference is written. The rows it has are those of its stored JSON (`index_values`, the
    # function that wrote them), so they are worked out here, not read: an index of the table by
    # resource, for that read alone, was a second random-order B-tree beside the key's, as big as
    # it, written with every row (half the index's share of a 1M-event replay).
    patients = _patients_of(conn, [state[1] for state in latest.values()]
                            + [stored[key][1] for key in latest if key in stored], latest, stored)
    if inserts and conn.dialect.name == "postgresql":
        # Another replica may insert the same shared resource (Patient, Organization) between our
        # lookup and our insert: its row stands (the next refresh compares against it) and only the
        # rows this transaction really inserted get their search index.
        done = {(row.resource_type, row.id)
                for row in insert_many(conn, r, inserts, skip_existing=True, returning=("resource_type", "id"))}
        raced = {(i["resource_type"], i["id"]) for i in inserts} - done
        for key in raced:
            del latest[key]
        changed -= len(raced)
        inserts = []
    gone: list[tuple[str, str, str, str]] = []
    for key, (_, res, _) in latest.items():
        wanted = _indexed(res, patients)
        have = _indexed(stored[key][1], patients) if key in stored else set()
        index_rows += [(key[0], key[1], p, v) for p, v in wanted - have]
        gone += [(key[0], key[1], p, v) for p, v in have - wanted]
    # In the key's order: a batch's rows go into the index's B-tree leaf after leaf, not at random.
    index_rows.sort(key=_index_key)
    # A pathway's own resources are written only by a transaction that holds its pathway row (FOR
    # UPDATE): one statement for them. Shared ones (a Patient two replicas may both update) go one by
    # one in the key's order, so two transactions lock them in the same order.
    owned = [u["k_resource_type"] in OWNED_TYPES for u in updates]
    update_many(conn, r, ("resource_type", "id"), [u for u, o in zip(updates, owned, strict=True) if o])
    update_many(conn, r, ("resource_type", "id"), [u for u, o in zip(updates, owned, strict=True) if not o],
                row_by_row=True)
    _unindex(conn, gone)
    insert_many(conn, r, inserts)  # SQLite's (PostgreSQL's went in above, skipping raced rows)
    # PostgreSQL: another replica that updated the same shared resource (a Patient) may have added
    # a row this one adds too (its index was read before that replica committed): the row stands.
    insert_rows(conn, idx, index_rows, skip_existing=conn.dialect.name == "postgresql")
    owners = {pk: {(res["resourceType"], res["id"]) for res in resources} for pk, resources in batch if pk}
    if owners:
        stale: list[tuple[str, str, str]] = []
        owner_keys = list(owners)
        for i in range(0, len(owner_keys), 500):
            query = select(r.c.resource_type, r.c.id, r.c.pathway_key).where(
                among(r.c.pathway_key, owner_keys[i : i + 500], conn.dialect.name)
            )
            stale += [
                (row.resource_type, row.id, row.pathway_key)
                for row in conn.execute(query)
                if (row.resource_type, row.id) not in owners[row.pathway_key]
            ]
        if stale:
            # their index rows, from their JSON (the resource is read only when it goes: rarely)
            gone_resources = _resources(conn, [(t, i) for t, i, _ in stale])
            patients = _patients_of(conn, list(gone_resources.values()), latest, stored)
            # stale resources are a pathway's own (Tasks): behind its pathway row's lock, one statement
            delete_rows(conn, r, [r.c.resource_type, r.c.id], sorted((t, i) for t, i, _ in stale))
            _unindex(conn, [(key[0], key[1], p, v) for key, res in gone_resources.items()
                            for p, v in _indexed(res, patients)])
            changed += len(stale)
    return changed


def _index_key(row: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
    return row[0], row[2], row[3], row[1]  # a row (resource_type, id, param, value) as the key orders it


def _indexed(resource: dict[str, Any], patients: dict[str, dict[str, Any]]) -> set[tuple[str, str]]:
    """A resource's (param, value) rows in the index. Of a stored resource, the rows it got when it
    was written: its values, and an EpisodeOfCare's patient.identifier from its Patient (found by
    `_patients_of` then as now; its identifier never changes under its id)."""
    return {(p, v[:300]) for p, v in index_values(resource, patients)}


def _unindex(conn: Connection, rows: list[tuple[str, str, str, str]]) -> None:
    """Delete index rows (resource_type, id, param, value) by the table's key, in its order."""
    idx = schema.fhir_search_index
    delete_rows(conn, idx, [idx.c.resource_type, idx.c.param, idx.c.value, idx.c.id], sorted(map(_index_key, rows)))


def _rows_by_key(conn: Connection, keys: Sequence[tuple[str, str]], *columns: Any) -> Iterator[Any]:
    """Rows of fhir_resources by the whole primary key (resource_type, id), 500 keys per query."""
    r = schema.fhir_resources
    for i in range(0, len(keys), 500):
        yield from rows_by_key(conn, r, [r.c.resource_type, r.c.id], keys[i : i + 500], *columns)


def _resources(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    r = schema.fhir_resources
    return {(row.resource_type, row.id): row.resource for row in _rows_by_key(conn, keys, r.c.resource)}


def _patients_of(
    conn: Connection, resources: Sequence[dict[str, Any]], latest: dict[tuple[str, str], list[Any]],
    stored: dict[tuple[str, str], tuple[int, Any]],
) -> dict[str, dict[str, Any]]:
    """The Patients the EpisodeOfCares among `resources` refer to ("Patient/<id>" -> resource), from
    this batch, else as stored, else none (a Patient's identifier never changes under its id: both
    come from the national id, so any version of it gives the same patient.identifier rows)."""
    refs = {res.get("patient", {}).get("reference", "") for res in resources if res["resourceType"] == "EpisodeOfCare"}
    out: dict[str, dict[str, Any]] = {}
    missing = []
    for ref in refs:
        kind, _, pid = ref.partition("/")
        if kind != "Patient" or not pid:
            continue
        key = ("Patient", pid)
        found = latest[key][1] if key in latest else stored[key][1] if key in stored else None
        if found is not None:
            out[ref] = found
        else:
            missing.append(key)
    if missing:
        out.update({f"Patient/{k[1]}": res for k, res in _resources(conn, missing).items()})
    return out


def _same(stored: Any, new: dict[str, Any]) -> bool:
    if isinstance(stored, str):
        stored = json.loads(stored)
    return stored == new


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource: dict[str, Any]
    version_id: int
    last_updated: datetime

    def with_meta(self) -> dict[str, Any]:
        res = dict(self.resource)
        meta = dict(res.get("meta", {}))
        meta["versionId"] = str(self.version_id)
        meta["lastUpdated"] = self.last_updated.isoformat()
        res["meta"] = meta
        return res


def read_resource(conn: Connection, resource_type: str, resource_id: str) -> StoredResource | None:
    r = schema.fhir_resources
    row = conn.execute(
        select(r.c.resource, r.c.version_id, r.c.last_updated).where(
            and_(r.c.resource_type == resource_type, r.c.id == resource_id)
        )
    ).first()
    if row is None:
        return None
    return StoredResource(row.resource, row.version_id, row.last_updated)


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
        total = _fetch(conn, _count_statement(*shape), params)[0][0]
    if count == 0:
        return SearchPage([], False, total)
    rows = _fetch(conn, _page_statement(*shape), {**params, "lim": count + 1, "off": offset})
    more = len(rows) > count
    found = [StoredResource(resource, version_id, last_updated) for resource, version_id, last_updated in rows[:count]]
    if total is None and not more and after is None and (found or offset == 0):
        total = offset + len(found)
    return SearchPage(found, more, total)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A search statement compiled once for one dialect, to run on the driver's cursor."""

    sql: str
    order: tuple[str, ...] | None  # a positional paramstyle's parameter names in order; None: by name
    fixed: dict[str, Any]  # the values the statement binds itself (resource type, parameter names)
    processors: tuple[Callable[[Any], Any] | None, ...]  # per column: what SQLAlchemy applies to a value


@lru_cache(maxsize=512)
def _prepared(statement: Any, dialect: Dialect) -> _Prepared | None:
    """None where the compiled form needs SQLAlchemy at execution (expanding or literal parameters,
    bind processors, an unusual paramstyle): those run through `Connection.execute`."""
    compiled = statement.compile(dialect=dialect)
    if dialect.paramstyle in ("qmark", "format"):
        order = tuple(compiled.positiontup or ())
    elif dialect.paramstyle in ("pyformat", "named"):
        order = None
    else:
        return None
    if compiled.literal_execute_params or compiled.post_compile_params or getattr(compiled, "_bind_processors", None):
        return None
    processors = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                       for c in statement.selected_columns)
    return _Prepared(compiled.string, order, dict(compiled.params), processors)


def _fetch(conn: Connection, statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """All rows of a search statement, their values what `conn.execute(statement, params)` gives.

    Executed on the driver's cursor of the same connection (its transaction, if any): SQLAlchemy's
    execute (the statement's cache key, an execution context, the result and row wrappers) cost
    more than SQLite's query and as much as PostgreSQL's round trip, on every search. A driver
    error is raised as SQLAlchemy's (`DBAPIError`), and a lost connection is invalidated, as there.
    """
    prepared = _prepared(statement, conn.dialect)
    if prepared is None:
        return [tuple(row) for row in conn.execute(statement, params)]
    values = {**prepared.fixed, **params}
    args = values if prepared.order is None else tuple(values[name] for name in prepared.order)
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    alone = _outside_transaction(conn, dbapi_conn)
    if alone:
        dbapi_conn.autocommit = True
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(prepared.sql, args)
        rows = cursor.fetchall()
    except conn.dialect.loaded_dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, dbapi_conn, cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(prepared.sql, args, exc, conn.dialect.loaded_dbapi.Error,
                                  connection_invalidated=lost, dialect=conn.dialect) from exc
    finally:
        cursor.close()
        if alone and not dbapi_conn.closed:
            dbapi_conn.autocommit = False
    if not rows or not any(prepared.processors):
        return rows
    # Column by column (as SQLAlchemy, each processor is given every value, None included)
    columns = [col if process is None else list(map(process, col))
               for process, col in zip(prepared.processors, zip(*rows, strict=True), strict=True)]
    return list(zip(*columns, strict=True))


def _outside_transaction(conn: Connection, dbapi_conn: Any) -> bool:
    """PostgreSQL (psycopg), no transaction open: the statement may run on its own (autocommit).

    Else psycopg sends BEGIN before it and the pool ROLLBACK after it, two more round trips per
    search for what a single statement sees anyway under READ COMMITTED (the data committed when
    it starts). Inside a transaction (`Store.transaction`, or a statement run before on `conn`)
    it runs in that transaction, as before.
    """
    if conn.dialect.driver != "psycopg" or conn.in_transaction() or dbapi_conn.autocommit:
        return False
    return dbapi_conn.info.transaction_status == TransactionStatus.IDLE


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


def all_resources(conn: Connection) -> Iterable[dict[str, Any]]:
    r = schema.fhir_resources
    for row in conn.execute(select(r.c.resource).order_by(r.c.resource_type, r.c.id)):
        yield row.resource

