"""FHIR resources in the store: upsert by deterministic id, and FHIR search over an index table.

Each resource row keeps its JSON; `fhir_search_index` holds one row per search
parameter value so a search is an indexed intersection on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, update

from forlop.storage import schema

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


def _ref(reference: dict[str, Any] | None) -> list[str]:
    if not reference or "reference" not in reference:
        return []
    ref = reference["reference"]
    return [ref, ref.split("/", 1)[-1]]


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
    r, idx = schema.fhir_resources, schema.fhir_search_index
    keys = [(res["resourceType"], res["id"]) for res in resources]
    existing = {
        (row.resource_type, row.id): row
        for row in conn.execute(
            select(r.c.resource_type, r.c.id, r.c.version_id, r.c.resource, r.c.pathway_key).where(
                r.c.id.in_([k[1] for k in keys])
            )
        )
    }
    patients = {f"Patient/{res['id']}": res for res in resources if res["resourceType"] == "Patient"}
    changed = 0
    for res in resources:
        key = (res["resourceType"], res["id"])
        owned = res["resourceType"] in ("EpisodeOfCare", "Task")
        old = existing.get(key)
        if old is not None and _same(old.resource, res):
            continue
        changed += 1
        if old is None:
            conn.execute(
                insert(r).values(
                    resource_type=key[0],
                    id=key[1],
                    pathway_key=pathway_key if owned else None,
                    version_id=1,
                    last_updated=now,
                    resource=res,
                )
            )
        else:
            conn.execute(
                update(r)
                .where(and_(r.c.resource_type == key[0], r.c.id == key[1]))
                .values(version_id=old.version_id + 1, last_updated=now, resource=res)
            )
            conn.execute(delete(idx).where(and_(idx.c.resource_type == key[0], idx.c.id == key[1])))
        rows = [
            {"resource_type": key[0], "id": key[1], "param": p, "value": v[:300]}
            for p, v in index_values(res, patients)
        ]
        if rows:
            conn.execute(insert(idx), rows)
    if pathway_key is not None:
        stale = [
            row.id
            for row in conn.execute(
                select(r.c.resource_type, r.c.id).where(r.c.pathway_key == pathway_key)
            )
            if (row.resource_type, row.id) not in set(keys)
        ]
        if stale:
            conn.execute(delete(r).where(and_(r.c.pathway_key == pathway_key, r.c.id.in_(stale))))
            conn.execute(delete(idx).where(idx.c.id.in_(stale)))
            changed += len(stale)
    return changed


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
    return StoredResource(_loads(row.resource), row.version_id, row.last_updated)


def search(
    conn: Connection,
    resource_type: str,
    criteria: Sequence[tuple[str, list[str]]],
    count: int,
    offset: int,
) -> tuple[int, list[StoredResource]]:
    """AND across parameters, OR across the comma-separated values of one parameter."""
    r, idx = schema.fhir_resources, schema.fhir_search_index
    query = select(r.c.id).where(r.c.resource_type == resource_type)
    for param, values in criteria:
        sub = select(idx.c.id).where(
            and_(idx.c.resource_type == resource_type, idx.c.param == param, idx.c.value.in_(values))
        )
        query = query.where(r.c.id.in_(sub))
    ids = query.subquery()
    total = conn.execute(select(func.count()).select_from(ids)).scalar_one()
    rows = conn.execute(
        select(r.c.resource, r.c.version_id, r.c.last_updated)
        .where(and_(r.c.resource_type == resource_type, r.c.id.in_(select(ids.c.id))))
        .order_by(r.c.id)
        .limit(count)
        .offset(offset)
    ).all()
    return total, [StoredResource(_loads(row.resource), row.version_id, row.last_updated) for row in rows]


def all_resources(conn: Connection) -> Iterable[dict[str, Any]]:
    r = schema.fhir_resources
    for row in conn.execute(select(r.c.resource).order_by(r.c.resource_type, r.c.id)):
        yield _loads(row.resource)


def _loads(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else value
