"""Every resource the API serves is valid R4, on both stores: each read, vread, search page and history
Bundle (type and instance level, a deletion among them) through the fhir.resources models, with
meta.lastUpdated an instant that carries its offset (SQLite kept none, so no strict client could read
the embedded default)."""

from __future__ import annotations

import importlib
import json
import re
from datetime import timedelta
from urllib.parse import urlsplit

from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from forlop.storage import schema
from forlop_devtools.fuzz_api import AS_OF, ServedApi
from services.pathway.adapters import fhir_repository
from services.pathway.domain.search_index import SEARCH_PARAMS

INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _model(rtype: str):  # noqa: ANN202 - a fhir.resources model class
    return getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)


def _valid(resource: dict) -> None:
    assert INSTANT.fullmatch(resource["meta"]["lastUpdated"]), resource["meta"]
    _model(resource["resourceType"]).model_validate(resource)


def _get(api: ServedApi, target: str) -> dict:
    status, _, body = api.request("GET", target)
    assert status == 200, (target, body[:300])
    return json.loads(body)


def _pages(api: ServedApi, target: str) -> list[dict]:
    bundles = []
    while target:
        bundle = _get(api, target)
        Bundle.model_validate(bundle)
        bundles.append(bundle)
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        target = "" if not nxt else f"{urlsplit(nxt[0]).path}?{urlsplit(nxt[0]).query}"
    return bundles


def _withdraw_one_task(api: ServedApi) -> tuple[str, str]:
    """A pathway's resources written again without one of its Tasks (a withdrawn milestone)."""
    r = schema.fhir_resources
    with api.rt.store.read() as conn:
        key = conn.execute(select(r.c.pathway_key).where(r.c.resource_type == "Task").limit(1)).scalar_one()
        owned = list(conn.execute(select(r.c.resource).where(r.c.pathway_key == key).order_by(r.c.id)).scalars())
    gone = next(res for res in owned if res["resourceType"] == "Task")
    with api.rt.store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [res for res in owned if res is not gone], key,
                                         AS_OF + timedelta(minutes=5))
    return "Task", gone["id"]


def test_every_served_resource_and_bundle_is_valid_r4(served_api: ServedApi):
    deleted = _withdraw_one_task(served_api)
    served = 0
    for rtype in SEARCH_PARAMS:
        found = [e["resource"] for bundle in _pages(served_api, f"/fhir/{rtype}?_count=500")
                 for e in bundle.get("entry", [])]
        assert found, rtype
        for resource in found:
            _valid(resource)
            read = _get(served_api, f"/fhir/{rtype}/{resource['id']}")
            _valid(read)
            _valid(_get(served_api, f"/fhir/{rtype}/{resource['id']}/_history/{read['meta']['versionId']}"))
            served += 3
        entries = [e for bundle in _pages(served_api, f"/fhir/{rtype}/_history?_count=200")
                   for e in bundle.get("entry", [])]
        assert len(entries) >= len(found)
        for entry in entries:
            assert INSTANT.fullmatch(entry["response"]["lastModified"])
            if "resource" in entry:
                _valid(entry["resource"])
                served += 1
        instance = _pages(served_api, f"/fhir/{rtype}/{found[0]['id']}/_history")
        for entry in instance[0]["entry"]:
            _valid(entry["resource"])
    assert served > 150  # every type, each resource read, vread and in the history
    # the deletion: a history entry without a resource, valid too
    history = _pages(served_api, f"/fhir/{deleted[0]}/{deleted[1]}/_history")[0]
    assert history["entry"][0]["request"] == {"method": "DELETE", "url": "/".join(deleted)}
    assert INSTANT.fullmatch(history["meta"]["lastUpdated"])
