"""The treating units' facts as every pathway saw them (`fhir_units`), merged in the refresh's transaction."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, select

from forlop.storage import schema
from forlop.storage.bulk import among, insert_many, update_many
from services.pathway.domain.units import UnitFacts, merged


def merge_units(conn: Connection, seen: Mapping[str, UnitFacts]) -> dict[str, UnitFacts]:
    """Store what a batch saw of its units (each fact kept from the later event) and return the
    units as they now stand, by HER-id.

    New units are inserted first (ON CONFLICT DO NOTHING), then every row is read FOR UPDATE on
    PostgreSQL, so two replicas seeing one unit merge one after the other, in HER-id order, and each
    builds its Organizations from what both saw.
    """
    if not seen:
        return {}
    u = schema.fhir_units
    her_ids = sorted(seen)
    insert_many(conn, u, [_row(seen[h]) for h in her_ids], skip_existing=True)
    query = select(u).where(among(u.c.her_id, her_ids, conn.dialect.name)).order_by(u.c.her_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    stored = {row.her_id: UnitFacts(row.her_id, row.name, row.name_key, row.org_number, row.org_number_key)
              for row in conn.execute(query)}
    now = {h: merged(stored.get(h), seen[h]) for h in her_ids}
    changed = [{"k_her_id": h, **{k: v for k, v in _row(f).items() if k != "her_id"}}
               for h, f in now.items() if stored.get(h) != f]
    update_many(conn, u, "her_id", changed)
    return now


def _row(f: UnitFacts) -> dict[str, str | None]:
    return {"her_id": f.her_id, "name": f.name, "name_key": f.name_key, "org_number": f.org_number,
            "org_number_key": f.org_number_key}


def all_units(conn: Connection) -> dict[str, UnitFacts]:
    u = schema.fhir_units
    return {row.her_id: UnitFacts(row.her_id, row.name, row.name_key, row.org_number, row.org_number_key)
            for row in conn.execute(select(u))}
