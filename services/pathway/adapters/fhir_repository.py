"""FHIR resources in the store: upsert by deterministic id (with their search index rows), read by id.

Each resource row keeps its JSON; `fhir_search_index` holds one row per search parameter value
(`services.pathway.domain.search_index`) so a search is an indexed intersection on both SQLite and
PostgreSQL (`fhir_search`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select

from forlop.clock import as_utc, stored_instant
from forlop.storage import schema
from forlop.storage.bulk import among, delete_rows, insert_many, insert_rows, rows_by_key, update_many
from services.pathway.domain.search_index import OWNED_TYPES, index_values


def upsert_resources(
    conn: Connection, resources: Sequence[dict[str, Any]], pathway_key: str | None, now: datetime
) -> int:
    """Insert or update resources; bump versionId only when content changed. Returns changed count.

    Tasks and EpisodeOfCare belong to a pathway: those of the pathway that are no longer
    produced (a withdrawn milestone) are deleted. Shared resources (Patient, Organization,
    Practitioner) are upserted only. Every change is a version in `fhir_history` (a deletion
    too, and a deleted resource's last version stays in `fhir_deleted`), written in the same
    transaction.
    """
    return upsert_many(conn, [(pathway_key, list(resources))], now)


def upsert_many(
    conn: Connection, batch: Sequence[tuple[str | None, Sequence[dict[str, Any]]]], now: datetime
) -> int:
    """`upsert_resources` for several pathways in one go, with the same outcome as one call per pathway in order.

    A resource several pathways share (their Patient, Organization) is compared with what the
    earlier pathways of the batch left, so versionId counts the same changes. The lookup is by
    the whole primary key (resource_type, id), never by id alone (which scans the table), and
    the writes are one executemany per statement kind. Each change within the batch is a version
    of its own in the history (a Patient two pathways of the batch change gets both).
    """
    r, idx, h = schema.fhir_resources, schema.fhir_search_index, schema.fhir_history
    now = stored_instant(now)
    keys = list(dict.fromkeys((res["resourceType"], res["id"]) for _, resources in batch for res in resources))
    if not keys:
        return 0
    stored = {(row.resource_type, row.id): (row.version_id, row.resource)
              for row in _rows_by_key(conn, keys, r.c.version_id, r.c.resource)}
    # A pathway's own resource that is not stored may have been deleted: its versions go on from the
    # deletion's (only these types are ever deleted, and the table holds only what was deleted).
    deleted = _deleted_versions(conn, [k for k in keys if k not in stored and k[0] in OWNED_TYPES])
    # key -> [version, resource, owning pathway, index rows]: the state after each pathway in turn
    latest: dict[tuple[str, str], list[Any]] = {}
    versions: list[tuple[tuple[str, str], int, dict[str, Any]]] = []  # every change: (key, version, resource)
    changed = 0
    for pathway_key, resources in batch:
        for res in resources:
            key = (res["resourceType"], res["id"])
            now_state = latest.get(key)
            if now_state is not None:
                version, old = now_state[0], now_state[1]
            elif key in stored:
                version, old = stored[key]
            elif key in deleted:
                version, old = deleted[key], None
            else:
                version, old = 0, None
            if old is not None and _same(old, res):
                continue
            changed += 1
            owner = pathway_key if key[0] in OWNED_TYPES else None
            if now_state is not None:
                owner = now_state[2]
            latest[key] = [version + 1, res, owner]
            versions.append((key, version + 1, res))
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
    # The same race on the history: two replicas that both changed a shared resource from the same
    # stored version both write the next one; the first committed stands (as the version count of
    # the resource row counts one change). A raced insert's versions are the other replica's.
    insert_many(conn, h, [{"resource_type": key[0], "id": key[1], "version_id": version, "last_updated": now,
                           "method": "POST" if version == 1 else "PUT", "resource": res}
                          for key, version, res in sorted(versions, key=lambda v: (v[0], v[1])) if key in latest],
                skip_existing=conn.dialect.name == "postgresql")
    came_back = sorted(key for key in latest if key in deleted)
    if came_back:
        fd = schema.fhir_deleted
        delete_rows(conn, fd, [fd.c.resource_type, fd.c.id], came_back)
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
            gone_rows = {(row.resource_type, row.id): (row.version_id, row.resource)
                         for row in _rows_by_key(conn, [(t, i) for t, i, _ in stale], r.c.version_id, r.c.resource)}
            gone_resources = {key: res for key, (_, res) in gone_rows.items()}
            patients = _patients_of(conn, list(gone_resources.values()), latest, stored)
            # stale resources are a pathway's own (Tasks): behind its pathway row's lock, one statement
            delete_rows(conn, r, [r.c.resource_type, r.c.id], sorted((t, i) for t, i, _ in stale))
            _unindex(conn, [(key[0], key[1], p, v) for key, res in gone_resources.items()
                            for p, v in _indexed(res, patients)])
            # the deletion is a version of its own, and its tombstone answers a read with 410 Gone
            tombstones = [{"resource_type": key[0], "id": key[1], "version_id": version + 1, "last_updated": now}
                          for key, (version, _) in sorted(gone_rows.items())]
            insert_many(conn, h, [{**t, "method": "DELETE", "resource": None} for t in tombstones])
            of_pathway = {(t, i): pk for t, i, pk in stale}
            insert_many(conn, schema.fhir_deleted,
                        [{**t, "pathway_key": of_pathway[(t["resource_type"], t["id"])]} for t in tombstones])
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


def _deleted_versions(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The deletion's version of each of `keys` that was deleted (and not made again)."""
    fd = schema.fhir_deleted
    out: dict[tuple[str, str], int] = {}
    for i in range(0, len(keys), 500):
        out.update({(row.resource_type, row.id): row.version_id for row in
                    rows_by_key(conn, fd, [fd.c.resource_type, fd.c.id], keys[i : i + 500], fd.c.version_id)})
    return out


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

    @property
    def updated_at(self) -> datetime:
        return as_utc(self.last_updated)

    def with_meta(self) -> dict[str, Any]:
        res = dict(self.resource)
        meta = dict(res.get("meta", {}))
        meta["versionId"] = str(self.version_id)
        meta["lastUpdated"] = self.updated_at.isoformat()  # an instant: with its offset (UTC) on both stores
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



def all_resources(conn: Connection) -> Iterable[dict[str, Any]]:
    r = schema.fhir_resources
    for row in conn.execute(select(r.c.resource).order_by(r.c.resource_type, r.c.id)):
        yield row.resource



def read_resources(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], StoredResource]:
    """The stored resources of `keys` (resource_type, id), by key, read by the primary key 500 at a time
    (a search's included resources); a key that names nothing is left out."""
    r = schema.fhir_resources
    return {(row.resource_type, row.id): StoredResource(row.resource, row.version_id, row.last_updated)
            for row in _rows_by_key(conn, keys, r.c.resource, r.c.version_id, r.c.last_updated)}
