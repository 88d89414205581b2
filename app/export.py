"""`forlop export fhir`: every resource as one FHIR Bundle (type collection), derived at a chosen time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import select

from app.bootstrap import Runtime
from forlop.storage import schema
from services.pathway.public import (
    UnitFacts,
    derive,
    load_history,
    map_pathway,
    merged_units,
    unit_facts,
    with_units,
)


def resources_at(runtime: Runtime, as_of: datetime, chunk: int = 500) -> Iterator[dict[str, Any]]:
    """Re-derive every pathway from its stored history at `as_of` and map it; shared resources once.

    The Organizations are built from what every pathway saw of each unit (a first pass over the
    histories), as the pathway service builds them."""
    deps = runtime.pathway_deps
    seen: set[tuple[str, str]] = set()
    with runtime.store.read() as conn:
        keys = list(conn.execute(select(schema.pathways.c.pathway_key).order_by(schema.pathways.c.pathway_key)).scalars())
        units: dict[str, UnitFacts] = {}
        for i in range(0, len(keys), chunk):
            histories = load_history(conn, keys[i : i + chunk])
            units = merged_units(units, unit_facts(ev for history in histories.values() for ev in history))
        for i in range(0, len(keys), chunk):
            histories = load_history(conn, keys[i : i + chunk])
            for key in keys[i : i + chunk]:
                history = histories[key]
                if not history:
                    continue
                mapped = map_pathway(derive(history, deps.rules, as_of), history, trust_names=deps.trust_names)
                for res in with_units(mapped, units, deps.trust_names):
                    ident = (res["resourceType"], res["id"])
                    if ident not in seen:
                        seen.add(ident)
                        yield res


def export_bundle(runtime: Runtime, as_of: datetime, out: TextIO, base_url: str | None = None) -> int:
    """Write the Bundle as JSON; return the number of entries. Entries are sorted for stable diffs.

    fullUrls are on `base_url`, by default the API's public FHIR base (FORLOP_PUBLIC_BASE_URL + "/fhir").
    """
    base_url = base_url or runtime.settings.fhir_base_url
    resources = sorted(resources_at(runtime, as_of), key=lambda r: (r["resourceType"], r["id"]))
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": as_of.isoformat(),
        "entry": [
            {"fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources
        ],
    }
    json.dump(bundle, out, ensure_ascii=False, indent=1)
    out.write("\n")
    return len(resources)
