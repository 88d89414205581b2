"""A tenant's reach (`forlop.tenants.Reach`) as SQL: the rows it may read are restricted in the query.

A pathway is reached through its row in `pathways`, which carries the unit's HER-id, the
patient's kommune and whether the consent to municipal involvement is in force. A pathway's own
resources (EpisodeOfCare, Task) are reached through their pathway (`fhir_resources.pathway_key`, and
for a deleted one `fhir_deleted.pathway_key`),
a Patient through any reached EpisodeOfCare that refers to it (the search index's `patient` rows).
Organizations and Practitioners are directory data (units, GPs), not a patient's: any reader
reaches them. What is out of reach is answered as if it did not exist (404, not in a search).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, literal, or_, select, true

from forlop.storage import schema
from forlop.tenants import Reach
from services.pathway.adapters.fhir_repository import StoredResource
from services.pathway.domain.search_index import OWNED_TYPES


def pathway_filter(reach: Reach, p: Any = None) -> list[ColumnElement[bool]]:
    """Conditions on a `pathways` table (or alias) `p` that keep only the pathways within `reach`."""
    p = schema.pathways if p is None else p
    conditions: list[ColumnElement[bool]] = []
    if reach.units is not None:
        conditions.append(p.c.unit_her_id.in_([literal(u, p.c.unit_her_id.type) for u in reach.units])
                          if reach.units else literal(False))
    if reach.municipality is not None:
        conditions += [p.c.municipality == literal(reach.municipality, p.c.municipality.type),
                       p.c.consent_municipality.is_(True)]
    return conditions


def reached(resource_type: str, resource_id: Any, reach: Reach | None) -> ColumnElement[bool]:
    """True where the resource `resource_type`/`resource_id` (a column or a value) is within `reach`:
    an EXISTS over the pathways that reach it, each a primary-key or index lookup."""
    if reach is None or resource_type not in (*OWNED_TYPES, "Patient"):
        return true()
    r = schema.fhir_resources.alias("reach_resource")
    p = schema.pathways.alias("reach_pathway")
    if resource_type in OWNED_TYPES:
        # a deleted one (gone from fhir_resources) through the pathway its tombstone names: a tenant
        # shown the resource is told it went (410, the DELETE in the history)
        d = schema.fhir_deleted.alias("reach_deleted")
        return or_(
            select(literal(1)).select_from(r.join(p, p.c.pathway_key == r.c.pathway_key))
            .where(r.c.resource_type == resource_type, r.c.id == resource_id, *pathway_filter(reach, p)).exists(),
            select(literal(1)).select_from(d.join(p, p.c.pathway_key == d.c.pathway_key))
            .where(d.c.resource_type == resource_type, d.c.id == resource_id, *pathway_filter(reach, p)).exists())
    i = schema.fhir_search_index.alias("reach_patient")
    return (select(literal(1))
            .select_from(i.join(r, and_(r.c.resource_type == "EpisodeOfCare", r.c.id == i.c.id))
                         .join(p, p.c.pathway_key == r.c.pathway_key))
            .where(i.c.resource_type == "EpisodeOfCare", i.c.param == "patient",
                   i.c.value == literal("Patient/") + resource_id, *pathway_filter(reach, p))
            .exists())


def read_within(conn: Connection, resource_type: str, resource_id: str, reach: Reach | None) -> StoredResource | None:
    """The resource, or None when it does not exist or lies outside `reach` (the caller cannot tell which)."""
    r = schema.fhir_resources
    row = conn.execute(
        select(r.c.resource, r.c.version_id, r.c.last_updated).where(
            r.c.resource_type == resource_type, r.c.id == resource_id, reached(resource_type, r.c.id, reach))
    ).first()
    if row is None:
        return None
    return StoredResource(row.resource, row.version_id, row.last_updated)
